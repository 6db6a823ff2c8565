//! `palisade endpoint ID profile show`: calicoctl v0.x's listing of the profiles of a
//! workload endpoint, read-only.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::model::{Kind, Resource, WorkloadEndpoint};

use super::endpoint_lookup::{self, ContainerNames};
use super::pretty_table::render_column;
use super::resource_args::{EndpointIdentifiers, ResourceSelection};
use super::store_access::open_for_palisade;

/// Show a workload endpoint's profiles (calicoctl v0.x style).
#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// The workloadEndpoint's name: for containers on a palisade network, the Docker
    /// EndpointID or a unique prefix of it (the short ID Docker prints), or the container's
    /// name.
    pub id: String,
    #[command(flatten)]
    pub ids: EndpointIdentifiers,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// The endpoint's profiles.
    #[command(subcommand)]
    Profile(EndpointProfileCommand),
}

#[derive(Debug, Subcommand)]
pub enum EndpointProfileCommand {
    /// A table of the endpoint's profile names, sorted.
    Show,
}

pub async fn run(args: EndpointArgs, url: &str) -> ExitCode {
    let EndpointCommand::Profile(EndpointProfileCommand::Show) = args.command;
    let Some(store) = open_for_palisade(url).await else {
        return ExitCode::FAILURE;
    };
    let snapshot = match store.list(Some(Kind::WorkloadEndpoint)).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            eprintln!("Failed to list workload endpoints: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The identifier options narrow the search; the ID is read as people name endpoints.
    let unnamed =
        match ResourceSelection::from_args(Kind::WorkloadEndpoint.api_name(), None, &args.ids) {
            Ok(selection) => selection,
            Err(message) => {
                println!("{message}");
                return ExitCode::FAILURE;
            }
        };
    let candidates: Vec<&WorkloadEndpoint> = snapshot
        .resources
        .iter()
        .filter(|r| unnamed.matches(r))
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(endpoint) => Some(endpoint),
            _ => None,
        })
        .collect();
    let containers = ContainerNames::of(&candidates).await;
    let matching = endpoint_lookup::find(&args.id, &candidates, &containers);
    let endpoint = match matching.as_slice() {
        [endpoint] => endpoint,
        others => {
            // calicoctl v0.x's messages, with its blank line after the first.
            println!("Failed to list profiles in endpoint.\n");
            if others.is_empty() {
                println!("Endpoint {} is unknown to palisade.", args.id);
            } else {
                println!(
                    "More than 1 endpoint matches the provided criteria.  Please provide additional parameters to refine the search."
                );
            }
            return ExitCode::FAILURE;
        }
    };
    if endpoint.spec.profiles.is_empty() {
        println!("Endpoint has no profiles associated with it.");
    } else {
        let mut names = endpoint.spec.profiles.clone();
        names.sort();
        // calicoctl printed the table followed by an empty line.
        println!("{}", render_column("Name", &names));
    }
    ExitCode::SUCCESS
}
