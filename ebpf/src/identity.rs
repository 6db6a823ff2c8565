//! Who is on either end of a packet: the local workload's label-set ID (by host veth and its
//! own address) and the peer's remote ID (exact endpoint address, else longest CIDR class).

use aya_ebpf::btf_maps::lpm_trie::Key;
use palisade_common::{Addr, FAMILY_V4, LPM_HEADER_BITS, LocalKey, LpmData, RemoteKey};

use crate::maps::{PAL_LOCAL, PAL_LPM, PAL_REMOTE};

/// The local ID of the workload behind `ifindex` that owns `addr`; `None` when `addr` is not
/// one of its addresses (a spoofed source, or a destination that is not the workload).
#[inline(always)]
pub fn local_id(slot: u8, family: u8, ifindex: u32, addr: &Addr) -> Option<u32> {
    let key = LocalKey {
        slot,
        family,
        _pad: [0; 2],
        ifindex,
        addr: *addr,
    };
    PAL_LOCAL.get_ptr(key).map(|value| {
        // SAFETY: a value pointer from a successful lookup; read at once, by copy.
        unsafe { (*value).local_id }
    })
}

/// The remote ID of the peer `addr`: an endpoint's exact entry, else the longest prefix
/// (the agent keeps a /0 "world" entry per family). `None` only when even that is missing.
#[inline(always)]
pub fn remote_id(slot: u8, family: u8, addr: &Addr) -> Option<u32> {
    let exact = RemoteKey {
        slot,
        family,
        _pad: [0; 2],
        addr: *addr,
    };
    if let Some(value) = PAL_REMOTE.get_ptr(exact) {
        // SAFETY: as in `local_id`.
        return Some(unsafe { (*value).remote_id });
    }
    let address_bits = if family == FAMILY_V4 { 32 } else { 128 };
    let key = Key::new(
        LPM_HEADER_BITS + address_bits,
        LpmData {
            slot,
            family,
            addr: *addr,
            _pad: [0; 2],
        },
    );
    PAL_LPM.get(&key).map(|value| value.remote_id)
}
