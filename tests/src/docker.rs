//! A private Docker daemon, palisade's Docker plugin as a process, and a client of the
//! plugin protocol, for the Docker tests.
//!
//! Every test gets its own `dockerd` (vfs storage, no iptables, no default bridge, its own
//! data root, exec root, API socket, pid file and containerd namespace) so tests run in
//! parallel and leave the host's Docker alone. Plugins are a different matter: dockerd
//! finds them only in the fixed directories `/run/docker/plugins`, `/etc/docker/plugins`
//! and `/usr/lib/docker/plugins` (moby `pkg/plugins/discovery_unix.go`; only a rootless
//! daemon looks elsewhere), so every test's plugin gets a unique name instead
//! ([`crate::netns::unique_name`]), and with it a socket of its own in `/run/docker/plugins`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::agent_process::telemetry_options;
use crate::netns::unique_name;
use crate::palisade_binary;

/// The image every test container runs: busybox-static's binary and its applet links.
pub const BUSYBOX_IMAGE: &str = "palisade-busybox:test";

/// Where dockerd looks for plugin sockets.
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// How long a daemon or plugin may take to come up or go down before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// An IPv4 pool (/24 of 10.0.0.0/8) that no other test of this process uses, and
/// probably no other process's: host routes to workload addresses are global.
pub fn unique_pool_v4() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.0/24", 100 + n % 100, std::process::id() % 256)
}

/// An IPv6 pool (/64 of fd00::/8) in the manner of [`unique_pool_v4`].
pub fn unique_pool_v6() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("fd5a:{:x}:{n:x}::/64", std::process::id() % 0xffff)
}

/// A file datastore in a temporary directory, written through the CLI and read through
/// the library.
pub struct PrivateStore {
    pub dir: tempfile::TempDir,
    pub url: String,
}

impl PrivateStore {
    pub fn new() -> PrivateStore {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let url = format!("file://{}", dir.path().join("store").display());
        PrivateStore { dir, url }
    }

    /// `palisade ARGS` on this store with `stdin`; its output.
    pub fn palisade(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(palisade_binary())
            .args(["--datastore", &self.url])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run palisade");
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("cannot write palisade's stdin");
        child.wait_with_output().expect("cannot wait for palisade")
    }

    /// `palisade ARGS`, which must succeed; its stdout.
    pub fn palisade_ok(&self, args: &[&str]) -> String {
        let out = self.palisade(args, "");
        assert!(out.status.success(), "palisade {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `palisade apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        let out = self.palisade(&["apply", "-f", "-"], yaml);
        assert!(out.status.success(), "apply failed: {out:?}");
    }

    /// Everything in the store, with its revision.
    pub fn snapshot(&self) -> palisade::store::Snapshot {
        let runtime = tokio::runtime::Runtime::new().expect("cannot start a tokio runtime");
        runtime.block_on(async {
            let store = palisade::store::open(&self.url)
                .await
                .expect("cannot open the store");
            store.list(None).await.expect("cannot list the store")
        })
    }

    /// The resources of one kind.
    pub fn resources(&self, kind: palisade::model::Kind) -> Vec<palisade::model::Resource> {
        self.snapshot()
            .resources
            .into_iter()
            .filter(|r| r.kind() == kind)
            .collect()
    }
}

impl Default for PrivateStore {
    fn default() -> Self {
        PrivateStore::new()
    }
}

/// A private dockerd, stopped and removed with everything it made on drop, also when the
/// test panics.
pub struct Dockerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts the daemon, waits until it answers, and imports [`BUSYBOX_IMAGE`].
    pub fn start() -> Dockerd {
        for tool in ["dockerd", "docker", "busybox", "tar"] {
            assert!(
                which(tool).is_some(),
                "`{tool}` is not installed; `cargo xtask bootstrap` installs docker.io and busybox-static"
            );
        }
        // Short: the daemon's and containerd's socket paths must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pald")
            .tempdir_in("/tmp")
            .expect("cannot create the daemon's directory");
        let root = dir.path();
        let socket = root.join("docker.sock");
        fs::write(root.join("daemon.json"), daemon_config().to_string())
            .expect("cannot write daemon.json");
        let namespace = unique_name("paltest");
        let log = fs::File::create(root.join("dockerd.log")).expect("cannot create dockerd.log");
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
            ])
            // Every daemon would otherwise create the same docker0.
            .args(["--bridge", "none", "--ip-masq=false"])
            // Safe even if a system containerd is there to be shared.
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}p")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd");
        let daemon = Dockerd {
            dir,
            socket,
            child: Some(child),
        };
        daemon.wait_until_up();
        daemon.import_busybox();
        daemon
    }

    /// The daemon's API socket (`palisade docker-plugin --docker-socket`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `docker ARGS` against this daemon, to be run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("client"))
            .args(args);
        command
    }

    /// `docker ARGS` against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cannot run docker")
    }

    /// `docker ARGS`, which must succeed; its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker ARGS`, which must fail; its stderr.
    pub fn docker_fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded but should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// The end of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!("--- dockerd log (end) ---\n{}", lines[start..].join("\n"))
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.docker(&["version"]).status.success() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not come up\n{}", self.log_tail());
    }

    fn import_busybox(&self) {
        let busybox = which("busybox").expect("busybox is checked above");
        let rootfs = self.dir.path().join("rootfs");
        let bin = rootfs.join("bin");
        fs::create_dir_all(&bin).expect("cannot create the image's /bin");
        fs::copy(&busybox, bin.join("busybox")).expect("cannot copy busybox");
        let list = Command::new(&busybox)
            .arg("--list")
            .output()
            .expect("cannot run busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" && !applet.is_empty() {
                symlink("busybox", bin.join(applet)).expect("cannot link an applet");
            }
        }
        let tar = self.dir.path().join("busybox.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("cannot run tar");
        assert!(status.success(), "tar of the busybox root failed");
        let tar = tar.display().to_string();
        self.docker_ok(&["import", "--change", r#"CMD ["sh"]"#, &tar, BUSYBOX_IMAGE]);
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Containers first, while their plugin may still be there to undo its part.
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            self.docker(&["rm", "-f", id]);
        }
        let networks = self.docker(&["network", "ls", "-q", "--filter", "type=custom"]);
        for id in String::from_utf8_lossy(&networks.stdout).split_whitespace() {
            self.docker(&["network", "rm", id]);
        }
        terminate(&mut child, "dockerd");
        // dockerd stops the containerd it started; make sure, if it was killed.
        let containerd_pid = self.dir.path().join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(containerd_pid)
            .ok()
            .and_then(|p| p.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_below(self.dir.path());
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The daemon's configuration. Where this machine's capability bounding set lacks some
/// capability the kernel knows, `--privileged` containers (the node container) cannot
/// start with Docker 20.10's runc ("unable to apply caps: operation not permitted": Docker
/// asks for all of them); there the daemon runs containers through
/// `tests/support/runc-within-bounding-set`, which asks runc for the bounding set's
/// capabilities only, which is all any process here can have.
fn daemon_config() -> serde_json::Value {
    if bounding_set_is_complete() {
        return serde_json::json!({});
    }
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("support/runc-within-bounding-set");
    serde_json::json!({
        "runtimes": {"runc-within-bounding-set": {"path": runtime}},
        "default-runtime": "runc-within-bounding-set",
    })
}

/// Whether this process's capability bounding set has every capability the kernel knows.
fn bounding_set_is_complete() -> bool {
    let last: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .expect("read /proc/sys/kernel/cap_last_cap");
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .expect("CapBnd in /proc/self/status");
    let all = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    bounding & all == all
}

/// `palisade docker-plugin` as a process, on a socket of its own in [`PLUGIN_DIR`].
pub struct PluginProcess {
    name: String,
    datastore: String,
    node: String,
    docker_socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PluginProcess {
    /// Starts a plugin named `name` (its socket is `/run/docker/plugins/<name>.sock`) on
    /// `datastore` for `node`, and waits until it answers.
    pub fn start(
        name: &str,
        datastore: &str,
        node: &str,
        docker_socket: &Path,
        log_dir: &Path,
    ) -> PluginProcess {
        let mut plugin = PluginProcess {
            name: name.to_string(),
            datastore: datastore.to_string(),
            node: node.to_string(),
            docker_socket: docker_socket.to_path_buf(),
            log: log_dir.join(format!("{name}.log")),
            child: None,
        };
        plugin.restart();
        plugin
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn socket(&self) -> PathBuf {
        Path::new(PLUGIN_DIR).join(format!("{}.sock", self.name))
    }

    /// Everything the plugin logged so far (all of its runs).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the plugin (SIGTERM) and checks that it removed its socket.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "palisade docker-plugin");
            assert!(
                !self.socket().exists(),
                "the plugin left its socket {} behind",
                self.socket().display()
            );
        }
    }

    /// Starts the plugin again (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("cannot open the plugin's log");
        let child = Command::new(palisade_binary())
            .args([
                "--datastore",
                &self.datastore,
                "docker-plugin",
                "--node",
                &self.node,
            ])
            .arg("--socket")
            .arg(self.socket())
            .arg("--docker-socket")
            .arg(&self.docker_socket)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start palisade docker-plugin");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the plugin exited with {status}:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the plugin did not listen on {}:\n{}",
            self.socket().display(),
            self.log()
        );
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "palisade docker-plugin");
        }
        let _ = fs::remove_file(self.socket());
    }
}

/// Put into an agent's collected log at each start.
const RESTART_MARK: &str = "--- (re)start ---";

/// `palisade agent` as a process for the Docker tests, with a private bpffs and run
/// directory in `dir`, its log lines collected as they come.
pub struct AgentProcess {
    datastore: String,
    node: String,
    bpffs: PathBuf,
    run_dir: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    child: Option<Child>,
}

impl AgentProcess {
    pub fn start(datastore: &str, node: &str, dir: &Path) -> AgentProcess {
        let bpffs = dir.join("bpffs");
        let run_dir = dir.join("run");
        for d in [&bpffs, &run_dir] {
            fs::create_dir_all(d).expect("cannot create the agent's directories");
        }
        let mut agent = AgentProcess {
            datastore: datastore.to_string(),
            node: node.to_string(),
            bpffs,
            run_dir,
            lines: Arc::new(Mutex::new(Vec::new())),
            child: None,
        };
        agent.restart();
        agent
    }

    /// The agent's private bpffs (for `palisade stats --bpffs`).
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// The agent's run directory (for `palisade stats --run-dir`).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Stops the agent (SIGTERM); what it pinned stays, and keeps enforcing.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, "palisade agent");
        }
    }

    /// Starts the agent again (stopping it first if it runs) and waits until its eBPF
    /// programs are loaded.
    pub fn restart(&mut self) {
        self.stop();
        self.lines_mut().push(RESTART_MARK.to_string());
        let mut child = Command::new(palisade_binary())
            .args([
                "--datastore",
                &self.datastore,
                "agent",
                "--no-docker-plugin",
                "--node",
                &self.node,
            ])
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(telemetry_options(&[]))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start palisade agent");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&self.lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        self.child = Some(child);
        self.wait_for("its eBPF programs loaded", |line| {
            line.contains("eBPF programs loaded")
        });
    }

    /// Waits until a log line of the current run (or of any run, if `any_run`) satisfies
    /// `found`.
    fn wait_for_line(&self, what: &str, any_run: bool, found: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            {
                let lines = self.lines_mut();
                let start = match any_run {
                    true => 0,
                    false => lines.iter().rposition(|l| l == RESTART_MARK).unwrap_or(0),
                };
                if lines[start..].iter().any(|l| found(l)) {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent never logged {what}; it said:\n{}", self.log());
    }

    /// Waits until a log line of the current run satisfies `found`.
    pub fn wait_for(&self, what: &str, found: impl Fn(&str) -> bool) {
        self.wait_for_line(what, false, found);
    }

    /// Waits until the agent enforces on each of `interfaces` and has published the
    /// policy of store revision `revision` (or a later one). An interface counts once any
    /// run of the agent attached to it: a restarted agent adopts the pinned attachments.
    pub fn wait_enforcing(&self, interfaces: &[String], revision: u64) {
        for interface in interfaces {
            let needle = format!("interface={interface} ");
            self.wait_for_line(&format!("enforcing on {interface}"), true, |line| {
                line.contains("enforcing on workload interface") && line.contains(&needle)
            });
        }
        self.wait_for(
            &format!("a policy published at revision {revision}"),
            |line| {
                line.contains("policy published")
                    && line
                        .split_whitespace()
                        .find_map(|field| field.strip_prefix("revision="))
                        .and_then(|r| r.parse::<u64>().ok())
                        .is_some_and(|r| r >= revision)
            },
        );
    }

    pub fn log(&self) -> String {
        self.lines_mut().join("\n")
    }

    fn lines_mut(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
        // The pins (and with them the programs on any interface left) go with the mount.
        unmount_below(&self.bpffs);
    }
}

/// A plugin's answer: HTTP status and JSON body (`null` if the body is not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginReply {
    pub status: u16,
    pub body: serde_json::Value,
}

/// POSTs `body` to `/<method>` on a plugin socket, as dockerd does.
pub fn plugin_call(socket: &Path, method: &str, body: &str) -> PluginReply {
    let mut stream = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("cannot set a read timeout");
    let request = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("cannot send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("cannot read the reply");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    PluginReply {
        status,
        body: serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|path| path.is_file())
    })
}

/// SIGTERM, then SIGKILL if the process is still there after a while.
fn terminate(child: &mut Child, what: &str) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; the child is not reaped yet, so the pid
    // is still its own.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{what} did not stop on SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Detaches every mount at or below `dir` (deepest first): dockerd leaves its network
/// namespaces bind-mounted under its exec root.
fn unmount_below(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        if let Ok(path) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) {
            // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
