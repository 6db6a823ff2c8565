//! Connecting the CLI to etcd. With TLS and client-certificate authentication
//! (`--client-cert-auth`), from a CA and certificates the test generates: the CLI connects
//! with `--etcd-ca`, `--etcd-cert` and `--etcd-key` (or `PALISADE_ETCD_*`), and fails with
//! a clear error and exit code 1 without a client certificate, with the wrong CA, or with a
//! certificate etcd does not trust. Without an etcd, or with a malformed URL, likewise.

#![allow(clippy::unwrap_used)]

#[path = "common/etcd.rs"]
mod etcd;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use etcd::{EtcdServer, TestPki};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn palisade(args: &[&str], env: &[(&str, &Path)], stdin: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_palisade"));
    command
        .args(args)
        .env_remove("PALISADE_DATASTORE")
        .env_remove("PALISADE_ETCD_CA")
        .env_remove("PALISADE_ETCD_CERT")
        .env_remove("PALISADE_ETCD_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn path(pki: &TestPki, name: &str) -> String {
    pki.path(name).display().to_string()
}

const PROFILE: &str = "apiVersion: v1\nkind: profile\nmetadata: {name: secure}\n";

#[test]
fn the_cli_connects_with_a_ca_and_a_client_certificate() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let url = server.url();
    let (ca, cert, key) = (
        path(&pki, "ca.pem"),
        path(&pki, "client.pem"),
        path(&pki, "client-key.pem"),
    );
    let flags = [
        "--datastore",
        &url,
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ];
    let run = palisade(&[&flags[..], &["apply", "-f", "-"]].concat(), &[], PROFILE);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "Successfully applied 1 'profile' resource(s)\n"),
        "{}",
        run.stderr
    );
    // The same through the environment.
    let env = [
        ("PALISADE_ETCD_CA", pki.path("ca.pem")),
        ("PALISADE_ETCD_CERT", pki.path("client.pem")),
        ("PALISADE_ETCD_KEY", pki.path("client-key.pem")),
    ];
    let env: Vec<(&str, &Path)> = env.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let run = palisade(&["--datastore", &url, "get", "profile"], &env, "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "NAME     \nsecure   \n\n"),
        "{}",
        run.stderr
    );
    // What palisade wrote is there for etcdctl (with its own client certificate).
    assert_eq!(
        server.dump("/calico/v1/policy/profile/secure/tags"),
        [(
            "/calico/v1/policy/profile/secure/tags".to_string(),
            "[]".to_string()
        )]
    );
}

#[test]
fn without_a_valid_client_certificate_or_with_the_wrong_ca_the_cli_fails_clearly() {
    let pki = TestPki::generate();
    let server = EtcdServer::start_tls(&pki);
    let url = server.url();
    let endpoint = server.endpoint();
    let failure = |extra: &[&str]| -> String {
        let run = palisade(
            &[&["--datastore", &url][..], extra, &["get", "profile"]].concat(),
            &[],
            "",
        );
        assert_eq!(
            run.code, 1,
            "{extra:?} succeeded: {}{}",
            run.stdout, run.stderr
        );
        assert!(
            run.stdout
                .starts_with("Failed to create Calico API client: "),
            "{extra:?}: {}",
            run.stdout
        );
        run.stdout
    };
    let (ca, cert, key) = (
        path(&pki, "ca.pem"),
        path(&pki, "client.pem"),
        path(&pki, "client-key.pem"),
    );
    let (other_ca, other_cert, other_key) = (
        path(&pki, "other-ca.pem"),
        path(&pki, "other-client.pem"),
        path(&pki, "other-client-key.pem"),
    );

    // No client certificate: etcd ends the handshake.
    let out = failure(&["--etcd-ca", &ca]);
    assert!(
        out.contains("etcd may require a client certificate"),
        "{out}"
    );
    // A CA that did not sign etcd's certificate: palisade does not trust etcd.
    let out = failure(&[
        "--etcd-ca",
        &other_ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
    ]);
    assert!(out.to_ascii_lowercase().contains("certificate"), "{out}");
    assert!(
        out.contains("--etcd-ca did not sign etcd's certificate"),
        "{out}"
    );
    // A client certificate from a CA etcd does not trust.
    let out = failure(&[
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &other_cert,
        "--etcd-key",
        &other_key,
    ]);
    assert!(out.contains("TLS failed"), "{out}");
    // No TLS at all against a TLS-only etcd.
    let out = failure(&[]);
    assert!(out.contains(&format!("etcd {endpoint}: ")), "{out}");
    assert!(out.contains("if it serves TLS, see --etcd-ca"), "{out}");

    // Files that are not there or not certificates are named.
    let out = failure(&["--etcd-ca", "/nonexistent/ca.pem"]);
    assert!(
        out.contains("--etcd-ca /nonexistent/ca.pem: cannot read it"),
        "{out}"
    );
    let out = failure(&["--etcd-ca", &ca, "--etcd-cert", &url, "--etcd-key", &key]);
    assert!(out.contains("--etcd-cert"), "{out}");

    // Half a client identity, or TLS flags on a file datastore, are usage errors.
    let run = palisade(
        &[
            "--datastore",
            &url,
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "get",
            "profile",
        ],
        &[],
        "",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("--etcd-cert needs --etcd-key"),
        "{}",
        run.stdout
    );
    let run = palisade(
        &[
            "--datastore",
            "file:///tmp/x",
            "--etcd-ca",
            &ca,
            "get",
            "profile",
        ],
        &[],
        "",
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("apply to etcd:// datastores only"),
        "{}",
        run.stderr
    );
}

#[test]
fn no_etcd_or_a_malformed_url_is_reported_as_calicoctl_does() {
    let port = etcd::free_port();
    let url = format!("etcd://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let run = palisade(&["--datastore", &url, "get", "profile"], &[], "");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "Failed to create Calico API client: etcd 127.0.0.1:{port}: cannot read from it: "
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Connection refused"), "{}", run.stdout);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let run = palisade(
        &["--datastore", "etcd://etcd-host", "apply", "-f", "-"],
        &[],
        PROFILE,
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (
            1,
            "Failed to create Calico API client: datastore URL 'etcd://etcd-host': 'etcd-host' \
             is not HOST:PORT (use etcd://HOST:PORT[,HOST:PORT...])\n"
        )
    );
}
