//! The ordered rule program of one endpoint and direction: the rules of the policies that
//! select it, then its profiles, with `pass`, end-of-policies and missing-profile semantics.
//! The compiler narrows a program by what it knows (the local address, then the peer's
//! signature) until only L4 criteria are left, and then runs it on one representative
//! packet per cell of the L4 space ([`super::table`]).

use std::collections::BTreeMap;

use crate::model::Action;
use crate::policy::{Decision, Direction, L4, Reason, RuleRef, Verdict};

use super::inputs::{Inputs, dir_index};
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
    Missing(String),
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

enum ListEnd {
    Decided(Verdict, RuleRef),
    Passed,
    NoMatch,
}

impl Program {
    /// The program of an endpoint with these effective labels and profiles.
    pub fn of_endpoint(
        inputs: &Inputs,
        labels: &BTreeMap<String, String>,
        profiles: &[String],
        direction: Direction,
    ) -> Program {
        let d = dir_index(direction);
        let mut applicable = false;
        let mut policy_rules = Vec::new();
        for policy in &inputs.policies {
            if let Some(rules) = &policy.rules[d]
                && policy.selector.matches(labels)
            {
                applicable = true;
                policy_rules.extend_from_slice(rules);
            }
        }
        let mut steps = Vec::new();
        for name in profiles {
            match inputs.profiles.get(name) {
                Some(Some(rules)) => steps.push(ProfileStep::Rules(rules[d].clone())),
                _ => {
                    steps.push(ProfileStep::Missing(name.clone()));
                    break;
                }
            }
        }
        Program {
            policies: applicable.then_some(policy_rules),
            profiles: steps,
        }
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
                    ProfileStep::Missing(n) => ProfileStep::Missing(n.clone()),
                })
                .collect(),
        }
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
    pub fn run(&self, rules: &[CompiledRule], family: Family, protocol: u8, l4: L4) -> Outcome {
        let mut logged = Vec::new();
        let decided = |verdict, rule, logged| Outcome {
            verdict,
            reason: Reason::Rule(rule),
            logged,
        };
        if let Some(ids) = &self.policies {
            match run_list(ids, rules, family, protocol, l4, &mut logged) {
                ListEnd::Decided(v, r) => return decided(v, r, logged),
                ListEnd::Passed => {}
                ListEnd::NoMatch => {
                    return Outcome {
                        verdict: Verdict::Deny,
                        reason: Reason::EndOfPolicies,
                        logged,
                    };
                }
            }
        }
        for step in &self.profiles {
            match step {
                ProfileStep::Missing(name) => {
                    return Outcome {
                        verdict: Verdict::Deny,
                        reason: Reason::MissingProfile(name.clone()),
                        logged,
                    };
                }
                // `pass` in a profile only ends that profile.
                ProfileStep::Rules(ids) => {
                    if let ListEnd::Decided(v, r) =
                        run_list(ids, rules, family, protocol, l4, &mut logged)
                    {
                        return decided(v, r, logged);
                    }
                }
            }
        }
        Outcome {
            verdict: Verdict::Deny,
            reason: Reason::NoProfileMatched,
            logged,
        }
    }
}

fn run_list(
    ids: &[RuleId],
    rules: &[CompiledRule],
    family: Family,
    protocol: u8,
    l4: L4,
    logged: &mut Vec<RuleRef>,
) -> ListEnd {
    for rule in ids.iter().filter_map(|&id| rules.get(id as usize)) {
        if !rule.l4.matches(family, protocol, l4) {
            continue;
        }
        match rule.action() {
            Action::Allow => return ListEnd::Decided(Verdict::Allow, rule.rule_ref.clone()),
            Action::Deny => return ListEnd::Decided(Verdict::Deny, rule.rule_ref.clone()),
            Action::Pass => return ListEnd::Passed,
            Action::Log => logged.push(rule.rule_ref.clone()),
        }
    }
    ListEnd::NoMatch
}
