//! Validation of v1 resources with libcalico-go v1.7.3's rules and messages.
//!
//! Every problem of a resource is collected, not just the first. Each names the full field
//! path (`spec.ingress[0].protocol`) rather than upstream's bare Go field name, the bad value,
//! and a reason: upstream's text where upstream has one (struct-level checks), a short
//! description otherwise (upstream's field-level regex failures give none).
//!
//! Shape errors (unknown fields, wrong types, an unknown `action`) are caught earlier, by
//! [`super::parse`]. Policy `types` defaulting is [`normalize`], applied on write.

mod defaults;
mod names;
mod resources;
mod rules;

use std::fmt;

use super::Resource;

pub use defaults::{governed_types, normalize};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the field is, from the resource root: `metadata.labels`, `spec.ingress[0].protocol`.
    pub path: String,
    /// The offending value as written.
    pub value: String,
    /// Why it is invalid.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = '{}' ({})", self.path, self.value, self.reason)
    }
}

/// Everything wrong with one resource. Displays as libcalico-go's `ErrorValidation`:
/// `error with field <path> = '<value>' (<reason>)` for one problem, else
/// `error with the following fields:` and one `-  <path> = '<value>' (<reason>)` line per
/// problem (without upstream's trailing newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub fields: Vec<FieldError>,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.fields.as_slice() {
            [] => f.write_str("unknown validation error"),
            [one] => write!(f, "error with field {one}"),
            several => {
                f.write_str("error with the following fields:")?;
                for field in several {
                    write!(f, "\n-  {field}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationError {}

/// Checks a resource as calicoctl does before writing it.
pub fn validate(resource: &Resource) -> Result<(), ValidationError> {
    let mut problems = Problems::default();
    match resource {
        Resource::Profile(profile) => resources::check_profile(profile, &mut problems),
        Resource::Policy(policy) => resources::check_policy(policy, &mut problems),
        Resource::WorkloadEndpoint(endpoint) => {
            resources::check_workload_endpoint(endpoint, &mut problems)
        }
        Resource::HostEndpoint(endpoint) => resources::check_host_endpoint(endpoint, &mut problems),
        Resource::IpPool(pool) => resources::check_ip_pool(pool, &mut problems),
        Resource::IpAllocation(allocation) => {
            resources::check_ip_allocation(allocation, &mut problems)
        }
    }
    problems.into_result()
}

/// Collects the problems found while walking a resource.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(
        &mut self,
        path: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        self.0.push(FieldError {
            path: path.into(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    fn into_result(self) -> Result<(), ValidationError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationError { fields: self.0 })
        }
    }
}

/// A list value as shown in messages: `[80, 8080:8090]`.
fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(", "))
}
