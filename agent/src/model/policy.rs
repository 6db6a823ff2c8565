use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Rule;

/// A global selector policy (single tier `default`, as in Felix 2.x).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub metadata: PolicyMetadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// `None` sorts after every number ("infinite" order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// A selector expression; `""` selects every endpoint, like `all()`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(
        default,
        rename = "preDNAT",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    /// Which directions the policy governs; defaulted on write from the rules present
    /// (see `validate::normalize`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<PolicyType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// The order policies apply in (Felix's `PolicyByOrder`): ascending `order`, a policy with
/// no order after every numbered one, ties broken by name, byte-wise.
pub fn application_order(a: (Option<f64>, &str), b: (Option<f64>, &str)) -> Ordering {
    let rank = |order: Option<f64>| match order {
        Some(o) => (0, o),
        None => (1, 0.0),
    };
    let ((ra, oa), (rb, ob)) = (rank(a.0), rank(b.0));
    ra.cmp(&rb)
        .then(oa.total_cmp(&ob))
        .then_with(|| a.1.as_bytes().cmp(b.1.as_bytes()))
}
