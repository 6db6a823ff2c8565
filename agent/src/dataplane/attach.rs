//! Attaching the TC programs to host-side veths, pinned so that enforcement outlives the
//! agent.
//!
//! Each local workload's host veth gets FROM_WORKLOAD on its ingress (packets the workload
//! sends) and TO_WORKLOAD on its egress (packets it receives), as TCX links. Each link is
//! pinned as `<pin dir>/links/<ifindex>/{from_wl,to_wl}`: a pinned link stays attached
//! when the agent exits, also by SIGKILL, and a new agent [`Attachments::adopt`]s it by
//! switching the link to its freshly loaded program in one `bpf_link_update`, so a packet
//! always meets one program or the other, never none. The interface index names the
//! directory because a deleted and re-created interface is a different interface: its old
//! pins are stale, whatever it is called.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

use aya::programs::TcAttachType;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use palisade_common::program_names;

use super::{Error, LoadedObject};

/// One program's place on an interface and the name of its pin.
struct Hook {
    program: &'static str,
    attach_type: TcAttachType,
    pin: &'static str,
}

const HOOKS: [Hook; 2] = [
    Hook {
        program: program_names::FROM_WORKLOAD,
        attach_type: TcAttachType::Ingress,
        pin: "from_wl",
    },
    Hook {
        program: program_names::TO_WORKLOAD,
        attach_type: TcAttachType::Egress,
        pin: "to_wl",
    },
];

/// Where the links of the pin directory `dir` are pinned: `<dir>/links`.
pub fn link_pin_dir(dir: &Path) -> PathBuf {
    dir.join("links")
}

/// Where the links of the interface `ifindex` are pinned: `<dir>/links/<ifindex>`.
pub fn interface_pin_dir(dir: &Path, ifindex: u32) -> PathBuf {
    link_pin_dir(dir).join(ifindex.to_string())
}

/// The interfaces the programs are attached to, as recorded by the pins.
#[derive(Debug)]
pub struct Attachments {
    links_dir: PathBuf,
    attached: BTreeSet<u32>,
}

/// What [`Attachments::adopt`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Interfaces whose links now run the newly loaded programs.
    pub kept: Vec<u32>,
    /// Interfaces that no longer exist; their pins were removed.
    pub removed: Vec<u32>,
}

impl Attachments {
    /// Takes over the links pinned under `pin_dir` by an earlier agent: each link of an
    /// interface that still exists is switched atomically to `loaded`'s program (a hook
    /// whose pin is missing, left by a crash half way through an attach, is attached
    /// afresh); the pins of vanished interfaces are removed.
    pub fn adopt(loaded: &mut LoadedObject, pin_dir: &Path) -> Result<(Self, Adopted), Error> {
        let links_dir = link_pin_dir(pin_dir);
        std::fs::create_dir_all(&links_dir).map_err(|source| Error::CreatePinDir {
            path: links_dir.clone(),
            source,
        })?;
        let mut attachments = Self {
            links_dir,
            attached: BTreeSet::new(),
        };
        let mut adopted = Adopted::default();
        for (ifindex, dir) in attachments.pinned_interfaces()? {
            let Some(ifindex) = ifindex else {
                // Not ours to interpret: nothing palisade writes has such a name.
                remove_pins(&dir)?;
                continue;
            };
            match interface_name(ifindex) {
                Some(ifname) => {
                    attachments.take_over(loaded, &ifname, ifindex)?;
                    adopted.kept.push(ifindex);
                }
                None => {
                    remove_pins(&dir)?;
                    adopted.removed.push(ifindex);
                }
            }
        }
        Ok((attachments, adopted))
    }

    /// Attaches both programs to the interface `ifname`, which must have the index
    /// `ifindex`, and pins the links. Attaching to an interface that has them already does
    /// nothing. All or nothing: on failure, no link of this interface is left.
    pub fn attach(
        &mut self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        if self.attached.contains(&ifindex) {
            return Ok(());
        }
        ensure_same_interface(ifname, ifindex)?;
        let dir = self.links_dir.join(ifindex.to_string());
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
        match attached {
            Ok(()) => {
                self.attached.insert(ifindex);
                Ok(())
            }
            Err(err) => {
                let _ = remove_pins(&dir);
                Err(err)
            }
        }
    }

    /// Detaches both programs from the interface `ifindex` and removes its pins. Returns
    /// whether it had any.
    ///
    /// Removing a pin alone would leave the kernel to release the link later, from a work
    /// queue (or never, while any process holds a descriptor of it), so each link is
    /// detached explicitly first: when this returns, the programs are off the interface.
    pub fn detach(&mut self, ifindex: u32) -> Result<bool, Error> {
        let dir = self.links_dir.join(ifindex.to_string());
        let had_pins = dir.exists();
        for hook in &HOOKS {
            let path = dir.join(hook.pin);
            match link_syscalls::detach_pinned(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::RemovePin { path, source }),
            }
        }
        remove_pins(&dir)?;
        Ok(self.attached.remove(&ifindex) || had_pins)
    }

    /// The interfaces the programs are attached to.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.iter().copied()
    }

    /// Switches the pinned links of `ifindex` to `loaded`'s programs.
    fn take_over(
        &mut self,
        loaded: &mut LoadedObject,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), Error> {
        let dir = self.links_dir.join(ifindex.to_string());
        for hook in &HOOKS {
            let path = dir.join(hook.pin);
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
        self.attached.insert(ifindex);
        Ok(())
    }

    /// Every directory under `links/`, with the interface index its name gives.
    fn pinned_interfaces(&self) -> Result<Vec<(Option<u32>, PathBuf)>, Error> {
        let entries = std::fs::read_dir(&self.links_dir).map_err(|source| Error::ReadPinDir {
            path: self.links_dir.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::ReadPinDir {
                path: self.links_dir.clone(),
                source,
            })?;
            let ifindex = entry.file_name().to_str().and_then(|s| s.parse().ok());
            found.push((ifindex, entry.path()));
        }
        found.sort();
        Ok(found)
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
    let id = program
        .attach(ifname, hook.attach_type)
        .map_err(attach_error)?;
    let link = program.take_link(id).map_err(attach_error)?;
    // Only TCX links (kernel 6.6 and later) are file descriptors that can be pinned.
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

/// The two bpf(2) commands aya 0.14 does not expose: opening a pinned link and detaching a
/// link from its hook.
mod link_syscalls {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;

    /// `union bpf_attr` for BPF_OBJ_GET (the other fields stay zero).
    #[repr(C)]
    #[derive(Default)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit, so that it is zero: the kernel refuses non-zero bytes past `path_fd`.
        padding: u32,
    }

    /// `union bpf_attr` for BPF_LINK_DETACH.
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }

    fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a live, initialised `union bpf_attr` prefix for `command`, and its
        // size is passed along, so the kernel reads no further.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                command,
                attr as *mut T,
                std::mem::size_of::<T>(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// Detaches the link pinned at `path` from its hook (the pin stays).
    pub fn detach_pinned(path: &Path) -> io::Result<()> {
        let pathname = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
        let mut get = ObjGetAttr {
            pathname: pathname.as_ptr() as u64,
            ..ObjGetAttr::default()
        };
        let fd = bpf(BPF_OBJ_GET, &mut get)?;
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
        // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
        let link = unsafe { OwnedFd::from_raw_fd(fd) };
        let link_fd =
            u32::try_from(link.as_raw_fd()).map_err(|_| io::Error::other("bad descriptor"))?;
        match bpf(BPF_LINK_DETACH, &mut LinkDetachAttr { link_fd }) {
            Ok(_) => Ok(()),
            // Detached already: its interface is gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
