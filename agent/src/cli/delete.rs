//! `palisade delete (-f FILE | KIND NAME)`.

use std::process::ExitCode;

use clap::Args;

use crate::model::{Kind, ResourceKey, endpoints_listing};
use crate::store::Op;

use super::commit::{Verb, commit_and_report, failure_message};
use super::input::read_resources_or_report;
use super::resource_args::{EndpointIdentifiers, ResourceSelection};

/// Delete resources, named on the command line or by the resources of a file.
///
/// KIND is one of profile, policy, workloadEndpoint, hostEndpoint, ipPool (or an alias:
/// pro, pol, wep, hep, pool, ...; case-insensitive). A workloadEndpoint needs --node,
/// --orchestrator and --workload as well as NAME; a hostEndpoint needs --node; an ipPool's
/// NAME is its CIDR. With -f, every resource of the file (parsed and validated first) is
/// deleted. All deletions happen in one atomic commit: if one resource does not exist
/// (without --skip-not-exists), nothing is deleted. There is never partial success.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The kind of resource to delete.
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub kind: Option<String>,
    /// The name of the resource to delete.
    pub name: Option<String>,
    /// Delete the resources of this file (`-` for stdin).
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: Option<String>,
    /// Count resources that do not exist as deleted instead of failing.
    #[arg(short = 's', long)]
    pub skip_not_exists: bool,
    #[command(flatten)]
    pub ids: EndpointIdentifiers,
    #[command(flatten)]
    pub preview: super::write::PreviewArgs,
}

pub async fn run(args: DeleteArgs, url: &str) -> ExitCode {
    let skip_missing = args.skip_not_exists;
    // A preview's errors exit 2, as diff(1)'s do: 1 means "something changes".
    let failed = if args.preview.dry_run {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    };
    let ops = match (&args.filename, &args.kind) {
        (Some(filename), _) => {
            let Some(resources) = read_resources_or_report(filename) else {
                return failed;
            };
            resources
                .iter()
                .map(|resource| Op::Delete {
                    key: resource.key(),
                    skip_missing,
                })
                .collect()
        }
        (None, Some(kind)) => {
            let selection =
                match ResourceSelection::from_args(kind, args.name.as_deref(), &args.ids) {
                    Ok(selection) => selection,
                    Err(message) => {
                        println!("{message}");
                        return failed;
                    }
                };
            match selection.exact_key() {
                Ok(key) => vec![Op::Delete { key, skip_missing }],
                Err(err) => {
                    println!("{}", failure_message(Verb::Delete, &[selection.kind], &err));
                    return failed;
                }
            }
        }
        // clap requires KIND unless --filename is given.
        (None, None) => return failed,
    };
    if args.preview.dry_run {
        return super::preview::run(url, Verb::Delete, ops, &args.preview.output).await;
    }
    let profiles: Vec<String> = ops
        .iter()
        .filter_map(|op| match op.key() {
            ResourceKey::Profile { name } => Some(name),
            _ => None,
        })
        .collect();
    let code = commit_and_report(url, Verb::Delete, ops).await;
    if code == ExitCode::SUCCESS && !profiles.is_empty() {
        warn_profiles_in_use(url, &profiles).await;
    }
    code
}

/// Deleting a profile that endpoints list is allowed (as in calicoctl), but it denies all
/// their traffic: say how many still list it.
async fn warn_profiles_in_use(url: &str, profiles: &[String]) {
    let Ok(store) = crate::store::open(url).await else {
        return;
    };
    let Ok(snapshot) = store.list(Some(Kind::WorkloadEndpoint)).await else {
        return;
    };
    for profile in profiles {
        let users = endpoints_listing(&snapshot.resources, profile);
        if users > 0 {
            eprintln!(
                "Warning: {users} workload endpoint(s) still list profile '{profile}'; it no longer exists, so it denies all their traffic until it is created again (`palisade get wep -o yaml` shows which)."
            );
        }
    }
}
