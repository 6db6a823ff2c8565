//! The `Datastore` contract, run against both backends: the embedded file store and a real
//! etcd. Op semantics (create / replace / apply / delete, skips, errors naming the op),
//! all-or-nothing commits, growing revisions, sorted and filtered lists, and watches that
//! replay history from any revision and then follow, seen through several handles.
//!
//! Revisions are compared with the ones commits report, never as absolute numbers: the
//! file store counts commits, etcd counts every write to the cluster.

// A test fails by panicking; unwrapping is how these tests say "this must work".
#![allow(clippy::unwrap_used)]

#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/store_ops.rs"]
mod store_ops;

use std::sync::Arc;
use std::time::Duration;

use palisade::model::{IpPool, IpPoolMetadata, IpPoolSpec, Kind, Resource, ResourceKey};
use palisade::store::{Change, Datastore, Op, OpOutcome, StoreError};

use etcd::EtcdServer;
use store_ops::{create, delete, key, names, next, profile, put};

/// One backend's datastore, alive while the harness is.
enum Harness {
    File(tempfile::TempDir),
    Etcd(EtcdServer),
}

impl Harness {
    fn url(&self) -> String {
        match self {
            Harness::File(dir) => format!("file://{}", dir.path().join("store").display()),
            Harness::Etcd(server) => server.url(),
        }
    }

    /// A new handle on the datastore (another process would open one the same way).
    async fn open(&self) -> Arc<dyn Datastore> {
        palisade::store::open(&self.url()).await.unwrap()
    }
}

/// Each test `async fn name(harness: Harness)` runs as `name::file` and `name::etcd`.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn file() {
                super::$name(super::Harness::File(tempfile::tempdir().unwrap())).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::Harness::Etcd(super::EtcdServer::start())).await;
            }
        }
    )*};
}

contract_tests!(
    create_replace_apply_delete_semantics,
    later_ops_see_earlier_ones_and_errors_name_their_index,
    a_failing_op_leaves_the_store_unchanged,
    list_is_sorted_by_key_filters_by_kind_and_names_its_revision,
    reopening_keeps_everything,
    watch_from_zero_replays_history_then_follows,
    watch_from_the_middle_and_from_the_future,
    two_handles_see_each_others_commits,
    concurrent_writers_lose_nothing,
    dropping_the_store_ends_its_watches,
);

fn pool(cidr: &str) -> Resource {
    Resource::IpPool(IpPool {
        metadata: IpPoolMetadata {
            cidr: cidr.parse().unwrap(),
        },
        spec: IpPoolSpec::default(),
    })
}

/// Commits `ops`, which must succeed, and returns the new revision.
async fn commit(store: &dyn Datastore, ops: Vec<Op>) -> u64 {
    store.commit(ops).await.unwrap().revision
}

async fn create_replace_apply_delete_semantics(harness: Harness) {
    let store = harness.open().await;
    let start = store.list(None).await.unwrap().revision;

    let out = store.commit(vec![create(profile("a", "1"))]).await.unwrap();
    assert_eq!(out.outcomes, [OpOutcome::Written]);
    assert!(out.revision > start);
    let r1 = out.revision;

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
    assert_eq!((out.revision, out.outcomes), (r1, vec![OpOutcome::Skipped]));
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

    let r2 = commit(&*store, vec![Op::Replace(profile("a", "3"))]).await;
    assert!(r2 > r1);
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(profile("a", "3")));

    let out = store
        .commit(vec![
            Op::Apply(profile("a", "4")),
            Op::Apply(profile("b", "1")),
        ])
        .await
        .unwrap();
    assert_eq!(out.outcomes, [OpOutcome::Written, OpOutcome::Written]);
    assert!(out.revision > r2);
    assert_eq!(store.get(&key("a")).await.unwrap(), Some(profile("a", "4")));
    assert_eq!(store.get(&key("b")).await.unwrap(), Some(profile("b", "1")));

    let r4 = commit(&*store, vec![delete("a")]).await;
    assert!(r4 > out.revision);
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
    assert_eq!(out.outcomes, [OpOutcome::Skipped, OpOutcome::Written]);
    assert!(out.revision > r4);
    assert!(names(&*store).await.is_empty());
}

async fn later_ops_see_earlier_ones_and_errors_name_their_index(harness: Harness) {
    let store = harness.open().await;
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
    store
        .commit(vec![
            create(profile("x", "1")),
            Op::Replace(profile("x", "2")),
            delete("x"),
            create(profile("x", "3")),
        ])
        .await
        .unwrap();
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

async fn a_failing_op_leaves_the_store_unchanged(harness: Harness) {
    let store = harness.open().await;
    let r1 = commit(&*store, vec![create(profile("a", "1"))]).await;
    let before = store.list(None).await.unwrap();
    assert_eq!(before.revision, r1);

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
    // Nothing reached the datastore either: a fresh handle sees the same.
    drop(store);
    let reopened = harness.open().await;
    assert_eq!(reopened.list(None).await.unwrap(), before);
}

async fn list_is_sorted_by_key_filters_by_kind_and_names_its_revision(harness: Harness) {
    let store = harness.open().await;
    assert!(store.list(None).await.unwrap().resources.is_empty());
    commit(
        &*store,
        vec![
            create(pool("10.1.0.0/16")),
            create(profile("zeta", "1")),
            create(profile("alpha", "1")),
        ],
    )
    .await;
    let last = commit(
        &*store,
        vec![create(profile("mid", "1")), create(pool("10.0.0.0/16"))],
    )
    .await;

    let all = store.list(None).await.unwrap();
    assert_eq!(all.revision, last);
    let keys: Vec<ResourceKey> = all.resources.iter().map(Resource::key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 5);
    assert_eq!(names(&*store).await, ["alpha", "mid", "zeta"]);
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

async fn reopening_keeps_everything(harness: Harness) {
    let mut last = 0;
    {
        let store = harness.open().await;
        for i in 0..10 {
            last = commit(&*store, vec![Op::Apply(profile(&format!("p{i}"), "1"))]).await;
        }
        last = last.max(commit(&*store, vec![delete("p3")]).await);
    }
    let store = harness.open().await;
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.revision, last);
    assert_eq!(listed.resources.len(), 9);
    assert_eq!(store.get(&key("p3")).await.unwrap(), None);
    assert_eq!(
        store.get(&key("p7")).await.unwrap(),
        Some(profile("p7", "1"))
    );
    assert!(commit(&*store, vec![create(profile("new", "1"))]).await > last);
}

async fn watch_from_zero_replays_history_then_follows(harness: Harness) {
    let store = harness.open().await;
    let r1 = commit(
        &*store,
        vec![create(profile("a", "1")), create(profile("b", "1"))],
    )
    .await;
    let r2 = commit(&*store, vec![delete("a")]).await;

    let mut watch = store.watch(0).await.unwrap();
    let mut first = vec![
        next(&mut watch).await.unwrap(),
        next(&mut watch).await.unwrap(),
    ];
    first.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(
        first,
        [put(r1, profile("a", "1")), put(r1, profile("b", "1"))]
    );
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Change::Delete {
            revision: r2,
            key: key("a")
        }
    );
    let r3 = commit(&*store, vec![Op::Apply(profile("b", "2"))]).await;
    assert_eq!(next(&mut watch).await.unwrap(), put(r3, profile("b", "2")));
    // Skipped-only commits make no change.
    commit(
        &*store,
        vec![Op::Delete {
            key: key("zz"),
            skip_missing: true,
        }],
    )
    .await;
    let r4 = commit(&*store, vec![create(profile("c", "1"))]).await;
    assert_eq!(next(&mut watch).await.unwrap(), put(r4, profile("c", "1")));
    assert!(watch.try_recv().is_err());
}

async fn watch_from_the_middle_and_from_the_future(harness: Harness) {
    let store = harness.open().await;
    let mut revisions = Vec::new();
    for i in 1..=5 {
        revisions.push(commit(&*store, vec![create(profile(&format!("p{i}"), "1"))]).await);
    }
    let mut watch = store.watch(revisions[2]).await.unwrap();
    assert_eq!(
        next(&mut watch).await.unwrap(),
        put(revisions[3], profile("p4", "1"))
    );
    assert_eq!(
        next(&mut watch).await.unwrap(),
        put(revisions[4], profile("p5", "1"))
    );

    let mut at_head = store.watch(revisions[4]).await.unwrap();
    let r6 = commit(&*store, vec![create(profile("p6", "1"))]).await;
    assert_eq!(
        next(&mut at_head).await.unwrap(),
        put(r6, profile("p6", "1"))
    );
    assert_eq!(next(&mut watch).await.unwrap(), put(r6, profile("p6", "1")));

    assert!(matches!(
        store.watch(r6 + 1000).await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn two_handles_see_each_others_commits(harness: Harness) {
    let writer = harness.open().await;
    let reader = harness.open().await;
    let mut watch = reader.watch(0).await.unwrap();

    let r1 = commit(&*writer, vec![create(profile("a", "1"))]).await;
    assert_eq!(
        reader.get(&key("a")).await.unwrap(),
        Some(profile("a", "1"))
    );
    assert_eq!(reader.list(None).await.unwrap().revision, r1);
    assert_eq!(next(&mut watch).await.unwrap(), put(r1, profile("a", "1")));

    // The reader writes too, on top of what the writer did.
    let err = reader
        .commit(vec![create(profile("a", "2"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { index: 0, .. }));
    let r2 = commit(&*reader, vec![create(profile("b", "1"))]).await;
    assert!(r2 > r1);
    assert_eq!(names(&*writer).await, ["a", "b"]);
    let r3 = commit(&*writer, vec![delete("b")]).await;
    assert!(r3 > r2);
    assert_eq!(next(&mut watch).await.unwrap(), put(r2, profile("b", "1")));
    assert_eq!(
        next(&mut watch).await.unwrap(),
        Change::Delete {
            revision: r3,
            key: key("b")
        }
    );
}

/// Writers on their own handles, all at once: every commit is acknowledged with its own
/// revision, and the watch sees each exactly once, in order.
async fn concurrent_writers_lose_nothing(harness: Harness) {
    const WRITERS: usize = 4;
    const EACH: usize = 25;
    let watcher = harness.open().await;
    let start = watcher.list(None).await.unwrap().revision;
    let mut watch = watcher.watch(start).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = harness.open().await;
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..EACH {
                let op = create(profile(&format!("w{w}-{i}"), "1"));
                revisions.push(store.commit(vec![op]).await.unwrap().revision);
            }
            revisions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort();
    acknowledged.dedup();
    assert_eq!(
        acknowledged.len(),
        WRITERS * EACH,
        "two commits got one revision"
    );

    let listed = watcher.list(None).await.unwrap();
    assert_eq!(listed.revision, *acknowledged.last().unwrap());
    assert_eq!(listed.resources.len(), WRITERS * EACH);
    let mut seen = Vec::new();
    while seen.len() < WRITERS * EACH {
        seen.push(next(&mut watch).await.unwrap().revision());
    }
    assert_eq!(seen, acknowledged);
}

async fn dropping_the_store_ends_its_watches(harness: Harness) {
    let store = harness.open().await;
    let mut watch = store.watch(0).await.unwrap();
    drop(store);
    let ended = tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .unwrap();
    assert!(ended.is_none());
}
