//! Network drivers' host side, netavark's shape: a driver validates a network, sets it
//! up and tears it down on the host, and joins and leaves endpoints (a veth into a
//! namespace, with its address and routes). What a driver is (does it route, publish,
//! span hosts, take IPv6) is `model::Traits`, the one table that names drivers; the
//! core picks the code here by the traits' `Plumbing` and never touches links itself.
mod bridge;
mod macvlan;
mod overlay;

use std::fmt;

use futures::future::BoxFuture;

pub use bridge::{route_through, Bridge};

use crate::{
    model::{Attachment, Network, Plumbing},
    netlink::Netlink,
};

/// Every error of a teardown: teardown goes on past a failure, so that one missing piece
/// never leaves the others behind, and reports them all.
#[derive(Debug, Default)]
pub struct TeardownErrors(pub Vec<anyhow::Error>);

impl TeardownErrors {
    pub fn push(&mut self, e: anyhow::Error) {
        self.0.push(e);
    }
    pub fn extend(&mut self, other: TeardownErrors) {
        self.0.extend(other.0);
    }
    /// Records the error of `r`, if any.
    pub fn check<T>(&mut self, r: anyhow::Result<T>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Ok if nothing failed.
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{self}"))
        }
    }
}

impl fmt::Display for TeardownErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{e:#}")?;
        }
        Ok(())
    }
}

/// Where and how an endpoint joins its network.
pub struct Join<'a> {
    /// The namespace: a name under /run/netns or any absolute path (see netns::resolve).
    /// None: the container side is handed to the runtime (Docker's Join). It stays in
    /// the daemon's namespace, named `attachment.ifname`, down and without address or
    /// route, and the runtime moves, renames and configures it.
    pub netns: Option<&'a str>,
    pub attachment: &'a Attachment,
    /// This endpoint gives the namespace its IPv4 default route (see
    /// `model::gateways`), and its IPv6 one.
    pub default_route: bool,
    pub default_route6: bool,
}

/// A network driver. Methods return boxed futures so drivers can sit behind `dyn`.
pub trait NetworkDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks a network the core is about to create; nothing is touched.
    fn validate(&self, net: &Network) -> anyhow::Result<()>;
    /// Makes the host side of `net` exist (idempotent: reconcile calls it at every
    /// start). Returns what was recorded on the way (e.g. the bridge's MAC).
    fn setup<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
    ) -> BoxFuture<'a, anyhow::Result<Network>>;
    /// Removes the host side of `net`; goes on past failures.
    fn teardown<'a>(&'a self, nl: &'a Netlink, net: &'a Network) -> BoxFuture<'a, TeardownErrors>;
    /// Plumbs an endpoint into its namespace; returns the host-side ifindex. A host
    /// side stays down: `sandbox::wire` brings it up once its programs are on it.
    fn join<'a>(
        &'a self,
        nl: &'a Netlink,
        net: &'a Network,
        j: Join<'a>,
    ) -> BoxFuture<'a, anyhow::Result<u32>>;
    /// Removes an endpoint's plumbing: from the host (a veth's namespace side goes
    /// with it), or from its namespace `netns` for a driver whose device lives there.
    fn leave<'a>(
        &'a self,
        nl: &'a Netlink,
        a: &'a Attachment,
        netns: Option<&'a str>,
    ) -> BoxFuture<'a, TeardownErrors>;
}

static BRIDGE: Bridge = Bridge;
static MACVLAN: macvlan::Macvlan = macvlan::Macvlan;
static OVERLAY: overlay::Overlay = overlay::Overlay;
/// The driver whose `leave` removes an endpoint whose network record is gone.
pub static BRIDGE_FALLBACK: Bridge = Bridge;

/// The driver of `net`, or None for the built-in `host` and `none` networks, which have
/// nothing to set up.
pub fn for_network(net: &Network) -> Option<&'static dyn NetworkDriver> {
    match net.traits().plumbing {
        Plumbing::Bridge => Some(&BRIDGE),
        Plumbing::Overlay => Some(&OVERLAY),
        Plumbing::Macvlan => Some(&MACVLAN),
        Plumbing::Nothing => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;

    #[test]
    fn drivers_are_chosen_by_name() {
        let bridge = model::test_network();
        assert_eq!(for_network(&bridge).map(|d| d.name()), Some("bridge"));
        for (driver, name) in [
            (model::DRIVER_OVERLAY, "overlay"),
            (model::DRIVER_MACVLAN, "macvlan"),
        ] {
            let n = Network {
                driver: driver.into(),
                ..model::test_network()
            };
            assert_eq!(for_network(&n).map(|d| d.name()), Some(name));
        }
        for builtin in [model::DRIVER_HOST, model::DRIVER_NULL] {
            let n = Network {
                driver: builtin.into(),
                ..model::test_network()
            };
            assert!(for_network(&n).is_none(), "{builtin} has no driver");
        }
    }

    #[test]
    fn teardown_errors_keep_every_failure() {
        let mut errs = TeardownErrors::default();
        assert!(errs.check(anyhow::Ok(1)).is_some());
        assert!(errs.check::<()>(Err(anyhow::anyhow!("veth a"))).is_none());
        errs.push(anyhow::anyhow!("bridge b"));
        assert_eq!(errs.0.len(), 2);
        let msg = errs.into_result().unwrap_err().to_string();
        assert!(msg.contains("veth a") && msg.contains("bridge b"), "{msg}");
        assert!(TeardownErrors::default().into_result().is_ok());
    }

    #[test]
    fn the_bridge_driver_refuses_a_network_without_a_subnet() {
        let n = Network {
            subnets: Vec::new(),
            ..model::test_network()
        };
        assert!(BRIDGE.validate(&n).is_err());
        assert!(BRIDGE.validate(&model::test_network()).is_ok());
    }
}
