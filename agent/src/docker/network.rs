//! The network driver: networks are profiles, endpoints are workloadEndpoints, joining
//! plumbs the container's veth pair (see [`crate::netplumb`]).

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use super::container_labels::{LABEL_PREFIX, container_of_endpoint, endpoint_labels};
use super::docker_api::ContainerSummary;
use super::endpoint::{addresses, endpoint_key, new_endpoint};
use super::error::PluginError;
use super::ipam::{PLACEHOLDER_GATEWAY_IPV4, PLACEHOLDER_GATEWAY_IPV6};
use super::plugin::Plugin;
use super::profile::ensure_network_profile;
use super::protocol::{
    CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRequest,
    InterfaceName, InterfaceReply, JoinRequest, JoinResponse, NetworkCapabilities,
    OPTION_ENABLE_IPV6, OPTION_GENERIC, OPTION_INTERNAL, ROUTE_CONNECTED, StaticRoute,
};
use crate::log;
use crate::model::validate::validate;
use crate::model::{IpAllocation, Resource, ResourceKey, WorkloadEndpoint};
use crate::netplumb::{
    IPV4_GATEWAY, IPV6_GATEWAY, add_host_routes, create_host_veth, delete_host_veth,
    host_interface_name, temp_interface_name,
};
use crate::store::{Op, StoreError};

/// The name prefix Docker gives the container side (`eth0`, `eth1`, ...), as its own
/// drivers and `palisade workload add` do.
const CONTAINER_PREFIX: &str = "eth";

/// How long a new network's name is looked for in the Docker API: Docker stores the
/// network only after `CreateNetwork` succeeded.
const NETWORK_NAME_PATIENCE: Duration = Duration::from_secs(30);
const NETWORK_NAME_POLL: Duration = Duration::from_millis(100);

/// Networks are local to the host: every node's plugin allocates from the shared pools
/// through the datastore, and Docker needs no cluster store.
pub fn capabilities() -> NetworkCapabilities {
    NetworkCapabilities {
        scope: "local",
        connectivity_scope: "local",
    }
}

/// Checks that a network can be a palisade network: no options palisade would ignore, and
/// palisade's IPAM (whose placeholder gateway is the sign of it).
pub fn check_create_network(
    request: &CreateNetworkRequest,
    driver: &str,
) -> Result<(), PluginError> {
    if request.network_id.is_empty() {
        return Err(PluginError::bad_request(
            "palisade: CreateNetwork without a NetworkID",
        ));
    }
    let mut rejected = Vec::new();
    for (key, value) in request.options.iter().flatten() {
        match key.as_str() {
            OPTION_ENABLE_IPV6 => {}
            OPTION_GENERIC => match value {
                Value::Object(generic) => rejected.extend(generic.keys().cloned()),
                other if is_set(other) => rejected.push(key.clone()),
                _ => {}
            },
            OPTION_INTERNAL if is_set(value) => rejected.push("--internal".to_string()),
            _ if is_set(value) => rejected.push(key.clone()),
            _ => {}
        }
    }
    rejected.sort();
    match rejected.as_slice() {
        [] => {}
        [one] => {
            return Err(PluginError::failed(format!(
                "The palisade driver does not support the flag {one}."
            )));
        }
        several => {
            return Err(PluginError::failed(format!(
                "The palisade driver does not support the flags {}.",
                several.join(", ")
            )));
        }
    }
    let families = [
        (&request.ipv4_data, PLACEHOLDER_GATEWAY_IPV4),
        (&request.ipv6_data, PLACEHOLDER_GATEWAY_IPV6),
    ];
    for (data, placeholder) in families {
        if data.iter().flatten().any(|d| d.gateway != placeholder) {
            return Err(PluginError::failed(format!(
                "Non-palisade IPAM driver is used: create the network with --ipam-driver {driver} as well as --driver {driver}"
            )));
        }
    }
    Ok(())
}

/// Whether an option value asks for something (Docker passes unset flags as false/empty).
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Creates the profile of a network that was just created, once Docker shows the network
/// (and so its name); an existing profile of that name is kept as it is. `CreateEndpoint`
/// makes sure of the profile too, so a plugin stopped meanwhile loses nothing.
pub async fn create_profile_when_named(plugin: &Plugin, network_id: &str) {
    let deadline = tokio::time::Instant::now() + NETWORK_NAME_PATIENCE;
    loop {
        match plugin.docker.network(network_id).await {
            Ok(Some(network)) => {
                match plugin
                    .store
                    .commit(vec![ensure_network_profile(&network.name)])
                    .await
                {
                    Ok(_) => log::info(
                        "network profile in place",
                        &[("network", &network.name), ("network_id", &network_id)],
                    ),
                    Err(e) => log::warn(
                        "cannot create the network's profile; the first endpoint will",
                        &[("network", &network.name), ("error", &e)],
                    ),
                }
                return;
            }
            Ok(None) => {}
            Err(e) => {
                log::warn(
                    "cannot look up a new network; its profile is created with its first endpoint",
                    &[("network_id", &network_id), ("error", &e)],
                );
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            log::info(
                "network never appeared in Docker (its creation failed later?)",
                &[("network_id", &network_id)],
            );
            return;
        }
        tokio::time::sleep(NETWORK_NAME_POLL).await;
    }
}

pub async fn create_endpoint(
    plugin: &Plugin,
    request: CreateEndpointRequest,
) -> Result<CreateEndpointResponse, PluginError> {
    require_ids("CreateEndpoint", &request.network_id, &request.endpoint_id)?;
    let network = network_name(plugin, &request.network_id).await?;
    let interface = request.interface.unwrap_or_default();
    let (endpoint, mac_chosen) =
        new_endpoint(&plugin.node, &request.endpoint_id, &network, &interface)?;
    validate(&Resource::WorkloadEndpoint(endpoint.clone())).map_err(|e| {
        PluginError::failed(format!(
            "palisade: the endpoint of network {network} would be invalid: {e}"
        ))
    })?;
    let mut ops = vec![
        ensure_network_profile(&network),
        Op::Create {
            resource: Resource::WorkloadEndpoint(endpoint.clone()),
            skip_existing: false,
        },
    ];
    for address in addresses(&endpoint) {
        ops.push(Op::Replace(Resource::IpAllocation(
            owned_allocation(plugin, address, &request.endpoint_id).await?,
        )));
    }
    match plugin.store.commit(ops).await {
        Ok(_) => {}
        // Docker repeating a request it did not see answered: the same endpoint is fine.
        Err(StoreError::AlreadyExists { key, .. }) => {
            let existing = plugin.store.get(&key).await.ok().flatten();
            if existing != Some(Resource::WorkloadEndpoint(endpoint.clone())) {
                return Err(PluginError::failed(format!(
                    "palisade: a different endpoint {} already exists on node {}",
                    request.endpoint_id, plugin.node
                )));
            }
        }
        Err(StoreError::NotFound { key, .. }) => {
            return Err(PluginError::failed(format!(
                "palisade: {key} was released while the endpoint was being created"
            )));
        }
        Err(e) => return Err(PluginError::store("writing the endpoint", e)),
    }
    let mac = endpoint.spec.mac.unwrap_or_default();
    Ok(CreateEndpointResponse {
        interface: mac_chosen.then_some(InterfaceReply { mac_address: mac }),
    })
}

/// The allocation of `address`, marked as used by `endpoint_id`.
async fn owned_allocation(
    plugin: &Plugin,
    address: IpAddr,
    endpoint_id: &str,
) -> Result<IpAllocation, PluginError> {
    let key = ResourceKey::IpAllocation { address };
    let allocation = match plugin.store.get(&key).await {
        Ok(Some(Resource::IpAllocation(a))) => a,
        Ok(_) => {
            return Err(PluginError::failed(format!(
                "palisade: address {address} was not handed out by palisade IPAM; \
                 create the network with --ipam-driver {}",
                plugin.driver_name
            )));
        }
        Err(e) => return Err(PluginError::store("reading the address allocation", e)),
    };
    match allocation.spec.endpoint.as_deref() {
        Some(owner) if owner != endpoint_id => Err(PluginError::failed(format!(
            "palisade: address {address} is already used by endpoint {owner}"
        ))),
        _ => Ok(IpAllocation {
            spec: crate::model::IpAllocationSpec {
                endpoint: Some(endpoint_id.to_string()),
                ..allocation.spec
            },
            ..allocation
        }),
    }
}

pub async fn join(plugin: &Plugin, request: JoinRequest) -> Result<JoinResponse, PluginError> {
    require_ids("Join", &request.network_id, &request.endpoint_id)?;
    let endpoint = stored_endpoint(plugin, &request.endpoint_id).await?;
    let container = joining_container(plugin, &request.network_id, &request.endpoint_id).await?;
    refuse_second_network(plugin, &container, &request.endpoint_id).await?;
    // Labels first: by the time the interface exists, its policy has the right labels.
    let endpoint = label_from_container(plugin, &container, endpoint).await?;

    let host_name = endpoint.spec.interface_name.clone();
    let temp_name = temp_interface_name(&request.endpoint_id);
    let addresses = addresses(&endpoint);
    // A pair left behind by an earlier, interrupted Join of this endpoint is replaced.
    delete_host_veth(&plugin.rtnl, &host_name)
        .await
        .map_err(|e| plumbing_failed(&request.endpoint_id, &e))?;
    let veth = create_host_veth(&plugin.rtnl, &host_name, &temp_name, &addresses)
        .await
        .map_err(|e| plumbing_failed(&request.endpoint_id, &e))?;
    if let Err(e) = add_host_routes(&plugin.rtnl, &veth, &addresses).await {
        let _ = delete_host_veth(&plugin.rtnl, &host_name).await;
        return Err(plumbing_failed(&request.endpoint_id, &e));
    }

    let has_v4 = addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = addresses.iter().any(IpAddr::is_ipv6);
    Ok(JoinResponse {
        interface_name: InterfaceName {
            src_name: temp_name,
            dst_prefix: CONTAINER_PREFIX.to_string(),
        },
        gateway: if has_v4 {
            IPV4_GATEWAY.to_string()
        } else {
            String::new()
        },
        gateway_ipv6: if has_v6 {
            IPV6_GATEWAY.to_string()
        } else {
            String::new()
        },
        // The gateway is on no subnet of the container's: reach it on the link first.
        static_routes: if has_v4 {
            vec![StaticRoute {
                destination: format!("{IPV4_GATEWAY}/32"),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new(),
            }]
        } else {
            Vec::new()
        },
        disable_gateway_service: false,
    })
}

/// The container that `endpoint_id` is joining, as the Docker API shows it.
async fn joining_container(
    plugin: &Plugin,
    network_id: &str,
    endpoint_id: &str,
) -> Result<ContainerSummary, PluginError> {
    container_of_endpoint(&plugin.docker, network_id, endpoint_id)
        .await
        .map_err(|e| {
            PluginError::failed(format!(
                "palisade: cannot read the labels of endpoint {endpoint_id}'s container: {e}"
            ))
        })?
        .ok_or_else(|| {
            PluginError::failed(format!(
                "palisade: Docker shows no container for endpoint {endpoint_id}, so its {LABEL_PREFIX}* labels cannot be read"
            ))
        })
}

/// Refuses a second palisade network for one container: every palisade network routes
/// the container through 169.254.1.1, and Docker cannot add that route twice (Calico's
/// plugin has the same limit; the seed's answer is labels and policies).
async fn refuse_second_network(
    plugin: &Plugin,
    container: &ContainerSummary,
    endpoint_id: &str,
) -> Result<(), PluginError> {
    let networks = container
        .network_settings
        .as_ref()
        .and_then(|s| s.networks.as_ref());
    for (network, settings) in networks.into_iter().flatten() {
        let other = &settings.endpoint_id;
        if other.is_empty() || other == endpoint_id {
            continue;
        }
        match plugin.store.get(&endpoint_key(&plugin.node, other)).await {
            Ok(Some(_)) => {
                let name = container.names.first().map(|n| n.trim_start_matches('/'));
                return Err(PluginError::failed(format!(
                    "palisade: container {} is on the palisade network {network} already, and a container \
                     can be on one palisade network only; to give it the policy of several, give its \
                     network's profile the labels that the policies select",
                    name.unwrap_or(&container.id)
                )));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(PluginError::store(
                    "reading the container's other endpoints",
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// The endpoint with its container's `palisade.label.*` labels, written if they changed.
async fn label_from_container(
    plugin: &Plugin,
    container: &ContainerSummary,
    mut endpoint: WorkloadEndpoint,
) -> Result<WorkloadEndpoint, PluginError> {
    let labels = endpoint_labels(&container.labels.clone().unwrap_or_default());
    if labels == endpoint.metadata.labels {
        return Ok(endpoint);
    }
    endpoint.metadata.labels = labels;
    let resource = Resource::WorkloadEndpoint(endpoint.clone());
    validate(&resource).map_err(|e| {
        PluginError::failed(format!(
            "palisade: the container's {LABEL_PREFIX}* labels are not valid endpoint labels: {e}"
        ))
    })?;
    plugin
        .store
        .commit(vec![Op::Replace(resource)])
        .await
        .map_err(|e| PluginError::store("writing the endpoint's labels", e))?;
    Ok(endpoint)
}

pub async fn leave(plugin: &Plugin, request: EndpointRequest) -> Result<(), PluginError> {
    require_ids("Leave", &request.network_id, &request.endpoint_id)?;
    remove_veth(plugin, &request.endpoint_id).await
}

pub async fn delete_endpoint(plugin: &Plugin, request: EndpointRequest) -> Result<(), PluginError> {
    require_ids("DeleteEndpoint", &request.network_id, &request.endpoint_id)?;
    // Normally gone with Leave; not if Docker lost track of the container meanwhile.
    remove_veth(plugin, &request.endpoint_id).await?;
    // The addresses stay allocated: Docker releases them next, through the IPAM driver.
    plugin
        .store
        .commit(vec![Op::Delete {
            key: endpoint_key(&plugin.node, &request.endpoint_id),
            skip_missing: true,
        }])
        .await
        .map(|_| ())
        .map_err(|e| PluginError::store("deleting the endpoint", e))
}

async fn remove_veth(plugin: &Plugin, endpoint_id: &str) -> Result<(), PluginError> {
    delete_host_veth(&plugin.rtnl, &host_interface_name(endpoint_id))
        .await
        .map(|_| ())
        .map_err(|e| plumbing_failed(endpoint_id, &e))
}

async fn stored_endpoint(
    plugin: &Plugin,
    endpoint_id: &str,
) -> Result<WorkloadEndpoint, PluginError> {
    match plugin
        .store
        .get(&endpoint_key(&plugin.node, endpoint_id))
        .await
    {
        Ok(Some(Resource::WorkloadEndpoint(endpoint))) => Ok(endpoint),
        Ok(_) => Err(PluginError::failed(format!(
            "palisade: endpoint {endpoint_id} is unknown on node {}",
            plugin.node
        ))),
        Err(e) => Err(PluginError::store("reading the endpoint", e)),
    }
}

async fn network_name(plugin: &Plugin, network_id: &str) -> Result<String, PluginError> {
    match plugin.docker.network(network_id).await {
        Ok(Some(network)) if !network.name.is_empty() => Ok(network.name),
        Ok(_) => Err(PluginError::failed(format!(
            "palisade: Docker does not know network {network_id}"
        ))),
        Err(e) => Err(PluginError::failed(format!(
            "palisade: cannot read the name of network {network_id}: {e}"
        ))),
    }
}

fn require_ids(method: &str, network_id: &str, endpoint_id: &str) -> Result<(), PluginError> {
    for (field, value) in [("NetworkID", network_id), ("EndpointID", endpoint_id)] {
        if value.is_empty() {
            return Err(PluginError::bad_request(format!(
                "palisade: {method} without {field}"
            )));
        }
    }
    Ok(())
}

fn plumbing_failed(endpoint_id: &str, error: &crate::netplumb::Error) -> PluginError {
    PluginError::failed(format!(
        "palisade: plumbing endpoint {endpoint_id} failed: {error}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::protocol::IpamData;

    fn request(options: Value, gateway: &str) -> CreateNetworkRequest {
        CreateNetworkRequest {
            network_id: "n1".into(),
            options: serde_json::from_value(options).unwrap(),
            ipv4_data: Some(vec![IpamData {
                gateway: gateway.into(),
                ..IpamData::default()
            }]),
            ipv6_data: Some(vec![]),
        }
    }

    #[test]
    fn plain_and_ipv6_networks_are_accepted() {
        let options = serde_json::json!({
            "com.docker.network.enable_ipv6": true,
            "com.docker.network.generic": {},
        });
        check_create_network(&request(options, "0.0.0.0/0"), "palisade").unwrap();
    }

    #[test]
    fn options_are_rejected_by_name() {
        let one = serde_json::json!({"com.docker.network.internal": true, "com.docker.network.generic": {}});
        assert_eq!(
            check_create_network(&request(one, "0.0.0.0/0"), "palisade").unwrap_err(),
            PluginError::failed("The palisade driver does not support the flag --internal.")
        );
        let two = serde_json::json!({"com.docker.network.generic": {"foo": "1", "bar": "2"}});
        assert_eq!(
            check_create_network(&request(two, "0.0.0.0/0"), "palisade").unwrap_err(),
            PluginError::failed("The palisade driver does not support the flags bar, foo.")
        );
    }

    #[test]
    fn another_ipam_driver_is_rejected() {
        let err = check_create_network(&request(Value::Null, "172.18.0.1/16"), "pal").unwrap_err();
        assert!(
            err.message()
                .starts_with("Non-palisade IPAM driver is used"),
            "{err}"
        );
        assert!(err.message().contains("--ipam-driver pal"), "{err}");
    }
}
