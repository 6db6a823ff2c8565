//! The reference evaluator: Calico v1 (Felix 2.x) policy semantics, written for clarity,
//! not speed. The dataplane's compiled tables are checked against it.
//!
//! For one workload endpoint and one direction (reference §3.2):
//! 1. the policies whose selector matches the endpoint's effective labels and that govern
//!    the direction, in (order, name) order: the first matching `allow` or `deny` rule
//!    decides; `log` records and goes on; `pass` skips the remaining policies; a policy
//!    with no matching rule falls through to the next. If policies applied and none
//!    allowed or passed, the packet is dropped ("end of policies") and profiles are not
//!    consulted;
//! 2. the endpoint's profiles in its order: `allow`/`deny` decide, `log` goes on, `pass`
//!    ends that profile; a profile that does not exist denies everything;
//! 3. nothing allowed: deny.
//!
//! A flow between two workloads needs the source's egress and the destination's ingress.
//! Established connections (conntrack) are not modelled here: this is the verdict for the
//! first packet of a flow.

mod evaluate;
mod index;
mod rule_match;

use std::fmt;
use std::net::IpAddr;

use crate::model::Action;

pub use evaluate::FlowDecision;
pub use index::{Model, PolicyClass};

/// Which way a packet crosses the endpoint: `Ingress` = towards the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// The layer-4 part of a packet that rules can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP, UDP, SCTP, UDP-Lite: the protocol has ports.
    Ports { src: u16, dst: u16 },
    /// ICMP (v4, protocol 1) or ICMPv6 (protocol 58).
    Icmp { icmp_type: u8, code: u8 },
    /// Any other protocol.
    None,
}

/// A packet as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The IP protocol number.
    pub protocol: u8,
    pub l4: L4,
}

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_UDPLITE: u8 = 136;

impl Packet {
    /// A packet of `protocol` with the L4 fields that protocol carries: ports for
    /// TCP/UDP/SCTP/UDP-Lite, type and code for the ICMP of the addresses' family.
    pub fn new(
        src: IpAddr,
        dst: IpAddr,
        protocol: u8,
        ports: (u16, u16),
        icmp: (u8, u8),
    ) -> Packet {
        let is_icmp = match src {
            IpAddr::V4(_) => protocol == PROTO_ICMP,
            IpAddr::V6(_) => protocol == PROTO_ICMPV6,
        };
        let l4 = if is_icmp {
            L4::Icmp {
                icmp_type: icmp.0,
                code: icmp.1,
            }
        } else if has_ports(protocol) {
            L4::Ports {
                src: ports.0,
                dst: ports.1,
            }
        } else {
            L4::None
        };
        Packet {
            src,
            dst,
            protocol,
            l4,
        }
    }
}

/// Whether packets of this protocol carry source and destination ports.
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE)
}

impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = crate::model::PROTOCOL_NAMES
            .iter()
            .find(|(_, n)| *n == self.protocol)
            .map(|(name, _)| (*name).to_string())
            .unwrap_or_else(|| format!("proto{}", self.protocol));
        match self.l4 {
            L4::Ports { src, dst } => {
                write!(
                    f,
                    "{proto} {} -> {}",
                    sock(self.src, src),
                    sock(self.dst, dst)
                )
            }
            L4::Icmp { icmp_type, code } => write!(
                f,
                "{proto} {} -> {} type {icmp_type} code {code}",
                self.src, self.dst
            ),
            L4::None => write!(f, "{proto} {} -> {}", self.src, self.dst),
        }
    }
}

fn sock(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}

/// Where a rule lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleOwner {
    Policy(String),
    Profile(String),
}

impl fmt::Display for RuleOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleOwner::Policy(name) => write!(f, "policy {name}"),
            RuleOwner::Profile(name) => write!(f, "profile {name}"),
        }
    }
}

/// One rule: its owner, direction and 0-based index in that direction's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub owner: RuleOwner,
    pub direction: Direction,
    pub index: usize,
    pub action: Action,
}

/// Rules are numbered from 1 for people, as `palisade profile NAME rule show` does.
impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} rule {} ({})",
            self.owner,
            self.direction,
            self.index + 1,
            self.action
        )
    }
}

/// What decided a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow or deny rule matched.
    Rule(RuleRef),
    /// Policies selected the endpoint for this direction; none allowed or passed.
    EndOfPolicies,
    /// A profile listed by the endpoint does not exist (or is invalid): it denies all.
    MissingProfile(String),
    /// No profile rule allowed or denied (or the endpoint has no profiles).
    NoProfileMatched,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Rule(rule) => write!(f, "{rule}"),
            Reason::EndOfPolicies => {
                f.write_str("end of policies: policies apply and none allowed or passed")
            }
            Reason::MissingProfile(name) => {
                write!(f, "profile {name} does not exist, so it denies everything")
            }
            Reason::NoProfileMatched => f.write_str("default deny: no profile rule matched"),
        }
    }
}

/// The verdict for one endpoint and direction, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// `log` rules that matched on the way, in order.
    pub logged: Vec<RuleRef>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} by {}", self.verdict, self.reason)
    }
}
