//! The embedded on-disk store.
//!
//! PLACEHOLDER: being written.

use std::path::Path;

use async_trait::async_trait;

use super::{CommitOutcome, Datastore, Op, Snapshot, StoreError, WatchStream};
use crate::model::{Kind, Resource, ResourceKey};

pub struct FileStore;

impl FileStore {
    pub fn open(_dir: &Path) -> Result<FileStore, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
}

#[async_trait]
impl Datastore for FileStore {
    async fn get(&self, _key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    async fn list(&self, _kind: Option<Kind>) -> Result<Snapshot, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    async fn commit(&self, _ops: Vec<Op>) -> Result<CommitOutcome, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
    async fn watch(&self, _after: u64) -> Result<WatchStream, StoreError> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
}
