//! What each outcome of a published generation is called (the deciding rule or default,
//! and the `log` rules passed), kept in memory for the event reader and written to the run
//! directory, one file per generation, so that an agent started later names the events
//! the programs reported under an earlier agent's maps (they carry the generation and the
//! `PAL_OUTCOMES` index, and the ring buffer keeps them while no agent reads).
//!
//! Files rather than another pinned map: names are variable-length text only the agent
//! reads, the run directory already holds the rule counter names, and a generation's file
//! is replaced atomically with no ABI to keep. The lines themselves are appended to a
//! lines file that the generations between two full compiles share ([`NamesFiles`]).

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
    /// Counts the times the cache started over: while it stays the same, each publish's
    /// lines extend the last one's, which lets the files be appended to.
    epoch: u64,
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
            self.epoch += 1;
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

    /// Changes whenever [`NamesCache::lines`] stop extending the lines before.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn generation(&self, generation: u32, base: u32) -> GenerationNames {
        GenerationNames {
            generation,
            base,
            outcomes: self.names.clone(),
        }
    }
}

/// A generation's names file: this header on its first line, and then either its
/// outcomes' lines (as earlier agents wrote them) or nothing, when `lines` names the lines
/// file whose first `length` bytes they are.
#[derive(Serialize, Deserialize)]
struct Header {
    generation: u32,
    base: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lines: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
}

const PREFIX: &str = "outcomes.v";

pub fn path_of(run_dir: &Path, generation: u32) -> PathBuf {
    run_dir.join(format!(
        "{PREFIX}{}.g{generation}.jsonl",
        palisade_common::ABI_VERSION
    ))
}

/// The lines file begun at `generation`: named after it, so that an agent started later
/// (whose generations go on from the last) never writes over a file an earlier agent's
/// generations still name.
fn lines_name(generation: u32) -> String {
    format!(
        "{PREFIX}{}.lines-g{generation}.jsonl",
        palisade_common::ABI_VERSION
    )
}

/// Whether `name` is such a file (of any ABI version, or left half-written).
pub fn is_written_by_agent(name: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| {
        [".json", ".json.tmp", ".jsonl", ".jsonl.tmp"]
            .iter()
            .any(|end| rest.ends_with(end))
    })
}

/// Writes each published generation's names into the run directory, for agents started
/// later. Between full compiles a generation's outcomes extend the last one's, so their
/// lines go into one lines file, appended to publish by publish, and a generation's own
/// file is its header: which lines file, and how many of its bytes. Rewriting all the
/// lines for every generation (megabytes at 10,000 policies) took a quarter of the agent's
/// CPU per change.
///
/// Not synced to the disk: the events they name (in the ring buffer) do not survive a
/// reboot, only the agent process.
#[derive(Debug, Default)]
pub struct NamesFiles {
    lines: Option<LinesFile>,
}

#[derive(Debug)]
struct LinesFile {
    run_dir: PathBuf,
    /// The [`NamesCache::epoch`] whose lines it holds.
    epoch: u64,
    name: String,
    file: std::fs::File,
    /// Bytes written so far.
    length: usize,
}

impl NamesFiles {
    /// Writes the names of generation `generation` (`lines`, a [`NamesCache`]'s of
    /// `epoch`, from `PAL_OUTCOMES` index `base`) and removes the files of generations
    /// other than it and the one before it (events of older ones can no longer be in the
    /// ring buffer unread: the writer reuses a slot only after the generation before), and
    /// the lines files neither names.
    pub fn write(
        &mut self,
        run_dir: &Path,
        generation: u32,
        base: u32,
        epoch: u64,
        lines: &BytesSnapshot,
    ) -> std::io::Result<()> {
        let written = self.append(run_dir, generation, epoch, lines);
        let (name, length) = match written {
            Ok(at) => at,
            Err(e) => {
                // Unsure what the file holds now: the next generation starts a new one.
                self.lines = None;
                return Err(e);
            }
        };
        let path = path_of(run_dir, generation);
        let tmp = path.with_extension("jsonl.tmp");
        let header = Header {
            generation,
            base,
            lines: Some(name.clone()),
            length: Some(length as u64),
        };
        let mut text = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        text.push(b'\n');
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        remove_unnamed(run_dir, generation, &name)
    }

    /// Brings the lines file of `epoch` to `lines` (beginning one if `epoch` has none):
    /// its name and length.
    fn append(
        &mut self,
        run_dir: &Path,
        generation: u32,
        epoch: u64,
        lines: &BytesSnapshot,
    ) -> std::io::Result<(String, usize)> {
        let continues = self.lines.as_ref().is_some_and(|current| {
            current.epoch == epoch && current.run_dir == run_dir && current.length <= lines.len()
        });
        let current = match &mut self.lines {
            Some(current) if continues => current,
            _ => {
                std::fs::create_dir_all(run_dir)?;
                let name = lines_name(generation);
                let file = std::fs::File::create(run_dir.join(&name))?;
                self.lines.insert(LinesFile {
                    run_dir: run_dir.to_owned(),
                    epoch,
                    name,
                    file,
                    length: 0,
                })
            }
        };
        let mut out = std::io::BufWriter::new(&current.file);
        lines.write_from(current.length, &mut out)?;
        out.flush()?;
        current.length = lines.len();
        Ok((current.name.clone(), current.length))
    }
}

/// Removes this ABI's generation files other than `generation`'s and the one's before,
/// and the lines files neither names (`lines`: `generation`'s).
fn remove_unnamed(run_dir: &Path, generation: u32, lines: &str) -> std::io::Result<()> {
    let keep = [
        path_of(run_dir, generation),
        path_of(run_dir, generation.wrapping_sub(1)),
    ];
    let mut named = vec![lines.to_string()];
    if let Ok(Header {
        lines: Some(before),
        ..
    }) = read_header(&keep[1])
    {
        named.push(before);
    }
    let generations = format!("{PREFIX}{}.g", palisade_common::ABI_VERSION);
    let lines_files = format!("{PREFIX}{}.lines-g", palisade_common::ABI_VERSION);
    for entry in std::fs::read_dir(run_dir)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.ends_with(".jsonl") {
            continue;
        }
        let unnamed = (name.starts_with(&generations) && !keep.contains(&entry.path()))
            || (name.starts_with(&lines_files) && !named.iter().any(|n| n == name));
        if unnamed {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

fn read_header(path: &Path) -> std::io::Result<Header> {
    let file = std::fs::File::open(path)?;
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut first)?;
    serde_json::from_str(&first).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} line 1: {e}", path.display()),
        )
    })
}

pub fn read(run_dir: &Path, generation: u32) -> std::io::Result<GenerationNames> {
    let path = path_of(run_dir, generation);
    let text = std::fs::read_to_string(&path)?;
    let invalid = |path: &Path, line: usize, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} line {line}: {e}", path.display()),
        )
    };
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| invalid(&path, 1, &e))?;
    let (lines_path, body, first_line) = match (&header.lines, header.length) {
        (Some(name), Some(length)) => {
            // Only a file of ours, in the same directory.
            if name.contains('/') || !is_written_by_agent(name) {
                return Err(invalid(&path, 1, &format!("not a lines file: {name:?}")));
            }
            let lines_path = run_dir.join(name);
            let mut bytes = std::fs::read(&lines_path)?;
            let length = usize::try_from(length).unwrap_or(usize::MAX);
            if bytes.len() < length {
                return Err(invalid(
                    &lines_path,
                    0,
                    &format!("{} bytes, the generation has {length}", bytes.len()),
                ));
            }
            bytes.truncate(length);
            let body = String::from_utf8(bytes).map_err(|e| invalid(&lines_path, 0, &e))?;
            (lines_path, body, 1)
        }
        (None, None) => (path.clone(), lines.collect::<Vec<_>>().join("\n"), 2),
        _ => return Err(invalid(&path, 1, &"`lines` and `length` go together")),
    };
    let outcomes = body
        .lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str::<OutcomeName>(line)
                .map(Arc::new)
                .map_err(|e| invalid(&lines_path, i + first_line, &e))
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
        let mut files = NamesFiles::default();
        for g in 1..=4 {
            // Each generation starts over (a new epoch), as after full compiles.
            let lines = cache_of(&names(g)).lines();
            files
                .write(dir.path(), g, 100, u64::from(g), &lines)
                .unwrap();
        }
        assert!(read(dir.path(), 2).is_err());
        assert_eq!(read(dir.path(), 3).unwrap(), names(3));
        let last = read(dir.path(), 4).unwrap();
        assert_eq!(last.name(100).unwrap().owner.as_deref(), Some("p"));
        assert!(last.name(99).is_none() && last.name(101).is_none());
        // Generation files of 3 and 4, and the lines file each names.
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let v = palisade_common::ABI_VERSION;
        assert_eq!(
            left,
            [
                format!("outcomes.v{v}.g3.jsonl"),
                format!("outcomes.v{v}.g4.jsonl"),
                format!("outcomes.v{v}.lines-g3.jsonl"),
                format!("outcomes.v{v}.lines-g4.jsonl"),
            ]
        );
        assert!(left.iter().all(|name| is_written_by_agent(name)));
    }

    #[test]
    fn generations_between_full_compiles_append_to_one_lines_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = NamesFiles::default();
        let mut cache = NamesCache::default();
        let outcomes: Vec<Outcome> = (0..6).map(|i| missing(&format!("p{i}"))).collect();
        let lines_file = dir.path().join(lines_name(10));
        for (g, count) in [(10u32, 2usize), (11, 2), (12, 4), (13, 6)] {
            cache.update(&outcomes[..count], true);
            let before = std::fs::metadata(&lines_file).map(|m| m.len()).ok();
            files
                .write(dir.path(), g, 7, cache.epoch(), &cache.lines())
                .unwrap();
            let read_back = read(dir.path(), g).unwrap();
            assert_eq!(read_back, cache.generation(g, 7), "generation {g}");
            // Only appended to: what was there is still there, unchanged.
            let after = std::fs::read(&lines_file).unwrap();
            if let Some(before) = before {
                assert!(after.len() as u64 >= before);
            }
        }
        // The generation before still reads its own (shorter) names from the shared file.
        assert_eq!(read(dir.path(), 12).unwrap().outcomes.len(), 4);
        // A full compile starts a new lines file; the old one goes once no kept
        // generation names it.
        cache.update(&outcomes[3..4], false);
        files
            .write(dir.path(), 14, 7, cache.epoch(), &cache.lines())
            .unwrap();
        assert_eq!(read(dir.path(), 14).unwrap().outcomes.len(), 1);
        assert_eq!(read(dir.path(), 13).unwrap().outcomes.len(), 6);
        assert!(lines_file.exists(), "generation 13 still names it");
        cache.update(&outcomes[3..5], true);
        files
            .write(dir.path(), 15, 7, cache.epoch(), &cache.lines())
            .unwrap();
        assert!(!lines_file.exists(), "no kept generation names it");
        assert_eq!(read(dir.path(), 15).unwrap().outcomes.len(), 2);
    }

    #[test]
    fn an_agent_started_later_writes_beside_an_earlier_ones_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut earlier = NamesFiles::default();
        let mut first = cache_of(&names(1));
        earlier
            .write(dir.path(), 20, 100, first.epoch(), &first.lines())
            .unwrap();
        // A new agent: its cache and writer start afresh, at the next generation.
        let mut later = NamesFiles::default();
        let mut second = cache_of(&names(2));
        later
            .write(dir.path(), 21, 100, second.epoch(), &second.lines())
            .unwrap();
        assert_eq!(read(dir.path(), 20).unwrap().outcomes, names(1).outcomes);
        assert_eq!(read(dir.path(), 21).unwrap().outcomes, names(2).outcomes);
    }

    #[test]
    fn files_of_the_older_layout_and_bad_headers() {
        let dir = tempfile::tempdir().unwrap();
        // Lines in the generation's own file, as agents before the lines files wrote it.
        let lines = String::from_utf8(cache_of(&names(5)).lines().to_vec()).unwrap();
        std::fs::write(
            path_of(dir.path(), 5),
            format!("{{\"generation\":5,\"base\":100}}\n{lines}"),
        )
        .unwrap();
        assert_eq!(read(dir.path(), 5).unwrap(), names(5));
        for header in [
            r#"{"generation":6,"base":1,"lines":"../etc/passwd","length":3}"#,
            r#"{"generation":6,"base":1,"lines":"outcomes.v5.lines-g6.jsonl"}"#,
            r#"{"generation":6,"base":1,"lines":"outcomes.v5.lines-g1.jsonl","length":3}"#,
        ] {
            std::fs::write(path_of(dir.path(), 6), format!("{header}\n")).unwrap();
            assert!(read(dir.path(), 6).is_err(), "{header}");
        }
        // A lines file shorter than the generation says: an error, not fewer names.
        std::fs::write(dir.path().join(lines_name(7)), "{}\n").unwrap();
        std::fs::write(
            path_of(dir.path(), 7),
            format!(
                "{{\"generation\":7,\"base\":1,\"lines\":\"{}\",\"length\":99}}\n",
                lines_name(7)
            ),
        )
        .unwrap();
        let error = read(dir.path(), 7).unwrap_err().to_string();
        assert!(error.contains("the generation has 99"), "{error}");
    }
}
