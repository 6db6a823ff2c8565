//! A private dockerd for `cargo xtask test`, which builds the node image of the binary under
//! test whether or not the machine runs Docker (CI machines do not).
//!
//! Its data root stays in the checkout's target directory, so the base image and the
//! build's layer cache outlive it and the next run builds only what changed; a lock file
//! keeps two runs of one checkout from sharing it at once. Its sockets and run-time state
//! are in a short private directory under /tmp (unix socket paths are limited to 108
//! bytes), removed when it stops. No bridge, no iptables: the build needs no network.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Docker;

/// How long the daemon may take to answer or to stop.
const PATIENCE: Duration = Duration::from_secs(60);

pub struct PrivateDaemon {
    child: Option<Child>,
    run_dir: PathBuf,
    log: PathBuf,
    _lock: File,
}

impl PrivateDaemon {
    /// Starts dockerd with its data in `<work>/dockerd` and waits until it answers.
    pub fn start(work: &Path) -> Result<PrivateDaemon> {
        fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
        let lock = lock(&work.join("dockerd.lock"))?;
        let run_dir = PathBuf::from(format!("/tmp/palx.{}", std::process::id()));
        if run_dir.exists() {
            fs::remove_dir_all(&run_dir)
                .with_context(|| format!("cannot remove {}", run_dir.display()))?;
        }
        fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let log = work.join("dockerd.log");
        let log_file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        fs::write(run_dir.join("daemon.json"), "{}")?;
        let namespace = format!("palx{}", std::process::id());
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(run_dir.join("daemon.json"))
            .arg("--data-root")
            .arg(work.join("dockerd"))
            .arg("--exec-root")
            .arg(run_dir.join("exec"))
            .arg("--pidfile")
            .arg(run_dir.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", run_dir.join("docker.sock").display()))
            .args([
                "--storage-driver",
                "vfs",
                "--iptables=false",
                "--ip6tables=false",
            ])
            .args(["--bridge", "none", "--ip-masq=false"])
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}p")])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("cannot start dockerd (`cargo xtask bootstrap` installs docker.io)")?;
        let daemon = PrivateDaemon {
            child: Some(child),
            run_dir,
            log,
            _lock: lock,
        };
        daemon.wait_until_up()?;
        Ok(daemon)
    }

    pub fn docker(&self) -> Docker {
        Docker::at_socket(&self.run_dir.join("docker.sock"))
    }

    fn wait_until_up(&self) -> Result<()> {
        let docker = self.docker();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if docker.check_reachable().is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "the private dockerd did not answer within {PATIENCE:?}; see {}",
            self.log.display()
        )
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + PATIENCE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(None) = child.try_wait() {
                eprintln!("image: the private dockerd did not stop on SIGTERM; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // dockerd stops the containerd it started; make sure, if it had to be killed.
        let containerd = self.run_dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(containerd)
            .ok()
            .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        super::base::unmount_below(&self.run_dir);
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

/// An exclusive lock on `path`, held while the returned file is open; waits for it.
fn lock(path: &Path) -> Result<File> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "image: another xtask uses the private dockerd ({}); waiting",
            path.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(file)
}
