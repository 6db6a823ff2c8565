//! Which rule each `PAL_RULE_STATS` index counts, written by the agent after every publish
//! so that `palisade stats` (another process) can name the rules.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::slot_image::RuleCounters;

/// The default place: beside other run-time state, not in bpffs (which holds only BPF
/// objects).
pub const DEFAULT_RUN_DIR: &str = "/run/palisade";

pub fn path_in(run_dir: &Path) -> PathBuf {
    path_of_version(run_dir, palisade_common::ABI_VERSION)
}

/// Where an agent of map ABI `version` writes them.
pub fn path_of_version(run_dir: &Path, version: u32) -> PathBuf {
    run_dir.join(format!("rule-counters.v{version}.json"))
}

/// Whether `name` is a file the agent writes in its run directory (of any ABI version, or
/// left half-written): what `palisade cleanup` removes there.
pub fn is_written_by_agent(name: &str) -> bool {
    name.strip_prefix("rule-counters.v")
        .is_some_and(|rest| rest.ends_with(".json") || rest.ends_with(".json.tmp"))
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleName {
    pub index: u32,
    pub rule: String,
}

/// Replaces the file at `path` atomically (write beside, then rename).
pub fn write(path: &Path, counters: &RuleCounters) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let names: Vec<RuleName> = counters
        .iter()
        .map(|(index, rule)| RuleName {
            index,
            rule: rule.to_string(),
        })
        .collect();
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, &names).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn read(path: &Path) -> std::io::Result<Vec<RuleName>> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}
