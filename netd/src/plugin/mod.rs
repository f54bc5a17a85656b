//! netd as a Docker network plugin (`netd daemon --docker-plugin NAME`): libnetwork's
//! remote driver protocol (HTTP/1.1 POSTs of JSON) on /run/docker/plugins/NAME.sock,
//! where dockerd discovers plugins, so that `docker network create -d NAME` and an
//! unchanged `docker run --network NET -p HP:CP` get netd's datapath.
//!
//! - `wire`: the protocol's JSON, field for field.
//! - `translate`: Docker's words (IPAM data, options, port bindings) to netd's.
//! - `handlers`: one handler per method, calling the core (`daemon/endpoints/docker`).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{anyhow, Context};
use log::{info, warn};
use nix::unistd::Gid;

use crate::daemon::Daemon;

mod handlers;
mod translate;
mod wire;

/// Where dockerd looks for plugin sockets (fixed in Docker's plugin discovery).
pub const PLUGIN_DIR: &str = "/run/docker/plugins";

/// The plugin's socket: bound at start, removed when dropped, unless another process
/// has put its own socket at the same path since.
pub struct PluginSocket {
    path: PathBuf,
    /// (device, inode) of the socket file this process bound.
    file: (u64, u64),
    listener: Option<tokio::net::UnixListener>,
}

/// A plugin name is a file name under PLUGIN_DIR and `docker network create -d`'s
/// driver name.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "invalid --docker-plugin name {name:?}: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters"
        ))
    }
}

impl PluginSocket {
    /// Binds PLUGIN_DIR/NAME.sock 0660 root:GROUP; refuses a path another live process
    /// serves.
    pub fn bind(name: &str, gid: Option<Gid>) -> anyhow::Result<PluginSocket> {
        Self::bind_in(Path::new(PLUGIN_DIR), name, gid)
    }

    fn bind_in(dir: &Path, name: &str, gid: Option<Gid>) -> anyhow::Result<PluginSocket> {
        check_name(name)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.sock"));
        let listener = crate::unix_socket::bind_socket(&path, gid).map_err(|e| {
            anyhow!("docker plugin {name}: {e:#} (is another netd serving it? pick another NAME)")
        })?;
        let m = std::fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        info!("docker plugin {name} on {}", path.display());
        Ok(PluginSocket {
            path,
            file: (m.dev(), m.ino()),
            listener: Some(listener),
        })
    }

    /// Serves the protocol until the listener fails; call once.
    pub async fn serve(&mut self, d: Arc<Daemon>) -> anyhow::Result<()> {
        let l = self
            .listener
            .take()
            .ok_or_else(|| anyhow!("the docker plugin socket is already served"))?;
        axum::serve(l, handlers::router(d))
            .await
            .context("docker plugin server")
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.file => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    warn!("removing {}: {e}", self.path.display());
                }
            }
            Ok(_) => warn!(
                "{} is another process's socket now: left in place",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-plugin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn names_are_file_names() {
        assert!(check_name("netd").is_ok());
        assert!(check_name("netd-test.1").is_ok());
        for bad in ["", "../x", "a/b", "-x", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_socket_is_removed_on_drop_but_a_live_one_is_never_taken() {
        let dir = tmpdir("sock");
        let first = PluginSocket::bind_in(&dir, "p", None).unwrap();
        let path = dir.join("p.sock");
        assert!(path.exists());
        let e = PluginSocket::bind_in(&dir, "p", None).err().unwrap();
        assert!(format!("{e:#}").contains("pick another NAME"), "{e:#}");
        drop(first);
        assert!(!path.exists(), "the socket outlived its server");
        // A stale file (no one listening) is taken over.
        let again = PluginSocket::bind_in(&dir, "p", None).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_socket_replaced_by_another_process_is_left_alone() {
        let dir = tmpdir("replaced");
        let mine = PluginSocket::bind_in(&dir, "p", None).unwrap();
        let path = dir.join("p.sock");
        std::fs::remove_file(&path).unwrap();
        let theirs = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(mine);
        assert!(path.exists(), "another process's socket was removed");
        drop(theirs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
