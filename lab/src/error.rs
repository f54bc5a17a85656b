//! The lab's one error type: every message names the command, file or process involved.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command ran and failed (or could not be started).
    #[error("{cmd}: {detail}")]
    Command { cmd: String, detail: String },
    #[error("{what}: {err}")]
    Io { what: String, err: std::io::Error },
    #[error("no cgroup2 mount found: the lab puts netd's socket programs on a cgroup of its own (mount cgroup2, or create the lab without a cgroup)")]
    NoCgroup2,
    #[error("{what} already exists: a lab of that name is up")]
    Exists { what: String },
    #[error("the netd daemon {0}")]
    Daemon(String),
    #[error("dockerd {0}")]
    Dockerd(String),
    #[error("{tool} is not installed (not on PATH): {needed_for} needs it")]
    NotInstalled { tool: String, needed_for: String },
    /// Teardown went on past each problem; these are all of them.
    #[error("lab {lab}: {}", problems.join("; "))]
    Teardown { lab: String, problems: Vec<String> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, err: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            err,
        }
    }

    pub(crate) fn path(what: &str, path: &Path, err: std::io::Error) -> Error {
        Error::io(format!("{what} {}", path.display()), err)
    }
}
