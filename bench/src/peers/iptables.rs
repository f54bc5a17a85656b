//! Docker's iptables rules for the container's ports (shared/PEERS.md), loaded with
//! iptables-restore into the nft or the legacy backend.
use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use netd_lab::{cmd::in_ns, Lab};

use super::{
    fillers, flush_kernel_conntrack, hand_made_bridge, published_ports, start_servers, timed,
    Datapath, Dp, Env, CTR_NET,
};

pub struct Iptables {
    dp: Dp,
    ctr: String,
    /// `iptables-nft` or `iptables-legacy`.
    cmd: &'static str,
    restore: &'static str,
    env: Env,
}

impl Iptables {
    pub fn new(dp: Dp, lab: &mut Lab, env: &Env) -> Result<Iptables> {
        let nft = dp == Dp::IptablesNft;
        Ok(Iptables {
            dp,
            ctr: hand_made_bridge(lab)?,
            cmd: if nft {
                "iptables-nft"
            } else {
                "iptables-legacy"
            },
            restore: if nft {
                "iptables-nft-restore"
            } else {
                "iptables-legacy-restore"
            },
            env: env.clone(),
        })
    }
}

impl Datapath for Iptables {
    fn dp(&self) -> Dp {
        self.dp
    }

    fn container_ns(&self) -> &str {
        &self.ctr
    }

    fn publish(&mut self, lab: &mut Lab, n: usize) -> Result<Duration> {
        start_servers(lab, &self.ctr.clone(), &self.env)?;
        let file = lab.dir.join("rules");
        std::fs::write(&file, rules(fillers(n)))?;
        let f = file.display().to_string();
        timed(|| Ok(in_ns(&lab.host, Some(0), &[self.restore, &f]).map(drop)?))
    }

    /// Two commands: the DNAT rule and the FORWARD accept, as Docker adds them.
    fn one_more(&mut self, lab: &mut Lab) -> Result<Duration> {
        let h = &lab.host;
        let ipt = self.cmd;
        timed(|| {
            in_ns(
                h,
                Some(0),
                &[
                    ipt,
                    "-t",
                    "nat",
                    "-A",
                    "DOCKER",
                    "!",
                    "-i",
                    "br0",
                    "-p",
                    "tcp",
                    "--dport",
                    "31000",
                    "-j",
                    "DNAT",
                    "--to-destination",
                    "172.30.0.2:80",
                ],
            )?;
            in_ns(
                h,
                Some(0),
                &[
                    ipt,
                    "-A",
                    "DOCKER",
                    "-d",
                    "172.30.0.2/32",
                    "!",
                    "-i",
                    "br0",
                    "-o",
                    "br0",
                    "-p",
                    "tcp",
                    "--dport",
                    "80",
                    "-j",
                    "ACCEPT",
                ],
            )?;
            Ok(())
        })
    }

    fn flush_conntrack(&self, lab: &Lab) {
        flush_kernel_conntrack(lab);
    }

    /// One transaction, as a restore, that empties the container's chains.
    fn remove(&mut self, lab: &mut Lab) -> Result<Duration> {
        let file = lab.dir.join("remove");
        std::fs::write(
            &file,
            "*nat\n-F DOCKER\n-A DOCKER -i br0 -j RETURN\nCOMMIT\n*filter\n-F DOCKER\nCOMMIT\n",
        )?;
        let f = file.display().to_string();
        timed(|| Ok(in_ns(&lab.host, Some(0), &[self.restore, "--noflush", &f]).map(drop)?))
    }
}

/// Docker's rules as an iptables-restore file: a DOCKER nat chain with one DNAT per
/// port and one FORWARD accept per port.
fn rules(fillers: u16) -> String {
    docker_rules(fillers, &format!("{CTR_NET}.2"), &format!("{CTR_NET}.0/24"))
}

/// Docker's rules for container `ctr` (IPv4 or IPv6: the same shapes in
/// iptables-restore and ip6tables-restore files) on `subnet` behind `br0`.
pub fn docker_rules(fillers: u16, ctr: &str, subnet: &str) -> String {
    let v6 = ctr.contains(':');
    let (loopback, host, to) = if v6 {
        ("::1/128", format!("{ctr}/128"), format!("[{ctr}]"))
    } else {
        ("127.0.0.0/8", format!("{ctr}/32"), ctr.to_string())
    };
    let mut nat = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    nat += "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n";
    let _ = writeln!(
        nat,
        "-A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER"
    );
    let _ = writeln!(nat, "-A POSTROUTING -s {subnet} -o up0 -j MASQUERADE");
    nat += "-A DOCKER -i br0 -j RETURN\n";
    let mut fwd = String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    fwd += "-A FORWARD -i br0 -o br0 -j DROP\n";
    fwd += "-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    fwd += "-A FORWARD -o br0 -j DOCKER\n";
    fwd += "-A FORWARD -i br0 ! -o br0 -j ACCEPT\n";
    for (p, proto) in published_ports(fillers) {
        let _ = writeln!(
            nat,
            "-A DOCKER ! -i br0 -p {proto} --dport {p} -j DNAT --to-destination {to}:{p}"
        );
        let _ = writeln!(
            fwd,
            "-A DOCKER -d {host} ! -i br0 -o br0 -p {proto} --dport {p} -j ACCEPT"
        );
    }
    format!("{nat}COMMIT\n{fwd}COMMIT\n")
}
