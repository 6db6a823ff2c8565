//! Cutting the address space by rule CIDRs into disjoint classes, as LPM entries.
//!
//! The rule CIDRs containing an address are exactly the CIDRs containing its longest
//! matching rule CIDR (CIDRs that overlap are nested). So one LPM entry per distinct rule
//! CIDR, valued with the set of CIDRs containing it, classifies every address exactly; an
//! address no rule CIDR contains is in the "world" class. Entry count: the number of
//! distinct CIDRs, independent of how they nest.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// For each distinct CIDR in `cidrs` (given with its index), the indices of all the
/// CIDRs containing it (itself included), sorted. CIDRs should be truncated.
pub(crate) fn lpm_classes(cidrs: &[(usize, IpNet)]) -> BTreeMap<IpNet, Vec<usize>> {
    let mut out: BTreeMap<IpNet, Vec<usize>> = BTreeMap::new();
    for &(_, net) in cidrs {
        let mut containing: Vec<usize> = cidrs
            .iter()
            .filter(|(_, outer)| outer.prefix_len() <= net.prefix_len() && outer.contains(&net))
            .map(|&(i, _)| i)
            .collect();
        containing.sort_unstable();
        containing.dedup();
        out.insert(net, containing);
    }
    out
}

/// Longest-prefix match, as the kernel's LPM trie does it.
pub(crate) fn longest_match<T>(entries: &BTreeMap<IpNet, T>, addr: IpAddr) -> Option<&T> {
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    (0..=max).rev().find_map(|len| {
        let net = IpNet::new(addr, len).ok()?.trunc();
        entries.get(&net)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<(usize, IpNet)> {
        list.iter()
            .enumerate()
            .map(|(i, s)| (i, s.parse::<IpNet>().unwrap().trunc()))
            .collect()
    }

    /// The class an LPM lookup gives must be the set of CIDRs that contain the address.
    fn check(list: &[&str], addrs: &[&str]) {
        let cidrs = nets(list);
        let classes = lpm_classes(&cidrs);
        for a in addrs {
            let addr: IpAddr = a.parse().unwrap();
            let mut want: Vec<usize> = cidrs
                .iter()
                .filter(|(_, n)| n.contains(&addr))
                .map(|&(i, _)| i)
                .collect();
            want.sort_unstable();
            want.dedup();
            let got = longest_match(&classes, addr).cloned().unwrap_or_default();
            assert_eq!(got, want, "{a}");
        }
    }

    #[test]
    fn nested_overlapping_and_duplicate_ipv4() {
        check(
            &[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.1.2.0/24",
                "10.1.2.3/32",
                "10.1.0.0/16",
                "0.0.0.0/0",
                "192.168.0.0/16",
            ],
            &[
                "10.1.2.3",
                "10.1.2.4",
                "10.1.3.1",
                "10.2.0.0",
                "11.0.0.0",
                "192.168.255.255",
                "0.0.0.0",
                "255.255.255.255",
            ],
        );
    }

    #[test]
    fn ipv6_and_mixed_families() {
        check(
            &[
                "fd00::/8",
                "fd00:1::/32",
                "fd00:1::1/128",
                "::/0",
                "10.0.0.0/8",
            ],
            &[
                "fd00:1::1",
                "fd00:1::2",
                "fd00:2::1",
                "2001:db8::1",
                "10.0.0.1",
                "::",
                "::ffff:10.0.0.1",
            ],
        );
        // Without a /0, IPv6 addresses outside all CIDRs are world (no entry).
        let classes = lpm_classes(&nets(&["fd00::/8", "10.0.0.0/8"]));
        assert!(longest_match(&classes, "2001:db8::1".parse().unwrap()).is_none());
        assert!(longest_match(&classes, "11.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn one_entry_per_distinct_cidr() {
        let classes = lpm_classes(&nets(&["10.0.0.0/8", "10.0.0.1/8", "10.0.0.0/9"]));
        assert_eq!(classes.len(), 2);
        assert_eq!(
            classes[&"10.0.0.0/9".parse::<IpNet>().unwrap()],
            vec![0, 1, 2]
        );
    }
}
