//! What the package puts on the host, and that a purge takes all of it.
use std::path::Path;

use super::{ok, run};

/// Files of the package, with the mode they must have.
const FILES: &[(&str, u32)] = &[
    ("/usr/bin/netd", 0o755),
    ("/usr/lib/cni/netd-cni", 0o755),
    ("/etc/netd/daemon.json", 0o644),
    ("/usr/lib/docker/plugins/netd.spec", 0o644),
    ("/usr/share/doc/netd/examples/10-netd.conflist", 0o644),
    ("/usr/share/bash-completion/completions/netd", 0o644),
    ("/usr/share/zsh/vendor-completions/_netd", 0o644),
    ("/usr/share/fish/vendor_completions.d/netd.fish", 0o644),
    ("/usr/share/man/man1/netd.1.gz", 0o644),
    ("/usr/share/man/man1/netd-daemon.1.gz", 0o644),
];

/// Where the unit is (cargo-deb installs units under /lib or /usr/lib).
pub fn unit_path() -> &'static str {
    [
        "/lib/systemd/system/netd.service",
        "/usr/lib/systemd/system/netd.service",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("netd.service installed")
}

pub fn check_installed() {
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in FILES {
        let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(m.permissions().mode() & 0o777, *mode, "{path}");
    }
    // Runtimes that look in /opt/cni/bin (containerd, CRI-O, the kubelet) find it too.
    assert_eq!(
        std::fs::canonicalize("/opt/cni/bin/netd-cni").unwrap(),
        Path::new("/usr/lib/cni/netd-cni")
    );
    // The config file is a conffile: an upgrade keeps the operator's edits.
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "netd"]);
    assert!(conffiles.contains("/etc/netd/daemon.json"), "{conffiles}");
    let spec = std::fs::read_to_string("/usr/lib/docker/plugins/netd.spec").unwrap();
    assert_eq!(spec.trim(), "unix:///run/docker/plugins/netd.sock");
    let conflist =
        std::fs::read_to_string("/usr/share/doc/netd/examples/10-netd.conflist").unwrap();
    let c: serde_json::Value = serde_json::from_str(&conflist).expect("conflist JSON");
    assert_eq!(c["plugins"][0]["type"], "netd-cni");
    let bash = std::fs::read_to_string("/usr/share/bash-completion/completions/netd").unwrap();
    assert!(
        bash.contains("complete") && bash.contains("daemon"),
        "bash completion"
    );
    let man = ok("sh", &["-c", "zcat /usr/share/man/man1/netd-daemon.1.gz"]);
    assert!(
        man.contains("config\\-file") || man.contains("config-file"),
        "man page"
    );
}

pub fn check_unit() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/netd daemon",
        "Restart=on-failure",
        "KillMode=process",
        "mount -t bpf bpf /sys/fs/bpf",
    ] {
        assert!(unit.contains(line), "netd.service lacks {line}");
    }
    // Enabled by the install (for the next boot), not started.
    assert!(Path::new("/etc/systemd/system/multi-user.target.wants/netd.service").exists());
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let o = run("systemd-analyze", &["verify", unit_path()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let about_netd: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("netd.service"))
            .collect();
        assert!(
            o.status.success() && about_netd.is_empty(),
            "systemd-analyze verify: {text}"
        );
    }
}

pub fn check_purged() {
    for (path, _) in FILES {
        assert!(!Path::new(path).exists(), "{path} left after purge");
    }
    for path in [
        "/opt/cni/bin/netd-cni",
        "/etc/netd",
        "/etc/systemd/system/multi-user.target.wants/netd.service",
    ] {
        assert!(
            std::fs::symlink_metadata(path).is_err(),
            "{path} left after purge"
        );
    }
    for unit in [
        "/lib/systemd/system/netd.service",
        "/usr/lib/systemd/system/netd.service",
    ] {
        assert!(!Path::new(unit).exists(), "{unit} left after purge");
    }
}
