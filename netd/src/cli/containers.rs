//! `netd run` and `netd create`, and commands applied to several containers.
use anyhow::bail;
use hyper::Method;
use serde_json::Value;

use crate::{client::Client, model};

use super::{args::*, format::*};
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

pub(super) async fn run_container(client: &Client, a: RunArgs, start: bool) -> anyhow::Result<i32> {
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
    let req = model::RunRequest {
        name: a.name.clone(),
        hostname: a.hostname.clone(),
        network: a.network.clone(),
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
        ..Default::default()
    };
    let c: ContainerInspect = client.send(Method::POST, "/netd/run", &req).await?;
    let id = c.id;
    if !start || a.detach || a.cmd.is_empty() {
        println!("{id}");
        return Ok(0);
    }
    // Attached: wait for the command to finish, then show its output.
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
