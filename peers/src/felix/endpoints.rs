//! A workload's own chains (FLX2 `rules/endpoints.go`): `cali-tw-<iface>` holds its ingress
//! policy (traffic to the workload), `cali-fw-<iface>` its egress policy. Established
//! traffic is accepted first; then each policy in order, each profile in order.

use super::Config;
use super::iptables::{Action, Chain, Rule};
use super::matches::{ctstate, mark_clear, mark_set};
use super::names::{
    FROM_WORKLOAD, POLICY_INBOUND, POLICY_OUTBOUND, PROFILE_INBOUND, PROFILE_OUTBOUND, TO_WORKLOAD,
    chain,
};

/// The chain of one endpoint in one direction: `ingress` gives `cali-tw-`, egress
/// `cali-fw-`; `policies` and `profiles` are names, in the order they apply, each profile
/// with whether it exists (one that does not denies everything, as in palisade's
/// evaluator: its packets are dropped where its chain would have been jumped to).
pub fn endpoint_chain(
    config: &Config,
    interface: &str,
    ingress: bool,
    policies: &[&str],
    profiles: &[(&str, bool)],
) -> Chain {
    let (prefix, policy_prefix, profile_prefix) = if ingress {
        (TO_WORKLOAD, POLICY_INBOUND, PROFILE_INBOUND)
    } else {
        (FROM_WORKLOAD, POLICY_OUTBOUND, PROFILE_OUTBOUND)
    };
    let mut rules = vec![
        Rule::new(vec![ctstate("RELATED,ESTABLISHED")], Action::Accept),
        Rule::new(vec![ctstate("INVALID")], Action::Drop),
        Rule::new(vec![], Action::ClearMark(config.mark_accept)),
    ];
    if !policies.is_empty() {
        rules.push(Rule::commented(
            "Start of policies",
            vec![],
            Action::ClearMark(config.mark_pass),
        ));
        for policy in policies {
            rules.push(Rule::new(
                vec![mark_clear(config.mark_pass)],
                Action::Jump(chain(policy_prefix, policy)),
            ));
            rules.push(Rule::commented(
                "Return if policy accepted",
                vec![mark_set(config.mark_accept)],
                Action::Return,
            ));
        }
        rules.push(Rule::commented(
            "Drop if no policies passed packet",
            vec![mark_clear(config.mark_pass)],
            Action::Drop,
        ));
    }
    for &(profile, exists) in profiles {
        if !exists {
            rules.push(Rule::commented(
                "Profile does not exist",
                vec![],
                Action::Drop,
            ));
            break;
        }
        rules.push(Rule::new(
            vec![],
            Action::Jump(chain(profile_prefix, profile)),
        ));
        rules.push(Rule::commented(
            "Return if profile accepted",
            vec![mark_set(config.mark_accept)],
            Action::Return,
        ));
    }
    rules.push(Rule::commented(
        "Drop if no profiles matched",
        vec![],
        Action::Drop,
    ));
    Chain::new(chain(prefix, interface), rules)
}
