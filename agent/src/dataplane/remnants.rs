//! What palisade leaves on a host, of any ABI version, found and removed: the pin
//! directories `<bpffs>/palisade/<N>/`, and palisade's programs on the TC hooks of every
//! interface of the network namespace (TCX links, TCX programs without a link, clsact
//! filters). Attachments are found through the kernel, as `bpftool net` and `tc filter
//! show` find them, so those whose pins are gone (clsact filters outlive every pin) are
//! found too; each is tied to the pin directory whose maps its program uses.
//!
//! `palisade cleanup` removes everything found; an agent that upgraded from an older ABI
//! removes that version's attachments and pins once its own are on (see
//! [`Remnants::remove`]).

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

use super::Error;
use super::attach::bpf_syscalls;
use super::attach::tc_netlink::{FilterPlace, Hook, TcSocket};
use super::attach::{HOOKS, interface_indexes, interface_name};
use super::bpffs::lock_dir;
use super::load::{PROGRAMS, map_pin_dir};

/// The kernel keeps the first 15 bytes of a program's name.
const KERNEL_NAME_LEN: usize = 15;

/// One `<bpffs>/palisade/<name>/` directory: normally `<name>` is an ABI version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedVersion {
    pub name: String,
    pub dir: PathBuf,
    /// The kernel ids of the maps pinned in it.
    map_ids: BTreeSet<u32>,
}

impl PinnedVersion {
    /// The ABI version, if the directory is named after one.
    pub fn abi(&self) -> Option<u32> {
        self.name.parse().ok()
    }
}

/// How a program sits on a hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooked {
    /// A TCX link (pinned or not).
    TcxLink { link_id: u32 },
    /// A TCX program attached without a link.
    Tcx,
    /// A classic `bpf` filter on the clsact qdisc.
    Filter { priority: u16, handle: u32 },
}

/// A palisade program on one hook of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub interface: String,
    pub hook: Hook,
    pub hooked: Hooked,
    pub program_id: u32,
    /// The pin directory whose maps the program uses (see [`PinnedVersion::name`]); `None`
    /// when no pin directory of this bpffs has them: its pins are gone, or it belongs to a
    /// dataplane on another bpffs.
    pub version: Option<String>,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.hooked {
            Hooked::TcxLink { link_id } => format!("TCX link {link_id}"),
            Hooked::Tcx => "TCX".to_string(),
            Hooked::Filter { priority, handle } => {
                format!("clsact filter pref {priority} handle {handle:#x}")
            }
        };
        let version = match &self.version {
            Some(v) => format!("pins {v}"),
            None => "no pins".to_string(),
        };
        write!(
            f,
            "program {} on {} {} ({how}, {version})",
            self.program_id, self.interface, self.hook
        )
    }
}

/// Everything of palisade's in one bpffs and the current network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remnants {
    /// `<bpffs>/palisade`, if it exists.
    pub lock_dir: Option<PathBuf>,
    pub versions: Vec<PinnedVersion>,
    pub attachments: Vec<Attachment>,
}

/// What [`Remnants::remove`] took away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    pub attachments: Vec<Attachment>,
    pub versions: Vec<PathBuf>,
}

fn failed(what: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Remnant { what, source }
}

/// Finds palisade's pin directories under the bpffs mounted at `bpffs` (none if nothing
/// is mounted there) and its programs on the interfaces of this thread's network
/// namespace.
pub fn find(bpffs: &Path) -> Result<Remnants, Error> {
    let mut remnants = Remnants::default();
    let top = lock_dir(bpffs);
    if top.is_dir() {
        let entries = std::fs::read_dir(&top).map_err(failed(format!("list {}", top.display())))?;
        for entry in entries {
            let entry = entry.map_err(failed(format!("list {}", top.display())))?;
            let dir = entry.path();
            if dir.is_dir() {
                remnants.versions.push(PinnedVersion {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    map_ids: pinned_map_ids(&dir),
                    dir,
                });
            }
        }
        remnants.versions.sort_by(|a, b| a.name.cmp(&b.name));
        remnants.lock_dir = Some(top);
    }
    let socket = TcSocket::open().map_err(|source| Error::Clsact {
        what: "open a netlink socket".to_string(),
        source,
    })?;
    for ifindex in interface_indexes() {
        let Some(interface) = interface_name(ifindex) else {
            continue;
        };
        for hook in HOOKS.iter().map(|h| h.clsact) {
            for (program_id, hooked) in on_hook(&socket, ifindex, hook)? {
                remnants.attachments.push(Attachment {
                    ifindex,
                    interface: interface.clone(),
                    hook,
                    hooked,
                    program_id,
                    version: remnants.version_of(program_id),
                });
            }
        }
    }
    Ok(remnants)
}

/// The ids of the maps pinned in `<dir>/maps/`; a pin that cannot be opened is skipped.
fn pinned_map_ids(dir: &Path) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(map_pin_dir(dir)) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| bpf_syscalls::pinned_object_id(&e.path()).ok())
        .collect()
}

/// Whether the kernel's name of a program is one of palisade's TC programs.
fn is_palisade_program(kernel_name: &str) -> bool {
    PROGRAMS
        .iter()
        .any(|p| &p[..p.len().min(KERNEL_NAME_LEN)] == kernel_name)
}

/// palisade's programs on one hook of `ifindex`, in either mode.
fn on_hook(socket: &TcSocket, ifindex: u32, hook: Hook) -> Result<Vec<(u32, Hooked)>, Error> {
    let mut found = Vec::new();
    let egress = hook == Hook::Egress;
    let tcx = match bpf_syscalls::tcx_attachments(ifindex, egress) {
        Ok(tcx) => tcx,
        // Gone meanwhile.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(found),
        Err(e) => {
            return Err(failed(format!("query TCX on interface {ifindex} {hook}"))(
                e,
            ));
        }
    };
    for (program_id, link_id) in tcx {
        if bpf_syscalls::program_name(program_id).is_ok_and(|n| is_palisade_program(&n)) {
            let hooked = match link_id {
                0 => Hooked::Tcx,
                link_id => Hooked::TcxLink { link_id },
            };
            found.push((program_id, hooked));
        }
    }
    let filters = match socket.bpf_filters(ifindex, hook) {
        Ok(filters) => filters,
        Err(refused) if refused.errno == libc::ENODEV => return Ok(found),
        Err(source) => {
            return Err(Error::Clsact {
                what: format!("list the filters on {hook} of interface {ifindex}"),
                source,
            });
        }
    };
    for filter in filters {
        let Some(program_id) = filter.program_id else {
            continue;
        };
        // By the name palisade gives its filters, or by the program's own.
        let ours = PROGRAMS.contains(&filter.name.as_str())
            || bpf_syscalls::program_name(program_id).is_ok_and(|n| is_palisade_program(&n));
        if ours {
            let hooked = Hooked::Filter {
                priority: filter.priority,
                handle: filter.handle,
            };
            found.push((program_id, hooked));
        }
    }
    Ok(found)
}

impl Remnants {
    /// The pin directory whose maps the program `program_id` uses.
    fn version_of(&self, program_id: u32) -> Option<String> {
        let maps = bpf_syscalls::program_map_ids(program_id).ok()?;
        self.versions
            .iter()
            .find(|v| maps.iter().any(|m| v.map_ids.contains(m)))
            .map(|v| v.name.clone())
    }

    /// Removes the attachments and pin directories that `select` picks by their version
    /// (`None`: attachments tied to no pin directory of this bpffs). Attachments go first,
    /// so no program is left running on maps whose pins are gone; each pinned TCX link is
    /// detached before its pin is removed, so that it is off its hook when this returns.
    pub fn remove(&self, select: impl Fn(Option<&str>) -> bool) -> Result<Removed, Error> {
        let mut removed = Removed::default();
        let socket = TcSocket::open().map_err(|source| Error::Clsact {
            what: "open a netlink socket".to_string(),
            source,
        })?;
        for attachment in &self.attachments {
            if !select(attachment.version.as_deref()) {
                continue;
            }
            detach(&socket, attachment)?;
            removed.attachments.push(attachment.clone());
        }
        for version in &self.versions {
            if select(Some(&version.name)) {
                remove_pins(&version.dir)?;
                removed.versions.push(version.dir.clone());
            }
        }
        Ok(removed)
    }
}

fn detach(socket: &TcSocket, attachment: &Attachment) -> Result<(), Error> {
    let what = || format!("detach {attachment}");
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    match attachment.hooked {
        Hooked::TcxLink { link_id } => match bpf_syscalls::detach_link(link_id) {
            Err(e) if !gone(&e) => Err(failed(what())(e)),
            _ => Ok(()),
        },
        Hooked::Tcx => {
            let egress = attachment.hook == Hook::Egress;
            match bpf_syscalls::detach_tcx_program(
                attachment.ifindex,
                egress,
                attachment.program_id,
            ) {
                Err(e) if !gone(&e) && e.raw_os_error() != Some(libc::ENODEV) => {
                    Err(failed(what())(e))
                }
                _ => Ok(()),
            }
        }
        Hooked::Filter { priority, handle } => {
            let place = FilterPlace {
                ifindex: attachment.ifindex,
                hook: attachment.hook,
                priority,
                handle,
            };
            match socket.delete_filter(place) {
                Err(refused) if !matches!(refused.errno, libc::ENOENT | libc::ENODEV) => {
                    Err(Error::Clsact {
                        what: what(),
                        source: refused,
                    })
                }
                _ => Ok(()),
            }
        }
    }
}

/// Removes a pin directory and everything in it; pinned links are detached first.
fn remove_pins(dir: &Path) -> Result<(), Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(failed(format!("list {}", dir.display()))(e)),
    };
    for entry in entries {
        let path = entry
            .map_err(failed(format!("list {}", dir.display())))?
            .path();
        if path.is_dir() {
            remove_pins(&path)?;
            continue;
        }
        // Links sit under `links/`; anything else (a map, a program) refuses the detach.
        if path.components().any(|c| c.as_os_str() == "links") {
            match bpf_syscalls::detach_pinned(&path) {
                Err(e)
                    if e.raw_os_error() != Some(libc::EINVAL)
                        && e.kind() != io::ErrorKind::NotFound =>
                {
                    return Err(failed(format!(
                        "detach the link pinned at {}",
                        path.display()
                    ))(e));
                }
                _ => {}
            }
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(failed(format!("remove the pin {}", path.display()))(e));
            }
            _ => {}
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(failed(format!("remove {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_its_programs_by_their_kernel_names() {
        assert!(is_palisade_program("palisade_from_w"));
        assert!(is_palisade_program("palisade_to_wl"));
        assert!(!is_palisade_program("palisade_empty"));
        assert!(!is_palisade_program("cil_from_contai"));
    }
}
