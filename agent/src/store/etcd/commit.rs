//! A commit as one etcd transaction, with calicoctl's create / replace / apply / delete
//! semantics.
//!
//! Optimistic: read the keys the ops touch at one revision, decide every op against that
//! state (a later op sees the earlier ones), then write all the changes in one `Txn` whose
//! compares say "none of these keys changed since". If another writer got in between, the
//! compares fail, nothing is written, and the commit starts over from a fresh read, so
//! `AlreadyExists` / `NotFound` are always decided against the state the writes apply to.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp};

use super::config::EtcdConfig;
use super::connect::call;
use super::layout;
use crate::model::{Resource, ResourceKey};
use crate::store::{CommitOutcome, Op, OpOutcome, Revision, StoreError};

/// etcd's default `--max-txn-ops`: the most compares, and the most operations per level
/// of a transaction.
const MAX_TXN_OPS: usize = 128;

/// Commits that lose the race this many times in a row give up.
const MAX_ATTEMPTS: u32 = 20;

/// The keys a commit touches, as read at one revision.
struct Observed {
    revision: Revision,
    /// Every etcd key of every touched resource (and `Ready`): its mod revision, 0 if absent.
    mod_revisions: BTreeMap<String, i64>,
}

impl Observed {
    fn exists(&self, key: &ResourceKey) -> bool {
        layout::keys_of(key)
            .iter()
            .any(|k| self.mod_revisions.get(k).is_some_and(|r| *r != 0))
    }
}

pub async fn commit(
    kv: &mut KvClient,
    config: &EtcdConfig,
    ops: Vec<Op>,
) -> Result<CommitOutcome, StoreError> {
    let mut delay = Duration::from_millis(5);
    for _ in 0..MAX_ATTEMPTS {
        let observed = observe(kv, config, &ops).await?;
        let Plan { changes, outcomes } = plan(&observed, &ops)?;
        if changes.is_empty() {
            return Ok(CommitOutcome {
                revision: observed.revision,
                outcomes,
            });
        }
        let txn = transaction(&observed, &changes).map_err(|problem| {
            StoreError::Unavailable(format!("{}: {problem}", config.describe()))
        })?;
        let response = call(config, "commit failed", kv.txn(txn)).await?;
        if response.succeeded() {
            let revision = response.header().map_or(0, |h| h.revision());
            return Ok(CommitOutcome {
                revision: u64::try_from(revision).unwrap_or(0),
                outcomes,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    Err(StoreError::Unavailable(format!(
        "{}: commit gave up after {MAX_ATTEMPTS} attempts: other writers kept changing the same resources",
        config.describe()
    )))
}

/// Reads, at one revision, every key the ops' resources are stored under.
async fn observe(
    kv: &mut KvClient,
    config: &EtcdConfig,
    ops: &[Op],
) -> Result<Observed, StoreError> {
    let ready = call(config, "cannot read", kv.get(layout::READY, None)).await?;
    let revision = ready.header().map_or(0, |h| h.revision());
    let mut mod_revisions = BTreeMap::new();
    mod_revisions.insert(
        layout::READY.to_string(),
        ready.kvs().first().map_or(0, |kv| kv.mod_revision()),
    );
    let mut seen = std::collections::BTreeSet::new();
    for op in ops {
        let key = op.key();
        if !seen.insert(key.clone()) {
            continue;
        }
        for etcd_key in layout::keys_of(&key) {
            mod_revisions.insert(etcd_key, 0);
        }
        // A profile's keys in one read: they share a prefix no other profile has.
        let (start, options) = match &key {
            ResourceKey::Profile { name } => (
                layout::profile_prefix(name),
                GetOptions::new().with_prefix().with_revision(revision),
            ),
            other => (
                layout::keys_of(other).remove(0),
                GetOptions::new().with_revision(revision),
            ),
        };
        let response = call(config, "cannot read", kv.get(start, Some(options))).await?;
        for found in response.kvs() {
            if let Ok(k) = found.key_str()
                && let Some(slot) = mod_revisions.get_mut(k)
            {
                *slot = found.mod_revision();
            }
        }
    }
    Ok(Observed {
        revision: u64::try_from(revision).unwrap_or(0),
        mod_revisions,
    })
}

/// What a commit's ops come to.
struct Plan {
    /// Each touched resource's state after all ops (`None`: deleted).
    changes: BTreeMap<ResourceKey, Option<Resource>>,
    /// One per op, in order.
    outcomes: Vec<OpOutcome>,
}

/// Decides each op against the observed state as changed by the ops before it. The first
/// op that cannot be applied fails the commit, naming its index.
fn plan(observed: &Observed, ops: &[Op]) -> Result<Plan, StoreError> {
    let mut changes: BTreeMap<ResourceKey, Option<Resource>> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let key = op.key();
        let exists = match changes.get(&key) {
            Some(state) => state.is_some(),
            None => observed.exists(&key),
        };
        let change = match op {
            Op::Create {
                resource,
                skip_existing,
            } => match (exists, skip_existing) {
                (false, _) => Some(Some(resource.clone())),
                (true, true) => None,
                (true, false) => return Err(StoreError::AlreadyExists { index, key }),
            },
            Op::Replace(resource) => match exists {
                true => Some(Some(resource.clone())),
                false => return Err(StoreError::NotFound { index, key }),
            },
            Op::Apply(resource) => Some(Some(resource.clone())),
            Op::Delete { skip_missing, .. } => match (exists, skip_missing) {
                (true, _) => Some(None),
                (false, true) => None,
                (false, false) => return Err(StoreError::NotFound { index, key }),
            },
        };
        match change {
            Some(state) => {
                changes.insert(key, state);
                outcomes.push(OpOutcome::Written);
            }
            None => outcomes.push(OpOutcome::Skipped),
        }
    }
    Ok(Plan { changes, outcomes })
}

/// The writes, guarded by "every touched key is as observed". Palisade's first write also
/// marks the datastore ready for Felix, as libcalico-go does.
fn transaction(
    observed: &Observed,
    changes: &BTreeMap<ResourceKey, Option<Resource>>,
) -> Result<Txn, String> {
    let mut writes = Vec::new();
    if observed.mod_revisions.get(layout::READY) == Some(&0) {
        writes.push(TxnOp::put(layout::READY, "true", None));
    }
    for (key, state) in changes {
        match state {
            Some(resource) => writes.extend(
                layout::encode(resource)
                    .into_iter()
                    .map(|(k, v)| TxnOp::put(k, v, None)),
            ),
            None => writes.extend(
                layout::keys_of(key)
                    .into_iter()
                    .filter(|k| observed.mod_revisions.get(k).is_some_and(|r| *r != 0))
                    .map(|k| TxnOp::delete(k, None)),
            ),
        }
    }
    let per_key = per_key_guards(observed);
    let shape = Shape::fitting(per_key.len(), writes.len())
        .map(|shape| (shape, per_key))
        .or_else(|| Shape::fitting(1, writes.len()).map(|shape| (shape, range_guard(observed))));
    let Some((shape, guards)) = shape else {
        return Err(format!(
            "{} keys to write are more than one etcd transaction can hold with etcd's \
             default --max-txn-ops {MAX_TXN_OPS}; split the input",
            writes.len()
        ));
    };
    Ok(Txn::new().when(guards).and_then(shape.arrange(writes)))
}

/// How the writes are laid out. etcd allows `MAX_TXN_OPS` compares or operations on the
/// top level, and a nested transaction only what its parent level left over
/// (`MAX_TXN_OPS` minus the parent's widest list), so nesting trades width for depth.
struct Shape {
    /// Nested transactions on the top level; 0 for all writes flat on the top level.
    chunks: usize,
    chunk_size: usize,
}

impl Shape {
    fn fitting(compares: usize, writes: usize) -> Option<Shape> {
        if compares.max(writes) <= MAX_TXN_OPS {
            return Some(Shape {
                chunks: 0,
                chunk_size: writes,
            });
        }
        (1..MAX_TXN_OPS).find_map(|chunks| {
            let chunk_size = MAX_TXN_OPS.checked_sub(compares.max(chunks))?;
            (chunk_size > 0 && chunks * chunk_size >= writes)
                .then_some(Shape { chunks, chunk_size })
        })
    }

    fn arrange(&self, writes: Vec<TxnOp>) -> Vec<TxnOp> {
        if self.chunks == 0 {
            return writes;
        }
        let mut nested = Vec::with_capacity(self.chunks);
        let mut rest = writes;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(self.chunk_size));
            nested.push(TxnOp::txn(Txn::new().and_then(rest)));
            rest = tail;
        }
        nested
    }
}

/// One compare per observed key: nothing palisade read has changed or appeared since.
fn per_key_guards(observed: &Observed) -> Vec<Compare> {
    observed
        .mod_revisions
        .iter()
        .map(|(key, revision)| Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision))
        .collect()
}

/// One range compare over the whole `/calico/v1/` prefix ("nothing created or changed
/// since the read"), for commits too large for a compare per key. It misses only a
/// concurrent delete of one of the keys.
fn range_guard(observed: &Observed) -> Vec<Compare> {
    let next = i64::try_from(observed.revision)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    vec![Compare::mod_revision(layout::ROOT, CompareOp::Less, next).with_prefix()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_respect_etcds_limits_per_level() {
        let flat = Shape::fitting(10, 128).unwrap();
        assert_eq!(flat.chunks, 0);
        assert_eq!(Shape::fitting(128, 1).unwrap().chunks, 0);
        for (compares, writes) in [(1, 129), (1, 4096), (100, 180), (5, 1000)] {
            let shape = Shape::fitting(compares, writes).unwrap();
            assert!(shape.chunks > 0);
            assert!(compares.max(shape.chunks) + shape.chunk_size <= MAX_TXN_OPS);
            assert!(shape.chunks * shape.chunk_size >= writes);
        }
        assert!(Shape::fitting(1, 4097).is_none());
        assert!(Shape::fitting(128, 129).is_none());
    }
}
