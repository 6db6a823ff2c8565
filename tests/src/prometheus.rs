//! A real Prometheus server (Debian's `prometheus`) for a test: on a free loopback port,
//! with a private configuration and storage directory, scraping the given targets at a
//! short interval; queried through its HTTP API. Killed on drop, its directory removed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::agent_process::PATIENCE;
use crate::http;

/// The job name of the scraped targets (the `job` label of their series).
pub const JOB: &str = "palisade";

/// One series of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every `interval`, and waits until it is ready.
    pub fn start(targets: &[SocketAddr], interval: Duration) -> Prometheus {
        let binary = which("prometheus");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let seconds = format!("{}ms", interval.as_millis());
        let config = format!(
            "global:\n  scrape_interval: {seconds}\n  scrape_timeout: {seconds}\n  \
             evaluation_interval: {seconds}\nscrape_configs:\n  - job_name: {JOB}\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            child,
            address,
            dir,
        };
        prometheus.wait_until_ready();
        prometheus
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for prometheus") {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            if http::try_get(self.address, "/-/ready", &[]).is_ok_and(|r| r.status == 200) {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus not ready within {PATIENCE:?}:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant vector of `expr` now; panics on anything but a successful vector.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let path = format!(
            "/api/v1/query?query={}",
            utf8_percent_encode(expr, NON_ALPHANUMERIC)
        );
        let response = http::get(self.address, &path, &[]);
        let json: serde_json::Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("query {expr}: {e}: {}", response.body));
        assert!(
            response.status == 200 && json["status"] == "success",
            "query {expr}: {} {}",
            response.status,
            response.body
        );
        assert_eq!(json["data"]["resultType"], "vector", "{}", response.body);
        let result = json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        result
            .iter()
            .map(|series| {
                let labels = series["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("query {expr}: bad value in {series}"));
                Sample { labels, value }
            })
            .collect()
    }

    /// The value of `expr`, which must be a single series, once `good` holds for it;
    /// panics after [`PATIENCE`] with what Prometheus last said.
    pub fn wait_for(&self, expr: &str, what: &str, good: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(expr);
            if let [only] = last.as_slice()
                && good(only.value)
            {
                return only.value;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{what}: `{expr}` was {last:?} after {PATIENCE:?}; prometheus said:\n{}",
            self.log()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The path of `program`, or a failure that says how to get it: the test fails, it never
/// skips.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed; it comes with the Debian package prometheus \
                 (`cargo xtask bootstrap` installs it)"
            )
        })
}
