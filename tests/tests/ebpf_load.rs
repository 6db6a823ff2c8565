//! The eBPF object embedded in the agent loads into the running kernel and its programs
//! behave; the bpffs pin directory can be set up.
//!
//! Privileged: run through `cargo xtask test` as root.

use std::{fs, net::Ipv4Addr, path::Path};

use aya::programs::{TestRun, TestRunOptions};
use palisade::dataplane::{self, PROGRAMS};
use palisade_tests::{Cleanup, packet, require_root};

/// `TC_ACT_OK`: let the packet continue.
const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: drop the packet.
const TC_ACT_SHOT: u32 = 2;

fn embedded_object() -> &'static [u8] {
    dataplane::ebpf_object().unwrap_or_else(|err| {
        panic!("{err}\n(the tests must run through `cargo xtask test`, which embeds it)")
    })
}

/// With empty maps no address belongs to a workload: both programs drop IP (the source is
/// spoofed on the way out, the destination not local on the way in) and pass ARP.
#[test]
fn tc_programs_load_and_drop_ip_of_unknown_endpoints() {
    require_root();
    let mut loaded = dataplane::load(embedded_object(), None)
        .unwrap_or_else(|err| panic!("cannot load the eBPF object: {err}"));
    let syn = packet::ipv4_tcp_syn(
        Ipv4Addr::new(10, 65, 0, 1),
        Ipv4Addr::new(10, 65, 0, 2),
        40000,
        80,
    );
    let arp = packet::arp_request(Ipv4Addr::new(10, 65, 0, 1), Ipv4Addr::new(169, 254, 1, 1));
    for name in PROGRAMS {
        let program = loaded
            .program(name)
            .unwrap_or_else(|err| panic!("no usable {name}: {err}"));
        for (frame, expected, what) in [(&syn, TC_ACT_SHOT, "a TCP SYN"), (&arp, TC_ACT_OK, "ARP")]
        {
            let result = program
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    ..TestRunOptions::default()
                })
                .unwrap_or_else(|err| panic!("BPF_PROG_TEST_RUN of {name} failed: {err}"));
            assert_eq!(
                result.return_value, expected,
                "{name} on {what} with no endpoint known"
            );
        }
    }
}

#[test]
fn pin_dir_on_a_private_bpffs() {
    require_root();
    // Declared before `cleanup` so that it is removed after the unmount (drop order is the
    // reverse of declaration).
    let mount_point = tempfile::tempdir().expect("cannot create a temporary directory");
    let mut cleanup = Cleanup::new();
    let root = mount_point.path().to_owned();

    let mounted = dataplane::ensure_bpffs_mounted(&root)
        .unwrap_or_else(|err| panic!("cannot mount bpffs at {}: {err}", root.display()));
    assert!(mounted, "a fresh directory cannot already hold a bpffs");
    cleanup.defer(format!("unmount {}", root.display()), {
        let root = root.clone();
        move || unmount(&root)
    });

    assert!(
        !dataplane::ensure_bpffs_mounted(&root).expect("second mount check failed"),
        "an existing bpffs mount must be reused, not stacked"
    );
    let pin_dir = dataplane::ensure_pin_dir(&root).expect("cannot create the pin directory");
    assert_eq!(pin_dir, dataplane::pin_dir(&root));
    assert!(pin_dir.is_dir(), "{} was not created", pin_dir.display());
    assert!(
        pin_dir.ends_with(format!("palisade/{}", palisade_common::ABI_VERSION)),
        "{} is not versioned by the ABI",
        pin_dir.display()
    );
}

#[test]
fn pin_dir_under_sys_fs_bpf() {
    require_root();
    let root = Path::new(dataplane::BPFFS_ROOT);
    let palisade_dir = root.join("palisade");
    let pin_dir = dataplane::pin_dir(root);
    let mut cleanup = Cleanup::new();
    // Remove only the directories this test creates: an agent on this machine may own them.
    // A bpffs mounted here stays mounted: it is the system's conventional one.
    for dir in [&palisade_dir, &pin_dir] {
        if !dir.exists() {
            let dir = dir.clone();
            cleanup.defer(format!("remove {}", dir.display()), move || {
                Ok(fs::remove_dir(&dir)?)
            });
        }
    }

    let created = dataplane::ensure_pin_dir(root)
        .unwrap_or_else(|err| panic!("cannot set up the pin directory: {err}"));
    assert_eq!(created, pin_dir);
    assert!(pin_dir.is_dir(), "{} was not created", pin_dir.display());
    assert!(
        !dataplane::ensure_bpffs_mounted(root).expect("mount check failed"),
        "bpffs should be mounted at {} now",
        root.display()
    );
}

fn unmount(path: &Path) -> anyhow::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt};
    let path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
