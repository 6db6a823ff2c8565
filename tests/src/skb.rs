//! The `struct __sk_buff` context BPF_PROG_TEST_RUN takes for TC programs. The kernel only
//! accepts a few fields set; these are the two the programs read.

/// `sizeof(struct __sk_buff)` on 64-bit kernels (uapi/linux/bpf.h).
pub const SK_BUFF_SIZE: usize = 192;
const INGRESS_IFINDEX: usize = 36;
const IFINDEX: usize = 40;

/// A context for a packet on interface `ifindex` (which must exist in the calling thread's
/// network namespace) that entered the host on `ingress_ifindex` (0: made by the host).
pub fn sk_buff(ifindex: u32, ingress_ifindex: u32) -> [u8; SK_BUFF_SIZE] {
    let mut ctx = [0u8; SK_BUFF_SIZE];
    ctx[INGRESS_IFINDEX..INGRESS_IFINDEX + 4].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[IFINDEX..IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}
