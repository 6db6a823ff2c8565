//! Attaching the TC programs to host-side veths so that enforcement outlives the agent.
//!
//! Each local workload's host veth gets FROM_WORKLOAD on its ingress (packets the workload
//! sends) and TO_WORKLOAD on its egress (packets it receives), in one of two ways
//! ([`AttachMode`]): pinned TCX links ([`tcx`], Linux 6.6 and later, the default there) or
//! direct-action filters on the clsact qdisc ([`clsact`], the fallback). Either way a new
//! agent takes over what an earlier one left by swapping the program in place, never by
//! detaching and attaching again.
//!
//! A run in one mode converges from the other: at adoption, every interface the other mode
//! holds gets this mode's attachment first and loses the other's after. While both are
//! there, the kernel runs the TCX program first, and ours always answers with a final
//! verdict (pass or drop, never "next"), so the clsact filter behind it does not run: each
//! packet is judged and counted once, and at no moment is an interface without a program.
//!
//! The clsact qdisc goes onto an interface at its first attach in either mode, never at a
//! switch: creating a qdisc deactivates the device for an RCU grace period, and packets
//! sent to it meanwhile are dropped (measured on this machine type: 12 to 100 datagrams of
//! a stream of ~40,000/s for one `tc qdisc add ... clsact`, at load 4.5). TCX mode does not
//! use the qdisc; it is there so that a switch to clsact mode only adds filters. An
//! interface first attached by an agent older than this rule gets the qdisc at such a
//! switch, with that loss.

pub(crate) mod bpf_syscalls;
pub mod clsact;
pub mod tc_netlink;
pub mod tcx;

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;

use aya::programs::TcAttachType;
use aya::util::KernelVersion;
use palisade_common::program_names;

use self::clsact::ClsactFilters;
use self::tcx::TcxLinks;
pub use self::tcx::{interface_pin_dir, link_pin_dir};
use super::{Error, LoadedObject};
use crate::log;

/// How the programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Pinned TCX links.
    Tcx,
    /// Filters on the clsact qdisc, over netlink.
    Clsact,
}

/// The first kernel with TCX (aya 0.14 draws the same line).
const TCX_SINCE: KernelVersion = KernelVersion::new(6, 6, 0);

impl AttachMode {
    /// TCX where the kernel has it, clsact elsewhere.
    pub fn detect() -> AttachMode {
        if kernel_has_tcx() {
            AttachMode::Tcx
        } else {
            AttachMode::Clsact
        }
    }
}

fn kernel_has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= TCX_SINCE)
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Clsact => "clsact",
        })
    }
}

/// One program's place on an interface, in both modes, and the name of its TCX pin.
pub(crate) struct Hook {
    pub program: &'static str,
    tcx: TcAttachType,
    pub clsact: tc_netlink::Hook,
    pin: &'static str,
}

pub(crate) const HOOKS: [Hook; 2] = [
    Hook {
        program: program_names::FROM_WORKLOAD,
        tcx: TcAttachType::Ingress,
        clsact: tc_netlink::Hook::Ingress,
        pin: "from_wl",
    },
    Hook {
        program: program_names::TO_WORKLOAD,
        tcx: TcAttachType::Egress,
        clsact: tc_netlink::Hook::Egress,
        pin: "to_wl",
    },
];

/// The interfaces the programs are attached to, and how.
#[derive(Debug)]
pub struct Attachments {
    mode: AttachMode,
    tcx: TcxLinks,
    clsact: ClsactFilters,
    attached: BTreeSet<u32>,
}

/// What [`Attachments::adopt`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Interfaces whose attachments (of this run's mode) now run the new programs.
    pub kept: Vec<u32>,
    /// Interfaces attached in the other mode, now attached in this one only.
    pub converted: Vec<u32>,
    /// Interfaces that no longer exist; their pins were removed.
    pub removed: Vec<u32>,
}

impl Attachments {
    /// Takes over what earlier agents on `pin_dir` attached, in either mode, and makes it
    /// `mode`'s: every interface that still exists ends up with `mode`'s attachments
    /// running `loaded`'s programs and none of the other mode's (see the module's doc for
    /// the order). The pins of vanished interfaces are removed.
    pub fn adopt(
        loaded: &mut LoadedObject,
        pin_dir: &Path,
        mode: AttachMode,
    ) -> Result<(Self, Adopted), Error> {
        if mode == AttachMode::Tcx && !kernel_has_tcx() {
            return Err(Error::TcxMissing);
        }
        let mut attachments = Self {
            mode,
            tcx: TcxLinks::open(pin_dir)?,
            clsact: ClsactFilters::open(loaded)?,
            attached: BTreeSet::new(),
        };
        let mut adopted = Adopted::default();
        for (ifindex, dir) in attachments.tcx.pinned()? {
            let Some(ifindex) = ifindex else {
                // Not ours to interpret: nothing palisade writes has such a name.
                attachments.tcx.forget(&dir)?;
                continue;
            };
            let Some(ifname) = interface_name(ifindex) else {
                attachments.tcx.forget(&dir)?;
                adopted.removed.push(ifindex);
                continue;
            };
            match mode {
                AttachMode::Tcx => {
                    attachments.tcx.take_over(loaded, &ifname, ifindex)?;
                    adopted.kept.push(ifindex);
                }
                AttachMode::Clsact => {
                    attachments.clsact.replace(loaded, ifindex)?;
                    attachments.tcx.detach(ifindex)?;
                    adopted.converted.push(ifindex);
                }
            }
            attachments.attached.insert(ifindex);
        }
        for ifindex in attachments.clsact.find()? {
            match mode {
                AttachMode::Clsact => {
                    // Replaced already if it also had TCX pins (a switch cut short).
                    if attachments.attached.insert(ifindex) {
                        attachments.clsact.replace(loaded, ifindex)?;
                        adopted.kept.push(ifindex);
                    }
                }
                AttachMode::Tcx => {
                    if !attachments.attached.contains(&ifindex) {
                        let Some(ifname) = interface_name(ifindex) else {
                            continue;
                        };
                        attachments.tcx.attach(loaded, &ifname, ifindex)?;
                        attachments.attached.insert(ifindex);
                        adopted.converted.push(ifindex);
                    }
                    attachments.clsact.remove(ifindex)?;
                }
            }
        }
        adopted.kept.sort();
        adopted.converted.sort();
        Ok((attachments, adopted))
    }

    /// The mode this run attaches in.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Attaches both programs to the interface `ifname`, which must have the index
    /// `ifindex`. Attaching to an interface that has them already does nothing. All or
    /// nothing: on failure, nothing of ours is left on the interface.
    pub fn attach(
        &mut self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        if self.attached.contains(&ifindex) {
            return Ok(());
        }
        match self.mode {
            AttachMode::Tcx => {
                // Unused in this mode, but there for a later agent in clsact mode: see
                // the module's doc.
                if let Err(e) = self.clsact.add_qdisc(ifindex) {
                    log::warn(
                        "cannot add the clsact qdisc; a later switch to clsact mode may \
                         drop packets in flight on this interface",
                        &[("interface", &ifname), ("error", &e)],
                    );
                }
                self.tcx.attach(loaded, ifname, ifindex)?
            }
            AttachMode::Clsact => {
                // The filters go by index, so a rename cannot misdirect them; but the
                // caller's name must still be this index's, as with TCX.
                ensure_same_interface(ifname, ifindex)?;
                if let Err(err) = self.clsact.replace(loaded, ifindex) {
                    let _ = self.clsact.remove(ifindex);
                    return Err(err);
                }
            }
        }
        self.attached.insert(ifindex);
        Ok(())
    }

    /// Attaches both programs to `ifname` (index `ifindex`) in the place of links pinned
    /// under this run's pin directory by an agent of an older map ABI (moved there by
    /// [`super::older_abi`]): TCX mode only, each link switched to the new program with one
    /// `bpf_link_update`, so that the interface is never without a program.
    pub fn take_over_moved(
        &mut self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        ensure_same_interface(ifname, ifindex)?;
        self.tcx.take_over(loaded, ifname, ifindex)?;
        self.attached.insert(ifindex);
        Ok(())
    }

    /// Takes both programs off the interface `ifindex`. Returns whether it had any.
    pub fn detach(&mut self, ifindex: u32) -> Result<bool, Error> {
        let had = match self.mode {
            AttachMode::Tcx => self.tcx.detach(ifindex)?,
            AttachMode::Clsact => self.clsact.remove(ifindex)?,
        };
        Ok(self.attached.remove(&ifindex) || had)
    }

    /// The interfaces the programs are attached to.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.iter().copied()
    }
}

fn ensure_same_interface(ifname: &str, ifindex: u32) -> Result<(), Error> {
    let found = interface_index(ifname);
    if found == Some(ifindex) {
        Ok(())
    } else {
        Err(Error::InterfaceChanged {
            interface: ifname.to_string(),
            expected: ifindex,
            found,
        })
    }
}

/// The indexes of every interface of the agent's namespace.
pub(crate) fn interface_indexes() -> Vec<u32> {
    // SAFETY: no arguments; the result is freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut at = list;
    // SAFETY: the list ends with an entry of index 0.
    unsafe {
        while (*at).if_index != 0 {
            found.push((*at).if_index);
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    found
}

/// The name of the interface `ifindex` in the agent's namespace, if it exists.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buffer = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has the IF_NAMESIZE bytes if_indextoname may write.
    let name = unsafe { libc::if_indextoname(ifindex, buffer.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { CStr::from_ptr(buffer.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The index of the interface `ifname` in the agent's namespace, if it exists.
pub fn interface_index(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}
