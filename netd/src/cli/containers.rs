//! `netd run` and `netd create`, and commands applied to several containers.
use anyhow::{bail, Context};
use hyper::Method;
use serde_json::Value;

use crate::{client::Client, model};

use super::{
    args::*,
    attach::{self, Attach, Outcome},
    format::*,
};
use crate::api::types::ContainerInspect;

/// Runs `op` for each name, printing the name on success and one error line per failure
/// (Docker's behaviour for rm/start/stop of several containers).
pub(super) async fn each<F, Fut>(names: &[String], op: F) -> anyhow::Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let mut failed = false;
    for n in names {
        match op(n.clone()).await {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {}", one_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `each`, with the operations under way at once (stop and restart wait for each
/// process up to its timeout, as the docker CLI's do in parallel); the results in
/// the order of `names`.
pub(super) async fn each_at_once<F, Fut>(names: &[String], op: F) -> anyhow::Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let results = futures::future::join_all(names.iter().map(|n| op(n.clone()))).await;
    let mut failed = false;
    for (n, r) in names.iter().zip(results) {
        match r {
            Ok(_) => println!("{n}"),
            Err(e) => {
                eprintln!("Error: {}", one_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

pub(super) async fn run_container(client: &Client, a: RunArgs, start: bool) -> anyhow::Result<i32> {
    let req = run_request(&a, start)?;
    let interactive = (a.interactive || a.tty) && !a.detach && start;
    if interactive {
        // Docker's order: created, attached, started: the first output is not missed.
        let req = model::RunRequest {
            start: false,
            attached: true,
            ..req
        };
        let c: ContainerInspect = client.send(Method::POST, "/netd/run", &req).await?;
        return attached_run(client, c.id, &a).await;
    }
    let c: ContainerInspect = client.send(Method::POST, "/netd/run", &req).await?;
    let id = c.id;
    if !start || a.detach || a.cmd.is_empty() {
        println!("{id}");
        return Ok(0);
    }
    // In the foreground without -i or -t: wait for the command to finish, then show
    // its output.
    loop {
        let c: ContainerInspect = match client.get(&format!("/containers/{id}/json")).await {
            Ok(c) => c,
            // --rm removed it already: the output went with it.
            Err(_) if a.rm => return Ok(0),
            Err(e) => return Err(e),
        };
        if !c.state.running {
            match client
                .call(Method::GET, &format!("/containers/{id}/logs"), None)
                .await
            {
                Ok(logs) => print!("{}", s(&logs)),
                // --rm may have removed it (and its log) in the meantime.
                Err(_) if a.rm => {}
                Err(e) => return Err(e),
            }
            return Ok(c.state.exit_code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The daemon's request for `run`/`create` with `a`'s flags, checked as far as the CLI
/// can (ports, names, keys); the daemon checks the rest.
fn run_request(a: &RunArgs, start: bool) -> anyhow::Result<model::RunRequest> {
    if let Some(n) = &a.name {
        model::validate_name(n)?;
    }
    let mut ports = Vec::new();
    for spec in &a.publish {
        ports.extend(model::parse_publish(spec)?);
    }
    let mut exposed = Vec::new();
    for spec in &a.expose {
        exposed.extend(model::parse_expose(spec)?);
    }
    if a.publish_all {
        // Docker: -P publishes each exposed port not already published.
        for &(port, proto) in &exposed {
            if !ports
                .iter()
                .any(|m| m.container_port == port && m.proto == proto)
            {
                ports.push(model::PortSpec {
                    host_ip: None,
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    if a.rm && a.detach && a.cmd.is_empty() {
        bail!("--rm needs a command: a sandbox without one never exits");
    }
    model::parse_detach_keys(&a.detach_keys)?;
    if (a.interactive || a.tty) && a.cmd.is_empty() {
        bail!("-i and -t need a command: a sandbox without one has no streams");
    }
    let networks = a
        .network
        .iter()
        .map(|n| super::endpoint::parse_network(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(model::RunRequest {
        name: a.name.clone(),
        hostname: a.hostname.clone(),
        network: networks.first().map(|e| e.network.clone()),
        ip: a.ip,
        ip6: a.ip6,
        aliases: a.aliases.clone(),
        ports,
        cmd: a.cmd.clone(),
        start,
        auto_remove: a.rm,
        labels: key_values("label", &a.label, true)?,
        exposed,
        dns: a.dns.clone(),
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_options.clone(),
        links: a.link.clone(),
        link_local_ips: a.link_local_ip.clone(),
        tty: a.tty,
        open_stdin: a.interactive,
        attached: false,
        mac_address: a.mac_address.clone(),
        networks,
        sysctls: key_values("sysctl", &a.sysctl, false)?,
    })
}

/// `run -i`/`-t` in the foreground: attached before the start, this terminal's until
/// the command exits (its exit code is ours) or the detach keys leave it running.
async fn attached_run(client: &Client, id: String, a: &RunArgs) -> anyhow::Result<i32> {
    let at = Attach {
        id: id.clone(),
        tty: a.tty,
        stdin: a.interactive,
        detach_keys: model::parse_detach_keys(&a.detach_keys)?,
        detach_spec: a.detach_keys.clone(),
    };
    let conn = attach::open(client, &at).await?;
    let since = attach::now();
    client
        .call(Method::POST, &format!("/containers/{id}/start"), None)
        .await?;
    match attach::session(client, &at, conn).await? {
        Outcome::Detached => Ok(0),
        // From the event history: there even after --rm removed the container.
        Outcome::Ended => attach::exit_code(client, &id, since).await,
    }
}

/// `netd attach NAME`: this terminal to a container run with -i or -t.
pub(super) async fn attach(
    client: &Client,
    name: &str,
    stdin: bool,
    detach_keys: &str,
) -> anyhow::Result<i32> {
    let c: ContainerInspect = client.get(&format!("/containers/{name}/json")).await?;
    if !c.state.running {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let at = Attach {
        id: c.id.clone(),
        tty: c.config.tty,
        stdin: stdin && c.config.open_stdin,
        detach_keys: model::parse_detach_keys(detach_keys)?,
        detach_spec: detach_keys.to_string(),
    };
    let since = attach::now();
    let conn = attach::open(client, &at).await?;
    match attach::session(client, &at, conn).await? {
        Outcome::Detached => Ok(0),
        Outcome::Ended => attach::exit_code(client, &c.id, since).await,
    }
}

/// `netd exec`: this process enters the container's namespaces and becomes the
/// command, so it has the caller's terminal, stdin and exit code.
pub(super) async fn exec_here(client: &Client, a: ExecArgs) -> anyhow::Result<()> {
    let c: ContainerInspect = client.get(&format!("/containers/{}/json", a.name)).await?;
    let user = match &a.user {
        Some(u) => crate::process::resolve_user(u).map_err(|e| anyhow::anyhow!(e))?,
        None => None,
    };
    let mut env = Vec::new();
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("invalid --env {e:?}: KEY=VALUE"))?;
        env.push((k.to_string(), v.to_string()));
    }
    let ns = &c.netns;
    let f = std::fs::File::open(ns).with_context(|| format!("opening {ns}"))?;
    // The CLI runs a current-thread runtime: this thread is the process.
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the container's namespace")?;
    // Its resolv.conf and hosts, as `ip netns exec` shows them.
    crate::process::enter_binds(&crate::process::etc_binds(ns))
        .context("bind-mounting the container's /etc/netns files")?;
    // With --hostname, the command runs in a UTS namespace of its own: join the
    // process's (without one, that is the host's, which changes nothing).
    if c.state.pid != 0 {
        if let Ok(uts) = std::fs::File::open(format!("/proc/{}/ns/uts", c.state.pid)) {
            let _ = nix::sched::setns(uts, nix::sched::CloneFlags::CLONE_NEWUTS);
        }
    }
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&a.cmd[0]);
    cmd.args(&a.cmd[1..]).envs(env);
    if let Some(dir) = &a.workdir {
        cmd.current_dir(dir);
    }
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    let err = cmd.exec();
    bail!("running {:?}: {err}", a.cmd[0]);
}
