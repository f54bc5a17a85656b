//! Docker's rules in native nftables: one rule per port, linear, as Docker's are.
use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use netd_lab::{cmd::in_ns, Lab};

use super::{
    fillers, flush_kernel_conntrack, hand_made_bridge, published_ports, start_servers, timed,
    Datapath, Dp, Env, CTR_NET,
};

pub struct Nftables {
    ctr: String,
    env: Env,
}

impl Nftables {
    pub fn new(lab: &mut Lab, env: &Env) -> Result<Nftables> {
        Ok(Nftables {
            ctr: hand_made_bridge(lab)?,
            env: env.clone(),
        })
    }
}

impl Datapath for Nftables {
    fn dp(&self) -> Dp {
        Dp::Nftables
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        start_servers(lab, &self.ctr.clone(), &self.env)?;
        let file = lab.dir.join("rules");
        std::fs::write(&file, rules(fillers(n)))?;
        let f = file.display().to_string();
        timed(|| Ok(in_ns(&lab.host, Some(0), &["nft", "-f", &f]).map(drop)?))
    }

    /// One command: the DNAT rule.
    fn one_more(&mut self, lab: &mut Lab) -> Result<Duration> {
        timed(|| {
            in_ns(
                &lab.host,
                Some(0),
                &[
                    "nft",
                    "add",
                    "rule",
                    "ip",
                    "docker",
                    "DOCKER",
                    "iifname",
                    "!=",
                    "br0",
                    "tcp",
                    "dport",
                    "31000",
                    "dnat",
                    "to",
                    "172.30.0.2:80",
                ],
            )?;
            Ok(())
        })
    }

    fn flush_conntrack(&self, lab: &Lab) {
        flush_kernel_conntrack(lab);
    }

    fn remove(&mut self, lab: &mut Lab) -> Result<Duration> {
        let file = lab.dir.join("remove");
        std::fs::write(
            &file,
            "flush chain ip docker DOCKER\nflush chain ip docker FWD\n",
        )?;
        let f = file.display().to_string();
        timed(|| Ok(in_ns(&lab.host, Some(0), &["nft", "-f", &f]).map(drop)?))
    }
}

/// The rule set as an `nft -f` file.
fn rules(fillers: u16) -> String {
    let c = format!("{CTR_NET}.2");
    let mut dnat = String::new();
    let mut accept = String::new();
    for (p, proto) in published_ports(fillers) {
        // nft 1.0.6 wants a newline after a dnat statement.
        let _ = writeln!(
            dnat,
            "    iifname != \"br0\" {proto} dport {p} dnat to {c}:{p}"
        );
        let _ = writeln!(
            accept,
            "    ip daddr {c} iifname != \"br0\" oifname \"br0\" {proto} dport {p} accept"
        );
    }
    format!(
        "table ip docker {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat;\n    fib daddr type local jump DOCKER\n  }}\n  chain DOCKER {{\n{dnat}  }}\n  chain postrouting {{\n    type nat hook postrouting priority srcnat;\n    ip saddr {CTR_NET}.0/24 oifname \"up0\" masquerade\n  }}\n  chain forward {{\n    type filter hook forward priority filter; policy drop;\n    iifname \"br0\" oifname \"br0\" drop\n    oifname \"br0\" ct state established,related accept\n    oifname \"br0\" jump FWD\n    iifname \"br0\" oifname != \"br0\" accept\n  }}\n  chain FWD {{\n{accept}  }}\n}}\n"
    )
}
