//! The datapath's errors that callers tell apart (a downgrade is refused, not retried).
use std::path::{Path, PathBuf};

use netd_common::layout::DATAPATH_LAYOUT;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pins were left by a newer release: this one cannot read them, and using
    /// them would break the datapath that runs on them.
    #[error(
        "the datapath pinned in {dir} has layout {found}, newer than netd {version} knows (layout {DATAPATH_LAYOUT}): start the netd release that made it (or a newer one), or remove it and every container of this instance with that release's `netd daemon --cleanup`",
        dir = .dir.display(),
        version = env!("CARGO_PKG_VERSION")
    )]
    Newer { dir: PathBuf, found: u32 },
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        source: std::io::Error,
    },
    #[error("pinning at {}: {why}", .path.display())]
    Pin { path: PathBuf, why: String },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Map(String),
}

impl DatapathError {
    /// For `map_err` on a filesystem call: `what` is the verb ("removing").
    pub fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DatapathError {
        let path = path.to_path_buf();
        move |source| DatapathError::Io { what, path, source }
    }
}
