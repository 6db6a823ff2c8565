//! Reading resources from YAML or JSON files: several documents, `...List` kinds, bare
//! arrays; strict about kinds, versions and fields.

use serde::de::DeserializeOwned;

use super::{API_VERSION, HostEndpoint, IpPool, Kind, Policy, Profile, Resource, WorkloadEndpoint};

/// Converts one already-decoded resource envelope.
pub fn resource_from_value(value: serde_json::Value) -> Result<Resource, String> {
    let serde_json::Value::Object(mut map) = value else {
        return Err("a resource must be a mapping with kind, apiVersion, metadata and spec".into());
    };
    let kind = map.remove("kind");
    let version = map.remove("apiVersion");
    let kind_str = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("");
    let version_str = version.as_ref().and_then(|v| v.as_str()).unwrap_or("");
    let kind = match Kind::from_api_name(kind_str) {
        Some(k) if version_str == API_VERSION => k,
        _ => {
            return Err(format!(
                "Unknown resource type ({kind_str}) and/or version ({version_str})"
            ));
        }
    };
    if let Some(field) = map.keys().find(|k| *k != "metadata" && *k != "spec") {
        return Err(format!(
            "unknown field `{field}`, expected `metadata` or `spec`"
        ));
    }
    let metadata = map
        .remove("metadata")
        .ok_or_else(|| "missing field `metadata`".to_string())?;
    let spec = map
        .remove("spec")
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    Ok(match kind {
        Kind::Profile => Resource::Profile(Profile {
            metadata: field("metadata", metadata)?,
            spec: field("spec", spec)?,
        }),
        Kind::Policy => Resource::Policy(Policy {
            metadata: field("metadata", metadata)?,
            spec: field("spec", spec)?,
        }),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(WorkloadEndpoint {
            metadata: field("metadata", metadata)?,
            spec: field("spec", spec)?,
        }),
        Kind::HostEndpoint => Resource::HostEndpoint(HostEndpoint {
            metadata: field("metadata", metadata)?,
            spec: field("spec", spec)?,
        }),
        Kind::IpPool => Resource::IpPool(IpPool {
            metadata: field("metadata", metadata)?,
            spec: field("spec", spec)?,
        }),
    })
}

/// Deserializes one part of a resource, naming the path of the offending field on error.
fn field<T: DeserializeOwned>(name: &str, value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("{name}: {}", e.inner())
        } else {
            format!("{name}.{path}: {}", e.inner())
        }
    })
}
