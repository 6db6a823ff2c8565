//! Naming a network namespace the way `ip netns` and container runtimes do.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::Error;

/// Where `ip netns add NAME` bind-mounts its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace: holding the file keeps the namespace alive and lets threads
/// enter it.
#[derive(Debug)]
pub struct NetnsHandle {
    path: PathBuf,
    fd: OwnedFd,
}

impl NetnsHandle {
    /// Opens `spec`: a name under /run/netns (as `ip netns` makes), or a path such as
    /// /proc/PID/ns/net or /var/run/docker/netns/ID.
    pub fn open(spec: &str) -> Result<Self, Error> {
        let path = namespace_path(spec)?;
        let file = File::open(&path).map_err(|source| Error::OpenNamespace {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            fd: file.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the calling thread into this namespace.
    ///
    /// Only for a thread made for the purpose: a thread of the async runtime must never
    /// change namespaces, since every later task on it would run there.
    pub(super) fn enter_on_this_thread(&self) -> Result<(), Error> {
        // SAFETY: setns on an fd this struct owns; it affects only the calling thread.
        let rc = unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(Error::EnterNamespace {
                path: self.path.clone(),
                source: io::Error::last_os_error(),
            })
        }
    }

    pub(super) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The file behind `spec`; a bare name must be a plain file name, so that it cannot escape
/// /run/netns.
fn namespace_path(spec: &str) -> Result<PathBuf, Error> {
    if spec.contains('/') {
        return Ok(PathBuf::from(spec));
    }
    if spec.is_empty() || spec == "." || spec == ".." {
        return Err(Error::Invalid(format!(
            "--netns '{spec}': give a namespace name under {NETNS_RUN_DIR} or a path"
        )));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_under_run_netns_and_paths_are_kept() {
        assert_eq!(
            namespace_path("blue").unwrap(),
            PathBuf::from("/run/netns/blue")
        );
        assert_eq!(
            namespace_path("/proc/42/ns/net").unwrap(),
            PathBuf::from("/proc/42/ns/net")
        );
        assert!(namespace_path("..").is_err());
        assert!(namespace_path("").is_err());
    }

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let err = NetnsHandle::open("palisade-no-such-namespace").unwrap_err();
        assert!(
            err.to_string()
                .contains("/run/netns/palisade-no-such-namespace"),
            "{err}"
        );
    }
}
