//! The map ABI shared by the eBPF programs (`ebpf/`) and the agent: `#[repr(C)]` keys and
//! values, and the constants both sides must agree on. `no_std`, no dependencies, so the
//! kernel side can use it as is.
#![no_std]

/// Bumped whenever a key, value or map definition changes shape. Pins live under
/// `/sys/fs/bpf/palisade/<ABI_VERSION>/`, so an agent with a new ABI starts fresh instead of
/// adopting maps it cannot read.
pub const ABI_VERSION: u32 = 1;
