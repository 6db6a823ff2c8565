//! `palisade agent` as a child process of a test, with a private bpffs and run directory, so
//! that tests running at once each have their own maps, pins and counters.
//!
//! [`AgentHome`] is what outlives one agent process (the bpffs with the pins, the run
//! directory, the datastore and node it follows): a restarted agent starts from the same
//! home and adopts what the last one left. [`AgentProcess`] is one run, killed on drop; its
//! log lines (stderr) are kept so that tests can wait for them and failures can show them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::palisade_binary;

/// Where test agents serve health and metrics unless told otherwise: a port the kernel
/// picks, so that agents of tests running at once never compete for 9099 and 9091 (see
/// [`AgentProcess::serving`]).
pub const ANY_LOOPBACK_PORT: &str = "127.0.0.1:0";

/// The health and metrics options a test agent gets: [`ANY_LOOPBACK_PORT`] for each that
/// `extra` does not set.
pub fn telemetry_options(extra: &[&str]) -> Vec<&'static str> {
    ["--health-address", "--metrics-address"]
        .into_iter()
        .filter(|flag| !extra.contains(flag))
        .flat_map(|flag| [flag, ANY_LOOPBACK_PORT])
        .collect()
}

/// An upper bound for the agent to say something, so a broken agent fails the test instead
/// of hanging it; not a speed requirement.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A bpffs mounted on a private temporary directory, unmounted on drop (which releases
/// every pin in it: the maps, programs and links of the agents that used it).
pub struct PrivateBpffs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrivateBpffs {
    pub fn mount() -> PrivateBpffs {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("bpffs");
        std::fs::create_dir(&path).expect("create the bpffs mount point");
        let mounted = palisade::dataplane::bpffs::ensure_bpffs_mounted(&path)
            .unwrap_or_else(|e| panic!("mount bpffs at {}: {e}", path.display()));
        assert!(mounted, "a bpffs was already mounted at {}", path.display());
        PrivateBpffs { path, _dir: dir }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = std::io::Error::last_os_error();
            eprintln!("cleanup: unmount bpffs {}: {err}", self.path.display());
            if !thread::panicking() {
                panic!("cannot unmount bpffs {}: {err}", self.path.display());
            }
        }
    }
}

/// What an agent keeps across restarts: its bpffs, run directory, datastore and node, and
/// the network namespace it runs in (when it plays a host of its own).
pub struct AgentHome {
    pub bpffs: PrivateBpffs,
    run_dir: tempfile::TempDir,
    pub datastore: String,
    /// Global options that go with the datastore (`--etcd-ca FILE`, ...).
    datastore_options: Vec<String>,
    pub node: String,
    netns: Option<String>,
}

impl AgentHome {
    pub fn new(datastore: &str, node: &str) -> AgentHome {
        AgentHome {
            bpffs: PrivateBpffs::mount(),
            run_dir: tempfile::tempdir().expect("a temporary directory"),
            datastore: datastore.to_string(),
            datastore_options: Vec::new(),
            node: node.to_string(),
            netns: None,
        }
    }

    /// The same home with `options` (`--etcd-ca FILE`, ...) given to every agent it starts.
    pub fn with_datastore_options(mut self, options: &[&str]) -> AgentHome {
        self.datastore_options = options.iter().map(|o| o.to_string()).collect();
        self
    }

    /// An agent that runs inside the network namespace `netns` (as `ip netns exec` runs it).
    pub fn in_netns(datastore: &str, node: &str, netns: &str) -> AgentHome {
        AgentHome {
            netns: Some(netns.to_string()),
            ..AgentHome::new(datastore, node)
        }
    }

    pub fn run_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// Starts `palisade agent` on this home, with `extra` arguments.
    pub fn start(&self, extra: &[&str]) -> AgentProcess {
        self.start_binary(&palisade_binary(), extra)
    }

    /// [`AgentHome::start`] with another build of palisade (`binary`).
    pub fn start_binary(&self, binary: &Path, extra: &[&str]) -> AgentProcess {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--datastore", &self.datastore])
            .args(&self.datastore_options)
            .args(["agent", "--no-docker-plugin", "--node", &self.node])
            .arg("--bpffs")
            .arg(self.bpffs.path())
            .arg("--run-dir")
            .arg(self.run_dir())
            .args(telemetry_options(extra))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade agent");
        let stderr = child.stderr.take().expect("the agent's stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        AgentProcess {
            child: Some(child),
            lines,
            seen: Vec::new(),
            mark: 0,
        }
    }

    /// The agent's pinned `PAL_CONFIG`, opened beside the agent (as bpftool would): its
    /// generation flips once a new policy is complete in the maps.
    pub fn pinned_config(&self) -> PinnedConfig {
        let pins = palisade::dataplane::pin_dir(self.bpffs.path());
        let path = palisade::dataplane::map_pin_dir(&pins).join(palisade_common::map_names::CONFIG);
        let data = aya::maps::MapData::from_pin(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        PinnedConfig(
            aya::maps::Array::try_from(aya::maps::Map::Array(data))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
    }

    /// `palisade stats [ENDPOINT]` on this home's maps and rule names, parsed; panics unless
    /// it succeeds.
    pub fn stats(&self, endpoint: Option<&str>) -> Stats {
        Stats::parse(&self.stats_text(endpoint))
    }

    /// `palisade stats [ENDPOINT]` as it prints it (in the agent's namespace, where the
    /// interfaces it names are); panics unless it succeeds.
    pub fn stats_text(&self, endpoint: Option<&str>) -> String {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(palisade_binary());
                c
            }
            None => Command::new(palisade_binary()),
        };
        command
            .args(["--datastore", &self.datastore])
            .args(&self.datastore_options)
            .arg("stats")
            .arg("--bpffs")
            .arg(self.bpffs.path())
            .arg("--run-dir")
            .arg(self.run_dir());
        command.args(endpoint);
        let out = command.output().expect("run palisade stats");
        assert!(
            out.status.success(),
            "palisade stats {endpoint:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// An agent's pinned `PAL_CONFIG` map.
pub struct PinnedConfig(aya::maps::Array<aya::maps::MapData, palisade_common::Config>);

impl PinnedConfig {
    /// The generation the agent's programs use now.
    pub fn generation(&self) -> u32 {
        self.0
            .get(&0, 0)
            .unwrap_or_else(|e| panic!("read PAL_CONFIG: {e}"))
            .generation
    }
}

/// What one "policy published" line of the agent says it took, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PublishTimes {
    /// The compiler alone.
    pub compile: f64,
    /// Writing the inactive slot, up to and with the generation flip.
    pub write: f64,
    /// From the start of the agent's reconcile to the flip (bindings, compile, write).
    pub flip: f64,
    /// To the log line: the flip, then naming the new outcomes and rules.
    pub total: f64,
}

/// The agent's "policy published" lines by revision, with the times they report.
pub fn published_times(log: &str) -> std::collections::BTreeMap<u64, PublishTimes> {
    let field = |line: &str, name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    };
    log.lines()
        .filter(|l| l.contains("policy published"))
        .filter_map(|l| {
            Some((
                field(l, "revision")? as u64,
                PublishTimes {
                    compile: field(l, "compile_ms")?,
                    write: field(l, "write_ms")?,
                    flip: field(l, "flip_ms")?,
                    total: field(l, "total_ms")?,
                },
            ))
        })
        .collect()
}

/// One endpoint and direction of `palisade stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCounts {
    pub endpoint: String,
    pub interface: String,
    pub direction: String,
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
}

/// One endpoint's line of `palisade stats`' conntrack table (`(all)`: the whole table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackUsage {
    pub endpoint: String,
    pub interface: String,
    pub entries: u64,
    /// `None`: no budget.
    pub budget: Option<u64>,
    pub evicted: u64,
}

/// What `palisade stats` printed: its four tables (the counters only without ENDPOINT).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub endpoints: Vec<EndpointCounts>,
    /// Rule, packets, bytes.
    pub rules: Vec<(String, u64, u64)>,
    pub conntrack: Vec<ConntrackUsage>,
    pub counters: std::collections::BTreeMap<String, u64>,
    pub text: String,
}

impl Stats {
    /// Parses the tables; panics with the text on anything unexpected.
    pub fn parse(text: &str) -> Stats {
        let bad =
            |line: &str| -> ! { panic!("unexpected line {line:?} in palisade stats:\n{text}") };
        let number =
            |line: &str, field: &str| -> u64 { field.parse().unwrap_or_else(|_| bad(line)) };
        let mut stats = Stats {
            text: text.to_string(),
            ..Stats::default()
        };
        let mut table = "";
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.first() {
                None => table = "",
                Some(&"ENDPOINT") | Some(&"RULE") | Some(&"CONNTRACK") | Some(&"COUNTER") => {
                    table = fields[0]
                }
                Some(_) if table == "ENDPOINT" => {
                    // Docker endpoints read `CONTAINER (SHORT-ID)`: the name has a space.
                    let [endpoint @ .., interface, direction, ap, ab, dp, db] = &fields[..] else {
                        bad(line)
                    };
                    if endpoint.is_empty() {
                        bad(line)
                    }
                    stats.endpoints.push(EndpointCounts {
                        endpoint: endpoint.join(" "),
                        interface: interface.to_string(),
                        direction: direction.to_string(),
                        allowed_packets: number(line, ap),
                        allowed_bytes: number(line, ab),
                        denied_packets: number(line, dp),
                        denied_bytes: number(line, db),
                    });
                }
                Some(_) if table == "RULE" => {
                    let [name @ .., packets, bytes] = &fields[..] else {
                        bad(line)
                    };
                    stats
                        .rules
                        .push((name.join(" "), number(line, packets), number(line, bytes)));
                }
                Some(_) if table == "CONNTRACK" => {
                    let [endpoint @ .., interface, entries, budget, evicted] = &fields[..] else {
                        bad(line)
                    };
                    if endpoint.is_empty() {
                        bad(line)
                    }
                    stats.conntrack.push(ConntrackUsage {
                        endpoint: endpoint.join(" "),
                        interface: interface.to_string(),
                        entries: number(line, entries),
                        budget: (*budget != "none").then(|| number(line, budget)),
                        evicted: number(line, evicted),
                    });
                }
                Some(_) if table == "COUNTER" => {
                    let [name, packets] = fields[..] else {
                        bad(line)
                    };
                    stats
                        .counters
                        .insert(name.to_string(), number(line, packets));
                }
                Some(_) => bad(line),
            }
        }
        stats
    }

    /// A kernel-side counter (`dropped_spoofed`, `fragments`, ...); panics if there is none.
    pub fn counter(&self, name: &str) -> u64 {
        *self
            .counters
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name} in palisade stats:\n{}", self.text))
    }

    /// The conntrack line of `endpoint` (`(all)`: the whole table).
    pub fn conntrack_of(&self, endpoint: &str) -> &ConntrackUsage {
        self.conntrack
            .iter()
            .find(|c| names(&c.endpoint, endpoint))
            .unwrap_or_else(|| {
                panic!(
                    "no conntrack line for {endpoint} in palisade stats:\n{}",
                    self.text
                )
            })
    }

    /// The counts of `endpoint` in `direction` ("ingress" or "egress").
    pub fn endpoint(&self, endpoint: &str, direction: &str) -> &EndpointCounts {
        self.endpoints
            .iter()
            .find(|e| names(&e.endpoint, endpoint) && e.direction == direction)
            .unwrap_or_else(|| {
                panic!(
                    "no {endpoint} {direction} in palisade stats:\n{}",
                    self.text
                )
            })
    }
}

/// Whether the ENDPOINT column `shown` is `wanted`: the endpoint's name, or for a Docker
/// endpoint (`CONTAINER (SHORT-ID)`) the container's name or the full EndpointID.
fn names(shown: &str, wanted: &str) -> bool {
    match shown.strip_suffix(')').and_then(|s| s.split_once(" (")) {
        Some((container, short_id)) => {
            wanted == shown || wanted == container || wanted.starts_with(short_id)
        }
        None => wanted == shown,
    }
}

/// One run of `palisade agent`. Killed (SIGKILL) on drop unless it was stopped already.
pub struct AgentProcess {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Every line so far.
    seen: Vec<String>,
    /// Where [`AgentProcess::wait_for`] looks from.
    mark: usize,
}

/// Whether `line` has `needle` in it, not followed by a letter or digit: so that
/// `revision=1` does not match `revision=12`.
pub fn line_has(line: &str, needle: &str) -> bool {
    line.match_indices(needle).any(|(at, _)| {
        !line[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(char::is_alphanumeric)
    })
}

impl AgentProcess {
    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().map_or(0, |c| c.id() as libc::pid_t)
    }

    /// Every line the agent said so far, for failure messages.
    pub fn log(&mut self) -> String {
        self.take_available();
        self.seen.join("\n")
    }

    fn take_available(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// The index of the first line from `from` on that has every needle (see [`line_has`]),
    /// waiting up to [`PATIENCE`] for it.
    fn find_from(&mut self, from: usize, needles: &[&str]) -> usize {
        let deadline = Instant::now() + PATIENCE;
        let mut next = from;
        loop {
            self.take_available();
            if let Some(i) = (next..self.seen.len())
                .find(|&i| needles.iter().all(|n| line_has(&self.seen[i], n)))
            {
                return i;
            }
            next = next.max(self.seen.len());
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no agent log line with {needles:?} within {PATIENCE:?}; the agent said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the next line, after the one the last `wait_for` returned, that has every
    /// needle; returns it.
    pub fn wait_for(&mut self, needles: &[&str]) -> String {
        let i = self.find_from(self.mark, needles);
        self.mark = i + 1;
        self.seen[i].clone()
    }

    /// Waits for a line with every needle, among all the agent said since it started.
    pub fn wait_for_ever_said(&mut self, needles: &[&str]) -> String {
        let i = self.find_from(0, needles);
        self.seen[i].clone()
    }

    /// How many lines the agent said so far have every needle (see [`line_has`]).
    pub fn count(&mut self, needles: &[&str]) -> usize {
        self.take_available();
        self.seen
            .iter()
            .filter(|line| needles.iter().all(|n| line_has(line, n)))
            .count()
    }

    /// Waits until the agent enforces on every interface in `interfaces` and has published
    /// the datastore's revision `revision`: its maps hold that revision's policy.
    pub fn wait_until_enforcing(&mut self, interfaces: &[&str], revision: u64) {
        for interface in interfaces {
            let needle = format!("interface={interface}");
            self.wait_for_ever_said(&["enforcing on workload interface", &needle]);
        }
        self.wait_for(&["policy published", &format!("revision={revision}")]);
    }

    /// Where the agent serves `path` (`/healthz`, `/readyz` or `/metrics`), as it said when
    /// it started serving; waits for that.
    pub fn serving(&mut self, path: &str) -> SocketAddr {
        let line = self.wait_for_ever_said(&["serving health and metrics", path]);
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("address="))
            .and_then(|address| address.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// Sends `signal` to the agent.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert!(rc == 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process has not exited.
    pub fn still_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait for the agent").is_none())
    }

    /// SIGTERM; waits for "agent stopped" and the exit; returns the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_for(&["agent stopped"]);
        self.wait_exit()
    }

    /// Waits up to [`PATIENCE`] for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let child = self.child.as_mut().expect("the agent process");
            if let Some(status) = child.try_wait().expect("wait for the agent") {
                self.child = None;
                return status;
            }
            // Still running here: the process is killed on drop as the panic unwinds.
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {PATIENCE:?}; it said:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            self.take_available();
            eprintln!("---- agent log ----\n{}\n----", self.seen.join("\n"));
        }
    }
}
