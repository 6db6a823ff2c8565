//! palisade's node container in a test's private dockerd: the image `cargo xtask test`
//! built of the binary under test, started and replaced by `deploy/docker-run.sh` exactly
//! as a user does, with the host-side places (bpffs, run dir, store) pointed at the test's
//! private ones; its log read with `docker logs`, commands run in it with `docker exec`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Cleanup;
use crate::agent_process::{Stats, line_has};
use crate::docker::{Dockerd, PLUGIN_DIR};
use crate::netns::{run, run_ok, unique_name};

/// How long the agent in the container may take to say something.
const PATIENCE: Duration = Duration::from_secs(60);

/// Where the repository is (the tests crate is one of its members).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate is in the repository")
        .to_path_buf()
}

/// `deploy/docker-run.sh`.
pub fn docker_run_script() -> PathBuf {
    repo_root().join("deploy/docker-run.sh")
}

/// Loads the node image `cargo xtask test` built into `docker`; returns its name.
pub fn load_node_image(docker: &Dockerd) -> String {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run the tests with `cargo xtask test`, which builds the \
                 node image of the binary under test and says where it is"
            )
        })
    };
    let archive = variable("PALISADE_NODE_IMAGE_ARCHIVE");
    let image = variable("PALISADE_NODE_IMAGE");
    docker.docker_ok(&["load", "--input", &archive]);
    image
}

/// Tags a new image made from `image` (one more layer, a label): another build of the same
/// binary, for replacing the container with a different image.
pub fn derived_image(docker: &Dockerd, image: &str, tag: &str) -> String {
    let dockerfile = format!("FROM {image}\nLABEL org.palisade.test.rebuilt=\"{tag}\"\n");
    let mut child = docker
        .command(&["build", "--network", "none", "--tag", tag, "-"])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker build");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(dockerfile.as_bytes())
        .expect("write the Dockerfile");
    let out = child.wait_with_output().expect("wait for docker build");
    assert!(out.status.success(), "docker build {tag}: {out:?}");
    tag.to_string()
}

/// What `deploy/docker-run.sh` is given: the image, the container's name, and the
/// environment a user would set.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub image: String,
    pub name: String,
    pub node: String,
    pub datastore: String,
    /// (PALISADE_ETCD_CA, PALISADE_ETCD_CERT, PALISADE_ETCD_KEY) on the host.
    pub etcd_tls: Option<(PathBuf, PathBuf, PathBuf)>,
    pub host_bpffs: PathBuf,
    pub host_run_dir: PathBuf,
    /// The plugin's socket, in [`PLUGIN_DIR`] (dockerd finds plugins only there), with a
    /// name of its own: the plugin's (the network driver's) name.
    pub plugin_socket: PathBuf,
}

impl NodeSettings {
    /// Settings with a unique container and plugin name; the plugin's socket is removed
    /// by `cleanup` (an agent killed with its container leaves it).
    pub fn new(
        cleanup: &mut Cleanup,
        image: &str,
        node: &str,
        datastore: &str,
        host_bpffs: &Path,
        host_run_dir: &Path,
    ) -> NodeSettings {
        let plugin = unique_name("palnode");
        let plugin_socket = Path::new(PLUGIN_DIR).join(format!("{plugin}.sock"));
        let socket = plugin_socket.clone();
        cleanup.defer(
            format!("remove {}", socket.display()),
            move || match std::fs::remove_file(&socket) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        );
        NodeSettings {
            image: image.to_string(),
            name: unique_name("palnode"),
            node: node.to_string(),
            datastore: datastore.to_string(),
            etcd_tls: None,
            host_bpffs: host_bpffs.to_path_buf(),
            host_run_dir: host_run_dir.to_path_buf(),
            plugin_socket,
        }
    }

    /// The plugin's name: `--driver` and `--ipam-driver` of the test's networks.
    pub fn plugin_name(&self) -> String {
        self.plugin_socket
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .expect("the socket has a name")
    }

    /// The environment docker-run.sh gets (DOCKER_HOST aside).
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PALISADE_IMAGE", self.image.clone()),
            ("PALISADE_CONTAINER_NAME", self.name.clone()),
            ("PALISADE_NODE", self.node.clone()),
            ("PALISADE_DATASTORE", self.datastore.clone()),
            ("PALISADE_HOST_BPFFS", self.host_bpffs.display().to_string()),
            (
                "PALISADE_HOST_RUN_DIR",
                self.host_run_dir.display().to_string(),
            ),
            (
                "PALISADE_DOCKER_PLUGIN_SOCKET",
                self.plugin_socket.display().to_string(),
            ),
        ];
        // The node containers share the host's network (and tests run side by side): each
        // agent takes free ports instead of 9099 and 9091.
        env.extend(TEST_ONLY_ADDRESSES.map(|(name, value)| (name, value.to_string())));
        if let Some((ca, cert, key)) = &self.etcd_tls {
            env.push(("PALISADE_ETCD_CA", ca.display().to_string()));
            env.push(("PALISADE_ETCD_CERT", cert.display().to_string()));
            env.push(("PALISADE_ETCD_KEY", key.display().to_string()));
        }
        env
    }
}

/// Settings of the tests' own, not of a deployment: health and metrics on free loopback
/// ports.
pub const TEST_ONLY_ADDRESSES: [(&str, &str); 2] = [
    ("PALISADE_HEALTH_ADDRESS", "127.0.0.1:0"),
    ("PALISADE_METRICS_ADDRESS", "127.0.0.1:0"),
];

/// `deploy/docker-run.sh` against `docker` with `settings` (and `extra` docker options);
/// its output.
pub fn docker_run(docker: &Dockerd, settings: &NodeSettings, extra: &[&str]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(docker_run_script())
        .args(extra)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", docker.socket().display()),
        )
        .stdin(Stdio::null());
    // Only what the test says: nothing of the test process's own PALISADE_* settings.
    for (name, _) in std::env::vars() {
        if name.starts_with("PALISADE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in settings.environment() {
        command.env(name, value);
    }
    command.output().expect("run deploy/docker-run.sh")
}

/// The node container docker-run.sh started; its log is read from Docker.
pub struct NodeContainer<'d> {
    docker: &'d Dockerd,
    pub settings: NodeSettings,
    /// The log lines a `wait_for` looks from.
    mark: usize,
}

impl<'d> NodeContainer<'d> {
    /// Runs docker-run.sh, which must succeed, and waits until the agent in the container
    /// loaded its programs.
    pub fn start(docker: &'d Dockerd, settings: &NodeSettings) -> NodeContainer<'d> {
        let out = docker_run(docker, settings, &[]);
        assert!(
            out.status.success(),
            "deploy/docker-run.sh failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut container = NodeContainer {
            docker,
            settings: settings.clone(),
            mark: 0,
        };
        container.wait_for(&["eBPF programs loaded"]);
        container
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Everything the agent in this container said (`docker logs`).
    pub fn log(&self) -> String {
        let out = self.docker.docker(&["logs", self.name()]);
        let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
        log.push_str(&String::from_utf8_lossy(&out.stderr));
        log
    }

    /// Waits for the next log line (after the one the last `wait_for` returned) with every
    /// needle (see [`line_has`]); returns it.
    pub fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            if let Some(i) = (self.mark..lines.len())
                .find(|&i| needles.iter().all(|needle| line_has(lines[i], needle)))
            {
                self.mark = i + 1;
                return lines[i].to_string();
            }
            assert!(
                Instant::now() < deadline,
                "the node container never logged {needles:?}; it said:\n{log}\n{}",
                self.docker.log_tail()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the agent (of this container) has published the policy of datastore
    /// revision `revision` or a later one. An agent that adopted its predecessor's
    /// attachments does so without attaching anew.
    pub fn wait_published(&mut self, revision: u64) {
        self.wait_enforcing(&[], revision);
    }

    /// Waits until the agent attached to each of `interfaces` and has published the policy
    /// of datastore revision `revision` or a later one.
    pub fn wait_enforcing(&mut self, interfaces: &[String], revision: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.log();
            let attached = interfaces.iter().all(|interface| {
                let needle = format!("interface={interface}");
                log.lines().any(|line| {
                    line_has(line, "enforcing on workload interface") && line_has(line, &needle)
                })
            });
            let published = log.lines().any(|line| {
                line_has(line, "policy published")
                    && line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("revision="))
                        .and_then(|r| r.parse::<u64>().ok())
                        .is_some_and(|r| r >= revision)
            });
            if attached && published {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the node container does not enforce revision {revision} on {interfaces:?}; \
                 it said:\n{log}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker exec <container> ARGS`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["exec", self.name()];
        full.extend_from_slice(args);
        self.docker.docker(&full)
    }

    /// `docker exec <container> ARGS`, which must succeed; its stdout.
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "docker exec {} {args:?}: {}\n{}{}",
            self.name(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `palisade stats` run inside the container, parsed.
    pub fn stats(&self) -> Stats {
        Stats::parse(&self.exec_ok(&["palisade", "stats"]))
    }

    /// `docker inspect` of the container.
    pub fn inspect(&self) -> Value {
        let text = self
            .docker
            .docker_ok(&["container", "inspect", self.name()]);
        let parsed: Value = serde_json::from_str(&text).expect("docker inspect prints JSON");
        parsed[0].clone()
    }

    /// Runs docker-run.sh again with `settings` (the same container name): the user's way to
    /// replace the container, e.g. with a newer image. Returns the new container, after its
    /// agent loaded its programs.
    pub fn replace(self, settings: &NodeSettings) -> NodeContainer<'d> {
        assert_eq!(
            settings.name, self.settings.name,
            "replacing keeps the name"
        );
        NodeContainer::start(self.docker, settings)
    }
}

/// A container's network namespace under a name in /run/netns (`ip netns attach`), so the
/// test's traffic helpers can enter it; the name goes with the cleanup guard (the
/// namespace itself stays the container's).
pub fn attach_netns(cleanup: &mut Cleanup, docker: &Dockerd, container: &str) -> String {
    let pid = docker.docker_ok(&["inspect", "--format", "{{.State.Pid}}", container]);
    let name = unique_name("pcn");
    run_ok("ip", &["netns", "attach", &name, &pid]);
    let undo = name.clone();
    cleanup.defer(format!("ip netns delete {name}"), move || {
        let out = run("ip", &["netns", "delete", &undo]);
        anyhow::ensure!(out.status.success(), "{out:?}");
        Ok(())
    });
    name
}

/// A container's endpoint on `network`: its EndpointID (the workload endpoint's name) and
/// address.
pub fn container_endpoint(docker: &Dockerd, container: &str, network: &str) -> (String, IpAddr) {
    let inspect: Value =
        serde_json::from_str(&docker.docker_ok(&["inspect", container])).expect("JSON");
    let settings = &inspect[0]["NetworkSettings"]["Networks"][network];
    let endpoint = settings["EndpointID"]
        .as_str()
        .unwrap_or_else(|| panic!("{container} has no endpoint on {network}: {inspect}"))
        .to_string();
    let address = settings["IPAddress"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{container} has no address on {network}: {inspect}"));
    (endpoint, address)
}
