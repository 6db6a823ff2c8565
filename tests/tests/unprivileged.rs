//! Safe defaults (issue 13): a command that needs root, run without it, says which
//! capabilities it lacks, exits with status 1, and does nothing. Run as a real
//! unprivileged user (nobody, through util-linux's `setpriv`), and as root stripped of
//! every capability (as in an unprivileged container).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade::dataplane::bpffs::bpffs_mounted_at;
use palisade_tests::{palisade_binary, require_root};

const NOBODY: &str = "65534";

/// The binary where an unprivileged user may run it (the build's directory may be
/// private to root, as a clone under /root is).
fn binary_for_anyone(dir: &Path) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.join("palisade");
    std::fs::copy(palisade_binary(), &copy).expect("copy the binary");
    copy
}

/// Runs `binary args` through `setpriv` with `setpriv_args`; returns the status code and
/// what it said.
fn run(setpriv_args: &[&str], binary: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .arg(binary)
        .args(args)
        .output()
        .expect("run setpriv (util-linux)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), said)
}

#[test]
fn commands_that_need_root_say_which_capabilities_they_lack() {
    require_root();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let binary = binary_for_anyone(dir.path());
    let bpffs = dir.path().join("bpffs");
    std::fs::create_dir(&bpffs).expect("a bpffs mount point");
    let bpffs = bpffs.display().to_string();
    let store = format!("file://{}", dir.path().join("store").display());
    let nobody = [
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let root_without_capabilities = ["--inh-caps=-all", "--bounding-set=-all"];
    let cases: [(&[&str], &[&str], &str); 5] = [
        (
            &["agent", "--bpffs", &bpffs, "--no-docker-plugin"],
            &["CAP_SYS_ADMIN and CAP_NET_ADMIN"],
            "palisade agent",
        ),
        (
            &["cleanup", "--bpffs", &bpffs],
            &["CAP_SYS_ADMIN and CAP_NET_ADMIN"],
            "palisade cleanup",
        ),
        (
            &["stats", "--bpffs", &bpffs],
            &["CAP_BPF or CAP_SYS_ADMIN"],
            "palisade stats",
        ),
        (
            &[
                "workload",
                "add",
                "w1",
                "--netns",
                "pal-nobody",
                "--ip",
                "10.248.0.1",
            ],
            &["CAP_SYS_ADMIN and CAP_NET_ADMIN"],
            "palisade workload add",
        ),
        (
            &["workload", "remove", "w1"],
            &["CAP_SYS_ADMIN and CAP_NET_ADMIN"],
            "palisade workload remove",
        ),
    ];
    for (who, setpriv_args, uid) in [
        ("nobody", &nobody[..], NOBODY),
        (
            "root without capabilities",
            &root_without_capabilities[..],
            "0",
        ),
    ] {
        for (args, lacks, command) in &cases {
            let mut full = vec!["--datastore", store.as_str()];
            full.extend_from_slice(args);
            let (code, said) = run(setpriv_args, &binary, &full);
            println!("{who}: palisade {}: {code:?}\n{said}", args.join(" "));
            assert_eq!(code, Some(1), "{who}: {said}");
            assert!(
                said.contains(command)
                    && said.contains("needs root")
                    && said.contains(&format!("uid {uid}"))
                    && lacks.iter().all(|l| said.contains(l)),
                "{who}: palisade {args:?} should say it lacks {lacks:?}:\n{said}"
            );
        }
    }
    // Nothing was done: no bpffs mounted, no store made.
    assert!(!bpffs_mounted_at(Path::new(&bpffs)).expect("read the mounts"));
    assert!(!dir.path().join("store").exists());

    // A command that needs no privilege still runs.
    let (code, said) = run(
        &nobody,
        &binary,
        &["selector", "test", "a == 'b'", "--labels", "{\"a\": \"b\"}"],
    );
    assert_eq!(code, Some(0), "{said}");
}
