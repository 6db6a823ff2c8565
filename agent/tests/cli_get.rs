//! `palisade get`: the ps, wide, yaml and json formats of calicoctl, filters, kind
//! aliases and errors.

#![allow(clippy::unwrap_used)]

mod cli_support;

use cli_support::{Palisade, both_backends, lines};

const FIXTURE: &str = r#"
- apiVersion: v1
  kind: profile
  metadata:
    name: frontend
    tags: [web, public]
    labels:
      role: frontend
  spec:
    ingress:
    - action: allow
      protocol: tcp
      destination:
        ports: [80, "8000:8080"]
- apiVersion: v1
  kind: profile
  metadata:
    name: db
- apiVersion: v1
  kind: policy
  metadata:
    name: allow-web
  spec:
    order: 100
    selector: role == 'frontend'
    ingress:
    - action: allow
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: eth0
    node: host1
    orchestrator: docker
    workload: c1
    labels:
      app: web
  spec:
    interfaceName: cali1234
    ipNetworks: [10.0.0.1/32]
    ipNATs:
    - internalIP: 10.0.0.1
      externalIP: 172.16.0.1
    profiles: [frontend, db]
- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: eth0
    node: host2
    orchestrator: docker
    workload: c2
  spec:
    interfaceName: cali5678
    ipNetworks: [10.0.0.2/32]
- apiVersion: v1
  kind: hostEndpoint
  metadata:
    name: eth1
    node: host1
  spec:
    interfaceName: eth1
    expectedIPs: [192.168.0.1, 192.168.0.2]
- apiVersion: v1
  kind: ipPool
  metadata:
    cidr: 10.0.0.0/16
  spec:
    nat-outgoing: true
"#;

fn with_fixture() -> Palisade {
    let p = Palisade::new();
    p.run_with_stdin(&["create", "-f", "-"], FIXTURE)
        .expect(0, "Successfully created 7 resource(s)\n");
    p
}

both_backends! {
fn ps_tables() {
    let p = with_fixture();
    let profiles = lines(&["NAME       ", "db         ", "frontend   ", ""]);
    p.run(&["get", "profile"]).expect(0, &profiles);
    p.run(&["get", "pro", "-o", "ps"]).expect(0, &profiles);
    p.run(&["get", "policies"])
        .expect(0, &lines(&["NAME        ", "allow-web   ", ""]));
    p.run(&["get", "wep"]).expect(
        0,
        &lines(&[
            "NODE    ORCHESTRATOR   WORKLOAD   NAME   ",
            "host1   docker         c1         eth0   ",
            "host2   docker         c2         eth0   ",
            "",
        ]),
    );
    p.run(&["get", "heps"])
        .expect(0, &lines(&["NODE    NAME   ", "host1   eth1   ", ""]));
    p.run(&["get", "ippool"])
        .expect(0, &lines(&["CIDR          ", "10.0.0.0/16   ", ""]));
}
}

both_backends! {
fn wide_tables() {
    let p = with_fixture();
    p.run(&["get", "profiles", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NAME       TAGS         ",
            "db                      ",
            "frontend   web,public   ",
            "",
        ]),
    );
    p.run(&["get", "pol", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NAME        ORDER   SELECTOR             ",
            "allow-web   100     role == 'frontend'   ",
            "",
        ]),
    );
    p.run(&["get", "workloadEndpoints", "--output", "wide"]).expect(
        0,
        &lines(&[
            "NODE    ORCHESTRATOR   WORKLOAD   NAME   NETWORKS      NATS                    INTERFACE   PROFILES      ",
            "host1   docker         c1         eth0   10.0.0.1/32   {10.0.0.1 172.16.0.1}   cali1234    frontend,db   ",
            "host2   docker         c2         eth0   10.0.0.2/32                           cali5678                  ",
            "",
        ]),
    );
    p.run(&["get", "hostendpoint", "-o", "wide"]).expect(
        0,
        &lines(&[
            "NODE    NAME   INTERFACE   IPS                       PROFILES   ",
            "host1   eth1   eth1        192.168.0.1,192.168.0.2              ",
            "",
        ]),
    );
    p.run(&["get", "pools", "-o", "wide"]).expect(
        0,
        &lines(&[
            "CIDR          NAT    IPIP    ",
            "10.0.0.0/16   true   false   ",
            "",
        ]),
    );
}
}

both_backends! {
fn yaml_is_a_flat_list_with_sorted_keys() {
    let p = with_fixture();
    p.run(&["get", "policy", "-o", "yaml"]).expect(
        0,
        &lines(&[
            "- apiVersion: v1",
            "  kind: policy",
            "  metadata:",
            "    name: allow-web",
            "  spec:",
            "    ingress:",
            "    - action: allow",
            "      destination: {}",
            "      source: {}",
            "    order: 100",
            "    selector: role == 'frontend'",
            "    types:",
            "    - ingress",
        ]),
    );
    p.run(&["get", "ipp", "-o", "yaml"]).expect(
        0,
        &lines(&[
            "- apiVersion: v1",
            "  kind: ipPool",
            "  metadata:",
            "    cidr: 10.0.0.0/16",
            "  spec:",
            "    nat-outgoing: true",
        ]),
    );
}
}

both_backends! {
fn json_keeps_calicoctl_field_order() {
    let p = with_fixture();
    p.run(&["get", "policy", "allow-web", "-o", "json"]).expect(
        0,
        &lines(&[
            "[",
            "  {",
            "    \"kind\": \"policy\",",
            "    \"apiVersion\": \"v1\",",
            "    \"metadata\": {",
            "      \"name\": \"allow-web\"",
            "    },",
            "    \"spec\": {",
            "      \"order\": 100,",
            "      \"selector\": \"role == 'frontend'\",",
            "      \"ingress\": [",
            "        {",
            "          \"action\": \"allow\",",
            "          \"source\": {},",
            "          \"destination\": {}",
            "        }",
            "      ],",
            "      \"types\": [",
            "        \"ingress\"",
            "      ]",
            "    }",
            "  }",
            "]",
        ]),
    );
}
}

both_backends! {
fn yaml_output_reads_back() {
    let p = with_fixture();
    let yaml = p.run(&["get", "profile", "frontend", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{yaml:?}");
    let other = Palisade::new();
    other
        .run_with_stdin(&["create", "-f", "-"], &yaml.stdout)
        .expect(0, "Successfully created 1 'profile' resource(s)\n");
    assert_eq!(
        other.run(&["get", "profile", "-o", "json"]).stdout,
        p.run(&["get", "profile", "frontend", "-o", "json"]).stdout
    );
}
}

both_backends! {
fn empty_results() {
    let p = Palisade::new();
    p.run(&["get", "policy", "-o", "yaml"]).expect(0, "[]\n");
    p.run(&["get", "policy", "-o", "json"]).expect(0, "[]\n");
    // As calicoctl: the table's headings, and the blank line after the table.
    p.run(&["get", "policy"]).expect(0, "NAME   \n\n");
}
}

both_backends! {
fn a_missing_name_is_an_error() {
    let p = with_fixture();
    p.run(&["get", "policy", "nothere"]).expect(
        1,
        "Failed to get resources: resource does not exist: Policy(name=nothere)\n",
    );
    p.run(&["get", "hep", "eth1", "--node", "host9"]).expect(
        1,
        "Failed to get resources: resource does not exist: HostEndpoint(node=host9, name=eth1)\n",
    );
}
}

both_backends! {
fn endpoint_identifiers_filter_and_default_to_any() {
    let p = with_fixture();
    p.run(&["get", "wep", "eth0", "--node", "host2"]).expect(
        0,
        &lines(&[
            "NODE    ORCHESTRATOR   WORKLOAD   NAME   ",
            "host2   docker         c2         eth0   ",
            "",
        ]),
    );
    p.run(&[
        "get",
        "wep",
        "-n",
        "host1",
        "--orchestrator",
        "docker",
        "--workload",
        "c1",
    ])
    .expect(
        0,
        &lines(&[
            "NODE    ORCHESTRATOR   WORKLOAD   NAME   ",
            "host1   docker         c1         eth0   ",
            "",
        ]),
    );
    p.run(&["get", "wep", "--workload", "c9"])
        .expect(0, &lines(&["NODE   ORCHESTRATOR   WORKLOAD   NAME   ", ""]));
    p.run(&["get", "pool", "10.0.0.7/16"])
        .expect(0, &lines(&["CIDR          ", "10.0.0.0/16   ", ""]));
}
}

both_backends! {
fn get_by_file_prints_one_table_per_resource() {
    let p = with_fixture();
    let file = p.file(
        "two.yaml",
        "
- apiVersion: v1
  kind: profile
  metadata: {name: frontend}
- apiVersion: v1
  kind: policy
  metadata: {name: allow-web}
",
    );
    p.run(&["get", "-f", &file]).expect(
        0,
        &lines(&[
            "NAME       ",
            "frontend   ",
            "",
            "NAME        ",
            "allow-web   ",
            "",
        ]),
    );
    let missing = p.file(
        "missing.yaml",
        "
apiVersion: v1
kind: profile
metadata: {name: nothere}
",
    );
    p.run(&["get", "-f", &missing]).expect(
        1,
        "Failed to get resources: resource does not exist: Profile(name=nothere)\n",
    );
}
}

both_backends! {
fn unsupported_kinds_and_formats() {
    let p = with_fixture();
    let kinds = "the kinds are profile, policy, workloadEndpoint, hostEndpoint, ipPool and \
                 ipAllocation (or pro, pol, wep, hep, pool)";
    p.run(&["get", "foo"])
        .expect(1, &format!("Resource type 'foo' is not supported; {kinds}\n"));
    p.run(&["get", "bgppeer"])
        .expect(1, &format!("Resource type 'bgppeer' is not supported; {kinds}\n"));
    p.run(&["get", "policy", "-o", "xml"])
        .expect(1, "unrecognized output format 'xml'\n");
    let run = p.run(&["get", "policy", "-o", "custom-columns=NAME"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("not supported by palisade"), "{run:?}");
}
}
