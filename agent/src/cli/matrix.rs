//! `palisade matrix`: who can reach whom, in the terminal, as JSON, and as one
//! self-contained HTML page (`--html FILE`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use crate::model::WorkloadEndpoint;
use crate::reach::matrix::{Cell, Matrix, Question, matrix};
use crate::reach::probe::{DEFAULT_SOURCE_PORT, Probe};

use super::endpoint_lookup::{ContainerNames, display_name, endpoint_path};
use super::reach_text::{cells_json, describe_cells, describe_side};
use super::store_access::open_for_palisade;

/// Print who can reach whom: a connectivity matrix of the workload endpoints.
///
/// Rows are sources, columns destinations; endpoints with the same labels and profiles
/// that every other endpoint sees alike share a row and a column (--no-group: one per
/// endpoint). With --protocol, each cell is the verdict for that packet, built as
/// `palisade trace` builds it (IPv4 when both ends have it). Without, each cell says
/// whether every packet (allow), none (deny) or some pass, and lists what passes. Computed
/// with the reference evaluator from the stored policy, for every endpoint the datastore
/// knows (this node's and other nodes').
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Ask about one kind of packet: tcp, udp, icmp, icmpv6, sctp, udplite or a number.
    #[arg(long)]
    pub protocol: Option<String>,
    /// The destination port (required with --protocol tcp, udp, sctp, udplite).
    #[arg(long, requires = "protocol")]
    pub port: Option<u16>,
    /// The source port (default 49152).
    #[arg(long, requires = "protocol")]
    pub sport: Option<u16>,
    /// ICMP type (default: echo request).
    #[arg(long = "icmp-type", requires = "protocol")]
    pub icmp_type: Option<u8>,
    /// ICMP code (default 0).
    #[arg(long = "icmp-code", requires = "protocol")]
    pub icmp_code: Option<u8>,
    /// One row and column per endpoint, not per group of alike endpoints.
    #[arg(long)]
    pub no_group: bool,
    /// Also write the matrix as one self-contained HTML page (colours; click a cell for
    /// the deciding rules of both directions).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// text (the default) or json.
    #[arg(short = 'o', long, value_name = "OUTPUT", default_value = "text")]
    pub output: String,
}

pub async fn run(args: MatrixArgs, url: &str) -> ExitCode {
    let question = match &args.protocol {
        None => Question::Every,
        Some(protocol) => {
            let probe = Probe::parse(
                protocol,
                args.sport,
                args.port,
                args.icmp_type,
                args.icmp_code,
            )
            .map_err(|e| e.replace("--dport", "--port"));
            match probe {
                Ok(p) => Question::Packet(p),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if !matches!(args.output.as_str(), "text" | "json") {
        eprintln!("--output '{}': use text or json", args.output);
        return ExitCode::FAILURE;
    }
    let Some(store) = open_for_palisade(url).await else {
        return ExitCode::FAILURE;
    };
    let snapshot = match store.list(None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Failed to read the datastore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let m = matrix(&snapshot.resources, question, !args.no_group);
    let endpoints: Vec<&WorkloadEndpoint> = m.groups.iter().flat_map(|g| &g.members).collect();
    let containers = ContainerNames::of(&endpoints).await;
    let data = to_json(&m, question, &containers);
    if let Some(path) = &args.html {
        let page = super::matrix_html::page(&data);
        if let Err(e) = write_whole(path, &page) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if args.output == "json" {
        println!("{data:#}");
    } else {
        print!("{}", text(&m, question, &containers));
    }
    ExitCode::SUCCESS
}

/// Writes beside the target and renames, so a failed write leaves no half page.
fn write_whole(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = path.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, contents)?;
    std::fs::rename(&partial, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })
}

/// What the matrix answers, in words.
pub fn question_text(question: Question) -> String {
    match question {
        Question::Every => {
            "every packet (allow: all pass; deny: none; some: see below)".to_string()
        }
        Question::Packet(p) => {
            let name = crate::reach::grid::protocol_name(Some(p.protocol));
            if crate::policy::has_ports(p.protocol) {
                format!(
                    "{name} to port {} from port {}",
                    p.ports.1,
                    if p.ports.0 == DEFAULT_SOURCE_PORT {
                        format!("{DEFAULT_SOURCE_PORT} (default)")
                    } else {
                        p.ports.0.to_string()
                    }
                )
            } else if matches!(p.protocol, 1 | 58) {
                match p.icmp.0 {
                    Some(t) => format!("{name} type {t} code {}", p.icmp.1),
                    None => format!("{name} echo request"),
                }
            } else {
                name
            }
        }
    }
}

fn group_label(m: &Matrix, i: usize, containers: &ContainerNames) -> String {
    let Some(g) = m.groups.get(i) else {
        return String::new();
    };
    let names: Vec<String> = g
        .members
        .iter()
        .map(|w| display_name(w, containers))
        .collect();
    let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}  (profiles: {}; labels: {})",
        names.join(", "),
        if g.profiles.is_empty() {
            "-".to_string()
        } else {
            g.profiles.join(", ")
        },
        if labels.is_empty() {
            "-".to_string()
        } else {
            labels.join(", ")
        }
    )
}

fn text(m: &Matrix, question: Question, containers: &ContainerNames) -> String {
    if m.groups.is_empty() {
        return "No workload endpoints.\n".to_string();
    }
    let mut out = format!(
        "Reachability for {}; rows are sources, columns destinations.\n\n",
        question_text(question)
    );
    let tag = |i: usize| format!("[{}]", i + 1);
    let width = tag(m.groups.len()).len().max(5) + 2;
    out += &format!("{:width$}", "");
    for j in 0..m.groups.len() {
        out += &format!("{:width$}", tag(j));
    }
    out = out.trim_end().to_string() + "\n";
    for (i, row) in m.cells.iter().enumerate() {
        let mut line = format!("{:width$}", tag(i));
        for cell in row {
            line += &format!("{:width$}", cell.reach().as_str());
        }
        out += line.trim_end();
        out += "\n";
    }
    out += "\n";
    for i in 0..m.groups.len() {
        out += &format!("{} {}\n", tag(i), group_label(m, i, containers));
    }
    if matches!(question, Question::Every) {
        let mut passing = String::new();
        for (i, row) in m.cells.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if let Cell::Every(ranges) = cell
                    && cell.reach() == crate::reach::matrix::Reach::Some
                {
                    let allowed: Vec<String> = ranges
                        .iter()
                        .filter(|r| r.flow.verdict == crate::policy::Verdict::Allow)
                        .map(|r| describe_cells(r.protocol, r.keys, r.a, r.b))
                        .collect();
                    passing += &format!("{} -> {}: {}\n", tag(i), tag(j), allowed.join(", "));
                }
            }
        }
        if !passing.is_empty() {
            out += "\nWhat passes where only some packets do:\n";
            out += &passing;
        }
    }
    out
}

fn side_json(side: &Option<crate::reach::SideDecision>) -> Value {
    match side {
        None => Value::Null,
        Some(s) => json!({"verdict": s.verdict.to_string(), "rule": describe_side(s)}),
    }
}

fn cell_json(cell: &Cell) -> Value {
    let mut v = json!({"reach": cell.reach().as_str()});
    match cell {
        Cell::Itself => v["note"] = json!("an endpoint with itself: no policy in between"),
        Cell::NoCommonFamily => v["note"] = json!("no IP version in common"),
        Cell::Packet { packet, flow } => {
            v["packet"] = json!(packet.to_string());
            v["verdict"] = json!(flow.verdict.to_string());
            v["egress"] = side_json(&flow.egress);
            v["ingress"] = side_json(&flow.ingress);
        }
        Cell::Every(ranges) => {
            v["ranges"] = ranges
                .iter()
                .map(|r| {
                    let mut c = cells_json(r.protocol, r.keys, r.a, r.b);
                    c["packets"] = json!(describe_cells(r.protocol, r.keys, r.a, r.b));
                    c["verdict"] = json!(r.flow.verdict.to_string());
                    c["egress"] = side_json(&r.flow.egress);
                    c["ingress"] = side_json(&r.flow.ingress);
                    c
                })
                .collect();
        }
    }
    v
}

/// The matrix as data: what `-o json` prints and the HTML page draws.
pub fn to_json(m: &Matrix, question: Question, containers: &ContainerNames) -> Value {
    let groups: Vec<Value> = m
        .groups
        .iter()
        .map(|g| {
            let members: Vec<Value> = g
                .members
                .iter()
                .map(|w| {
                    let mut v = json!({
                        "name": w.metadata.name,
                        "display": display_name(w, containers),
                        "path": endpoint_path(w),
                        "node": w.metadata.node,
                        "addresses": w.spec.ip_networks.iter().map(|n| n.addr().to_string()).collect::<Vec<_>>(),
                    });
                    if let Some(c) = containers.of_endpoint(w) {
                        v["container"] = json!(c);
                    }
                    v
                })
                .collect();
            json!({"members": members, "labels": g.labels, "profiles": g.profiles})
        })
        .collect();
    let cells: Vec<Vec<Value>> = m
        .cells
        .iter()
        .map(|row| row.iter().map(cell_json).collect())
        .collect();
    json!({"question": question_text(question), "groups": groups, "cells": cells})
}
