//! Running TC programs on crafted frames with BPF_PROG_TEST_RUN, and timing them.
//!
//! The program sees a `struct __sk_buff` built from [`SkbContext`]: `ifindex` must name an
//! existing interface (1 = lo) for per-interface lookups to work, and `ingress_ifindex` 0
//! means "made by the host itself" to palisade.

use std::time::Duration;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};

/// `TC_ACT_OK`: the packet continues.
pub const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: the packet is dropped.
pub const TC_ACT_SHOT: u32 = 2;

/// Offsets in `struct __sk_buff` (include/uapi/linux/bpf.h), which the kernel copies into
/// the test skb; everything before `ifindex` other than these must be zero.
const SKB_INGRESS_IFINDEX_OFFSET: usize = 36;
const SKB_IFINDEX_OFFSET: usize = 40;
const SKB_CTX_LEN: usize = SKB_IFINDEX_OFFSET + 4;

/// The interface a test packet is seen on, and the one it came in on.
#[derive(Clone, Copy, Debug)]
pub struct SkbContext {
    pub ifindex: u32,
    pub ingress_ifindex: u32,
}

impl SkbContext {
    /// On lo (ifindex 1), forwarded from lo: a packet that did not come from the host.
    pub const FORWARDED_ON_LO: Self = Self {
        ifindex: 1,
        ingress_ifindex: 1,
    };
    /// On lo, made by the host itself.
    pub const FROM_HOST_ON_LO: Self = Self {
        ifindex: 1,
        ingress_ifindex: 0,
    };

    fn bytes(&self) -> [u8; SKB_CTX_LEN] {
        let mut ctx = [0u8; SKB_CTX_LEN];
        ctx[SKB_INGRESS_IFINDEX_OFFSET..SKB_INGRESS_IFINDEX_OFFSET + 4]
            .copy_from_slice(&self.ingress_ifindex.to_ne_bytes());
        ctx[SKB_IFINDEX_OFFSET..SKB_IFINDEX_OFFSET + 4]
            .copy_from_slice(&self.ifindex.to_ne_bytes());
        ctx
    }
}

/// Runs `program` once on `frame`; returns its TC action.
pub fn run(program: &mut SchedClassifier, frame: &[u8], ctx: SkbContext) -> u32 {
    run_repeated(program, frame, ctx, 1).0
}

/// Runs `program` `repeat` times on `frame` (in the kernel, back to back); returns the last
/// TC action and the mean time of one run.
pub fn run_repeated(
    program: &mut SchedClassifier,
    frame: &[u8],
    ctx: SkbContext,
    repeat: u32,
) -> (u32, Duration) {
    let ctx = ctx.bytes();
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|err| {
            panic!(
                "BPF_PROG_TEST_RUN of a {}-byte frame failed: {err} ({:?})",
                frame.len(),
                std::error::Error::source(&err)
            )
        });
    (result.return_value, result.duration)
}

/// The floor every TC program pays: an empty `sched_cls` program (`r0 = TC_ACT_OK; exit`),
/// loaded with bpf(2) directly (aya loads programs from objects only), run like the others.
/// Returns the mean time of one run.
pub fn empty_program_cost(frame: &[u8], ctx: SkbContext, repeat: u32) -> Duration {
    let program = empty_program::load();
    empty_program::run(&program, frame, &ctx.bytes(), repeat)
}

mod empty_program {
    use std::{
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
        time::Duration,
    };

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    /// `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K), then `exit` (BPF_JMP | BPF_EXIT).
    const INSTRUCTIONS: [u64; 2] = [0xb7, 0x95];
    const LICENSE: &[u8] = b"GPL\0";

    /// `union bpf_attr` for BPF_PROG_LOAD, up to the program name.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }

    /// `union bpf_attr` for BPF_PROG_TEST_RUN.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
    }

    fn bpf<T>(command: libc::c_long, attr: &mut T) -> libc::c_long {
        // SAFETY: `attr` is a valid `union bpf_attr` prefix for `command`, and every pointer
        // in it outlives the call.
        unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                attr as *mut T,
                size_of::<T>() as libc::c_uint,
            )
        }
    }

    pub fn load() -> OwnedFd {
        let mut name = [0u8; 16];
        name[..5].copy_from_slice(b"empty");
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: INSTRUCTIONS.len() as u32,
            insns: INSTRUCTIONS.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: name,
            ..ProgLoad::default()
        };
        let fd = bpf(BPF_PROG_LOAD, &mut attr);
        assert!(
            fd >= 0,
            "cannot load the empty program: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new file descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd as i32) }
    }

    pub fn run(program: &OwnedFd, frame: &[u8], ctx: &[u8], repeat: u32) -> Duration {
        let mut attr = TestRun {
            prog_fd: program.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: ctx.len() as u32,
            ctx_in: ctx.as_ptr() as u64,
            ..TestRun::default()
        };
        let result = bpf(BPF_PROG_TEST_RUN, &mut attr);
        assert!(
            result == 0,
            "cannot run the empty program: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(attr.retval, 0, "the empty program returns TC_ACT_OK");
        Duration::from_nanos(u64::from(attr.duration))
    }
}
