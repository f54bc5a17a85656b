//! Docker's IPv6 rules for the container's ports (what dockerd 27 writes with
//! `--ip6tables`, the v4 shapes of iptables.rs with IPv6 addresses), loaded with
//! ip6tables-nft-restore: the datapath `cargo xtask bench --ipv6` compares netd's
//! DNAT66 with.
use std::time::Duration;

use anyhow::Result;
use netd_lab::{cmd::in_ns, Lab};

use super::timed;

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
    super::iptables::docker_rules(fillers, ctr, subnet)
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
