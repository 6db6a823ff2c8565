//! The bpf(2) commands aya 0.14 does not expose: opening a pinned link, detaching it from
//! its hook and asking which interface it is attached to (TCX; none: defunct), and the map
//! ids of a program known only by its id (clsact: whose filter is whose); for finding and
//! removing what any palisade left (`remnants`): the TCX programs and links on an
//! interface, a program's name, a pinned object's id, and detaching a link or a TCX
//! program by id.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_attach_type`: TCX's two hooks.
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

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

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
#[derive(Default)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info` up to `name`: the kernel fills what fits in `info_len`.
#[repr(C)]
#[derive(Default)]
struct ProgInfoPrefix {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// The first fields of `struct bpf_prog_info`, `bpf_map_info` and `bpf_link_info` alike.
#[repr(C)]
#[derive(Default)]
struct ObjInfoPrefix {
    object_type: u32,
    id: u32,
}

/// `struct bpf_link_info` up to its `tcx` member (the union is 8-byte aligned).
#[repr(C)]
#[derive(Default)]
struct TcxLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    padding: u32,
    ifindex: u32,
    attach_type: u32,
}

/// `enum bpf_link_type`: a TCX link.
const BPF_LINK_TYPE_TCX: u32 = 11;

/// `union bpf_attr` for BPF_PROG_QUERY (Linux 6.6 and later: with link ids).
#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    count: u32,
    padding: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `union bpf_attr` for BPF_PROG_DETACH of a TCX program (no link).
#[repr(C)]
#[derive(Default)]
struct ProgDetachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    relative_fd: u32,
    padding: u32,
    expected_revision: u64,
}

/// `union bpf_attr` for BPF_LINK_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct LinkGetFdAttr {
    link_id: u32,
    next_id: u32,
    open_flags: u32,
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

/// Takes ownership of a descriptor a bpf(2) command returned.
fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bad descriptor"))?;
    // SAFETY: the command returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: &OwnedFd) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("bad descriptor"))
}

/// Detaches the link pinned at `path` from its hook (the pin stays).
pub fn detach_pinned(path: &Path) -> io::Result<()> {
    detach(&pinned(path)?)
}

/// A descriptor of the object pinned at `path`.
fn pinned(path: &Path) -> io::Result<OwnedFd> {
    let pathname = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut get = ObjGetAttr {
        pathname: pathname.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    owned(bpf(BPF_OBJ_GET, &mut get)?)
}

/// Detaches `link` from its hook.
fn detach(link: &OwnedFd) -> io::Result<()> {
    match bpf(
        BPF_LINK_DETACH,
        &mut LinkDetachAttr {
            link_fd: raw(link)?,
        },
    ) {
        Ok(_) => Ok(()),
        // Detached already: its interface is gone.
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fills `info` (a prefix of the `bpf_*_info` of the object behind `fd`).
fn object_info<T>(fd: &OwnedFd, info: &mut T) -> io::Result<()> {
    bpf(
        BPF_OBJ_GET_INFO_BY_FD,
        &mut InfoByFdAttr {
            bpf_fd: raw(fd)?,
            info_len: std::mem::size_of::<T>() as u32,
            info: info as *mut T as u64,
        },
    )
    .map(|_| ())
}

fn program_fd(program_id: u32) -> io::Result<OwnedFd> {
    owned(bpf(
        BPF_PROG_GET_FD_BY_ID,
        &mut GetFdByIdAttr {
            id: program_id,
            ..GetFdByIdAttr::default()
        },
    )?)
}

fn tcx_attach_type(egress: bool) -> u32 {
    if egress {
        BPF_TCX_EGRESS
    } else {
        BPF_TCX_INGRESS
    }
}

/// The programs TCX runs on the hook (`egress` or ingress) of the interface `ifindex` of
/// this thread's network namespace, in order: each with the id of its link, 0 for a
/// program attached without one.
pub fn tcx_attachments(ifindex: u32, egress: bool) -> io::Result<Vec<(u32, u32)>> {
    let mut capacity = 16;
    loop {
        let mut programs = vec![0u32; capacity];
        let mut links = vec![0u32; capacity];
        let mut attr = ProgQueryAttr {
            target_ifindex: ifindex,
            attach_type: tcx_attach_type(egress),
            prog_ids: programs.as_mut_ptr() as u64,
            link_ids: links.as_mut_ptr() as u64,
            count: capacity as u32,
            ..ProgQueryAttr::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                let count = (attr.count as usize).min(capacity);
                return Ok(programs.into_iter().zip(links).take(count).collect());
            }
            // More than we made room for: the kernel said how many.
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                capacity = (attr.count as usize).max(capacity * 2);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The kernel's name of the program `program_id` (at most 15 bytes of the name it was
/// loaded with).
pub fn program_name(program_id: u32) -> io::Result<String> {
    let mut info = ProgInfoPrefix::default();
    object_info(&program_fd(program_id)?, &mut info)?;
    let end = info
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.name.len());
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

/// The kernel's id of the object (map, program or link) pinned at `path`.
pub fn pinned_object_id(path: &Path) -> io::Result<u32> {
    let mut info = ObjInfoPrefix::default();
    object_info(&pinned(path)?, &mut info)?;
    Ok(info.id)
}

/// The index of the interface the TCX link pinned at `path` is attached to; 0 for a link
/// that was detached (defunct: `bpftool link detach`, or its hook was torn down) but is
/// still pinned. `InvalidData` if the pin is not a TCX link.
pub fn tcx_link_ifindex(path: &Path) -> io::Result<u32> {
    let mut info = TcxLinkInfo::default();
    object_info(&pinned(path)?, &mut info)?;
    if info.link_type != BPF_LINK_TYPE_TCX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is not a TCX link (link type {})",
                path.display(),
                info.link_type
            ),
        ));
    }
    Ok(info.ifindex)
}

/// Detaches the link `link_id` from its hook, wherever it is pinned or held. `NotFound`
/// if it is gone.
pub fn detach_link(link_id: u32) -> io::Result<()> {
    detach(&owned(bpf(
        BPF_LINK_GET_FD_BY_ID,
        &mut LinkGetFdAttr {
            link_id,
            ..LinkGetFdAttr::default()
        },
    )?)?)
}

/// Takes the program `program_id`, attached without a link, off the TCX hook of
/// `ifindex` (in this thread's network namespace). `NotFound` if it is not there.
pub fn detach_tcx_program(ifindex: u32, egress: bool, program_id: u32) -> io::Result<()> {
    let program = program_fd(program_id)?;
    bpf(
        BPF_PROG_DETACH,
        &mut ProgDetachAttr {
            target_ifindex: ifindex,
            attach_bpf_fd: raw(&program)?,
            attach_type: tcx_attach_type(egress),
            ..ProgDetachAttr::default()
        },
    )
    .map(|_| ())
}

/// The ids of the maps the program `program_id` uses; `NotFound` if it is gone.
pub fn program_map_ids(program_id: u32) -> io::Result<Vec<u32>> {
    let program = program_fd(program_id)?;
    let mut capacity = 64;
    loop {
        let mut ids = vec![0u32; capacity];
        let mut info = ProgInfoPrefix {
            nr_map_ids: capacity as u32,
            map_ids: ids.as_mut_ptr() as u64,
            ..ProgInfoPrefix::default()
        };
        object_info(&program, &mut info)?;
        // The kernel says how many there are, and wrote at most `capacity` of them.
        let count = info.nr_map_ids as usize;
        if count <= capacity {
            ids.truncate(count);
            return Ok(ids);
        }
        capacity = count;
    }
}
