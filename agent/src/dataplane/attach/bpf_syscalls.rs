//! The bpf(2) commands aya 0.14 does not expose: opening a pinned link and detaching it
//! from its hook (TCX), and the map ids of a program known only by its id (clsact: whose
//! filter is whose).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
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

/// `struct bpf_prog_info` up to `map_ids`: the kernel fills what fits in `info_len`.
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
    let pathname = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut get = ObjGetAttr {
        pathname: pathname.as_ptr() as u64,
        ..ObjGetAttr::default()
    };
    let link = owned(bpf(BPF_OBJ_GET, &mut get)?)?;
    match bpf(
        BPF_LINK_DETACH,
        &mut LinkDetachAttr {
            link_fd: raw(&link)?,
        },
    ) {
        Ok(_) => Ok(()),
        // Detached already: its interface is gone.
        Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The ids of the maps the program `program_id` uses; `NotFound` if it is gone.
pub fn program_map_ids(program_id: u32) -> io::Result<Vec<u32>> {
    let program = owned(bpf(
        BPF_PROG_GET_FD_BY_ID,
        &mut GetFdByIdAttr {
            id: program_id,
            ..GetFdByIdAttr::default()
        },
    )?)?;
    let mut capacity = 64;
    loop {
        let mut ids = vec![0u32; capacity];
        let mut info = ProgInfoPrefix {
            nr_map_ids: capacity as u32,
            map_ids: ids.as_mut_ptr() as u64,
            ..ProgInfoPrefix::default()
        };
        bpf(
            BPF_OBJ_GET_INFO_BY_FD,
            &mut InfoByFdAttr {
                bpf_fd: raw(&program)?,
                info_len: std::mem::size_of::<ProgInfoPrefix>() as u32,
                info: &mut info as *mut ProgInfoPrefix as u64,
            },
        )?;
        // The kernel says how many there are, and wrote at most `capacity` of them.
        let count = info.nr_map_ids as usize;
        if count <= capacity {
            ids.truncate(count);
            return Ok(ids);
        }
        capacity = count;
    }
}
