//! One row of a TCP or UDP table decided at once: what [`Program::run`] decides for the
//! packet of every destination-port cell of the row, with one walk over the program's
//! rules instead of one per cell.
//!
//! A long program (hundreds of rules, the allow late in order) cut at every port its rules
//! name has hundreds of cells, and running it once per cell tests every rule against every
//! cell. A rule's destination ports are ranges of the row's sorted cell starts, so each
//! rule can instead take, as a set of cells, the cells still walking the list that it
//! matches, in a few word operations. The result is the same as running the program on
//! each cell's first port (the test `tests::a_row_is_what_the_program_decides_per_cell`
//! holds the two together): the same rules, in the same order, with the same `log`,
//! `pass`, end-of-policies and profile semantics.
//!
//! The `log` rules a cell passes are kept as a node of a tree of histories, not a list per
//! cell: at 10,000 policies a program passes a hundred `log` rules, and a list each per
//! cell, compared and hashed per cell to find its outcome, was most of a table's build.
//! Cells that walk together share their node, and the row comes out as its few distinct
//! decisions.

use crate::model::{Action, Port};
use crate::policy::{L4, Verdict};

use super::Map;
use super::program::{Decided, DecidedBy, ProfileStep, Program};
use super::rules::{CompiledRule, RuleId};
use super::signature::Family;

/// What a row decides: each distinct decision once, and which one each cell gets.
pub(crate) struct RowDecisions {
    pub distinct: Vec<Decided>,
    /// Per cell, in the order of the row's starts: an index into `distinct`.
    pub cells: Vec<usize>,
}

/// The `log` rules cells passed, in order, as a tree: a node is its parent's history and
/// one rule more, and each history is one node. Node 0 is the empty history.
struct Histories {
    /// Node `n`'s parent and rule at `n - 1`.
    nodes: Vec<(usize, RuleId)>,
    /// Each node by its parent and rule.
    children: Map<(usize, RuleId), usize>,
}

impl Histories {
    const EMPTY: usize = 0;

    /// Adds rule `id` to the history of each of `cells` (an index into `of`).
    fn log(&mut self, id: RuleId, cells: &Cells, of: &mut [usize]) {
        // Cells that walk together mostly share their history: one lookup for a run of them.
        let mut last: Option<(usize, usize)> = None;
        for cell in cells.ones() {
            let Some(node) = of.get_mut(cell) else {
                continue;
            };
            let child = match last {
                Some((parent, child)) if parent == *node => child,
                _ => {
                    let nodes = &mut self.nodes;
                    let child = *self.children.entry((*node, id)).or_insert_with(|| {
                        nodes.push((*node, id));
                        nodes.len()
                    });
                    last = Some((*node, child));
                    child
                }
            };
            *node = child;
        }
    }

    /// The rules of `node`'s history, in the order they were passed.
    fn rules(&self, mut node: usize) -> Vec<RuleId> {
        let mut rules = Vec::new();
        while let Some(&(parent, id)) = node.checked_sub(1).and_then(|i| self.nodes.get(i)) {
            rules.push(id);
            node = parent;
        }
        rules.reverse();
        rules
    }
}

/// What `program` decides for a `protocol` (TCP or UDP) packet from source port `src` to
/// each of `dst_starts` (sorted), in that order.
pub(crate) fn run_row(
    program: &Program,
    rules: &[CompiledRule],
    family: Family,
    protocol: u8,
    src: u16,
    dst_starts: &[u16],
) -> RowDecisions {
    let mut row = Row {
        rules,
        family,
        protocol,
        src,
        dst_starts,
        undecided: Cells::all(dst_starts.len()),
        decided: vec![None; dst_starts.len()],
        history: vec![Histories::EMPTY; dst_starts.len()],
        histories: Histories {
            nodes: Vec::new(),
            children: Map::default(),
        },
        scratch: Cells::none(dst_starts.len()),
    };
    if let Some(ids) = &program.policies {
        let no_match = row.walk(ids);
        row.decide(&no_match, Verdict::Deny, &DecidedBy::EndOfPolicies);
    }
    for step in &program.profiles {
        if row.undecided.is_empty() {
            break;
        }
        match step {
            ProfileStep::Missing(name) => {
                let rest = row.undecided.clone();
                row.decide(
                    &rest,
                    Verdict::Deny,
                    &DecidedBy::MissingProfile(name.clone()),
                );
                break;
            }
            // `pass` in a profile only ends that profile: what comes out of the walk
            // undecided goes on to the next.
            ProfileStep::Rules(ids) => {
                row.walk(ids);
            }
        }
    }
    let rest = row.undecided.clone();
    row.decide(&rest, Verdict::Deny, &DecidedBy::NoProfileMatched);
    let mut index: Map<(Verdict, DecidedBy, usize), usize> = Map::default();
    let mut distinct = Vec::new();
    let cells = row
        .decided
        .into_iter()
        .zip(row.history)
        .map(|(decided, history)| {
            let (verdict, reason) = decided.unwrap_or((Verdict::Deny, DecidedBy::NoProfileMatched));
            *index.entry((verdict, reason, history)).or_insert_with_key(
                |(verdict, reason, history)| {
                    distinct.push(Decided {
                        verdict: *verdict,
                        reason: reason.clone(),
                        logged: row.histories.rules(*history),
                    });
                    distinct.len() - 1
                },
            )
        })
        .collect();
    RowDecisions { distinct, cells }
}

struct Row<'a> {
    rules: &'a [CompiledRule],
    family: Family,
    protocol: u8,
    src: u16,
    dst_starts: &'a [u16],
    undecided: Cells,
    decided: Vec<Option<(Verdict, DecidedBy)>>,
    /// Per cell: its node in `histories`.
    history: Vec<usize>,
    histories: Histories,
    /// The cells a rule's destination ports match (reused from rule to rule).
    scratch: Cells,
}

impl Row<'_> {
    /// Walks the undecided cells through one list of rules; returns the cells that reached
    /// its end (neither decided nor passed on the way).
    fn walk(&mut self, ids: &[RuleId]) -> Cells {
        let mut walking = self.undecided.clone();
        let packet = L4::Ports {
            src: self.src,
            dst: 0,
        };
        for &id in ids {
            if walking.is_empty() {
                break;
            }
            let Some(rule) = self.rules.get(id as usize) else {
                continue;
            };
            if !rule
                .l4
                .matches_but_dst_port(self.family, self.protocol, packet)
            {
                continue;
            }
            self.scratch
                .set_to_ports(self.dst_starts, &rule.l4.dst_ports, &rule.l4.dst_not_ports);
            self.scratch.and(&walking);
            if self.scratch.is_empty() {
                continue;
            }
            let hit = &self.scratch;
            match rule.action() {
                Action::Allow | Action::Deny => {
                    let verdict = if rule.action() == Action::Allow {
                        Verdict::Allow
                    } else {
                        Verdict::Deny
                    };
                    for cell in hit.ones() {
                        if let Some(slot) = self.decided.get_mut(cell) {
                            *slot = Some((verdict, DecidedBy::Rule(id)));
                        }
                    }
                    walking.and_not(hit);
                    self.undecided.and_not(hit);
                }
                Action::Pass => walking.and_not(hit),
                Action::Log => self.histories.log(id, hit, &mut self.history),
            }
        }
        walking
    }

    fn decide(&mut self, cells: &Cells, verdict: Verdict, reason: &DecidedBy) {
        for cell in cells.ones() {
            if let Some(slot) = self.decided.get_mut(cell) {
                *slot = Some((verdict, reason.clone()));
            }
        }
        self.undecided.and_not(cells);
    }
}

/// A set of the row's cells, by index.
#[derive(Clone)]
struct Cells {
    words: Vec<u64>,
    len: usize,
}

impl Cells {
    fn none(len: usize) -> Cells {
        Cells {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    fn all(len: usize) -> Cells {
        let mut cells = Cells::none(len);
        cells.insert_range(0, len);
        cells
    }

    /// Makes this the cells whose first port passes `ports` (any of them, when there are
    /// any) and `not_ports` (none of them), as `rules::ports_match` tests one port.
    fn set_to_ports(&mut self, starts: &[u16], ports: &[Port], not_ports: &[Port]) {
        self.words.fill(0);
        if ports.is_empty() {
            self.insert_range(0, self.len);
        }
        // The cells whose first port is in `min..=max`: the starts are sorted.
        let range = |p: &Port| {
            (
                starts.partition_point(|&s| s < p.min),
                starts.partition_point(|&s| s <= p.max),
            )
        };
        for (from, to) in ports.iter().map(range) {
            self.insert_range(from, to);
        }
        for (from, to) in not_ports.iter().map(range) {
            self.remove_range(from, to);
        }
    }

    fn insert_range(&mut self, from: usize, to: usize) {
        self.fill_range(from, to, true);
    }

    fn remove_range(&mut self, from: usize, to: usize) {
        self.fill_range(from, to, false);
    }

    /// Sets or clears the cells `from..to`, a word at a time.
    fn fill_range(&mut self, from: usize, to: usize, set: bool) {
        let to = to.min(self.len);
        let mut i = from;
        while i < to {
            let bit = i % 64;
            let n = (64 - bit).min(to - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1 << n) - 1) << bit
            };
            if let Some(word) = self.words.get_mut(i / 64) {
                if set {
                    *word |= mask;
                } else {
                    *word &= !mask;
                }
            }
            i += n;
        }
    }

    fn and(&mut self, other: &Cells) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= b;
        }
    }

    fn and_not(&mut self, other: &Cells) {
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a &= !b;
        }
    }

    fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    i * 64 + bit
                })
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::compile::rules::compile_test_rules;
    use crate::compile::table::range_starts;
    use crate::policy::{PROTO_TCP, PROTO_UDP};

    /// A rule as JSON: an action, maybe a protocol, maybe source and destination ports
    /// (a few small ranges, so that rules overlap), each maybe negated.
    fn rule() -> impl Strategy<Value = String> {
        let action = prop::sample::select(vec!["allow", "deny", "pass", "log"]);
        let protocol = prop::sample::select(vec!["", "tcp", "udp", "icmp", "!tcp"]);
        let ports = prop::collection::vec((0u16..12, 0u16..4), 0..3);
        let place = prop::sample::select(vec!["ports", "notPorts"]);
        (action, protocol, ports.clone(), place.clone(), ports, place).prop_map(
            |(action, protocol, src, src_place, dst, dst_place)| {
                let list = |ports: Vec<(u16, u16)>| {
                    let ports: Vec<String> = ports
                        .iter()
                        .map(|(lo, len)| format!("\"{}:{}\"", lo * 10, lo * 10 + len * 7))
                        .collect();
                    ports.join(",")
                };
                let mut fields = vec![format!("\"action\": \"{action}\"")];
                match protocol.strip_prefix('!') {
                    Some(p) => fields.push(format!("\"notProtocol\": \"{p}\"")),
                    None if !protocol.is_empty() => {
                        fields.push(format!("\"protocol\": \"{protocol}\""))
                    }
                    None => {}
                }
                // Ports need a protocol that has them.
                if matches!(protocol, "tcp" | "udp") {
                    if !src.is_empty() {
                        fields.push(format!("\"source\": {{\"{src_place}\": [{}]}}", list(src)));
                    }
                    if !dst.is_empty() {
                        fields.push(format!(
                            "\"destination\": {{\"{dst_place}\": [{}]}}",
                            list(dst)
                        ));
                    }
                }
                format!("{{{}}}", fields.join(", "))
            },
        )
    }

    /// Rules as JSON, the policies' rule indexes (if any policy applies), and the profiles'
    /// (`None`: a missing profile).
    type Lists = (Vec<String>, Option<Vec<usize>>, Vec<Option<Vec<usize>>>);

    fn program() -> impl Strategy<Value = Lists> {
        let ids = prop::collection::vec(0usize..12, 0..10);
        (
            prop::collection::vec(rule(), 12),
            prop::option::of(ids.clone()),
            prop::collection::vec(prop::option::weighted(0.9, ids), 0..3),
        )
    }

    proptest! {
        #[test]
        fn a_row_is_what_the_program_decides_per_cell((rules, policies, profiles) in program()) {
            let rules = compile_test_rules(&rules);
            let ids = |list: &Vec<usize>| list.iter().map(|&i| i as RuleId).collect::<Vec<_>>();
            let program = Program {
                policies: policies.as_ref().map(ids),
                profiles: profiles
                    .iter()
                    .map(|step| match step {
                        Some(list) => ProfileStep::Rules(ids(list)),
                        None => ProfileStep::Missing("gone".into()),
                    })
                    .collect(),
            };
            let bounds = |dst: bool| {
                let ranges = rules.iter().flat_map(|r| {
                    let lists = if dst {
                        [&r.l4.dst_ports, &r.l4.dst_not_ports]
                    } else {
                        [&r.l4.src_ports, &r.l4.src_not_ports]
                    };
                    lists.into_iter().flatten().map(|p| (p.min, p.max))
                });
                range_starts(ranges, u16::MAX)
            };
            let (src_starts, dst_starts) = (bounds(false), bounds(true));
            for protocol in [PROTO_TCP, PROTO_UDP] {
                for &src in &src_starts {
                    let row = run_row(&program, &rules, Family::V4, protocol, src, &dst_starts);
                    prop_assert_eq!(row.cells.len(), dst_starts.len());
                    for (i, &dst) in dst_starts.iter().enumerate() {
                        let l4 = L4::Ports { src, dst };
                        let want = program.run(&rules, Family::V4, protocol, l4);
                        let got = row.cells.get(i).and_then(|&d| row.distinct.get(d));
                        prop_assert_eq!(got, Some(&want), "protocol {} ports {}->{}", protocol, src, dst);
                    }
                    // Each decision once.
                    for (i, a) in row.distinct.iter().enumerate() {
                        prop_assert!(!row.distinct[..i].contains(a), "{:?} twice", a);
                    }
                    // What narrowing leaves out is out of reach: it decides alike.
                    let narrowed = program.narrowed(&rules, |_| true);
                    let row = run_row(&narrowed, &rules, Family::V4, protocol, src, &dst_starts);
                    for (i, &dst) in dst_starts.iter().enumerate() {
                        let l4 = L4::Ports { src, dst };
                        let want = program.run(&rules, Family::V4, protocol, l4);
                        let got = row.cells.get(i).and_then(|&d| row.distinct.get(d));
                        prop_assert_eq!(got, Some(&want), "narrowed: protocol {} ports {}->{}", protocol, src, dst);
                    }
                }
            }
        }
    }
}
