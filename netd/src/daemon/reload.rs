//! SIGHUP: the config file is read again. What can change while the daemon runs (the
//! log level) changes; every other changed key is named in the log as applying at the
//! next start; a file that does not check out changes nothing and says why.
use log::{error, info, warn};
use tokio::signal::unix::{signal, SignalKind};

use super::{config_file::ConfigFile, DaemonArgs};

pub struct Reloader {
    config: ConfigFile,
    /// The command line's arguments alone: the file's keys are applied to these again.
    cli: DaemonArgs,
}

impl Reloader {
    pub fn new(config: ConfigFile, cli: DaemonArgs) -> Reloader {
        Reloader { config, cli }
    }

    /// Handles SIGHUP from now on (the handler is installed before this returns, so from
    /// then on a SIGHUP reloads instead of ending the daemon, its default action).
    pub fn spawn(mut self) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                crate::notify::reloading();
                self.reload();
                crate::notify::ready();
            }
        });
        Ok(())
    }

    fn reload(&mut self) {
        let path = match &self.config.path {
            Some(p) => p.display().to_string(),
            None => {
                warn!("SIGHUP: no config file to read (start with --config-file PATH)");
                return;
            }
        };
        match self.config.reload(&self.cli) {
            Ok(r) => {
                if let Some(level) = r.log_level {
                    crate::logging::set_level(level);
                    info!("SIGHUP: {path}: log level {level}");
                }
                for key in &r.at_next_start {
                    warn!("SIGHUP: {path}: {key} changed; it cannot change while netd runs and applies at the next start");
                }
                if r.log_level.is_none() && r.at_next_start.is_empty() {
                    info!("SIGHUP: {path}: nothing changed");
                }
            }
            Err(e) => error!("SIGHUP: {e:#}; the running configuration stays"),
        }
    }
}
