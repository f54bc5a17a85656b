//! The CNI bridge and portmap plugins as a peer: N port mappings in one portmap call,
//! run the way a CNI runtime runs them, inside the host namespace.
use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Result};
use netd_lab::Lab;
use serde_json::Value;

use super::{
    fillers, flush_kernel_conntrack, published_ports, start_servers, timed, Datapath, Dp, Env,
    CTR_NET,
};

pub struct Cni {
    ctr: String,
    env: Env,
    /// The portmap configuration with the bridge plugin's result, which DEL takes back.
    portmap: Option<Value>,
}

impl Cni {
    pub fn new(lab: &mut Lab, env: &Env) -> Result<Cni> {
        // The bridge plugin makes the bridge and the veth; the namespace is ours.
        Ok(Cni {
            ctr: lab.add_namespace("c")?,
            env: env.clone(),
            portmap: None,
        })
    }

    fn bridge_conf(lab: &Lab) -> Value {
        let data = lab.dir.join("cni-ipam");
        serde_json::json!({"cniVersion": "1.0.0", "name": "pcni", "type": "bridge", "bridge": "pcni0",
            "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "subnet": format!("{CTR_NET}.0/24"), "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data}})
    }

    /// Runs CNI plugin `name` with `command` (ADD or DEL) in the host namespace.
    fn plugin(&self, lab: &Lab, command: &str, name: &str, conf: &Value) -> Result<Value> {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &lab.host, &format!("/usr/lib/cni/{name}")])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "ndbsrv")
            .env("CNI_NETNS", format!("/run/netns/{}", self.ctr))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut i) = c.stdin.take() {
            i.write_all(&serde_json::to_vec(conf)?)?;
        }
        let o = c.wait_with_output()?;
        if !o.status.success() {
            bail!(
                "CNI {command} {name}: {} {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

impl Datapath for Cni {
    fn dp(&self) -> Dp {
        Dp::Cni
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        let maps: Vec<Value> = published_ports(fillers(n))
            .iter()
            .map(|(p, proto)| serde_json::json!({"hostPort": p, "containerPort": p, "protocol": proto}))
            .collect();
        let mut portmap = Value::Null;
        let took = timed(|| {
            let result = self.plugin(lab, "ADD", "bridge", &Self::bridge_conf(lab))?;
            portmap = serde_json::json!({"cniVersion": "1.0.0", "name": "pcni", "type": "portmap",
                "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps}, "prevResult": result});
            self.plugin(lab, "ADD", "portmap", &portmap)?;
            Ok(())
        })?;
        self.portmap = Some(portmap);
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
        let Some(portmap) = self.portmap.take() else {
            return Ok(Duration::ZERO);
        };
        timed(|| {
            self.plugin(lab, "DEL", "portmap", &portmap)?;
            self.plugin(lab, "DEL", "bridge", &Self::bridge_conf(lab))?;
            Ok(())
        })
    }
}
