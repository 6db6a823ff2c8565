//! Naming workload endpoints on the command line, as people know them: the name, the
//! exact path `NODE/ORCHESTRATOR/WORKLOAD/NAME` (or `NODE/NAME`) when names repeat, and
//! for Docker containers the container's name or a unique prefix of the EndpointID (the
//! short ID `docker network inspect` prints). Container names come from the Docker API:
//! the datastore holds only EndpointIDs, as Calico's libnetwork plugin writes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::docker::DEFAULT_DOCKER_SOCKET;
use crate::docker::docker_api::DockerApi;
use crate::model::WorkloadEndpoint;

/// Docker EndpointID -> container name, for the containers Docker shows.
#[derive(Debug, Clone, Default)]
pub struct ContainerNames(BTreeMap<String, String>);

impl ContainerNames {
    /// Asks the Docker API (`DOCKER_HOST=unix://PATH`, else /var/run/docker.sock) when
    /// some endpoint is a Docker one; without Docker there are no names, and no error:
    /// names are a convenience.
    pub async fn of(endpoints: &[&WorkloadEndpoint]) -> ContainerNames {
        let any_docker = endpoints
            .iter()
            .any(|w| w.metadata.orchestrator == crate::docker::ORCHESTRATOR);
        let socket = docker_socket();
        if !any_docker || !socket.exists() {
            return ContainerNames::default();
        }
        let Ok(containers) = DockerApi::new(&socket).all_containers().await else {
            return ContainerNames::default();
        };
        let mut names = BTreeMap::new();
        for container in containers {
            let Some(name) = container.names.first() else {
                continue;
            };
            let networks = container
                .network_settings
                .and_then(|s| s.networks)
                .unwrap_or_default();
            for network in networks.values() {
                if !network.endpoint_id.is_empty() {
                    names.insert(
                        network.endpoint_id.clone(),
                        name.trim_start_matches('/').to_string(),
                    );
                }
            }
        }
        ContainerNames(names)
    }

    /// The name of the container that owns this endpoint, if it is a Docker one.
    pub fn of_endpoint(&self, endpoint: &WorkloadEndpoint) -> Option<&str> {
        (endpoint.metadata.orchestrator == crate::docker::ORCHESTRATOR)
            .then(|| self.0.get(&endpoint.metadata.name))
            .flatten()
            .map(String::as_str)
    }
}

fn docker_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DOCKER_SOCKET))
}

/// The exact path of an endpoint: `NODE/ORCHESTRATOR/WORKLOAD/NAME`.
pub fn endpoint_path(endpoint: &WorkloadEndpoint) -> String {
    let m = &endpoint.metadata;
    format!("{}/{}/{}/{}", m.node, m.orchestrator, m.workload, m.name)
}

/// How an endpoint reads for people: its name, the container's name for Docker ones.
pub fn display_name(endpoint: &WorkloadEndpoint, containers: &ContainerNames) -> String {
    match containers.of_endpoint(endpoint) {
        Some(container) => format!("{container} ({})", short_id(&endpoint.metadata.name)),
        None => endpoint.metadata.name.clone(),
    }
}

/// Docker's short form of an ID: its first 12 characters.
pub fn short_id(id: &str) -> &str {
    if is_docker_id(id) { &id[..12] } else { id }
}

/// A Docker ID: 64 lowercase hex digits.
fn is_docker_id(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The endpoints `text` names, by the first rule that names any: the exact path
/// (`NODE/ORCHESTRATOR/WORKLOAD/NAME` or `NODE/NAME`), the name, the container's name, a
/// prefix of a Docker EndpointID.
pub fn find<'a>(
    text: &str,
    endpoints: &[&'a WorkloadEndpoint],
    containers: &ContainerNames,
) -> Vec<&'a WorkloadEndpoint> {
    let parts: Vec<&str> = text.split('/').collect();
    let by: [&dyn Fn(&WorkloadEndpoint) -> bool; 4] = [
        &|w| {
            let m = &w.metadata;
            match parts.as_slice() {
                [node, orchestrator, workload, name] => {
                    m.node == *node
                        && m.orchestrator == *orchestrator
                        && m.workload == *workload
                        && m.name == *name
                }
                [node, name] => m.node == *node && m.name == *name,
                _ => false,
            }
        },
        &|w| w.metadata.name == text,
        &|w| containers.of_endpoint(w) == Some(text),
        &|w| {
            !text.is_empty() && is_docker_id(&w.metadata.name) && w.metadata.name.starts_with(text)
        },
    ];
    for matches in by {
        let found: Vec<&WorkloadEndpoint> =
            endpoints.iter().copied().filter(|w| matches(w)).collect();
        if !found.is_empty() {
            return found;
        }
    }
    Vec::new()
}

/// The message for a name that fits several endpoints: how to name each exactly.
pub fn ambiguity(option: &str, text: &str, found: &[&WorkloadEndpoint]) -> String {
    let paths: Vec<String> = found.iter().map(|w| endpoint_path(w)).collect();
    format!(
        "{option} '{text}' matches {} workload endpoints; name one exactly as NODE/ORCHESTRATOR/WORKLOAD/NAME: {}",
        found.len(),
        paths.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{WorkloadEndpointMetadata, WorkloadEndpointSpec};

    fn endpoint(node: &str, name: &str) -> WorkloadEndpoint {
        WorkloadEndpoint {
            metadata: WorkloadEndpointMetadata {
                name: name.to_string(),
                node: node.to_string(),
                orchestrator: "libnetwork".to_string(),
                workload: "libnetwork".to_string(),
                ..Default::default()
            },
            spec: WorkloadEndpointSpec::default(),
        }
    }

    #[test]
    fn paths_names_containers_and_id_prefixes_name_endpoints() {
        let id = "9a55e90c84d9".to_string() + &"0".repeat(52);
        let a = endpoint("node1", "db1");
        let b = endpoint("node2", "db1");
        let c = endpoint("node1", &id);
        let all = [&a, &b, &c];
        let containers = ContainerNames(BTreeMap::from([(id.clone(), "web".to_string())]));
        let names = |text: &str| -> Vec<String> {
            find(text, &all, &containers)
                .iter()
                .map(|w| endpoint_path(w))
                .collect()
        };
        assert_eq!(names("db1").len(), 2);
        assert_eq!(names("node2/db1"), ["node2/libnetwork/libnetwork/db1"]);
        assert_eq!(
            names("node1/libnetwork/libnetwork/db1"),
            ["node1/libnetwork/libnetwork/db1"]
        );
        assert_eq!(names("web"), [format!("node1/libnetwork/libnetwork/{id}")]);
        assert_eq!(
            names("9a55e90c84d9"),
            [format!("node1/libnetwork/libnetwork/{id}")]
        );
        assert!(names("db").is_empty(), "prefixes count for Docker IDs only");
        assert_eq!(display_name(&c, &containers), "web (9a55e90c84d9)");
        assert!(ambiguity("--dst", "db1", &[&a, &b]).contains("node2/libnetwork/libnetwork/db1"));
    }
}
