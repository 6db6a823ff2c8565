//! `palisade create|apply|replace -f FILE`.

use std::process::ExitCode;

use clap::Args;

use crate::model::Resource;
use crate::model::validate::normalize;
use crate::store::Op;

use super::commit::{Verb, commit_and_report};
use super::input::read_resources_or_report;
use super::preview;

/// Create resources that do not exist yet.
///
/// FILE (or `-` for stdin) holds YAML or JSON: one or more documents, each a resource,
/// a `...List` with `items`, or an array of resources. Everything is parsed and validated
/// before anything is written, and all resources are created in one atomic commit: if
/// one of them already exists (without --skip-exists), none is created. There is never
/// partial success.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The file of resources to create, or `-` for stdin.
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: String,
    /// Leave resources that already exist as they are and count them as handled.
    #[arg(long)]
    pub skip_exists: bool,
    #[command(flatten)]
    pub preview: PreviewArgs,
}

/// Create resources, or overwrite those that exist (whole-spec replacement).
///
/// FILE (or `-` for stdin) holds YAML or JSON resources as for `create`. Everything is
/// parsed and validated first and written in one atomic commit: all or nothing.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The file of resources to apply, or `-` for stdin.
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: String,
    #[command(flatten)]
    pub preview: PreviewArgs,
}

/// Overwrite resources that exist (whole-spec replacement).
///
/// FILE (or `-` for stdin) holds YAML or JSON resources as for `create`. Everything is
/// parsed and validated first and written in one atomic commit: if one of the resources
/// does not exist, none is replaced. There is never partial success.
#[derive(Debug, Args)]
pub struct ReplaceArgs {
    /// The file of resources to replace, or `-` for stdin.
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: String,
    #[command(flatten)]
    pub preview: PreviewArgs,
}

/// `--dry-run`: what a write would change, without writing.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Write nothing; print the reachability the command would gain and lose, per pair of
    /// endpoints (grouped) and range of packets, with the deciding rules before and after.
    /// Exit status: 0 when nothing changes, 1 when something does, 2 on errors.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: text (the default) or json.
    #[arg(
        short = 'o',
        long,
        value_name = "OUTPUT",
        default_value = "text",
        requires = "dry_run"
    )]
    pub output: String,
}

pub async fn create(args: CreateArgs, url: &str) -> ExitCode {
    let skip_existing = args.skip_exists;
    write_file(
        url,
        &args.filename,
        &args.preview,
        Verb::Create,
        |resource| Op::Create {
            resource,
            skip_existing,
        },
    )
    .await
}

pub async fn apply(args: ApplyArgs, url: &str) -> ExitCode {
    write_file(url, &args.filename, &args.preview, Verb::Apply, Op::Apply).await
}

pub async fn replace(args: ReplaceArgs, url: &str) -> ExitCode {
    write_file(
        url,
        &args.filename,
        &args.preview,
        Verb::Replace,
        Op::Replace,
    )
    .await
}

async fn write_file(
    url: &str,
    filename: &str,
    preview: &PreviewArgs,
    verb: Verb,
    op_for: impl Fn(Resource) -> Op,
) -> ExitCode {
    let Some(resources) = read_resources_or_report(filename) else {
        return if preview.dry_run {
            ExitCode::from(2)
        } else {
            ExitCode::FAILURE
        };
    };
    let ops: Vec<Op> = resources
        .into_iter()
        .map(|mut resource| {
            // Stored resources carry their defaults (policy types), as libcalico-go's
            // converter writes them.
            normalize(&mut resource);
            op_for(resource)
        })
        .collect();
    if preview.dry_run {
        return preview::run(url, verb, ops, &preview.output).await;
    }
    warn_address_clashes(url, &ops).await;
    commit_and_report(url, verb, ops).await
}

/// Warns (on stderr) about endpoint addresses other endpoints already have.
async fn warn_address_clashes(url: &str, ops: &[Op]) {
    let new: Vec<&crate::model::WorkloadEndpoint> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Create { resource, .. } | Op::Apply(resource) | Op::Replace(resource) => {
                match resource {
                    Resource::WorkloadEndpoint(w) => Some(w),
                    _ => None,
                }
            }
            Op::Delete { .. } => None,
        })
        .collect();
    if new.is_empty() {
        return;
    }
    let Ok(store) = crate::store::open(url).await else {
        return;
    };
    let Ok(snapshot) = store.list(Some(crate::model::Kind::WorkloadEndpoint)).await else {
        return;
    };
    for warning in super::address_clash::warnings(&new, &snapshot.resources) {
        eprintln!("{warning}");
    }
}
