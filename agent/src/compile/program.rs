//! The ordered rule program of one endpoint and direction: the rules of the policies that
//! select it, then its profiles, with `pass`, end-of-policies and missing-profile semantics.
//! The compiler narrows a program by what it knows (the local address, then the peer's
//! signature) until only L4 criteria are left, and then runs it on one representative
//! packet per cell of the L4 space ([`super::table`]).

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use crate::model::Action;
use crate::policy::{Decision, L4, Reason, RuleRef, Verdict};

use super::inputs::Inputs;
use super::rules::{CompiledRule, RuleId};
use super::signature::Family;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Program {
    /// The rules of every applicable policy, in order; `None` when no policy selects the
    /// endpoint for this direction. `Some(empty)` still ends in the end-of-policies drop.
    /// One flat list is exact: `pass` skips all remaining policies, and a policy without a
    /// match falls through to the next.
    pub policies: Option<Vec<RuleId>>,
    /// The endpoint's profiles in its order, up to and including the first missing one
    /// (which denies everything, so nothing after it can be reached).
    pub profiles: Vec<ProfileStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ProfileStep {
    Rules(Vec<RuleId>),
    Missing(Rc<str>),
}

/// What the program decides for a packet: the same as the reference evaluator's
/// [`Decision`], kept as a value the image can store and share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The `log` rules the packet passed on the way, in order.
    pub logged: Vec<RuleRef>,
}

impl Outcome {
    pub fn to_decision(&self) -> Decision {
        Decision {
            verdict: self.verdict,
            reason: self.reason.clone(),
            logged: self.logged.clone(),
        }
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match &self.reason {
            Reason::Rule(r) => Some(r),
            _ => None,
        }
    }
}

/// What [`Program::run`] decides, by rule ID: cheap to compare and hash, so the compiler can
/// share outcomes before it spells them out as an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Decided {
    pub verdict: Verdict,
    pub reason: DecidedBy,
    /// The `log` rules passed, in order.
    pub logged: Vec<RuleId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum DecidedBy {
    Rule(RuleId),
    EndOfPolicies,
    MissingProfile(Rc<str>),
    NoProfileMatched,
}

impl Decided {
    pub fn to_outcome(&self, rules: &[CompiledRule]) -> Outcome {
        let rule_ref = |id: RuleId| rules.get(id as usize).map(|r| r.rule_ref.clone());
        Outcome {
            verdict: self.verdict,
            reason: match &self.reason {
                // Rule IDs come from the same rule list: always present.
                DecidedBy::Rule(id) => rule_ref(*id).map_or(Reason::NoProfileMatched, Reason::Rule),
                DecidedBy::EndOfPolicies => Reason::EndOfPolicies,
                DecidedBy::MissingProfile(name) => Reason::MissingProfile(name.to_string()),
                DecidedBy::NoProfileMatched => Reason::NoProfileMatched,
            },
            logged: self.logged.iter().filter_map(|&id| rule_ref(id)).collect(),
        }
    }
}

enum ListEnd {
    Decided(Verdict, RuleId),
    Passed,
    NoMatch,
}

impl Program {
    /// The programs (ingress, egress) of an endpoint with these effective labels and
    /// profiles. Each policy's selector is evaluated once for both directions.
    pub fn of_endpoint(
        inputs: &Inputs,
        labels: &BTreeMap<String, String>,
        profiles: &[String],
    ) -> [Program; 2] {
        let mut applicable = [false; 2];
        let mut policy_rules = [Vec::new(), Vec::new()];
        for policy in &inputs.policies {
            if policy.rules.iter().all(Option::is_none) || !policy.selector.matches(labels) {
                continue;
            }
            for (d, rules) in policy.rules.iter().enumerate() {
                if let Some(rules) = rules {
                    applicable[d] = true;
                    policy_rules[d].extend_from_slice(rules);
                }
            }
        }
        let [ingress, egress] = policy_rules;
        [(0, ingress), (1, egress)].map(|(d, rules)| {
            let mut steps = Vec::new();
            for name in profiles {
                match inputs.profiles.get(name) {
                    Some(Some(rules)) => steps.push(ProfileStep::Rules(rules[d].clone())),
                    _ => {
                        steps.push(ProfileStep::Missing(name.as_str().into()));
                        break;
                    }
                }
            }
            Program {
                policies: applicable[d].then_some(rules),
                profiles: steps,
            }
        })
    }

    /// This program with one policy's rules `old` replaced by `new`, where that policy
    /// keeps its place: its rules are one run in the list (rule IDs belong to one policy
    /// each), swapped in place. `None` when `old` is empty or not found as a run (the
    /// program must then be made afresh).
    pub fn with_policy_rules_replaced(&self, old: &[RuleId], new: &[RuleId]) -> Option<Program> {
        let list = self.policies.as_ref()?;
        let first = *old.first()?;
        let at = list.iter().position(|&id| id == first)?;
        if list.get(at..at + old.len())? != old {
            return None;
        }
        let mut replaced = Vec::with_capacity(list.len() - old.len() + new.len());
        replaced.extend_from_slice(&list[..at]);
        replaced.extend_from_slice(new);
        replaced.extend_from_slice(&list[at + old.len()..]);
        Some(Program {
            policies: Some(replaced),
            profiles: self.profiles.clone(),
        })
    }

    /// The same program without the rules `keep` rejects (rules that cannot match).
    pub fn retain(&self, mut keep: impl FnMut(RuleId) -> bool) -> Program {
        let mut filter = |ids: &Vec<RuleId>| ids.iter().copied().filter(|&id| keep(id)).collect();
        Program {
            policies: self.policies.as_ref().map(&mut filter),
            profiles: self
                .profiles
                .iter()
                .map(|step| match step {
                    ProfileStep::Rules(ids) => ProfileStep::Rules(filter(ids)),
                    ProfileStep::Missing(n) => ProfileStep::Missing(Rc::clone(n)),
                })
                .collect(),
        }
    }

    /// [`Program::retain`], leaving out as well what the rules kept can never reach: the
    /// rest of a list after a rule that matches every packet and allows, denies or passes,
    /// the lists after one that no packet leaves without a verdict (no `pass` on the
    /// way), and a rule after one of its list with the same criteria that allows, denies
    /// or passes (policies often repeat a rule: at 10,000 policies, most of a long
    /// program). Narrowed programs that behave the same then often are the same, and
    /// share one table without building it again; and the tables of long programs are
    /// built from the few rules that decide.
    pub fn narrowed(
        &self,
        rules: &[CompiledRule],
        mut keep: impl FnMut(RuleId) -> bool,
    ) -> Program {
        // The rules kept, and whether every packet gets its verdict in them.
        let mut cut = |ids: &[RuleId]| -> (Vec<RuleId>, bool) {
            let mut kept = Vec::with_capacity(ids.len());
            let mut passes = false;
            // The criteria of the rules kept that end the list for the packets they match.
            let mut ended: HashSet<u32, foldhash::fast::RandomState> = HashSet::default();
            for &id in ids.iter().filter(|&&id| keep(id)) {
                let Some(rule) = rules.get(id as usize) else {
                    kept.push(id);
                    continue;
                };
                if ended.contains(&rule.criteria) {
                    continue;
                }
                kept.push(id);
                if rule.action() == Action::Log {
                    continue;
                }
                passes |= rule.action() == Action::Pass;
                if rule.l4.matches_every_packet() {
                    return (kept, !passes);
                }
                ended.insert(rule.criteria);
            }
            (kept, false)
        };
        let mut narrowed = Program {
            policies: None,
            profiles: Vec::new(),
        };
        if let Some(ids) = &self.policies {
            let (kept, decides) = cut(ids);
            narrowed.policies = Some(kept);
            if decides {
                return narrowed;
            }
        }
        for step in &self.profiles {
            match step {
                ProfileStep::Rules(ids) => {
                    let (kept, decides) = cut(ids);
                    narrowed.profiles.push(ProfileStep::Rules(kept));
                    if decides {
                        break;
                    }
                }
                ProfileStep::Missing(name) => {
                    narrowed
                        .profiles
                        .push(ProfileStep::Missing(Rc::clone(name)));
                    break;
                }
            }
        }
        narrowed
    }

    pub fn rule_ids(&self) -> impl Iterator<Item = RuleId> + '_ {
        let profile_rules = self.profiles.iter().flat_map(|s| match s {
            ProfileStep::Rules(ids) => ids.as_slice(),
            ProfileStep::Missing(_) => &[],
        });
        self.policies.iter().flatten().chain(profile_rules).copied()
    }

    /// Runs the program on one packet, of which only the protocol and L4 fields still
    /// matter: every address test has been decided by [`Program::retain`].
    pub fn run(&self, rules: &[CompiledRule], family: Family, protocol: u8, l4: L4) -> Decided {
        let mut logged = Vec::new();
        let end = |verdict, reason, logged| Decided {
            verdict,
            reason,
            logged,
        };
        if let Some(ids) = &self.policies {
            match run_list(ids, rules, family, protocol, l4, &mut logged) {
                ListEnd::Decided(v, id) => return end(v, DecidedBy::Rule(id), logged),
                ListEnd::Passed => {}
                ListEnd::NoMatch => return end(Verdict::Deny, DecidedBy::EndOfPolicies, logged),
            }
        }
        for step in &self.profiles {
            match step {
                ProfileStep::Missing(name) => {
                    return end(
                        Verdict::Deny,
                        DecidedBy::MissingProfile(Rc::clone(name)),
                        logged,
                    );
                }
                // `pass` in a profile only ends that profile.
                ProfileStep::Rules(ids) => {
                    if let ListEnd::Decided(v, id) =
                        run_list(ids, rules, family, protocol, l4, &mut logged)
                    {
                        return end(v, DecidedBy::Rule(id), logged);
                    }
                }
            }
        }
        end(Verdict::Deny, DecidedBy::NoProfileMatched, logged)
    }
}

fn run_list(
    ids: &[RuleId],
    rules: &[CompiledRule],
    family: Family,
    protocol: u8,
    l4: L4,
    logged: &mut Vec<RuleId>,
) -> ListEnd {
    for &id in ids {
        let Some(rule) = rules.get(id as usize) else {
            continue;
        };
        if !rule.l4.matches(family, protocol, l4) {
            continue;
        }
        match rule.action() {
            Action::Allow => return ListEnd::Decided(Verdict::Allow, id),
            Action::Deny => return ListEnd::Decided(Verdict::Deny, id),
            Action::Pass => return ListEnd::Passed,
            Action::Log => logged.push(id),
        }
    }
    ListEnd::NoMatch
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::compile::rules::compile_test_rules;

    const ALLOW_ALL: RuleId = 0;
    const DENY_TCP: RuleId = 1;
    const ALLOW_UDP: RuleId = 2;
    const PASS_TCP: RuleId = 3;
    const DENY_ALL: RuleId = 4;
    const PASS_ALL: RuleId = 5;
    const LOG_ALL: RuleId = 6;
    const ALLOW_TCP: RuleId = 7;
    const LOG_TCP: RuleId = 8;

    fn rules() -> Vec<CompiledRule> {
        compile_test_rules(&[
            r#"{"action": "allow"}"#,
            r#"{"action": "deny", "protocol": "tcp"}"#,
            r#"{"action": "allow", "protocol": "udp"}"#,
            r#"{"action": "pass", "protocol": "tcp"}"#,
            r#"{"action": "deny"}"#,
            r#"{"action": "pass"}"#,
            r#"{"action": "log"}"#,
            r#"{"action": "allow", "protocol": "tcp"}"#,
            r#"{"action": "log", "protocol": "tcp"}"#,
        ])
    }

    fn program(policies: Option<&[RuleId]>, profiles: &[Option<&[RuleId]>]) -> Program {
        Program {
            policies: policies.map(<[RuleId]>::to_vec),
            profiles: profiles
                .iter()
                .map(|step| match step {
                    Some(ids) => ProfileStep::Rules(ids.to_vec()),
                    None => ProfileStep::Missing("gone".into()),
                })
                .collect(),
        }
    }

    fn narrowed(p: &Program) -> Program {
        p.narrowed(&rules(), |_| true)
    }

    #[test]
    fn a_rule_that_decides_every_packet_ends_the_program() {
        let p = program(
            Some(&[DENY_TCP, ALLOW_ALL, ALLOW_UDP]),
            &[Some(&[ALLOW_UDP])],
        );
        assert_eq!(narrowed(&p), program(Some(&[DENY_TCP, ALLOW_ALL]), &[]));
        let p = program(None, &[Some(&[DENY_ALL, ALLOW_UDP]), None]);
        assert_eq!(narrowed(&p), program(None, &[Some(&[DENY_ALL])]));
    }

    #[test]
    fn a_pass_on_the_way_keeps_the_profiles_reachable() {
        let p = program(Some(&[PASS_TCP, DENY_ALL, ALLOW_UDP]), &[None]);
        assert_eq!(narrowed(&p), program(Some(&[PASS_TCP, DENY_ALL]), &[None]));
        // In a profile, `pass` ends that profile only: the next one is reachable.
        let p = program(
            None,
            &[Some(&[PASS_TCP, ALLOW_ALL]), Some(&[DENY_ALL]), None],
        );
        assert_eq!(
            narrowed(&p),
            program(None, &[Some(&[PASS_TCP, ALLOW_ALL]), Some(&[DENY_ALL])])
        );
    }

    #[test]
    fn passing_every_packet_ends_its_list_only() {
        let p = program(
            Some(&[PASS_ALL, DENY_ALL]),
            &[Some(&[PASS_ALL, DENY_TCP]), None],
        );
        assert_eq!(
            narrowed(&p),
            program(Some(&[PASS_ALL]), &[Some(&[PASS_ALL]), None])
        );
    }

    #[test]
    fn a_rule_after_one_with_its_criteria_is_out_of_reach_in_that_list() {
        let p = program(
            Some(&[DENY_TCP, ALLOW_UDP, ALLOW_TCP, LOG_TCP]),
            &[Some(&[ALLOW_TCP])],
        );
        assert_eq!(
            narrowed(&p),
            program(Some(&[DENY_TCP, ALLOW_UDP]), &[Some(&[ALLOW_TCP])])
        );
        // A pass ends the policies for its packets too.
        let p = program(Some(&[PASS_TCP, ALLOW_TCP]), &[]);
        assert_eq!(narrowed(&p), program(Some(&[PASS_TCP]), &[]));
        // A log rule ends nothing; a rule not kept ends nothing.
        let p = program(Some(&[LOG_TCP, DENY_TCP, ALLOW_TCP]), &[]);
        assert_eq!(narrowed(&p), program(Some(&[LOG_TCP, DENY_TCP]), &[]));
        let without_deny = p.narrowed(&rules(), |id| id != DENY_TCP);
        assert_eq!(without_deny, program(Some(&[LOG_TCP, ALLOW_TCP]), &[]));
    }

    #[test]
    fn log_rules_end_nothing_and_rules_not_kept_end_nothing() {
        let p = program(Some(&[LOG_ALL, ALLOW_UDP]), &[]);
        assert_eq!(narrowed(&p), p);
        let p = program(Some(&[ALLOW_ALL, DENY_TCP]), &[]);
        let without_allow = p.narrowed(&rules(), |id| id != ALLOW_ALL);
        assert_eq!(without_allow, program(Some(&[DENY_TCP]), &[]));
    }
}
