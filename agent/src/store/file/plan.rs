//! Turning a commit's ops into the changes to write, with calicoctl's create / replace /
//! apply / delete semantics, without touching the state they are checked against.

use std::collections::BTreeMap;

use super::record::StoredChange;
use crate::model::{Resource, ResourceKey};
use crate::store::{Op, OpOutcome, StoreError};

/// The changes of a commit that can be applied, and what happened to each op.
pub(super) struct Plan {
    pub changes: Vec<StoredChange>,
    pub outcomes: Vec<OpOutcome>,
}

/// Checks `ops` in order against `state` as changed by the ops before each; the first op
/// that cannot be applied fails the whole commit.
pub(super) fn plan(
    state: &BTreeMap<ResourceKey, Resource>,
    ops: Vec<Op>,
) -> Result<Plan, StoreError> {
    // What earlier ops of this commit did to a key: Some(true) written, Some(false) deleted.
    let mut overlay: BTreeMap<ResourceKey, bool> = BTreeMap::new();
    let mut changes = Vec::with_capacity(ops.len());
    let mut outcomes = Vec::with_capacity(ops.len());
    for (index, op) in ops.into_iter().enumerate() {
        let key = op.key();
        let exists = overlay
            .get(&key)
            .copied()
            .unwrap_or_else(|| state.contains_key(&key));
        let change = match op {
            Op::Create {
                resource,
                skip_existing,
            } => match (exists, skip_existing) {
                (false, _) => Some(StoredChange::Put(resource)),
                (true, true) => None,
                (true, false) => return Err(StoreError::AlreadyExists { index, key }),
            },
            Op::Replace(resource) => match exists {
                true => Some(StoredChange::Put(resource)),
                false => return Err(StoreError::NotFound { index, key }),
            },
            Op::Apply(resource) => Some(StoredChange::Put(resource)),
            Op::Delete { skip_missing, .. } => match (exists, skip_missing) {
                (true, _) => Some(StoredChange::Delete(key.clone())),
                (false, true) => None,
                (false, false) => return Err(StoreError::NotFound { index, key }),
            },
        };
        match change {
            Some(change) => {
                overlay.insert(key, matches!(change, StoredChange::Put(_)));
                changes.push(change);
                outcomes.push(OpOutcome::Written);
            }
            None => outcomes.push(OpOutcome::Skipped),
        }
    }
    Ok(Plan { changes, outcomes })
}
