//! Small builders and readers shared by the datastore tests (included by path).
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use palisade::model::{Kind, Profile, ProfileMetadata, Resource, ResourceKey};
use palisade::store::{Change, Datastore, Op, StoreError, WatchStream};

pub fn profile(name: &str, value: &str) -> Resource {
    Resource::Profile(Profile {
        metadata: ProfileMetadata {
            name: name.into(),
            labels: BTreeMap::from([("v".to_string(), value.to_string())]),
            ..Default::default()
        },
        spec: Default::default(),
    })
}

pub fn key(name: &str) -> ResourceKey {
    ResourceKey::Profile { name: name.into() }
}

pub fn create(resource: Resource) -> Op {
    Op::Create {
        resource,
        skip_existing: false,
    }
}

pub fn delete(name: &str) -> Op {
    Op::Delete {
        key: key(name),
        skip_missing: false,
    }
}

pub async fn names(store: &dyn Datastore) -> Vec<String> {
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
pub async fn next(watch: &mut WatchStream) -> Result<Change, StoreError> {
    tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("watch delivered nothing within 5 s")
        .expect("watch ended")
}

pub fn put(revision: u64, resource: Resource) -> Change {
    Change::Put { revision, resource }
}
