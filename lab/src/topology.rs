//! The lab's wiring: a "host" namespace and a "client" namespace (the outside world)
//! joined by a veth pair that is the host's uplink. Both ends are created inside the
//! lab's namespaces, so nothing ever appears in the machine's root namespace.
use crate::{cmd::ip, Result};

/// The uplink's name in the host namespace.
pub const UPLINK_IF: &str = "up0";
/// Its peer's name in the client namespace.
pub const CLIENT_IF: &str = "cl0";

/// The uplink's addresses (one /24, and optionally one IPv6 /64): the host's, and the
/// client's, which is also the host's default gateway (of each family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uplink {
    pub host_ip: &'static str,
    pub client_ip: &'static str,
    /// IPv6 (unique-local, /64); None: the uplink carries IPv4 only.
    pub host_ip6: Option<&'static str>,
    pub client_ip6: Option<&'static str>,
}

/// The e2e tests' and the demo lab's addresses.
pub const DEFAULT_UPLINK: Uplink = Uplink {
    host_ip: "10.199.0.1",
    client_ip: "10.199.0.2",
    host_ip6: Some("fd00:199::1"),
    client_ip6: Some("fd00:199::2"),
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
    if let (Some(h6), Some(c6)) = (up.host_ip6, up.client_ip6) {
        // nodad: the addresses are usable at once (no tentative second of duplicate
        // address detection on a link with exactly two ends).
        let (h, c) = (format!("{h6}/64"), format!("{c6}/64"));
        ip(&["-n", host, "addr", "add", &h, "dev", UPLINK_IF, "nodad"])?;
        ip(&["-n", client, "addr", "add", &c, "dev", CLIENT_IF, "nodad"])?;
        ip(&["-n", host, "-6", "route", "add", "default", "via", c6])?;
    }
    Ok(())
}
