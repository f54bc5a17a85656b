//! netavark (Podman's network tool) as a peer: N port mappings, one per port (as N
//! `-p` would give), set up by netavark itself inside the host namespace.
use std::{process::Command, time::Duration};

use anyhow::{bail, Result};
use netd_lab::Lab;
use serde_json::Value;

use super::{
    fillers, flush_kernel_conntrack, published_ports, start_servers, timed, Datapath, Dp, Env,
    CTR_NET,
};

const NETAVARK: &str = "/usr/lib/podman/netavark";

pub struct Netavark {
    ctr: String,
    env: Env,
}

impl Netavark {
    pub fn new(lab: &mut Lab, env: &Env) -> Result<Netavark> {
        // netavark makes the bridge and the veth; the namespace is ours.
        Ok(Netavark {
            ctr: lab.add_namespace("c")?,
            env: env.clone(),
        })
    }

    /// Runs `netavark setup|teardown NETNS` with the config written by `publish`.
    fn run(&self, lab: &Lab, command: &str) -> Result<()> {
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.host, NETAVARK, "--config"])
            .arg(lab.dir.join("nv-config"))
            .args([command, &format!("/run/netns/{}", self.ctr)])
            .stdin(std::fs::File::open(lab.dir.join("nv.json"))?)
            .output()?;
        if !o.status.success() {
            bail!(
                "netavark {command}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Datapath for Netavark {
    fn dp(&self) -> Dp {
        Dp::Netavark
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        let hex = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
        let maps: Vec<Value> = published_ports(fillers(n))
            .iter()
            .map(|(p, proto)| serde_json::json!({"host_ip": "", "container_port": p, "host_port": p, "range": 1, "protocol": proto}))
            .collect();
        let conf = serde_json::json!({
            "container_id": hex('a'), "container_name": "srv", "port_mappings": maps,
            "networks": {"pnet": {"static_ips": [format!("{CTR_NET}.2")], "aliases": ["srv"], "interface_name": "eth0"}},
            "network_info": {"pnet": {"name": "pnet", "id": hex('b'), "driver": "bridge", "network_interface": "pnv0",
                "created": "2025-01-01T00:00:00Z", "subnets": [{"subnet": format!("{CTR_NET}.0/24"), "gateway": format!("{CTR_NET}.1")}],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
        });
        std::fs::write(lab.dir.join("nv.json"), serde_json::to_vec(&conf)?)?;
        std::fs::create_dir_all(lab.dir.join("nv-config"))?;
        let took = timed(|| self.run(lab, "setup"))?;
        start_servers(lab, &self.ctr.clone(), &self.env)?;
        Ok(took)
    }

    fn one_more(&mut self, _lab: &mut Lab) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn flush_conntrack(&self, lab: &Lab) {
        flush_kernel_conntrack(lab);
    }

    fn remove(&mut self, lab: &mut Lab) -> Result<Duration> {
        timed(|| self.run(lab, "teardown"))
    }
}
