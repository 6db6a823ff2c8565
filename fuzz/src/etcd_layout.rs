//! Calico v1's etcd layout, both ways. The first byte picks the direction:
//! - even: the rest is an etcd key, a newline and a value, as Calico's tools (or anyone
//!   with access to etcd) could have written them. Reading never panics; a key names the
//!   resource whose keys classify back to it; a value that reads is written back in a form
//!   that reads to the same resource and is a fixed point of writing and reading.
//! - odd: the rest is a resource file. Every valid resource in it is written as its keys
//!   and values, and those read back to a resource whose stored form is the same.

use std::collections::BTreeMap;

use palisade::model::parse::parse_documents;
use palisade::model::validate::{normalize, validate};
use palisade::model::{Resource, ResourceKey};
use palisade::store::etcd::layout::{KeyMeaning, ProfileParts, classify, decode, encode, keys_of};

pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        check_stored(rest);
    } else if let Ok(text) = std::str::from_utf8(rest) {
        check_written(text);
    }
}

fn check_stored(data: &[u8]) {
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(key) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let value = data.get(split + 1..).unwrap_or_default();
    match classify(key) {
        KeyMeaning::Resource(resource_key) => {
            for written in keys_of(&resource_key) {
                assert_eq!(
                    classify(&written),
                    KeyMeaning::Resource(resource_key.clone()),
                    "{key:?} names {resource_key:?}, whose key {written:?} names something else"
                );
            }
            let Ok(resource) = decode(key, &resource_key, value) else {
                return;
            };
            assert_eq!(
                resource.key(),
                resource_key,
                "{key:?} read as another resource"
            );
            let stored = encode(&resource);
            let again = read_back(&stored);
            assert_eq!(
                encode(&again),
                stored,
                "{key:?} = {:?}: what palisade writes for it does not read back the same",
                String::from_utf8_lossy(value)
            );
        }
        KeyMeaning::ProfilePart { name, part } => {
            let mut parts = ProfileParts::default();
            if parts.set(key, part, value).is_err() {
                return;
            }
            let profile = parts.to_profile(&name);
            assert_eq!(profile.key(), ResourceKey::Profile { name: name.clone() });
            let stored = encode(&profile);
            assert_eq!(read_back(&stored), profile, "profile {name:?} from {key:?}");
        }
        KeyMeaning::Ignored | KeyMeaning::Unknown => {}
    }
}

fn check_written(text: &str) {
    let Ok(resources) = parse_documents(text) else {
        return;
    };
    for mut resource in resources {
        if validate(&resource).is_err() {
            continue;
        }
        normalize(&mut resource);
        let stored = encode(&resource);
        assert!(
            !stored.is_empty(),
            "{resource:?} is stored as no key at all"
        );
        let back = read_back(&stored);
        assert_eq!(
            back.key(),
            resource.key(),
            "{resource:?} read back as {back:?}"
        );
        assert_eq!(
            encode(&back),
            stored,
            "{resource:?} read back as {back:?}, which is stored differently"
        );
    }
}

/// The resource that the keys and values of one resource stand for, read as the store
/// reads them.
fn read_back(stored: &[(String, String)]) -> Resource {
    let mut profiles = BTreeMap::<String, ProfileParts>::new();
    let mut resources = Vec::new();
    for (key, value) in stored {
        match classify(key) {
            KeyMeaning::Resource(resource_key) => resources.push(
                decode(key, &resource_key, value.as_bytes())
                    .unwrap_or_else(|err| panic!("palisade wrote {key} = {value} and {err}")),
            ),
            KeyMeaning::ProfilePart { name, part } => profiles
                .entry(name)
                .or_default()
                .set(key, part, value.as_bytes())
                .unwrap_or_else(|err| panic!("palisade wrote {key} = {value} and {err}")),
            other => panic!("palisade wrote {key}, which reads as {other:?}"),
        }
    }
    resources.extend(
        profiles
            .into_iter()
            .map(|(name, parts)| parts.to_profile(&name)),
    );
    assert_eq!(
        resources.len(),
        1,
        "the keys of one resource read as {resources:?}"
    );
    resources.remove(0)
}
