//! Running one command's writes as a single datastore commit and printing calicoctl's
//! summary of it.
//!
//! calicoctl writes resource by resource and can stop half way ("Partial success: ...").
//! palisade commits all ops at once, so a command either handled every resource or wrote
//! nothing; a failure is therefore always reported with calicoctl's "nothing handled"
//! messages.

use std::fmt::Display;
use std::process::ExitCode;

use crate::model::{Kind, ResourceKey};
use crate::store::Op;

use super::store_access::open_for_calicoctl;

/// The write commands, as their messages spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Create,
    Apply,
    Replace,
    Delete,
}

impl Verb {
    /// `create`, as in "Failed to create ...".
    fn infinitive(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Apply => "apply",
            Verb::Replace => "replace",
            Verb::Delete => "delete",
        }
    }

    /// `created`, as in "Successfully created ...".
    fn past(self) -> &'static str {
        match self {
            Verb::Create => "created",
            Verb::Apply => "applied",
            Verb::Replace => "replaced",
            Verb::Delete => "deleted",
        }
    }

    /// `Create`, as in "operation Create is not supported on ...".
    fn operation(self) -> &'static str {
        match self {
            Verb::Create => "Create",
            Verb::Apply => "Apply",
            Verb::Replace => "Replace",
            Verb::Delete => "Delete",
        }
    }
}

/// Commits `ops` to the datastore at `url` in one transaction and prints the outcome.
pub async fn commit_and_report(url: &str, verb: Verb, ops: Vec<Op>) -> ExitCode {
    if ops.is_empty() {
        println!("No resources specified in file");
        return ExitCode::FAILURE;
    }
    let kinds: Vec<Kind> = ops.iter().map(|op| op.key().kind()).collect();
    let Some(store) = open_for_calicoctl(url).await else {
        return ExitCode::FAILURE;
    };
    if let Some(name) = ops.iter().find_map(|op| kubernetes_policy_name(op.key())) {
        let err = format!("operation {} is not supported on {name}", verb.operation());
        println!("{}", failure_message(verb, &kinds, &err));
        return ExitCode::FAILURE;
    }
    match store.commit(ops).await {
        Ok(outcome) => {
            println!("{}", success_message(verb, &kinds, outcome.outcomes.len()));
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("{}", failure_message(verb, &kinds, &err));
            ExitCode::FAILURE
        }
    }
}

/// Policies named `knp.default.*` belong to Kubernetes NetworkPolicy; calicoctl refuses
/// to write or delete them.
fn kubernetes_policy_name(key: ResourceKey) -> Option<String> {
    match key {
        ResourceKey::Policy { name } if name.starts_with("knp.default.") => Some(name),
        _ => None,
    }
}

/// The one kind all resources share, if they do.
fn single_kind(kinds: &[Kind]) -> Option<Kind> {
    let first = *kinds.first()?;
    kinds.iter().all(|k| *k == first).then_some(first)
}

fn success_message(verb: Verb, kinds: &[Kind], handled: usize) -> String {
    let verb = verb.past();
    match single_kind(kinds) {
        Some(kind) => format!("Successfully {verb} {handled} '{kind}' resource(s)"),
        None => format!("Successfully {verb} {handled} resource(s)"),
    }
}

pub fn failure_message(verb: Verb, kinds: &[Kind], err: &dyn Display) -> String {
    let verb = verb.infinitive();
    match (kinds.len(), single_kind(kinds)) {
        (1, Some(kind)) => format!("Failed to {verb} '{kind}' resource: {err}"),
        (_, Some(kind)) => format!("Failed to {verb} any '{kind}' resources: {err}"),
        (_, None) => format!("Failed to {verb} any resources: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_kind_only_when_all_resources_share_it() {
        let one = [Kind::Profile];
        let two = [Kind::Policy, Kind::Policy];
        let mixed = [Kind::Profile, Kind::Policy];
        assert_eq!(
            success_message(Verb::Apply, &two, 2),
            "Successfully applied 2 'policy' resource(s)"
        );
        assert_eq!(
            success_message(Verb::Create, &mixed, 2),
            "Successfully created 2 resource(s)"
        );
        assert_eq!(
            failure_message(Verb::Delete, &one, &"boom"),
            "Failed to delete 'profile' resource: boom"
        );
        assert_eq!(
            failure_message(Verb::Replace, &two, &"boom"),
            "Failed to replace any 'policy' resources: boom"
        );
        assert_eq!(
            failure_message(Verb::Create, &mixed, &"boom"),
            "Failed to create any resources: boom"
        );
    }
}
