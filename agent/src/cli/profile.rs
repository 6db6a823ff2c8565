//! `palisade profile NAME rule (show|json)`: calicoctl v0.x's profile rule commands,
//! read-only.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::model::{Profile, Resource, ResourceKey};

use super::rule_pprint::pprint;
use super::store_access::open_for_palisade;

/// Show a profile's rules (calicoctl v0.x style).
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// The profile's name.
    pub name: String,
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The profile's rules.
    #[command(subcommand)]
    Rule(RuleCommand),
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// One line per rule, numbered from 1: `Inbound rules:` (ingress), then
    /// `Outbound rules:` (egress).
    Show,
    /// The rules as JSON: `{"ingress": [...], "egress": [...]}`.
    Json,
}

pub async fn run(args: ProfileArgs, url: &str) -> ExitCode {
    let Some(store) = open_for_palisade(url).await else {
        return ExitCode::FAILURE;
    };
    let key = ResourceKey::Profile {
        name: args.name.clone(),
    };
    let profile = match store.get(&key).await {
        Ok(Some(Resource::Profile(profile))) => profile,
        Ok(_) => {
            println!("Profile {} not found.", args.name);
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("Failed to read profile {}: {err}", args.name);
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        ProfileCommand::Rule(RuleCommand::Show) => print!("{}", rule_listing(&profile)),
        ProfileCommand::Rule(RuleCommand::Json) => {
            let rules = serde_json::json!({
                "ingress": profile.spec.ingress,
                "egress": profile.spec.egress,
            });
            match serde_json::to_string_pretty(&rules) {
                Ok(text) => println!("{text}"),
                Err(err) => {
                    eprintln!("Failed to print the rules of profile {}: {err}", args.name);
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// calicoctl v0.x's listing: `" %3d %s"` per rule, 1-based.
fn rule_listing(profile: &Profile) -> String {
    let mut out = String::from("Inbound rules:\n");
    for (i, rule) in profile.spec.ingress.iter().enumerate() {
        out.push_str(&format!(" {:>3} {}\n", i + 1, pprint(rule)));
    }
    out.push_str("Outbound rules:\n");
    for (i, rule) in profile.spec.egress.iter().enumerate() {
        out.push_str(&format!(" {:>3} {}\n", i + 1, pprint(rule)));
    }
    out
}
