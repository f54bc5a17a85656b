//! Builds the eBPF object (netd-ebpf) for bpfel-unknown-none with aya-build and leaves it
//! in $OUT_DIR/netd, where src/datapath.rs embeds it. `AYA_BUILD_SKIP=1` skips this (for
//! tooling that only needs the host code to type-check).
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
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
