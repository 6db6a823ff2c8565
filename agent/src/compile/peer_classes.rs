//! Peer classes: the remote IDs one program cannot tell apart.
//!
//! A program's rules read only a few bits of a peer's signature (the label tests and CIDRs
//! in their peer position). Remotes that agree on those bits narrow the program to the same
//! rules, so they get the same table. The classes come from splitting the remotes of the
//! family by each bit the program reads, on sets of remote IDs: the cost grows with the
//! number of bits and classes, not with the number of remotes, and the table of a class is
//! built once from one representative.

use super::remote::{RemoteClasses, RemoteId};
use super::signature::{Bits, Family};

/// One bit of a peer signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum PeerBit {
    Label(usize),
    Cidr(usize),
}

/// For every signature bit, the remote IDs that have it; for every family, the remote IDs an
/// address of that family can get.
pub(crate) struct RemoteSets {
    labels: Vec<Bits>,
    cidrs: Vec<Bits>,
    v4: Bits,
    v6: Bits,
}

impl RemoteSets {
    pub fn new(remotes: &RemoteClasses, label_tests: usize, cidrs: usize) -> RemoteSets {
        let count = remotes.signatures.len();
        let mut sets = RemoteSets {
            labels: vec![Bits::zeros(count); label_tests],
            cidrs: vec![Bits::zeros(count); cidrs],
            v4: Bits::zeros(count),
            v6: Bits::zeros(count),
        };
        for (remote, sig) in remotes.signatures.iter().enumerate() {
            for i in sig.labels.ones() {
                if let Some(set) = sets.labels.get_mut(i) {
                    set.set(remote);
                }
            }
            for i in sig.cidrs.ones() {
                if let Some(set) = sets.cidrs.get_mut(i) {
                    set.set(remote);
                }
            }
        }
        for (family, ids) in &remotes.by_family {
            let set = match family {
                Family::V4 => &mut sets.v4,
                Family::V6 => &mut sets.v6,
            };
            for id in ids {
                set.set(id.0 as usize);
            }
        }
        sets
    }

    /// The remotes of `family`, split into classes that agree on every bit of `bits`;
    /// each class non-empty, ordered by its lowest remote ID.
    pub fn classes(&self, family: Family, bits: &[PeerBit]) -> Vec<Bits> {
        let all = match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        let mut classes = vec![all.clone()];
        for bit in bits {
            let Some(having) = (match *bit {
                PeerBit::Label(i) => self.labels.get(i),
                PeerBit::Cidr(i) => self.cidrs.get(i),
            }) else {
                continue;
            };
            classes = classes
                .iter()
                .flat_map(|class| [class.and(having), class.and_not(having)])
                .filter(|part| !part.is_empty())
                .collect();
        }
        classes.retain(|c| !c.is_empty());
        classes.sort_by_key(first);
        classes
    }
}

/// The lowest remote ID of a class.
pub(crate) fn first(class: &Bits) -> RemoteId {
    RemoteId(
        class
            .ones()
            .next()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(u32::MAX),
    )
}

/// The remote IDs of a class, ascending.
pub(crate) fn members(class: &Bits) -> impl Iterator<Item = RemoteId> + '_ {
    class
        .ones()
        .map(|i| RemoteId(u32::try_from(i).unwrap_or(u32::MAX)))
}
