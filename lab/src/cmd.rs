//! Running commands, in the caller's namespace or inside a named one.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
};

use crate::{Error, Result};

fn describe(cmd: &str, args: &[&str]) -> String {
    if args.is_empty() {
        cmd.to_string()
    } else {
        format!("{cmd} {}", args.join(" "))
    }
}

/// Runs `cmd args` and returns its output, whatever its exit status.
pub fn output(cmd: &str, args: &[&str]) -> Result<Output> {
    Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("starting {cmd}"), e))
}

/// Runs `cmd args`; its stdout if it succeeds, an error carrying its stderr if not.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    checked(&describe(cmd, args), output(cmd, args)?)
}

/// Stdout of a finished command, or an error named `desc` with its stderr.
pub fn checked(desc: &str, o: Output) -> Result<String> {
    if !o.status.success() {
        let stderr = String::from_utf8_lossy(&o.stderr).trim().to_string();
        return Err(Error::Command {
            cmd: desc.to_string(),
            detail: if stderr.is_empty() {
                format!("exited with {}", o.status)
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Where `cmd` is on PATH, if it is.
pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// `ip netns exec NS` in front of `args`, with `taskset -c CPU` when a CPU is given, so
/// that load generators and servers keep to their own core.
fn ns_argv<'a>(ns: &'a str, cpu: &'a Option<String>, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = vec!["netns", "exec", ns];
    if let Some(cpu) = cpu {
        full.extend_from_slice(&["taskset", "-c", cpu.as_str()]);
    }
    full.extend_from_slice(args);
    full
}

/// Runs `args` inside namespace `ns` (on `cpu` if given); stdout, or an error.
pub fn in_ns(ns: &str, cpu: Option<usize>, args: &[&str]) -> Result<String> {
    let cpu = cpu.map(|c| c.to_string());
    run("ip", &ns_argv(ns, &cpu, args))
}

/// Runs `args` inside namespace `ns` and returns its output whatever the status.
pub fn in_ns_output(ns: &str, args: &[&str]) -> Result<Output> {
    output("ip", &ns_argv(ns, &None, args))
}

/// Starts `args` inside namespace `ns` (on `cpu` if given), stdio closed.
pub fn spawn_in_ns(ns: &str, cpu: Option<usize>, args: &[&str]) -> Result<Child> {
    let cpu = cpu.map(|c| c.to_string());
    Command::new("ip")
        .args(ns_argv(ns, &cpu, args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            let what = args.first().copied().unwrap_or("a command");
            Error::io(format!("starting {what} in {ns}"), e)
        })
}
