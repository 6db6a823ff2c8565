//! What a new user stumbled on (issue 15, item 4), each checked through the binary: a
//! warning for an address another endpoint has, naming one endpoint exactly, Docker short
//! IDs, multi-resource errors that name the resource, profiles deleted while in use,
//! readable trace output, and messages that say what to do.
#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

use cli_support::{Palisade, both_backends};
use common::seeds::{PROFILES_WITH_RULES, endpoints_yaml};

fn endpoint(node: &str, name: &str, ip: &str, profile: &str) -> String {
    format!(
        "- apiVersion: v1
  kind: workloadEndpoint
  metadata: {{name: {name}, node: {node}, orchestrator: libnetwork, workload: libnetwork}}
  spec: {{interfaceName: cali{}, ipNetworks: [{ip}/32], profiles: [{profile}]}}
",
        &name[..name.len().min(8)]
    )
}

both_backends! {
fn an_address_another_endpoint_has_is_warned_about() {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    p.apply(&endpoints_yaml("node1"));
    let run = p.run_with_stdin(&["apply", "-f", "-"], &endpoint("node2", "db1", "192.168.0.11", "databases"));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout, "Successfully applied 1 'workloadEndpoint' resource(s)\n");
    assert_eq!(
        run.stderr,
        "Warning: address 192.168.0.11 of workloadEndpoint node2/libnetwork/libnetwork/db1 is already workloadEndpoint node1/libnetwork/libnetwork/db1's\n"
    );
    // Re-applying an endpoint with its own address is no clash.
    let run = p.run_with_stdin(&["apply", "-f", "-"], &endpoint("node1", "app1", "192.168.0.21", "apps"));
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
}
}

both_backends! {
fn trace_names_one_endpoint_exactly() {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    p.apply(&endpoints_yaml("node1"));
    p.apply(&endpoint("node2", "db1", "192.168.1.11", "databases"));
    let args = |dst: &str| {
        vec!["trace", "--src", "app1", "--dst", dst, "--protocol", "tcp", "--dport", "3306"]
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let run = |dst: &str| {
        let a = args(dst);
        p.run(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ambiguous = run("db1");
    assert_eq!(ambiguous.code, 1);
    assert_eq!(
        ambiguous.stderr,
        "--dst 'db1' matches 2 workload endpoints; name one exactly as NODE/ORCHESTRATOR/WORKLOAD/NAME: node1/libnetwork/libnetwork/db1, node2/libnetwork/libnetwork/db1\n"
    );
    for exact in ["node2/libnetwork/libnetwork/db1", "node2/db1"] {
        let traced = run(exact);
        assert_eq!(traced.code, 0, "{traced:?}");
        // People's names, not Rust's: no `WorkloadEndpoint(node=...)`.
        assert_eq!(
            traced.stdout,
            "packet: tcp 192.168.0.21:49152 -> 192.168.1.11:3306\n\
             source: workloadEndpoint app1 (node1/libnetwork/libnetwork/app1)\n  \
             egress: allow by profile apps egress rule 1 (allow)\n\
             destination: workloadEndpoint db1 (node2/libnetwork/libnetwork/db1)\n  \
             ingress: allow by profile databases ingress rule 1 (allow)\n\
             verdict: allow\n"
        );
    }
}
}

both_backends! {
fn docker_short_ids_name_endpoints() {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    let id = format!("9a55e90c84d9{}", &"0123456789abcdef".repeat(4)[..52]);
    p.apply(&endpoint("node1", &id, "192.168.0.11", "databases"));
    p.apply(&endpoint("node1", "app1", "192.168.0.21", "apps"));
    p.run(&["endpoint", "9a55e90c84d9", "profile", "show"]).expect(
        0,
        "+-----------+\n|    Name   |\n+-----------+\n| databases |\n+-----------+\n\n",
    );
    p.run(&["endpoint", "9a55e90c84d8", "profile", "show"]).expect(
        1,
        "Failed to list profiles in endpoint.\n\nEndpoint 9a55e90c84d8 is unknown to palisade.\n",
    );
    let run = p.run(&["trace", "--src", "app1", "--dst", "9a55e90c", "--protocol", "tcp", "--dport", "3306"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.ends_with("verdict: allow\n"), "{run:?}");
    let run = p.run(&["get", "wep", "9a55e90c84d9"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(&id), "{run:?}");
}
}

both_backends! {
fn rule_errors_in_a_file_of_several_name_the_resource() {
    let p = Palisade::new();
    let file = p.file(
        "bad.yaml",
        "- apiVersion: v1\n  kind: profile\n  metadata: {name: ok1}\n\
         - apiVersion: v1\n  kind: profile\n  metadata: {name: bad1}\n  spec: {ingress: [{action: allow, protocol: TCP}]}\n",
    );
    p.run(&["apply", "-f", &file]).expect(
        1,
        "Failed to execute command: [1] Profile(name=bad1): error with field spec.ingress[0].protocol = 'TCP' (protocol name invalid)\n",
    );
}
}

both_backends! {
fn deleting_a_profile_in_use_says_how_many_endpoints_list_it() {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    p.apply(&endpoints_yaml("node1"));
    let run = p.run(&["delete", "profile", "databases"]);
    assert_eq!(run.stdout, "Successfully deleted 1 'profile' resource(s)\n", "{run:?}");
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.starts_with("Warning: 2 workload endpoint(s) still list profile 'databases'; it no longer exists, so it denies all their traffic"),
        "{run:?}"
    );
    let run = p.run(&["delete", "profile", "apps"]);
    assert!(run.stderr.contains("2 workload endpoint(s) still list profile 'apps'"), "{run:?}");
    p.run(&["create", "-f", &p.file("p.yaml", "- apiVersion: v1\n  kind: profile\n  metadata: {name: unused}\n")])
        .expect(0, "Successfully created 1 'profile' resource(s)\n");
    let run = p.run(&["delete", "profile", "unused"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
}
}

#[test]
fn the_default_pool_is_visible() {
    let p = Palisade::new();
    let run = p.run(&["get", "ippools"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("built-in default pool 192.168.0.0/16")
            && run
                .stderr
                .contains("built-in default pool fd80:24e2:f998:72d6::/64"),
        "{run:?}"
    );
    p.apply("- apiVersion: v1\n  kind: ipPool\n  metadata: {cidr: 10.1.0.0/16}\n");
    let run = p.run(&["get", "ippools"]);
    assert!(!run.stderr.contains("192.168.0.0/16"), "{run:?}");
    assert!(run.stderr.contains("fd80:24e2:f998:72d6::/64"), "{run:?}");
}
