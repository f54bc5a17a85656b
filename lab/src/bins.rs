//! The binaries a lab runs: from the environment (xtask sets it), or next to the
//! running executable.
use std::path::{Path, PathBuf};

fn bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    // A test binary lives in target/<profile>/deps, a tool in target/<profile>: look in
    // the executable's directory and the one above it.
    let exe = std::env::current_exe().unwrap_or_default();
    let dirs = [exe.parent(), exe.parent().and_then(Path::parent)];
    dirs.iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The netd binary (NETD_BIN).
pub fn netd_bin() -> PathBuf {
    bin("netd", "NETD_BIN")
}

/// The traffic tool of the tests and the bench (NETD_TESTER).
pub fn tester_bin() -> PathBuf {
    bin("netd-tester", "NETD_TESTER")
}
