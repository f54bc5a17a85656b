//! The daemon's log: one line per event on stderr, at `--log-level`.
//!
//! Under systemd (stderr is the journal's stream, which systemd announces in
//! `JOURNAL_STREAM`) each line starts with its syslog priority (`<6>` for info, sd-daemon's
//! convention) and carries no timestamp of its own: journald records the time and
//! `journalctl -p warning` filters by level. Elsewhere a line is
//! `[TIME LEVEL module] message`. A message never spans lines: its newlines become spaces.
//!
//! netd's own modules log at the chosen level; libraries (hyper, tonic, ...) only their
//! warnings and errors, so `--log-level debug` shows what netd does, not HTTP/2 frames.
//! `RUST_LOG` (env_logger's per-module syntax) adds filters on top, for developers.
use std::io::Write;

use log::{Level, LevelFilter};

/// dockerd's `--log-level` words; `fatal` logs errors (netd stops on a fatal one).
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s {
        "debug" => Ok(LevelFilter::Debug),
        "info" => Ok(LevelFilter::Info),
        "warn" => Ok(LevelFilter::Warn),
        "error" | "fatal" => Ok(LevelFilter::Error),
        _ => Err(format!(
            "{s:?} is not a log level (debug, info, warn, error, fatal)"
        )),
    }
}

/// The syslog priority of a level, as journald reads it from a `<N>` prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Whether stderr is the journal's stream: systemd sets JOURNAL_STREAM to its
/// `DEVICE:INODE`, which must be stderr's own (a child may inherit the variable with a
/// different stderr).
fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(st) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    want.to_string_lossy() == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Installs the logger; call once, before any thread starts.
pub fn init(level: LevelFilter) {
    let journal = stderr_is_journal();
    let mut b = env_logger::Builder::new();
    b.filter_level(LevelFilter::Warn)
        .filter_module("netd", LevelFilter::Trace);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.format(move |buf, r| {
        let msg = r.args().to_string().replace('\n', " ");
        if journal {
            writeln!(buf, "<{}>{}: {msg}", syslog_priority(r.level()), r.target())
        } else {
            writeln!(
                buf,
                "[{} {:<5} {}] {msg}",
                buf.timestamp(),
                r.level(),
                r.target()
            )
        }
    });
    b.init();
    set_level(level);
}

/// Changes the level of everything logged from now on (SIGHUP).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_levels() {
        assert_eq!(parse_level("debug"), Ok(LevelFilter::Debug));
        assert_eq!(parse_level("fatal"), Ok(LevelFilter::Error));
        assert!(parse_level("verbose").unwrap_err().contains("verbose"));
        assert_eq!(syslog_priority(Level::Warn), 4);
    }
}
