//! The embedded file store against the `Datastore` contract: op semantics, atomicity,
//! revisions, persistence, watches, several stores on one directory, compaction,
//! concurrent writers and recovery from damaged files.

// A test fails by panicking; unwrapping is how these tests say "this must work".
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use palisade::model::{
    IpPool, IpPoolMetadata, IpPoolSpec, Kind, Profile, ProfileMetadata, Resource, ResourceKey,
};
use palisade::store::file::{FileStore, FileStoreOptions};
use palisade::store::{Change, Datastore, Op, OpOutcome, StoreError, WatchStream};

fn profile(name: &str, value: &str) -> Resource {
    Resource::Profile(Profile {
        metadata: ProfileMetadata {
            name: name.into(),
            labels: BTreeMap::from([("v".to_string(), value.to_string())]),
            ..Default::default()
        },
        spec: Default::default(),
    })
}

fn pool(cidr: &str) -> Resource {
    Resource::IpPool(IpPool {
        metadata: IpPoolMetadata {
            cidr: cidr.parse().unwrap(),
        },
        spec: IpPoolSpec::default(),
    })
}

fn key(name: &str) -> ResourceKey {
    ResourceKey::Profile { name: name.into() }
}

fn create(resource: Resource) -> Op {
    Op::Create {
        resource,
        skip_existing: false,
    }
}

fn delete(name: &str) -> Op {
    Op::Delete {
        key: key(name),
        skip_missing: false,
    }
}

fn small_log() -> FileStoreOptions {
    FileStoreOptions {
        compact_after_bytes: 1 << 20,
        compact_after_commits: 5,
    }
}

async fn names(store: &FileStore) -> Vec<String> {
    store
        .list(Some(Kind::Profile))
        .await
        .unwrap()
        .resources
        .iter()
        .map(|r| match r {
            Resource::Profile(p) => p.metadata.name.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// The next item of a watch, failing the test if none comes within 5 s.
async fn next(watch: &mut WatchStream) -> Result<Change, StoreError> {
    tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("watch delivered nothing within 5 s")
        .expect("watch ended")
}

fn put(revision: u64, resource: Resource) -> Change {
    Change::Put { revision, resource }
}

#[tokio::test]
async fn create_replace_apply_delete_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();

    let out = store.commit(vec![create(profile("a", "1"))]).await.unwrap();
    assert_eq!((out.revision, out.outcomes), (1, vec![OpOutcome::Written]));

    let err = store
        .commit(vec![create(profile("a", "2"))])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::AlreadyExists {
            index: 0,
            key: key("a")
        }
    );
    assert_eq!(err.to_string(), "resource already exists: Profile(name=a)");

    let skip = Op::Create {
        resource: profile("a", "2"),
        skip_existing: true,
    };
    let out = store.commit(vec![skip]).await.unwrap();
    assert_eq!((out.revision, out.outcomes), (1, vec![OpOutcome::Skipped]));
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(profile("a", "1")));

    let err = store
        .commit(vec![Op::Replace(profile("b", "1"))])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::NotFound {
            index: 0,
            key: key("b")
        }
    );
    assert_eq!(err.to_string(), "resource does not exist: Profile(name=b)");

    let out = store
        .commit(vec![Op::Replace(profile("a", "3"))])
        .await
        .unwrap();
    assert_eq!(out.revision, 2);
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(profile("a", "3")));

    let out = store
        .commit(vec![
            Op::Apply(profile("a", "4")),
            Op::Apply(profile("b", "1")),
        ])
        .await
        .unwrap();
    assert_eq!(
        (out.revision, out.outcomes),
        (3, vec![OpOutcome::Written, OpOutcome::Written])
    );
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(profile("a", "4")));
    assert_eq!(store.get(&key("b")).await.unwrap(), Some(profile("b", "1")));

    let out = store.commit(vec![delete("a")]).await.unwrap();
    assert_eq!(out.revision, 4);
    assert_eq!(store.get(&key("a")).await.unwrap(), None);
    let err = store.commit(vec![delete("a")]).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::NotFound {
            index: 0,
            key: key("a")
        }
    );
    let skip = Op::Delete {
        key: key("a"),
        skip_missing: true,
    };
    let out = store.commit(vec![skip, delete("b")]).await.unwrap();
    assert_eq!(
        (out.revision, out.outcomes),
        (5, vec![OpOutcome::Skipped, OpOutcome::Written])
    );
    assert!(names(&store).await.is_empty());
}

#[tokio::test]
async fn later_ops_see_earlier_ones_and_errors_name_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let out = store
        .commit(vec![
            create(profile("x", "1")),
            Op::Replace(profile("x", "2")),
            delete("x"),
            Op::Replace(profile("y", "0")),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        out,
        StoreError::NotFound {
            index: 3,
            key: key("y")
        }
    );
    let out = store
        .commit(vec![
            create(profile("x", "1")),
            Op::Replace(profile("x", "2")),
            delete("x"),
            create(profile("x", "3")),
        ])
        .await
        .unwrap();
    assert_eq!(out.revision, 1);
    assert_eq!(store.get(&key("x")).await.unwrap(), Some(profile("x", "3")));
    let err = store
        .commit(vec![
            delete("x"),
            create(profile("x", "4")),
            create(profile("x", "5")),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::AlreadyExists {
            index: 2,
            key: key("x")
        }
    );
}

#[tokio::test]
async fn a_failing_op_leaves_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store.commit(vec![create(profile("a", "1"))]).await.unwrap();
    let before = store.list(None).await.unwrap();

    let err = store
        .commit(vec![
            create(profile("b", "1")),
            Op::Apply(profile("a", "changed")),
            create(profile("a", "again")),
            create(profile("c", "1")),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        StoreError::AlreadyExists {
            index: 2,
            key: key("a")
        }
    );
    assert_eq!(store.list(None).await.unwrap(), before);
    assert_eq!(before.revision, 1);
    // Nothing reached the disk either.
    drop(store);
    let reopened = FileStore::open(dir.path()).unwrap();
    assert_eq!(reopened.list(None).await.unwrap(), before);
}

#[tokio::test]
async fn list_is_sorted_by_key_filters_by_kind_and_names_its_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(store.list(None).await.unwrap().revision, 0);
    store
        .commit(vec![
            create(pool("10.1.0.0/16")),
            create(profile("zeta", "1")),
            create(profile("alpha", "1")),
        ])
        .await
        .unwrap();
    store
        .commit(vec![
            create(profile("mid", "1")),
            create(pool("10.0.0.0/16")),
        ])
        .await
        .unwrap();

    let all = store.list(None).await.unwrap();
    assert_eq!(all.revision, 2);
    let keys: Vec<ResourceKey> = all.resources.iter().map(Resource::key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 5);
    assert_eq!(names(&store).await, ["alpha", "mid", "zeta"]);
    let pools = store.list(Some(Kind::IpPool)).await.unwrap();
    assert_eq!(pools.resources, [pool("10.0.0.0/16"), pool("10.1.0.0/16")]);
    assert!(
        store
            .list(Some(Kind::Policy))
            .await
            .unwrap()
            .resources
            .is_empty()
    );
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("nested/store");
    {
        let store = FileStore::open(&store_dir).unwrap();
        for i in 0..10 {
            store
                .commit(vec![Op::Apply(profile(&format!("p{i}"), "1"))])
                .await
                .unwrap();
        }
        store.commit(vec![delete("p3")]).await.unwrap();
    }
    let mode = std::fs::metadata(&store_dir).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let store = FileStore::open(&store_dir).unwrap();
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.revision, 11);
    assert_eq!(listed.resources.len(), 9);
    assert_eq!(store.get(&key("p3")).await.unwrap(), None);
    assert_eq!(
        store.get(&key("p7")).await.unwrap(),
        Some(profile("p7", "1"))
    );
    let out = store
        .commit(vec![create(profile("new", "1"))])
        .await
        .unwrap();
    assert_eq!(out.revision, 12);
}

#[tokio::test]
async fn watch_from_zero_replays_history_then_follows() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .commit(vec![create(profile("a", "1")), create(profile("b", "1"))])
        .await
        .unwrap();
    store.commit(vec![delete("a")]).await.unwrap();

    let mut watch = store.watch(0).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), put(1, profile("a", "1")));
    assert_eq!(next(&mut watch).await.unwrap(), put(1, profile("b", "1")));
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Change::Delete {
            revision: 2,
            key: key("a")
        }
    );
    store
        .commit(vec![Op::Apply(profile("b", "2"))])
        .await
        .unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), put(3, profile("b", "2")));
    // Skipped-only commits make no revision and no change.
    store
        .commit(vec![Op::Delete {
            key: key("zz"),
            skip_missing: true,
        }])
        .await
        .unwrap();
    store.commit(vec![create(profile("c", "1"))]).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), put(4, profile("c", "1")));
    assert!(watch.try_recv().is_err());
}

#[tokio::test]
async fn watch_from_the_middle_and_from_the_future() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    for i in 1..=5 {
        store
            .commit(vec![create(profile(&format!("p{i}"), "1"))])
            .await
            .unwrap();
    }
    let mut watch = store.watch(3).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), put(4, profile("p4", "1")));
    assert_eq!(next(&mut watch).await.unwrap(), put(5, profile("p5", "1")));

    let mut at_head = store.watch(5).await.unwrap();
    store
        .commit(vec![create(profile("p6", "1"))])
        .await
        .unwrap();
    assert_eq!(
        next(&mut at_head).await.unwrap(),
        put(6, profile("p6", "1"))
    );
    assert_eq!(next(&mut watch).await.unwrap(), put(6, profile("p6", "1")));

    assert!(matches!(
        store.watch(7).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn two_stores_on_one_directory_see_each_others_commits() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FileStore::open(dir.path()).unwrap();
    let reader = FileStore::open(dir.path()).unwrap();
    let mut watch = reader.watch(0).await.unwrap();

    writer
        .commit(vec![create(profile("a", "1"))])
        .await
        .unwrap();
    assert_eq!(
        reader.get(&key("a")).await.unwrap(),
        Some(profile("a", "1"))
    );
    assert_eq!(reader.list(None).await.unwrap().revision, 1);
    assert_eq!(next(&mut watch).await.unwrap(), put(1, profile("a", "1")));

    // The reader writes too, on top of what the writer did.
    let err = reader
        .commit(vec![create(profile("a", "2"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { index: 0, .. }));
    let out = reader
        .commit(vec![create(profile("b", "1"))])
        .await
        .unwrap();
    assert_eq!(out.revision, 2);
    assert_eq!(names(&writer).await, ["a", "b"]);
    let out = writer.commit(vec![delete("b")]).await.unwrap();
    assert_eq!(out.revision, 3);
    assert_eq!(next(&mut watch).await.unwrap(), put(2, profile("b", "1")));
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Change::Delete {
            revision: 3,
            key: key("b")
        }
    );
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

#[tokio::test]
async fn dropping_the_store_ends_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut watch = store.watch(0).await.unwrap();
    drop(store);
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .unwrap();
    assert!(ended.is_none());
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
