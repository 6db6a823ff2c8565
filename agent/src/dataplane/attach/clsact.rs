//! clsact attachments (any kernel with cls_bpf; the fallback where TCX is missing): a
//! direct-action `bpf` filter on the clsact qdisc's ingress and egress of the host veth, at
//! priority [`PRIORITY`] and handle [`HANDLE`], named after its program.
//!
//! Filters are not BPF links and cannot be pinned: they stay on the interface until
//! someone deletes them, whatever happens to the agent. A new agent finds them again by
//! place and name, and checks that they are this dataplane's, not another palisade's with
//! its own bpffs (tests run several side by side): a filter is ours when its program uses
//! our pinned maps. It then switches each to its new program with a netlink replace (see
//! [`TcSocket::replace_filter`]): the kernel swaps the program in place, so packets never
//! meet an interface without one.
//!
//! Detaching deletes our two filters and nothing else. The clsact qdisc stays: it may hold
//! other tools' filters, it cannot tell whether we added it, and without filters it costs a
//! packet next to nothing (this is also what Cilium does).

use std::collections::BTreeSet;
use std::os::fd::AsFd;

use super::tc_netlink::{BpfFilter, FilterPlace, Refused, TcSocket};
use super::{HOOKS, Hook, bpf_syscalls, interface_indexes};
use crate::dataplane::{Error, LoadedObject};

/// The priority of our filters: 1, the first to run, so that no other classic filter can
/// decide on a workload's packets before its policy does.
pub const PRIORITY: u16 = 1;
/// The handle of our filters, "pal" in ASCII (`tc` shows `handle 0x70616c`): a handle
/// nothing else is likely to pick, so that a replace at our place only ever meets ours.
pub const HANDLE: u32 = 0x0070_616c;

/// The clsact filters of one dataplane (one pin directory).
pub struct ClsactFilters {
    socket: TcSocket,
    /// The pinned maps our programs use: a program using any of them is ours.
    our_maps: BTreeSet<u32>,
}

impl std::fmt::Debug for ClsactFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClsactFilters")
            .field("our_maps", &self.our_maps)
            .finish_non_exhaustive()
    }
}

fn place(ifindex: u32, hook: &Hook) -> FilterPlace {
    FilterPlace {
        ifindex,
        hook: hook.clsact,
        priority: PRIORITY,
        handle: HANDLE,
    }
}

impl ClsactFilters {
    pub fn open(loaded: &mut LoadedObject) -> Result<ClsactFilters, Error> {
        let mut our_maps = BTreeSet::new();
        for hook in &HOOKS {
            let program = loaded.program(hook.program)?;
            let info = program.info().map_err(|source| Error::ProgramType {
                name: hook.program,
                source,
            })?;
            let ids = bpf_syscalls::program_map_ids(info.id()).map_err(|e| Error::Clsact {
                what: format!("read the maps of `{}`", hook.program),
                source: Refused {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    detail: None,
                },
            })?;
            our_maps.extend(ids);
        }
        ClsactFilters::of_maps(our_maps)
    }

    /// The filters whose programs use any of the maps `our_maps` (by id): an older map
    /// ABI's, found by its pinned maps.
    pub fn of_maps(our_maps: BTreeSet<u32>) -> Result<ClsactFilters, Error> {
        let socket = TcSocket::open().map_err(|source| Error::Clsact {
            what: "open a netlink socket".to_string(),
            source,
        })?;
        Ok(ClsactFilters { socket, our_maps })
    }

    /// Adds the clsact qdisc to `ifindex` if it is missing. Creating a qdisc deactivates
    /// the device for an RCU grace period, and packets sent to it meanwhile are dropped
    /// (the kernel's `qdisc_graft`); done at an interface's first attach in either mode, it
    /// keeps later switches between modes from ever creating one under live traffic.
    pub fn add_qdisc(&self, ifindex: u32) -> Result<(), Error> {
        self.socket
            .add_clsact(ifindex)
            .map_err(|source| Error::Clsact {
                what: format!("add the clsact qdisc to interface {ifindex}"),
                source,
            })
    }

    /// Puts `loaded`'s programs on `ifindex`: adds the clsact qdisc if it is missing, then
    /// creates each filter, or switches it to the new program where it exists. On failure
    /// whatever was there stays (an adopted interface keeps being enforced).
    pub fn replace(&self, loaded: &mut LoadedObject, ifindex: u32) -> Result<(), Error> {
        self.add_qdisc(ifindex)?;
        for hook in &HOOKS {
            let program = loaded.program(hook.program)?;
            let fd = program.fd().map_err(|source| Error::ProgramType {
                name: hook.program,
                source,
            })?;
            self.socket
                .replace_filter(place(ifindex, hook), fd.as_fd(), hook.program)
                .map_err(|source| Error::Clsact {
                    what: format!(
                        "attach `{}` to {} of interface {ifindex}",
                        hook.program, hook.clsact
                    ),
                    source,
                })?;
        }
        Ok(())
    }

    /// Deletes our filters from `ifindex`; returns whether there were any. An interface
    /// that is gone has none.
    pub fn remove(&self, ifindex: u32) -> Result<bool, Error> {
        let mut removed = false;
        for hook in &HOOKS {
            if !self.ours_on(ifindex, hook)? {
                continue;
            }
            match self.socket.delete_filter(place(ifindex, hook)) {
                Ok(()) => removed = true,
                // Gone between the listing and now, with its interface or by other hands.
                Err(refused) if matches!(refused.errno, libc::ENOENT | libc::ENODEV) => {}
                Err(source) => {
                    return Err(Error::Clsact {
                        what: format!(
                            "delete our filter on {} of interface {ifindex}",
                            hook.clsact
                        ),
                        source,
                    });
                }
            }
        }
        Ok(removed)
    }

    /// The interfaces of the namespace that carry at least one of our filters.
    pub fn find(&self) -> Result<Vec<u32>, Error> {
        let mut found = Vec::new();
        for ifindex in interface_indexes() {
            let mut ours = false;
            for hook in &HOOKS {
                ours |= self.ours_on(ifindex, hook)?;
            }
            if ours {
                found.push(ifindex);
            }
        }
        Ok(found)
    }

    /// Whether `hook` of `ifindex` has our filter.
    fn ours_on(&self, ifindex: u32, hook: &Hook) -> Result<bool, Error> {
        let filters = match self.socket.bpf_filters(ifindex, hook.clsact) {
            Ok(filters) => filters,
            // The interface went away: nothing of ours is left on it.
            Err(refused) if refused.errno == libc::ENODEV => return Ok(false),
            Err(source) => {
                return Err(Error::Clsact {
                    what: format!("list the filters on {} of interface {ifindex}", hook.clsact),
                    source,
                });
            }
        };
        Ok(filters.iter().any(|f| self.is_ours(f, hook)))
    }

    fn is_ours(&self, filter: &BpfFilter, hook: &Hook) -> bool {
        if filter.priority != PRIORITY || filter.handle != HANDLE || filter.name != hook.program {
            return false;
        }
        // A filter whose program cannot be read is not claimed.
        filter.program_id.is_some_and(|id| {
            bpf_syscalls::program_map_ids(id)
                .is_ok_and(|maps| maps.iter().any(|m| self.our_maps.contains(m)))
        })
    }
}
