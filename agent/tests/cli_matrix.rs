//! `palisade matrix` against `palisade trace`, cell by cell: the terminal table, the JSON
//! and the HTML page as a real browser (headless Chromium, Debian's `chromium`) renders it
//! must give, for every pair of endpoints of every group pair, the verdict trace gives;
//! the page must show each cell's deciding rules of both directions and draw verdicts in
//! their colours. Chromium also takes a screenshot of the page.
#![allow(clippy::unwrap_used)]

mod cli_support;
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::Palisade;
use common::seeds::{MULTIPLE_NETWORKS, PROFILES_WITH_RULES, endpoints_yaml};
use serde_json::Value;

/// Endpoints beyond the seed's four: backups (a policy of their own), and an IPv6-only one
/// that shares no IP version with the others.
const MORE_ENDPOINTS: &str = "
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: backup1, node: node1, orchestrator: libnetwork, workload: libnetwork}
  spec: {interfaceName: calibackup1, ipNetworks: [192.168.0.31/32], profiles: [database-backup]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: backup2, node: node2, orchestrator: libnetwork, workload: libnetwork}
  spec: {interfaceName: calibackup2, ipNetworks: [192.168.0.32/32], profiles: [backups]}
- apiVersion: v1
  kind: workloadEndpoint
  metadata: {name: v6only, node: node2, orchestrator: libnetwork, workload: libnetwork}
  spec: {interfaceName: caliv6only, ipNetworks: ['fd00::9/128'], profiles: [apps]}
";

/// The packets asked about: (matrix and trace options).
const PROBES: [&[&str]; 4] = [
    &["--protocol", "tcp", "--port", "3306"],
    &["--protocol", "tcp", "--port", "22"],
    &["--protocol", "udp", "--port", "53"],
    &["--protocol", "icmp"],
];

fn world() -> Palisade {
    let p = Palisade::new();
    p.apply(PROFILES_WITH_RULES);
    p.apply(MULTIPLE_NETWORKS);
    p.apply(&endpoints_yaml("node1"));
    p.apply(MORE_ENDPOINTS);
    p
}

/// The last line of trace's report, `verdict: ...`, and its egress and ingress lines.
fn trace(p: &Palisade, src: &str, dst: &str, probe: &[&str]) -> (String, Vec<String>) {
    let mut args = vec!["trace", "--src", src, "--dst", dst];
    for a in probe {
        args.push(if *a == "--port" { "--dport" } else { a });
    }
    let run = p.run(&args);
    if run.code != 0 {
        // No IP version in common: the matrix says "-".
        assert!(run.stderr.contains("no IP version in common"), "{run:?}");
        return ("-".to_string(), vec![]);
    }
    let verdict = run
        .stdout
        .lines()
        .last()
        .unwrap()
        .trim_start_matches("verdict: ")
        .to_string();
    let sides = run
        .stdout
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("egress: ")
                .map(|r| format!("egress: {r}"))
                .or_else(|| {
                    l.trim()
                        .strip_prefix("ingress: ")
                        .map(|r| format!("ingress: {r}"))
                })
        })
        .collect();
    (verdict, sides)
}

/// The terminal table's cells: row by row, `[i]` lines up to the first blank line.
fn text_cells(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("[1]"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().skip(1).map(str::to_string).collect())
        .collect()
}

/// Runs headless Chromium with the flags that keep it off the network, in a fresh
/// profile; fails the test if it is missing or hangs.
fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,800",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run chromium ({e}): `cargo xtask bootstrap` installs Debian's chromium")
        });
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "chromium {args:?}: {:?}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap()
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The attributes of every `<td ...>` of the dumped DOM that has `data-verdict`.
fn rendered_cells(dom: &str) -> Vec<BTreeMap<String, String>> {
    let mut cells = Vec::new();
    for part in dom.split("<td ").skip(1) {
        let mut attrs = BTreeMap::new();
        let mut rest = part;
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].trim().to_string();
            let value_end = rest[eq + 2..].find('"').unwrap();
            attrs.insert(name, unescape(&rest[eq + 2..eq + 2 + value_end]));
            rest = &rest[eq + 2 + value_end + 1..];
            if rest.starts_with('>') {
                break;
            }
        }
        if attrs.contains_key("data-verdict") {
            cells.push(attrs);
        }
    }
    cells
}

#[test]
fn terminal_json_and_html_agree_with_trace_in_every_cell() {
    let p = world();
    let html = p.file("matrix.html", "");
    let mut seen = BTreeMap::new();
    for probe in PROBES {
        let mut args = vec!["matrix", "-o", "json", "--html", &html];
        args.extend(probe);
        let run = p.run(&args);
        assert_eq!(run.code, 0, "{run:?}");
        let json: Value = serde_json::from_str(&run.stdout).unwrap();
        let mut args = vec!["matrix"];
        args.extend(probe);
        let text = p.run(&args);
        assert_eq!(text.code, 0, "{text:?}");
        let table = text_cells(&text.stdout);
        let page = std::fs::read_to_string(&html).unwrap();
        assert!(
            !page.contains("http://") && !page.contains("https://") && !page.contains(" src="),
            "the page must not load anything"
        );
        let dom = chromium(&["--dump-dom", &format!("file://{html}")]);
        assert!(
            dom.contains("data-rendered=\"true\""),
            "the page's script did not run:\n{dom}"
        );
        let rendered = rendered_cells(&dom);

        let groups = json["groups"].as_array().unwrap();
        assert_eq!(rendered.len(), groups.len() * groups.len(), "{dom}");
        assert_eq!(table.len(), groups.len(), "{}", text.stdout);
        for (i, src_group) in groups.iter().enumerate() {
            for (j, dst_group) in groups.iter().enumerate() {
                let cell = &json["cells"][i][j];
                let reach = cell["reach"].as_str().unwrap();
                assert_eq!(
                    table[i][j], reach,
                    "terminal cell [{i}][{j}]\n{}",
                    text.stdout
                );
                let shown = rendered
                    .iter()
                    .find(|c| c["data-src"] == i.to_string() && c["data-dst"] == j.to_string())
                    .unwrap();
                assert_eq!(shown["data-verdict"], reach, "page cell [{i}][{j}]");
                let colour = match reach {
                    "allow" => "rgb(165, 214, 167)",
                    "deny" => "rgb(239, 154, 154)",
                    _ => "rgb(224, 224, 224)",
                };
                assert_eq!(shown["data-colour"], colour, "page cell [{i}][{j}] colour");
                let mut pairs = 0;
                for s in src_group["members"].as_array().unwrap() {
                    for d in dst_group["members"].as_array().unwrap() {
                        if s["path"] == d["path"] {
                            continue;
                        }
                        pairs += 1;
                        let (verdict, sides) = trace(
                            &p,
                            s["path"].as_str().unwrap(),
                            d["path"].as_str().unwrap(),
                            probe,
                        );
                        assert_eq!(verdict, reach, "{probe:?} {} -> {}", s["path"], d["path"]);
                        for side in &sides {
                            assert!(
                                shown["title"].contains(side.as_str()),
                                "page cell [{i}][{j}] does not show `{side}`:\n{}",
                                shown["title"]
                            );
                        }
                        *seen.entry(verdict).or_insert(0) += 1;
                    }
                }
                if pairs == 0 {
                    assert_eq!(reach, "-", "an endpoint alone with itself");
                }
            }
        }
    }
    // The world must show every kind of cell.
    for kind in ["allow", "deny", "-"] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} cell: {seen:?}"
        );
    }
}

#[test]
fn without_a_protocol_the_matrix_tells_what_passes() {
    let p = world();
    let run = p.run(&["matrix"]);
    assert_eq!(run.code, 0, "{run:?}");
    let json: Value = serde_json::from_str(&p.run(&["matrix", "-o", "json"]).stdout).unwrap();
    let index = |name: &str| {
        json["groups"]
            .as_array()
            .unwrap()
            .iter()
            .position(|g| {
                g["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["name"] == name)
            })
            .unwrap()
    };
    let (apps, dbs) = (index("app1"), index("db1"));
    assert_eq!(json["cells"][apps][dbs]["reach"], "some");
    assert!(
        run.stdout
            .contains(&format!("[{}] -> [{}]: tcp/3306\n", apps + 1, dbs + 1)),
        "{}",
        run.stdout
    );
    assert_eq!(json["cells"][dbs][apps]["reach"], "deny");
    // One row per endpoint on request.
    let ungrouped: Value =
        serde_json::from_str(&p.run(&["matrix", "--no-group", "-o", "json"]).stdout).unwrap();
    assert_eq!(ungrouped["groups"].as_array().unwrap().len(), 7);
}

#[test]
fn chromium_screenshots_the_page() {
    let p = world();
    let html = p.file("matrix.html", "");
    let run = p.run(&[
        "matrix",
        "--protocol",
        "tcp",
        "--port",
        "3306",
        "--html",
        &html,
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let png = Path::new(&html).with_extension("png");
    chromium(&[
        &format!("--screenshot={}", png.display()),
        &format!("file://{html}"),
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "a blank page? {} bytes", bytes.len());
}

#[test]
fn matrix_reports_bad_input() {
    let p = world();
    let run = p.run(&["matrix", "--protocol", "tcp"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--port is required"), "{run:?}");
    let run = p.run(&["matrix", "--port", "80"]);
    assert_ne!(run.code, 0, "{run:?}");
    let run = p.run(&["matrix", "--html", "/nonexistent/dir/m.html"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot write /nonexistent/dir/m.html"),
        "{run:?}"
    );
}
