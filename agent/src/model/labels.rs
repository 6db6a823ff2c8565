//! The labels selectors see on an endpoint (Felix's label inheritance): the endpoint's own
//! labels, then for each of its profiles, in the endpoint's order, that profile's labels
//! and then its tags as `tag = ""`. The first hit wins. Used for policy `spec.selector`
//! and for rule selectors and tags alike [Felix 2.6.8 `labelindex/label_inheritance_index.go`].

use std::collections::BTreeMap;

use super::Profile;
use crate::selector::Labels;

/// The full effective label map of an endpoint.
///
/// `profiles` are the endpoint's profiles in its order; `None` stands for a listed profile
/// that does not exist, which contributes nothing.
pub fn effective_labels(
    own: &BTreeMap<String, String>,
    profiles: &[Option<&Profile>],
) -> BTreeMap<String, String> {
    let mut labels = own.clone();
    for profile in profiles.iter().flatten() {
        for (key, value) in &profile.metadata.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        for tag in &profile.metadata.tags {
            labels.entry(tag.clone()).or_default();
        }
    }
    labels
}

/// [`effective_labels`] of an endpoint that lists its profiles by name, looked up in
/// `profiles` (a name not there is a missing profile).
pub fn effective_labels_by_name(
    own: &BTreeMap<String, String>,
    names: &[String],
    profiles: &BTreeMap<String, Profile>,
) -> BTreeMap<String, String> {
    let listed: Vec<Option<&Profile>> = names.iter().map(|n| profiles.get(n)).collect();
    effective_labels(own, &listed)
}

/// The same labels as [`effective_labels`], looked up on demand without building a map:
/// for a one-off selector evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EffectiveLabels<'a> {
    own: &'a BTreeMap<String, String>,
    profiles: &'a [Option<&'a Profile>],
}

impl<'a> EffectiveLabels<'a> {
    pub fn new(own: &'a BTreeMap<String, String>, profiles: &'a [Option<&'a Profile>]) -> Self {
        EffectiveLabels { own, profiles }
    }
}

impl Labels for EffectiveLabels<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Some(value) = self.own.get(key) {
            return Some(value);
        }
        self.profiles.iter().flatten().find_map(|profile| {
            let metadata = &profile.metadata;
            match metadata.labels.get(key) {
                Some(value) => Some(value.as_str()),
                None => metadata.tags.iter().any(|t| t == key).then_some(""),
            }
        })
    }
}
