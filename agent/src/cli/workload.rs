//! `palisade workload add|remove`: a workload without an orchestrator's networking
//! (Calico's "without Docker networking" mode, as calicoctl's `container add` did it):
//! plumb a network namespace to the host and record its workloadEndpoint, all or nothing.
//!
//! The endpoint's identifiers: orchestrator `palisade` (what made it, as the Docker
//! plugin's endpoints say `libnetwork`), workload NAME (the workload, as calicoctl
//! `container add` used the container) and name NAME, so that `palisade endpoint NAME` and
//! `palisade trace --src NAME` find it. NAME is therefore unique among the endpoints of a
//! node, whatever made them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::model::validate::validate;
use crate::model::{
    Kind, Resource, ResourceKey, WorkloadEndpoint, WorkloadEndpointMetadata, WorkloadEndpointSpec,
};
use crate::netplumb::{self, WorkloadPlumbing, host_interface_name};
use crate::store::{Datastore, Op};

use super::store_access::open_for_palisade;

/// The orchestrator of the endpoints `palisade workload add` writes.
pub const ORCHESTRATOR: &str = "palisade";

#[derive(Debug, Args)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    pub command: WorkloadCommand,
}

#[derive(Debug, Subcommand)]
pub enum WorkloadCommand {
    /// Connect a network namespace to the host and record its workloadEndpoint.
    Add(AddArgs),
    /// Undo `workload add`: the veth, the host routes and the workloadEndpoint.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The workload's name, also its workloadEndpoint's.
    pub name: String,
    /// Its network namespace: a name under /run/netns (as `ip netns add` makes) or a
    /// path such as /proc/PID/ns/net.
    #[arg(long)]
    pub netns: String,
    /// An address of the workload (IPv4 or IPv6); repeat for more.
    #[arg(long = "ip", required = true, value_name = "IP")]
    pub ips: Vec<IpAddr>,
    /// The endpoint's labels: k=v,k2=v2.
    #[arg(long)]
    pub labels: Option<String>,
    /// A profile of the endpoint; repeat for more, in the order they apply.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// The node the endpoint belongs to (default: the host name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The workload's name.
    pub name: String,
    /// The node the endpoint belongs to (default: the host name).
    #[arg(long, env = "PALISADE_NODE")]
    pub node: Option<String>,
}

pub async fn run(args: WorkloadArgs, url: &str) -> ExitCode {
    let result = match args.command {
        WorkloadCommand::Add(args) => add(args, url).await,
        WorkloadCommand::Remove(args) => remove(args, url).await,
    };
    match result {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn add(args: AddArgs, url: &str) -> Result<String, String> {
    let fail = |why: &dyn std::fmt::Display| format!("Failed to add workload {}: {why}", args.name);
    let node = args.node.clone().unwrap_or_else(host_name);
    let labels = parse_labels(args.labels.as_deref().unwrap_or("")).map_err(|e| fail(&e))?;
    let ip_networks = netplumb::workload::host_networks(&args.ips).map_err(|e| fail(&e))?;
    let mut endpoint = WorkloadEndpoint {
        metadata: WorkloadEndpointMetadata {
            name: args.name.clone(),
            workload: args.name.clone(),
            orchestrator: ORCHESTRATOR.to_string(),
            node: node.clone(),
            labels,
            ..Default::default()
        },
        spec: WorkloadEndpointSpec {
            ip_networks,
            profiles: args.profiles.clone(),
            interface_name: host_interface_name(&args.name),
            ..Default::default()
        },
    };
    // Everything that can be checked is checked before the network is touched.
    validate(&Resource::WorkloadEndpoint(endpoint.clone())).map_err(|e| fail(&e))?;
    let store = open_for_palisade(url)
        .await
        .ok_or_else(|| fail(&"cannot open the datastore"))?;
    if let Some(existing) = find_endpoint(store.as_ref(), &node, &args.name)
        .await
        .map_err(|e| fail(&e))?
    {
        return Err(fail(&format!(
            "an endpoint named {} already exists: {existing}",
            args.name
        )));
    }

    if let Ok(snapshot) = store.list(Some(Kind::WorkloadEndpoint)).await {
        for warning in super::address_clash::warnings(&[&endpoint], &snapshot.resources) {
            eprintln!("{warning}");
        }
    }

    let plumbing = WorkloadPlumbing {
        name: args.name.clone(),
        netns: args.netns.clone(),
        addresses: args.ips.clone(),
    };
    let plumbed = netplumb::plumb_workload(&plumbing)
        .await
        .map_err(|e| fail(&e))?;
    endpoint.spec.mac = Some(plumbed.container_mac.clone());
    let path = super::endpoint_lookup::endpoint_path(&endpoint);
    let resource = Resource::WorkloadEndpoint(endpoint);
    let op = Op::Create {
        resource,
        skip_existing: false,
    };
    if let Err(err) = store.commit(vec![op]).await {
        let undo = match netplumb::unplumb_workload(&args.name).await {
            Ok(_) => String::new(),
            Err(e) => format!(" (and undoing the plumbing failed: {e})"),
        };
        return Err(fail(&format!(
            "cannot write the workloadEndpoint: {err}{undo}"
        )));
    }
    let mut forwarding = Vec::new();
    if args.ips.iter().any(|ip| ip.is_ipv4()) {
        forwarding.push("net.ipv4.ip_forward=1");
    }
    if args.ips.iter().any(|ip| ip.is_ipv6()) {
        forwarding.push("net.ipv6.conf.all.forwarding=1");
    }
    Ok(format!(
        "Added workload {}: interface {} (ifindex {}), addresses {}, endpoint {path}\n\
         The host forwards for it: {} (as Calico sets them; they stay set after `workload remove`).",
        args.name,
        plumbed.host_interface,
        plumbed.host_index,
        plumbed
            .ip_networks
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        forwarding.join(", "),
    ))
}

async fn remove(args: RemoveArgs, url: &str) -> Result<String, String> {
    let fail =
        |why: &dyn std::fmt::Display| format!("Failed to remove workload {}: {why}", args.name);
    let node = args.node.clone().unwrap_or_else(host_name);
    let store = open_for_palisade(url)
        .await
        .ok_or_else(|| fail(&"cannot open the datastore"))?;
    let key = ResourceKey::WorkloadEndpoint {
        node: node.clone(),
        orchestrator: ORCHESTRATOR.to_string(),
        workload: args.name.clone(),
        name: args.name.clone(),
    };
    let recorded = store.get(&key).await.map_err(|e| fail(&e))?.is_some();
    // The network first: should it fail, the endpoint still records what is left to undo.
    let plumbed = netplumb::unplumb_workload(&args.name)
        .await
        .map_err(|e| fail(&e))?;
    if !recorded && !plumbed {
        return Err(fail(&format!(
            "no workload named {} on node {node}",
            args.name
        )));
    }
    if recorded {
        let op = Op::Delete {
            key: key.clone(),
            skip_missing: true,
        };
        store.commit(vec![op]).await.map_err(|e| fail(&e))?;
    }
    Ok(format!("Removed workload {}", args.name))
}

/// The endpoint of this node named `name`, whatever made it.
async fn find_endpoint(
    store: &dyn Datastore,
    node: &str,
    name: &str,
) -> Result<Option<ResourceKey>, crate::store::StoreError> {
    let snapshot = store.list(Some(Kind::WorkloadEndpoint)).await?;
    Ok(snapshot
        .resources
        .iter()
        .find_map(|resource| match resource {
            Resource::WorkloadEndpoint(w) if w.metadata.node == node && w.metadata.name == name => {
                Some(resource.key())
            }
            _ => None,
        }))
}

/// `k=v,k2=v2` as a map; an empty string is no labels. Keys and values are checked later,
/// with the endpoint, by the model's validation.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    if text.trim().is_empty() {
        return Ok(labels);
    }
    for (position, pair) in text.split(',').enumerate() {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "--labels: item {} '{pair}' is not key=value",
                position + 1
            ));
        };
        if labels
            .insert(key.trim().to_string(), value.trim().to_string())
            .is_some()
        {
            return Err(format!("--labels: the key '{}' is given twice", key.trim()));
        }
    }
    Ok(labels)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_as_key_value_pairs() {
        let labels = parse_labels("role=db, tier=backend").unwrap();
        assert_eq!(labels["role"], "db");
        assert_eq!(labels["tier"], "backend");
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("role").unwrap_err().contains("item 1 'role'"));
        assert!(parse_labels("a=1,a=2").unwrap_err().contains("'a'"));
    }
}
