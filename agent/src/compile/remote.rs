//! Remote IDs: every peer address reduced to what rules can ask about it.
//!
//! An address's peer signature says, for each label test (selector, tag) in a peer position
//! of some rule, whether any endpoint owning the address passes it, and for each CIDR in a
//! peer position, whether it contains the address. Equal signatures get the same remote
//! ID; IDs are numbered in signature order, so the numbering depends only on the input.
//!
//! Addresses owned by no endpoint fail every label test, so their signature is their CIDR
//! class: LPM entries, one per distinct peer CIDR ([`super::cidr_classes`]); addresses in no
//! CIDR are "world". Endpoint addresses get an exact entry only where their signature
//! differs from what the LPM would give them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::cidr_classes::{longest_match, lpm_classes};
use super::inputs::Inputs;
use super::rules::Universe;
use super::signature::{Bits, Family, Signature};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemoteId(pub u32);

pub(crate) struct RemoteClasses {
    /// Indexed by remote ID.
    pub signatures: Vec<Signature>,
    id_of: HashMap<Signature, RemoteId>,
    /// The label tests and CIDRs in peer positions: the bits remote signatures have.
    pub peer_label_tests: BTreeSet<usize>,
    pub peer_cidrs: BTreeSet<usize>,
    lpm_signatures: BTreeMap<IpNet, Signature>,
    world_signature: Signature,
    pub exact: BTreeMap<IpAddr, RemoteId>,
    pub lpm: BTreeMap<IpNet, RemoteId>,
    pub world: RemoteId,
    /// The remote IDs an address of each family can get, sorted.
    pub by_family: BTreeMap<Family, Vec<RemoteId>>,
}

impl RemoteClasses {
    pub fn classify(inputs: &Inputs) -> RemoteClasses {
        let universe = &inputs.universe;
        let mut label_tests = BTreeSet::new();
        let mut cidrs = BTreeSet::new();
        for rule in &inputs.rules {
            label_tests.extend(rule.peer().label_tests());
            cidrs.extend(rule.peer().cidrs());
        }
        let peer_label_tests = label_tests;
        let peer_cidrs = cidrs;
        let label_tests: Vec<usize> = peer_label_tests.iter().copied().collect();
        let cidrs: Vec<(usize, IpNet)> = peer_cidrs
            .iter()
            .copied()
            .filter_map(|i| universe.cidrs.get(i).map(|n| (i, *n)))
            .collect();
        let cidr_ids: Vec<usize> = cidrs.iter().map(|&(i, _)| i).collect();

        let class_signature = |containing: &[usize]| {
            let mut sig = Signature {
                labels: Bits::zeros(universe.label_tests.len()),
                cidrs: Bits::zeros(universe.cidrs.len()),
            };
            for &i in containing {
                sig.cidrs.set(i);
            }
            sig
        };
        let world = class_signature(&[]);
        let lpm: BTreeMap<IpNet, Signature> = lpm_classes(&cidrs)
            .into_iter()
            .map(|(net, containing)| (net, class_signature(&containing)))
            .collect();
        let mut exact = BTreeMap::new();
        // Endpoints with the same labels pass the same tests: evaluate them once.
        let mut label_bits: HashMap<&[BTreeMap<String, String>], Bits> = HashMap::new();
        for (addr, owners) in &inputs.owners {
            let labels = label_bits
                .entry(owners.as_slice())
                .or_insert_with_key(|owners| universe.label_bits(owners, &label_tests))
                .clone();
            let sig = Signature {
                labels,
                cidrs: universe.cidr_bits(*addr, &cidr_ids),
            };
            if longest_match(&lpm, *addr).unwrap_or(&world) != &sig {
                exact.insert(*addr, sig);
            }
        }

        let signatures: Vec<Signature> = lpm
            .values()
            .chain(exact.values())
            .chain([&world])
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let id_of = |sig: &Signature| {
            let i = signatures.binary_search(sig).unwrap_or(0);
            RemoteId(u32::try_from(i).unwrap_or(u32::MAX))
        };
        let world_id = id_of(&world);
        let lpm_ids: BTreeMap<IpNet, RemoteId> = lpm.iter().map(|(n, s)| (*n, id_of(s))).collect();
        let exact: BTreeMap<IpAddr, RemoteId> = exact.iter().map(|(a, s)| (*a, id_of(s))).collect();

        let mut by_family: BTreeMap<Family, BTreeSet<RemoteId>> = BTreeMap::new();
        for (net, id) in &lpm_ids {
            by_family
                .entry(Family::of(net.addr()))
                .or_default()
                .insert(*id);
        }
        for (addr, id) in &exact {
            by_family.entry(Family::of(*addr)).or_default().insert(*id);
        }
        for (family, zero) in [
            (Family::V4, IpNet::V4(Default::default())),
            (Family::V6, IpNet::V6(Default::default())),
        ] {
            // With a /0 among the CIDRs no address of the family is "world".
            if !lpm_ids.contains_key(&zero) {
                by_family.entry(family).or_default().insert(world_id);
            }
        }
        let id_of = signatures
            .iter()
            .enumerate()
            .map(|(i, sig)| (sig.clone(), RemoteId(u32::try_from(i).unwrap_or(u32::MAX))))
            .collect();
        RemoteClasses {
            id_of,
            peer_label_tests,
            peer_cidrs,
            lpm_signatures: lpm,
            world_signature: world,
            signatures,
            exact,
            lpm: lpm_ids,
            world: world_id,
            by_family: by_family
                .into_iter()
                .map(|(f, ids)| (f, ids.into_iter().collect()))
                .collect(),
        }
    }

    pub fn signature(&self, id: RemoteId) -> Option<&Signature> {
        self.signatures.get(id.0 as usize)
    }

    /// The exact entry `addr` needs with these owners, when the remote IDs as they are can
    /// say it: `Ok(None)` when the CIDR classes already give it the right ID, `Err` when its
    /// signature has no remote ID of its family (only a new classification can give one).
    pub fn exact_entry(
        &self,
        universe: &Universe,
        addr: IpAddr,
        owners: &[BTreeMap<String, String>],
    ) -> Result<Option<RemoteId>, Unclassified> {
        let label_tests: Vec<usize> = self.peer_label_tests.iter().copied().collect();
        let cidrs: Vec<usize> = self.peer_cidrs.iter().copied().collect();
        let sig = universe.signature(addr, owners, &label_tests, &cidrs);
        if longest_match(&self.lpm_signatures, addr).unwrap_or(&self.world_signature) == &sig {
            return Ok(None);
        }
        let id = self.id_of.get(&sig).ok_or(Unclassified)?;
        let of_family = self
            .by_family
            .get(&Family::of(addr))
            .is_some_and(|ids| ids.binary_search(id).is_ok());
        if of_family {
            Ok(Some(*id))
        } else {
            Err(Unclassified)
        }
    }
}

/// An address whose signature no remote ID of its family stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unclassified;
