//! The plugin's unix socket: where Docker finds it (`/run/docker/plugins/NAME.sock`),
//! root-owned, mode 0660, replaced atomically, removed when the plugin stops.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::ServeError;

/// Docker talks to the socket as root; nobody else should.
const SOCKET_MODE: u32 = 0o660;

/// A listening socket at `path`, removed on drop if it is still this one.
pub struct PluginSocket {
    pub listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file this process created.
    identity: (u64, u64),
}

impl PluginSocket {
    /// Listens at `path`. A socket file left there by a plugin that is gone is replaced;
    /// one that a running plugin answers on is an error.
    pub fn bind(path: &Path) -> Result<PluginSocket, ServeError> {
        let socket_error = |source: io::Error| ServeError::Socket {
            path: path.to_path_buf(),
            source,
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or_else(|| socket_error(io::Error::other("the socket path has no directory")))?;
        let name = path
            .file_name()
            .ok_or_else(|| socket_error(io::Error::other("the socket path has no file name")))?;
        fs::create_dir_all(dir).map_err(socket_error)?;
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(socket_error(io::Error::other(
                    "the path exists and is not a socket",
                )));
            }
            Ok(_) if StdUnixStream::connect(path).is_ok() => {
                return Err(ServeError::AlreadyServed(path.to_path_buf()));
            }
            _ => {}
        }
        // Bound and given its mode under a private name, then renamed into place, so that
        // Docker never sees the socket with the wrong mode or half set up.
        let staging = dir.join(format!(
            ".{}.{}.staging",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = fs::remove_file(&staging);
        let listener = StdUnixListener::bind(&staging).map_err(socket_error)?;
        let placed = fs::set_permissions(&staging, fs::Permissions::from_mode(SOCKET_MODE))
            .and_then(|()| fs::rename(&staging, path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&staging);
            return Err(socket_error(e));
        }
        let meta = fs::symlink_metadata(path).map_err(socket_error)?;
        listener.set_nonblocking(true).map_err(socket_error)?;
        let listener = UnixListener::from_std(listener).map_err(socket_error)?;
        Ok(PluginSocket {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        // Another plugin may have taken the path over since; its socket stays.
        if let Ok(meta) = fs::symlink_metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.identity
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}
