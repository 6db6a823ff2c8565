//! `palisade get (KIND [NAME] | -f FILE) [-o ps|wide|yaml|json]`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::model::{Kind, Resource, WorkloadEndpoint};
use crate::store::{Datastore, StoreError};

use super::endpoint_lookup::{self, ContainerNames};
use super::get_output::{Found, OutputFormat, render};
use super::input::read_resources_or_report;
use super::resource_args::{EndpointIdentifiers, ResourceSelection};
use super::store_access::open_for_calicoctl;

/// Print resources.
///
/// KIND is one of profile, policy, workloadEndpoint, hostEndpoint, ipPool (or an alias:
/// pro, pol, wep, hep, pool, ...; case-insensitive); without NAME every resource of the
/// kind is printed, and endpoint identifiers left out match anything. With -f, the
/// resources of the file are looked up. A NAME (or a file resource) that does not exist
/// is an error; a kind with no resources prints an empty table or list.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The kind of resource to print.
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    pub kind: Option<String>,
    /// Only the resource with this name (for an ipPool, its CIDR).
    pub name: Option<String>,
    /// Print the stored versions of the resources of this file (`-` for stdin).
    #[arg(short = 'f', long, value_name = "FILENAME")]
    pub filename: Option<String>,
    /// ps (the default), wide, yaml or json.
    #[arg(short = 'o', long, default_value = "ps", value_name = "OUTPUT")]
    pub output: String,
    #[command(flatten)]
    pub ids: EndpointIdentifiers,
}

/// What to look up: resources named by a file, or a KIND [NAME] selection.
enum Query {
    File(Vec<Resource>),
    Selection(ResourceSelection),
}

pub async fn run(args: GetArgs, url: &str) -> ExitCode {
    let format = match OutputFormat::parse(&args.output) {
        Ok(format) => format,
        Err(message) => {
            println!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let query = match (&args.filename, &args.kind) {
        (Some(filename), _) => match read_resources_or_report(filename) {
            Some(resources) => Query::File(resources),
            None => return ExitCode::FAILURE,
        },
        (None, Some(kind)) => {
            match ResourceSelection::from_args(kind, args.name.as_deref(), &args.ids) {
                Ok(selection) => Query::Selection(selection),
                Err(message) => {
                    println!("{message}");
                    return ExitCode::FAILURE;
                }
            }
        }
        // clap requires KIND unless --filename is given.
        (None, None) => return ExitCode::FAILURE,
    };
    let Some(store) = open_for_calicoctl(url).await else {
        return ExitCode::FAILURE;
    };
    let found = match look_up(store, query).await {
        Ok(found) => found,
        Err(err) => {
            println!("Failed to get resources: {err}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints: Vec<&WorkloadEndpoint> = found
        .iter()
        .flat_map(|f| &f.resources)
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .collect();
    let containers = ContainerNames::of(&endpoints).await;
    note_default_pools(&found);
    match render(format, &found, &containers) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("Failed to get resources: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn look_up(store: Arc<dyn Datastore>, query: Query) -> Result<Vec<Found>, StoreError> {
    match query {
        Query::File(resources) => {
            // As calicoctl, one query (and so one table) per resource of the file.
            let mut found = Vec::with_capacity(resources.len());
            for (index, resource) in resources.iter().enumerate() {
                let key = resource.key();
                let stored = store
                    .get(&key)
                    .await?
                    .ok_or(StoreError::NotFound { index, key })?;
                found.push(Found {
                    kind: resource.kind(),
                    resources: vec![stored],
                });
            }
            Ok(found)
        }
        Query::Selection(selection) => {
            let snapshot = store.list(Some(selection.kind)).await?;
            let mut resources: Vec<_> = snapshot
                .resources
                .iter()
                .filter(|r| selection.matches(r))
                .cloned()
                .collect();
            if resources.is_empty()
                && selection.kind == Kind::WorkloadEndpoint
                && let Some(name) = selection.name()
            {
                // A Docker container's name, or a prefix of its EndpointID.
                let unnamed = selection.without_name();
                let candidates: Vec<&WorkloadEndpoint> = snapshot
                    .resources
                    .iter()
                    .filter(|r| unnamed.matches(r))
                    .filter_map(|r| match r {
                        Resource::WorkloadEndpoint(w) => Some(w),
                        _ => None,
                    })
                    .collect();
                let containers = ContainerNames::of(&candidates).await;
                resources = endpoint_lookup::find(name, &candidates, &containers)
                    .into_iter()
                    .map(|w| Resource::WorkloadEndpoint(w.clone()))
                    .collect();
            }
            if resources.is_empty()
                && let Some(key) = selection.key_for_report()
            {
                return Err(StoreError::NotFound { index: 0, key });
            }
            Ok(vec![Found {
                kind: selection.kind,
                resources,
            }])
        }
    }
}

/// Docker networks take addresses from a built-in default pool while no ipPool of their IP
/// version exists; that pool is not a stored resource, so a listing of pools says so.
fn note_default_pools(found: &[Found]) {
    for table in found.iter().filter(|f| f.kind == Kind::IpPool) {
        let has = |v4: bool| {
            table
                .resources
                .iter()
                .any(|r| matches!(r, Resource::IpPool(p) if p.metadata.cidr.addr().is_ipv4() == v4))
        };
        for (v4, default) in [
            (true, crate::docker::DEFAULT_POOL_IPV4.to_string()),
            (false, crate::docker::DEFAULT_POOL_IPV6.to_string()),
        ] {
            if !has(v4) {
                eprintln!(
                    "Note: no IPv{} ipPool is stored, so Docker networks take IPv{} addresses from the built-in default pool {default} (not a stored pool: `docker network create --subnet` cannot name it until it is created as an ipPool).",
                    if v4 { 4 } else { 6 },
                    if v4 { 4 } else { 6 },
                );
            }
        }
    }
}
