//! `palisade create|apply|replace|delete`: calicoctl's messages and exit codes, and the
//! all-or-nothing commit of each command.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{Palisade, both_backends};

const PROFILE_A: &str = "
apiVersion: v1
kind: profile
metadata:
  name: a
spec:
  egress:
  - action: allow
";

const PROFILES_A_B: &str = "
- apiVersion: v1
  kind: profile
  metadata:
    name: a
- apiVersion: v1
  kind: profile
  metadata:
    name: b
";

const POLICY_P: &str = "
apiVersion: v1
kind: policy
metadata:
  name: p
spec:
  selector: role == 'db'
  ingress:
  - action: allow
";

const PROFILE_AND_POLICY: &str = "
apiVersion: v1
kind: profile
metadata:
  name: a
---
apiVersion: v1
kind: policy
metadata:
  name: p
";

/// Whether `get KIND NAME` finds the resource.
fn exists(palisade: &Palisade, kind: &str, name: &str) -> bool {
    palisade.run(&["get", kind, name]).code == 0
}

both_backends! {
fn create_then_create_again_reports_already_exists() {
    let p = Palisade::new();
    let file = p.file("a.yaml", PROFILE_A);
    p.run(&["create", "-f", &file])
        .expect(0, "Successfully created 1 'profile' resource(s)\n");
    p.run(&["create", "--filename", &file]).expect(
        1,
        "Failed to create 'profile' resource: resource already exists: Profile(name=a)\n",
    );
}
}

both_backends! {
fn create_skip_exists_counts_existing_resources_as_handled() {
    let p = Palisade::new();
    p.apply(PROFILE_A);
    let file = p.file("ab.yaml", PROFILES_A_B);
    p.run(&["create", "--skip-exists", "-f", &file])
        .expect(0, "Successfully created 2 'profile' resource(s)\n");
    assert!(exists(&p, "profile", "b"));
}
}

both_backends! {
fn a_failing_resource_writes_nothing() {
    let p = Palisade::new();
    p.apply(
        "
apiVersion: v1
kind: profile
metadata:
  name: b
",
    );
    // `a` is new, `b` exists: calicoctl would create `a` and report partial success;
    // palisade's single commit creates neither.
    let file = p.file("ab.yaml", PROFILES_A_B);
    p.run(&["create", "-f", &file]).expect(
        1,
        "Failed to create any 'profile' resources: resource already exists: Profile(name=b)\n",
    );
    assert!(!exists(&p, "profile", "a"));
}
}

both_backends! {
fn mixed_kinds_are_counted_without_a_kind() {
    let p = Palisade::new();
    p.run_with_stdin(&["create", "-f", "-"], PROFILE_AND_POLICY)
        .expect(0, "Successfully created 2 resource(s)\n");
    p.run_with_stdin(&["create", "-f", "-"], PROFILE_AND_POLICY)
        .expect(
            1,
            "Failed to create any resources: resource already exists: Profile(name=a)\n",
        );
    p.run_with_stdin(&["delete", "-f", "-"], PROFILE_AND_POLICY)
        .expect(0, "Successfully deleted 2 resource(s)\n");
}
}

both_backends! {
fn apply_creates_and_overwrites() {
    let p = Palisade::new();
    p.run_with_stdin(&["apply", "-f", "-"], POLICY_P)
        .expect(0, "Successfully applied 1 'policy' resource(s)\n");
    let changed = POLICY_P.replace("role == 'db'", "role == 'web'");
    p.run_with_stdin(&["apply", "-f", "-"], &changed)
        .expect(0, "Successfully applied 1 'policy' resource(s)\n");
    let wide = p.run(&["get", "policy", "p", "-o", "wide"]);
    assert!(wide.stdout.contains("role == 'web'"), "{wide:?}");
}
}

both_backends! {
fn replace_needs_an_existing_resource() {
    let p = Palisade::new();
    p.run_with_stdin(&["replace", "-f", "-"], POLICY_P).expect(
        1,
        "Failed to replace 'policy' resource: resource does not exist: Policy(name=p)\n",
    );
    assert!(!exists(&p, "policy", "p"));
    p.apply(POLICY_P);
    p.run_with_stdin(&["replace", "-f", "-"], POLICY_P)
        .expect(0, "Successfully replaced 1 'policy' resource(s)\n");
}
}

both_backends! {
fn replace_of_several_with_one_missing_replaces_none() {
    let p = Palisade::new();
    p.apply(PROFILE_A);
    p.run_with_stdin(&["replace", "-f", "-"], PROFILES_A_B)
        .expect(
            1,
            "Failed to replace any 'profile' resources: resource does not exist: Profile(name=b)\n",
        );
    // `a` still has the rule PROFILE_A gave it: the replace wrote nothing.
    let yaml = p.run(&["get", "profile", "a", "-o", "yaml"]);
    assert!(yaml.stdout.contains("egress"), "{yaml:?}");
}
}

both_backends! {
fn delete_by_name_and_missing_resources() {
    let p = Palisade::new();
    p.apply(POLICY_P);
    p.run(&["delete", "policy", "p"])
        .expect(0, "Successfully deleted 1 'policy' resource(s)\n");
    p.run(&["delete", "policy", "p"]).expect(
        1,
        "Failed to delete 'policy' resource: resource does not exist: Policy(name=p)\n",
    );
    p.run(&["delete", "--skip-not-exists", "policy", "p"])
        .expect(0, "Successfully deleted 1 'policy' resource(s)\n");
    p.run(&["delete", "-s", "policy", "p"])
        .expect(0, "Successfully deleted 1 'policy' resource(s)\n");
}
}

both_backends! {
fn delete_by_file_is_all_or_nothing() {
    let p = Palisade::new();
    p.apply(PROFILE_A);
    let file = p.file("ab.yaml", PROFILES_A_B);
    p.run(&["delete", "-f", &file]).expect(
        1,
        "Failed to delete any 'profile' resources: resource does not exist: Profile(name=b)\n",
    );
    assert!(exists(&p, "profile", "a"));
    p.run(&["delete", "-s", "-f", &file])
        .expect(0, "Successfully deleted 2 'profile' resource(s)\n");
    assert!(!exists(&p, "profile", "a"));
}
}

both_backends! {
fn delete_of_endpoints_needs_every_identifier() {
    let p = Palisade::new();
    p.apply(
        "
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: eth0, node: host1, orchestrator: docker, workload: c1}
  spec: {interfaceName: cali1, ipNetworks: [10.0.0.1/32]}
- apiVersion: v1
  kind: hostEndpoint
  metadata: {name: eth1, node: host1}
  spec: {interfaceName: eth1}
",
    );
    p.run(&["delete", "wep", "eth0"]).expect(
        1,
        "Failed to delete 'workloadEndpoint' resource: insufficient identifiers, missing 'node' (give it with --node)\n",
    );
    p.run(&["delete", "wep", "eth0", "-n", "host1", "--orchestrator", "docker"])
        .expect(
            1,
            "Failed to delete 'workloadEndpoint' resource: insufficient identifiers, missing 'workload' (give it with --workload)\n",
        );
    p.run(&[
        "delete",
        "workloadEndpoint",
        "eth0",
        "--node",
        "host1",
        "--orchestrator",
        "docker",
        "--workload",
        "c1",
    ])
    .expect(0, "Successfully deleted 1 'workloadEndpoint' resource(s)\n");
    p.run(&["delete", "hep", "eth1", "--node", "host2"]).expect(
        1,
        "Failed to delete 'hostEndpoint' resource: resource does not exist: HostEndpoint(node=host2, name=eth1)\n",
    );
    p.run(&["delete", "HostEndpoints", "eth1", "--node", "host1"])
        .expect(0, "Successfully deleted 1 'hostEndpoint' resource(s)\n");
}
}

both_backends! {
fn ip_pools_are_deleted_by_cidr() {
    let p = Palisade::new();
    p.apply(
        "
apiVersion: v1
kind: ipPool
metadata: {cidr: 10.1.0.0/16}
",
    );
    p.run(&["delete", "pool", "not-a-cidr"])
        .expect(1, "invalid CIDR address: not-a-cidr\n");
    p.run(&["delete", "ipp", "10.1.0.0/16"])
        .expect(0, "Successfully deleted 1 'ipPool' resource(s)\n");
}
}

both_backends! {
fn kubernetes_policies_cannot_be_written_or_deleted() {
    let p = Palisade::new();
    let knp = POLICY_P.replace("name: p", "name: knp.default.x");
    for (verb, operation) in [
        ("create", "Create"),
        ("apply", "Apply"),
        ("replace", "Replace"),
    ] {
        p.run_with_stdin(&[verb, "-f", "-"], &knp).expect(
            1,
            &format!("Failed to {verb} 'policy' resource: operation {operation} is not supported on knp.default.x\n"),
        );
    }
    p.run(&["delete", "policy", "knp.default.x"]).expect(
        1,
        "Failed to delete 'policy' resource: operation Delete is not supported on knp.default.x\n",
    );
    assert!(!exists(&p, "policy", "knp.default.x"));
}
}

both_backends! {
fn invalid_files_write_nothing() {
    let p = Palisade::new();
    // The first document is fine, the second has an invalid protocol: nothing is written.
    let invalid = "
apiVersion: v1
kind: profile
metadata:
  name: a
---
apiVersion: v1
kind: policy
metadata:
  name: p
spec:
  ingress:
  - action: allow
    protocol: TCP
";
    let run = p.run_with_stdin(&["apply", "-f", "-"], invalid);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("Failed to execute command: ") && run.stdout.contains("protocol"),
        "{run:?}"
    );
    assert!(!exists(&p, "profile", "a"));

    let unknown_kind = "
apiVersion: v1
kind: bgppeer
metadata:
  name: x
";
    let run = p.run_with_stdin(&["create", "-f", "-"], unknown_kind);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("Failed to execute command: ")
            && run
                .stdout
                .contains("Unknown resource type (bgppeer) and/or version (v1)"),
        "{run:?}"
    );

    let unknown_field = PROFILE_A.replace("name: a", "name: a\n  colour: red");
    let run = p.run_with_stdin(&["create", "-f", "-"], &unknown_field);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout.starts_with("Failed to execute command: "),
        "{run:?}"
    );
    assert!(!exists(&p, "profile", "a"));
}
}

both_backends! {
fn a_missing_file_is_reported() {
    let p = Palisade::new();
    let run = p.run(&["create", "-f", "/nonexistent/palisade.yaml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("Failed to execute command: open /nonexistent/palisade.yaml: "),
        "{run:?}"
    );
}
}

both_backends! {
fn files_without_resources_are_rejected() {
    let p = Palisade::new();
    for verb in ["create", "apply", "replace", "delete"] {
        p.run_with_stdin(&[verb, "-f", "-"], "")
            .expect(1, "No resources specified in file\n");
        p.run_with_stdin(&[verb, "-f", "-"], "[]\n")
            .expect(1, "No resources specified in file\n");
    }
}
}

both_backends! {
fn json_input_and_lists_are_read() {
    let p = Palisade::new();
    let json = r#"{"kind": "profileList", "apiVersion": "v1", "items": [
        {"kind": "profile", "apiVersion": "v1", "metadata": {"name": "a"}},
        {"kind": "profile", "apiVersion": "v1", "metadata": {"name": "b"}}]}"#;
    p.run_with_stdin(&["create", "-f", "-"], json)
        .expect(0, "Successfully created 2 'profile' resource(s)\n");
}
}

#[test]
fn an_unreachable_datastore_is_reported_as_calicoctl_does() {
    let p = Palisade::new();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["--datastore", "nowhere://x", "get", "profile"])
        .env_remove("PALISADE_DATASTORE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stdout.starts_with("Failed to create Calico API client: "),
        "{stdout}"
    );
    drop(p);
}
