//! The image every lab dockerd runs, without a registry: a root file system with
//! busybox-static and its applet links (as ../shared/PEERS.md shows), the binaries its
//! user asks for with the shared libraries they link, and a few files; as a tar for
//! [`super::Dockerd::import`].
use std::path::{Path, PathBuf};

use crate::{
    cmd::{run, which},
    Error, Result,
};

/// What goes into an image besides busybox.
#[derive(Clone, Copy, Debug, Default)]
pub struct Image<'a> {
    /// Binaries put in /bin under these names, with the shared libraries they link
    /// (at the paths the loader asks for).
    pub bins: &'a [(&'a str, &'a Path)],
    /// Files written into the root file system: (path below /, contents).
    pub files: &'a [(&'a str, &'a str)],
}

/// Builds the image's tar as DIR/image.tar, once: an existing one is reused (the
/// bench imports one tar into each of its dockerds).
pub fn build_image(dir: &Path, image: &Image) -> Result<PathBuf> {
    let tar = dir.join("image.tar");
    if tar.exists() {
        return Ok(tar);
    }
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "tmp", "www", "etc"] {
        create_dir(&root.join(d))?;
    }
    let busybox = which("busybox").ok_or_else(|| Error::NotInstalled {
        tool: "busybox".into(),
        needed_for: "the dockerd image (busybox-static)".into(),
    })?;
    copy(&busybox, &root.join("bin/busybox"))?;
    let list = run(&busybox.display().to_string(), &["--list"])?;
    for applet in list.split_whitespace().filter(|a| *a != "busybox") {
        // An applet already linked is fine as it is.
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    for (name, bin) in image.bins {
        copy(bin, &root.join("bin").join(name))?;
    }
    if !image.bins.is_empty() {
        let paths: Vec<String> = image
            .bins
            .iter()
            .map(|(_, p)| p.display().to_string())
            .collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let ldd = run("ldd", &refs)?;
        for lib in ldd
            .split_whitespace()
            .filter(|w| w.starts_with('/') && w.contains(".so"))
        {
            let dst = root.join(lib.trim_start_matches('/'));
            if let Some(parent) = dst.parent() {
                create_dir(parent)?;
            }
            // Copies what a symlink points at, under the name the loader asks for.
            copy(Path::new(lib), &dst)?;
        }
    }
    for (path, contents) in image.files {
        let dst = root.join(path.trim_start_matches('/'));
        if let Some(parent) = dst.parent() {
            create_dir(parent)?;
        }
        std::fs::write(&dst, contents).map_err(|e| Error::path("writing", &dst, e))?;
    }
    run(
        "tar",
        &[
            "-C",
            &root.display().to_string(),
            "-cf",
            &tar.display().to_string(),
            ".",
        ],
    )?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(tar)
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::path("creating", dir, e))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .map_err(|e| Error::path(&format!("copying to {} from", to.display()), from, e))
}
