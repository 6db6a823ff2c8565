//! `palisade cleanup`: takes palisade off the host: every palisade program off every
//! interface of the network namespace (TCX and clsact, of any ABI version, also those
//! whose pins are gone), the pins under `<bpffs>/palisade`, the Docker plugin's socket and
//! the agent's run directory. The datastore and the workloads' plumbing stay.
//!
//! It refuses while an agent runs on the same bpffs (it takes the agent's lock, see
//! `dataplane::host_lock`): the agent would attach again at its next update, and an
//! operator who uninstalls stops the agent first. The lock is held until the end, so no
//! agent can start half way through.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::dataplane::bpffs::bpffs_mounted_at;
use crate::dataplane::rule_names::{self, DEFAULT_RUN_DIR};
use crate::dataplane::{BPFFS_ROOT, host_lock, remnants};
use crate::docker;

/// Take palisade off this host: detach its programs from every interface (of any version,
/// TCX and clsact), remove its pins, the Docker plugin's socket and the agent's run
/// directory. The datastore and the workloads' interfaces stay. Refuses while an agent
/// runs: stop it first.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Where bpffs is mounted (as given to `palisade agent`).
    #[arg(long, default_value = BPFFS_ROOT)]
    pub bpffs: PathBuf,
    /// The agent's run-time directory (as given to `palisade agent`).
    #[arg(long, default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// The Docker plugin's socket (as given to `palisade agent --socket`).
    #[arg(long = "socket", value_name = "PATH", default_value = docker::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

pub fn run(args: CleanupArgs) -> ExitCode {
    match clean(&args) {
        Ok(()) => {
            println!(
                "palisade is off this host; the datastore and the workloads' interfaces are \
                 left as they are"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("palisade cleanup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn clean(args: &CleanupArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Without a bpffs there are no pins, and no agent (an agent mounts one).
    let lock = if bpffs_mounted_at(&args.bpffs)? {
        Some(host_lock::lock(&args.bpffs)?)
    } else {
        None
    };
    let found = remnants::find(&args.bpffs)?;
    let removed = found.remove(|_| true)?;
    for attachment in &removed.attachments {
        println!("detached {attachment}");
    }
    for dir in &removed.versions {
        println!("removed {}", dir.display());
    }
    remove_socket(&args.socket)?;
    remove_run_dir(&args.run_dir)?;
    if let Some(lock) = lock {
        // Last, still locked: an agent that starts from here on finds nothing of ours.
        std::fs::remove_dir(lock.path())
            .map_err(|e| format!("cannot remove {}: {e}", lock.path().display()))?;
        println!("removed {}", lock.path().display());
    }
    Ok(())
}

/// Removes the plugin's socket, if it is one.
fn remove_socket(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(socket)
                .map_err(|e| format!("cannot remove {}: {e}", socket.display()))?;
            println!("removed {}", socket.display());
            Ok(())
        }
        Ok(_) => Err(format!(
            "{} is not a socket; left it alone",
            socket.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot inspect {}: {e}", socket.display())),
    }
}

/// Removes the files the agent writes in its run directory, then the directory. Anything
/// else in it is not palisade's to delete: the directory is then left, and said so.
fn remove_run_dir(dir: &Path) -> Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    let mut foreign = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if rule_names::is_written_by_agent(&name) {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("cannot remove {}: {e}", entry.path().display()))?;
        } else {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        return Err(format!(
            "left {}: it holds files palisade did not write ({})",
            dir.display(),
            foreign.join(", ")
        ));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => println!("removed {}", dir.display()),
        // Run from the node container, the directory is the host's, mounted here.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => println!(
            "emptied {}: it is a mount point here, so the (empty) directory stays on the host",
            dir.display()
        ),
        Err(e) => return Err(format!("cannot remove {}: {e}", dir.display())),
    }
    Ok(())
}
