//! The Debian package of `cargo xtask dist` (here of the debug build, NETD_DEB): it
//! installs with dpkg, puts every file where the host's tools look, `netd --version`
//! and `netd daemon --validate` run, systemd-analyze accepts the unit, and a purge
//! leaves nothing. The install never starts netd (these machines have no systemd as
//! PID 1, and the datapath must never touch the machine's interfaces): no netd process
//! from /usr/bin/netd may exist at any point.
#[path = "package/files.rs"]
mod files;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {prog}: {e}"))
}

fn ok(prog: &str, args: &[&str]) -> String {
    let o = run(prog, args);
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn installed() -> bool {
    let o = run("dpkg-query", &["-W", "-f=${Status}", "netd"]);
    String::from_utf8_lossy(&o.stdout).contains("ok installed")
}

/// Purges the package when the test ends, however it ends, and puts back a netd-cni
/// that `cargo xtask run` had installed into /opt/cni/bin (dpkg replaces a file no
/// package owns, and the purge removes it).
struct Purge(Option<Vec<u8>>);
const OPT_CNI: &str = "/opt/cni/bin/netd-cni";
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "netd"]);
        if let Some(bytes) = self.0.take() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::write(OPT_CNI, bytes);
            let _ = std::fs::set_permissions(OPT_CNI, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// Processes running /usr/bin/netd (the lab's daemons run the build's own binary).
fn packaged_netd_processes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe == Path::new("/usr/bin/netd")).then(|| e.file_name().to_string_lossy().into())
        })
        .collect()
}

#[test]
fn the_deb_installs_verifies_and_purges_cleanly() {
    let deb = PathBuf::from(
        std::env::var_os("NETD_DEB")
            .expect("NETD_DEB: the package to test (cargo xtask test builds it with cargo-deb)"),
    );
    assert!(
        !installed(),
        "a netd package is installed on this machine; this test installs and purges one: dpkg --purge netd first"
    );
    let before = std::fs::symlink_metadata(OPT_CNI)
        .ok()
        .filter(|m| m.is_file())
        .and_then(|_| std::fs::read(OPT_CNI).ok());
    let _purge = Purge(before);
    let info = ok(
        "dpkg-deb",
        &["--field", deb.to_str().unwrap(), "Package", "Section"],
    );
    assert!(info.contains("netd") && info.contains("net"), "{info}");
    ok("dpkg", &["--install", deb.to_str().unwrap()]);
    assert!(installed());

    files::check_installed();
    let v = ok("/usr/bin/netd", &["--version"]);
    assert!(v.starts_with("netd "), "{v}");
    // The default daemon.json is valid (--validate never starts anything).
    let valid = ok("/usr/bin/netd", &["daemon", "--validate"]);
    assert_eq!(valid.trim(), "configuration OK");
    files::check_unit();
    assert_eq!(
        packaged_netd_processes(),
        Vec::<String>::new(),
        "the install started netd"
    );

    ok("dpkg", &["--purge", "netd"]);
    assert!(!installed());
    files::check_purged();
}
