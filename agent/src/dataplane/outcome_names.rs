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
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::growing_bytes::{BytesSnapshot, GrowingBytes};
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
/// Generations share the names they have in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationNames {
    pub generation: u32,
    pub base: u32,
    pub outcomes: Vec<Arc<OutcomeName>>,
}

impl GenerationNames {
    /// The name of `PAL_OUTCOMES` index `outcome`, if it is one of this generation's.
    pub fn name(&self, outcome: u32) -> Option<&OutcomeName> {
        outcome
            .checked_sub(self.base)
            .and_then(|i| self.outcomes.get(i as usize))
            .map(|name| &**name)
    }
}

/// The names of the outcomes last published, and their lines in a names file. Between
/// full compiles outcomes are only appended, so a publish names (and serialises) only the
/// new ones: naming tens of thousands of outcomes on every policy change would cost
/// seconds at 10,000 policies.
#[derive(Debug, Default)]
pub struct NamesCache {
    names: Vec<Arc<OutcomeName>>,
    lines: GrowingBytes,
}

impl NamesCache {
    /// Brings the cache to `outcomes`. `appended`: they extend the outcomes of the last
    /// call (no full compile since), so only the new ones are named.
    pub fn update(&mut self, outcomes: &[Outcome], appended: bool) {
        // A cheap check on the promise: the ends of what is cached are still the same.
        let same_ends = |i: usize| {
            outcomes.get(i).map(OutcomeName::of).as_ref() == self.names.get(i).map(|n| &**n)
        };
        let kept = appended
            && outcomes.len() >= self.names.len()
            && (self.names.is_empty() || (same_ends(0) && same_ends(self.names.len() - 1)));
        if !kept {
            self.names.clear();
            self.lines.clear();
        }
        for outcome in &outcomes[self.names.len()..] {
            let name = OutcomeName::of(outcome);
            // A struct of strings always serialises.
            let lines = self.lines.open();
            if serde_json::to_writer(&mut *lines, &name).is_ok() {
                lines.push(b'\n');
            }
            self.names.push(Arc::new(name));
        }
    }

    /// The names file's lines after its header: one [`OutcomeName`] per line. Shared,
    /// not copied: the writer thread gets them on every publish.
    pub fn lines(&mut self) -> BytesSnapshot {
        self.lines.snapshot()
    }

    pub fn generation(&self, generation: u32, base: u32) -> GenerationNames {
        GenerationNames {
            generation,
            base,
            outcomes: self.names.clone(),
        }
    }
}

/// A names file's first line; each later line is one outcome's [`OutcomeName`].
#[derive(Serialize, Deserialize)]
struct Header {
    generation: u32,
    base: u32,
}

const PREFIX: &str = "outcomes.v";

pub fn path_of(run_dir: &Path, generation: u32) -> PathBuf {
    run_dir.join(format!(
        "{PREFIX}{}.g{generation}.jsonl",
        palisade_common::ABI_VERSION
    ))
}

/// Whether `name` is such a file (of any ABI version, or left half-written).
pub fn is_written_by_agent(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        [".json", ".json.tmp", ".jsonl", ".jsonl.tmp"]
            .iter()
            .any(|end| rest.ends_with(end))
    })
}

/// Writes the names of generation `generation` (`lines`, a [`NamesCache`]'s, from
/// `PAL_OUTCOMES` index `base`) atomically and removes the files of generations other than it and the one
/// before it (events of older ones can no longer be in the ring buffer unread: the writer
/// reuses a slot only after the generation before).
///
/// Not synced to the disk: the events they name (in the ring buffer) do not survive a
/// reboot, only the agent process.
pub fn write(
    run_dir: &Path,
    generation: u32,
    base: u32,
    lines: &BytesSnapshot,
) -> std::io::Result<()> {
    std::fs::create_dir_all(run_dir)?;
    let path = path_of(run_dir, generation);
    let tmp = path.with_extension("jsonl.tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer(&mut file, &Header { generation, base })
        .map_err(std::io::Error::other)?;
    file.write_all(b"\n")?;
    lines.write_to(&mut file)?;
    file.into_inner().map_err(|e| e.into_error())?;
    std::fs::rename(&tmp, &path)?;
    let keep = [path, path_of(run_dir, generation.wrapping_sub(1))];
    let this_abi = format!("{PREFIX}{}.g", palisade_common::ABI_VERSION);
    for entry in std::fs::read_dir(run_dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&this_abi) && name.ends_with(".jsonl") && !keep.contains(&entry.path())
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

pub fn read(run_dir: &Path, generation: u32) -> std::io::Result<GenerationNames> {
    let path = path_of(run_dir, generation);
    let text = std::fs::read_to_string(&path)?;
    let invalid = |line: usize, e: serde_json::Error| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} line {line}: {e}", path.display()),
        )
    };
    let mut lines = text.lines();
    let header: Header =
        serde_json::from_str(lines.next().unwrap_or_default()).map_err(|e| invalid(1, e))?;
    let outcomes = lines
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<OutcomeName>(line)
                .map(Arc::new)
                .map_err(|e| invalid(i + 2, e))
        })
        .collect::<Result<_, _>>()?;
    Ok(GenerationNames {
        generation: header.generation,
        base: header.base,
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(generation: u32) -> GenerationNames {
        GenerationNames {
            generation,
            base: 100,
            outcomes: vec![Arc::new(OutcomeName {
                rule: format!("policy p ingress rule {generation} (deny)"),
                owner: Some("p".to_string()),
                logged: vec![],
            })],
        }
    }

    fn cache_of(names: &GenerationNames) -> NamesCache {
        let mut cache = NamesCache::default();
        for name in &names.outcomes {
            serde_json::to_writer(&mut *cache.lines.open(), &**name).unwrap();
            cache.lines.open().push(b'\n');
            cache.names.push(Arc::clone(name));
        }
        cache
    }

    fn missing(profile: &str) -> Outcome {
        Outcome {
            verdict: crate::policy::Verdict::Deny,
            reason: crate::policy::Reason::MissingProfile(profile.to_string()),
            logged: vec![],
        }
    }

    fn rules(cache: &NamesCache) -> Vec<String> {
        cache.names.iter().map(|n| n.rule.clone()).collect()
    }

    #[test]
    fn a_publish_names_only_the_outcomes_appended_since_the_last() {
        let (a, b, c) = (missing("a"), missing("b"), missing("c"));
        let mut cache = NamesCache::default();
        cache.update(&[a.clone(), b.clone()], true);
        let first = Arc::clone(&cache.names[0]);
        cache.update(&[a.clone(), b.clone(), c.clone()], true);
        assert_eq!(cache.names.len(), 3);
        assert!(Arc::ptr_eq(&first, &cache.names[0]), "named again");
        assert_eq!(
            String::from_utf8(cache.lines().to_vec())
                .unwrap()
                .lines()
                .count(),
            3
        );
        // A full compile starts over; so does a list whose ends differ from the cache's.
        cache.update(std::slice::from_ref(&c), false);
        assert_eq!(
            rules(&cache),
            rules(&{
                let mut fresh = NamesCache::default();
                fresh.update(std::slice::from_ref(&c), false);
                fresh
            })
        );
        cache.update(&[b.clone(), a.clone()], true);
        assert_eq!(cache.names.len(), 2);
        assert_eq!(cache.names[0].rule, OutcomeName::of(&b).rule);
        let generation = cache.generation(7, 40);
        assert_eq!(generation.name(41).unwrap().rule, OutcomeName::of(&a).rule);
    }

    #[test]
    fn keeps_the_generation_and_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        for g in 1..=4 {
            write(dir.path(), g, 100, &cache_of(&names(g)).lines()).unwrap();
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
