//! Endpoint labels from container labels: `docker run --label palisade.label.role=db`
//! gives the container's endpoint the label `role=db`.
//!
//! libnetwork never tells a driver which container an endpoint belongs to. By `Join` the
//! network's inspection lists the endpoint with the container's name (under the key
//! `ep-<EndpointID>` while the container is being started), and the container list names
//! the container's labels; both are read from Docker's lock-free views, so asking them
//! while Docker waits for our reply cannot deadlock. (Inspecting the container itself
//! would wait for the container's lock, which `docker run` holds during `Join`.)

use std::collections::BTreeMap;

use super::docker_api::{ContainerSummary, DockerApi, DockerApiError};

/// Container labels with this prefix become endpoint labels, without it.
pub const LABEL_PREFIX: &str = "palisade.label.";

/// The endpoint labels carried by a container's labels.
pub fn endpoint_labels(container_labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    container_labels
        .iter()
        .filter_map(|(key, value)| {
            key.strip_prefix(LABEL_PREFIX)
                .map(|key| (key.to_string(), value.clone()))
        })
        .collect()
}

/// The container that owns `endpoint_id` of network `network_id`, if Docker shows one.
pub async fn container_of_endpoint(
    docker: &DockerApi,
    network_id: &str,
    endpoint_id: &str,
) -> Result<Option<ContainerSummary>, DockerApiError> {
    let named = docker.network(network_id).await?.and_then(|network| {
        network
            .containers
            .unwrap_or_default()
            .into_values()
            .find(|c| c.endpoint_id == endpoint_id)
            .map(|c| c.name)
    });
    if let Some(name) = named {
        let mut found = docker.containers_named(&name).await?;
        if found.len() == 1 {
            return Ok(found.pop());
        }
    }
    // A container connected while running (`docker network connect`) is found through its
    // own network settings instead.
    Ok(docker.all_containers().await?.into_iter().find(|c| {
        c.network_settings
            .as_ref()
            .and_then(|s| s.networks.as_ref())
            .is_some_and(|networks| networks.values().any(|n| n.endpoint_id == endpoint_id))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_prefixed_labels_are_taken_without_the_prefix() {
        let labels = BTreeMap::from([
            ("palisade.label.role".to_string(), "db".to_string()),
            ("palisade.label.tier/x".to_string(), String::new()),
            ("com.example.other".to_string(), "1".to_string()),
            ("palisade.labelnot".to_string(), "2".to_string()),
        ]);
        assert_eq!(
            endpoint_labels(&labels),
            BTreeMap::from([
                ("role".to_string(), "db".to_string()),
                ("tier/x".to_string(), String::new()),
            ])
        );
    }
}
