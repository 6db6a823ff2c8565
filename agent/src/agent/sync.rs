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
    /// Changed only through [`ResourceView::insert`] and [`ResourceView::remove`], which
    /// keep `counts`.
    resources: BTreeMap<ResourceKey, Arc<Resource>>,
    /// Resources of each kind, by `Kind as usize`: the agent logs them on every change,
    /// and counting 20,000 keys each time cost it about a millisecond before its compile.
    counts: [usize; Kind::ALL.len()],
}

impl ResourceView {
    pub fn new(revision: Revision, resources: BTreeMap<ResourceKey, Arc<Resource>>) -> Self {
        let mut counts = [0; Kind::ALL.len()];
        for key in resources.keys() {
            counts[key.kind() as usize] += 1;
        }
        ResourceView {
            revision,
            resources,
            counts,
        }
    }

    pub fn resources(&self) -> &BTreeMap<ResourceKey, Arc<Resource>> {
        &self.resources
    }

    pub fn insert(&mut self, key: ResourceKey, resource: Arc<Resource>) {
        let kind = key.kind();
        if self.resources.insert(key, resource).is_none() {
            self.counts[kind as usize] += 1;
        }
    }

    pub fn remove(&mut self, key: &ResourceKey) {
        if self.resources.remove(key).is_some() {
            self.counts[key.kind() as usize] -= 1;
        }
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.counts[kind as usize]
    }

    /// The workload endpoints on `node`, found as the range of keys they have (keys sort
    /// by kind, then node) rather than by looking at every resource: on each change, at
    /// 10,000 endpoints, that look cost the agent a millisecond or two before its compile.
    pub fn workload_endpoints_on<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = &'a Resource> {
        let first = ResourceKey::WorkloadEndpoint {
            node: node.to_string(),
            orchestrator: String::new(),
            workload: String::new(),
            name: String::new(),
        };
        self.resources
            .range(first..)
            .take_while(move |(key, _)| {
                matches!(key, ResourceKey::WorkloadEndpoint { node: n, .. } if n == node)
            })
            .map(|(_, resource)| &**resource)
    }

    pub(super) fn apply(&mut self, change: Change) {
        self.revision = change.revision();
        match change {
            Change::Put { resource, .. } => {
                self.insert(resource.key(), Arc::new(resource));
            }
            Change::Delete { key, .. } => {
                self.remove(&key);
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
    let fresh = ResourceView::new(
        snapshot.revision,
        snapshot
            .resources
            .into_iter()
            .map(|r| (r.key(), Arc::new(r)))
            .collect(),
    );
    // A resync that finds what we already have says nothing new: the dataplane keeps
    // its state, nothing is flushed. (The very first snapshot is always sent.)
    let view = views.current();
    if fresh.resources != view.resources || view.revision == 0 {
        views.reset(fresh);
        // A closed receiver is noticed by the caller.
        let _ = events
            .send(SyncEvent::Updated(Arc::clone(views.current())))
            .await;
        views.prepare_back();
        Ok(true)
    } else {
        views.resynced(fresh.revision);
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{WorkloadEndpoint, WorkloadEndpointMetadata, WorkloadEndpointSpec};

    fn endpoint(node: &str, workload: &str, name: &str) -> Resource {
        Resource::WorkloadEndpoint(WorkloadEndpoint {
            metadata: WorkloadEndpointMetadata {
                name: name.to_string(),
                node: node.to_string(),
                orchestrator: "k8s".to_string(),
                workload: workload.to_string(),
                ..Default::default()
            },
            spec: WorkloadEndpointSpec::default(),
        })
    }

    #[test]
    fn a_nodes_workload_endpoints_are_those_whose_metadata_names_it() {
        let mut view = ResourceView::default();
        let resources = [
            endpoint("a", "w1", "e1"),
            endpoint("a", "w2", "e2"),
            endpoint("ab", "w0", "e0"),
            endpoint("", "w0", "e0"),
            endpoint("b", "w1", "e1"),
        ];
        for (i, resource) in resources.into_iter().enumerate() {
            view.apply(Change::Put {
                revision: i as u64 + 1,
                resource,
            });
        }
        for node in ["a", "ab", "b", "", "c", "aa"] {
            let expected: Vec<&Resource> = view
                .resources()
                .values()
                .map(|r| &**r)
                .filter(|r| matches!(r, Resource::WorkloadEndpoint(w) if w.metadata.node == node))
                .collect();
            let found: Vec<&Resource> = view.workload_endpoints_on(node).collect();
            assert_eq!(found, expected, "node {node:?}");
        }
        assert_eq!(view.workload_endpoints_on("a").count(), 2);
    }

    #[test]
    fn the_counts_by_kind_follow_puts_replacements_and_deletes() {
        let recount = |view: &ResourceView, kind: Kind| {
            view.resources().keys().filter(|k| k.kind() == kind).count()
        };
        let profile = |name: &str| {
            Resource::Profile(crate::model::Profile {
                metadata: crate::model::ProfileMetadata {
                    name: name.to_string(),
                    ..Default::default()
                },
                ..Default::default()
            })
        };
        let mut view = ResourceView::default();
        let mut revision = 0;
        let mut change = |view: &mut ResourceView, put: Option<Resource>, key: ResourceKey| {
            revision += 1;
            view.apply(match put {
                Some(resource) => Change::Put { revision, resource },
                None => Change::Delete { revision, key },
            });
        };
        for i in 0..40 {
            let (node, name) = (format!("n{}", i % 3), format!("e{}", i % 7));
            let endpoint = endpoint(&node, "w", &name);
            let key = endpoint.key();
            // Every third change deletes (sometimes a key that is not there), the rest put
            // (often a key that is there: a replacement).
            let put = (i % 3 != 2).then_some(endpoint);
            change(&mut view, put, key);
            let p = profile(&format!("p{}", i % 5));
            let key = p.key();
            change(&mut view, (i % 4 != 3).then_some(p), key);
            for kind in Kind::ALL {
                assert_eq!(view.count(kind), recount(&view, kind), "{kind:?} after {i}");
            }
        }
        assert!(view.count(Kind::WorkloadEndpoint) > 0 && view.count(Kind::Profile) > 0);
        let rebuilt = ResourceView::new(view.revision, view.resources().clone());
        assert_eq!(rebuilt, view);
    }
}
