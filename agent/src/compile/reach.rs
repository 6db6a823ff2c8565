//! Whether a changed rule can change a decision for a class of peers.
//!
//! A rule is out of reach for a peer when an earlier rule of the same list holds for that
//! peer, ends the list (allow, deny or pass) and matches every packet the rule matches: no
//! packet gets past the earlier rule to it, so it neither decides nor logs. Later policies
//! often repeat what an earlier one already decides for the same endpoints; a change to
//! such a repeated rule alone changes no table, and the peer classes it is out of reach for
//! keep theirs without the program being narrowed and its table made again.

use crate::model::Action;

use super::peer_groups::ChangedRules;
use super::program::{ProfileStep, Program};
use super::rules::{CompiledRule, RuleId};

/// The rules a program change added or removed, each with what puts it out of reach.
pub(crate) struct ChangeReach {
    rules: Vec<Reach>,
}

/// One changed rule: per place it has in its program (a profile may be listed twice), the
/// earlier rules there that cover it. `None`: a rule the compiler does not have, which
/// always counts as a change.
struct Reach {
    id: RuleId,
    places: Option<Vec<Vec<RuleId>>>,
}

impl ChangeReach {
    /// `changed` between `old` and `new`: the removed rules as `old` places them, the added
    /// ones as `new` does.
    pub fn of(
        old: &Program,
        new: &Program,
        changed: &ChangedRules,
        rules: &[CompiledRule],
    ) -> ChangeReach {
        let removed = changed
            .removed
            .iter()
            .map(|&id| Reach::in_program(old, rules, id));
        let added = changed
            .added
            .iter()
            .map(|&id| Reach::in_program(new, rules, id));
        ChangeReach {
            rules: removed.chain(added).collect(),
        }
    }

    /// Whether the change can change a decision for peers for which `holds` says which
    /// rules' peer tests pass.
    pub fn concerns(&self, holds: impl Fn(RuleId) -> bool) -> bool {
        self.rules.iter().any(|reach| match &reach.places {
            None => true,
            Some(places) => {
                holds(reach.id)
                    && places
                        .iter()
                        .any(|earlier| !earlier.iter().any(|&id| holds(id)))
            }
        })
    }
}

impl Reach {
    fn in_program(program: &Program, rules: &[CompiledRule], id: RuleId) -> Reach {
        let Some(rule) = rules.get(id as usize) else {
            return Reach { id, places: None };
        };
        let profile_lists = program.profiles.iter().filter_map(|step| match step {
            ProfileStep::Rules(ids) => Some(ids.as_slice()),
            ProfileStep::Missing(_) => None,
        });
        let mut places: Vec<Vec<RuleId>> = Vec::new();
        for list in program.policies.as_deref().into_iter().chain(profile_lists) {
            for (at, _) in list.iter().enumerate().filter(|(_, other)| **other == id) {
                let covering = list[..at]
                    .iter()
                    .copied()
                    .filter(|&e| rules.get(e as usize).is_some_and(|e| covers(e, rule)))
                    .collect();
                places.push(covering);
            }
        }
        // Not in the program at all: nothing is known to put it out of reach.
        if places.is_empty() {
            places.push(Vec::new());
        }
        Reach {
            id,
            places: Some(places),
        }
    }
}

/// Whether `earlier`, where it holds, ends its list for every packet `rule` matches.
/// Deliberately narrow (no criteria at all, or the same ones): that is how repeated rules
/// look, and it is cheap to tell.
fn covers(earlier: &CompiledRule, rule: &CompiledRule) -> bool {
    earlier.action() != Action::Log
        && earlier
            .ip_version
            .is_none_or(|v| rule.ip_version == Some(v))
        && (earlier.l4.matches_every_packet() || earlier.l4 == rule.l4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::compile::rules::compile_test_rules;

    const ALLOW_UDP_53: RuleId = 0;
    const DENY_UDP_53: RuleId = 1;
    const LOG_ALL: RuleId = 2;
    const DENY_ALL: RuleId = 3;
    const ALLOW_TCP: RuleId = 4;
    const V6_ALLOW_UDP_53: RuleId = 5;
    const PASS_UDP_53: RuleId = 6;

    fn rules() -> Vec<CompiledRule> {
        compile_test_rules(&[
            r#"{"action": "allow", "protocol": "udp", "destination": {"ports": [53]}}"#,
            r#"{"action": "deny", "protocol": "udp", "destination": {"ports": [53]}}"#,
            r#"{"action": "log"}"#,
            r#"{"action": "deny"}"#,
            r#"{"action": "allow", "protocol": "tcp"}"#,
            r#"{"action": "allow", "ipVersion": 6, "protocol": "udp", "destination": {"ports": [53]}}"#,
            r#"{"action": "pass", "protocol": "udp", "destination": {"ports": [53]}}"#,
        ])
    }

    fn program(policies: &[RuleId], profile: &[RuleId]) -> Program {
        Program {
            policies: Some(policies.to_vec()),
            profiles: vec![ProfileStep::Rules(profile.to_vec())],
        }
    }

    /// The reach of `old` becoming `new`, where they differ by `removed` and `added`.
    fn reach(old: &Program, new: &Program, removed: &[RuleId], added: &[RuleId]) -> ChangeReach {
        let changed = ChangedRules {
            removed: removed.iter().copied().collect(),
            added: added.iter().copied().collect(),
        };
        ChangeReach::of(old, new, &changed, &rules())
    }

    fn holding(ids: &[RuleId]) -> impl Fn(RuleId) -> bool + '_ {
        |id| ids.contains(&id)
    }

    #[test]
    fn a_rule_after_the_same_criteria_is_out_of_reach_where_those_hold() {
        // A later rule with the allow's criteria passes, then denies.
        let change = reach(
            &program(&[ALLOW_UDP_53, PASS_UDP_53], &[]),
            &program(&[ALLOW_UDP_53, DENY_UDP_53], &[]),
            &[PASS_UDP_53],
            &[DENY_UDP_53],
        );
        assert!(!change.concerns(holding(&[ALLOW_UDP_53, PASS_UDP_53, DENY_UDP_53])));
        // Where the earlier rule's peer tests fail, the change decides.
        assert!(change.concerns(holding(&[PASS_UDP_53, DENY_UDP_53])));
        assert!(change.concerns(holding(&[DENY_UDP_53])));
        // Where the changed rules' own tests fail, they match nothing either way.
        assert!(!change.concerns(holding(&[ALLOW_UDP_53])));
    }

    #[test]
    fn a_rule_without_criteria_covers_everything_after_it() {
        let change = reach(
            &program(&[DENY_ALL], &[]),
            &program(&[DENY_ALL, ALLOW_TCP], &[]),
            &[],
            &[ALLOW_TCP],
        );
        assert!(!change.concerns(holding(&[DENY_ALL, ALLOW_TCP])));
        assert!(change.concerns(holding(&[ALLOW_TCP])));
    }

    #[test]
    fn log_rules_and_other_criteria_cover_nothing() {
        let change = reach(
            &program(&[LOG_ALL, ALLOW_TCP], &[]),
            &program(&[LOG_ALL, ALLOW_TCP, DENY_UDP_53], &[]),
            &[],
            &[DENY_UDP_53],
        );
        assert!(change.concerns(holding(&[LOG_ALL, ALLOW_TCP, DENY_UDP_53])));
        // A rule of one family does not cover a rule of both.
        let change = reach(
            &program(&[V6_ALLOW_UDP_53], &[]),
            &program(&[V6_ALLOW_UDP_53, DENY_UDP_53], &[]),
            &[],
            &[DENY_UDP_53],
        );
        assert!(change.concerns(holding(&[V6_ALLOW_UDP_53, DENY_UDP_53])));
    }

    #[test]
    fn only_earlier_rules_of_the_same_list_cover() {
        // After it, not before.
        let change = reach(
            &program(&[ALLOW_UDP_53], &[]),
            &program(&[DENY_UDP_53, ALLOW_UDP_53], &[]),
            &[],
            &[DENY_UDP_53],
        );
        assert!(change.concerns(holding(&[ALLOW_UDP_53, DENY_UDP_53])));
        // A pass in the policies ends the policies, not the profiles after them.
        let change = reach(
            &program(&[PASS_UDP_53], &[]),
            &program(&[PASS_UDP_53], &[DENY_UDP_53]),
            &[],
            &[DENY_UDP_53],
        );
        assert!(change.concerns(holding(&[PASS_UDP_53, DENY_UDP_53])));
        // Within the policies, it ends them.
        let change = reach(
            &program(&[PASS_UDP_53], &[]),
            &program(&[PASS_UDP_53, DENY_UDP_53], &[]),
            &[],
            &[DENY_UDP_53],
        );
        assert!(!change.concerns(holding(&[PASS_UDP_53, DENY_UDP_53])));
    }

    #[test]
    fn removed_rules_are_placed_in_the_old_program() {
        let old = program(&[ALLOW_UDP_53, DENY_UDP_53], &[]);
        let new = program(&[ALLOW_UDP_53], &[]);
        let change = reach(&old, &new, &[DENY_UDP_53], &[]);
        assert!(!change.concerns(holding(&[ALLOW_UDP_53, DENY_UDP_53])));
        assert!(change.concerns(holding(&[DENY_UDP_53])));
    }

    #[test]
    fn a_rule_listed_twice_counts_where_it_is_in_reach() {
        // The same profile twice: covered in its second place only.
        let old = Program {
            policies: None,
            profiles: vec![
                ProfileStep::Rules(vec![DENY_UDP_53]),
                ProfileStep::Rules(vec![ALLOW_UDP_53, DENY_UDP_53]),
            ],
        };
        let new = Program {
            policies: None,
            profiles: vec![
                ProfileStep::Rules(vec![]),
                ProfileStep::Rules(vec![ALLOW_UDP_53]),
            ],
        };
        let change = reach(&old, &new, &[DENY_UDP_53], &[]);
        assert!(change.concerns(holding(&[ALLOW_UDP_53, DENY_UDP_53])));
    }

    #[test]
    fn unknown_and_missing_rules_always_count() {
        let change = reach(&program(&[], &[]), &program(&[999], &[]), &[], &[999]);
        assert!(change.concerns(holding(&[])));
        // Known, but not in its program: nothing covers it.
        let change = reach(&program(&[], &[]), &program(&[], &[]), &[], &[DENY_UDP_53]);
        assert!(change.concerns(holding(&[DENY_UDP_53])));
    }
}
