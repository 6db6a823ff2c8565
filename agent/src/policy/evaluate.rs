//! The per-endpoint chain (policies, then profiles) and flows between endpoints.

use crate::model::{Action, ResourceKey};

use super::index::{CompiledPolicy, Model, PolicyClass};
use super::rule_match::CompiledRule;
use super::{Decision, Direction, Packet, Reason, RuleOwner, RuleRef, Verdict};

/// The decisions for one flow: the source workload's egress and the destination
/// workload's ingress, each present when that side is a workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDecision {
    pub egress: Option<Decision>,
    pub ingress: Option<Decision>,
}

impl FlowDecision {
    /// Allowed only if every side that applies policy allows it.
    pub fn verdict(&self) -> Verdict {
        let denied = [&self.egress, &self.ingress]
            .into_iter()
            .flatten()
            .any(|d| d.verdict == Verdict::Deny);
        if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }
}

/// How one list of rules ended.
enum RulesOutcome {
    Decided(Verdict, RuleRef),
    Passed,
    NoMatch,
}

impl Model {
    /// The verdict of `endpoint`'s policy for a packet crossing it in `direction`, or `None`
    /// if there is no such (valid) workload endpoint.
    pub fn evaluate(
        &self,
        endpoint: &ResourceKey,
        direction: Direction,
        packet: &Packet,
    ) -> Option<Decision> {
        let local = self.workloads.get(endpoint)?;
        let mut logged = Vec::new();

        let applicable: Vec<&CompiledPolicy> = self
            .policies
            .iter()
            .filter(|p| {
                p.class == PolicyClass::Normal
                    && p.rules(direction).is_some()
                    && p.selector.matches(&local.labels)
            })
            .collect();
        if !applicable.is_empty() {
            let mut passed = false;
            for policy in applicable {
                let rules = policy.rules(direction).unwrap_or(&[]);
                let owner = RuleOwner::Policy(policy.name.clone());
                match self.run_rules(rules, owner, direction, packet, &mut logged) {
                    RulesOutcome::Decided(verdict, rule) => {
                        return Some(Decision {
                            verdict,
                            reason: Reason::Rule(rule),
                            logged,
                        });
                    }
                    RulesOutcome::Passed => {
                        passed = true;
                        break;
                    }
                    RulesOutcome::NoMatch => {}
                }
            }
            if !passed {
                return Some(Decision {
                    verdict: Verdict::Deny,
                    reason: Reason::EndOfPolicies,
                    logged,
                });
            }
        }

        for name in &local.endpoint.spec.profiles {
            let Some(profile) = self.profiles.get(name) else {
                return Some(Decision {
                    verdict: Verdict::Deny,
                    reason: Reason::MissingProfile(name.clone()),
                    logged,
                });
            };
            let rules = match direction {
                Direction::Ingress => &profile.ingress,
                Direction::Egress => &profile.egress,
            };
            let owner = RuleOwner::Profile(name.clone());
            // `pass` in a profile only ends that profile: the next one is evaluated.
            if let RulesOutcome::Decided(verdict, rule) =
                self.run_rules(rules, owner, direction, packet, &mut logged)
            {
                return Some(Decision {
                    verdict,
                    reason: Reason::Rule(rule),
                    logged,
                });
            }
        }
        Some(Decision {
            verdict: Verdict::Deny,
            reason: Reason::NoProfileMatched,
            logged,
        })
    }

    /// A flow from `source` to `destination` (workload endpoint keys, or `None` for an
    /// address that is not a workload): the source's egress and the destination's ingress.
    pub fn evaluate_flow(
        &self,
        source: Option<&ResourceKey>,
        destination: Option<&ResourceKey>,
        packet: &Packet,
    ) -> FlowDecision {
        FlowDecision {
            egress: source.and_then(|k| self.evaluate(k, Direction::Egress, packet)),
            ingress: destination.and_then(|k| self.evaluate(k, Direction::Ingress, packet)),
        }
    }

    fn run_rules(
        &self,
        rules: &[CompiledRule],
        owner: RuleOwner,
        direction: Direction,
        packet: &Packet,
        logged: &mut Vec<RuleRef>,
    ) -> RulesOutcome {
        for (index, rule) in rules.iter().enumerate() {
            if !rule.matches(packet, &self.owners) {
                continue;
            }
            let rule_ref = RuleRef {
                owner: owner.clone(),
                direction,
                index,
                action: rule.action,
            };
            match rule.action {
                Action::Allow => return RulesOutcome::Decided(Verdict::Allow, rule_ref),
                Action::Deny => return RulesOutcome::Decided(Verdict::Deny, rule_ref),
                Action::Pass => return RulesOutcome::Passed,
                Action::Log => logged.push(rule_ref),
            }
        }
        RulesOutcome::NoMatch
    }
}
