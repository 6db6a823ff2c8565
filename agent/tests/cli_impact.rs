//! The impact preview through the real binary: `palisade diff -f FILE` and
//! `apply|create|replace|delete --dry-run`, on the seed example. Exit status 0 when
//! reachability does not change, 1 when it does, 2 on errors; nothing is ever written
//! (the datastore's revision stays where it was).
#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

use cli_support::{Palisade, both_backends};
use common::seeds::{GLOBAL_POLICIES, PROFILES_LABELS_ONLY, PROFILES_WITH_RULES, endpoints_yaml};
use serde_json::Value;

/// The databases' rule that lets apps in on tcp/3306, as both variants write it.
const RULE_3306: &str = "    - action: allow
      protocol: tcp
      source:
        selector: role == 'app'
      destination:
        ports:
        -  3306
";

fn without_3306(yaml: &str) -> String {
    assert!(yaml.contains(RULE_3306));
    yaml.replace(RULE_3306, "")
}

fn seed_store(variant: &[&str]) -> Palisade {
    let p = Palisade::new();
    for doc in variant {
        p.apply(doc);
    }
    p.apply(&endpoints_yaml("node1"));
    p
}

/// The names of the endpoints of a JSON change's `sources` or `destinations`.
fn names(change: &Value, field: &str) -> Vec<String> {
    let mut v: Vec<String> = change[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

both_backends! {
fn the_seed_variants_differ_by_nothing() {
    let p = seed_store(&[PROFILES_WITH_RULES]);
    let revision = p.revision();
    let variant2 = p.file("variant2.yaml", &format!("{PROFILES_LABELS_ONLY}{GLOBAL_POLICIES}"));
    p.run(&["diff", "-f", &variant2]).expect(0, "No change in reachability.\n");
    p.run(&["apply", "--dry-run", "-f", &variant2]).expect(0, "No change in reachability.\n");
    let run = p.run(&["diff", "-o", "json", "-f", &variant2]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["changed"], false);
    assert_eq!(json["changes"], serde_json::json!([]));
    assert_eq!(p.revision(), revision, "a preview wrote to the datastore");
}
}

both_backends! {
fn removing_the_3306_rule_loses_exactly_app_to_database_on_3306() {
    for variant in [
        vec![PROFILES_WITH_RULES.to_string()],
        vec![PROFILES_LABELS_ONLY.to_string(), GLOBAL_POLICIES.to_string()],
    ] {
        let docs: Vec<&str> = variant.iter().map(String::as_str).collect();
        let p = seed_store(&docs);
        let revision = p.revision();
        let changed = p.file("changed.yaml", &without_3306(docs.last().unwrap()));
        let run = p.run(&["apply", "--dry-run", "-o", "json", "-f", &changed]);
        assert_eq!(run.code, 1, "{run:?}");
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!((json["changed"].clone(), json["lost"].clone(), json["gained"].clone()),
                   (Value::Bool(true), Value::from(1), Value::from(0)), "{json:#}");
        let changes = json["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{json:#}");
        let c = &changes[0];
        assert_eq!(names(c, "sources"), ["app1", "app2"]);
        assert_eq!(names(c, "destinations"), ["db1", "db2"]);
        assert_eq!(c["change"], "lost");
        assert_eq!(c["protocol"], "tcp");
        assert_eq!(c["destinationPorts"], serde_json::json!([3306, 3306]));
        assert_eq!(c["sourcePorts"], serde_json::json!([0, 65535]));
        assert_eq!(c["before"]["verdict"], "allow");
        assert_eq!(c["after"]["verdict"], "deny");
        assert!(
            c["before"]["ingress"]["reason"].as_str().unwrap().contains("ingress rule 1 (allow)"),
            "{c:#}"
        );
        // The text form says the same, with the deciding rules before and after.
        let run = p.run(&["diff", "-f", &changed]);
        assert_eq!(run.code, 1, "{run:?}");
        assert!(run.stdout.starts_with("app1, app2 -> db1, db2\n  lost   tcp/3306: allow -> deny\n    before: allow (egress allow by "), "{}", run.stdout);
        assert!(run.stdout.ends_with("Reachability changes: 0 gained, 1 lost, in 1 group(s) of flows.\n"), "{}", run.stdout);
        assert_eq!(p.revision(), revision, "a preview wrote to the datastore");
    }
}
}

both_backends! {
fn every_write_command_previews_and_writes_nothing() {
    let p = seed_store(&[PROFILES_WITH_RULES]);
    let revision = p.revision();
    // Deleting the profile the databases use cuts all their traffic.
    let run = p.run(&["delete", "--dry-run", "profile", "databases"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("db1, db2 -> db1, db2\n"), "{}", run.stdout);
    assert!(run.stdout.contains("profile databases does not exist, so it denies everything"), "{}", run.stdout);
    let changed = p.file("changed.yaml", &without_3306(PROFILES_WITH_RULES));
    assert_eq!(p.run(&["replace", "--dry-run", "-f", &changed]).code, 1);
    // A new endpoint gains what it may reach; the preview of a create that would fail
    // fails as the create would, with status 2.
    let existing = p.file("existing.yaml", &endpoints_yaml("node1"));
    let run = p.run(&["create", "--dry-run", "-f", &existing]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("resource already exists"), "{run:?}");
    p.run(&["create", "--dry-run", "--skip-exists", "-f", &existing])
        .expect(0, "No change in reachability.\n");
    let app3 = endpoints_yaml("node1")
        .split("- apiVersion")
        .find(|doc| doc.contains("name: app2"))
        .unwrap()
        .replace("app2", "app3")
        .replace("192.168.0.22", "192.168.0.23");
    let new = p.file("new.yaml", &format!("- apiVersion{app3}"));
    let run = p.run(&["create", "--dry-run", "-f", &new]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("app3 -> db1, db2\n  gained tcp/3306: absent -> allow\n"), "{}", run.stdout);
    // Bad input: status 2 and the usual message.
    let bad = p.file("bad.yaml", "- apiVersion: v1\n  kind: profile\n  metadata: {name: x}\n  spec: {ingress: [{action: allow, protocol: TCP}]}\n");
    let run = p.run(&["diff", "-f", &bad]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("protocol"), "{run:?}");
    assert_eq!(p.run(&["diff", "-o", "yaml", "-f", &changed]).code, 2);
    // --output belongs to --dry-run on the write commands.
    assert_ne!(p.run(&["apply", "-o", "json", "-f", &changed]).code, 0);
    assert_eq!(p.revision(), revision, "a preview wrote to the datastore");
    assert_eq!(p.run(&["get", "profile", "databases"]).code, 0);
}
}
