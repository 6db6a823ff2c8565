//! The chains Felix 2.6.8 always has, and its hooks into the built-in chains (FLX2
//! `rules/static.go`, the workload-relevant parts): raw and mangle mark and accept early,
//! filter sends workload traffic to the dispatch chains, nat has the floating-IP and
//! outgoing-NAT chains. Host-endpoint chains exist but are empty: this node has none.

use super::Config;
use super::iptables::{Action, Chain, Rule, Table};
use super::matches::{
    ctstate, icmp, in_interface, ipset, mark_clear, mark_set, out_interface, protocol,
};
use super::names::{FROM_WORKLOAD_DISPATCH, TO_WORKLOAD_DISPATCH};
use crate::view::Family;

pub const FROM_HOST_ENDPOINT: &str = "cali-from-host-endpoint";
pub const TO_HOST_ENDPOINT: &str = "cali-to-host-endpoint";
const HOST_ACCEPTED: &str = "Host endpoint policy accepted packet.";
/// ICMPv6 MLD (130-132), router solicitation (133), neighbour solicitation and
/// advertisement (135, 136).
pub const NDP_TYPES: [u8; 6] = [130, 131, 132, 133, 135, 136];

fn hook(builtin: &'static str, chain: &str) -> (&'static str, Vec<Rule>) {
    (builtin, vec![Rule::new(vec![], Action::Jump(chain.into()))])
}

fn accept_if_marked(config: &Config) -> Rule {
    Rule::new(vec![mark_set(config.mark_accept)], Action::Accept)
}

pub fn raw(config: &Config) -> Table {
    let workloads = config.workload_interfaces();
    let prerouting = Chain::new(
        "cali-PREROUTING",
        vec![
            Rule::new(vec![], Action::ClearMark(config.all_marks())),
            Rule::new(
                vec![in_interface(&workloads)],
                Action::SetMark(config.mark_scratch0),
            ),
            Rule::new(
                vec![mark_clear(config.mark_scratch0)],
                Action::Jump(FROM_HOST_ENDPOINT.into()),
            ),
            accept_if_marked(config),
        ],
    );
    let output = Chain::new(
        "cali-OUTPUT",
        vec![
            Rule::new(vec![], Action::ClearMark(config.all_marks())),
            Rule::new(vec![], Action::Jump(TO_HOST_ENDPOINT.into())),
            accept_if_marked(config),
        ],
    );
    Table {
        name: "raw",
        hooks: vec![
            hook("PREROUTING", "cali-PREROUTING"),
            hook("OUTPUT", "cali-OUTPUT"),
        ],
        chains: vec![
            prerouting,
            output,
            Chain::new(FROM_HOST_ENDPOINT, vec![]),
            Chain::new(TO_HOST_ENDPOINT, vec![]),
        ],
    }
}

pub fn mangle(config: &Config) -> Table {
    let prerouting = Chain::new(
        "cali-PREROUTING",
        vec![
            Rule::new(vec![ctstate("RELATED,ESTABLISHED")], Action::Accept),
            accept_if_marked(config),
            // Pre-DNAT policy is for host endpoints only.
            Rule::new(
                vec![in_interface(&config.workload_interfaces())],
                Action::Accept,
            ),
            Rule::new(vec![], Action::Jump(FROM_HOST_ENDPOINT.into())),
            Rule::commented(
                HOST_ACCEPTED,
                vec![mark_set(config.mark_accept)],
                Action::Accept,
            ),
        ],
    );
    Table {
        name: "mangle",
        hooks: vec![hook("PREROUTING", "cali-PREROUTING")],
        chains: vec![prerouting, Chain::new(FROM_HOST_ENDPOINT, vec![])],
    }
}

/// The filter table's static chains; the dispatch, endpoint, policy and profile chains
/// come from the rest of the renderer.
pub fn filter(config: &Config) -> Table {
    let workloads = config.workload_interfaces();
    let non_accept_marks = config.all_marks() & !config.mark_accept;
    let forward = Chain::new(
        "cali-FORWARD",
        vec![
            Rule::new(
                vec![in_interface(&workloads)],
                Action::Jump(FROM_WORKLOAD_DISPATCH.into()),
            ),
            Rule::new(
                vec![out_interface(&workloads)],
                Action::Jump(TO_WORKLOAD_DISPATCH.into()),
            ),
            Rule::new(vec![in_interface(&workloads)], Action::Accept),
            Rule::new(vec![out_interface(&workloads)], Action::Accept),
            Rule::new(vec![], Action::ClearMark(non_accept_marks)),
            Rule::new(
                vec![mark_clear(config.mark_accept)],
                Action::Jump(FROM_HOST_ENDPOINT.into()),
            ),
            Rule::new(vec![], Action::Jump(TO_HOST_ENDPOINT.into())),
            Rule::commented(
                HOST_ACCEPTED,
                vec![mark_set(config.mark_accept)],
                Action::Accept,
            ),
        ],
    );
    let input = Chain::new(
        "cali-INPUT",
        vec![
            accept_if_marked(config),
            Rule::new(
                vec![in_interface(&workloads)],
                Action::Goto("cali-wl-to-host".into()),
            ),
            Rule::new(vec![], Action::ClearMark(config.all_marks())),
            Rule::new(vec![], Action::Jump(FROM_HOST_ENDPOINT.into())),
            Rule::commented(
                HOST_ACCEPTED,
                vec![mark_set(config.mark_accept)],
                Action::Accept,
            ),
        ],
    );
    // IPv6 needs neighbour discovery and MLD with the host, whatever the policy says.
    let mut to_host = Vec::new();
    if config.family == Family::V6 {
        for icmp_type in NDP_TYPES {
            to_host.push(Rule::new(
                vec![protocol("58"), icmp(true, false, icmp_type, None)],
                Action::Accept,
            ));
        }
    }
    to_host.push(Rule::new(
        vec![],
        Action::Jump(FROM_WORKLOAD_DISPATCH.into()),
    ));
    to_host.push(Rule::commented(
        "Configured DefaultEndpointToHostAction",
        vec![],
        Action::Drop,
    ));
    let workload_to_host = Chain::new("cali-wl-to-host", to_host);
    let output = Chain::new(
        "cali-OUTPUT",
        vec![
            accept_if_marked(config),
            // Traffic from the host to its workloads is not policed.
            Rule::new(vec![out_interface(&workloads)], Action::Return),
            Rule::new(vec![], Action::ClearMark(config.all_marks())),
            Rule::new(vec![], Action::Jump(TO_HOST_ENDPOINT.into())),
            Rule::commented(
                HOST_ACCEPTED,
                vec![mark_set(config.mark_accept)],
                Action::Accept,
            ),
        ],
    );
    Table {
        name: "filter",
        hooks: vec![
            hook("INPUT", "cali-INPUT"),
            hook("FORWARD", "cali-FORWARD"),
            hook("OUTPUT", "cali-OUTPUT"),
        ],
        chains: vec![
            forward,
            input,
            workload_to_host,
            output,
            Chain::new(FROM_HOST_ENDPOINT, vec![]),
            Chain::new(TO_HOST_ENDPOINT, vec![]),
        ],
    }
}

/// The nat table: floating IPs (none here) and outgoing NAT for pools that ask for it.
pub fn nat(config: &Config, masquerade: bool) -> Table {
    let family = config.family.version();
    let outgoing = if masquerade {
        vec![Rule::new(
            vec![
                ipset(&format!("cali{family}-masq-ipam-pools"), false, "src"),
                ipset(&format!("cali{family}-all-ipam-pools"), true, "dst"),
            ],
            Action::Masquerade,
        )]
    } else {
        vec![]
    };
    Table {
        name: "nat",
        hooks: vec![
            hook("PREROUTING", "cali-PREROUTING"),
            hook("POSTROUTING", "cali-POSTROUTING"),
            hook("OUTPUT", "cali-OUTPUT"),
        ],
        chains: vec![
            Chain::new(
                "cali-PREROUTING",
                vec![Rule::new(vec![], Action::Jump("cali-fip-dnat".into()))],
            ),
            Chain::new(
                "cali-POSTROUTING",
                vec![
                    Rule::new(vec![], Action::Jump("cali-fip-snat".into())),
                    Rule::new(vec![], Action::Jump("cali-nat-outgoing".into())),
                ],
            ),
            Chain::new(
                "cali-OUTPUT",
                vec![Rule::new(vec![], Action::Jump("cali-fip-dnat".into()))],
            ),
            Chain::new("cali-fip-dnat", vec![]),
            Chain::new("cali-fip-snat", vec![]),
            Chain::new("cali-nat-outgoing", outgoing),
        ],
    }
}
