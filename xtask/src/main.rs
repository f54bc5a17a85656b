//! `cargo xtask run | test | lint | bench | dist | lab up|down`: prerequisites, build, orchestration.
//!
//! Every command installs what it is missing (nightly rust-src, bpf-linker 0.10.4, the
//! Debian packages the tests use, a bpffs mount) and says what it does. What it cannot
//! install (not root, no BTF, no bpf syscall) is one clear error.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};

mod dist;
mod prereq;
mod previous;

use prereq::prerequisites;
#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install prerequisites, build, and run `netd daemon ARGS` (as root).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Install prerequisites, then run the unit, BPF_PROG_TEST_RUN and end-to-end tests.
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// rustfmt --check and clippy -D warnings on the host crates.
    Lint,
    /// netd side by side with iptables (nft, legacy), nftables, dockerd (with and without
    /// its userland proxy), netavark, CNI portmap and plain routing.
    Bench {
        /// Arguments for the bench (--quick, --rounds R, --ports 1,100, --secs S, --only a,b,
        /// --peer-max-ports N, --replot FILE.json).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The Debian package (target/debian/netd.deb): netd, netd-cni, the systemd unit,
    /// /etc/netd/daemon.json, completions and man pages.
    Dist,
    /// A demo lab: a host namespace running netd and a client namespace on its uplink.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    Up,
    Down,
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { args } => run(&args),
        Cmd::Test { args } => test(&args),
        Cmd::Lint => lint(),
        Cmd::Dist => dist::dist(),
        Cmd::Bench { args } => bench(&args),
        Cmd::Lab { cmd: LabCmd::Up } => lab_up(),
        Cmd::Lab { cmd: LabCmd::Down } => lab_down(),
    };
    if let Err(e) = r {
        eprintln!("xtask: error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cmd_ok(c: &mut Command) -> Result<()> {
    let desc = format!("{c:?}");
    let st = c.status().with_context(|| format!("starting {desc}"))?;
    if !st.success() {
        bail!("{desc} failed ({st})");
    }
    Ok(())
}

fn output(prog: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(prog)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args).current_dir(root_dir());
    c
}

fn build_release() -> Result<PathBuf> {
    say("building netd (release)");
    cmd_ok(&mut cargo(&["build", "--release", "-p", "netd"]))?;
    Ok(root_dir().join("target/release/netd"))
}

fn run(args: &[String]) -> Result<()> {
    prerequisites()?;
    let bin = build_release()?;
    install_cni_plugin()?;
    say(&format!(
        "starting {} daemon {}",
        bin.display(),
        args.join(" ")
    ));
    use std::os::unix::process::CommandExt;
    let err = Command::new(&bin).arg("daemon").args(args).exec();
    Err(anyhow!("exec {}: {err}", bin.display()))
}

/// Where CNI runtimes (containerd, Podman, kubelet's) look for plugin binaries.
const CNI_BIN_DIR: &str = "/opt/cni/bin";

/// Builds netd-cni and installs it into /opt/cni/bin, so runtimes find the plugin a
/// conflist names with `"type": "netd-cni"`.
fn install_cni_plugin() -> Result<()> {
    say(&format!(
        "building netd-cni (release) and installing it into {CNI_BIN_DIR}"
    ));
    cmd_ok(&mut cargo(&["build", "--release", "-p", "netd-cni"]))?;
    let dir = Path::new(CNI_BIN_DIR);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {CNI_BIN_DIR}"))?;
    // Copied beside, then renamed: a runtime never executes a half-written plugin.
    let tmp = dir.join(".netd-cni.new");
    std::fs::copy(root_dir().join("target/release/netd-cni"), &tmp)
        .with_context(|| format!("copying netd-cni into {CNI_BIN_DIR}"))?;
    std::fs::rename(&tmp, dir.join("netd-cni"))
        .with_context(|| format!("installing {CNI_BIN_DIR}/netd-cni"))?;
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    prerequisites()?;
    // Before this build: both link target/debug/netd, and this one must be last.
    let previous = previous::build()?;
    say("building netd and the test tools");
    cmd_ok(&mut cargo(&[
        "build",
        "-p",
        "netd",
        "-p",
        "netd-cni",
        "-p",
        "netd-tests",
        "--bins",
    ]))?;
    let target = root_dir().join("target/debug");
    let deb = dist::package_for_tests(args)?;
    say("running unit, BPF_PROG_TEST_RUN and end-to-end tests");
    // Every test binary runs, so one failure does not hide the others' results.
    let mut c = cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "netd-ebpf",
        "--no-fail-fast",
        "--",
    ]);
    c.args(args)
        .env("NETD_BIN", target.join("netd"))
        .env("NETD_TESTER", target.join("netd-tester"))
        .env("NETD_CNI_BIN", target.join("netd-cni"))
        .env("NETD_PREVIOUS_BIN", &previous)
        .envs(deb.iter().map(|d| ("NETD_DEB", d)))
        // Each e2e test runs a daemon and several namespaces; two cores.
        .env("RUST_TEST_THREADS", "2")
        .stdout(Stdio::piped());
    let mut child = c.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count_of(rest, " passed");
                failed += count_of(rest, " failed");
            }
        }
    }
    let st = child.wait()?;
    // One closing line over all test binaries (the last binary cargo runs is a doc-test
    // run with nothing in it, which would otherwise be the summary a reader sees).
    println!("tests: {passed} passed, {failed} failed");
    if !st.success() {
        bail!("cargo test failed ({st})");
    }
    Ok(())
}

/// The number before `what` in a libtest summary ("ok. 9 passed; 0 failed; ...").
fn count_of(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn bench(args: &[String]) -> Result<()> {
    prerequisites()?;
    prereq::ensure_packages(prereq::BENCH_PACKAGES)?;
    say("building netd, the tester and the bench (release)");
    cmd_ok(&mut cargo(&[
        "build",
        "--release",
        "-p",
        "netd",
        "-p",
        "netd-tests",
        "-p",
        "netd-bench",
        "--bins",
    ]))?;
    let target = root_dir().join("target/release");
    let mut c = Command::new(target.join("netd-bench"));
    c.args(args)
        .current_dir(root_dir())
        .env("NETD_BIN", target.join("netd"))
        .env("NETD_TESTER", target.join("netd-tester"));
    cmd_ok(&mut c)
}

fn lint() -> Result<()> {
    // clippy compiles netd, whose build script builds the eBPF object.
    prerequisites()?;
    say("cargo fmt --check");
    cmd_ok(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
    say("cargo clippy -D warnings");
    cmd_ok(&mut cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "netd-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// The demo lab's name: its namespaces are `netd-lab-host` and `netd-lab-client`, its
/// containers' `netd-lab-c-NAME`. Fixed (not pid-tagged), because it outlives `lab up`.
const LAB: &str = "netd-lab";
const LAB_DIR: &str = "/tmp/netd-lab";

fn lab_options(bin: PathBuf) -> netd_lab::LabOptions {
    netd_lab::LabOptions {
        name: netd_lab::LabName::Fixed(LAB.into()),
        dir: Some(PathBuf::from(LAB_DIR)),
        netd: bin,
        // The daemon outlives `cargo xtask lab up` (and a Ctrl-C in its terminal).
        detach_daemon: true,
        ..Default::default()
    }
}

fn lab_up() -> Result<()> {
    prerequisites()?;
    let bin = build_release()?;
    let up = netd_lab::DEFAULT_UPLINK;
    say(&format!(
        "creating namespaces {LAB}-host and {LAB}-client with an uplink {} <-> {}",
        up.host_ip, up.client_ip
    ));
    // The socket programs (host access to published ports) go on a cgroup of the lab's
    // own, never on the machine's root cgroup.
    let mut lab = match netd_lab::Lab::create(lab_options(bin.clone())) {
        Err(e @ netd_lab::Error::Exists { .. }) => {
            bail!("{e}; cargo xtask lab down removes it")
        }
        r => r?,
    };
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "hello from a netd container\n")?;
    say(&format!(
        "starting netd daemon in {} (log: {LAB_DIR}/daemon.log)",
        lab.host
    ));
    lab.start_daemon()?;
    let (host, client) = (lab.host.clone(), lab.client.clone());
    let cg = lab.cgroup.clone().unwrap_or_default();
    lab.persist()?;
    println!(
        "The lab is up. Try:\n\n  export NETD_HOST={LAB_DIR}/run/netd.sock\n  {bin} run -d --name web -p 8080:80 -- busybox httpd -f -p 80 -h {LAB_DIR}/www\n  ip netns exec {client} curl http://{ip}:8080/\n\nFrom the lab's host namespace (inside the lab's cgroup, where netd's socket programs apply):\n  sh -c 'echo $$ > {cg}/cgroup.procs; exec ip netns exec {host} curl http://127.0.0.1:8080/'\n\nRemove it with: cargo xtask lab down",
        bin = bin.display(),
        ip = up.host_ip,
        cg = cg.display()
    );
    Ok(())
}

fn lab_down() -> Result<()> {
    let lab = netd_lab::Lab::reopen(LAB, lab_options(root_dir().join("target/release/netd")))?;
    match lab.daemon_pid() {
        Some(pid) => say(&format!(
            "removing the lab's containers, stopping its daemon (pid {pid}), deleting its namespaces"
        )),
        None => say("no daemon runs in the lab: deleting its namespaces and directories"),
    }
    lab.close()?;
    say("the lab is down");
    Ok(())
}
