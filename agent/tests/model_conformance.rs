//! Sections G (resource validation) and H (effective labels) of
//! `shared/conformance/selectors.jsonl`, read at run time. Every vector is run and every
//! mismatch reported; a missing file or an empty section fails the test.
//!
//! The H selector cases and the invalid G selector need the real selector module.

// Tests fail loudly on bad fixtures; unwrap is the point.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use palisade::model::labels::{EffectiveLabels, effective_labels};
use palisade::model::validate::validate;
use palisade::model::{
    EntityRule, Policy, PolicyMetadata, PolicySpec, Profile, ProfileMetadata, Resource, Rule,
};
use palisade::selector::{Labels, Selector};
use serde_json::Value;

fn shared_dir() -> PathBuf {
    match std::env::var_os("PALISADE_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")),
    }
}

/// The vectors of one section, in file order.
fn section(name: &str) -> Vec<Value> {
    let path = shared_dir().join("conformance/selectors.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (set PALISADE_SHARED_DIR)",
            path.display()
        )
    });
    let vectors: Vec<Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line}: {e}")))
        .filter(|v: &Value| v["section"] == name)
        .collect();
    assert!(
        !vectors.is_empty(),
        "no section {name} vectors in {}",
        path.display()
    );
    vectors
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    match value {
        Value::Null => BTreeMap::new(),
        _ => serde_json::from_value(value.clone()).unwrap(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Null => Vec::new(),
        _ => serde_json::from_value(value.clone()).unwrap(),
    }
}

fn report(section: &str, count: usize, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {count} section {section} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("section {section}: {count} vectors passed");
}

// ---- G: resource validation ----

fn profile_with(metadata: ProfileMetadata) -> Resource {
    Resource::Profile(Profile {
        metadata,
        spec: Default::default(),
    })
}

fn profile_metadata() -> ProfileMetadata {
    ProfileMetadata {
        name: "profile".into(),
        ..Default::default()
    }
}

/// The smallest resource that puts `value` into `field`.
fn resource_for(field: &str, value: &Value) -> Resource {
    let text = || value.as_str().unwrap().to_string();
    match field {
        "EntityRule.selector" => Resource::Policy(Policy {
            metadata: PolicyMetadata {
                name: "policy".into(),
                ..Default::default()
            },
            spec: PolicySpec {
                ingress: vec![Rule {
                    source: EntityRule {
                        selector: Some(text()),
                        ..Default::default()
                    },
                    ..Default::default()
                }],
                ..Default::default()
            },
        }),
        "ProfileMetadata.name" => profile_with(ProfileMetadata {
            name: text(),
            ..Default::default()
        }),
        "ProfileMetadata.tags[]" => profile_with(ProfileMetadata {
            tags: vec![text()],
            ..profile_metadata()
        }),
        "labels" => profile_with(ProfileMetadata {
            labels: string_map(value),
            ..profile_metadata()
        }),
        other => panic!("unknown G field {other}"),
    }
}

#[test]
fn section_g_resource_validation() {
    let vectors = section("G");
    let mut failures = Vec::new();
    for vector in &vectors {
        let field = vector["field"].as_str().unwrap();
        let expected = vector["valid"].as_bool().unwrap();
        let result = validate(&resource_for(field, &vector["value"]));
        if result.is_ok() != expected {
            failures.push(format!(
                "{field} = {}: expected valid={expected}, got {result:?}",
                vector["value"]
            ));
        }
    }
    report("G", vectors.len(), &failures);
}

// ---- H: effective labels ----

#[test]
fn section_h_effective_label_maps() {
    let vectors: Vec<Value> = section("H")
        .into_iter()
        .filter(|v| v.get("effective_labels").is_some())
        .collect();
    assert!(
        !vectors.is_empty(),
        "no effective_labels vectors in section H"
    );
    let mut failures = Vec::new();
    for vector in &vectors {
        let own = string_map(&vector["endpoint_labels"]);
        let profiles: Vec<Profile> = vector["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Profile {
                metadata: ProfileMetadata {
                    name: p["name"].as_str().unwrap().into(),
                    tags: strings(&p["tags"]),
                    labels: string_map(&p["labels"]),
                },
                spec: Default::default(),
            })
            .collect();
        let listed: Vec<Option<&Profile>> = profiles.iter().map(Some).collect();
        let expected = string_map(&vector["effective_labels"]);
        let got = effective_labels(&own, &listed);
        if got != expected {
            failures.push(format!("{vector}: effective_labels gave {got:?}"));
        }
        // The lazy view agrees on every key either side knows, and on an absent one.
        let view = EffectiveLabels::new(&own, &listed);
        for key in expected
            .keys()
            .chain(got.keys())
            .map(String::as_str)
            .chain(["absent-key"])
        {
            if view.get(key) != expected.get(key).map(String::as_str) {
                failures.push(format!(
                    "{vector}: view.get({key:?}) gave {:?}",
                    view.get(key)
                ));
            }
        }
    }
    report("H (maps)", vectors.len(), &failures);
}

/// One endpoint of an H case: its own labels and the names of its profiles, in order.
#[derive(Debug)]
struct Endpoint {
    labels: BTreeMap<String, String>,
    profiles: Vec<String>,
}

/// Reads `ep1 (profiles [prof-1, prof-2])` or `ep1` into a name and, if given, profiles.
fn endpoint_description(text: &str) -> (String, Option<Vec<String>>) {
    match text.split_once(" (profiles [") {
        None => (text.trim().to_string(), None),
        Some((name, rest)) => {
            let list = rest.trim_end_matches(")").trim_end_matches(']');
            let profiles = list
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty());
            (name.trim().to_string(), Some(profiles.collect()))
        }
    }
}

/// The endpoints and profiles an H case describes. Profiles are the `prof-*` keys;
/// endpoints come from `endpoint`, `matches`, `not_matches` and `<ep>_labels`. An endpoint
/// whose profiles are not spelled out lists every described profile (the cases that omit
/// them have one). A profile named but not described does not exist.
fn scene(vector: &Value) -> (BTreeMap<String, Profile>, BTreeMap<String, Endpoint>) {
    let object = vector.as_object().unwrap();
    let profiles: BTreeMap<String, Profile> = object
        .iter()
        .filter(|(key, _)| key.starts_with("prof-"))
        .map(|(name, p)| {
            let profile = Profile {
                metadata: ProfileMetadata {
                    name: name.clone(),
                    tags: strings(&p["tags"]),
                    labels: string_map(&p["labels"]),
                },
                spec: Default::default(),
            };
            (name.clone(), profile)
        })
        .collect();
    let mut descriptions: Vec<String> = Vec::new();
    descriptions.extend(vector["endpoint"].as_str().map(String::from));
    descriptions.extend(strings(&vector["matches"]));
    descriptions.extend(strings(&vector["not_matches"]));
    for key in object.keys() {
        if let Some(name) = key.strip_suffix("_labels") {
            descriptions.push(name.to_string());
        }
    }
    if descriptions.is_empty() {
        // "matches: []" with profiles only: the endpoint that lists them.
        descriptions.push("ep1".into());
    }
    let mut endpoints: BTreeMap<String, Endpoint> = BTreeMap::new();
    for description in descriptions {
        let (name, listed) = endpoint_description(&description);
        let labels = string_map(&vector[format!("{name}_labels")]);
        let entry = endpoints.entry(name).or_insert_with(|| Endpoint {
            labels,
            profiles: profiles.keys().cloned().collect(),
        });
        if let Some(listed) = listed {
            entry.profiles = listed;
        }
    }
    (profiles, endpoints)
}

#[test]
fn section_h_selector_matches() {
    let vectors: Vec<Value> = section("H")
        .into_iter()
        .filter(|v| v.get("sel").is_some())
        .collect();
    assert!(!vectors.is_empty(), "no selector cases in section H");
    let mut failures = Vec::new();
    for vector in &vectors {
        let source = vector["sel"].as_str().unwrap();
        let selector = match Selector::parse(source) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{vector}: selector does not parse: {e}"));
                continue;
            }
        };
        let (profiles, endpoints) = scene(vector);
        let expected: Vec<String> = strings(&vector["matches"])
            .iter()
            .map(|d| endpoint_description(d).0)
            .collect();
        // `matches` is the whole IP set: every other endpoint of the case must not match.
        for (name, endpoint) in &endpoints {
            let listed: Vec<Option<&Profile>> =
                endpoint.profiles.iter().map(|p| profiles.get(p)).collect();
            let map = effective_labels(&endpoint.labels, &listed);
            let view = EffectiveLabels::new(&endpoint.labels, &listed);
            let want = expected.contains(name);
            let (by_map, by_view) = (selector.matches(&map), selector.matches(&view));
            if by_map != want || by_view != want {
                failures.push(format!(
                    "{}: {source} on {name} {map:?}: expected {want}, map gave {by_map}, view gave {by_view}",
                    vector["case"]
                ));
            }
        }
    }
    report("H (selectors)", vectors.len(), &failures);
}
