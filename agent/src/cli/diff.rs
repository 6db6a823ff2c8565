//! `palisade diff -f FILE`: what `apply -f FILE` would change in reachability.

use std::process::ExitCode;

use clap::Args;

use crate::model::validate::normalize;
use crate::store::Op;

use super::commit::Verb;
use super::input::read_resources_or_report;
use super::preview;

/// Print the reachability `apply -f FILE` would gain and lose, and write nothing.
///
/// Per pair of flow ends (workload endpoints, grouped where they share labels and
/// profiles and change alike; host endpoints; classes of other addresses), per protocol
/// and port (or ICMP type) range, allow -> deny and deny -> allow, with the deciding rules
/// before and after. Computed with the reference evaluator over every range the rules of
/// both versions cut, so nothing is sampled. Exit status: 0 when nothing changes, 1 when
/// something does, 2 on errors. `apply|create|replace|delete --dry-run` do the same for
/// their own writes.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The file of resources to compare with the datastore, or `-` for stdin.
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: String,
    /// text (the default) or json.
    #[arg(short = 'o', long, value_name = "OUTPUT", default_value = "text")]
    pub output: String,
}

pub async fn run(args: DiffArgs, url: &str) -> ExitCode {
    let Some(resources) = read_resources_or_report(&args.filename) else {
        return ExitCode::from(2);
    };
    let ops = resources
        .into_iter()
        .map(|mut resource| {
            normalize(&mut resource);
            Op::Apply(resource)
        })
        .collect();
    preview::run(url, Verb::Apply, ops, &args.output).await
}
