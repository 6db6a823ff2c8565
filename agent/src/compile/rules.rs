//! Rules as the compiler sees them. Every address test of a rule (selector, tag, CIDR) is
//! an index into one shared [`Universe`], so "does this address pass the rule's peer test"
//! becomes a question about a few bits of the address's [`Signature`]. What is left of a
//! rule after its address tests is an [`L4Match`] over protocol, ports and ICMP fields.
//!
//! The criteria mirror `policy::rule_match` exactly; that module is the definition.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Action, EntityRule, IcmpFields, Port, Protocol, Rule};
use crate::policy::{Direction, L4, PROTO_TCP, PROTO_UDP, RuleOwner, RuleRef};
use crate::selector::{Labels, Selector};

use super::signature::{Bits, Family, Signature};

/// Index of a rule in [`super::inputs::Inputs::rules`].
pub(crate) type RuleId = u32;

/// A test on the labels of an address's owners.
pub(crate) enum LabelTest {
    Selector(Selector),
    /// `tag: T` matches like `has(T)` over effective labels (tags are labels `T=""`).
    Tag(String),
}

impl LabelTest {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelTest::Selector(s) => s.matches(labels),
            LabelTest::Tag(t) => Labels::get(labels, t).is_some(),
        }
    }
}

/// Every distinct label test and CIDR named by any rule, numbered in first-seen order (the
/// compiler visits rules in a fixed order, so the numbering is deterministic).
#[derive(Default)]
pub(crate) struct Universe {
    pub label_tests: Vec<LabelTest>,
    /// Truncated to their network address: `10.0.0.1/24` and `10.0.0.0/24` are one CIDR.
    pub cidrs: Vec<IpNet>,
    label_index: BTreeMap<String, usize>,
    cidr_index: BTreeMap<IpNet, usize>,
    /// The criteria rules have besides addresses, numbered: see [`CompiledRule::criteria`].
    criteria_index: super::Map<(Option<u8>, L4Match), u32>,
}

impl Universe {
    fn label_test(&mut self, key: String, test: impl FnOnce() -> LabelTest) -> usize {
        let next = self.label_tests.len();
        *self.label_index.entry(key).or_insert_with(|| {
            self.label_tests.push(test());
            next
        })
    }

    fn criteria(&mut self, ip_version: Option<u8>, l4: &L4Match) -> u32 {
        let next = u32::try_from(self.criteria_index.len()).unwrap_or(u32::MAX);
        *self
            .criteria_index
            .entry((ip_version, l4.clone()))
            .or_insert(next)
    }

    fn cidr(&mut self, net: IpNet) -> usize {
        let net = net.trunc();
        let next = self.cidrs.len();
        *self.cidr_index.entry(net).or_insert_with(|| {
            self.cidrs.push(net);
            next
        })
    }

    /// The signature of `addr` for the label tests and CIDRs listed (others stay 0).
    /// `owners` are the effective labels of every endpoint owning the address: a label test
    /// holds if ANY owner satisfies it, as rule selectors stand for sets of addresses.
    pub fn signature(
        &self,
        addr: IpAddr,
        owners: &[BTreeMap<String, String>],
        label_tests: &[usize],
        cidrs: &[usize],
    ) -> Signature {
        Signature {
            labels: self.label_bits(owners, label_tests),
            cidrs: self.cidr_bits(addr, cidrs),
        }
    }

    /// The label half of [`Universe::signature`].
    pub fn label_bits(&self, owners: &[BTreeMap<String, String>], label_tests: &[usize]) -> Bits {
        let mut bits = Bits::zeros(self.label_tests.len());
        for &i in label_tests {
            if let Some(test) = self.label_tests.get(i)
                && owners.iter().any(|labels| test.matches(labels))
            {
                bits.set(i);
            }
        }
        bits
    }

    /// The CIDR half of [`Universe::signature`].
    pub fn cidr_bits(&self, addr: IpAddr, cidrs: &[usize]) -> Bits {
        let mut bits = Bits::zeros(self.cidrs.len());
        for &i in cidrs {
            if self.cidrs.get(i).is_some_and(|net| net.contains(&addr)) {
                bits.set(i);
            }
        }
        bits
    }
}

/// The address half of an entity rule: indices into the [`Universe`].
#[derive(Default)]
pub(crate) struct AddrMatch {
    /// Non-empty: the address must be in one of these CIDRs.
    pub nets: Vec<usize>,
    pub not_nets: Vec<usize>,
    /// Label tests (selector, tag) the address must pass.
    pub with: Vec<usize>,
    /// Label tests (notSelector, notTag) the address must fail.
    pub without: Vec<usize>,
}

impl AddrMatch {
    pub fn holds(&self, sig: &Signature) -> bool {
        (self.nets.is_empty() || self.nets.iter().any(|&i| sig.cidrs.get(i)))
            && !self.not_nets.iter().any(|&i| sig.cidrs.get(i))
            && self.with.iter().all(|&i| sig.labels.get(i))
            && !self.without.iter().any(|&i| sig.labels.get(i))
    }

    pub fn label_tests(&self) -> impl Iterator<Item = usize> + '_ {
        self.with.iter().chain(&self.without).copied()
    }

    pub fn cidrs(&self) -> impl Iterator<Item = usize> + '_ {
        self.nets.iter().chain(&self.not_nets).copied()
    }
}

/// A rule's peer test in a few bytes, beside the rules: narrowing a long program to a
/// class of peers asks it of thousands of rules, and reading each rule's own test (its
/// lists on the heap, for rules all over memory) was most of that. Most rules test one
/// label test or one CIDR of the peer, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerTest {
    Nothing,
    Label(usize),
    Cidr(usize),
    /// Anything else: the rule's [`AddrMatch`] says.
    Other,
}

impl PeerTest {
    pub fn of(rule: &CompiledRule) -> PeerTest {
        let peer = rule.peer();
        match (
            peer.nets.as_slice(),
            peer.not_nets.as_slice(),
            peer.with.as_slice(),
            peer.without.as_slice(),
        ) {
            ([], [], [], []) => PeerTest::Nothing,
            ([], [], [label], []) => PeerTest::Label(*label),
            ([net], [], [], []) => PeerTest::Cidr(*net),
            _ => PeerTest::Other,
        }
    }

    /// Whether it holds for a peer of signature `sig`; `None` for [`PeerTest::Other`].
    pub fn holds(self, sig: &Signature) -> Option<bool> {
        match self {
            PeerTest::Nothing => Some(true),
            PeerTest::Label(i) => Some(sig.labels.get(i)),
            PeerTest::Cidr(i) => Some(sig.cidrs.get(i)),
            PeerTest::Other => None,
        }
    }
}

/// The criteria of a rule that are not about addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub(crate) struct L4Match {
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpFields>,
    pub not_icmp: Option<IcmpFields>,
    pub src_ports: Vec<Port>,
    pub src_not_ports: Vec<Port>,
    pub dst_ports: Vec<Port>,
    pub dst_not_ports: Vec<Port>,
}

impl L4Match {
    /// Whether a packet of `family` and `protocol` with these L4 fields passes. Ports count
    /// only on TCP and UDP, ICMP fields only on the ICMP of the packet's family.
    pub fn matches(&self, family: Family, protocol: u8, l4: L4) -> bool {
        let dst = match l4 {
            L4::Ports { dst, .. } if matches!(protocol, PROTO_TCP | PROTO_UDP) => Some(dst),
            _ => None,
        };
        self.matches_but_dst_port(family, protocol, l4)
            && ports_match(&self.dst_ports, &self.dst_not_ports, dst)
    }

    /// [`L4Match::matches`] without the destination port criteria (whatever `l4`'s
    /// destination port is): [`super::table_row`] tests those for a whole row of
    /// destination ports at once.
    pub fn matches_but_dst_port(&self, family: Family, protocol: u8, l4: L4) -> bool {
        if self.protocol.is_some_and(|p| p != protocol)
            || self.not_protocol.is_some_and(|p| p == protocol)
        {
            return false;
        }
        let icmp = match l4 {
            L4::Icmp { icmp_type, code } if protocol == family.icmp_protocol() => {
                Some((icmp_type, code))
            }
            _ => None,
        };
        if self.icmp.is_some_and(|f| !icmp_matches(&f, icmp, false))
            || self.not_icmp.is_some_and(|f| !icmp_matches(&f, icmp, true))
        {
            return false;
        }
        let src = match l4 {
            L4::Ports { src, .. } if matches!(protocol, PROTO_TCP | PROTO_UDP) => Some(src),
            _ => None,
        };
        ports_match(&self.src_ports, &self.src_not_ports, src)
    }

    /// Whether the rule has no L4 criteria at all.
    pub fn matches_every_packet(&self) -> bool {
        self.protocol.is_none()
            && self.not_protocol.is_none()
            && self.icmp.is_none()
            && self.not_icmp.is_none()
            && self.src_ports.is_empty()
            && self.src_not_ports.is_empty()
            && self.dst_ports.is_empty()
            && self.dst_not_ports.is_empty()
    }

    /// Whether some packet of `protocol` can pass the protocol criteria.
    pub fn admits_protocol(&self, protocol: u8) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && self.not_protocol != Some(protocol)
    }

    /// Protocol numbers this rule names.
    pub fn protocols(&self) -> impl Iterator<Item = u8> + '_ {
        self.protocol.iter().chain(&self.not_protocol).copied()
    }
}

fn icmp_matches(fields: &IcmpFields, icmp: Option<(u8, u8)>, negated: bool) -> bool {
    let Some(want_type) = fields.icmp_type else {
        return true;
    };
    let Some((icmp_type, code)) = icmp else {
        return false;
    };
    let hit = icmp_type == want_type && fields.code.is_none_or(|c| c == code);
    hit != negated
}

fn ports_match(ports: &[Port], not_ports: &[Port], port: Option<u16>) -> bool {
    if !ports.is_empty() && !port.is_some_and(|p| ports.iter().any(|r| r.contains(p))) {
        return false;
    }
    if !not_ports.is_empty() && port.is_none_or(|p| not_ports.iter().any(|r| r.contains(p))) {
        return false;
    }
    true
}

/// One rule of one policy or profile, ready for compiling.
pub(crate) struct CompiledRule {
    /// Which rule this is (for counters and for the decision's reason).
    pub rule_ref: RuleRef,
    /// `ipVersion`, or the family `protocol: icmp`/`icmpv6` implies.
    pub ip_version: Option<u8>,
    pub l4: L4Match,
    /// Rules of one universe with the same `ip_version` and `l4` have the same number: a
    /// rule that ends its list leaves a later one with its criteria out of reach wherever
    /// both hold, and policies often repeat a rule.
    pub criteria: u32,
    pub source: AddrMatch,
    pub destination: AddrMatch,
}

impl CompiledRule {
    pub fn action(&self) -> Action {
        self.rule_ref.action
    }

    /// The side of the packet that is the other end: the source of an ingress packet, the
    /// destination of an egress packet.
    pub fn peer(&self) -> &AddrMatch {
        match self.rule_ref.direction {
            Direction::Ingress => &self.source,
            Direction::Egress => &self.destination,
        }
    }

    /// The side of the packet that is the policed endpoint itself.
    pub fn local(&self) -> &AddrMatch {
        match self.rule_ref.direction {
            Direction::Ingress => &self.destination,
            Direction::Egress => &self.source,
        }
    }

    pub fn applies_to_family(&self, family: Family) -> bool {
        self.ip_version.is_none_or(|v| v == family.version())
    }
}

/// Compiles one rule, registering its address tests in `universe`. Fails exactly where the
/// reference evaluator fails (a protocol without a number, a selector that does not parse).
pub(crate) fn compile_rule(
    universe: &mut Universe,
    rule: &Rule,
    owner: RuleOwner,
    direction: Direction,
    index: usize,
) -> Result<CompiledRule, String> {
    let number = |p: &Option<Protocol>| -> Result<Option<u8>, String> {
        p.as_ref()
            .map(|p| p.number().ok_or_else(|| format!("invalid protocol '{p}'")))
            .transpose()
    };
    let protocol = number(&rule.protocol)?;
    let not_protocol = number(&rule.not_protocol)?;
    let implied_version = match protocol {
        Some(crate::policy::PROTO_ICMP) => Some(4),
        Some(crate::policy::PROTO_ICMPV6) => Some(6),
        _ => None,
    };
    let source = compile_entity(universe, &rule.source)?;
    let destination = compile_entity(universe, &rule.destination)?;
    let ip_version = rule.ip_version.or(implied_version);
    let l4 = L4Match {
        protocol,
        not_protocol,
        icmp: rule.icmp,
        not_icmp: rule.not_icmp,
        src_ports: rule.source.ports.clone(),
        src_not_ports: rule.source.not_ports.clone(),
        dst_ports: rule.destination.ports.clone(),
        dst_not_ports: rule.destination.not_ports.clone(),
    };
    Ok(CompiledRule {
        rule_ref: RuleRef {
            owner,
            direction,
            index,
            action: rule.action,
        },
        ip_version,
        criteria: universe.criteria(ip_version, &l4),
        l4,
        source,
        destination,
    })
}

fn compile_entity(universe: &mut Universe, entity: &EntityRule) -> Result<AddrMatch, String> {
    let mut m = AddrMatch::default();
    for net in entity.all_nets() {
        m.nets.push(universe.cidr(*net));
    }
    for net in entity.all_not_nets() {
        m.not_nets.push(universe.cidr(*net));
    }
    let mut selector = |text: &str| -> Result<usize, String> {
        let parsed = Selector::parse(text).map_err(|e| format!("selector '{text}': {e}"))?;
        Ok(universe.label_test(format!("s:{parsed}"), || LabelTest::Selector(parsed)))
    };
    if let Some(s) = &entity.selector {
        m.with.push(selector(s)?);
    }
    if let Some(s) = &entity.not_selector {
        m.without.push(selector(s)?);
    }
    if let Some(t) = &entity.tag {
        m.with
            .push(universe.label_test(format!("t:{t}"), || LabelTest::Tag(t.clone())));
    }
    if let Some(t) = &entity.not_tag {
        m.without
            .push(universe.label_test(format!("t:{t}"), || LabelTest::Tag(t.clone())));
    }
    Ok(m)
}

/// Ingress rules of one policy `p`, from their JSON, each in its own `universe` slot: the
/// rule lists the compiler's unit tests reason about.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
pub(crate) fn compile_test_rules<S: AsRef<str>>(jsons: &[S]) -> Vec<CompiledRule> {
    let mut universe = Universe::default();
    jsons
        .iter()
        .enumerate()
        .map(|(i, json)| {
            let rule: Rule = serde_json::from_str(json.as_ref()).unwrap();
            let owner = RuleOwner::Policy("p".into());
            compile_rule(&mut universe, &rule, owner, Direction::Ingress, i).unwrap()
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::policy::PROTO_ICMP;

    #[test]
    fn icmp_criteria_only_see_the_familys_icmp() {
        let m = L4Match {
            icmp: Some(IcmpFields {
                icmp_type: Some(8),
                code: None,
            }),
            ..L4Match::default()
        };
        let echo = L4::Icmp {
            icmp_type: 8,
            code: 0,
        };
        assert!(m.matches(Family::V4, PROTO_ICMP, echo));
        // protocol 1 in an IPv6 packet is not ICMPv6: no type to match.
        assert!(!m.matches(Family::V6, PROTO_ICMP, echo));
        // `icmp: {}` without a type is no criterion at all.
        let empty = L4Match {
            icmp: Some(IcmpFields::default()),
            ..L4Match::default()
        };
        assert!(empty.matches(Family::V4, PROTO_TCP, L4::None));
    }

    #[test]
    fn not_ports_need_a_port() {
        let m = L4Match {
            dst_not_ports: vec![Port::single(80)],
            ..L4Match::default()
        };
        assert!(m.matches(Family::V4, PROTO_TCP, L4::Ports { src: 1, dst: 81 }));
        assert!(!m.matches(Family::V4, PROTO_TCP, L4::Ports { src: 1, dst: 80 }));
        // SCTP has ports, but v1 rules only match ports on TCP and UDP.
        assert!(!m.matches(Family::V4, 132, L4::Ports { src: 1, dst: 81 }));
    }

    #[test]
    fn a_peer_test_holds_where_the_rules_own_test_does() {
        let rules = compile_test_rules(&[
            r#"{"action": "allow"}"#,
            r#"{"action": "allow", "source": {"selector": "a == 'x'"}}"#,
            r#"{"action": "allow", "source": {"nets": ["10.0.0.0/8"]}}"#,
            r#"{"action": "allow", "source": {"tag": "t"}}"#,
            r#"{"action": "allow", "source": {"notSelector": "a == 'x'"}}"#,
            r#"{"action": "allow", "source": {"notNets": ["10.0.0.0/8"]}}"#,
            r#"{"action": "allow", "source": {"selector": "a == 'x'", "nets": ["10.0.0.0/8"]}}"#,
            r#"{"action": "allow", "source": {"nets": ["10.0.0.0/8", "192.0.2.0/24"]}}"#,
            // The endpoint's own address is not the peer's.
            r#"{"action": "allow", "destination": {"selector": "a == 'x'"}}"#,
        ]);
        let kinds: Vec<PeerTest> = rules.iter().map(PeerTest::of).collect();
        assert_eq!(
            kinds,
            vec![
                PeerTest::Nothing,
                PeerTest::Label(0),
                PeerTest::Cidr(0),
                PeerTest::Label(1),
                PeerTest::Other,
                PeerTest::Other,
                PeerTest::Other,
                PeerTest::Other,
                PeerTest::Nothing,
            ]
        );
        // Every signature over the two label tests and two CIDRs.
        for bits in 0..16 {
            let mut sig = Signature {
                labels: Bits::zeros(2),
                cidrs: Bits::zeros(2),
            };
            for i in 0..2 {
                if bits & (1 << i) != 0 {
                    sig.labels.set(i);
                }
                if bits & (4 << i) != 0 {
                    sig.cidrs.set(i);
                }
            }
            for (rule, kind) in rules.iter().zip(&kinds) {
                let want = rule.peer().holds(&sig);
                assert!(
                    kind.holds(&sig).is_none_or(|h| h == want),
                    "{kind:?} {bits:b}"
                );
            }
        }
    }

    #[test]
    fn universe_shares_equal_tests_and_truncates_cidrs() {
        let mut u = Universe::default();
        let a = u.cidr("10.0.0.1/24".parse().unwrap());
        let b = u.cidr("10.0.0.0/24".parse().unwrap());
        assert_eq!(a, b);
        let e = EntityRule {
            selector: Some("a == 'x'".into()),
            not_selector: Some("(a=='x')".into()),
            ..EntityRule::default()
        };
        let m = compile_entity(&mut u, &e).unwrap();
        assert_eq!(m.with, m.without);
        assert_eq!(u.label_tests.len(), 1);
    }
}
