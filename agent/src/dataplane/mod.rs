//! The eBPF dataplane, user-space side: the embedded object and loading it with its pinned
//! maps (`object`, `load`, `bpffs`), sized at load time (`map_sizes`) and measured
//! (`map_memory`); the compiled image as map entries (`slot_image`) and
//! writing them incrementally and atomically (`writer`), reusing the array space of freed
//! tables (`table_layout`, `array_space`); attaching to workload veths
//! (`attach`) and the netlink subscriptions that say when to (`links`); conntrack budgets
//! and the sweep of expired flows (`conntrack`, over `map_batch`); taking over from an
//! older map ABI (`older_abi`); counters, events and kernel-side debug lines (`counters`,
//! `rule_names`, `events`, `outcome_names` written by `names_writer`, `kernel_clock`, `bpf_log`); the lock that keeps one palisade per dataplane
//! (`host_lock`); what palisade left on a host, of any ABI version, found and removed
//! (`remnants`); counting the entries of the maps the kernel fills (`map_census`); a map as
//! its aya type, taken from the object or opened from its pin (`typed_map`).

pub mod array_space;
pub mod attach;
pub mod bpf_log;
pub mod bpffs;
pub mod conntrack;
pub mod counters;
pub mod events;
pub mod growing_bytes;
pub mod host_lock;
pub mod kernel_clock;
pub mod links;
pub mod load;
pub mod map_batch;
pub mod map_census;
pub mod map_memory;
pub mod map_sizes;
pub mod names_writer;
pub mod object;
pub mod older_abi;
pub mod outcome_names;
pub mod remnants;
pub mod rule_names;
pub mod slot_image;
pub mod table_layout;
pub mod typed_map;
pub mod writer;

pub use attach::{Adopted, AttachMode, Attachments, interface_pin_dir, link_pin_dir};
pub use bpffs::{BPFFS_ROOT, ensure_bpffs_mounted, ensure_pin_dir, lock_dir, pin_dir};
pub use load::{KeptSize, LoadedObject, PROGRAMS, load, load_sized, map_pin_dir, program_pin_dir};
pub use map_sizes::{MapSizeOverride, MapSizes, SizedFor};
pub use object::ebpf_object;

/// Why the dataplane could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("this palisade was built without its eBPF object; build it with `cargo xtask build`")]
    ObjectNotEmbedded,

    #[error(
        "cannot read the kernel's BTF (/sys/kernel/btf/vmlinux): {0}\n\
         hint: palisade needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    KernelBtf(#[source] aya::BtfError),

    #[error("cannot load palisade's eBPF object into the kernel: {0}")]
    LoadObject(#[source] aya::EbpfError),

    #[error("palisade's eBPF object has no program named `{0}`; is the object stale?")]
    MissingProgram(&'static str),

    #[error("palisade's eBPF object has no map named `{0}`; is the object stale?")]
    MissingMap(&'static str),

    #[error("the eBPF program `{name}` is not of the expected type: {source}")]
    ProgramType {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("the kernel rejected the eBPF program `{name}`: {source}")]
    LoadProgram {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("cannot put `{program}` into the program array {map}: {source}")]
    ProgramArray {
        program: &'static str,
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("cannot read {path}: {source}")]
    ReadMounts {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot mount bpffs at {path}: {source}\nhint: palisade must run as root")]
    MountBpffs {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot pin {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read the pin directory {path}: {source}")]
    ReadPinDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot remove the pin {path}: {source}")]
    RemovePin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot attach `{program}` to {interface}: {source}")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error(
        "cannot pin the link on {interface}: the kernel has no TCX (Linux 6.6 or later), and \
         only TCX links can be pinned"
    )]
    TcxUnsupported { interface: String },

    #[error(
        "--attach-mode tcx needs TCX (Linux 6.6 or later), which this kernel does not have\n\
         hint: use --attach-mode clsact, or auto (the default) to pick what the kernel has"
    )]
    TcxMissing,

    #[error("cannot {what}: {source}")]
    Clsact {
        what: String,
        #[source]
        source: attach::tc_netlink::Refused,
    },

    #[error("cannot take over the pinned link {path}: {reason}")]
    AdoptLink {
        path: std::path::PathBuf,
        reason: String,
    },

    #[error(
        "interface {interface} is not (or no longer) the one with index {expected} (found {found:?})"
    )]
    InterfaceChanged {
        interface: String,
        expected: u32,
        found: Option<u32>,
    },

    #[error("cannot subscribe to netlink {what}: {source}")]
    Netlink {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot {what}: {source}")]
    Remnant {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot create the pin directory {path}: {source}")]
    CreatePinDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
