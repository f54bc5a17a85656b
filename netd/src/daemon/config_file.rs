//! `netd daemon --config-file PATH`: every daemon flag as a JSON key, dockerd's
//! daemon.json style (`{"icc": false, "metrics-addr": "127.0.0.1:9323"}`).
//!
//! A key is a flag's long name; its value is a JSON boolean for a switch, a number for a
//! count, a string otherwise, and an object for `cluster-store-opts` (dockerd's plural
//! name for `--cluster-store-opt`). A setting comes from the command line, else the
//! file, else its default; a setting given in both places is refused, as dockerd refuses
//! it, and so is a key netd does not know or a value of the wrong type: one line naming
//! the key, before anything is touched.
//!
//! The file's values go through the same clap definitions as the flags (a copy of the
//! daemon's command without defaults, so only what the file sets is applied), so each
//! key is checked exactly as its flag is.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context};
use clap::{builder::ValueRange, ArgAction, Args, Command, FromArgMatches};
use serde_json::{Map, Value};

use super::DaemonArgs;

/// Where the file is read from when `--config-file` is not given (if it exists).
pub const DEFAULT_PATH: &str = "/etc/netd/daemon.json";

/// Flags that only make sense on the command line.
const NOT_IN_FILE: &[&str] = &["config-file", "validate", "cleanup", "replace"];

/// The file's key for a flag whose value may be given several times (dockerd's plural).
const PLURALS: &[(&str, &str)] = &[("cluster-store-opts", "cluster-store-opt")];

/// The config file a daemon was started with, for reloading.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    pub keys: Map<String, Value>,
}

/// What a value in the file must be, from its flag's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    Text,
    /// `cluster-store-opts`: an object of strings, one `--flag=KEY=VALUE` each.
    Object,
}

fn kind_of(arg: &clap::Arg) -> Kind {
    use std::any::TypeId;
    if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
        return Kind::Bool;
    }
    if matches!(arg.get_action(), ArgAction::Append) {
        return Kind::Object;
    }
    let t = arg.get_value_parser().type_id();
    if t == TypeId::of::<bool>() {
        Kind::Bool
    } else if [
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<usize>(),
    ]
    .into_iter()
    .any(|n| t == n)
    {
        Kind::Number
    } else {
        Kind::Text
    }
}

/// The daemon's flags as the file applies them: no defaults (only what the file sets
/// reaches the arguments) and switches that take `true`/`false`.
fn file_command() -> Command {
    DaemonArgs::augment_args(Command::new("daemon.json")).mut_args(|a| {
        let a = a.default_value(None).default_missing_value(None);
        if matches!(a.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            a.action(ArgAction::Set).num_args(ValueRange::SINGLE)
        } else {
            a
        }
    })
}

/// Records which flags `m` (the daemon subcommand's matches) got from the command line.
pub fn note_command_line(args: &mut DaemonArgs, m: &clap::ArgMatches) {
    for id in m.ids() {
        let id = id.as_str();
        if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let raw = m
                .get_raw(id)
                .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            args.from_command_line.insert(id.to_string(), raw);
        }
    }
}

/// The file `--config-file` names, or the default one if it exists.
fn path_of(args: &DaemonArgs) -> Option<PathBuf> {
    args.config_file.clone().or_else(|| {
        let p = Path::new(DEFAULT_PATH);
        p.exists().then(|| p.to_path_buf())
    })
}

fn read(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("{}: not a JSON object", path.display()),
        Err(e) => bail!("{}: not valid JSON: {e}", path.display()),
    }
}

/// Applies the config file (if any) to the arguments of the command line.
pub fn apply(mut args: DaemonArgs) -> anyhow::Result<(DaemonArgs, ConfigFile)> {
    let Some(path) = path_of(&args) else {
        return Ok((args, ConfigFile::default()));
    };
    let keys = read(&path)?;
    settle(&mut args, &path, &keys)?;
    Ok((
        args,
        ConfigFile {
            path: Some(path),
            keys,
        },
    ))
}

/// Checks `keys` against the flags and the command line, and writes them into `args`.
fn settle(args: &mut DaemonArgs, path: &Path, keys: &Map<String, Value>) -> anyhow::Result<()> {
    let cmd = file_command();
    let file = path.display();
    let mut tokens = vec!["daemon.json".to_string()];
    let mut conflicts = Vec::new();
    for (key, value) in keys {
        let flag = PLURALS
            .iter()
            .find(|(plural, _)| plural == key)
            .map_or(key.as_str(), |(_, flag)| flag);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag) && !NOT_IN_FILE.contains(&flag))
            .ok_or_else(|| {
                anyhow!(
                    "{file}: the following directives don't match any configuration option: {key}"
                )
            })?;
        let id = arg.get_id().as_str();
        let mine =
            key_tokens(key, flag, kind_of(arg), value).map_err(|e| anyhow!("{file}: {e}"))?;
        // Each key alone first, so a bad value is reported under its own name.
        check_alone(&cmd, &mine).map_err(|e| anyhow!("{file}: {key}: {e}"))?;
        if let Some(given) = args.from_command_line.get(id) {
            conflicts.push(format!(
                "{key}: (from flag: {}, from file: {value})",
                if given.is_empty() {
                    "true".to_string()
                } else {
                    given.join(",")
                }
            ));
        }
        tokens.extend(mine);
    }
    if !conflicts.is_empty() {
        bail!(
            "{file}: the following directives are specified both as a flag and in the configuration file: {}",
            conflicts.join(", ")
        );
    }
    let m = cmd
        .try_get_matches_from(&tokens)
        .map_err(|e| anyhow!("{file}: {}", first_line(&e)))?;
    args.update_from_arg_matches(&m)
        .map_err(|e| anyhow!("{file}: {}", first_line(&e)))?;
    Ok(())
}

fn check_alone(cmd: &Command, tokens: &[String]) -> Result<(), String> {
    let argv = std::iter::once("daemon.json".to_string()).chain(tokens.iter().cloned());
    cmd.clone()
        .try_get_matches_from(argv)
        .map(|_| ())
        .map_err(|e| first_line(&e))
}

/// clap's first line without its `error: ` lead.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or("invalid value");
    line.trim_start_matches("error: ").to_string()
}

/// The command-line tokens a key stands for, or why its value has the wrong type.
fn key_tokens(key: &str, flag: &str, kind: Kind, value: &Value) -> Result<Vec<String>, String> {
    let wrong = |want: &str| format!("{key} must be {want}, not {value}");
    let one = |v: String| Ok(vec![format!("--{flag}={v}")]);
    match (kind, value) {
        (Kind::Bool, Value::Bool(b)) => one(b.to_string()),
        (Kind::Bool, _) => Err(wrong("true or false")),
        (Kind::Number, Value::Number(n)) if n.is_u64() => one(n.to_string()),
        (Kind::Number, _) => Err(wrong("a non-negative whole number")),
        (Kind::Text, Value::String(s)) => one(s.clone()),
        (Kind::Text, _) => Err(wrong("a string")),
        (Kind::Object, Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(format!("--{flag}={k}={s}")),
                _ => Err(format!("{key}.{k} must be a string, not {v}")),
            })
            .collect(),
        (Kind::Object, _) => Err(wrong("an object of strings")),
    }
}

/// What a reload of the file changes: the new log level, if it changed, and the keys
/// that changed but apply only at the next start.
#[derive(Debug, Default, PartialEq)]
pub struct Reload {
    pub log_level: Option<log::LevelFilter>,
    pub at_next_start: Vec<String>,
}

impl ConfigFile {
    /// Reads the file again (SIGHUP). An error leaves the running configuration as is.
    pub fn reload(&mut self, cli: &DaemonArgs) -> anyhow::Result<Reload> {
        let Some(path) = self.path.clone() else {
            bail!("no config file to reload (start with --config-file PATH, or create {DEFAULT_PATH})");
        };
        let keys = read(&path)?;
        let mut fresh = cli.clone();
        settle(&mut fresh, &path, &keys)?;
        let mut out = Reload::default();
        let changed: BTreeMap<&String, ()> = keys
            .iter()
            .filter(|(k, v)| self.keys.get(*k) != Some(v))
            .chain(self.keys.iter().filter(|(k, _)| !keys.contains_key(*k)))
            .map(|(k, _)| (k, ()))
            .collect();
        for key in changed.keys() {
            if key.as_str() == "log-level" {
                out.log_level = Some(fresh.log_level);
            } else {
                out.at_next_start.push(key.to_string());
            }
        }
        self.keys = keys;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
