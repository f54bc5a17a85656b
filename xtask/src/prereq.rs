//! What netd needs on the machine, decided by Debian's package state (dpkg), never by
//! "a command of that name exists": machines of this kind ship a docker CLI without
//! dockerd, and a tool installed by hand would hide a package a fresh machine lacks.
use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{cmd_ok, output, say};

/// See shared/TOOLCHAIN.md: 0.10.1 emits BTF the kernel rejects, 0.11+ needs LLVM 23.
const BPF_LINKER_VERSION: &str = "0.10.4";

/// The Debian packages the daemon, the lab and the tests use, and why.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip, ss, tc: the lab's namespaces and links"),
    ("util-linux", "nsenter, taskset"),
    (
        "iptables",
        "the tests assert that netd leaves the rulesets empty",
    ),
    ("nftables", "the same for nft"),
    ("curl", "HTTP from the lab's client"),
    (
        "busybox-static",
        "httpd and the images of the runtime tests",
    ),
    ("iputils-ping", "ping"),
    ("bpftool", "the trace tests read the pinned config entry"),
    (
        "docker.io",
        "dockerd (not only the CLI) for the Docker-plugin tests",
    ),
    (
        "containerd",
        "ctr run --cni, a runtime that never sends CNI DEL",
    ),
    ("podman", "a real CNI runtime driving netd-cni"),
    (
        "docker-compose",
        "a compose file's network options through dockerd to netd's plugin",
    ),
    // Debian's podman prefers crun, which refuses this machine kind's hybrid cgroup
    // layout; the tests run Podman with runc.
    ("runc", "the OCI runtime the Podman tests use"),
    (
        "protobuf-compiler",
        "etcd-client compiles etcd's protos at build time",
    ),
    (
        "libprotobuf-dev",
        "protoc's well-known types, which etcd's protos import",
    ),
    ("etcd-server", "the cluster store of the overlay tests"),
    ("etcd-client", "etcdctl"),
    ("dnsutils", "dig queries the embedded DNS"),
    ("dnsmasq", "the upstream DNS server a --dns names"),
    (
        "python3-docker",
        "docker-py drives netd's Docker API as tools do",
    ),
    ("tar", "images for dockerd and podman"),
    (
        "python3-scapy",
        "the fuzz test's random and malformed packets (scapy's fuzz())",
    ),
    (
        "tcpdump",
        "the fuzz test captures what leaves the host on the uplink",
    ),
    (
        "prometheus",
        "a real Prometheus scrapes netd's metrics; promtool checks them",
    ),
    (
        "systemd",
        "systemd-analyze verifies the packaged netd.service",
    ),
    ("openssl", "the certificates of the etcd-over-TLS tests"),
    (
        "man-db",
        "systemd-analyze verify runs man for the unit's Documentation=man: page",
    ),
    ("xz-utils", "cargo-deb compresses the .deb with xz"),
    (
        "dpkg-dev",
        "cargo-deb finds the package's library dependencies with dpkg-shlibdeps",
    ),
];

/// The bench's own tools, on top of the test packages.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("iperf3", "throughput"),
    (
        "conntrack",
        "flushing the kernel's table between connection-rate runs",
    ),
    ("netavark", "Podman's network tool, a peer"),
    ("aardvark-dns", "Podman's DNS server, a peer of --dns"),
    (
        "containernetworking-plugins",
        "CNI bridge and portmap, a peer",
    ),
    ("dnsperf", "the DNS load tool"),
    ("dnsmasq-base", "the upstream every DNS server forwards to"),
];

/// Whether dpkg has `pkg` installed ("install ok installed").
pub fn installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// Installs the packages of `wanted` that dpkg does not have.
pub fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = wanted
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

/// Everything netd needs to build, run and be tested, installed where missing.
pub fn prerequisites() -> Result<()> {
    if !is_root() {
        bail!("netd needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run as root, e.g. sudo -E cargo xtask ...");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!("this kernel has no BTF (/sys/kernel/btf/vmlinux): netd needs a kernel built with CONFIG_DEBUG_INFO_BTF");
    }
    mount_bpffs()?;
    ensure_packages(TEST_PACKAGES)?;
    rust_toolchain()
}

/// bpffs, where the daemon pins maps and links.
fn mount_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "));
    if !mounted {
        say("mounting bpffs at /sys/fs/bpf");
        cmd_ok(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
            .context("no bpf filesystem could be mounted (is the bpf syscall available?)")?;
    }
    Ok(())
}

/// The eBPF crate is built by aya-build with `rustup run nightly ... -Z build-std=core`,
/// and linked by bpf-linker.
fn rust_toolchain() -> Result<()> {
    let toolchains =
        output("rustup", &["toolchain", "list"]).ok_or_else(|| anyhow!("rustup not found"))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        say("installing the nightly toolchain (for the eBPF build)");
        cmd_ok(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let comps = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .unwrap_or_default();
    if !comps.lines().any(|l| l.starts_with("rust-src")) {
        say("installing rust-src for nightly (build-std=core for the eBPF target)");
        cmd_ok(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let linker_ok =
        output("bpf-linker", &["--version"]).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        say(&format!(
            "installing bpf-linker {BPF_LINKER_VERSION} (about 2-3 minutes)"
        ));
        cmd_ok(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

/// Installs Debian packages without starting their services: docker.io, containerd and
/// etcd-server would otherwise start as services of the machine on a systemd host, and
/// netd runs them only inside test namespaces. A policy-rc.d that refuses every start
/// (Debian's documented switch, honoured by invoke-rc.d and deb-systemd-invoke) is in
/// place for the install only, unless the machine already has one of its own.
fn apt_install(pkgs: &[&str]) -> Result<()> {
    say(&format!("installing Debian packages: {}", pkgs.join(" ")));
    cmd_ok(Command::new("apt-get").arg("update").arg("-q"))?;
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask: no service starts while it installs\nexit 101\n",
        )
        .context("writing /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let installed = cmd_ok(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(pkgs)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null()),
    );
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    installed
}
