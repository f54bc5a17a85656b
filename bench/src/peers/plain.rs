//! Plain routing, no NAT: the client reaches the container's own address through the
//! host. The limit every NAT datapath is measured against.
use std::time::Duration;

use anyhow::Result;
use netd_lab::{cmd::ip, Lab};

use super::{
    flush_kernel_conntrack, hand_made_bridge, start_servers, Datapath, Dp, Env, CTR_NET, HOST_IP,
};

pub struct Plain {
    ctr: String,
    target: String,
    env: Env,
}

impl Plain {
    pub fn new(lab: &mut Lab, env: &Env) -> Result<Plain> {
        let ctr = hand_made_bridge(lab)?;
        let net = format!("{CTR_NET}.0/24");
        ip(&["-n", &lab.client, "route", "add", &net, "via", HOST_IP])?;
        Ok(Plain {
            ctr,
            target: format!("{CTR_NET}.2"),
            env: env.clone(),
        })
    }
}

impl Datapath for Plain {
    fn dp(&self) -> Dp {
        Dp::Plain
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    fn target(&self) -> &str {
        &self.target
    }

    /// Nothing to publish: only the servers.
    fn publish(&mut self, lab: &mut Lab, _n: usize) -> Result<Duration> {
        start_servers(lab, &self.ctr.clone(), &self.env)?;
        Ok(Duration::ZERO)
    }

    fn one_more(&mut self, _lab: &mut Lab) -> Result<Duration> {
        Ok(Duration::ZERO)
    }

    fn flush_conntrack(&self, lab: &Lab) {
        flush_kernel_conntrack(lab);
    }

    fn remove(&mut self, _lab: &mut Lab) -> Result<Duration> {
        Ok(Duration::ZERO)
    }
}
