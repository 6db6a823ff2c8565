//! The etcd datastore URL: `etcd://HOST:PORT[,HOST:PORT...]`, optionally with the TLS files
//! as query parameters: `?ca=FILE[&cert=FILE&key=FILE]`. The command line's `--etcd-ca`,
//! `--etcd-cert` and `--etcd-key` are folded into the URL ([`with_tls_files`]), so every
//! part of palisade that opens a datastore from a URL gets TLS with it. There is no
//! separate `etcds://` scheme: TLS is on exactly when a CA is given, as with etcdctl's
//! `--cacert`, so one flag decides and the two cannot disagree.

use std::path::PathBuf;

pub const SCHEME: &str = "etcd://";

/// TLS is on when a CA is given; a client certificate and key are optional but come together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host:port` each.
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
}

impl EtcdConfig {
    pub fn parse(url: &str) -> Result<EtcdConfig, String> {
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("datastore URL '{url}': an etcd URL starts with {SCHEME}"))?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let endpoints = hosts
            .split(',')
            .map(|endpoint| check_endpoint(url, endpoint))
            .collect::<Result<Vec<_>, _>>()?;
        let (mut ca, mut cert, mut key) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = PathBuf::from(percent_decode(value));
            match name {
                "ca" => ca = Some(value),
                "cert" => cert = Some(value),
                "key" => key = Some(value),
                _ => {
                    return Err(format!(
                        "datastore URL '{url}': unknown parameter '{name}' (known: ca, cert, key)"
                    ));
                }
            }
        }
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => return Err("--etcd-cert needs --etcd-key".to_string()),
            (None, Some(_)) => return Err("--etcd-key needs --etcd-cert".to_string()),
        };
        let tls = match (ca, identity) {
            (Some(ca), identity) => Some(TlsFiles { ca, identity }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(
                    "--etcd-cert and --etcd-key need --etcd-ca (the CA that signed etcd's certificate)"
                        .to_string(),
                );
            }
        };
        Ok(EtcdConfig { endpoints, tls })
    }

    /// The endpoint URLs as the etcd client dials them.
    pub fn endpoint_urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect()
    }

    /// For messages: `etcd 127.0.0.1:2379,127.0.0.1:2380`.
    pub fn describe(&self) -> String {
        format!("etcd {}", self.endpoints.join(","))
    }
}

fn check_endpoint(url: &str, endpoint: &str) -> Result<String, String> {
    let port_ok = endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !port_ok || endpoint.contains('/') {
        return Err(format!(
            "datastore URL '{url}': '{endpoint}' is not HOST:PORT (use etcd://HOST:PORT[,HOST:PORT...])"
        ));
    }
    Ok(endpoint.to_string())
}

/// `url` with the TLS files added as query parameters (each only if given). Only etcd URLs
/// take them.
pub fn with_tls_files(
    url: &str,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> Result<String, String> {
    let given: Vec<(&str, &std::path::Path)> = [("ca", ca), ("cert", cert), ("key", key)]
        .into_iter()
        .filter_map(|(name, path)| path.map(|p| (name, p)))
        .collect();
    if given.is_empty() {
        return Ok(url.to_string());
    }
    if !url.starts_with(SCHEME) {
        return Err(format!(
            "--etcd-ca, --etcd-cert and --etcd-key apply to etcd:// datastores only, not '{url}'"
        ));
    }
    let mut out = url.to_string();
    for (name, path) in given {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(name);
        out.push('=');
        out.push_str(&percent_encode(&path.to_string_lossy()));
    }
    Ok(out)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' | '&' | '=' | '?' | '#' | ',' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn endpoints_and_tls_files() {
        let config = EtcdConfig::parse("etcd://127.0.0.1:2379,[::1]:2379").unwrap();
        assert_eq!(config.endpoints, ["127.0.0.1:2379", "[::1]:2379"]);
        assert_eq!(config.tls, None);
        assert_eq!(
            config.endpoint_urls(),
            ["http://127.0.0.1:2379", "http://[::1]:2379"]
        );

        let url = with_tls_files(
            "etcd://h:1",
            Some(Path::new("/a b/c&d=%.pem")),
            Some(Path::new("/c.pem")),
            Some(Path::new("/k.pem")),
        )
        .unwrap();
        let config = EtcdConfig::parse(&url).unwrap();
        assert_eq!(
            config.tls,
            Some(TlsFiles {
                ca: "/a b/c&d=%.pem".into(),
                identity: Some(("/c.pem".into(), "/k.pem".into()))
            })
        );
        assert_eq!(config.endpoint_urls(), ["https://h:1"]);
        assert_eq!(
            with_tls_files("etcd://h:1", None, None, None).unwrap(),
            "etcd://h:1"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, message) in [
            ("etcd://", "'' is not HOST:PORT"),
            ("etcd://host", "'host' is not HOST:PORT"),
            ("etcd://h:1,h:x", "'h:x' is not HOST:PORT"),
            ("etcd://h:1/path", "'h:1/path' is not HOST:PORT"),
            ("etcd://h:1?ca=/x&user=me", "unknown parameter 'user'"),
            ("etcd://h:1?cert=/c&key=/k", "need --etcd-ca"),
            ("etcd://h:1?ca=/a&cert=/c", "--etcd-cert needs --etcd-key"),
        ] {
            let err = EtcdConfig::parse(url).unwrap_err();
            assert!(err.contains(message), "{url}: {err}");
        }
        let err = with_tls_files("file:///x", Some(Path::new("/ca")), None, None).unwrap_err();
        assert!(err.contains("etcd:// datastores only"), "{err}");
    }
}
