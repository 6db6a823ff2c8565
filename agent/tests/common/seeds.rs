//! The user's example (shared/seeds/000_*.txt), verbatim: profiles for the `databases`
//! and `apps` Docker networks, with rules (first variant) or with labels only plus two
//! global policies (second variant), and the "multiple networks" extension.

/// Variant 1: policy applied directly by the profiles (`calicoctl apply -f -`).
pub const PROFILES_WITH_RULES: &str = r#"- apiVersion: v1
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
"#;

/// Variant 2, step 2: profiles with labels only (`calicoctl apply -f -`).
pub const PROFILES_LABELS_ONLY: &str = r#"- apiVersion: v1
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
"#;

/// Variant 2, step 3: the global policies (`calicoctl create -f -`).
pub const GLOBAL_POLICIES: &str = r#"- apiVersion: v1
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
"#;

/// "Multiple networks": the `backups` and `database-backup` networks' profiles and the
/// `backupnetwork` policy allowing full access between everything labelled `backup = true`.
pub const MULTIPLE_NETWORKS: &str = r#"- apiVersion: v1
  kind: profile
  metadata:
    name: backups
    labels:
      backup: "true"
- apiVersion: v1
  kind: profile
  metadata:
    name: database-backup
    labels:
      role: database
      backup: "true"
- apiVersion: v1
  kind: policy
  metadata:
    name: backupnetwork
  spec:
    order: 10
    selector: backup == 'true'
    ingress:
    - action: allow
      source:
        selector: backup == 'true'
    egress:
    - action: allow
      destination:
        selector: backup == 'true'
"#;

/// Workload endpoints on the seed's networks: two databases, two apps.
pub fn endpoints_yaml(node: &str) -> String {
    let mut out = String::new();
    for (name, ip, profile) in [
        ("db1", "192.168.0.11", "databases"),
        ("db2", "192.168.0.12", "databases"),
        ("app1", "192.168.0.21", "apps"),
        ("app2", "192.168.0.22", "apps"),
    ] {
        out += &format!(
            "- apiVersion: v1
  kind: workloadEndpoint
  metadata:
    name: {name}
    node: {node}
    orchestrator: libnetwork
    workload: libnetwork
  spec:
    interfaceName: cali{name}
    ipNetworks: [{ip}/32]
    profiles: [{profile}]
"
        );
    }
    out
}

/// An address outside every endpoint (TEST-NET-2; only evaluated, never sent to).
pub const OUTSIDE_IP: &str = "198.51.100.7";
