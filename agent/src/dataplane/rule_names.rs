//! Which rule each `PAL_RULE_STATS` index counts, written by the agent after every publish
//! so that `palisade stats` (another process) can name the rules.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::growing_bytes::{BytesSnapshot, GrowingBytes};
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
/// and serialised, and the file needs writing again only when one was.
#[derive(Debug, Default)]
pub struct RuleNamesCache {
    named: u32,
    /// The JSON array's elements so far, comma-separated.
    elements: GrowingBytes,
    /// Whether [`RuleNamesCache::elements`] was called since the contents last changed.
    taken: bool,
}

impl RuleNamesCache {
    /// Names the rules `counters` added since the last call; `true` when the file's
    /// contents are not those last taken (so it needs writing).
    pub fn update(&mut self, counters: &RuleCounters) -> bool {
        if counters.len() < self.named {
            *self = RuleNamesCache::default();
        }
        for (index, rule) in counters.iter().skip(self.named as usize) {
            let name = RuleName {
                index,
                rule: rule.to_string(),
            };
            if !self.elements.is_empty() {
                self.elements.open().push(b',');
            }
            // A struct of a number and a string always serialises.
            if serde_json::to_writer(&mut *self.elements.open(), &name).is_ok() {
                self.named = index + 1;
                self.taken = false;
            }
        }
        !self.taken
    }

    /// The elements of the file's JSON array so far ([`write`] makes the file of them),
    /// shared rather than copied.
    pub fn elements(&mut self) -> BytesSnapshot {
        self.taken = true;
        self.elements.snapshot()
    }
}

/// Replaces the file at `path` with the JSON array of `elements` (comma-separated
/// [`RuleName`]s) atomically (write beside, then rename).
///
/// Not synced to the disk: the names only need to outlive the agent process, not the
/// machine, as the counters they name (pinned maps) do not survive a reboot either.
pub fn write(path: &Path, elements: &BytesSnapshot) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    file.write_all(b"[")?;
    elements.write_to(&mut file)?;
    file.write_all(b"]\n")?;
    file.into_inner().map_err(|e| e.into_error())?;
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
        assert!(cache.update(&counters), "never written");
        write(&path, &cache.elements()).unwrap();
        assert_eq!(read(&path).unwrap(), vec![]);
        assert!(!cache.update(&counters), "nothing new to write");
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
            assert!(cache.update(&counters), "a rule added");
            if index == 1 {
                // Written in between: later elements extend what was taken.
                write(&path, &cache.elements()).unwrap();
                assert_eq!(read(&path).unwrap().len(), 2);
            }
        }
        assert!(cache.update(&counters), "added since last taken");
        write(&path, &cache.elements()).unwrap();
        assert!(!cache.update(&counters), "nothing new to write");
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
