//! The impact preview of a write (`--dry-run`, `palisade diff`): the command's ops are
//! checked and applied to a copy of the stored resources in memory, never written, and
//! the reachability the change gains and loses is printed. Exit status as diff(1): 0 when
//! nothing changes, 1 when something does, 2 when the preview itself fails (bad input,
//! datastore unreadable, or the write would fail).

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::json;

use crate::model::{Resource, WorkloadEndpoint};
use crate::reach::{Impact, ImpactGroup, impact};
use crate::store::Op;
use crate::store::file::preview_commit;

use super::commit::{Verb, failure_message};
use super::endpoint_lookup::ContainerNames;
use super::reach_text::{PlaceNames, cells_json, describe_cells, describe_flow, flow_json};
use super::store_access::open_for_palisade;

/// How the preview is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviewFormat {
    Text,
    Json,
}

impl PreviewFormat {
    pub fn parse(text: &str) -> Result<PreviewFormat, String> {
        match text {
            "text" => Ok(PreviewFormat::Text),
            "json" => Ok(PreviewFormat::Json),
            other => Err(format!(
                "--output '{other}': a preview prints as text (the default) or json"
            )),
        }
    }
}

/// diff(1)'s exit statuses.
fn exit(code: u8) -> ExitCode {
    ExitCode::from(code)
}

/// Previews `ops` against the datastore at `url`.
pub async fn run(url: &str, verb: Verb, ops: Vec<Op>, format: &str) -> ExitCode {
    let format = match PreviewFormat::parse(format) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return exit(2);
        }
    };
    if ops.is_empty() {
        eprintln!("No resources specified in file");
        return exit(2);
    }
    let kinds: Vec<_> = ops.iter().map(|op| op.key().kind()).collect();
    let Some(store) = open_for_palisade(url).await else {
        return exit(2);
    };
    let snapshot = match store.list(None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Failed to read the datastore: {e}");
            return exit(2);
        }
    };
    let before: BTreeMap<_, _> = snapshot
        .resources
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let after = match preview_commit(&before, ops) {
        Ok(after) => after,
        Err(e) => {
            eprintln!("{}", failure_message(verb, &kinds, &e));
            return exit(2);
        }
    };
    let before: Vec<Resource> = before.into_values().collect();
    let after: Vec<Resource> = after.into_values().collect();
    let report = impact(&before, &after);

    let endpoints: Vec<&WorkloadEndpoint> = before
        .iter()
        .chain(&after)
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .collect();
    let containers = ContainerNames::of(&endpoints).await;
    let names = PlaceNames {
        endpoints: &endpoints,
        containers: &containers,
    };
    match format {
        PreviewFormat::Text => print!("{}", text(&report, &names)),
        PreviewFormat::Json => println!("{:#}", to_json(&report, &names)),
    }
    exit(u8::from(!report.is_empty()))
}

fn counts(report: &Impact) -> (usize, usize) {
    let all = report.groups.iter().flat_map(|g| &g.changes);
    let gained = all.clone().filter(|c| c.gained()).count();
    (gained, all.count() - gained)
}

fn text(report: &Impact, names: &PlaceNames) -> String {
    if report.is_empty() {
        return "No change in reachability.\n".to_string();
    }
    let mut out = String::new();
    for group in &report.groups {
        out += &group_text(group, names);
    }
    let (gained, lost) = counts(report);
    out += &format!(
        "Reachability changes: {gained} gained, {lost} lost, in {} group(s) of flows.\n",
        report.groups.len()
    );
    out
}

fn group_text(group: &ImpactGroup, names: &PlaceNames) -> String {
    let list = |places: &[crate::reach::Place]| {
        places
            .iter()
            .map(|p| names.text(p))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "{} -> {}\n",
        list(&group.sources),
        list(&group.destinations)
    );
    for change in &group.changes {
        out += &format!(
            "  {} {}: {} -> {}\n    before: {}\n    after:  {}\n",
            if change.gained() { "gained" } else { "lost  " },
            describe_cells(change.protocol, change.keys, change.a, change.b),
            super::reach_text::verdict_word(&change.before),
            super::reach_text::verdict_word(&change.after),
            describe_flow(&change.before),
            describe_flow(&change.after),
        );
    }
    out
}

fn to_json(report: &Impact, names: &PlaceNames) -> serde_json::Value {
    let (gained, lost) = counts(report);
    let changes: Vec<serde_json::Value> = report
        .groups
        .iter()
        .flat_map(|group| {
            group.changes.iter().map(move |c| {
                let mut v = cells_json(c.protocol, c.keys, c.a, c.b);
                v["sources"] = group.sources.iter().map(|p| names.json(p)).collect();
                v["destinations"] = group.destinations.iter().map(|p| names.json(p)).collect();
                v["change"] = json!(if c.gained() { "gained" } else { "lost" });
                v["before"] = flow_json(&c.before);
                v["after"] = flow_json(&c.after);
                v
            })
        })
        .collect();
    json!({
        "changed": !report.is_empty(),
        "gained": gained,
        "lost": lost,
        "changes": changes,
    })
}
