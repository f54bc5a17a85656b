//! Builds the eBPF object (netd-ebpf) for bpfel-unknown-none with aya-build and leaves it
//! in $OUT_DIR/netd, where src/datapath.rs embeds it. `AYA_BUILD_SKIP=1` skips this (for
//! tooling that only needs the host code to type-check).
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    git_commit();
    let meta =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["locate-project", "--workspace", "--message-format", "plain"])
            .output()
            .context("cargo locate-project")?;
    let ws = String::from_utf8(meta.stdout)?;
    let root = std::path::Path::new(ws.trim())
        .parent()
        .ok_or_else(|| anyhow!("workspace root"))?
        .join("netd-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let pkg = aya_build::Package {
        name: "netd-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::default())
}

/// The commit this build is of (`NETD_GIT_COMMIT`, shown by `netd version`), or
/// "unknown" outside a git checkout. Cargo reruns this when HEAD moves.
fn git_commit() {
    let git = |args: &[&str]| -> Option<String> {
        let o = std::process::Command::new("git").args(args).output().ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=NETD_GIT_COMMIT={commit}");
    // A worktree's HEAD is in its own git dir, the branches in the common one; only
    // files that exist are named (cargo reruns every build for a missing one).
    let dirs = git(&["rev-parse", "--absolute-git-dir"]).zip(git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-common-dir",
    ]));
    if let Some((own, common)) = dirs {
        let (own, common) = (std::path::Path::new(&own), std::path::Path::new(&common));
        let mut watch = vec![own.join("HEAD"), common.join("packed-refs")];
        if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(head));
        }
        for f in watch.iter().filter(|f| f.exists()) {
            println!("cargo:rerun-if-changed={}", f.display());
        }
    }
}
