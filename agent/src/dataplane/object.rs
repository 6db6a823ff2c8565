//! The eBPF object embedded in the `palisade` binary.
//!
//! `build.rs` copies the object built by `cargo xtask build-ebpf` into `$OUT_DIR`, or writes
//! an empty file when the agent is built by plain `cargo build`; the empty case is reported
//! here, at run time, rather than failing every stable build.

use super::Error;

/// The object's bytes, 8-byte aligned as the ELF parser requires.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade-ebpf.o"));

/// The embedded eBPF object, or [`Error::ObjectNotEmbedded`] when this binary was built
/// without one.
pub fn ebpf_object() -> Result<&'static [u8], Error> {
    if EBPF_OBJECT.is_empty() {
        Err(Error::ObjectNotEmbedded)
    } else {
        Ok(EBPF_OBJECT)
    }
}
