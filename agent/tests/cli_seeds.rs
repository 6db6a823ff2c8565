//! The worked examples of the seed documents ("Accessing Calico policy with Calico as a
//! network plugin"), run through palisade: both YAML variants, verbatim, through
//! `apply -f -` / `create -f -`, and the calicoctl v0.x `profile ... rule show` and
//! `endpoint ... profile show` commands.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{Palisade, lines};

/// Seed 000, "Policy applied directly by the profile", step 2.
const PROFILES_WITH_RULES: &str = "- apiVersion: v1
  kind: profile
  metadata:
    name: databases
    labels:
      role: database
  spec:
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'app'
      destination:
        ports:
        -  3306
    - action: allow
      source:
        selector: role == 'database'
    egress:
    - action: allow
      destination:
        selector: role == 'database'
- apiVersion: v1
  kind: profile
  metadata:
    name: apps
    labels:
      role: app
  spec:
    egress:
    - action: allow
";

/// Seed 000, "Global policy applied through label selection", step 2.
const PROFILES_WITH_LABELS_ONLY: &str = "- apiVersion: v1
  kind: profile
  metadata:
    name: databases
    labels:
      role: database
- apiVersion: v1
  kind: profile
  metadata:
    name: apps
    labels:
      role: app
";

/// Seed 000, "Global policy applied through label selection", step 3.
const POLICIES: &str = "- apiVersion: v1
  kind: policy
  metadata:
    name: databases
  spec:
    order: 0
    selector: role == 'database'
    ingress:
    - action: allow
      protocol: tcp
      source:
        selector: role == 'app'
      destination:
        ports:
        -  3306
    - action: allow
      source:
        selector: role == 'database'
    egress:
    - action: allow
      destination:
        selector: role == 'database'
- apiVersion: v1
  kind: policy
  metadata:
    name: apps
  spec:
    order: 0
    selector: role == 'app'
    egress:
    - action: allow
";

#[test]
fn profile_based_policy() {
    let p = Palisade::new();
    p.run_with_stdin(&["apply", "-f", "-"], PROFILES_WITH_RULES)
        .expect(0, "Successfully applied 2 'profile' resource(s)\n");
    // Applying again is an update, not an error.
    p.run_with_stdin(&["apply", "-f", "-"], PROFILES_WITH_RULES)
        .expect(0, "Successfully applied 2 'profile' resource(s)\n");
    p.run(&["profile", "databases", "rule", "show"]).expect(
        0,
        &lines(&[
            "Inbound rules:",
            "   1 allow tcp from selector \"role == 'app'\" to ports 3306",
            "   2 allow from selector \"role == 'database'\"",
            "Outbound rules:",
            "   1 allow to selector \"role == 'database'\"",
        ]),
    );
    p.run(&["profile", "apps", "rule", "show"]).expect(
        0,
        &lines(&["Inbound rules:", "Outbound rules:", "   1 allow"]),
    );
}

#[test]
fn selector_based_policy() {
    let p = Palisade::new();
    p.run_with_stdin(&["apply", "-f", "-"], PROFILES_WITH_LABELS_ONLY)
        .expect(0, "Successfully applied 2 'profile' resource(s)\n");
    p.run_with_stdin(&["create", "-f", "-"], POLICIES)
        .expect(0, "Successfully created 2 'policy' resource(s)\n");
    p.run(&["get", "policy", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NAME        ORDER   SELECTOR             ",
            "apps        0       role == 'app'        ",
            "databases   0       role == 'database'   ",
            "",
        ]),
    );
    p.run(&["profile", "databases", "rule", "show"])
        .expect(0, &lines(&["Inbound rules:", "Outbound rules:"]));
    // create is not an update: the second time both already exist, and nothing changes.
    p.run_with_stdin(&["create", "-f", "-"], POLICIES).expect(
        1,
        "Failed to create any 'policy' resources: resource already exists: Policy(name=databases)\n",
    );
}

#[test]
fn profile_rules_as_json() {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    let run = p.run(&["profile", "apps", "rule", "json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rules: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        rules,
        serde_json::json!({
            "ingress": [],
            "egress": [{"action": "allow", "source": {}, "destination": {}}],
        })
    );
}

#[test]
fn unknown_profile() {
    let p = Palisade::new();
    p.run(&["profile", "nope", "rule", "show"])
        .expect(1, "Profile nope not found.\n");
}

const ENDPOINTS: &str = "
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: 5a21f63bc17f
    node: host1
    orchestrator: libnetwork
    workload: libnetwork
  spec:
    interfaceName: cali5a21f63bc17
    ipNetworks: [10.0.0.2/32]
    profiles: [web, databases]
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: shared
    node: host1
    orchestrator: libnetwork
    workload: libnetwork
  spec:
    interfaceName: calishared1
    profiles: [46007b33d4dd56b13ede0f10bb427ba4481e3c0efe64960b0567dd53a80d3420]
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: shared
    node: host2
    orchestrator: libnetwork
    workload: libnetwork
  spec:
    interfaceName: calishared2
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: bare
    node: host1
    orchestrator: libnetwork
    workload: libnetwork
  spec:
    interfaceName: calibare
";

#[test]
fn endpoint_profile_show() {
    let p = Palisade::new();
    p.apply(ENDPOINTS);
    // PrettyTable: sorted rows, every cell centred; calicoctl printed an empty line after.
    p.run(&["endpoint", "5a21f63bc17f", "profile", "show"])
        .expect(
            0,
            &lines(&[
                "+-----------+",
                "|    Name   |",
                "+-----------+",
                "| databases |",
                "|    web    |",
                "+-----------+",
                "",
            ]),
        );
    let dashes = "-".repeat(66);
    let spaces = " ".repeat(31);
    p.run(&["endpoint", "shared", "--node", "host1", "profile", "show"])
        .expect(
            0,
            &lines(&[
                &format!("+{dashes}+"),
                &format!("|{spaces}Name{spaces}|"),
                &format!("+{dashes}+"),
                "| 46007b33d4dd56b13ede0f10bb427ba4481e3c0efe64960b0567dd53a80d3420 |",
                &format!("+{dashes}+"),
                "",
            ]),
        );
    p.run(&["endpoint", "bare", "profile", "show"])
        .expect(0, "Endpoint has no profiles associated with it.\n");
}

#[test]
fn endpoint_profile_show_errors() {
    let p = Palisade::new();
    p.apply(ENDPOINTS);
    p.run(&["endpoint", "nope", "profile", "show"]).expect(
        1,
        "Failed to list profiles in endpoint.\n\nEndpoint nope is unknown to Calico.\n",
    );
    p.run(&["endpoint", "shared", "profile", "show"]).expect(
        1,
        "Failed to list profiles in endpoint.\n\nMore than 1 endpoint matches the provided criteria.  Please provide additional parameters to refine the search.\n",
    );
}
