//! Docker's overlay driver as netd has it: on each node a bridge of the network's own
//! (made, joined and left as the bridge driver does), joined to the other nodes' by the
//! node's one VXLAN device, which the daemon keeps (`daemon::overlay`) and the
//! datapath's overlay programs use to carry each container's packets to its node.
//! What is overlay's own: the network's VXLAN id (allocated cluster-wide, so a network
//! without one is not an overlay network yet) and the MTU the tunnel leaves.
use anyhow::anyhow;
use futures::future::BoxFuture;

use super::{bridge::Bridge, Join, NetworkDriver, TeardownErrors};
use crate::{
    model::{Attachment, Network},
    netlink::Netlink,
};

/// VXLAN over IPv4 takes 50 bytes of each frame (outer Ethernet, IPv4, UDP, VXLAN).
const VXLAN_OVERHEAD: u32 = 50;

pub struct Overlay;

static BRIDGE: Bridge = Bridge;

impl NetworkDriver for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn validate(&self, net: &Network) -> anyhow::Result<()> {
        if let Some(mtu) = net.mtu.filter(|m| *m + VXLAN_OVERHEAD > 65535) {
            return Err(anyhow!(
                "overlay network {}: MTU {mtu} leaves no room for the VXLAN header ({VXLAN_OVERHEAD} bytes)",
                net.name
            ));
        }
        BRIDGE.validate(net)
    }

    fn setup<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
    ) -> BoxFuture<'a, anyhow::Result<Network>> {
        // The node's VXLAN device is the daemon's (one for every overlay network, by
        // VNI); this network's part on the node is its bridge.
        BRIDGE.setup(nl, net)
    }

    fn teardown<'a>(&'a self, nl: &'a Netlink, net: &'a Network) -> BoxFuture<'a, TeardownErrors> {
        BRIDGE.teardown(nl, net)
    }

    fn join<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
        j: Join<'a>,
    ) -> BoxFuture<'a, anyhow::Result<u32>> {
        BRIDGE.join(nl, net, j)
    }

    fn leave<'a>(
        &'a self,
        nl: &'a Netlink,
        a: &'a Attachment,
        netns: Option<&'a str>,
    ) -> BoxFuture<'a, TeardownErrors> {
        BRIDGE.leave(nl, a, netns)
    }
}
