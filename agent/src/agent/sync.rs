//! Following the datastore: one snapshot, then the watch stream from the snapshot's
//! revision. A broken stream (the datastore went away) is reported as degraded and the
//! watch resumed, with backoff, from the last revision seen; only when that history is gone
//! (`Compacted`) is a fresh snapshot taken, which converges to the store's state without
//! starting over from empty. A datastore that is down from the start is the same outage:
//! no view is sent until the first snapshot succeeds, and the dataplane keeps what the
//! agent adopted from the last run until then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::views::Views;
use crate::model::{Kind, Resource, ResourceKey};
use crate::store::{Change, Datastore, Revision, StoreError};

/// The resources as of one revision. Shared, not copied, between views: a resource that
/// did not change is the same allocation in the next view, which lets the compiler find
/// what changed by pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceView {
    pub revision: Revision,
    pub resources: BTreeMap<ResourceKey, Arc<Resource>>,
}

impl ResourceView {
    pub fn count(&self, kind: Kind) -> usize {
        self.resources.keys().filter(|k| k.kind() == kind).count()
    }

    pub(super) fn apply(&mut self, change: Change) {
        self.revision = change.revision();
        match change {
            Change::Put { resource, .. } => {
                self.resources.insert(resource.key(), Arc::new(resource));
            }
            Change::Delete { key, .. } => {
                self.resources.remove(&key);
            }
        }
    }
}

/// What the follower reports.
#[derive(Debug, Clone)]
pub enum SyncEvent {
    /// The view changed (after a snapshot or a batch of watched changes).
    Updated(Arc<ResourceView>),
    /// The datastore could not be read; the last view stays in force. Retrying.
    Degraded(String),
}

/// How long to wait before retrying after an error, doubling up to the maximum. The
/// maximum bounds how long a datastore that came back goes unnoticed: about a second.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Follows `store` until `events` is closed, sending a view after every change.
pub async fn follow(store: Arc<dyn Datastore>, events: mpsc::Sender<SyncEvent>) {
    let mut views = Views::default();
    let mut retry = RETRY_MIN;
    let mut need_snapshot = true;
    let mut degraded = false;
    loop {
        let round = Round {
            need_snapshot: &mut need_snapshot,
            degraded: &mut degraded,
            retry: &mut retry,
        };
        match sync_once(&*store, &mut views, &events, round).await {
            Ok(()) => return, // receiver gone
            Err(StoreError::Compacted { .. }) => {
                // Not a failure of the datastore: the history we would resume from is
                // gone, so the next round starts from a snapshot.
                need_snapshot = true;
                tokio::time::sleep(RETRY_MIN).await;
            }
            Err(e) => {
                degraded = true;
                if events
                    .send(SyncEvent::Degraded(e.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The follower's state that one round of [`sync_once`] updates.
struct Round<'a> {
    /// Take a snapshot before watching; cleared once taken.
    need_snapshot: &'a mut bool,
    /// The last round failed; cleared (and the view sent again, to say the datastore is
    /// back) once a watch is established.
    degraded: &'a mut bool,
    /// Back to its minimum once a watch is established.
    retry: &'a mut Duration,
}

/// A snapshot (if needed) and the watch from the view's revision. `Ok` when the receiver
/// is gone; `Err` when the snapshot or the watch failed.
async fn sync_once(
    store: &dyn Datastore,
    views: &mut Views,
    events: &mpsc::Sender<SyncEvent>,
    round: Round<'_>,
) -> Result<(), StoreError> {
    if *round.need_snapshot {
        if snapshot(store, views, events).await? {
            *round.degraded = false;
        }
        *round.need_snapshot = false;
        if events.is_closed() {
            return Ok(());
        }
    }
    let mut watch = store.watch(views.current().revision).await?;
    *round.retry = RETRY_MIN;
    if std::mem::take(round.degraded)
        && events
            .send(SyncEvent::Updated(Arc::clone(views.current())))
            .await
            .is_err()
    {
        return Ok(());
    }
    while let Some(change) = watch.recv().await {
        // Send one view per burst of changes, not one per change.
        let mut burst = vec![change?];
        while let Ok(next) = watch.try_recv() {
            burst.push(next?);
        }
        if events
            .send(SyncEvent::Updated(views.apply(burst)))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable("the datastore watch ended".into()))
}

/// Replaces the view with the store's current state, and sends it unless nothing changed
/// (`true` if sent).
async fn snapshot(
    store: &dyn Datastore,
    views: &mut Views,
    events: &mpsc::Sender<SyncEvent>,
) -> Result<bool, StoreError> {
    let snapshot = store.list(None).await?;
    let fresh = ResourceView {
        revision: snapshot.revision,
        resources: snapshot
            .resources
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect(),
    };
    // A resync that finds what we already have says nothing new: the dataplane keeps
    // its state, nothing is flushed. (The very first snapshot is always sent.)
    let view = views.current();
    if fresh.resources != view.resources || view.revision == 0 {
        views.reset(fresh);
        // A closed receiver is noticed by the caller.
        let _ = events
            .send(SyncEvent::Updated(Arc::clone(views.current())))
            .await;
        Ok(true)
    } else {
        views.resynced(fresh.revision);
        Ok(false)
    }
}
