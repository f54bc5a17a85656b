//! What the grammar documents about itself: shell completions (`netd completion SHELL`,
//! as `docker completion`) and man pages (`netd man-pages DIR`, hidden: packaging
//! writes them into the .deb).
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Prints the completion script of `shell` for netd.
pub fn completion(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "netd", &mut std::io::stdout());
}

/// Writes netd.1 and a page per subcommand (netd-daemon.1, netd-network-create.1, ...)
/// into `dir`.
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}
