//! What each outcome of a published generation is called (the deciding rule or default,
//! and the `log` rules passed), kept in memory for the event reader and written to the run
//! directory, one file per generation, so that an agent started later names the events
//! the programs reported under an earlier agent's maps (they carry the generation and the
//! `PAL_OUTCOMES` index, and the ring buffer keeps them while no agent reads).
//!
//! Files rather than another pinned map: names are variable-length text only the agent
//! reads, the run directory already holds the rule counter names, and a file per
//! generation is replaced atomically with no ABI to keep.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compile::Outcome;
use crate::policy::RuleOwner;

/// An outcome, as people read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeName {
    /// The deciding rule (`policy P ingress rule 2 (allow)`) or default.
    pub rule: String,
    /// The policy or profile the deciding rule belongs to, if a rule decided.
    pub owner: Option<String>,
    /// The `log` rules passed on the way, in order.
    pub logged: Vec<String>,
}

impl OutcomeName {
    pub fn of(outcome: &Outcome) -> OutcomeName {
        OutcomeName {
            rule: match outcome.rule() {
                Some(r) => r.to_string(),
                None => outcome.reason.to_string(),
            },
            owner: outcome.rule().map(|r| match &r.owner {
                RuleOwner::Policy(name) | RuleOwner::Profile(name) => name.clone(),
            }),
            logged: outcome.logged.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The names of one generation's outcomes; `PAL_OUTCOMES` index `base + i` is `outcomes[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationNames {
    pub generation: u32,
    pub base: u32,
    pub outcomes: Vec<OutcomeName>,
}

impl GenerationNames {
    pub fn of(generation: u32, base: u32, outcomes: &[Outcome]) -> GenerationNames {
        GenerationNames {
            generation,
            base,
            outcomes: outcomes.iter().map(OutcomeName::of).collect(),
        }
    }

    /// The name of `PAL_OUTCOMES` index `outcome`, if it is one of this generation's.
    pub fn name(&self, outcome: u32) -> Option<&OutcomeName> {
        outcome
            .checked_sub(self.base)
            .and_then(|i| self.outcomes.get(i as usize))
    }
}

const PREFIX: &str = "outcomes.v";

pub fn path_of(run_dir: &Path, generation: u32) -> PathBuf {
    run_dir.join(format!(
        "{PREFIX}{}.g{generation}.json",
        palisade_common::ABI_VERSION
    ))
}

/// Whether `name` is such a file (of any ABI version, or left half-written).
pub fn is_written_by_agent(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|rest| rest.ends_with(".json") || rest.ends_with(".json.tmp"))
}

/// Writes `names` atomically and removes the files of generations other than it and the
/// one before it (events of older ones can no longer be in the ring buffer unread: the
/// writer reuses a slot only after the generation before).
pub fn write(run_dir: &Path, names: &GenerationNames) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let path = path_of(run_dir, names.generation);
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    serde_json::to_writer(&mut file, names).map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    let keep = [path, path_of(run_dir, names.generation.wrapping_sub(1))];
    let this_abi = format!("{PREFIX}{}.g", palisade_common::ABI_VERSION);
    for entry in std::fs::read_dir(run_dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&this_abi) && name.ends_with(".json") && !keep.contains(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

pub fn read(run_dir: &Path, generation: u32) -> std::io::Result<GenerationNames> {
    let path = path_of(run_dir, generation);
    let bytes = std::fs::read(&path)?;
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

    fn names(generation: u32) -> GenerationNames {
        GenerationNames {
            generation,
            base: 100,
            outcomes: vec![OutcomeName {
                rule: format!("policy p ingress rule {generation} (deny)"),
                owner: Some("p".to_string()),
                logged: vec![],
            }],
        }
    }

    #[test]
    fn keeps_the_generation_and_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        for g in 1..=4 {
            write(dir.path(), &names(g)).unwrap();
        }
        assert!(read(dir.path(), 2).is_err());
        assert_eq!(read(dir.path(), 3).unwrap(), names(3));
        let last = read(dir.path(), 4).unwrap();
        assert_eq!(last.name(100).unwrap().owner.as_deref(), Some("p"));
        assert!(last.name(99).is_none() && last.name(101).is_none());
        assert!(is_written_by_agent(
            path_of(dir.path(), 4)
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
        ));
    }
}
