//! A warning for an endpoint address that another workload endpoint already has: two
//! endpoints with one address make traffic to it ambiguous (the node routes it to one of
//! them), which is rarely meant. Written anyway, as Calico does; the warning says so.

use crate::model::{Resource, WorkloadEndpoint};

use super::endpoint_lookup::endpoint_path;

/// One line per address of `new` that another endpoint (stored, or earlier in `new`)
/// already has. `stored` is every resource of the datastore.
pub fn warnings(new: &[&WorkloadEndpoint], stored: &[Resource]) -> Vec<String> {
    let mut seen: Vec<&WorkloadEndpoint> = stored
        .iter()
        .filter_map(|r| match r {
            Resource::WorkloadEndpoint(w) => Some(w),
            _ => None,
        })
        .filter(|w| new.iter().all(|n| n.key() != w.key()))
        .collect();
    let mut out = Vec::new();
    for endpoint in new {
        for net in &endpoint.spec.ip_networks {
            let address = net.addr();
            for other in seen
                .iter()
                .filter(|o| o.spec.ip_networks.iter().any(|n| n.addr() == address))
            {
                out.push(format!(
                    "Warning: address {address} of workloadEndpoint {} is already workloadEndpoint {}'s",
                    endpoint_path(endpoint),
                    endpoint_path(other)
                ));
            }
        }
        seen.push(endpoint);
    }
    out
}
