//! rtnetlink, one handle per namespace, each opened from inside its namespace.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
};

use anyhow::{anyhow, Context};
use futures::TryStreamExt;
use ipnetwork::{Ipv4Network, Ipv6Network};
use netlink_packet_route::{
    address::{AddressAttribute, AddressFlags},
    link::{InfoData, InfoVeth, LinkAttribute, LinkMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage},
    AddressFamily,
};
mod tc;
pub use tc::TcFilter;

use rtnetlink::{
    Handle, LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan,
    RouteMessageBuilder,
};

pub struct Netlink {
    handle: Handle,
}

/// A link as netd needs to know it.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    /// The link kind of virtual devices (veth, bridge, ...); None for physical NICs.
    pub kind: Option<String>,
}

/// A veth pair to create: the host end, the peer (born in `peer_ns`, or beside the host
/// end for a runtime to move), both with `mtu`, the host end in bridge `master`, down
/// and with IPv6 off (see `create_veth`).
pub struct Veth<'a> {
    pub host: &'a str,
    pub peer: &'a str,
    pub peer_ns: Option<&'a std::fs::File>,
    pub peer_mac: [u8; 6],
    pub mtu: Option<u32>,
    pub master: Option<u32>,
}

impl Netlink {
    /// A handle in the calling thread's namespace (the daemon's own).
    pub fn current() -> anyhow::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A handle whose socket lives in namespace `netns`: the socket is created on a
    /// thread that entered the namespace, then driven by the runtime like any other.
    pub fn in_netns(netns: &str) -> anyhow::Result<Netlink> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = crate::netns::run_in(netns, move || {
            let _guard = rt.enter();
            let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
            Ok((conn, handle))
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn links(&self) -> anyhow::Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(msgs.iter().map(link_of).collect())
    }

    pub async fn link_by_name(&self, name: &str) -> anyhow::Result<Option<Link>> {
        let mut s = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(link_of(&m))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> anyhow::Result<Option<Link>> {
        let mut s = self.handle.link().get().match_index(index).execute();
        match s.try_next().await {
            Ok(m) => Ok(m.as_ref().map(link_of)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn create_bridge(&self, name: &str) -> anyhow::Result<Link> {
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .with_context(|| format!("creating bridge {name}"))?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("bridge {name} vanished after creation"))
    }

    /// Creates a VXLAN device in metadata mode (`ip link add NAME type vxlan external
    /// dstport PORT nolearning`): no VNI and no remote of its own, the eBPF programs set
    /// both per packet with bpf_skb_set_tunnel_key.
    pub async fn create_vxlan_external(&self, name: &str, port: u16) -> anyhow::Result<Link> {
        self.handle
            .link()
            .add(
                LinkMessageBuilder::<LinkVxlan>::new(name)
                    .port(port)
                    .collect_metadata(true)
                    .learning(false)
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("creating VXLAN device {name}"))?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("VXLAN device {name} vanished after creation"))
    }

    /// Creates a veth pair whose peer is born inside the namespace open as `peer_ns`
    /// (netavark's way: the container end never appears in the host namespace), or
    /// beside the host end when there is none (a runtime moves it itself).
    pub async fn create_veth(&self, v: Veth<'_>) -> anyhow::Result<Link> {
        let (host_name, peer_name) = (v.host, v.peer);
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name.to_string())
            .address(v.peer_mac.to_vec());
        if let Some(mtu) = v.mtu {
            peer = peer.mtu(mtu);
        }
        // Without a namespace the peer is born beside the host end (handed to a runtime).
        if let Some(ns) = v.peer_ns {
            peer = peer.setns_by_fd(ns.as_raw_fd());
        }
        let peer = peer.build();
        // The host end born with its MTU and in its bridge: one message, where a change
        // each would be one more notification, and every notification about a veth
        // whose peer is in another namespace walks the host's namespace ids. It stays
        // down (and the peer without carrier): the caller brings it up once the
        // endpoint's programs are on it, so no packet passes it without them.
        let mut host = LinkVeth::new(host_name, peer_name);
        if let Some(mtu) = v.mtu {
            host = host.mtu(mtu);
        }
        if let Some(master) = v.master {
            host = host.controller(master);
        }
        let mut msg = host.build();
        for attr in msg.attributes.iter_mut() {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos.iter_mut() {
                    if let netlink_packet_route::link::LinkInfo::Data(d) = info {
                        *d = InfoData::Veth(InfoVeth::Peer(peer.clone()));
                    }
                }
            }
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating veth {host_name}"))?;
        let link = self
            .link_by_name(host_name)
            .await?
            .ok_or_else(|| anyhow!("veth {host_name} vanished after creation"))?;
        // A bridge port needs no IPv6 of its own (the bridge holds the gateway), and an
        // IPv6 link of the host's costs every host device's change: its link-local and
        // multicast routes sit beside every other veth's in the host's one FIB, whose
        // whole walk (fib6_ifup, fib6_ifdown, DAD completions) follows each carrier
        // change. Off before the first `up`, it never gets routes. (A kernel without
        // IPv6 has no such setting, and nothing to turn off.)
        let v6 = format!("/proc/sys/net/ipv6/conf/{host_name}/disable_ipv6");
        match std::fs::write(&v6, "1") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                // Not left behind half made: whoever retries makes the pair again.
                let _ = self.del_link(link.index).await;
                Err(anyhow::Error::new(e).context(format!("setting {v6}=1")))
            }
            _ => Ok(link),
        }
    }

    /// Creates the 802.1q sub-interface `name` of link `base` with VLAN id `id`.
    pub async fn create_vlan(&self, name: &str, base: u32, id: u16) -> anyhow::Result<Link> {
        self.handle
            .link()
            .add(LinkVlan::new(name, base, id).build())
            .execute()
            .await
            .with_context(|| format!("creating VLAN sub-interface {name}"))?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| anyhow!("VLAN sub-interface {name} vanished after creation"))
    }

    /// Creates a bridge-mode macvlan device `name` on link `parent`, born inside the
    /// namespace open as `ns` with MAC `mac` (the container's interface).
    pub async fn create_macvlan_in(
        &self,
        name: &str,
        parent: u32,
        ns: &std::fs::File,
        mac: [u8; 6],
        mtu: Option<u32>,
    ) -> anyhow::Result<()> {
        let mut msg = LinkMacVlan::new(
            name,
            parent,
            netlink_packet_route::link::MacVlanMode::Bridge,
        )
        .address(mac.to_vec())
        .setns_by_fd(ns.as_raw_fd());
        if let Some(mtu) = mtu {
            msg = msg.mtu(mtu);
        }
        let msg = msg.build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .with_context(|| format!("creating macvlan {name}"))
    }

    pub async fn set_up(&self, index: u32) -> anyhow::Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("setting link {index} up"))
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> anyhow::Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .with_context(|| format!("setting MTU {mtu} on link {index}"))
    }

    pub async fn del_link(&self, index: u32) -> anyhow::Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting link {index}")),
        }
    }

    pub async fn add_addr(&self, index: u32, net: Ipv4Network) -> anyhow::Result<()> {
        match self
            .handle
            .address()
            .add(index, net.ip().into(), net.prefix())
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {net} to link {index}")),
        }
    }

    /// Adds IPv6 address `net` to link `index` without duplicate address detection
    /// (`nodad`, as Docker): netd's IPAM already made it unique on the link, and DAD
    /// would hold it tentative, unusable, for a second or more.
    pub async fn add_addr6(&self, index: u32, net: Ipv6Network) -> anyhow::Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, net.ip().into(), net.prefix());
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {net} to link {index}")),
        }
    }

    /// Every address of the namespace: (link index, address, prefix length).
    async fn addrs(&self) -> anyhow::Result<Vec<(u32, std::net::IpAddr, u8)>> {
        let msgs: Vec<_> = self.handle.address().get().execute().try_collect().await?;
        let mut out = Vec::new();
        for m in msgs {
            for a in &m.attributes {
                // IPv4 addresses carry Local; IPv6 ones only Address.
                match (m.header.family, a) {
                    (AddressFamily::Inet, AddressAttribute::Local(ip))
                    | (AddressFamily::Inet6, AddressAttribute::Address(ip)) => {
                        out.push((m.header.index, *ip, m.header.prefix_len))
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Every IPv4 address in the namespace, with its link index.
    pub async fn ipv4_addrs(&self) -> anyhow::Result<Vec<(u32, Ipv4Network)>> {
        Ok(self
            .addrs()
            .await?
            .into_iter()
            .filter_map(|(i, ip, plen)| match ip {
                std::net::IpAddr::V4(ip) => Some((i, Ipv4Network::new(ip, plen).ok()?)),
                std::net::IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// Every IPv6 address in the namespace, with its link index, in the kernel's order
    /// (per link, the most recently added first).
    pub async fn ipv6_addrs_of_links(&self) -> anyhow::Result<Vec<(u32, Ipv6Addr)>> {
        Ok(self
            .addrs()
            .await?
            .into_iter()
            .filter_map(|(i, ip, _)| match ip {
                std::net::IpAddr::V6(ip) => Some((i, ip)),
                std::net::IpAddr::V4(_) => None,
            })
            .collect())
    }

    /// Every IPv6 address in the namespace.
    pub async fn ipv6_addrs(&self) -> anyhow::Result<Vec<Ipv6Addr>> {
        Ok(self
            .ipv6_addrs_of_links()
            .await?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect())
    }

    /// `ip route replace default via GW dev INDEX`: the namespace's one IPv4 default
    /// route, wherever it was before (a container's gateway endpoint may change).
    pub async fn replace_default_route(&self, gw: Ipv4Addr, index: u32) -> anyhow::Result<()> {
        let r = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(r)
            .replace()
            .execute()
            .await
            .with_context(|| format!("setting the default route via {gw}"))
    }

    /// `ip -6 route replace default via GW dev INDEX`.
    pub async fn replace_default_route6(&self, gw: Ipv6Addr, index: u32) -> anyhow::Result<()> {
        let r = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gw)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(r)
            .replace()
            .execute()
            .await
            .with_context(|| format!("setting the IPv6 default route via {gw}"))
    }

    async fn routes_v4(&self) -> anyhow::Result<Vec<RouteMessage>> {
        let q = RouteMessageBuilder::<Ipv4Addr>::new().build();
        Ok(self.handle.route().get(q).execute().try_collect().await?)
    }

    /// The gateway of the main table's default route, if there is one.
    pub async fn default_gateway(&self) -> anyhow::Result<Option<Ipv4Addr>> {
        Ok(main_default_gateway(self.routes_v4().await?, |a| match a {
            RouteAddress::Inet(gw) => Some(*gw),
            _ => None,
        }))
    }

    /// The gateway of the main table's IPv6 default route, if there is one.
    pub async fn default_gateway6(&self) -> anyhow::Result<Option<Ipv6Addr>> {
        let q = RouteMessageBuilder::<Ipv6Addr>::new().build();
        let routes: Vec<RouteMessage> = self.handle.route().get(q).execute().try_collect().await?;
        Ok(main_default_gateway(routes, |a| match a {
            RouteAddress::Inet6(gw) => Some(*gw),
            _ => None,
        }))
    }

    /// The interface of the default route (the uplink), if there is one.
    pub async fn default_route_oif(&self) -> anyhow::Result<Option<u32>> {
        for r in self.routes_v4().await? {
            if r.header.destination_prefix_length != 0 || r.header.table != 254 {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Oif(i) = a {
                    return Ok(Some(*i));
                }
            }
        }
        Ok(None)
    }

    /// Destinations of all non-default IPv4 routes, for picking a subnet that clashes
    /// with nothing the host already reaches.
    pub async fn route_destinations(&self) -> anyhow::Result<Vec<Ipv4Network>> {
        let mut out = Vec::new();
        for r in self.routes_v4().await? {
            let len = r.header.destination_prefix_length;
            if len == 0 {
                continue;
            }
            for a in &r.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(ip)) = a {
                    if let Ok(n) = Ipv4Network::new(*ip, len) {
                        out.push(n);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The first gateway `pick` takes among the default routes of the main table in
/// `routes` (either family: `pick` says which).
fn main_default_gateway<A>(
    routes: Vec<RouteMessage>,
    pick: impl Fn(&RouteAddress) -> Option<A>,
) -> Option<A> {
    routes
        .iter()
        .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
        .flat_map(|r| &r.attributes)
        .find_map(|a| match a {
            RouteAttribute::Gateway(gw) => pick(gw),
            _ => None,
        })
}

fn link_of(m: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    let mut kind = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let netlink_packet_route::link::LinkInfo::Kind(k) = i {
                        kind = Some(k.to_string());
                    }
                }
            }
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut b = [0u8; 6];
                b.copy_from_slice(a);
                mac = Some(b);
            }
            _ => {}
        }
    }
    Link {
        index: m.header.index,
        name,
        mac,
        kind,
    }
}
