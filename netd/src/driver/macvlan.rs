//! Docker's macvlan driver, bridge mode: each endpoint is a macvlan device on the
//! network's parent interface, born in the container's namespace with its own MAC, so
//! the container sits on the parent's L2 segment and is reached straight at its
//! address. A parent `IF.VLAN` is an 802.1q sub-interface the network makes when it
//! does not exist and removes with the network (`Network::bridge` names it then: the
//! link the network owns). No NAT and no published ports, as in Docker; the endpoint
//! programs have no host side to run on.
use anyhow::{anyhow, Context};
use futures::{future::BoxFuture, FutureExt};

use super::{
    bridge::{configure_inside, delete_link},
    Join, NetworkDriver, TeardownErrors,
};
use crate::{
    model::{split_parent, Attachment, Network, OPT_PARENT},
    netlink::Netlink,
    netns,
};

pub struct Macvlan;

/// The network's parent interface.
fn parent(net: &Network) -> anyhow::Result<&str> {
    net.options
        .get(OPT_PARENT)
        .map(String::as_str)
        .ok_or_else(|| anyhow!("macvlan network {} has no parent", net.name))
}

impl NetworkDriver for Macvlan {
    fn name(&self) -> &'static str {
        "macvlan"
    }

    fn validate(&self, net: &Network) -> anyhow::Result<()> {
        split_parent(parent(net)?)?;
        if !net.ipv4() {
            return Err(anyhow!("macvlan network {} needs a subnet", net.name));
        }
        Ok(())
    }

    fn setup<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
    ) -> BoxFuture<'a, anyhow::Result<Network>> {
        async move {
            let parent = parent(net)?;
            let link = match (nl.link_by_name(parent).await?, split_parent(parent)?) {
                (Some(l), _) => l,
                (None, (base, Some(id))) => {
                    let b = nl
                        .link_by_name(base)
                        .await?
                        .ok_or_else(|| anyhow!("parent interface {base} is gone"))?;
                    nl.create_vlan(parent, b.index, id).await?
                }
                (None, _) => return Err(anyhow!("parent interface {parent} is gone")),
            };
            nl.set_up(link.index).await?;
            Ok(net.clone())
        }
        .boxed()
    }

    fn teardown<'a>(&'a self, nl: &'a Netlink, net: &'a Network) -> BoxFuture<'a, TeardownErrors> {
        async move {
            if net.bridge.is_empty() {
                // The parent is the host's: it stays.
                return TeardownErrors::default();
            }
            delete_link(nl, &net.bridge).await
        }
        .boxed()
    }

    fn join<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
        j: Join<'a>,
    ) -> BoxFuture<'a, anyhow::Result<u32>> {
        async move {
            let a = j.attachment;
            let ns = j.netns.ok_or_else(|| {
                anyhow!("a macvlan endpoint is born in its namespace: none given")
            })?;
            let parent = parent(net)?;
            let link = nl
                .link_by_name(parent)
                .await?
                .ok_or_else(|| anyhow!("parent interface {parent} missing"))?;
            let prefix = net.prefix_for(a.ip);
            nl.create_macvlan_in(&a.ifname, link.index, &netns::open(ns)?, a.mac, net.mtu)
                .await?;
            configure_inside(ns, net, a, prefix, (j.default_route, j.default_route6))
                .await
                .with_context(|| format!("configuring {} in {ns}", a.ifname))?;
            // No host side: nothing of it is in the host namespace's maps.
            Ok(0)
        }
        .boxed()
    }

    fn leave<'a>(
        &'a self,
        _nl: &'a Netlink,
        a: &'a Attachment,
        netns: Option<&'a str>,
    ) -> BoxFuture<'a, TeardownErrors> {
        // The device lives in the container's namespace: deleted there (a disconnect),
        // or gone with the namespace already (a removal).
        async move {
            let mut errs = TeardownErrors::default();
            let Some(ns) = netns.filter(|ns| netns::exists(ns)) else {
                return errs;
            };
            if let Some(inside) = errs.check(Netlink::in_netns(ns)) {
                if let Some(Some(l)) = errs.check(inside.link_by_name(&a.ifname).await) {
                    errs.check(inside.del_link(l.index).await);
                }
            }
            errs
        }
        .boxed()
    }
}
