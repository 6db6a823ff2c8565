//! The etcd backend, `etcd://HOST:PORT[,HOST:PORT...]`: resources in Calico v1's key layout
//! (so Felix, calicoctl and the Docker plugin of that era share the data), every commit in
//! one etcd transaction, watches resumed from the last revision seen.
//!
//! Revisions are etcd's: they grow with every write to the cluster, palisade's or not, so
//! one palisade commit moves the revision on by at least one, not exactly one.
//!
//! Modules: `config` (the URL and TLS files), `connect` (client, timeouts, error text),
//! `layout` (keys and JSON values, pure), `read` (key-values to resources), `commit` (ops
//! to one transaction), `watch` (key events to resource changes).

mod commit;
mod config;
mod connect;
pub mod layout;
mod read;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{Client, GetOptions};

pub use config::{EtcdConfig, SCHEME, TlsFiles, with_tls_files};

use super::{CommitOutcome, Datastore, Op, Revision, Snapshot, StoreError, WatchStream};
use crate::model::{Kind, Resource, ResourceKey};
use connect::{MAX_MESSAGE_BYTES, call};
use read::UnknownKeys;

pub struct EtcdStore {
    client: Client,
    config: EtcdConfig,
    unknown: Arc<UnknownKeys>,
    /// Set to `true` when the store is dropped, which ends its watches.
    closed: tokio::sync::watch::Sender<bool>,
}

impl EtcdStore {
    /// Connects to the cluster named by `url` and checks that it answers.
    pub async fn open(url: &str) -> Result<EtcdStore, StoreError> {
        let config = EtcdConfig::parse(url).map_err(StoreError::Unavailable)?;
        let client = connect::connect(&config).await?;
        Ok(EtcdStore::with_client(client, config))
    }

    /// For a long-running reader (the agent): like [`EtcdStore::open`], but a cluster that
    /// is down is no error. The store is returned with the reason, and its requests fail
    /// as [`StoreError::Unavailable`] until etcd is back, when they succeed without
    /// reopening. A bad URL, unreadable TLS files, or an etcd that refuses the client's
    /// TLS or certificate are still errors: configuration, not an outage.
    pub async fn open_even_if_down(
        url: &str,
    ) -> Result<(EtcdStore, Option<StoreError>), StoreError> {
        let config = EtcdConfig::parse(url).map_err(StoreError::Unavailable)?;
        let (client, down) = connect::connect_even_if_down(&config).await?;
        Ok((EtcdStore::with_client(client, config), down))
    }

    fn with_client(client: Client, config: EtcdConfig) -> EtcdStore {
        EtcdStore {
            client,
            config,
            unknown: Arc::new(UnknownKeys::default()),
            closed: tokio::sync::watch::Sender::new(false),
        }
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.closed.send_replace(true);
    }
}

fn corrupt(e: layout::LayoutError) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

#[async_trait]
impl Datastore for EtcdStore {
    async fn get(&self, key: &ResourceKey) -> Result<Option<Resource>, StoreError> {
        let mut kv = self.kv();
        if let ResourceKey::Profile { name } = key {
            let options = GetOptions::new().with_prefix();
            let response = call(
                &self.config,
                "cannot read",
                kv.get(layout::profile_prefix(name), Some(options)),
            )
            .await?;
            let parts = read::profile_parts(response.kvs(), &self.unknown).map_err(corrupt)?;
            return Ok(parts.get(name).map(|p| p.to_profile(name)));
        }
        let etcd_key = layout::keys_of(key).remove(0);
        let response = call(&self.config, "cannot read", kv.get(etcd_key.as_str(), None)).await?;
        match response.kvs().first() {
            Some(found) => layout::decode(&etcd_key, key, found.value())
                .map(Some)
                .map_err(corrupt),
            None => Ok(None),
        }
    }

    /// One range read of the whole `/calico/v1/` prefix: a consistent snapshot.
    async fn list(&self, kind: Option<Kind>) -> Result<Snapshot, StoreError> {
        let mut kv = self.kv();
        let options = GetOptions::new().with_prefix();
        let response = call(
            &self.config,
            "cannot list",
            kv.get(layout::ROOT, Some(options)),
        )
        .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let resources = read::resources(response.kvs(), &self.unknown).map_err(corrupt)?;
        Ok(Snapshot {
            revision: u64::try_from(revision).unwrap_or(0),
            resources: resources
                .into_values()
                .filter(|r| kind.is_none_or(|kind| r.kind() == kind))
                .collect(),
        })
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<CommitOutcome, StoreError> {
        commit::commit(&mut self.kv(), &self.config, ops).await
    }

    async fn watch(&self, after: Revision) -> Result<WatchStream, StoreError> {
        watch::start(
            self.client.clone(),
            self.config.clone(),
            after,
            Arc::clone(&self.unknown),
            self.closed.subscribe(),
        )
        .await
    }
}
