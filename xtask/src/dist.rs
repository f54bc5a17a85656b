//! `cargo xtask dist`: the Debian package (cargo-deb), with the release build of netd and
//! netd-cni, the shell completions and man pages generated from netd's own CLI, the
//! systemd unit, the default /etc/netd/daemon.json, Docker's plugin spec and an example
//! CNI conflist (see [package.metadata.deb] in netd/Cargo.toml).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{cargo, cmd_ok, output, root_dir, say};

/// cargo-deb, pinned. Built without its bundled LZMA (the system's xz compresses), which
/// keeps its build under a minute.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// How the package is built.
pub struct Dist {
    /// The debug build (the tests' package), or the release build (`cargo xtask dist`).
    pub debug: bool,
}

impl Dist {
    fn profile_dir(&self) -> PathBuf {
        root_dir()
            .join("target")
            .join(if self.debug { "debug" } else { "release" })
    }

    /// Builds the package from binaries already built; returns the .deb's path.
    pub fn package(&self) -> Result<PathBuf> {
        ensure_cargo_deb()?;
        let dir = self.profile_dir();
        generate_assets(&dir.join("netd"), &dir.join("netd-deb"))?;
        let out = root_dir().join("target/debian");
        std::fs::create_dir_all(&out)?;
        let deb = out.join(if self.debug {
            "netd-test.deb"
        } else {
            "netd.deb"
        });
        say(&format!("cargo deb -> {}", deb.display()));
        let mut c = cargo(&["deb", "-p", "netd", "--no-build", "--strip", "--output"]);
        c.arg(&deb);
        if self.debug {
            // A package of the debug build, for the install test only: cargo-deb warns
            // that it is no release.
            c.args(["--profile", "dev", "--fast"]);
        }
        cmd_ok(&mut c)?;
        Ok(deb)
    }
}

/// `cargo xtask dist`: the release build and its package.
pub fn dist() -> Result<()> {
    crate::prereq::prerequisites()?;
    say("building netd and netd-cni (release)");
    cmd_ok(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "netd",
        "-p",
        "netd-cni",
    ]))?;
    // cargo-deb prints the package's path.
    Dist { debug: false }.package().map(|_| ())
}

/// cargo-deb at the pinned version, installed with `cargo install --locked` if missing.
fn ensure_cargo_deb() -> Result<()> {
    let have = output("cargo", &["deb", "--version"]).unwrap_or_default();
    if have.contains(CARGO_DEB_VERSION) {
        return Ok(());
    }
    say(&format!(
        "installing cargo-deb {CARGO_DEB_VERSION} (under a minute)"
    ));
    cmd_ok(Command::new("cargo").args([
        "install",
        &format!("cargo-deb@{CARGO_DEB_VERSION}"),
        "--locked",
        "--no-default-features",
    ]))
}

/// Completions (bash, zsh, fish) and gzipped man pages, from the built `netd`.
fn generate_assets(netd: &Path, dir: &Path) -> Result<()> {
    let completions = dir.join("completions");
    let man = dir.join("man");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [("bash", "netd"), ("zsh", "_netd"), ("fish", "netd.fish")] {
        let o = Command::new(netd)
            .args(["completion", shell])
            .output()
            .with_context(|| format!("running {}", netd.display()))?;
        if !o.status.success() {
            bail!("netd completion {shell} failed");
        }
        std::fs::write(completions.join(file), o.stdout)?;
    }
    cmd_ok(Command::new(netd).arg("man-pages").arg(&man))?;
    // Debian installs man pages gzipped (-n: no name or time inside, reproducible).
    let pages: Vec<PathBuf> = std::fs::read_dir(&man)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    cmd_ok(Command::new("gzip").arg("-9nf").args(&pages))
}

/// The install test's name: xtask builds its package only when a run includes it.
const PACKAGE_TEST: &str = "the_deb_installs_verifies_and_purges_cleanly";

/// For `cargo xtask test ARGS`: the package of the debug build, if the run's filters
/// (libtest's: a test runs if its name contains one of them) select the install test.
pub fn package_for_tests(args: &[String]) -> Result<Option<PathBuf>> {
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| PACKAGE_TEST.contains(f.as_str())) {
        return Ok(None);
    }
    say("building the package of the debug build for the install test");
    Dist { debug: true }.package().map(Some)
}
