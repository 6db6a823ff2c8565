//! Watching `/calico/v1/` and turning etcd's key events into resource changes.
//!
//! The key events of one etcd revision become that revision's changes; a profile changes
//! when any of its three keys does, so the watcher keeps every profile's parts (read at
//! the start revision, then kept up to date by the events). A lost connection is resumed
//! from the last revision seen, retrying for [`RESUME_GRACE`]; if etcd stays away the stream
//! ends with `Unavailable` (the follower reports itself degraded and watches again from its
//! revision). History that etcd compacted away ends the stream with `Compacted`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;

use super::config::EtcdConfig;
use super::connect::{self, CALL_TIMEOUT, MAX_MESSAGE_BYTES};
use super::layout::{self, KeyMeaning, ProfileParts};
use super::read::{self, UnknownKeys};
use crate::model::ResourceKey;
use crate::store::{Change, Revision, StoreError, WatchStream};

/// How long a broken watch keeps trying to resume before it reports etcd unavailable.
const RESUME_GRACE: Duration = Duration::from_secs(2);

/// Changes buffered between the watcher and its reader.
const BUFFER: usize = 1024;

pub async fn start(
    client: Client,
    config: EtcdConfig,
    after: Revision,
    unknown: Arc<UnknownKeys>,
    closed: tokio::sync::watch::Receiver<bool>,
) -> Result<WatchStream, StoreError> {
    let stream = open(&client, &config, after).await?;
    let profiles = profiles_at(&client, &config, after, &unknown).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    let watcher = Watcher {
        client,
        config,
        last: after,
        profiles,
        unknown,
        tx,
        closed,
    };
    tokio::spawn(watcher.run(stream));
    Ok(rx)
}

/// An etcd watch on the whole prefix from `after + 1`, once etcd confirmed it.
async fn open(
    client: &Client,
    config: &EtcdConfig,
    after: Revision,
) -> Result<etcd_client::WatchStream, StoreError> {
    let start = i64::try_from(after).unwrap_or(i64::MAX).saturating_add(1);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let mut watch_client = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = connect::call(
        config,
        "cannot watch",
        watch_client.watch(layout::ROOT, Some(options)),
    )
    .await?;
    // The first response confirms the watch; without it the request is still in flight.
    match tokio::time::timeout(CALL_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(response))) if response.created() && !response.canceled() => Ok(stream),
        Ok(Ok(Some(response))) => Err(StoreError::Unavailable(format!(
            "{}: watch from revision {start} refused: {}",
            config.describe(),
            response.cancel_reason()
        ))),
        Ok(Ok(None)) => Err(StoreError::Unavailable(format!(
            "{}: watch closed before it started",
            config.describe()
        ))),
        Ok(Err(e)) => Err(connect::unavailable(config, "cannot watch", &e)),
        Err(_) => Err(connect::timed_out(config, "cannot watch")),
    }
}

/// Every profile's parts as of revision `at` (none at revision 0).
async fn profiles_at(
    client: &Client,
    config: &EtcdConfig,
    at: Revision,
    unknown: &UnknownKeys,
) -> Result<BTreeMap<String, ProfileParts>, StoreError> {
    if at == 0 {
        return Ok(BTreeMap::new());
    }
    let revision = i64::try_from(at).unwrap_or(i64::MAX);
    let options = GetOptions::new().with_prefix().with_revision(revision);
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let response =
        match tokio::time::timeout(CALL_TIMEOUT, kv.get(layout::PROFILES, Some(options))).await {
            Ok(Ok(response)) => response,
            // The etcd error does not say where history starts now; at least `at` is gone.
            Ok(Err(e)) if connect::is_compacted(&e) => {
                return Err(StoreError::Compacted {
                    requested: at,
                    oldest: at,
                });
            }
            Ok(Err(e)) => return Err(connect::unavailable(config, "cannot read profiles", &e)),
            Err(_) => return Err(connect::timed_out(config, "cannot read profiles")),
        };
    read::profile_parts(response.kvs(), unknown).map_err(|e| StoreError::Corrupt(e.to_string()))
}

struct Watcher {
    client: Client,
    config: EtcdConfig,
    /// Every event up to this revision has been handled.
    last: Revision,
    profiles: BTreeMap<String, ProfileParts>,
    unknown: Arc<UnknownKeys>,
    tx: mpsc::Sender<Result<Change, StoreError>>,
    /// Becomes `true` when the store is dropped.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Watcher {
    async fn run(mut self, mut stream: etcd_client::WatchStream) {
        loop {
            let message = tokio::select! {
                _ = self.tx.closed() => return,
                _ = self.closed.wait_for(|closed| *closed) => return,
                message = stream.message() => message,
            };
            let cause = match message {
                Ok(Some(response)) if response.canceled() => {
                    if response.compact_revision() > 0 {
                        let oldest = u64::try_from(response.compact_revision()).unwrap_or(0);
                        let requested = self.last;
                        let _ = self
                            .tx
                            .send(Err(StoreError::Compacted { requested, oldest }))
                            .await;
                        return;
                    }
                    format!("etcd cancelled the watch: {}", response.cancel_reason())
                }
                Ok(Some(response)) => {
                    if !self.handle(response.events()).await {
                        return;
                    }
                    continue;
                }
                Ok(None) => "etcd closed the watch".to_string(),
                Err(e) => connect::describe(&e),
            };
            match self.resume(&cause).await {
                Some(resumed) => stream = resumed,
                None => return,
            }
        }
    }

    /// A new watch from the last revision handled, retried with backoff for
    /// [`RESUME_GRACE`]; `None` (after telling the reader) if etcd does not come back.
    async fn resume(&mut self, cause: &str) -> Option<etcd_client::WatchStream> {
        let give_up = tokio::time::Instant::now() + RESUME_GRACE;
        let mut delay = Duration::from_millis(50);
        loop {
            let error = match open(&self.client, &self.config, self.last).await {
                Ok(stream) => return Some(stream),
                Err(e) => e,
            };
            if matches!(error, StoreError::Compacted { .. })
                || tokio::time::Instant::now() + delay > give_up
            {
                let error = match error {
                    StoreError::Unavailable(detail) => StoreError::Unavailable(format!(
                        "watch lost ({cause}); resuming from revision {} failed: {detail}",
                        self.last
                    )),
                    other => other,
                };
                let _ = self.tx.send(Err(error)).await;
                return None;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
    }

    /// Sends the changes of `events` (one or more whole revisions). `false` when the
    /// reader is gone or a value could not be read (the reader got the error).
    async fn handle(&mut self, events: &[etcd_client::Event]) -> bool {
        let mut start = 0;
        while start < events.len() {
            let revision = events[start].kv().map_or(0, |kv| kv.mod_revision());
            let end = events[start..]
                .iter()
                .position(|e| e.kv().map_or(0, |kv| kv.mod_revision()) != revision)
                .map_or(events.len(), |n| start + n);
            let revision = u64::try_from(revision).unwrap_or(0);
            let changes = match self.changes(revision, &events[start..end]) {
                Ok(changes) => changes,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return false;
                }
            };
            for change in changes {
                if self.tx.send(Ok(change)).await.is_err() {
                    return false;
                }
            }
            self.last = self.last.max(revision);
            start = end;
        }
        true
    }

    /// The resource changes of one revision's key events.
    fn changes(
        &mut self,
        revision: Revision,
        events: &[etcd_client::Event],
    ) -> Result<Vec<Change>, StoreError> {
        let corrupt = |e: layout::LayoutError| StoreError::Corrupt(e.to_string());
        let mut changes = Vec::new();
        let mut touched_profiles: Vec<String> = Vec::new();
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Some(key) = read::key_text(kv, &self.unknown) else {
                continue;
            };
            let put = event.event_type() == EventType::Put;
            match layout::classify(key) {
                KeyMeaning::Resource(resource_key) if put => changes.push(Change::Put {
                    revision,
                    resource: layout::decode(key, &resource_key, kv.value()).map_err(corrupt)?,
                }),
                KeyMeaning::Resource(key) => changes.push(Change::Delete { revision, key }),
                KeyMeaning::ProfilePart { name, part } => {
                    let parts = self.profiles.entry(name.clone()).or_default();
                    if put {
                        parts.set(key, part, kv.value()).map_err(corrupt)?;
                    } else {
                        parts.clear(part);
                    }
                    if !touched_profiles.contains(&name) {
                        touched_profiles.push(name);
                    }
                }
                KeyMeaning::Ignored => {}
                KeyMeaning::Unknown => self.unknown.note(key),
            }
        }
        for name in touched_profiles {
            let parts = self.profiles.get(&name).cloned().unwrap_or_default();
            if parts.is_empty() {
                self.profiles.remove(&name);
                changes.push(Change::Delete {
                    revision,
                    key: ResourceKey::Profile { name },
                });
            } else {
                changes.push(Change::Put {
                    revision,
                    resource: parts.to_profile(&name),
                });
            }
        }
        Ok(changes)
    }
}
