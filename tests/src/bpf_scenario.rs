//! The little world the TC program tests share: one workload behind ifindex 1 (lo) with an
//! IPv4 and an IPv6 address, a peer endpoint elsewhere in the cluster, and the world.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use palisade_common::{Config, DIR_EGRESS, GROUP_DEFAULT};

use crate::{
    bpf_maps::{Dataplane, Decides, OutcomeIndexes, Rows},
    bpf_run::{SkbContext, TC_ACT_OK, TC_ACT_SHOT},
};

/// The workload's host veth, as the tests see it (lo: it must exist).
pub const IFINDEX: u32 = 1;
pub const LOCAL_ID: u32 = 7;
pub const PEER_ID: u32 = 100;
pub const WORLD_ID: u32 = 1;

pub const WORKLOAD_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 65, 0, 1));
pub const PEER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 65, 0, 2));
/// An address no entry names: the world.
pub const STRANGER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9));
pub const WORKLOAD_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 1));
pub const PEER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 2));
pub const STRANGER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9));

pub const ANY_V4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const ANY_V6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

pub fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// Loads the object and installs the workload, the peer and the world in `slot`.
pub fn dataplane_with_workload(slot: u8) -> Dataplane {
    let mut dataplane = Dataplane::load();
    install_workload(&mut dataplane, slot);
    dataplane
}

/// The workload's addresses, the peer's exact entries and the /0 world entries in `slot`.
pub fn install_workload(dataplane: &mut Dataplane, slot: u8) {
    for (workload, peer, any) in [
        (WORKLOAD_V4, PEER_V4, ANY_V4),
        (WORKLOAD_V6, PEER_V6, ANY_V6),
    ] {
        dataplane.local(slot, IFINDEX, workload, LOCAL_ID);
        dataplane.remote(slot, peer, PEER_ID);
        dataplane.cidr(slot, any, 0, WORLD_ID);
    }
}

/// The workload's policy in `direction`, for every peer: one table for `protocol` (`None`:
/// every protocol).
pub fn policy_for_every_peer(
    dataplane: &mut Dataplane,
    slot: u8,
    direction: u8,
    table_id: u32,
    protocol: Option<u8>,
    rows: &Rows,
) -> OutcomeIndexes {
    dataplane.group(slot, direction, LOCAL_ID, GROUP_DEFAULT, table_id);
    dataplane.table(slot, table_id, protocol, rows)
}

/// The same outcome for every packet in `direction`.
pub fn uniform_policy(
    dataplane: &mut Dataplane,
    slot: u8,
    direction: u8,
    table_id: u32,
    decides: Decides,
) -> OutcomeIndexes {
    policy_for_every_peer(
        dataplane,
        slot,
        direction,
        table_id,
        None,
        &Rows::uniform(decides),
    )
}

pub fn set_generation(dataplane: &mut Dataplane, generation: u32) {
    dataplane.set_config(Config {
        generation,
        ..Config::default()
    });
}

/// Asserts the TC action of running `frame` in `direction` (forwarded, not from the host).
#[track_caller]
pub fn expect(dataplane: &mut Dataplane, direction: u8, frame: &[u8], pass: bool, what: &str) {
    expect_in(
        dataplane,
        direction,
        frame,
        SkbContext::FORWARDED_ON_LO,
        pass,
        what,
    );
}

#[track_caller]
pub fn expect_in(
    dataplane: &mut Dataplane,
    direction: u8,
    frame: &[u8],
    ctx: SkbContext,
    pass: bool,
    what: &str,
) {
    let action = dataplane.run(direction, frame, ctx);
    let (expected, word) = if pass {
        (TC_ACT_OK, "pass")
    } else {
        (TC_ACT_SHOT, "be dropped")
    };
    let program = if direction == DIR_EGRESS {
        "from-workload"
    } else {
        "to-workload"
    };
    assert_eq!(
        action, expected,
        "{what}: should {word} in the {program} program (TC action {action})"
    );
}
