//! Where the daemon lives: the namespace it enters and its run directory.
//!
//! Who may talk to the daemon: anyone who can write to the API socket can start
//! processes as root (`netd run -- CMD`), so the run directory is 0750 root:GROUP (`-G`,
//! as dockerd's --group; root only without it) and the socket in it 0660 (see
//! crate::server), whatever the umask.
use std::os::unix::fs::PermissionsExt;

use anyhow::{anyhow, Context};
use nix::unistd::{chown, Gid, Group};

use super::DaemonArgs;
use crate::netns;

/// Enters `--netns` before the runtime exists, so every thread lives in it.
pub fn enter_netns(args: &DaemonArgs) -> anyhow::Result<()> {
    // The first thing the daemon does: flags that contradict each other stop it here.
    args.check()?;
    if let Some(ns) = &args.netns {
        let f = netns::open(ns)?;
        netns::enter(&f)?;
    }
    Ok(())
}

/// The group of `-G`, by name or number.
pub fn group_id(args: &DaemonArgs) -> anyhow::Result<Option<Gid>> {
    let Some(name) = &args.group else {
        return Ok(None);
    };
    if let Ok(n) = name.parse::<u32>() {
        return Ok(Some(Gid::from_raw(n)));
    }
    let g = Group::from_name(name)
        .with_context(|| format!("looking up group {name}"))?
        .ok_or_else(|| anyhow!("group {name} does not exist (-G/--group)"))?;
    Ok(Some(g.gid))
}

/// Makes the run directory (socket, logs) closed to others: 0750 root:GROUP.
pub(super) fn prepare_run_dir(args: &DaemonArgs) -> anyhow::Result<()> {
    let dir = &args.run_dir;
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let gid = group_id(args)?;
    chown(dir, None, gid).with_context(|| format!("chown {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("chmod {}", dir.display()))?;
    std::fs::set_permissions(dir.join("logs"), std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}
