//! What v1 fills in on write, and how stored policy reads back.

use crate::model::{PolicySpec, PolicyType, Resource};

/// Fills in what libcalico-go v1.7.3 defaults when a resource is written, so that what is
/// stored (and shown by `get`) is what upstream would store. Only policy `types` changes,
/// and only when empty: no egress rules → `[ingress]` (also with no rules at all); egress
/// rules only → `[egress]`; both → `[ingress, egress]` [LCG `lib/converter/policy.go`].
/// Everything else is left as written. Call after [`super::validate`] succeeds.
pub fn normalize(resource: &mut Resource) {
    if let Resource::Policy(policy) = resource
        && policy.spec.types.is_empty()
    {
        let spec = &mut policy.spec;
        spec.types = match (spec.ingress.is_empty(), spec.egress.is_empty()) {
            (_, true) => vec![PolicyType::Ingress],
            (true, false) => vec![PolicyType::Egress],
            (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
        };
    }
}

/// Which directions a policy governs, as Felix reads it: `(ingress, egress)`. Empty
/// `types` (a policy stored without [`normalize`]) governs both directions.
pub fn governed_types(spec: &PolicySpec) -> (bool, bool) {
    if spec.types.is_empty() {
        return (true, true);
    }
    (
        spec.types.contains(&PolicyType::Ingress),
        spec.types.contains(&PolicyType::Egress),
    )
}
