//! The lookups the kernel will do, in the order it will do them. The differential test
//! holds these against the reference evaluator.

use std::net::IpAddr;

use crate::model::ResourceKey;
use crate::policy::{Direction, L4, PROTO_TCP, PROTO_UDP, Packet, RuleRef, Verdict};

use super::cidr_classes::longest_match;
use super::identity::LocalId;
use super::image::{Image, PeerGroup};
use super::program::Outcome;
use super::remote::RemoteId;

impl Image {
    /// The local ID policing `endpoint` for packets on its own address `addr` (the source
    /// of its egress packets, the destination of its ingress packets).
    pub fn local_id_of(&self, endpoint: &ResourceKey, addr: IpAddr) -> Option<LocalId> {
        self.endpoints.get(&(endpoint.clone(), addr)).copied()
    }

    /// Exact endpoint entry, else longest CIDR prefix, else world.
    pub fn remote_id_of(&self, addr: IpAddr) -> RemoteId {
        self.exact
            .get(&addr)
            .or_else(|| longest_match(&self.lpm, addr))
            .copied()
            .unwrap_or(self.world)
    }

    /// The outcome for `packet` crossing the endpoint with local ID `local` in `direction`,
    /// `peer` being its other end (the source of an ingress packet, the destination of an
    /// egress one). `None` when the kernel would not get this far: an unknown local ID, a
    /// peer of another family, or L4 fields that do not fit the protocol (the kernel drops
    /// packets it cannot parse before policy).
    pub fn lookup(
        &self,
        local: LocalId,
        peer: IpAddr,
        direction: Direction,
        packet: &Packet,
    ) -> Option<&Outcome> {
        let info = self.locals.get(local.0 as usize)?;
        if super::signature::Family::of(peer) != info.family {
            return None;
        }
        let remote = self.remote_id_of(peer);
        let group = self
            .peers
            .get(&(local, direction, remote))
            .copied()
            .unwrap_or(PeerGroup::DEFAULT);
        let table = self.groups.get(&(local, direction, group))?;
        let table = self.tables.get(table.0 as usize)?.as_ref()?;
        let protocol = packet.protocol;
        let (a, b) = if protocol == PROTO_TCP || protocol == PROTO_UDP {
            let L4::Ports { src, dst } = packet.l4 else {
                return None;
            };
            (src, dst)
        } else if protocol == info.family.icmp_protocol() {
            let L4::Icmp { icmp_type, code } = packet.l4 else {
                return None;
            };
            (u16::from(icmp_type), u16::from(code))
        } else {
            (0, 0)
        };
        let outcome = table.get(protocol, a, b)?;
        self.outcomes.get(outcome.0 as usize)
    }

    /// [`Image::lookup`] reduced to the verdict and the deciding rule, as counters see it.
    pub fn verdict(
        &self,
        local: LocalId,
        peer: IpAddr,
        direction: Direction,
        packet: &Packet,
    ) -> Option<(Verdict, Option<&RuleRef>)> {
        self.lookup(local, peer, direction, packet)
            .map(|o| (o.verdict, o.rule()))
    }
}
