//! Which table IDs the image's group entries refer to, and which are free to hand out
//! again. In-place updates replace tables all the time; without reuse the old ones would
//! pile up until the maps are full and only a full compile could clear them.
//!
//! A table ID is live while a group entry refers to it. One whose count falls to zero is
//! freed only at the end of the update ([`TableIds::sweep`]): within an update, caches
//! (programs' tables, a class's previous table) may still hand it out, and it must still
//! be the same table then.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub(crate) struct TableIds {
    /// Per table ID: how many group entries refer to it.
    refs: Vec<u32>,
    /// Per table ID: how many times it was freed, so that a cache entry made before (a
    /// program's table) is known to be stale.
    epochs: Vec<u32>,
    free: BTreeSet<u32>,
    /// IDs made or unreferenced since the last sweep: the only ones that may be unused.
    unreferenced: Vec<u32>,
}

impl TableIds {
    /// An ID for a new table: the lowest free one, else the next after all (`len` of them
    /// so far).
    pub fn allocate(&mut self) -> u32 {
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                self.refs.push(0);
                self.epochs.push(0);
                u32::try_from(self.refs.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // Made for a group entry, which may yet not take it.
        self.unreferenced.push(id);
        id
    }

    pub fn refer(&mut self, id: u32) {
        if let Some(n) = self.refs.get_mut(id as usize) {
            *n += 1;
        }
    }

    pub fn unrefer(&mut self, id: u32) {
        if let Some(n) = self.refs.get_mut(id as usize) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unreferenced.push(id);
            }
        }
    }

    /// Frees the IDs nothing refers to any more; returns them, lowest first.
    pub fn sweep(&mut self) -> Vec<u32> {
        let mut candidates = std::mem::take(&mut self.unreferenced);
        candidates.sort_unstable();
        candidates.dedup();
        let mut freed = Vec::new();
        for id in candidates {
            let i = id as usize;
            if self.refs.get(i) == Some(&0) && !self.free.contains(&id) {
                if let Some(epoch) = self.epochs.get_mut(i) {
                    *epoch = epoch.wrapping_add(1);
                }
                self.free.insert(id);
                freed.push(id);
            }
        }
        freed
    }

    /// Changes each time `id` is freed.
    pub fn epoch(&self, id: u32) -> u32 {
        self.epochs.get(id as usize).copied().unwrap_or(u32::MAX)
    }

    /// How many group entries refer to `id`.
    #[cfg(test)]
    pub fn refs(&self, id: u32) -> u32 {
        self.refs.get(id as usize).copied().unwrap_or(0)
    }

    #[cfg(test)]
    pub fn is_free(&self, id: u32) -> bool {
        self.free.contains(&id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;

    #[test]
    fn an_id_is_freed_at_the_sweep_after_its_last_reference_and_then_reused() {
        let mut ids = TableIds::default();
        let (a, b) = (ids.allocate(), ids.allocate());
        assert_eq!((a, b), (0, 1));
        ids.refer(a);
        ids.refer(a);
        ids.refer(b);
        assert!(ids.sweep().is_empty());
        ids.unrefer(a);
        ids.unrefer(b);
        // Still within the update: nothing is free yet, so nothing is handed out again.
        assert_eq!(ids.allocate(), 2);
        let epoch = ids.epoch(b);
        // `c` was made but never referred to: it goes too.
        assert_eq!(ids.sweep(), vec![1, 2]);
        assert_ne!(ids.epoch(b), epoch);
        assert!(ids.is_free(b) && !ids.is_free(a));
        assert_eq!(ids.allocate(), 1);
        assert_eq!(ids.allocate(), 2);
        assert_eq!(ids.allocate(), 3);
    }

    #[test]
    fn an_id_referred_to_again_before_the_sweep_stays() {
        let mut ids = TableIds::default();
        let a = ids.allocate();
        ids.refer(a);
        ids.unrefer(a);
        ids.refer(a);
        assert!(ids.sweep().is_empty());
        assert_eq!(ids.refs(a), 1);
    }
}
