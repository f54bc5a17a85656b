//! Unix sockets the daemon serves (its API, the Docker plugin's): bound with their mode
//! set before anyone can connect, and never over a socket a live process serves.
use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::{anyhow, Context};
use nix::unistd::{chown, Gid};

/// Binds the API socket 0660 root:GROUP. The mode is set before anyone can connect:
/// the directory is already closed to others, so the moment between bind and chmod
/// exposes nothing.
pub fn bind_socket(path: &Path, gid: Option<Gid>) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        // A live daemon answers on it; a dead one left a stale file.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(anyhow!(
                "another netd daemon is already listening on {}",
                path.display()
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    chown(path, None, gid).with_context(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(l)
}
