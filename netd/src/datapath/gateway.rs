//! What gateway modes, trusted host interfaces and published-source restrictions put in
//! the maps: the subnet trie's flags, the endpoints' per-family flags (a `routed`
//! endpoint's published container ports open in `ports`), the trusted interfaces
//! (`NETD_TRUSTED`) and who may reach published ports (`NETD_SOURCES`,
//! `NETD_SOURCES6`).
use std::{collections::HashMap as StdHashMap, net::IpAddr};

use ipnetwork::IpNetwork;
use netd_common::{
    source_key, TrustedKey, EP_F_MASQUERADE, EP_F_TRACK, SOURCE_ALLOW, SOURCE_DENY,
    SUBNET_F_FILTERED, SUBNET_F_PROTECTED,
};

use super::{sync::sync, Datapath};
use crate::model::{GatewayMode, Network};

/// The subnet trie's flags of `net`'s IPv4 (`v6` false) or IPv6 subnets: what the
/// guard lets in from outside straight to its containers.
pub(super) fn subnet_flags(net: &Network, v6: bool) -> u32 {
    if net.internal {
        return SUBNET_F_PROTECTED;
    }
    match net.gateway_mode(v6) {
        GatewayMode::Routed => SUBNET_F_FILTERED,
        GatewayMode::NatUnprotected => 0,
        GatewayMode::Isolated => SUBNET_F_PROTECTED,
        GatewayMode::Nat if net.masquerade => SUBNET_F_PROTECTED,
        // Without masquerade the outside must route to the subnet to get answers at
        // all, and netd has always let it (Docker before 28 did too).
        GatewayMode::Nat => 0,
    }
}

/// The endpoint flags of `net`'s family (`v6`) that follow its gateway mode.
pub(super) fn family_flags(net: &Network, v6: bool) -> u32 {
    let mut f = 0;
    if net.masquerades(v6) {
        f |= EP_F_MASQUERADE;
    }
    if !net.internal && net.gateway_mode(v6) == GatewayMode::Routed {
        f |= EP_F_TRACK;
    }
    f
}

/// The trie entries of one network's source restriction, for one family: the
/// network's id alone denies, each allowed prefix of the family allows.
fn source_entries<const N: usize>(
    net_id: u32,
    allowed: &[IpNetwork],
    v6: bool,
) -> Vec<((u32, [u8; N]), u32)> {
    let mut out = vec![((32, source_key::<N>(net_id, &[])), SOURCE_DENY)];
    for p in allowed {
        let (bytes, plen): (Vec<u8>, u8) = match p {
            IpNetwork::V4(n) if !v6 => (n.network().octets().to_vec(), n.prefix()),
            IpNetwork::V6(n) if v6 => (n.network().octets().to_vec(), n.prefix()),
            _ => continue,
        };
        out.push((
            (32 + plen as u32, source_key::<N>(net_id, &bytes)),
            SOURCE_ALLOW,
        ));
    }
    out
}

impl Datapath {
    /// Whether the endpoint with address `ip` is in gateway mode `routed` for its
    /// family, as its endpoint entry says (written before its ports are published).
    pub(super) fn routed_endpoint(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self
                .endpoints
                .get(&u32::from(a).to_be(), 0)
                .is_ok_and(|e| e.flags & EP_F_TRACK != 0),
            IpAddr::V6(a) => self
                .addrs6
                .get(&a.octets(), 0)
                .is_ok_and(|e| e.flags & EP_F_TRACK != 0),
        }
    }

    /// Makes the trusted-interface map hold exactly `want`: (interface's ifindex,
    /// network id) pairs.
    pub fn sync_trusted(&mut self, want: &[(u32, u32)]) -> anyhow::Result<()> {
        let m = want
            .iter()
            .map(|&(ifindex, net_id)| (TrustedKey { ifindex, net_id }, 1u32))
            .collect();
        sync(&mut self.trusted, &m)?;
        Ok(())
    }

    /// The daemon's own published-port source restriction (`--published-sources`),
    /// for networks without one of their own; empty: none.
    pub fn set_default_sources(&mut self, sources: Vec<IpNetwork>) {
        self.default_sources = sources;
    }

    /// Makes the source tries hold each network's restriction: its own
    /// (`netd.published_sources`), else the daemon's, else none.
    pub fn sync_sources(&mut self, networks: &[Network]) -> anyhow::Result<()> {
        let (mut v4, mut v6) = (StdHashMap::new(), StdHashMap::new());
        for n in networks.iter().filter(|n| n.traits().programs) {
            let allowed = match n.published_sources() {
                Some(own) => own,
                None if !self.default_sources.is_empty() => self.default_sources.clone(),
                None => continue,
            };
            v4.extend(source_entries::<8>(n.net_id, &allowed, false));
            v6.extend(source_entries::<20>(n.net_id, &allowed, true));
        }
        sync(&mut self.sources, &v4)?;
        sync(&mut self.sources6, &v6)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_entries_deny_by_the_id_and_allow_each_prefix_of_the_family() {
        let allowed: Vec<IpNetwork> = vec![
            "10.1.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        let v4 = source_entries::<8>(7, &allowed, false);
        assert_eq!(v4.len(), 2);
        assert_eq!(v4[0], ((32, [0, 0, 0, 7, 0, 0, 0, 0]), SOURCE_DENY));
        assert_eq!(v4[1], ((48, [0, 0, 0, 7, 10, 1, 0, 0]), SOURCE_ALLOW));
        let v6 = source_entries::<20>(7, &allowed, true);
        assert_eq!(v6.len(), 2);
        assert_eq!(v6[1].0 .0, 64);
        assert_eq!(&v6[1].0 .1[4..8], &[0x20, 0x01, 0x0d, 0xb8]);
    }
}
