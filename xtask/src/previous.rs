//! The previous release, built from its commit for the upgrade tests: what users run
//! today, started first, then replaced by this build on the same directories.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context, Result};

use crate::{cargo, cmd_ok, root_dir, say};

/// The version and commit recorded in xtask/previous-release.txt.
pub fn recorded() -> Result<(String, String)> {
    let path = root_dir().join("xtask/previous-release.txt");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .ok_or_else(|| anyhow!("{}: no release recorded", path.display()))?;
    let mut f = line.split_whitespace();
    match (f.next(), f.next()) {
        (Some(v), Some(c)) if c.len() == 40 => Ok((v.to_string(), c.to_string())),
        _ => bail!("{}: want `VERSION COMMIT` (40 hex digits)", path.display()),
    }
}

/// The previous release's netd binary, built once per commit and kept under
/// target/previous-release/. Built in the workspace's own target directory, so the
/// dependencies both releases share are compiled once; its binary is copied out before
/// this build links its own into the same place.
pub fn build() -> Result<PathBuf> {
    let (version, commit) = recorded()?;
    let dir = root_dir().join("target/previous-release").join(&commit);
    let bin = dir.join("netd");
    if bin.exists() {
        return Ok(bin);
    }
    say(&format!(
        "building the previous release, netd {version} ({}), for the upgrade tests",
        &commit[..12]
    ));
    let src = dir.join("src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    extract(&commit, &src)?;
    cmd_ok(
        cargo(&["build", "-p", "netd", "--bins"])
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", root_dir().join("target")),
    )
    .with_context(|| format!("building netd {version} from {commit}"))?;
    std::fs::copy(root_dir().join("target/debug/netd"), &bin)
        .with_context(|| format!("keeping {}", bin.display()))?;
    std::fs::remove_dir_all(&src)?;
    Ok(bin)
}

/// The tree of `commit`, from this clone's history.
fn extract(commit: &str, into: &Path) -> Result<()> {
    let known = Command::new("git")
        .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
        .current_dir(root_dir())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !known {
        bail!("commit {commit} (the previous release) is not in this clone: the upgrade tests need the history (a clone that is not shallow)");
    }
    let mut archive = Command::new("git")
        .args(["archive", "--format=tar", commit])
        .current_dir(root_dir())
        .stdout(Stdio::piped())
        .spawn()
        .context("git archive")?;
    let stdout = archive
        .stdout
        .take()
        .ok_or_else(|| anyhow!("git archive"))?;
    cmd_ok(
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(into)
            .stdin(stdout),
    )?;
    if !archive.wait()?.success() {
        bail!("git archive {commit} failed");
    }
    Ok(())
}
