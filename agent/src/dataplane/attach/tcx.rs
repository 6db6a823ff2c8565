//! TCX attachments (Linux 6.6 and later): each hook is a BPF link, pinned as
//! `<pin dir>/links/<ifindex>/{from_wl,to_wl}`. A pinned link stays attached when the agent
//! exits, also by SIGKILL, and a new agent switches it to its freshly loaded program with
//! one `bpf_link_update`, so a packet always meets one program or the other, never none.
//! The interface index names the directory because a deleted and re-created interface is a
//! different interface: its old pins are stale, whatever it is called.

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};

use super::{HOOKS, Hook, bpf_syscalls, ensure_same_interface};
use crate::dataplane::{Error, LoadedObject};
use crate::log;

/// Where the links of the pin directory `dir` are pinned: `<dir>/links`.
pub fn link_pin_dir(dir: &Path) -> PathBuf {
    dir.join("links")
}

/// Where the links of the interface `ifindex` are pinned: `<dir>/links/<ifindex>`.
pub fn interface_pin_dir(dir: &Path, ifindex: u32) -> PathBuf {
    link_pin_dir(dir).join(ifindex.to_string())
}

/// The pinned TCX links under one pin directory.
#[derive(Debug)]
pub struct TcxLinks {
    links_dir: PathBuf,
}

impl TcxLinks {
    pub fn open(pin_dir: &Path) -> Result<TcxLinks, Error> {
        let links_dir = link_pin_dir(pin_dir);
        std::fs::create_dir_all(&links_dir).map_err(|source| Error::CreatePinDir {
            path: links_dir.clone(),
            source,
        })?;
        Ok(TcxLinks { links_dir })
    }

    fn dir(&self, ifindex: u32) -> PathBuf {
        self.links_dir.join(ifindex.to_string())
    }

    /// Attaches both programs to `ifname`, which must have the index `ifindex`, and pins
    /// the links. All or nothing: on failure, no link of this interface is left.
    pub fn attach(
        &self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        ensure_same_interface(ifname, ifindex)?;
        let dir = self.dir(ifindex);
        std::fs::create_dir_all(&dir).map_err(|source| Error::CreatePinDir {
            path: dir.clone(),
            source,
        })?;
        let attached = HOOKS
            .iter()
            .try_for_each(|hook| attach_and_pin(loaded, hook, ifname, &dir.join(hook.pin)))
            // The name is looked up again by the kernel call: make sure it still meant the
            // interface the caller was told about.
            .and_then(|()| ensure_same_interface(ifname, ifindex));
        if attached.is_err() {
            let _ = self.detach(ifindex);
        }
        attached
    }

    /// Switches the pinned links of `ifindex` to `loaded`'s programs. A hook whose pin is
    /// missing (left by a crash half way through an attach) is attached afresh; so is one
    /// whose pinned link is defunct (detached by someone else, e.g. `bpftool link detach`:
    /// no update can bring it back), after its pin is removed and a warning names the
    /// interface.
    pub fn take_over(
        &self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        let dir = self.dir(ifindex);
        for hook in &HOOKS {
            let path = dir.join(hook.pin);
            if path.exists() && is_defunct(&path)? {
                log::warn(
                    "a pinned TCX link was detached from its interface; attaching afresh",
                    &[
                        ("interface", &ifname),
                        ("ifindex", &ifindex),
                        ("hook", &hook.pin),
                        ("pin", &path.display()),
                    ],
                );
                std::fs::remove_file(&path).map_err(|source| Error::RemovePin {
                    path: path.clone(),
                    source,
                })?;
            }
            let pinned = match PinnedLink::from_pin(&path) {
                Ok(pinned) => pinned,
                Err(_) if !path.exists() => {
                    attach_and_pin(loaded, hook, ifname, &path)?;
                    continue;
                }
                Err(e) => return Err(adopt_error(&path, e)),
            };
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| adopt_error(&path, e))?;
            let program = loaded.program(hook.program)?;
            let id = program
                .attach_to_link(link)
                .map_err(|e| adopt_error(&path, e))?;
            // The pin keeps the link; the program must not hold it too, or removing the
            // pin would no longer detach it.
            drop(program.take_link(id).map_err(|e| adopt_error(&path, e))?);
        }
        Ok(())
    }

    /// Detaches both programs from the interface `ifindex` and removes its pins. Returns
    /// whether it had any.
    ///
    /// Removing a pin alone would leave the kernel to release the link later, from a work
    /// queue (or never, while any process holds a descriptor of it), so each link is
    /// detached explicitly first: when this returns, the programs are off the interface.
    pub fn detach(&self, ifindex: u32) -> Result<bool, Error> {
        let dir = self.dir(ifindex);
        let had_pins = dir.exists();
        for hook in &HOOKS {
            let path = dir.join(hook.pin);
            match bpf_syscalls::detach_pinned(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::RemovePin { path, source }),
            }
        }
        remove_pins(&dir)?;
        Ok(had_pins)
    }

    /// Every interface with pins: its index, or `None` with the directory for a name that
    /// is not one (nothing palisade writes).
    pub fn pinned(&self) -> Result<Vec<(Option<u32>, PathBuf)>, Error> {
        let read_error = |source| Error::ReadPinDir {
            path: self.links_dir.clone(),
            source,
        };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.links_dir).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let ifindex = entry.file_name().to_str().and_then(|s| s.parse().ok());
            found.push((ifindex, entry.path()));
        }
        found.sort();
        Ok(found)
    }

    /// Removes the pins of a directory [`TcxLinks::pinned`] listed.
    pub fn forget(&self, dir: &Path) -> Result<(), Error> {
        remove_pins(dir)
    }
}

fn attach_and_pin(
    loaded: &mut LoadedObject,
    hook: &Hook,
    ifname: &str,
    path: &Path,
) -> Result<(), Error> {
    let attach_error = |source: aya::programs::ProgramError| Error::Attach {
        program: hook.program,
        interface: ifname.to_string(),
        source,
    };
    let program = loaded.program(hook.program)?;
    // Explicitly TCX: `attach` would quietly use netlink on kernels without it.
    let id = program
        .attach_with_options(
            ifname,
            hook.tcx,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(attach_error)?;
    let link = program.take_link(id).map_err(attach_error)?;
    let link = FdLink::try_from(link).map_err(|_| Error::TcxUnsupported {
        interface: ifname.to_string(),
    })?;
    // Dropping the pinned link closes our descriptor; the pin holds the link.
    link.pin(path).map_err(|e| Error::Pin {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    Ok(())
}

/// Whether the TCX link pinned at `path` is attached to no interface any more.
fn is_defunct(path: &Path) -> Result<bool, Error> {
    bpf_syscalls::tcx_link_ifindex(path)
        .map(|ifindex| ifindex == 0)
        .map_err(|e| adopt_error(path, e))
}

fn adopt_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::AdoptLink {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

/// Removes the pins of one interface and their directory; already gone is fine.
fn remove_pins(dir: &Path) -> Result<(), Error> {
    let remove = |path: &Path, result: io::Result<()>| match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::RemovePin {
            path: path.to_owned(),
            source,
        }),
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            remove(&path, std::fs::remove_file(&path))?;
        }
    }
    remove(dir, std::fs::remove_dir(dir))
}
