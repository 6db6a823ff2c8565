//! The worked examples of the seed documents ("Accessing Calico policy with Calico as a
//! network plugin"), run through palisade: both YAML variants, verbatim, through
//! `apply -f -` / `create -f -`, and the calicoctl v0.x `profile ... rule show` and
//! `endpoint ... profile show` commands.

#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

use cli_support::{Palisade, both_backends, lines};

use common::seeds::{
    GLOBAL_POLICIES as POLICIES, PROFILES_LABELS_ONLY as PROFILES_WITH_LABELS_ONLY,
    PROFILES_WITH_RULES,
};

both_backends! {
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
}

both_backends! {
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
}

both_backends! {
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
}

both_backends! {
fn unknown_profile() {
    let p = Palisade::new();
    p.run(&["profile", "nope", "rule", "show"])
        .expect(1, "Profile nope not found.\n");
}
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

both_backends! {
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
}

both_backends! {
fn endpoint_profile_show_errors() {
    let p = Palisade::new();
    p.apply(ENDPOINTS);
    p.run(&["endpoint", "nope", "profile", "show"]).expect(
        1,
        "Failed to list profiles in endpoint.\n\nEndpoint nope is unknown to palisade.\n",
    );
    p.run(&["endpoint", "shared", "profile", "show"]).expect(
        1,
        "Failed to list profiles in endpoint.\n\nMore than 1 endpoint matches the provided criteria.  Please provide additional parameters to refine the search.\n",
    );
}
}

both_backends! {
/// The acceptance check of the policy core: the seed's YAML through `palisade apply -f -`
/// (and `create -f -` for the policies), four containers' endpoints, and `palisade trace`.
fn trace_gives_the_seed_verdicts_in_both_variants() {
    let variants: [&[&str]; 2] = [
        &[PROFILES_WITH_RULES],
        &[PROFILES_WITH_LABELS_ONLY, POLICIES],
    ];
    for docs in variants {
        let p = Palisade::new();
        for doc in docs {
            p.apply(doc);
        }
        p.apply(&common::seeds::endpoints_yaml("node1"));
        let trace = |src: &str, dst: &str, proto: &str, dport: Option<u16>| -> String {
            let mut args = vec!["trace", "--src", src, "--dst", dst, "--protocol", proto];
            let port = dport.map(|d| d.to_string());
            if let Some(port) = &port {
                args.extend(["--dport", port]);
            }
            let run = p.run(&args);
            assert_eq!(run.code, 0, "{run:?}");
            run.stdout.lines().last().unwrap().to_string()
        };
        let outside = common::seeds::OUTSIDE_IP;
        assert_eq!(trace("app1", "db1", "tcp", Some(3306)), "verdict: allow");
        assert_eq!(
            trace("app2", "192.168.0.12", "tcp", Some(3306)),
            "verdict: allow"
        );
        assert_eq!(trace("app1", "db1", "tcp", Some(3307)), "verdict: deny");
        for (proto, port) in [
            ("tcp", Some(22)),
            ("udp", Some(53)),
            ("icmp", None),
            ("132", Some(7)),
        ] {
            assert_eq!(
                trace("db1", "db2", proto, port),
                "verdict: allow",
                "db -> db {proto}"
            );
            assert_eq!(
                trace("db1", "app1", proto, port),
                "verdict: deny",
                "db -> app {proto}"
            );
            assert_eq!(
                trace("app1", outside, proto, port),
                "verdict: allow",
                "app -> out {proto}"
            );
            assert_eq!(
                trace("app1", "app2", proto, port),
                "verdict: deny",
                "app -> app {proto}"
            );
        }
    }
}
}

both_backends! {
fn trace_reports_bad_input() {
    let p = Palisade::new();
    p.apply(&common::seeds::endpoints_yaml("node1"));
    let run = p.run(&[
        "trace",
        "--src",
        "nosuch",
        "--dst",
        "db1",
        "--protocol",
        "tcp",
        "--dport",
        "1",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("--src 'nosuch': no workloadEndpoint has that name"),
        "{run:?}"
    );
    let run = p.run(&["trace", "--src", "db1", "--dst", "db2", "--protocol", "tcp"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--dport is required"), "{run:?}");
    let run = p.run(&[
        "trace",
        "--src",
        "db1",
        "--dst",
        "db2",
        "--protocol",
        "TCP",
        "--dport",
        "1",
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--protocol 'TCP'"), "{run:?}");
}
}
