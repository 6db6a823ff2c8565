//! Writes the name files of the run directory (rule counter names, outcome names) on a
//! thread of its own, so that the agent's loop goes on to the next change while they are
//! written: only readers in other processes (`palisade stats`, metrics of a later agent,
//! an agent started later naming old events) need them, never the flip.
//!
//! What a reader can see: after a flip, a rule counter index, or an outcome of the new
//! generation, may lack its name in the files until the thread has written them, one
//! file write later (a millisecond or so on an idle disk). The agent names its own events
//! from memory, set before the loop goes on. Rule names are only appended between writes,
//! so when publishes come faster than the disk, the thread writes the latest list once and
//! skips the ones it made obsolete; every generation's outcome names are written, in order.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use super::growing_bytes::BytesSnapshot;
use super::{outcome_names, rule_names};
use crate::log;

enum Job {
    /// The rule names file's array elements, as [`rule_names::RuleNamesCache`] made them.
    Rules {
        path: PathBuf,
        elements: BytesSnapshot,
    },
    /// One generation's outcome names.
    Outcomes {
        run_dir: PathBuf,
        generation: u32,
        base: u32,
        /// The [`outcome_names::NamesCache::epoch`] of `lines`.
        epoch: u64,
        lines: BytesSnapshot,
    },
    Stop,
}

/// Where a publish hands its name files; cheap to clone.
#[derive(Clone)]
pub struct NamesHandle {
    jobs: Sender<Job>,
}

impl NamesHandle {
    pub fn rules(&self, path: PathBuf, elements: BytesSnapshot) {
        self.send(Job::Rules { path, elements });
    }

    pub fn outcomes(
        &self,
        run_dir: PathBuf,
        generation: u32,
        base: u32,
        epoch: u64,
        lines: BytesSnapshot,
    ) {
        self.send(Job::Outcomes {
            run_dir,
            generation,
            base,
            epoch,
            lines,
        });
    }

    fn send(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            log::warn(
                "the name files' writer has stopped; `palisade stats` and agents started \
                 later may show indexes instead of names",
                &[],
            );
        }
    }
}

/// The thread; dropping it writes what was handed in before and stops it.
pub struct NamesWriter {
    handle: NamesHandle,
    thread: Option<JoinHandle<()>>,
}

impl NamesWriter {
    pub fn start() -> std::io::Result<NamesWriter> {
        let (jobs, queue) = channel();
        let thread = std::thread::Builder::new()
            .name("name-files".to_string())
            .spawn(move || write_all(queue))?;
        Ok(NamesWriter {
            handle: NamesHandle { jobs },
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> NamesHandle {
        self.handle.clone()
    }
}

impl Drop for NamesWriter {
    fn drop(&mut self) {
        let _ = self.handle.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_all(queue: Receiver<Job>) {
    let mut outcome_files = outcome_names::NamesFiles::default();
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        jobs.extend(queue.try_iter());
        let stop = jobs.iter().any(|j| matches!(j, Job::Stop));
        // Only the last rule names matter: each list extends the one before.
        let last_rules = jobs.iter().rposition(|j| matches!(j, Job::Rules { .. }));
        for (i, job) in jobs.into_iter().enumerate() {
            match job {
                Job::Rules { path, elements } if Some(i) == last_rules => {
                    if let Err(e) = rule_names::write(&path, &elements) {
                        log::warn(
                            "cannot write the rule counter names; `palisade stats` will show \
                             indexes",
                            &[("path", &path.display()), ("error", &e)],
                        );
                    }
                }
                Job::Outcomes {
                    run_dir,
                    generation,
                    base,
                    epoch,
                    lines,
                } => {
                    if let Err(e) = outcome_files.write(&run_dir, generation, base, epoch, &lines) {
                        log::warn(
                            "cannot write the outcome names; an agent started later names \
                             this generation's events `-`",
                            &[("dir", &run_dir.display()), ("error", &e)],
                        );
                    }
                }
                Job::Rules { .. } | Job::Stop => {}
            }
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_handed_in_is_on_disk_once_the_writer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rule_names::path_in(dir.path());
        let writer = NamesWriter::start().unwrap();
        let handle = writer.handle();
        for generation in 1..=3u32 {
            handle.rules(
                rules.clone(),
                format!("{{\"index\":0,\"rule\":\"g{generation}\"}}")
                    .into_bytes()
                    .into(),
            );
            let line = format!("{{\"rule\":\"g{generation}\",\"owner\":null,\"logged\":[]}}\n");
            handle.outcomes(
                dir.path().to_owned(),
                generation,
                10,
                u64::from(generation),
                line.into_bytes().into(),
            );
        }
        drop(writer);
        assert_eq!(rule_names::read(&rules).unwrap()[0].rule, "g3");
        for generation in [2, 3] {
            let names = outcome_names::read(dir.path(), generation).unwrap();
            assert_eq!(names.name(10).unwrap().rule, format!("g{generation}"));
        }
        assert!(outcome_names::read(dir.path(), 1).is_err(), "kept too many");
        // A handle outliving the writer only warns.
        handle.rules(rules, BytesSnapshot::default());
    }
}
