//! What this build is: its release, its commit, and the layouts of what it leaves on a
//! host (the pinned datapath, the state file), which an upgrade migrates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const GIT_COMMIT: &str = env!("NETD_GIT_COMMIT");
pub use crate::{datapath::LAYOUT as DATAPATH_LAYOUT, store::STATE_VERSION};

/// The Docker Engine API version netd's API follows.
pub const API_VERSION: &str = "1.41";

/// `netd --version`, in docker's words ("Docker version 28.2.2, build e6534b4").
pub const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    ", build ",
    env!("NETD_GIT_COMMIT")
);

/// The facts `netd version` and `GET /version` give, in order.
pub fn details() -> Vec<(&'static str, String)> {
    vec![
        ("Version", VERSION.to_string()),
        ("GitCommit", GIT_COMMIT.to_string()),
        ("DatapathLayout", DATAPATH_LAYOUT.to_string()),
        ("StateVersion", STATE_VERSION.to_string()),
        ("ApiVersion", API_VERSION.to_string()),
    ]
}
