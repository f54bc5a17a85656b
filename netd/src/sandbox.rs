//! The sandbox seam: attach a network namespace to a network, and detach it. Everything
//! that makes a namespace an endpoint of a network lives here: the address (IPAM), the
//! interface names, the driver's plumbing (veth, address, routes), the endpoint program
//! and map entry, the published ports. `netd run` goes through it; the Docker-plugin and
//! CNI front doors call the same functions with a namespace netd did not create (any
//! absolute path works where a name under /run/netns does).
//!
//! `plan` is pure (it reads the intended state), so the caller commits the attachment to
//! the store before `attach` touches the kernel, and `detach` undoes `attach` whatever
//! state the kernel is in.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::anyhow;

use crate::{
    datapath::{Datapath, ProgSet},
    driver::{self, Join, TeardownErrors},
    error::{NetdError, Result},
    ipam,
    model::{self, Attachment, Network, PortMapping},
    netlink::Netlink,
    store::State,
};

/// What the caller may choose about an attachment; the rest is netd's.
#[derive(Clone, Debug, Default)]
pub struct AttachOptions {
    /// A static address (Docker's --ip: only on networks with a user-chosen subnet).
    pub ip: Option<Ipv4Addr>,
    /// A static IPv6 address (--ip6: only on networks with a user-chosen IPv6 subnet).
    pub ip6: Option<Ipv6Addr>,
    /// No IPv6 address even on a dual-stack network: for a front door whose runtime
    /// picks the addresses and gave no IPv6 one (the Docker plugin: dockerd sets only
    /// the addresses of its IPAM in the sandbox).
    pub ipv4_only: bool,
    /// The interface name inside the namespace (default: the first free ethN).
    pub ifname: Option<String>,
    pub aliases: Vec<String>,
    /// `--link-local-ip`s (checked by `plan`).
    pub link_local_ips: Vec<IpAddr>,
    /// `--mac-address` (checked by `model::parse_mac`): Docker's `02:42:<ip>` without.
    pub mac: Option<[u8; 6]>,
    /// Docker 28's gw-priority (see `model::gateways`).
    pub gw_priority: i32,
    /// Endpoint driver options (checked by `model::check_driver_opts`); the interface
    /// name among them is `ifname`'s.
    pub driver_opts: std::collections::BTreeMap<String, String>,
}

/// Host-side veth name of interface `n` of owner `id` (at most 15 characters).
pub fn veth_name(prefix: &str, id: &str, n: usize) -> String {
    let keep = 15usize.saturating_sub(prefix.len() + 2).min(id.len());
    format!("{prefix}{}{:02}", &id[..keep], n % 100)
}

/// The attachment of owner `owner_id` (which has `existing` attachments already) to
/// `net`: an address from the network's IPAM, the next free ethN, a veth name, Docker's
/// MAC for the address. Nothing is written anywhere.
pub fn plan(
    state: &State,
    net: &Network,
    owner_id: &str,
    existing: &[Attachment],
    opts: AttachOptions,
    veth_prefix: &str,
) -> Result<Attachment> {
    check_link_local(state, net, &opts.link_local_ips)?;
    let ifname = match opts
        .ifname
        .or_else(|| opts.driver_opts.get(model::ENDPOINT_IFNAME).cloned())
    {
        Some(name) => {
            model::check_ifname(&name)?;
            if name == "lo" || existing.iter().any(|a| a.ifname == name) {
                return Err(NetdError::Conflict(format!(
                    "interface name {name} is already in use in the container"
                )));
            }
            name
        }
        None => (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !existing.iter().any(|a| &a.ifname == n))
            .unwrap_or_default(),
    };
    if let Some(mac) = opts.mac {
        check_mac(state, net, mac)?;
    }
    let ip = match ipam::allocate::<Ipv4Addr>(state, net, opts.ip)? {
        Some(ip) => ip,
        None if net.ipv6() => Ipv4Addr::UNSPECIFIED,
        None => {
            return Err(NetdError::InvalidArgument(format!(
                "network {} has no addresses to give",
                net.name
            )))
        }
    };
    let ip6 = if opts.ipv4_only {
        None
    } else {
        ipam::allocate::<Ipv6Addr>(state, net, opts.ip6)?
    };
    let mac = match (ip.is_unspecified(), ip6) {
        (true, Some(v6)) => model::mac_for_ip6(v6),
        _ => model::mac_for_ip(ip),
    };
    // Host veths are numbered apart from interface names, which the user may choose.
    let veth = (0..)
        .map(|i| veth_name(veth_prefix, owner_id, i))
        .find(|v| !existing.iter().any(|a| &a.veth == v))
        .unwrap_or_default();
    Ok(Attachment {
        network: net.id.clone(),
        ifname,
        ip,
        mac: opts.mac.unwrap_or(mac),
        veth,
        aliases: opts.aliases,
        host_ifindex: 0,
        requested_ip: opts.ip,
        ip6,
        requested_ip6: opts.ip6,
        link_local_ips: opts.link_local_ips,
        gw_priority: opts.gw_priority,
        driver_opts: opts.driver_opts,
        user_mac: opts.mac.is_some(),
    })
}

/// A MAC the user chose: not one another endpoint of the network has (two would take
/// each other's frames on the bridge).
fn check_mac(state: &State, net: &Network, mac: [u8; 6]) -> Result<()> {
    for c in &state.containers {
        if c.attachments
            .iter()
            .any(|a| a.network == net.id && a.mac == mac)
        {
            return Err(NetdError::Conflict(format!(
                "--mac-address {}: container {} has it on network {} already",
                model::fmt_mac(&mac),
                c.name,
                net.name
            )));
        }
    }
    Ok(())
}

/// `--link-local-ip`s: link-local addresses (169.254.0.0/16 but its first and last
/// /24, which RFC 3927 reserves; fe80::/10 on a network with IPv6), none on the host
/// already. The datapath knows IPv4 endpoints by address, so no two containers may
/// share one, whatever their networks (Docker does not check).
fn check_link_local(state: &State, net: &Network, ips: &[IpAddr]) -> Result<()> {
    let bad = |ip: &IpAddr, why: &str| {
        Err(NetdError::InvalidArgument(format!(
            "invalid --link-local-ip {ip}: {why}"
        )))
    };
    for ip in ips {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if !v4.is_link_local() || o[2] == 0 || o[2] == 255 {
                    return bad(
                        ip,
                        "not a link-local address (169.254.1.0-169.254.254.255, or fe80::/10)",
                    );
                }
            }
            IpAddr::V6(v6) => {
                if v6.segments()[0] & 0xffc0 != 0xfe80 {
                    return bad(
                        ip,
                        "not a link-local address (169.254.1.0-169.254.254.255, or fe80::/10)",
                    );
                }
                if !net.ipv6() {
                    return bad(
                        ip,
                        &format!("network {} has no IPv6 (create it with --ipv6)", net.name),
                    );
                }
            }
        }
        if net.is_multi_host() {
            return bad(
                ip,
                "overlay networks carry their containers' subnet addresses only",
            );
        }
        if let Some(c) = state
            .containers
            .iter()
            .find(|c| c.attachments.iter().any(|a| a.link_local_ips.contains(ip)))
        {
            return Err(NetdError::Conflict(format!(
                "--link-local-ip {ip} is already used by container {}",
                c.name
            )));
        }
    }
    Ok(())
}

/// The name of the container side of host veth `veth` while it waits in the daemon's
/// namespace for the runtime to move it (`attach_handoff`): host veths end in two
/// digits, so a letter before the last one never names another host veth.
pub fn handoff_name(veth: &str) -> String {
    let cut = veth.len().saturating_sub(2).min(13);
    format!("{}h{}", &veth[..cut], &veth[veth.len().saturating_sub(1)..])
}

/// Plumbs `a` into namespace `netns` through the network's driver, puts the endpoint
/// program on its host side and its entry into the endpoint map. Records the host-side
/// ifindex in `a`. On failure the caller runs `detach`.
pub async fn attach(
    nl: &Netlink,
    dp: &mut Datapath,
    netns: &str,
    net: &Network,
    a: &mut Attachment,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    plumb(nl, dp, Some(netns), net, a, routes).await
}

/// Makes attachment `a`, plumbed already, give namespace `netns` its default routes
/// (`routes`: IPv4's, IPv6's) in place of another attachment's.
pub async fn route_through(
    netns: &str,
    net: &Network,
    a: &Attachment,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    driver::route_through(netns, net, a, routes).await
}

/// `attach` for a runtime that moves the container side itself (Docker's Join): the
/// veth's peer stays in the daemon's namespace as `a.ifname` (see `handoff_name`),
/// down, with the attachment's MAC and the network's MTU and no address; the host side
/// is wired as by `attach`. The runtime addresses it and sets the routes.
pub async fn attach_handoff(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    a: &mut Attachment,
) -> anyhow::Result<()> {
    plumb(nl, dp, None, net, a, (false, false)).await
}

async fn plumb(
    nl: &Netlink,
    dp: &mut Datapath,
    netns: Option<&str>,
    net: &Network,
    a: &mut Attachment,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    join(nl, netns, net, a, routes).await?;
    wire(nl, dp, net, a).await
}

/// The driver's half of `attach`: the endpoint's plumbing (veth, addresses, routes);
/// records the host-side ifindex.
pub async fn join(
    nl: &Netlink,
    netns: Option<&str>,
    net: &Network,
    a: &mut Attachment,
    routes: (bool, bool),
) -> anyhow::Result<()> {
    let d = driver::for_network(net)
        .ok_or_else(|| anyhow!("network {} takes no endpoints", net.name))?;
    let join = Join {
        netns,
        attachment: a,
        default_route: routes.0,
        default_route6: routes.1,
    };
    a.host_ifindex = d.join(nl, net, join).await?;
    Ok(())
}

/// The datapath's half of `attach`: the endpoint's entries, then its programs.
pub async fn wire(
    nl: &Netlink,
    dp: &mut Datapath,
    net: &Network,
    a: &Attachment,
) -> anyhow::Result<()> {
    if !net.traits().programs {
        return Ok(());
    }
    // Entries first: a program never sees the endpoint's first packets without them.
    dp.set_endpoint(a, net)?;
    dp.attach_endpoint(nl, &a.veth, a.host_ifindex, programs_of(net, a))
        .await?;
    // The driver left the host end down until now: the container's first packet
    // meets its programs.
    nl.set_up(a.host_ifindex).await
}

/// The programs endpoint `a` of `net` takes besides `endpoint_egress`.
pub fn programs_of(net: &Network, a: &Attachment) -> ProgSet {
    ProgSet {
        ipv6: a.ip6.is_some(),
        overlay: net.is_multi_host(),
    }
}

/// Publishes `ports` to attachment `a` (Docker publishes to a container's first
/// network). Returns how many map entries were written.
pub fn publish(dp: &mut Datapath, ports: &[PortMapping], a: &Attachment) -> anyhow::Result<usize> {
    let mut n = 0;
    for m in ports {
        if let Some(to) = backend_ip(m, a) {
            dp.publish(m, to)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The address of `a` that mapping `m` leads to: of the host address's family. None for
/// an IPv6 mapping to an attachment without IPv6 (the daemon refuses to make one; a
/// container moved to another first network can leave one behind).
pub fn backend_ip(m: &PortMapping, a: &Attachment) -> Option<IpAddr> {
    match m.host_ip {
        IpAddr::V4(_) => a.ipv4().map(IpAddr::V4),
        IpAddr::V6(_) => a.ip6.map(IpAddr::V6),
    }
}

pub fn unpublish(dp: &mut Datapath, ports: &[PortMapping]) {
    for m in ports {
        dp.unpublish(m);
    }
}

/// Removes attachment `a` from the kernel: its flows, endpoint entry, program and the
/// driver's plumbing (in namespace `netns` where the driver keeps it there). Goes on
/// past failures and returns them all.
pub async fn detach(
    nl: &Netlink,
    dp: &mut Datapath,
    net: Option<&Network>,
    a: &Attachment,
    netns: Option<&str>,
) -> TeardownErrors {
    let mut errs = TeardownErrors::default();
    let ips = std::iter::once(IpAddr::V4(a.ip)).chain(a.ip6.map(IpAddr::V6));
    for ip in ips {
        match dp.flush_conntrack_of(ip) {
            Ok(0) => {}
            Ok(n) => log::info!("dropped {n} conntrack entries of {ip}"),
            Err(e) => errs.push(e),
        }
    }
    dp.remove_endpoint(a);
    errs.check(dp.detach_endpoint(&a.veth));
    // The bridge driver's way is the default: a network that is already gone still
    // leaves a veth to delete.
    let d = net
        .and_then(driver::for_network)
        .unwrap_or(&driver::BRIDGE_FALLBACK);
    errs.extend(d.leave(nl, a, netns).await);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_ifnamsiz_and_differ_by_interface() {
        let id = "0123456789abcdef0123";
        let a = veth_name("ndv", id, 0);
        let b = veth_name("ndv", id, 1);
        assert_eq!(a, "ndv012345678900");
        assert!(a.len() <= 15 && b.len() <= 15);
        assert_ne!(a, b);
        assert!(veth_name("abcde", "x", 3).len() <= 15);
    }

    #[test]
    fn handoff_names_fit_and_never_name_a_host_veth() {
        let id = "0123456789abcdef0123";
        let (a, b) = (veth_name("ndv", id, 0), veth_name("ndv", id, 1));
        let (ha, hb) = (handoff_name(&a), handoff_name(&b));
        assert_eq!(ha, "ndv0123456789h0");
        assert!(ha.len() <= 15 && hb.len() <= 15);
        assert_ne!(ha, hb);
        assert_ne!(ha, a);
        assert_eq!(handoff_name("ab01"), "abh1");
    }

    #[test]
    fn plan_takes_the_next_free_interface_and_docker_mac() {
        let net = model::test_network();
        let mut state = State::default();
        state.networks.push(net.clone());
        let first = plan(
            &state,
            &net,
            "abcdef012345",
            &[],
            AttachOptions::default(),
            "ndv",
        )
        .unwrap();
        assert_eq!(first.ifname, "eth0");
        assert_eq!(first.mac, model::mac_for_ip(first.ip));
        let second = plan(
            &state,
            &net,
            "abcdef012345",
            std::slice::from_ref(&first),
            AttachOptions::default(),
            "ndv",
        )
        .unwrap();
        assert_eq!(second.ifname, "eth1");
        assert_ne!(first.veth, second.veth);
    }
}
