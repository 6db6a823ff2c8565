//! Which rule each `PAL_RULE_STATS` index counts, written by the agent after every publish
//! so that `palisade stats` (another process) can name the rules.

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
/// left half-written): what `palisade cleanup` removes there. Besides these, the outcome
/// names of recent generations and the `palisade flows` socket.
pub fn is_written_by_agent(name: &str) -> bool {
    name.strip_prefix("rule-counters.v")
        .is_some_and(|rest| rest.ends_with(".json") || rest.ends_with(".json.tmp"))
        || super::outcome_names::is_written_by_agent(name)
        || name == crate::flows::socket::SOCKET_NAME
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleName {
    pub index: u32,
    pub rule: String,
}

/// The rule names file's contents, kept up to date publish by publish: counter indexes
/// are only ever appended (never reused while the agent runs), so only new rules are named
/// and serialised.
#[derive(Debug, Default)]
pub struct RuleNamesCache {
    named: u32,
    /// The JSON array's elements so far, comma-separated.
    elements: Vec<u8>,
}

impl RuleNamesCache {
    /// Names the rules `counters` added since the last call.
    pub fn update(&mut self, counters: &RuleCounters) {
        if counters.len() < self.named {
            *self = RuleNamesCache::default();
        }
        for (index, rule) in counters.iter().skip(self.named as usize) {
            let name = RuleName {
                index,
                rule: rule.to_string(),
            };
            if !self.elements.is_empty() {
                self.elements.push(b',');
            }
            // A struct of a number and a string always serialises.
            if serde_json::to_writer(&mut self.elements, &name).is_ok() {
                self.named = index + 1;
            }
        }
    }

    /// The whole file: a JSON array of [`RuleName`]s and a newline.
    pub fn file_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.elements.len() + 3);
        bytes.push(b'[');
        bytes.extend_from_slice(&self.elements);
        bytes.extend_from_slice(b"]\n");
        bytes
    }
}

/// Replaces the file at `path` with `bytes` atomically (write beside, then rename).
///
/// Not synced to the disk: the names only need to outlive the agent process, not the
/// machine, as the counters they name (pinned maps) do not survive a reboot either.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::slot_image::RuleCounters;
    use crate::model::Action;
    use crate::policy::{Direction, RuleOwner, RuleRef};

    #[test]
    fn the_cache_names_appended_rules_and_the_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        let mut cache = RuleNamesCache::default();
        let counters = RuleCounters::new(8);
        cache.update(&counters);
        write_bytes(&path, &cache.file_bytes()).unwrap();
        assert_eq!(read(&path).unwrap(), vec![]);
        let mut counters = counters;
        for index in 0..3 {
            counters
                .index_of(&RuleRef {
                    owner: RuleOwner::Policy(format!("p{index}")),
                    direction: Direction::Ingress,
                    index,
                    action: Action::Allow,
                })
                .unwrap();
            cache.update(&counters);
        }
        cache.update(&counters);
        write_bytes(&path, &cache.file_bytes()).unwrap();
        let expected: Vec<RuleName> = counters
            .iter()
            .map(|(index, rule)| RuleName {
                index,
                rule: rule.to_string(),
            })
            .collect();
        assert_eq!(read(&path).unwrap(), expected);
        assert_eq!(expected.len(), 3);
    }
}
