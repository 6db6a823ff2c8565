//! What only the etcd backend does: history that etcd compacted away, profiles assembled
//! from their three keys as any of them changes, keys written by others (unknown ones are
//! skipped, malformed ones named), transactions beyond etcd's per-level limit, and etcd
//! going away and coming back under an open watch.

// A test fails by panicking; unwrapping is how these tests say "this must work".
#![allow(clippy::unwrap_used)]

#[path = "common/etcd.rs"]
mod etcd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade::model::{
    IpPool, IpPoolMetadata, IpPoolSpec, Kind, Profile, ProfileMetadata, Resource, ResourceKey,
};
use palisade::store::{Change, Datastore, Op, StoreError, WatchStream};

use etcd::EtcdServer;

fn profile(name: &str, tags: &[&str], labels: &[(&str, &str)]) -> Resource {
    Resource::Profile(Profile {
        metadata: ProfileMetadata {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        spec: Default::default(),
    })
}

fn pool(i: usize) -> Resource {
    Resource::IpPool(IpPool {
        metadata: IpPoolMetadata {
            cidr: format!("10.{}.{}.0/24", i / 256, i % 256).parse().unwrap(),
        },
        spec: IpPoolSpec::default(),
    })
}

async fn open(server: &EtcdServer) -> Arc<dyn Datastore> {
    palisade::store::open(&server.url()).await.unwrap()
}

async fn next(watch: &mut WatchStream) -> Result<Change, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("watch delivered nothing within 10 s")
        .expect("watch ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_compacted_history_reports_compacted() {
    let server = EtcdServer::start();
    let store = open(&server).await;
    let early = store
        .commit(vec![Op::Apply(profile("a", &[], &[]))])
        .await
        .unwrap()
        .revision;
    let late = store
        .commit(vec![Op::Apply(profile("b", &[], &[]))])
        .await
        .unwrap()
        .revision;
    server.etcdctl(&["compact", &late.to_string()]);
    let outcome = match store.watch(early).await {
        Err(e) => e,
        Ok(mut watch) => next(&mut watch).await.unwrap_err(),
    };
    assert!(
        matches!(outcome, StoreError::Compacted { requested, .. } if requested == early),
        "{outcome:?}"
    );
    // From the compaction point on, history is there.
    let mut watch = store.watch(late).await.unwrap();
    let after = store
        .commit(vec![Op::Apply(profile("c", &[], &[]))])
        .await
        .unwrap()
        .revision;
    assert_eq!(next(&mut watch).await.unwrap().revision(), after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_changes_when_any_of_its_keys_does() {
    let server = EtcdServer::start();
    let store = open(&server).await;
    let start = store
        .commit(vec![Op::Create {
            resource: profile("web", &["web"], &[("role", "web")]),
            skip_existing: false,
        }])
        .await
        .unwrap()
        .revision;
    let mut watch = store.watch(start).await.unwrap();

    server.etcdctl(&[
        "put",
        "/calico/v1/policy/profile/web/tags",
        r#"["web","public"]"#,
    ]);
    let expected = profile("web", &["web", "public"], &[("role", "web")]);
    assert!(
        matches!(next(&mut watch).await.unwrap(), Change::Put { resource, .. } if resource == expected)
    );

    server.etcdctl(&["del", "/calico/v1/policy/profile/web/labels"]);
    let expected = profile("web", &["web", "public"], &[]);
    assert!(
        matches!(next(&mut watch).await.unwrap(), Change::Put { resource, .. } if resource == expected)
    );
    let key = ResourceKey::Profile { name: "web".into() };
    assert_eq!(store.get(&key).await.unwrap(), Some(expected));

    server.etcdctl(&["del", "--prefix", "/calico/v1/policy/profile/web/"]);
    assert!(matches!(next(&mut watch).await.unwrap(), Change::Delete { key: k, .. } if k == key));
    assert_eq!(store.get(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_are_skipped_and_malformed_values_name_their_key() {
    let server = EtcdServer::start();
    let store = open(&server).await;
    server.etcdctl(&["put", "/calico/v1/config/LogSeverityScreen", "info"]);
    server.etcdctl(&["put", "/calico/v1/host/node1/bird_ip", "10.0.0.1"]);
    server.etcdctl(&["put", "/calico/v1/something/new", "{}"]);
    server.etcdctl(&["put", "/calico/v1/policy/tier/gold/policy/p", "{}"]);
    server.etcdctl(&["put", "/calico/ipam/v2/host/node1", "x"]);
    server.etcdctl(&[
        "put",
        "/calico/v1/policy/tier/default/policy/ok",
        r#"{"selector":""}"#,
    ]);
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed.resources.len(), 1);
    assert_eq!(listed.resources[0].kind(), Kind::Policy);

    server.etcdctl(&[
        "put",
        "/calico/v1/policy/tier/default/policy/bad",
        "{not json",
    ]);
    let err = store.list(None).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt(m)
            if m.starts_with("etcd key /calico/v1/policy/tier/default/policy/bad: invalid JSON value")),
        "{err}"
    );
    let bad = ResourceKey::Policy { name: "bad".into() };
    assert!(matches!(store.get(&bad).await, Err(StoreError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_beyond_etcds_per_level_limit_are_still_one_transaction() {
    let server = EtcdServer::start();
    let store = open(&server).await;
    let start = store.list(None).await.unwrap().revision;
    let mut watch = store.watch(start).await.unwrap();
    // 60 profiles are 180 keys: more puts than etcd takes on one level of a transaction.
    let ops = (0..60)
        .map(|i| Op::Apply(profile(&format!("p{i}"), &[], &[])))
        .collect();
    let revision = store.commit(ops).await.unwrap().revision;
    for _ in 0..60 {
        assert_eq!(next(&mut watch).await.unwrap().revision(), revision);
    }
    assert_eq!(
        store
            .list(Some(Kind::Profile))
            .await
            .unwrap()
            .resources
            .len(),
        60
    );

    // 150 creates need more existence checks than etcd takes compares; the last one
    // fails, and none of the others is written.
    let mut ops: Vec<Op> = (0..149)
        .map(|i| Op::Create {
            resource: pool(i),
            skip_existing: false,
        })
        .collect();
    ops.push(Op::Create {
        resource: profile("p7", &[], &[]),
        skip_existing: false,
    });
    let err = store.commit(ops.clone()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::AlreadyExists { index: 149, .. }),
        "{err:?}"
    );
    assert!(
        store
            .list(Some(Kind::IpPool))
            .await
            .unwrap()
            .resources
            .is_empty()
    );
    ops.pop();
    store.commit(ops).await.unwrap();
    assert_eq!(
        store
            .list(Some(Kind::IpPool))
            .await
            .unwrap()
            .resources
            .len(),
        149
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_a_clear_error() {
    let port = etcd::free_port();
    let started = Instant::now();
    let err = match palisade::store::open(&format!("etcd://127.0.0.1:{port}")).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("nothing listens on {port}"),
    };
    assert!(
        err.starts_with(&format!("etcd 127.0.0.1:{port}: ")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    eprintln!("took {:?}: {err}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_after_a_short_outage_and_gives_up_after_a_long_one() {
    let mut server = EtcdServer::start();
    let store = open(&server).await;
    let start = store.list(None).await.unwrap().revision;
    let mut watch = store.watch(start).await.unwrap();

    // Short: etcd is back within the watch's grace period.
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let revision = store
        .commit(vec![Op::Apply(profile("a", &[], &[]))])
        .await
        .unwrap()
        .revision;
    assert_eq!(next(&mut watch).await.unwrap().revision(), revision);

    // Long: the watch ends with Unavailable, and a watch from the same revision works
    // once etcd is back.
    server.stop();
    let err = next(&mut watch).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("watch lost")),
        "{err}"
    );
    let started = Instant::now();
    let list_err = store.list(None).await.unwrap_err();
    eprintln!(
        "list with etcd down failed after {:?}: {list_err}",
        started.elapsed()
    );
    server.restart();
    let mut watch = store.watch(revision).await.unwrap();
    let revision = store
        .commit(vec![Op::Apply(profile("b", &[], &[]))])
        .await
        .unwrap()
        .revision;
    assert_eq!(next(&mut watch).await.unwrap().revision(), revision);
}
