//! Docker's IPv6 rules for the container's ports (what dockerd 27 writes with
//! `--ip6tables`, the v4 shapes of iptables.rs with IPv6 addresses), loaded with
//! ip6tables-nft-restore: the datapath `cargo xtask bench --ipv6` compares netd's
//! DNAT66 with.
use std::{fmt::Write as _, time::Duration};

use anyhow::Result;
use netd_lab::{cmd::in_ns, Lab};

use super::{published_ports, timed};

pub const RESTORE: &str = "ip6tables-nft-restore";

/// Loads the rules for `fillers` filler ports and the service ports, DNAT to
/// container `ctr` on subnet `subnet` behind `br0`; returns the time the restore took.
pub fn publish(lab: &Lab, fillers: u16, ctr: &str, subnet: &str) -> Result<Duration> {
    let file = lab.dir.join("rules6");
    std::fs::write(&file, rules(fillers, ctr, subnet))?;
    let f = file.display().to_string();
    timed(|| Ok(in_ns(&lab.host, Some(0), &[RESTORE, &f]).map(drop)?))
}

/// Docker's rules as an ip6tables-restore file: a DOCKER nat chain with one DNAT per
/// port (IPv6 destinations in brackets) and one FORWARD accept per port.
pub fn rules(fillers: u16, ctr: &str, subnet: &str) -> String {
    let mut nat = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n");
    nat += "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n";
    nat += "-A OUTPUT ! -d ::1/128 -m addrtype --dst-type LOCAL -j DOCKER\n";
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
            "-A DOCKER ! -i br0 -p {proto} --dport {p} -j DNAT --to-destination [{ctr}]:{p}"
        );
        let _ = writeln!(
            fwd,
            "-A DOCKER -d {ctr}/128 ! -i br0 -o br0 -p {proto} --dport {p} -j ACCEPT"
        );
    }
    format!("{nat}COMMIT\n{fwd}COMMIT\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dnat_and_one_accept_per_port_in_brackets() {
        let r = rules(2, "fd00:30::2", "fd00:30::/64");
        // Two fillers and the four service ports, in each table.
        assert_eq!(r.matches("-j DNAT").count(), 6);
        assert_eq!(r.matches("/128 ! -i br0 -o br0").count(), 6);
        assert!(r.contains("--dport 20002 -j DNAT --to-destination [fd00:30::2]:20002"));
        assert!(r.contains("-A POSTROUTING -s fd00:30::/64 -o up0 -j MASQUERADE"));
    }
}
