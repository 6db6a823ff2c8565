//! Following the datastore: one snapshot, then the watch stream from the snapshot's
//! revision; after a lost history (`Compacted`) or a broken stream, a fresh snapshot that
//! converges to the store's state without starting over from empty.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::model::{Kind, Resource, ResourceKey};
use crate::store::{Change, Datastore, Revision, StoreError};

/// The resources as of one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceView {
    pub revision: Revision,
    pub resources: BTreeMap<ResourceKey, Resource>,
}

impl ResourceView {
    pub fn count(&self, kind: Kind) -> usize {
        self.resources.keys().filter(|k| k.kind() == kind).count()
    }

    fn apply(&mut self, change: Change) {
        self.revision = change.revision();
        match change {
            Change::Put { resource, .. } => {
                self.resources.insert(resource.key(), resource);
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

/// How long to wait before retrying after an error, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows `store` until `events` is closed, sending a view after every change.
pub async fn follow(store: Arc<dyn Datastore>, events: mpsc::Sender<SyncEvent>) {
    let mut view = ResourceView::default();
    let mut retry = RETRY_MIN;
    loop {
        match sync_once(&*store, &mut view, &events).await {
            Ok(()) => return, // receiver gone
            Err(e) => {
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

/// One snapshot and the watch that follows it. `Ok` when the receiver is gone; `Err` when
/// the snapshot or the watch failed and must be redone.
async fn sync_once(
    store: &dyn Datastore,
    view: &mut ResourceView,
    events: &mpsc::Sender<SyncEvent>,
) -> Result<(), StoreError> {
    let snapshot = store.list(None).await?;
    let fresh = ResourceView {
        revision: snapshot.revision,
        resources: snapshot
            .resources
            .into_iter()
            .map(|r| (r.key(), r))
            .collect(),
    };
    // A resync that finds what we already have says nothing new: the dataplane keeps
    // its state, nothing is flushed.
    if fresh != *view || view.revision == 0 {
        *view = fresh;
        if events
            .send(SyncEvent::Updated(Arc::new(view.clone())))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    let mut watch = store.watch(view.revision).await?;
    while let Some(change) = watch.recv().await {
        view.apply(change?);
        // Send one view per burst of changes, not one per change.
        while let Ok(next) = watch.try_recv() {
            view.apply(next?);
        }
        if events
            .send(SyncEvent::Updated(Arc::new(view.clone())))
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Err(StoreError::Unavailable("the datastore watch ended".into()))
}
