//! What only the embedded file store does: revisions that count commits one by one, a
//! private directory, compaction of its log, concurrent writers in several processes'
//! worth of threads, and recovery from damaged files. The `Datastore` contract both
//! backends keep (op semantics, atomicity, lists, watches) is `store_contract.rs`.

// A test fails by panicking; unwrapping is how these tests say "this must work".
#![allow(clippy::unwrap_used)]

use std::path::Path;

use palisade::store::file::{FileStore, FileStoreOptions};
use palisade::store::{Datastore, Op, StoreError};

#[path = "common/store_ops.rs"]
mod store_ops;
use store_ops::{create, delete, key, names, next, profile, put};

#[tokio::test]
async fn revisions_count_commits_and_the_directory_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("nested/store");
    let store = FileStore::open(&store_dir).unwrap();
    assert_eq!(store.list(None).await.unwrap().revision, 0);
    for i in 1..=3u64 {
        let out = store
            .commit(vec![create(profile(&format!("p{i}"), "1"))])
            .await
            .unwrap();
        assert_eq!(out.revision, i);
    }
    let skip = Op::Delete {
        key: key("none"),
        skip_missing: true,
    };
    assert_eq!(store.commit(vec![skip]).await.unwrap().revision, 3);
    let out = store.commit(vec![delete("p1")]).await.unwrap();
    assert_eq!(out.revision, 4);
    let mode = std::fs::metadata(&store_dir).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
}

fn small_log() -> FileStoreOptions {
    FileStoreOptions {
        compact_after_bytes: 1 << 20,
        compact_after_commits: 5,
    }
}

#[tokio::test]
async fn compaction_keeps_state_and_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_options(dir.path(), small_log()).unwrap();
    let mut early_watch = store.watch(0).await.unwrap();
    for i in 1..=23u64 {
        let resource = profile(&format!("p{}", i % 7), &i.to_string());
        store
            .commit(vec![Op::Apply(resource.clone())])
            .await
            .unwrap();
        // A watch that keeps up crosses every generation.
        assert_eq!(next(&mut early_watch).await.unwrap(), put(i, resource));
    }

    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.revision, 23);
    assert_eq!(listed.resources.len(), 7);
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.list(None).await.unwrap(), listed);

    match store.watch(0).await {
        Err(StoreError::Compacted { requested, oldest }) => {
            assert_eq!(requested, 0);
            assert!((15..=20).contains(&oldest), "oldest {oldest}");
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    // At least the last compaction's worth of commits stays watchable.
    let mut recent = store.watch(23 - 5).await.unwrap();
    for i in 19..=23u64 {
        assert_eq!(next(&mut recent).await.unwrap().revision(), i);
    }
    // Only the live generation and the one before it stay on disk.
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
}

#[tokio::test]
async fn history_starts_exactly_after_the_oldest_kept_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open_with_options(dir.path(), small_log()).unwrap();
    for i in 1..=12u64 {
        store
            .commit(vec![Op::Apply(profile("a", &i.to_string()))])
            .await
            .unwrap();
    }
    // Generations start at 0, 5 and 10; the live one (10) and the one before (5) are kept.
    assert_eq!(
        store.watch(4).await.unwrap_err(),
        StoreError::Compacted {
            requested: 4,
            oldest: 5
        }
    );
    let mut watch = store.watch(5).await.unwrap();
    for i in 6..=12u64 {
        assert_eq!(
            next(&mut watch).await.unwrap(),
            put(i, profile("a", &i.to_string()))
        );
    }
}

#[test]
fn concurrent_writers_lose_nothing() {
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions {
        compact_after_bytes: 1 << 20,
        compact_after_commits: 60,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let watcher = FileStore::open(dir.path()).unwrap();
    let mut watch = runtime.block_on(watcher.watch(0)).unwrap();

    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let store = FileStore::open_with_options(&path, options).unwrap();
                let mut revisions = Vec::new();
                for i in 0..EACH {
                    let op = create(profile(&format!("w{w}-{i}"), "1"));
                    revisions.push(runtime.block_on(store.commit(vec![op])).unwrap().revision);
                }
                revisions
            })
        })
        .collect();
    let mut acknowledged: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    acknowledged.sort();
    let total = (WRITERS * EACH) as u64;
    assert_eq!(acknowledged, (1..=total).collect::<Vec<_>>());

    let listed = runtime.block_on(watcher.list(None)).unwrap();
    assert_eq!(listed.revision, total);
    assert_eq!(listed.resources.len(), WRITERS * EACH);

    let seen: Vec<u64> = runtime.block_on(async {
        let mut seen = Vec::new();
        while seen.len() < WRITERS * EACH {
            seen.push(next(&mut watch).await.unwrap().revision());
        }
        seen
    });
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

#[tokio::test]
async fn several_tasks_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FileStore::open(dir.path()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    store
                        .commit(vec![create(profile(&format!("t{t}-{i}"), "1"))])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let listed = store.list(None).await.unwrap();
    assert_eq!((listed.revision, listed.resources.len()), (80, 80));
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    let generation = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(format!("log.{}", generation.trim()))
}

#[tokio::test]
async fn an_unfinished_record_at_the_end_is_dropped_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.commit(vec![create(profile("a", "1"))]).await.unwrap();
    store.commit(vec![create(profile("b", "1"))]).await.unwrap();
    drop(store);

    // Cut the last record short, as a writer killed mid-write would leave it.
    let log = log_path(dir.path());
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 5).unwrap();

    let reader = FileStore::open(dir.path()).unwrap();
    assert_eq!(names(&reader).await, ["a"]);
    assert_eq!(reader.list(None).await.unwrap().revision, 1);
    let out = reader
        .commit(vec![create(profile("c", "1"))])
        .await
        .unwrap();
    assert_eq!(out.revision, 2);
    drop(reader);
    let again = FileStore::open(dir.path()).unwrap();
    assert_eq!(names(&again).await, ["a", "c"]);
}

#[tokio::test]
async fn a_damaged_record_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for name in ["a", "b", "c"] {
        store
            .commit(vec![create(profile(name, "1"))])
            .await
            .unwrap();
    }
    drop(store);
    let log = log_path(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    // Flip a byte inside the first commit's JSON (after the header record).
    let target = bytes
        .windows(4)
        .position(|w| w == b"\"a\"," || w == b"\"a\"}")
        .unwrap();
    bytes[target + 1] = b'x';
    std::fs::write(&log, &bytes).unwrap();

    match FileStore::open(dir.path()) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("log."), "{message}"),
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("expected Corrupt"),
    }
}

#[tokio::test]
async fn an_unparsable_snapshot_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("snapshot.1"), b"not a snapshot").unwrap();
    assert!(matches!(
        FileStore::open(dir.path()),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn an_unusable_directory_is_unavailable_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    match FileStore::open(&file.join("store")) {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("plain-file"), "{message}")
        }
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("expected Unavailable"),
    }
}

#[tokio::test]
async fn a_damaged_last_record_is_corruption_and_the_message_says_how_to_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for name in ["a", "b", "c"] {
        store
            .commit(vec![create(profile(name, "1"))])
            .await
            .unwrap();
    }
    drop(store);
    // Bit rot in the last record, which was acknowledged: not an unfinished write, so it
    // must not be dropped quietly.
    let log = log_path(dir.path());
    let mut bytes = std::fs::read(&log).unwrap();
    let target = bytes
        .windows(4)
        .rposition(|w| w == b"\"c\"," || w == b"\"c\"}")
        .unwrap();
    bytes[target + 1] = b'x';
    std::fs::write(&log, &bytes).unwrap();

    let message = match FileStore::open(dir.path()) {
        Err(StoreError::Corrupt(message)) => message,
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(_) => panic!("a damaged last record was accepted"),
    };
    println!("{message}");
    assert!(message.contains("up to revision 2 is intact"), "{message}");
    // Doing what it says keeps every earlier commit.
    let (_, command) = message.split_once("run `").unwrap();
    let command = command.trim_end_matches('`');
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[..2], ["truncate", "-s"], "{command}");
    let status = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap();
    assert!(status.success());
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(names(&store).await, ["a", "b"]);
    let out = store.commit(vec![create(profile("d", "1"))]).await.unwrap();
    assert_eq!(out.revision, 3);
}

#[tokio::test]
async fn the_store_is_private_new_or_old() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = FileStore::open(&store_dir).unwrap();
    store.commit(vec![create(profile("a", "1"))]).await.unwrap();
    drop(store);
    let files = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&store_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    assert_eq!(mode(&store_dir), 0o700);
    for file in files() {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }

    // A store made with looser modes (by hand, or by an older release) is made private
    // when opened; files that are not the store's are left alone.
    let foreign = store_dir.join("README");
    std::fs::write(&foreign, b"notes").unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for file in files().into_iter().filter(|f| *f != foreign) {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    }
    let store = FileStore::open(&store_dir).unwrap();
    assert_eq!(names(&store).await, ["a"]);
    assert_eq!(mode(&store_dir), 0o700);
    for file in files() {
        let expected = if file == foreign { 0o644 } else { 0o600 };
        assert_eq!(mode(&file), expected, "{}", file.display());
    }
}
