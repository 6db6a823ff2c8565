//! A private embedded datastore in a temporary directory, and the `palisade` command line
//! on it: writes, `trace` verdicts, and the store's revision (what the agent reports
//! having published).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::palisade_binary;
use crate::traffic::Probe;

pub struct Datastore {
    url: String,
    /// The embedded store's directory; `None` for a datastore the test runs elsewhere.
    _dir: Option<tempfile::TempDir>,
}

impl Default for Datastore {
    fn default() -> Self {
        Self::new()
    }
}

impl Datastore {
    pub fn new() -> Datastore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Datastore {
            url: format!("file://{}", dir.path().join("store").display()),
            _dir: Some(dir),
        }
    }

    /// The command line on the datastore at `url` (an etcd the test started).
    pub fn at(url: &str) -> Datastore {
        Datastore {
            url: url.to_string(),
            _dir: None,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `palisade --datastore URL ARGS`, with `stdin` on its standard input.
    pub fn palisade(&self, args: &[&str], stdin: &str) -> Output {
        self.palisade_in(None, args, stdin)
    }

    /// [`Datastore::palisade`] inside the network namespace `netns` (`ip netns exec`), or
    /// in this process's namespace for `None`.
    pub fn palisade_in(&self, netns: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut command = match netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(palisade_binary());
                c
            }
            None => Command::new(palisade_binary()),
        };
        let mut child = command
            .args(["--datastore", &self.url])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start palisade");
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .expect("write palisade's stdin");
        }
        child.wait_with_output().expect("wait for palisade")
    }

    /// [`Datastore::palisade`], panicking with its output unless it succeeds; returns stdout.
    pub fn palisade_ok(&self, args: &[&str], stdin: &str) -> String {
        self.palisade_ok_in(None, args, stdin)
    }

    /// [`Datastore::palisade_in`], panicking with its output unless it succeeds.
    pub fn palisade_ok_in(&self, netns: Option<&str>, args: &[&str], stdin: &str) -> String {
        let out = self.palisade_in(netns, args, stdin);
        assert!(
            out.status.success(),
            "palisade {args:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `palisade apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) {
        self.palisade_ok(&["apply", "-f", "-"], yaml);
    }

    /// `palisade create -f -` of `yaml`.
    pub fn create(&self, yaml: &str) {
        self.palisade_ok(&["create", "-f", "-"], yaml);
    }

    /// The store's current revision, read through palisade's own store code.
    pub fn revision(&self) -> u64 {
        self.snapshot().revision
    }

    /// Every resource the store holds now.
    pub fn resources(&self) -> Vec<palisade::model::Resource> {
        self.snapshot().resources
    }

    fn snapshot(&self) -> palisade::store::Snapshot {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let store = palisade::store::open(&self.url)
                .await
                .unwrap_or_else(|e| panic!("open {}: {e}", self.url));
            store
                .list(None)
                .await
                .unwrap_or_else(|e| panic!("list {}: {e}", self.url))
        })
    }

    /// `palisade trace`'s verdict for `probe` from `src` to `dst` (endpoint names or IP
    /// addresses): true for allow. `ipv6` picks ICMPv6 for echo probes.
    pub fn trace_allows(&self, src: &str, dst: &str, probe: Probe, ipv6: bool) -> bool {
        let (port, code);
        let mut args = vec!["trace", "--src", src, "--dst", dst, "--protocol"];
        match probe {
            Probe::Tcp(p) | Probe::Udp(p) => {
                args.push(if matches!(probe, Probe::Tcp(_)) {
                    "tcp"
                } else {
                    "udp"
                });
                port = p.to_string();
                args.extend(["--dport", &port]);
            }
            Probe::IcmpEcho(c) => {
                args.push(if ipv6 { "icmpv6" } else { "icmp" });
                code = c.to_string();
                args.extend(["--icmp-code", &code]);
            }
        }
        let report = self.palisade_ok(&args, "");
        match report.lines().last() {
            Some("verdict: allow") => true,
            Some("verdict: deny") => false,
            _ => panic!("palisade {args:?} printed no verdict:\n{report}"),
        }
    }
}
