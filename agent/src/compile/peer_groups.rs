//! Peer groups: the peer classes of one local ID's program (one direction) gathered by
//! the table they get. The kernel maps a remote ID to its group (no entry: group 0) and
//! the group to its table, so a change that gives many peers a new table but keeps them
//! together rewrites one group entry, not an entry per peer.
//!
//! A fresh grouping has one group per distinct table, group 0 being the one with the most
//! peers. A change applied in place keeps the grouping and only splits a group whose
//! classes no longer share a table: groups are never merged in place, so the peers that
//! move are exactly those whose table now differs from their group's. A full compile
//! groups afresh.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::rc::Rc;

use super::image::{PeerGroup, TableId};
use super::peer_classes::PeerBit;
use super::program::Program;
use super::rules::RuleId;
use super::signature::{Bits, Family};

pub(crate) struct PeerGroups {
    /// The program the groups were made for.
    pub program: Rc<Program>,
    pub family: Family,
    /// Its peer classes (shared by the programs that read the same peer bits).
    pub classes: Rc<Vec<Bits>>,
    /// Per class.
    pub class_tables: Vec<TableId>,
    pub class_groups: Vec<PeerGroup>,
    /// Per group.
    pub group_tables: Vec<TableId>,
    /// How many of the program's rules read each peer bit (the classes split by them).
    pub bit_counts: Rc<BTreeMap<PeerBit, u32>>,
}

/// The rules only one of two programs has: `removed` (the old one's), `added` (the new
/// one's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ChangedRules {
    pub removed: BTreeSet<RuleId>,
    pub added: BTreeSet<RuleId>,
}

impl ChangedRules {
    fn between(in_old: &HashSet<RuleId>, in_new: &HashSet<RuleId>) -> ChangedRules {
        ChangedRules {
            removed: in_old.difference(in_new).copied().collect(),
            added: in_new.difference(in_old).copied().collect(),
        }
    }

    fn contains(&self, id: RuleId) -> bool {
        self.removed.contains(&id) || self.added.contains(&id)
    }
}

impl PeerGroups {
    /// One group per distinct table of `class_tables`: group 0 for the table the most
    /// peers get (ties to the lower table ID), the others in table order.
    pub fn fresh(
        program: Rc<Program>,
        family: Family,
        classes: Rc<Vec<Bits>>,
        class_tables: Vec<TableId>,
    ) -> PeerGroups {
        let mut peers: BTreeMap<TableId, usize> = BTreeMap::new();
        for (class, table) in classes.iter().zip(&class_tables) {
            *peers.entry(*table).or_default() += class.count_ones();
        }
        let default = peers
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(t, _)| *t);
        let group_tables: Vec<TableId> = default
            .into_iter()
            .chain(peers.keys().copied().filter(|t| Some(*t) != default))
            .collect();
        let class_groups = class_tables
            .iter()
            .map(|t| PeerGroup(group_tables.iter().position(|g| g == t).unwrap_or(0) as u32))
            .collect();
        PeerGroups {
            program,
            family,
            classes,
            class_tables,
            class_groups,
            group_tables,
            bit_counts: Rc::default(),
        }
    }

    /// The same classes with new tables: every group whose classes still share a table
    /// keeps its number; a group whose classes now differ keeps the part with the most
    /// peers, and each other part becomes a new group. Returns the classes that changed
    /// group.
    pub fn refine(&mut self, program: Rc<Program>, class_tables: Vec<TableId>) -> Vec<usize> {
        self.program = program;
        // Most groups' classes still share one table: such a group only takes that table,
        // and needs no count of its peers. Only the groups whose classes now differ are
        // split below.
        let mut shared: Vec<Shared> = vec![Shared::NoClass; self.group_tables.len()];
        for (group, table) in self.class_groups.iter().zip(&class_tables) {
            match shared.get_mut(group.0 as usize) {
                Some(s @ Shared::NoClass) => *s = Shared::One(*table),
                Some(s @ Shared::One(_)) if *s != Shared::One(*table) => *s = Shared::Differ,
                _ => {}
            }
        }
        for (slot, s) in self.group_tables.iter_mut().zip(&shared) {
            if let Shared::One(table) = s {
                *slot = *table;
            }
        }
        let splits = |group: PeerGroup| {
            shared
                .get(group.0 as usize)
                .is_none_or(|s| *s == Shared::Differ)
        };
        let mut parts: BTreeMap<(PeerGroup, TableId), (usize, Vec<usize>)> = BTreeMap::new();
        for (i, (class, table)) in self.classes.iter().zip(&class_tables).enumerate() {
            if !splits(self.class_groups[i]) {
                continue;
            }
            let part = parts.entry((self.class_groups[i], *table)).or_default();
            part.0 += class.count_ones();
            part.1.push(i);
        }
        let mut by_group: BTreeMap<PeerGroup, Vec<(TableId, usize, Vec<usize>)>> = BTreeMap::new();
        for ((group, table), (peers, classes)) in parts {
            by_group
                .entry(group)
                .or_default()
                .push((table, peers, classes));
        }
        let mut moved = Vec::new();
        for (group, mut parts) in by_group {
            // The part that stays first: most peers, then the lower table ID.
            parts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut parts = parts.into_iter();
            if let Some((table, _, _)) = parts.next()
                && let Some(slot) = self.group_tables.get_mut(group.0 as usize)
            {
                *slot = table;
            }
            for (table, _, classes) in parts {
                let new = PeerGroup(self.group_tables.len() as u32);
                self.group_tables.push(table);
                for i in classes {
                    self.class_groups[i] = new;
                    moved.push(i);
                }
            }
        }
        self.class_tables = class_tables;
        moved
    }
}

/// What the classes of one group have in common, as [`PeerGroups::refine`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    NoClass,
    One(TableId),
    Differ,
}

/// The rules one program has and the other has not, when that is all that tells them
/// apart (leaving those rules out, both are the same list in the same order). A class of
/// peers that none of them concern narrows both programs to the same rules. `None` when
/// the programs differ otherwise (rules moved, a policy section appeared).
pub(crate) fn changed_rules(old: &Program, new: &Program) -> Option<ChangedRules> {
    if old.profiles == new.profiles
        && let (Some(a), Some(b)) = (&old.policies, &new.policies)
    {
        return changed_policy_rules(a, b);
    }
    let in_old: HashSet<RuleId> = old.rule_ids().collect();
    let in_new: HashSet<RuleId> = new.rule_ids().collect();
    let changed = ChangedRules::between(&in_old, &in_new);
    let unchanged = |id: RuleId| !changed.contains(id);
    (old.retain(unchanged) == new.retain(unchanged)).then_some(changed)
}

/// [`changed_rules`] of two policy lists (the profiles being the same): a policy's rule
/// IDs appear once in a list, so what the lists share at their start and end is unchanged,
/// and only the parts between are compared (a change is usually one policy's rules).
fn changed_policy_rules(old: &[RuleId], new: &[RuleId]) -> Option<ChangedRules> {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[prefix..], &new[prefix..]);
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let (old, new) = (&old[..old.len() - suffix], &new[..new.len() - suffix]);
    let in_old: HashSet<RuleId> = old.iter().copied().collect();
    let in_new: HashSet<RuleId> = new.iter().copied().collect();
    let changed = ChangedRules::between(&in_old, &in_new);
    let unchanged = |list: &[RuleId]| -> Vec<RuleId> {
        list.iter()
            .copied()
            .filter(|&id| !changed.contains(id))
            .collect()
    };
    (unchanged(old) == unchanged(new)).then_some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::program::ProfileStep;

    fn classes(sizes: &[usize]) -> Rc<Vec<Bits>> {
        let total = sizes.iter().sum();
        let mut next = 0;
        Rc::new(
            sizes
                .iter()
                .map(|&n| {
                    let mut b = Bits::zeros(total);
                    for i in next..next + n {
                        b.set(i);
                    }
                    next += n;
                    b
                })
                .collect(),
        )
    }

    fn program(policies: &[u32]) -> Program {
        Program {
            policies: Some(policies.to_vec()),
            profiles: vec![ProfileStep::Rules(vec![100])],
        }
    }

    fn tables(ids: &[u32]) -> Vec<TableId> {
        ids.iter().map(|&i| TableId(i)).collect()
    }

    fn groups(ids: &[u32]) -> Vec<PeerGroup> {
        ids.iter().map(|&i| PeerGroup(i)).collect()
    }

    #[test]
    fn fresh_groups_put_the_most_peers_in_group_zero() {
        let g = PeerGroups::fresh(
            Rc::new(program(&[1])),
            Family::V4,
            classes(&[1, 5, 2, 1]),
            tables(&[7, 3, 7, 9]),
        );
        assert_eq!(g.group_tables, tables(&[3, 7, 9]));
        assert_eq!(g.class_groups, groups(&[1, 0, 1, 2]));
    }

    #[test]
    fn fresh_ties_go_to_the_lower_table() {
        let g = PeerGroups::fresh(
            Rc::new(program(&[])),
            Family::V4,
            classes(&[2, 2]),
            tables(&[5, 4]),
        );
        assert_eq!(g.group_tables, tables(&[4, 5]));
        assert_eq!(g.class_groups, groups(&[1, 0]));
    }

    #[test]
    fn refining_with_a_table_per_group_moves_nobody() {
        let mut g = PeerGroups::fresh(
            Rc::new(program(&[1])),
            Family::V4,
            classes(&[3, 1, 1]),
            tables(&[1, 2, 2]),
        );
        // Every class of group 1 gets table 8, group 0's gets table 1 still.
        let moved = g.refine(Rc::new(program(&[2])), tables(&[1, 8, 8]));
        assert!(moved.is_empty());
        assert_eq!(g.group_tables, tables(&[1, 8]));
        assert_eq!(g.class_groups, groups(&[0, 1, 1]));
        assert_eq!(*g.program, program(&[2]));
    }

    #[test]
    fn refining_splits_a_group_keeping_its_biggest_part() {
        let mut g = PeerGroups::fresh(
            Rc::new(program(&[1])),
            Family::V4,
            classes(&[1, 4, 2]),
            tables(&[6, 6, 6]),
        );
        assert_eq!(g.group_tables, tables(&[6]));
        let moved = g.refine(Rc::new(program(&[2])), tables(&[8, 6, 9]));
        assert_eq!(moved, vec![2, 0]);
        assert_eq!(g.group_tables, tables(&[6, 9, 8]));
        assert_eq!(g.class_groups, groups(&[2, 0, 1]));
    }

    #[test]
    fn refining_never_merges() {
        let mut g = PeerGroups::fresh(
            Rc::new(program(&[1])),
            Family::V4,
            classes(&[2, 1]),
            tables(&[1, 2]),
        );
        let moved = g.refine(Rc::new(program(&[2])), tables(&[3, 3]));
        assert!(moved.is_empty());
        assert_eq!(g.group_tables, tables(&[3, 3]));
    }

    fn changed(removed: &[u32], added: &[u32]) -> Option<ChangedRules> {
        Some(ChangedRules {
            removed: removed.iter().copied().collect(),
            added: added.iter().copied().collect(),
        })
    }

    #[test]
    fn changed_rules_are_the_ones_only_one_side_has() {
        assert_eq!(
            changed_rules(&program(&[1, 2, 3]), &program(&[1, 4, 3])),
            changed(&[2], &[4])
        );
        assert_eq!(
            changed_rules(&program(&[1, 2]), &program(&[1, 2])),
            changed(&[], &[])
        );
        // Not only the policies: a profile step differs too.
        let mut other = program(&[1, 2]);
        other.profiles = vec![ProfileStep::Rules(vec![100, 101])];
        assert_eq!(
            changed_rules(&program(&[1, 2]), &other),
            changed(&[], &[101])
        );
    }

    #[test]
    fn changed_rules_in_long_lists_are_found_between_what_they_share() {
        let old: Vec<u32> = (0..1000).collect();
        let mut new = old.clone();
        new.splice(400..403, [5000, 401, 5001]);
        assert_eq!(
            changed_rules(&program(&old), &program(&new)),
            changed(&[400, 402], &[5000, 5001])
        );
        let mut moved = old.clone();
        moved.swap(10, 900);
        assert_eq!(changed_rules(&program(&old), &program(&moved)), None);
    }

    #[test]
    fn programs_that_differ_otherwise_have_no_changed_rules() {
        // The same rules in another order.
        assert_eq!(changed_rules(&program(&[1, 2]), &program(&[2, 1])), None);
        // A policy section where there was none.
        let none = Program {
            policies: None,
            profiles: vec![ProfileStep::Rules(vec![100])],
        };
        assert_eq!(changed_rules(&none, &program(&[])), None);
    }
}
