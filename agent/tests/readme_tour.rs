//! README.md's tour, followed as a reader would: its shell blocks run in order with bash
//! on a private datastore, and what the README says they print is what they print. The
//! "Enforcing" section that follows must not reuse the tour's endpoint names or addresses
//! (a reader goes on with the tour's resources still there).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");

fn section(title: &str) -> &'static str {
    let start = README.find(title).unwrap();
    let rest = &README[start + title.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn sh_blocks(text: &str) -> Vec<&str> {
    text.split("```sh\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect()
}

struct Reader {
    dir: tempfile::TempDir,
}

impl Reader {
    fn run(&self, script: &str) -> (i32, String, String) {
        let bin = Path::new(env!("CARGO_BIN_EXE_palisade")).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env(
                "PALISADE_DATASTORE",
                format!("file://{}", self.dir.path().join("store").display()),
            )
            .env_remove("DOCKER_HOST")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

#[test]
fn the_tour_does_what_the_readme_says() {
    let tour = section("## A five-minute tour");
    let blocks = sh_blocks(tour);
    assert_eq!(
        blocks.len(),
        2,
        "the tour's shell blocks changed: update this test"
    );
    let reader = Reader {
        dir: tempfile::tempdir().unwrap(),
    };

    // The first block: everything succeeds, and trace says what the comments say.
    let (code, out, err) = reader.run(&format!("set -e\n{}", blocks[0]));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let promised: Vec<&str> = blocks[0]
        .lines()
        .filter(|l| l.starts_with("palisade trace"))
        .map(|l| l.split("# ").nth(1).unwrap().trim())
        .collect();
    let printed: Vec<&str> = out.lines().filter(|l| l.starts_with("verdict: ")).collect();
    assert_eq!(printed, promised);
    assert!(out.contains("[1] -> [2]: tcp/3306\n"), "{out}");
    let page = std::fs::read_to_string(reader.dir.path().join("matrix.html")).unwrap();
    assert!(
        page.contains("tour-db"),
        "the matrix page names the endpoints"
    );

    // The second: the diff prints the commented lines, and exits 1 (something changes).
    let mut script = String::new();
    let mut expected = String::new();
    for line in blocks[1].lines() {
        match line.strip_prefix("# ") {
            Some(output) => {
                expected += output;
                expected.push('\n');
            }
            None => {
                script += line;
                script.push('\n');
            }
        }
    }
    let (code, out, err) = reader.run(&script);
    assert_eq!(
        (code, out.as_str()),
        (1, expected.as_str()),
        "stderr:\n{err}"
    );

    // The two variants differ by nothing, as the README says.
    assert!(tour.contains("says `No change in\nreachability.`"));

    // The tour's clean-up commands, as the README gives them.
    for command in [
        "palisade delete -f tour-endpoints.yaml",
        "palisade delete -f tour-profiles.yaml",
    ] {
        assert!(README.contains(command), "{command}");
        let (code, out, err) = reader.run(command);
        assert_eq!(code, 0, "{command}: {out} {err}");
    }
}

#[test]
fn the_enforcing_section_uses_its_own_names_and_addresses() {
    let tour = sh_blocks(section("## A five-minute tour")).join("\n");
    let enforcing = sh_blocks(section("## Enforcing on real workloads")).join("\n");
    for line in enforcing
        .lines()
        .filter(|l| l.starts_with("palisade workload add "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let name = words[3];
        let ip = words[words.iter().position(|w| *w == "--ip").unwrap() + 1];
        assert!(
            !tour.contains(&format!("name: {name},")),
            "{name} is in the tour too"
        );
        assert!(!tour.contains(ip), "{ip} is in the tour too");
    }
    // The tour says its endpoints are not enforced here.
    let text = section("## A five-minute tour");
    assert!(text.contains("enforces nothing for them"));
    assert!(text.contains("local_endpoints=0"));
}
