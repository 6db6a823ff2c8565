//! The reference evaluator: Calico v1 (Felix 2.x) policy semantics, written for clarity,
//! not speed. The dataplane's compiled tables are checked against it.
//!
//! PLACEHOLDER: the API below is the contract; the implementation is being written.

use std::fmt;
use std::net::IpAddr;

use crate::model::{Action, Resource};

/// Which way a packet crosses the endpoint: `Ingress` = towards the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
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

/// One rule: its owner, direction and 0-based index in that direction's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub owner: RuleOwner,
    pub direction: Direction,
    pub index: usize,
    pub action: Action,
}

/// What decided a verdict.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// An allow or deny rule matched.
    Rule(RuleRef),
    /// Policies selected the endpoint for this direction, none allowed or passed.
    EndOfPolicies,
    /// A profile listed by the endpoint does not exist: it acts as deny-all.
    MissingProfile(String),
    /// No profile rule matched (or the endpoint has no profiles).
    NoProfileMatched,
}

/// The verdict for one endpoint and direction, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// `log` rules that matched on the way, in order.
    pub logged: Vec<RuleRef>,
}

/// The resources policy is evaluated over, indexed for lookups.
pub struct Model {
    _resources: Vec<Resource>,
}

impl Model {
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Model {
        Model {
            _resources: resources.into_iter().collect(),
        }
    }
}
