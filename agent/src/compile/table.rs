//! Policy tables: what a program decides, as a function of protocol and L4 fields only.
//!
//! A [`Table`] holds, per protocol that behaves differently from the rest, a
//! [`RangeTable`] over two 16-bit keys, and one outcome for every other protocol:
//! - TCP, UDP: (source port, destination port). Rules test either port, so one key is not
//!   enough; the table is rows of source-port ranges, each a list of destination-port
//!   ranges. When no rule looks at source ports there is one row.
//! - the ICMP of the family: (type, code), the same shape.
//! - any other named protocol: one cell, keys (0, 0).
//!
//! Built by cutting each key's domain at every bound any rule uses, running the program on
//! one packet per cell (every criterion is constant on a cell, so that packet speaks for
//! the cell), then merging neighbouring cells with the same outcome.

use std::collections::BTreeSet;

use crate::policy::{L4, PROTO_TCP, PROTO_UDP};

use super::program::{Decided, Program};
use super::rules::CompiledRule;
use super::signature::Family;
use super::table_row::run_row;

/// Index into [`super::Image::outcomes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutcomeId(pub u32);

/// A function of two 16-bit keys `(a, b)`, as sorted ranges of `a`, each with sorted ranges
/// of `b`. A range runs from its start to the next start (or the end of the domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RangeTable {
    /// Sorted by start; the first starts at 0.
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Row {
    pub start: u16,
    /// `(start of b range, outcome)`, sorted by start; the first starts at 0.
    pub cells: Vec<(u16, OutcomeId)>,
}

impl RangeTable {
    pub fn single(outcome: OutcomeId) -> RangeTable {
        RangeTable {
            rows: vec![Row {
                start: 0,
                cells: vec![(0, outcome)],
            }],
        }
    }

    /// Builds the table over the cells `a_starts` × `b_starts` (each sorted, starting at 0),
    /// merging equal neighbours.
    pub fn build(
        a_starts: &[u16],
        b_starts: &[u16],
        mut outcome: impl FnMut(u16, u16) -> OutcomeId,
    ) -> RangeTable {
        RangeTable::build_by_rows(a_starts, b_starts, |a| {
            b_starts.iter().map(|&b| outcome(a, b)).collect()
        })
    }

    /// [`RangeTable::build`], given each row's outcomes at once (`row(a)`: one per
    /// `b_starts`, in order).
    pub fn build_by_rows(
        a_starts: &[u16],
        b_starts: &[u16],
        mut row: impl FnMut(u16) -> Vec<OutcomeId>,
    ) -> RangeTable {
        let mut rows: Vec<Row> = Vec::new();
        for &a in a_starts {
            let mut cells: Vec<(u16, OutcomeId)> = Vec::new();
            for (&b, o) in b_starts.iter().zip(row(a)) {
                if cells.last().is_none_or(|&(_, last)| last != o) {
                    cells.push((b, o));
                }
            }
            if rows.last().is_none_or(|r| r.cells != cells) {
                rows.push(Row { start: a, cells });
            }
        }
        RangeTable { rows }
    }

    pub fn get(&self, a: u16, b: u16) -> Option<OutcomeId> {
        let row = self
            .rows
            .get(self.rows.partition_point(|r| r.start <= a).checked_sub(1)?)?;
        let i = row.cells.partition_point(|&(start, _)| start <= b);
        row.cells.get(i.checked_sub(1)?).map(|&(_, o)| o)
    }

    /// Number of leaf entries (cells) the table stores.
    pub fn cell_count(&self) -> usize {
        self.rows.iter().map(|r| r.cells.len()).sum()
    }
}

/// A program's decisions for one (local ID, peer class, direction).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// Protocols whose packets are not all decided like `other`, sorted by number.
    pub protocols: Vec<(u8, RangeTable)>,
    /// The outcome for every protocol not listed.
    pub other: OutcomeId,
}

impl Table {
    pub fn cell_count(&self) -> usize {
        1 + self
            .protocols
            .iter()
            .map(|(_, t)| t.cell_count())
            .sum::<usize>()
    }

    /// The outcome for a packet of `protocol` whose table keys are `(a, b)`: (source port,
    /// destination port) for TCP and UDP, (type, code) for the family's ICMP, else ignored.
    pub fn get(&self, protocol: u8, a: u16, b: u16) -> Option<OutcomeId> {
        match self.protocols.binary_search_by_key(&protocol, |(p, _)| *p) {
            Ok(i) => self.protocols.get(i).and_then(|(_, t)| t.get(a, b)),
            Err(_) => Some(self.other),
        }
    }
}

/// The starts of the ranges `[lo, hi]` cut `0..=max` into, including 0.
pub(crate) fn range_starts(ranges: impl Iterator<Item = (u16, u16)>, max: u16) -> Vec<u16> {
    // Long programs repeat the same bounds many times: a bit per value of the domain
    // (8 KiB for ports) takes them in any order and gives them back sorted, once each,
    // cheaper than sorting the list of bounds.
    let mut seen = vec![0u64; (usize::from(max) + 1).div_ceil(64)];
    let mut mark = |v: u16| {
        if let Some(word) = seen.get_mut(usize::from(v) / 64) {
            *word |= 1 << (v % 64);
        }
    };
    mark(0);
    for (lo, hi) in ranges {
        mark(lo.min(max));
        if hi < max {
            mark(hi + 1);
        }
    }
    let mut starts = Vec::new();
    for (i, &word) in seen.iter().enumerate() {
        let mut rest = word;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            starts.extend(u16::try_from(i * 64 + bit).ok());
        }
    }
    starts
}

/// The table of a program whose address tests are all decided.
pub(crate) fn build_table(
    program: &Program,
    rules: &[CompiledRule],
    family: Family,
    intern: &mut dyn FnMut(Decided) -> OutcomeId,
) -> Table {
    let used: Vec<&CompiledRule> = program
        .rule_ids()
        .filter_map(|id| rules.get(id as usize))
        .collect();
    let icmp = family.icmp_protocol();
    let mut protocols: BTreeSet<u8> = used.iter().flat_map(|r| r.l4.protocols()).collect();
    protocols.extend([PROTO_TCP, PROTO_UDP, icmp]);
    // Rules never name protocol 0 (it is not a valid protocol value), but find a free
    // number anyway rather than rely on it.
    let other_protocol = (0..=u8::MAX).find(|p| !protocols.contains(p)).unwrap_or(0);
    let other = intern(program.run(rules, family, other_protocol, L4::None));

    let mut tables = Vec::new();
    for protocol in protocols {
        // Only the rules that can match this protocol decide its packets, and only their
        // bounds cut its table.
        let admits = |r: &CompiledRule| r.l4.admits_protocol(protocol);
        let used: Vec<&CompiledRule> = used.iter().copied().filter(|r| admits(r)).collect();
        let mut run = |l4| intern(program.run(rules, family, protocol, l4));
        let table = if protocol == PROTO_TCP || protocol == PROTO_UDP {
            // Each row walks the program: without the rules of other protocols, it walks
            // only what can decide. (A single run skips them as fast as a copy would.)
            let program = program.retain(|id| rules.get(id as usize).is_some_and(admits));
            // One plain pass over the rules for both keys: long programs have hundreds.
            let (mut src, mut dst) = (Vec::new(), Vec::new());
            for r in &used {
                for p in r.l4.src_ports.iter().chain(&r.l4.src_not_ports) {
                    src.push((p.min, p.max));
                }
                for p in r.l4.dst_ports.iter().chain(&r.l4.dst_not_ports) {
                    dst.push((p.min, p.max));
                }
            }
            let src = range_starts(src.into_iter(), u16::MAX);
            let dst = range_starts(dst.into_iter(), u16::MAX);
            RangeTable::build_by_rows(&src, &dst, |s| {
                let row = run_row(&program, rules, family, protocol, s, &dst);
                let outcomes: Vec<OutcomeId> = row.distinct.into_iter().map(&mut *intern).collect();
                row.cells.iter().map(|&i| outcomes[i]).collect()
            })
        } else if protocol == icmp {
            let fields = || {
                used.iter()
                    .flat_map(|r| r.l4.icmp.iter().chain(&r.l4.not_icmp))
            };
            let types = range_starts(
                fields()
                    .filter_map(|f| f.icmp_type)
                    .map(|t| (u16::from(t), u16::from(t))),
                255,
            );
            let codes = range_starts(
                fields()
                    .filter(|f| f.icmp_type.is_some())
                    .filter_map(|f| f.code)
                    .map(|c| (u16::from(c), u16::from(c))),
                255,
            );
            let narrow = |v: u16| u8::try_from(v).unwrap_or(u8::MAX);
            RangeTable::build(&types, &codes, |t, c| {
                run(L4::Icmp {
                    icmp_type: narrow(t),
                    code: narrow(c),
                })
            })
        } else {
            RangeTable::single(run(L4::None))
        };
        if table != RangeTable::single(other) {
            tables.push((protocol, table));
        }
    }
    Table {
        protocols: tables,
        other,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn range_starts_cut_at_both_bounds_and_clip_the_domain() {
        let r = range_starts(
            [(80, 80), (3000, 3306), (65000, 65535)].into_iter(),
            u16::MAX,
        );
        assert_eq!(r, vec![0, 80, 81, 3000, 3307, 65000]);
        assert_eq!(range_starts([(0, 0)].into_iter(), 255), vec![0, 1]);
        assert_eq!(range_starts([(255, 255)].into_iter(), 255), vec![0, 255]);
    }

    #[test]
    fn build_merges_equal_neighbours_and_get_finds_the_range() {
        let a = [0u16, 10, 20];
        let b = [0u16, 100, 200, 300];
        // Depends only on whether b is in [100, 299]; rows 0 and 10 equal, row 20 differs.
        let t = RangeTable::build(&a, &b, |a, b| {
            let inside = (100..300).contains(&b);
            OutcomeId(u32::from(inside) + if a >= 20 { 10 } else { 0 })
        });
        assert_eq!(t.rows.len(), 2);
        assert_eq!(
            t.rows[0].cells,
            vec![(0, OutcomeId(0)), (100, OutcomeId(1)), (300, OutcomeId(0))]
        );
        for (a, b, want) in [
            (0, 0, 0),
            (19, 99, 0),
            (19, 100, 1),
            (5, 299, 1),
            (5, 300, 0),
            (20, 150, 11),
            (u16::MAX, u16::MAX, 10),
        ] {
            assert_eq!(t.get(a, b), Some(OutcomeId(want)), "({a}, {b})");
        }
    }

    #[test]
    fn table_lists_only_protocols_that_differ() {
        let t = Table {
            protocols: vec![(6, RangeTable::single(OutcomeId(1)))],
            other: OutcomeId(0),
        };
        assert_eq!(t.get(6, 1, 2), Some(OutcomeId(1)));
        assert_eq!(t.get(17, 1, 2), Some(OutcomeId(0)));
        assert_eq!(t.cell_count(), 2);
    }
}
