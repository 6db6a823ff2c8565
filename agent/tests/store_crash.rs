//! Crash safety of the file store: a writer process is killed with SIGKILL at random
//! moments (during startup recovery, mid-commit, mid-compaction), and after each kill the
//! store must hold every acknowledged commit, no partial commit, at most one commit that
//! was never acknowledged, and consecutive revisions.
//!
//! The writer is this test binary itself, re-executed to run only [`crash_writer_child`]
//! with [`DIR_ENV`] set; without it, that test returns at once.

// A test fails by panicking; unwrapping is how these tests say "this must work".
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade::model::{Kind, Profile, ProfileMetadata, Resource};
use palisade::store::file::{FileStore, FileStoreOptions};
use palisade::store::{Change, Datastore, Op, StoreError};

/// Set for the child: the store directory it writes to.
const DIR_ENV: &str = "PALISADE_STORE_CRASH_DIR";
/// Set for the child: compact after this many commits.
const COMPACT_ENV: &str = "PALISADE_STORE_CRASH_COMPACT_EVERY";
/// Set to replay a failing run: the seed it printed.
const SEED_ENV: &str = "PALISADE_STORE_CRASH_SEED";
const CHILD_TEST: &str = "crash_writer_child";
const ROUNDS: usize = 48;
const LETTERS: [&str; 3] = ["a", "b", "c"];

fn profile(name: String) -> Resource {
    Resource::Profile(Profile {
        metadata: ProfileMetadata {
            name,
            ..Default::default()
        },
        spec: Default::default(),
    })
}

/// Splits `a-17` into (`a`, 17).
fn sequence_of(resource: &Resource) -> (String, u64) {
    let Resource::Profile(p) = resource else {
        panic!("unexpected resource {resource:?}")
    };
    let (letter, n) = p.metadata.name.split_once('-').unwrap();
    (letter.to_string(), n.parse().unwrap())
}

/// The writer: commits `a-n`, `b-n`, `c-n` in one transaction for n = 1, 2, ... (carrying
/// on after what is in the store) and prints `ack n` once each commit returned, until
/// it is killed.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let compact_every = std::env::var(COMPACT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let options = FileStoreOptions {
        compact_after_bytes: 4 << 20,
        compact_after_commits: compact_every,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = FileStore::open_with_options(Path::new(&dir), options).unwrap();
        let listed = store.list(Some(Kind::Profile)).await.unwrap();
        let start = listed
            .resources
            .iter()
            .map(|r| sequence_of(r).1)
            .max()
            .unwrap_or(0)
            + 1;
        let mut stdout = std::io::stdout();
        for n in start.. {
            let ops = LETTERS
                .iter()
                .map(|letter| Op::Create {
                    resource: profile(format!("{letter}-{n}")),
                    skip_existing: false,
                })
                .collect();
            store.commit(ops).await.unwrap();
            writeln!(stdout, "ack {n}").unwrap();
            stdout.flush().unwrap();
        }
    });
}

/// xorshift64: enough randomness for kill timings, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// When the writer is killed.
#[derive(Clone, Copy)]
enum KillAt {
    /// This long after it was started: during startup and recovery, before any commit.
    AfterStart(Duration),
    /// This long after its first acknowledged commit: mid-commit or mid-compaction. Timed
    /// from the first ack rather than from the start, so that a slow start (a cold cache,
    /// a loaded machine) does not turn these rounds into startup kills.
    AfterFirstAck(Duration),
}

/// Runs the writer, kills it with SIGKILL at `kill_at`, and returns the last n it acked.
fn run_and_kill_writer(dir: &Path, compact_every: u64, kill_at: KillAt) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(COMPACT_ENV, compact_every.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (first_ack_tx, first_ack) = std::sync::mpsc::channel();
    // Read until the pipe closes (the child is dead), so no ack printed before the kill is
    // missed.
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            // The harness may have printed "test crash_writer_child ... " on the same line.
            if let Some((_, n)) = line.split_once("ack ") {
                if last.is_none() {
                    let _ = first_ack_tx.send(());
                }
                last = Some(n.trim().parse::<u64>().unwrap());
            }
        }
        last
    });
    match kill_at {
        KillAt::AfterStart(delay) => std::thread::sleep(delay),
        KillAt::AfterFirstAck(delay) => {
            first_ack
                .recv_timeout(Duration::from_secs(60))
                .expect("the writer acknowledged no commit within 60 s");
            std::thread::sleep(delay);
        }
    }
    if let Some(status) = child.try_wait().unwrap() {
        panic!("the writer exited on its own ({status}); see its output above");
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    reader.join().unwrap()
}

/// Checks the store after a kill and returns the highest n in it.
async fn check_store(dir: &Path, committed_before: u64, acked: Option<u64>) -> u64 {
    let store = FileStore::open(dir).unwrap();
    let listed = store.list(None).await.unwrap();

    let mut letters_by_n: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for resource in &listed.resources {
        let (letter, n) = sequence_of(resource);
        letters_by_n.entry(n).or_default().push(letter);
    }
    for (n, letters) in &letters_by_n {
        assert_eq!(letters.len(), 3, "commit {n} is partial: {letters:?}");
    }
    let highest = letters_by_n.keys().next_back().copied().unwrap_or(0);
    assert_eq!(
        letters_by_n.keys().copied().collect::<Vec<_>>(),
        (1..=highest).collect::<Vec<_>>(),
        "commits are missing"
    );
    let must_have = committed_before.max(acked.unwrap_or(0));
    assert!(
        highest >= must_have,
        "acknowledged commit {must_have} is lost (store has up to {highest})"
    );
    assert!(
        highest <= must_have + 1,
        "store has {highest}, more than one commit beyond the last acknowledged {must_have}"
    );
    // One revision per commit, nothing else.
    assert_eq!(listed.revision, highest);

    // The kept history: consecutive revisions, each one whole commit.
    let from = match store.watch(0).await {
        Ok(_) => 0,
        Err(StoreError::Compacted { oldest, .. }) => oldest,
        Err(e) => panic!("{e}"),
    };
    let mut watch = store.watch(from).await.unwrap();
    for revision in from + 1..=highest {
        let mut names = Vec::new();
        for _ in 0..3 {
            let change = tokio::time::timeout(Duration::from_secs(5), watch.recv())
                .await
                .expect("watch stalled")
                .expect("watch ended")
                .unwrap();
            let Change::Put {
                revision: r,
                resource,
            } = change
            else {
                panic!("unexpected {change:?}")
            };
            assert_eq!(r, revision);
            let (letter, n) = sequence_of(&resource);
            assert_eq!(n, revision);
            names.push(letter);
        }
        assert_eq!(names, LETTERS);
    }
    highest
}

#[tokio::test]
async fn acknowledged_commits_survive_sigkill_and_none_is_partial() {
    if std::env::var_os(DIR_ENV).is_some() {
        return;
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test seed: {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut committed = 0;
    let mut kills_after_acks = 0;
    for round in 0..ROUNDS {
        // Compacting after every 1 or 2 commits makes most kills land in a compaction.
        let compact_every = match round % 3 {
            0 => 1,
            1 => 2,
            _ => 1000,
        };
        // Some kills land during startup and recovery, before any commit.
        let kill_at = if round % 6 == 0 {
            KillAt::AfterStart(Duration::from_millis(rng.below(3)))
        } else {
            KillAt::AfterFirstAck(Duration::from_millis(rng.below(151)))
        };
        let acked = run_and_kill_writer(dir.path(), compact_every, kill_at);
        if acked.is_some() {
            kills_after_acks += 1;
        }
        let highest = check_store(dir.path(), committed, acked).await;
        committed = highest;
    }
    println!(
        "{ROUNDS} kills ({kills_after_acks} after some acks), {committed} commits, {:?}",
        started.elapsed()
    );
    assert!(committed > 0 && kills_after_acks >= ROUNDS / 4);
}
