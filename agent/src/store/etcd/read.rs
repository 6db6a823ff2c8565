//! Turning etcd key-values into resources: a whole snapshot, or one resource's keys.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use etcd_client::KeyValue;

use super::layout::{self, KeyMeaning, LayoutError, ProfileParts};
use crate::log;
use crate::model::{Resource, ResourceKey};

/// Keys under `/calico/v1/` that palisade does not understand are skipped, and each is
/// logged once per process, not on every read.
#[derive(Debug, Default)]
pub struct UnknownKeys {
    logged: Mutex<HashSet<String>>,
}

impl UnknownKeys {
    pub fn note(&self, key: &str) {
        let first_time = match self.logged.lock() {
            Ok(mut logged) => logged.insert(key.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(key.to_string()),
        };
        if first_time {
            log::warn(
                "ignoring an etcd key palisade does not know",
                &[("key", &key)],
            );
        }
    }
}

/// The key of `kv` as text; a key that is not UTF-8 is nothing palisade or Calico wrote.
pub fn key_text<'a>(kv: &'a KeyValue, unknown: &UnknownKeys) -> Option<&'a str> {
    match kv.key_str() {
        Ok(key) => Some(key),
        Err(_) => {
            unknown.note(&String::from_utf8_lossy(kv.key()));
            None
        }
    }
}

/// Every resource stored in `kvs` (keys under `/calico/v1/`, any order).
pub fn resources(
    kvs: &[KeyValue],
    unknown: &UnknownKeys,
) -> Result<BTreeMap<ResourceKey, Resource>, LayoutError> {
    let mut out = BTreeMap::new();
    let mut profiles: BTreeMap<String, ProfileParts> = BTreeMap::new();
    for kv in kvs {
        let Some(key) = key_text(kv, unknown) else {
            continue;
        };
        match layout::classify(key) {
            KeyMeaning::Resource(resource_key) => {
                let resource = layout::decode(key, &resource_key, kv.value())?;
                out.insert(resource_key, resource);
            }
            KeyMeaning::ProfilePart { name, part } => {
                profiles
                    .entry(name)
                    .or_default()
                    .set(key, part, kv.value())?;
            }
            KeyMeaning::Ignored => {}
            KeyMeaning::Unknown => unknown.note(key),
        }
    }
    for (name, parts) in profiles {
        out.insert(
            ResourceKey::Profile { name: name.clone() },
            parts.to_profile(&name),
        );
    }
    Ok(out)
}

/// The profile parts among `kvs`, by profile name.
pub fn profile_parts(
    kvs: &[KeyValue],
    unknown: &UnknownKeys,
) -> Result<BTreeMap<String, ProfileParts>, LayoutError> {
    let mut profiles: BTreeMap<String, ProfileParts> = BTreeMap::new();
    for kv in kvs {
        let Some(key) = key_text(kv, unknown) else {
            continue;
        };
        if let KeyMeaning::ProfilePart { name, part } = layout::classify(key) {
            profiles
                .entry(name)
                .or_default()
                .set(key, part, kv.value())?;
        }
    }
    Ok(profiles)
}
