//! The lab's wiring: a "host" namespace and a "client" namespace (the outside world)
//! joined by a veth pair that is the host's uplink. Both ends are created inside the
//! lab's namespaces, so nothing ever appears in the machine's root namespace.
use crate::{cmd::ip, Result};

/// The uplink's name in the host namespace.
pub const UPLINK_IF: &str = "up0";
/// Its peer's name in the client namespace.
pub const CLIENT_IF: &str = "cl0";

/// The uplink's addresses (one /24): the host's, and the client's, which is also the
/// host's default gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub host_ip: &'static str,
    pub client_ip: &'static str,
}

/// The e2e tests' and the demo lab's addresses.
pub const DEFAULT_UPLINK: Uplink = Uplink {
    host_ip: "10.199.0.1",
    client_ip: "10.199.0.2",
};

/// Wires existing namespaces `host` and `client` together.
pub fn build(host: &str, client: &str, up: &Uplink) -> Result<()> {
    ip(&[
        "-n", host, "link", "add", UPLINK_IF, "type", "veth", "peer", "name", CLIENT_IF, "netns",
        client,
    ])?;
    let host_cidr = format!("{}/24", up.host_ip);
    let client_cidr = format!("{}/24", up.client_ip);
    ip(&["-n", host, "addr", "add", &host_cidr, "dev", UPLINK_IF])?;
    ip(&["-n", host, "link", "set", UPLINK_IF, "up"])?;
    ip(&["-n", client, "addr", "add", &client_cidr, "dev", CLIENT_IF])?;
    ip(&["-n", client, "link", "set", CLIENT_IF, "up"])?;
    ip(&["-n", host, "route", "add", "default", "via", up.client_ip])?;
    Ok(())
}
