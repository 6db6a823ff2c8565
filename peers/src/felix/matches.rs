//! Match fragments as Felix spells them (FLX2 `iptables/match_builder.go`).

use palisade::model::Port;

use super::iptables::hex;

pub fn in_interface(name: &str) -> String {
    format!("--in-interface {name}")
}

pub fn out_interface(name: &str) -> String {
    format!("--out-interface {name}")
}

/// The bits of `mark` are all clear.
pub fn mark_clear(mark: u32) -> String {
    format!("-m mark --mark 0/{}", hex(mark))
}

/// The (single) bit `mark` is set.
pub fn mark_set(mark: u32) -> String {
    format!("-m mark --mark {}/{}", hex(mark), hex(mark))
}

pub fn ctstate(states: &str) -> String {
    format!("-m conntrack --ctstate {states}")
}

pub fn protocol(name: &str) -> String {
    format!("-p {name}")
}

pub fn not_protocol(name: &str) -> String {
    format!("! -p {name}")
}

pub fn source_net(net: &str) -> String {
    format!("--source {net}")
}

pub fn not_source_net(net: &str) -> String {
    format!("! --source {net}")
}

pub fn dest_net(net: &str) -> String {
    format!("--destination {net}")
}

pub fn not_dest_net(net: &str) -> String {
    format!("! --destination {net}")
}

/// `-m set [!] --match-set <set> src|dst`.
pub fn ipset(name: &str, negated: bool, direction: &str) -> String {
    let not = if negated { "! " } else { "" };
    format!("-m set {not}--match-set {name} {direction}")
}

/// `-m multiport [!] --source-ports|--destination-ports 80,8000:8080`.
pub fn ports(ports: &[Port], negated: bool, which: &str) -> String {
    let not = if negated { "! " } else { "" };
    let list: Vec<String> = ports.iter().map(Port::to_string).collect();
    format!("-m multiport {not}--{which}-ports {}", list.join(","))
}

/// `-m icmp [!] --icmp-type T[/C]` (IPv4) or `-m icmp6 [!] --icmpv6-type T[/C]` (IPv6).
pub fn icmp(v6: bool, negated: bool, icmp_type: u8, code: Option<u8>) -> String {
    let not = if negated { "! " } else { "" };
    let value = match code {
        Some(c) => format!("{icmp_type}/{c}"),
        None => icmp_type.to_string(),
    };
    if v6 {
        format!("-m icmp6 {not}--icmpv6-type {value}")
    } else {
        format!("-m icmp {not}--icmp-type {value}")
    }
}

/// Felix's `SplitPortList`: groups that fit multiport's 15 slots (a range takes two).
pub fn split_ports(ports: &[Port]) -> Vec<Vec<Port>> {
    const SLOTS: usize = 15;
    let mut splits = Vec::new();
    let mut current: Vec<Port> = Vec::new();
    let mut free = SLOTS;
    for port in ports {
        let needed = if port.min == port.max { 1 } else { 2 };
        if free < needed {
            splits.push(std::mem::take(&mut current));
            free = SLOTS;
        }
        current.push(*port);
        free -= needed;
    }
    if !current.is_empty() {
        splits.push(current);
    }
    splits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_split_at_fifteen_slots() {
        let singles: Vec<Port> = (1..=16).map(Port::single).collect();
        let splits = split_ports(&singles);
        assert_eq!(splits.iter().map(Vec::len).collect::<Vec<_>>(), [15, 1]);
        let ranges: Vec<Port> = (0..8)
            .map(|i| Port {
                min: i * 10,
                max: i * 10 + 5,
            })
            .collect();
        assert_eq!(
            split_ports(&ranges)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [7, 1]
        );
        assert_eq!(
            ports(
                &[
                    Port::single(80),
                    Port {
                        min: 8000,
                        max: 8080
                    }
                ],
                false,
                "destination"
            ),
            "-m multiport --destination-ports 80,8000:8080"
        );
    }
}
