//! Replays every committed fuzz input through its target: the minimized corpus
//! (`corpus/<target>/`, the inputs that reach the code's branches) and the regressions
//! (`regressions/<target>/`, every input that ever failed, named for what it found). This
//! is how CI runs the fuzzers' findings: on stable Rust, without cargo-fuzz.

use std::path::{Path, PathBuf};

use palisade_fuzz::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let mut count = 0;
    for target in TARGETS {
        for path in inputs(kind, target.name) {
            let data = std::fs::read(&path).expect("a committed input reads");
            eprintln!("{}: {}", target.name, path.display());
            (target.check)(&data);
            count += 1;
        }
    }
    count
}

#[test]
fn every_corpus_input_passes() {
    for target in TARGETS {
        assert!(
            !inputs("corpus", target.name).is_empty(),
            "fuzz/corpus/{} is empty: `cargo xtask fuzz` fills it",
            target.name
        );
    }
    eprintln!("{} corpus inputs", replay("corpus"));
}

#[test]
fn every_regression_input_passes() {
    eprintln!("{} regression inputs", replay("regressions"));
}
