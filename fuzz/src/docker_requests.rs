//! The Docker plugin's request bodies, as dockerd (or anything that can reach the plugin's
//! socket) sends them. The first byte picks the method, the rest is the body. A body
//! either decodes or is a bad request whose message names the method (and the field, when
//! one is at fault); what decodes goes through the checks each handler makes before it
//! touches the datastore, and an endpoint they accept is a valid workloadEndpoint stored
//! under the key of its EndpointID.

use palisade::docker::protocol::{
    CreateEndpointRequest, CreateNetworkRequest, DeleteNetworkRequest, EndpointRequest,
    JoinRequest, ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest,
    RequestPoolRequest, decode,
};
use palisade::docker::{PluginError, check_create_network, new_endpoint};
use palisade::model::validate::validate;
use palisade::model::{Resource, ResourceKey};
use serde::de::DeserializeOwned;

/// What a method does with its request body: decode it and run the handler's own checks.
type Handle = fn(&str, &[u8]);

/// The methods with a body, and what each does with it.
const METHODS: &[(&str, Handle)] = &[
    ("/NetworkDriver.CreateNetwork", create_network),
    (
        "/NetworkDriver.DeleteNetwork",
        decode_only::<DeleteNetworkRequest>,
    ),
    ("/NetworkDriver.CreateEndpoint", create_endpoint),
    (
        "/NetworkDriver.EndpointOperInfo",
        decode_only::<EndpointRequest>,
    ),
    (
        "/NetworkDriver.DeleteEndpoint",
        decode_only::<EndpointRequest>,
    ),
    ("/NetworkDriver.Join", decode_only::<JoinRequest>),
    ("/NetworkDriver.Leave", decode_only::<EndpointRequest>),
    ("/IpamDriver.RequestPool", decode_only::<RequestPoolRequest>),
    ("/IpamDriver.ReleasePool", decode_only::<ReleasePoolRequest>),
    (
        "/IpamDriver.RequestAddress",
        decode_only::<RequestAddressRequest>,
    ),
    (
        "/IpamDriver.ReleaseAddress",
        decode_only::<ReleaseAddressRequest>,
    ),
];

pub fn check(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (path, handle) = METHODS[usize::from(selector) % METHODS.len()];
    handle(path, body);
}

/// The request, or `None` after checking that the refusal is a bad request naming the
/// method.
fn decoded<T: DeserializeOwned>(path: &str, body: &[u8]) -> Option<T> {
    match decode::<T>(path, body) {
        Ok(request) => Some(request),
        Err(PluginError::BadRequest(message)) => {
            let expected = format!("palisade: malformed {} request: ", &path[1..]);
            assert!(
                message.starts_with(&expected) && message.len() > expected.len(),
                "{path}: the refusal {message:?} does not say what is malformed"
            );
            None
        }
        Err(other) => panic!("{path}: a malformed body is not a bad request: {other:?}"),
    }
}

fn decode_only<T: DeserializeOwned>(path: &str, body: &[u8]) {
    let _: Option<T> = decoded(path, body);
}

fn create_network(path: &str, body: &[u8]) {
    let Some(request) = decoded::<CreateNetworkRequest>(path, body) else {
        return;
    };
    if let Err(err) = check_create_network(&request, "palisade") {
        assert!(!err.message().is_empty(), "a refusal without a message");
    }
}

fn create_endpoint(path: &str, body: &[u8]) {
    let Some(request) = decoded::<CreateEndpointRequest>(path, body) else {
        return;
    };
    if request.network_id.is_empty() || request.endpoint_id.is_empty() {
        return;
    }
    let interface = request.interface.unwrap_or_default();
    let Ok((endpoint, _)) = new_endpoint("node1", &request.endpoint_id, "net1", &interface) else {
        return;
    };
    assert_eq!(
        endpoint.key(),
        ResourceKey::WorkloadEndpoint {
            node: "node1".into(),
            orchestrator: palisade::docker::ORCHESTRATOR.into(),
            workload: palisade::docker::WORKLOAD.into(),
            name: request.endpoint_id.clone(),
        }
    );
    assert!(
        !endpoint.spec.ip_networks.is_empty(),
        "an endpoint without addresses: {endpoint:?}"
    );
    if let Err(err) = validate(&Resource::WorkloadEndpoint(endpoint)) {
        assert!(
            !err.to_string().is_empty(),
            "a validation error without a message"
        );
    }
}
