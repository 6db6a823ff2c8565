//! A real etcd server for tests: Debian's `etcd` (etcd-server 3.4) on free loopback ports
//! with a private data directory, stopped and removed on drop, also when the test panics.
//! Optionally with TLS and client-certificate authentication, from a throw-away CA that
//! [`TestPki`] generates.
//!
//! Shared by palisade's integration tests (`agent/tests`) and the privileged end-to-end
//! tests (`tests/tests`, which include this file by path).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long etcd may take to answer after it was started.
const STARTUP: Duration = Duration::from_secs(30);

/// TLS material for a test: a CA, a server certificate for 127.0.0.1 and localhost, a
/// client certificate, and a second, unrelated CA, all as PEM files in a private directory.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    pub fn generate() -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>,
                    names: Vec<String>,
                    usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            params
                .distinguished_name
                .push(DnType::CommonName, "palisade test");
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let authority = ca("palisade test CA");
        write("ca.pem", authority.pem());
        let (cert, key) = leaf(
            &authority,
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", cert);
        write("server-key.pem", key);
        let (cert, key) = leaf(
            &authority,
            vec!["client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("client.pem", cert);
        write("client-key.pem", key);
        let stranger = ca("some other CA");
        write("other-ca.pem", stranger.pem());
        let (cert, key) = leaf(
            &stranger,
            vec!["client".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("other-client.pem", cert);
        write("other-client-key.pem", key);
        TestPki { dir }
    }

    /// One of `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`, `client-key.pem`,
    /// `other-ca.pem`, `other-client.pem`, `other-client-key.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub struct EtcdServer {
    child: Option<Child>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// (CA, server certificate, server key) when clients must use TLS and a client
    /// certificate signed by that CA.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// The client certificate etcdctl uses against a TLS server.
    client_identity: Option<(PathBuf, PathBuf)>,
}

impl EtcdServer {
    /// A plain (no TLS) etcd, ready to answer.
    pub fn start() -> EtcdServer {
        EtcdServer::launch(None, None)
    }

    /// An etcd that takes only TLS clients with a certificate signed by `pki`'s CA.
    pub fn start_tls(pki: &TestPki) -> EtcdServer {
        EtcdServer::launch(
            Some((
                pki.path("ca.pem"),
                pki.path("server.pem"),
                pki.path("server-key.pem"),
            )),
            Some((pki.path("client.pem"), pki.path("client-key.pem"))),
        )
    }

    fn launch(
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
        client_identity: Option<(PathBuf, PathBuf)>,
    ) -> EtcdServer {
        let mut server = EtcdServer {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            client_port: free_port(),
            peer_port: free_port(),
            tls,
            client_identity,
        };
        server.run();
        server
    }

    /// `host:port` of the client URL.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The palisade datastore URL of this server (TLS files are passed separately).
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// Stops etcd (SIGKILL: a crash, as far as clients can tell); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory, serving clients on `client_port`
    /// (the same port as before, or another one to hide it from running clients).
    pub fn restart_on(&mut self, client_port: u16) {
        self.stop();
        self.client_port = client_port;
        self.run();
    }

    pub fn restart(&mut self) {
        self.restart_on(self.client_port);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn run(&mut self) {
        let etcd = which("etcd");
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let mut command = Command::new(etcd);
        command
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some((ca, cert, key)) = &self.tls {
            command
                .arg("--client-cert-auth")
                .arg(format!("--trusted-ca-file={}", ca.display()))
                .arg(format!("--cert-file={}", cert.display()))
                .arg(format!("--key-file={}", key.display()));
        }
        self.child = Some(command.spawn().unwrap());
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("etcd exited with {status} while starting:\n{}", self.log());
            }
            if self.try_etcdctl(&["endpoint", "health"]).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "etcd did not become healthy in {STARTUP:?}:\n{}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    fn try_etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let mut command = Command::new(which("etcdctl"));
        command
            .env("ETCDCTL_API", "3")
            .arg(format!(
                "--endpoints={}://{}",
                self.scheme(),
                self.endpoint()
            ))
            .arg("--command-timeout=5s");
        if let Some((ca, _, _)) = &self.tls {
            command.arg(format!("--cacert={}", ca.display()));
        }
        if let Some((cert, key)) = &self.client_identity {
            command
                .arg(format!("--cert={}", cert.display()))
                .arg(format!("--key={}", key.display()));
        }
        let output = command.args(args).output().unwrap();
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).unwrap())
        } else {
            Err(format!(
                "etcdctl {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Runs `etcdctl` (v3 API) against this server; panics if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        self.try_etcdctl(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every key under `prefix` and its value, in key order, as `etcdctl get --prefix`
    /// prints them.
    pub fn dump(&self, prefix: &str) -> Vec<(String, String)> {
        let out = self.etcdctl(&["get", "--prefix", prefix]);
        let lines: Vec<&str> = out.lines().collect();
        lines
            .chunks(2)
            .map(|pair| (pair[0].to_string(), pair.get(1).unwrap_or(&"").to_string()))
            .collect()
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> u64 {
        let out = self.etcdctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        json["header"]["revision"].as_u64().unwrap()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The path of `program`, or a failure that says how to install it: etcd tests fail, they
/// never skip.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed; it comes with the Debian packages etcd-server and \
                 etcd-client (`cargo xtask bootstrap` installs them)"
            )
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
