//! The node container, as users run it: the image `cargo xtask test` built of the binary
//! under test, started (and replaced) by `deploy/docker-run.sh` on a private real dockerd,
//! the agent and the Docker plugin running only inside it.
//!
//! - The seed's Docker workflow in both variants (profile rules on the embedded store;
//!   labelled profiles and global policies on etcd with TLS and client certificates): every
//!   probe between the containers and a namespace beyond the host equals `palisade trace`,
//!   and `docker exec <container> palisade stats` and `... bpftool map dump pinned ...` work.
//! - Replacing the container (the same image, then another build) under steady allowed
//!   and denied traffic: no allowed packet lost, no denied one through.
//! - `deploy/kubernetes/palisade.yaml` validates against Kubernetes' own schemas, and its
//!   container is the one the Docker test ran (image, privileges, mounts, environment).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use palisade::netplumb::host_interface_name;
use palisade_tests::agent_process::PrivateBpffs;
use palisade_tests::docker::{BUSYBOX_IMAGE, Dockerd, unique_pool_v4, unique_pool_v6};
use palisade_tests::matrix::{Matrix, Peer, Scene};
use palisade_tests::netns::unique_name;
use palisade_tests::node_container::{
    NodeContainer, NodeSettings, attach_netns, container_endpoint, derived_image,
    docker_run_script, load_node_image, repo_root,
};
use palisade_tests::palisade_cli::Datastore;
use palisade_tests::steady_traffic::{
    self, SteadyTraffic, TCP_PORTS, UDP_PORTS, client_and_server,
};
use palisade_tests::topology::add_outside;
use palisade_tests::traffic::{Probe, Services};
use palisade_tests::{Cleanup, require_root};
use serde_json::Value;

#[allow(dead_code)]
#[path = "../../agent/tests/common/seeds.rs"]
mod seeds;

#[path = "../../agent/tests/common/etcd.rs"]
mod etcd;

use etcd::{EtcdServer, TestPki};

const DB_PORT: u16 = 3306;
const DB_OTHER_PORT: u16 = 3307;
const APP_PORT: u16 = 8080;
const SEED_PORTS: [u16; 3] = [DB_PORT, DB_OTHER_PORT, APP_PORT];
const SEED_PROBES: [Probe; 4] = [
    Probe::Tcp(DB_PORT),
    Probe::Tcp(DB_OTHER_PORT),
    Probe::Tcp(APP_PORT),
    Probe::PING,
];

/// The Kubernetes manifest, relative to the repository.
const MANIFEST: &str = "deploy/kubernetes/palisade.yaml";

// ---------------------------------------------------------------------------------------
// The seed's workflow

#[test]
fn seed_with_profile_rules_in_the_node_container_equals_trace() {
    require_root();
    let mut cleanup = Cleanup::new();
    let store = Datastore::new();
    seed_in_node_container(&mut cleanup, &store, None, Variant::ProfileRules);
}

#[test]
fn seed_with_global_policies_on_etcd_over_tls_in_the_node_container_equals_trace() {
    require_root();
    let mut cleanup = Cleanup::new();
    let pki = TestPki::generate();
    let etcd = EtcdServer::start_tls(&pki);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem"),
    );
    // The host's command line names the TLS files in the URL; the container gets them
    // as docker-run.sh's PALISADE_ETCD_* files.
    let store = Datastore::at(&format!(
        "{}?ca={}&cert={}&key={}",
        etcd.url(),
        ca.display(),
        cert.display(),
        key.display()
    ));
    let tls = Some((etcd.url(), (ca, cert, key)));
    let inspected = seed_in_node_container(&mut cleanup, &store, tls, Variant::GlobalPolicies);
    // What Docker ran is the DaemonSet's container (the manifest's datastore is etcd with
    // TLS, as here).
    assert_daemonset_runs(&inspected);
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    ProfileRules,
    GlobalPolicies,
}

/// What Docker ran, for comparing with the DaemonSet: `docker inspect` of the container,
/// and the host paths the test put in place of the defaults.
struct Inspected {
    container: Value,
    host_paths: BTreeMap<String, String>,
    /// Variables the test sets beyond a user's (its plugin's unique name).
    test_env: BTreeSet<String>,
    node: String,
    etcd_files: BTreeMap<String, PathBuf>,
}

/// The seed's steps with the agent in the node container: networks made by its plugin, the
/// seed's policy, two databases and two apps, and a namespace beyond the host; every probe
/// between them compared with `palisade trace`. `etcd` is (URL, TLS files) when the
/// datastore is etcd over TLS; `store` is the host's command line on the same datastore.
fn seed_in_node_container(
    cleanup: &mut Cleanup,
    store: &Datastore,
    etcd: Option<(String, (PathBuf, PathBuf, PathBuf))>,
    variant: Variant,
) -> Inspected {
    let bpffs = PrivateBpffs::mount();
    let run_dir = tempfile::tempdir().expect("a temporary directory");
    let pool = unique_pool_v4();
    store.apply(&format!(
        "apiVersion: v1\nkind: ipPool\nmetadata:\n  cidr: {pool}\n"
    ));
    let docker = Dockerd::start();
    let image = load_node_image(&docker);
    let node = "node1";
    let container_datastore = match &etcd {
        Some((url, _)) => url.clone(),
        None => store.url().to_string(),
    };
    let mut settings = NodeSettings::new(
        cleanup,
        &image,
        node,
        &container_datastore,
        bpffs.path(),
        run_dir.path(),
    );
    settings.etcd_tls = etcd.as_ref().map(|(_, files)| files.clone());
    let mut agent = NodeContainer::start(&docker, &settings);

    let driver = settings.plugin_name();
    for network in ["databases", "apps"] {
        docker.docker_ok(&[
            "network",
            "create",
            "--driver",
            &driver,
            "--ipam-driver",
            &driver,
            network,
        ]);
    }
    match variant {
        Variant::ProfileRules => store.apply(seeds::PROFILES_WITH_RULES),
        Variant::GlobalPolicies => {
            store.apply(seeds::PROFILES_LABELS_ONLY);
            store.create(seeds::GLOBAL_POLICIES);
        }
    }
    let mut peers = Vec::new();
    let mut endpoints = Vec::new();
    for (label, network) in [
        ("db1", "databases"),
        ("db2", "databases"),
        ("app1", "apps"),
        ("app2", "apps"),
    ] {
        let name = unique_name(&label[..2]);
        docker.docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            network,
            BUSYBOX_IMAGE,
            "sleep",
            "100000",
        ]);
        let (endpoint, address) = container_endpoint(&docker, &name, network);
        let netns = attach_netns(cleanup, &docker, &name);
        endpoints.push((label, endpoint.clone()));
        peers.push(Peer {
            label,
            endpoint: Some(endpoint),
            services: Services::start(&netns, &SEED_PORTS, &[]),
            netns,
            ips: vec![address],
        });
    }
    let (outside_v4, outside_v6) = (unique_pool_v4(), unique_pool_v6());
    let outside = add_outside(
        cleanup,
        outside_v4.trim_end_matches(".0/24"),
        outside_v6.trim_end_matches("::/64"),
    );
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable forwarding");
    peers.push(Peer::outside(&outside, &SEED_PORTS, &[]));

    let interfaces: Vec<String> = endpoints
        .iter()
        .map(|(_, endpoint)| host_interface_name(endpoint))
        .collect();
    agent.wait_enforcing(&interfaces, store.revision());
    let title = match variant {
        Variant::ProfileRules => "seed, profile rules, agent in the node container",
        Variant::GlobalPolicies => "seed, global policies on etcd, agent in the node container",
    };
    let matrix = Matrix::run(title, store, &peers, &SEED_PROBES, &[false]);
    // The seed's own words, as a check on the check.
    assert!(matrix.allows("app1", "db2", Probe::Tcp(DB_PORT)));
    assert!(!matrix.allows("app1", "db2", Probe::Tcp(DB_OTHER_PORT)));
    assert!(matrix.allows("db1", "db2", Probe::Tcp(DB_OTHER_PORT)));
    assert!(!matrix.allows("db1", "app1", Probe::Tcp(APP_PORT)));
    assert!(!matrix.allows("outside", "db1", Probe::Tcp(DB_PORT)));

    // Inspection inside the container, with no options: every path is the default.
    let stats = agent.stats();
    let db1 = &endpoints[0].1;
    let denied = stats.endpoint(db1, "ingress").denied_packets;
    assert!(
        denied > 0,
        "palisade stats in the container shows no denied packets to db1:\n{}",
        stats.text
    );
    let maps = format!("/sys/fs/bpf/palisade/{}/maps", palisade_common::ABI_VERSION);
    let config = agent.exec_ok(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        &format!("{maps}/PAL_CONFIG"),
    ]);
    assert!(config.contains("generation"), "{config}");
    let stats_map = agent.exec_ok(&[
        "bpftool",
        "--json",
        "map",
        "dump",
        "pinned",
        &format!("{maps}/PAL_STATS"),
    ]);
    serde_json::from_str::<Value>(&stats_map)
        .unwrap_or_else(|e| panic!("bpftool --json printed no JSON ({e}): {stats_map}"));

    let mut host_paths = BTreeMap::new();
    host_paths.insert(
        "/sys/fs/bpf".to_string(),
        bpffs.path().display().to_string(),
    );
    host_paths.insert(
        "/run/palisade".to_string(),
        run_dir.path().display().to_string(),
    );
    host_paths.insert(
        "/var/run/docker.sock".to_string(),
        docker.socket().display().to_string(),
    );
    let etcd_files = etcd
        .map(|(_, (ca, cert, key))| {
            BTreeMap::from([
                ("ca.crt".to_string(), ca),
                ("tls.crt".to_string(), cert),
                ("tls.key".to_string(), key),
            ])
        })
        .unwrap_or_default();
    let inspected = Inspected {
        container: agent.inspect(),
        host_paths,
        test_env: ["PALISADE_DOCKER_PLUGIN_SOCKET"]
            .into_iter()
            .chain(palisade_tests::node_container::TEST_ONLY_ADDRESSES.map(|(name, _)| name))
            .map(String::from)
            .collect(),
        node: node.to_string(),
        etcd_files,
    };
    drop(peers);
    inspected
}

// ---------------------------------------------------------------------------------------
// Upgrade by replacing the container

#[test]
fn replacing_the_node_container_loses_no_allowed_packet_and_passes_no_denied_one() {
    require_root();
    let mut cleanup = Cleanup::new();
    let ips = ["10.244.9.1", "10.244.9.2"];
    let scene = Scene::build(
        &mut cleanup,
        "node-replace",
        &client_and_server(&ips),
        None,
        &TCP_PORTS,
        &UDP_PORTS,
    );
    scene.store.apply(steady_traffic::POLICY);
    let docker = Dockerd::start();
    let image = load_node_image(&docker);
    let settings = NodeSettings::new(
        &mut cleanup,
        &image,
        &scene.home.node,
        scene.store.url(),
        scene.home.bpffs.path(),
        scene.home.run_dir(),
    );
    let interfaces: Vec<String> = scene
        .workloads
        .iter()
        .map(|w| w.interface.clone())
        .collect();
    let revision = scene.store.revision();
    let mut node = NodeContainer::start(&docker, &settings);
    node.wait_enforcing(&interfaces, revision);

    let traffic = SteadyTraffic::start(&scene);
    let phase = Duration::from_millis(300);
    thread::sleep(phase);

    // The same image again, then another build: each replacement stops the old agent
    // (SIGTERM), removes its container and starts the new one, which adopts the pins.
    let rebuilt = derived_image(&docker, &image, "palisade:rebuilt");
    let mut took = Vec::new();
    for image in [image.clone(), rebuilt.clone()] {
        let started = Instant::now();
        let next = NodeSettings {
            image: image.clone(),
            ..settings.clone()
        };
        node = node.replace(&next);
        node.wait_for(&[
            "attachments adopted",
            "interfaces=2",
            "converted=0",
            "removed=0",
        ]);
        node.wait_published(revision);
        took.push(started.elapsed());
        let running = node.inspect();
        assert_eq!(running["Config"]["Image"], Value::from(image.as_str()));
        thread::sleep(phase);
    }

    let report = traffic.stop(&scene);
    report.check(&format!(
        "node container replaced by the same image, then by {rebuilt}: enforcing again \
         after {took:?}"
    ));
    assert!(
        report.denied.len() > 50,
        "only {} denied attempts",
        report.denied.len()
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes

/// The manifest's documents, parsed.
fn manifest() -> Vec<Value> {
    let path = repo_root().join(MANIFEST);
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| {
            serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn document<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{MANIFEST} has no {kind}"))
}

/// `kubernetes-validate --strict FILE`: its success and what it said.
fn kubernetes_validate(file: &Path) -> (bool, String) {
    let program = std::env::var("PALISADE_KUBERNETES_VALIDATE").unwrap_or_else(|_| {
        panic!(
            "PALISADE_KUBERNETES_VALIDATE is not set: run the tests with `cargo xtask test`, \
             whose bootstrap installs kubernetes-validate"
        )
    });
    let out = Command::new(&program)
        .arg("--strict")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn the_kubernetes_manifest_validates_against_kubernetes_schemas() {
    let path = repo_root().join(MANIFEST);
    let (valid, said) = kubernetes_validate(&path);
    assert!(valid, "{MANIFEST} does not validate:\n{said}");
    for kind in ["configmap", "secret", "daemonset"] {
        assert!(
            said.contains(&format!("passed for resource {kind}/")),
            "{said}"
        );
    }

    // The validator does reject what Kubernetes would: a misspelt field, a wrong type.
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (what, broken) in [
        (
            "a misspelt field",
            text.replace("hostNetwork: true", "hostNetwerk: true"),
        ),
        (
            "a wrong type",
            text.replace("privileged: true", "privileged: \"yes\""),
        ),
    ] {
        assert_ne!(broken, text);
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).expect("write the broken manifest");
        let (valid, said) = kubernetes_validate(&file);
        assert!(!valid, "{what} passed validation:\n{said}");
    }
}

#[test]
fn the_daemonset_follows_the_node_agent_conventions() {
    let documents = manifest();
    let daemonset = document(&documents, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "tolerations for every taint: {}",
        pod["tolerations"]
    );
    assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    let env = |name: &str| -> &Value {
        container["env"]
            .as_array()
            .and_then(|env| env.iter().find(|e| e["name"] == name))
            .unwrap_or_else(|| panic!("no {name} in the container's env"))
    };
    assert_eq!(
        env("PALISADE_NODE")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    let datastore = &env("PALISADE_DATASTORE")["valueFrom"]["configMapKeyRef"];
    let config_map = document(&documents, "ConfigMap");
    assert_eq!(datastore["name"], config_map["metadata"]["name"]);
    assert!(
        config_map["data"][datastore["key"].as_str().expect("a key")]
            .as_str()
            .is_some_and(|url| url.starts_with("etcd://")),
        "{config_map}"
    );
    let secret = document(&documents, "Secret");
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["secret"]["secretName"] == secret["metadata"]["name"]),
        "the etcd certificates come from the Secret"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(get["port"], 9099, "{probe}");
        assert_eq!(get["host"], "127.0.0.1", "{probe}");
    }
    let requests = &container["resources"]["requests"];
    assert!(requests["cpu"].is_string() && requests["memory"].is_string());
}

#[test]
fn docker_run_and_the_daemonset_run_this_version() {
    let image = format!("palisade:{}", env!("CARGO_PKG_VERSION"));
    let documents = manifest();
    let container = &document(&documents, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str());
    let script = std::fs::read_to_string(docker_run_script()).expect("read docker-run.sh");
    assert!(
        script.contains(&format!("image=${{PALISADE_IMAGE:-{image}}}")),
        "docker-run.sh's default image is not {image}"
    );
}

/// Asserts that the container Docker ran (see [`Inspected`]) is the DaemonSet's: the same
/// image and command, privileged, in the host's network and PID namespaces, restarted
/// always, with the same mounts (host paths, container paths, read-only or not,
/// propagation; the Secret's files where the DaemonSet mounts the Secret) and the same
/// environment.
fn assert_daemonset_runs(inspected: &Inspected) {
    let documents = manifest();
    let daemonset = document(&documents, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let spec = &containers[0];
    let docker = &inspected.container;
    let host = &docker["HostConfig"];

    assert_eq!(docker["Config"]["Image"], spec["image"]);
    assert_eq!(docker["Config"]["Cmd"], spec["command"]);
    assert_eq!(host["Privileged"], spec["securityContext"]["privileged"]);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(host["NetworkMode"], "host");
    assert_eq!(pod["hostPID"], true);
    assert_eq!(host["PidMode"], "host");
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(host["RestartPolicy"]["Name"], "always");

    // Mounts: (container path) -> (host path, read-only, propagation).
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("a volume name"), v))
        .collect();
    let secret = document(&documents, "Secret");
    let mut expected: BTreeMap<String, (String, bool, String)> = BTreeMap::new();
    for mount in spec["volumeMounts"].as_array().expect("volumeMounts") {
        let path = mount["mountPath"].as_str().expect("a mountPath");
        let read_only = mount["readOnly"].as_bool().unwrap_or(false);
        let propagation = match mount["mountPropagation"].as_str().unwrap_or("None") {
            "Bidirectional" => "rshared",
            "HostToContainer" => "rslave",
            _ => "rprivate",
        };
        let volume = volumes[mount["name"].as_str().expect("a volume")];
        if let Some(host_path) = volume["hostPath"]["path"].as_str() {
            let source = inspected
                .host_paths
                .get(host_path)
                .cloned()
                .unwrap_or_else(|| host_path.to_string());
            expected.insert(
                path.to_string(),
                (source, read_only, propagation.to_string()),
            );
        } else if volume["secret"]["secretName"] == secret["metadata"]["name"] {
            // The Secret's keys are files in the mount; docker-run.sh mounts each file.
            let keys: BTreeSet<&String> = secret["stringData"]
                .as_object()
                .expect("the Secret's stringData")
                .keys()
                .collect();
            assert_eq!(
                keys,
                inspected.etcd_files.keys().collect(),
                "the Secret's files"
            );
            for (key, file) in &inspected.etcd_files {
                expected.insert(
                    format!("{path}/{key}"),
                    (
                        file.display().to_string(),
                        read_only,
                        propagation.to_string(),
                    ),
                );
            }
        } else {
            panic!("volume {volume} is neither a hostPath nor the Secret");
        }
    }
    let ran: BTreeMap<String, (String, bool, String)> = docker["Mounts"]
        .as_array()
        .expect("Mounts")
        .iter()
        .map(|m| {
            assert_eq!(m["Type"], "bind", "{m}");
            (
                m["Destination"].as_str().expect("Destination").to_string(),
                (
                    m["Source"].as_str().expect("Source").to_string(),
                    !m["RW"].as_bool().expect("RW"),
                    m["Propagation"].as_str().expect("Propagation").to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(
        ran, expected,
        "docker-run.sh's mounts (left) and the DaemonSet's (right) differ"
    );

    // Environment: the same PALISADE_* variables; fixed values equal; the node's name and
    // the datastore where the DaemonSet takes them from the pod and the ConfigMap.
    let ran_env: BTreeMap<String, String> = docker["Config"]["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .filter_map(|e| e.as_str()?.split_once('='))
        .filter(|(name, _)| name.starts_with("PALISADE_") && !inspected.test_env.contains(*name))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let config_map = document(&documents, "ConfigMap");
    let mut names = BTreeSet::new();
    for variable in spec["env"].as_array().expect("env") {
        let name = variable["name"].as_str().expect("a name");
        names.insert(name.to_string());
        let value = ran_env
            .get(name)
            .unwrap_or_else(|| panic!("docker-run.sh did not set {name}: {ran_env:?}"));
        if let Some(fixed) = variable["value"].as_str() {
            assert_eq!(value, fixed, "{name}");
        } else if variable["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName" {
            assert_eq!(value, &inspected.node, "{name}");
        } else if let Some(key) = variable["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            let template = config_map["data"][key].as_str().expect("a ConfigMap value");
            let scheme = |url: &str| url.split("://").next().map(str::to_string);
            assert_eq!(
                scheme(value),
                scheme(template),
                "{name}: {value} / {template}"
            );
        } else {
            panic!("{name}: no value the test knows how to compare");
        }
    }
    assert_eq!(
        ran_env.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "docker-run.sh's PALISADE_* variables (left) and the DaemonSet's (right)"
    );
}

/// The container docker-run.sh starts with the test's settings only, for the script's own
/// error handling: a bad datastore URL and a missing TLS file are refused before anything
/// runs, naming the variable.
#[test]
fn docker_run_refuses_bad_settings_naming_the_variable() {
    require_root();
    let mut cleanup = Cleanup::new();
    let docker = Dockerd::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = NodeSettings::new(
        &mut cleanup,
        "palisade:not-loaded",
        "node1",
        "file:///nonexistent/store",
        dir.path(),
        dir.path(),
    );
    let cases = [
        (
            NodeSettings {
                datastore: "ftp://somewhere".to_string(),
                ..base.clone()
            },
            "PALISADE_DATASTORE=ftp://somewhere",
        ),
        (
            NodeSettings {
                datastore: "etcd://127.0.0.1:1".to_string(),
                etcd_tls: Some((
                    dir.path().join("missing-ca.pem"),
                    dir.path().join("c"),
                    dir.path().join("k"),
                )),
                ..base.clone()
            },
            "PALISADE_ETCD_CA=",
        ),
        (base.clone(), "no image palisade:not-loaded"),
    ];
    for (settings, says) in cases {
        let out = palisade_tests::node_container::docker_run(&docker, &settings, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
        let listed = docker.docker_ok(&["ps", "-aq"]);
        assert!(listed.is_empty(), "a container was created: {listed}");
    }
    assert!(
        !Path::new("/nonexistent/store").exists(),
        "a refused run made the store's directory"
    );
}
