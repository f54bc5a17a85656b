//! What a container asks of each network it joins, in Docker 25-28's words: the long
//! form of `--network` (`name=N,alias=A,ip=IP,ip6=IP,mac-address=MAC,link-local-ip=IP,
//! driver-opt=K=V,gw-priority=N`), `--mac-address`, the endpoint driver options
//! `com.docker.network.endpoint.ifname` and `.sysctls`, and which endpoint gives a
//! sandbox its default routes. Checked here once, so the store holds only values that
//! make sense.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

use super::{Attachment, Network, RunRequest};
use crate::error::NetdError;

/// The interface name inside the container (Docker 28's endpoint driver option).
pub const ENDPOINT_IFNAME: &str = "com.docker.network.endpoint.ifname";
/// Per-interface sysctls, `net.X.Y.IFNAME.Z=V,...` (Docker 27's).
pub const ENDPOINT_SYSCTLS: &str = "com.docker.network.endpoint.sysctls";
/// The endpoint driver options netd understands; any other is an error.
pub const ENDPOINT_OPTIONS: [&str; 2] = [ENDPOINT_IFNAME, ENDPOINT_SYSCTLS];

/// One network a container joins and what it asks of it (Docker's EndpointSettings as
/// a request).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// The network, by name or id.
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default)]
    pub link_local_ips: Vec<IpAddr>,
    /// The container's MAC on this network, as given (checked by `parse_mac`).
    #[serde(default)]
    pub mac_address: Option<String>,
    /// Endpoint driver options (`ENDPOINT_OPTIONS`).
    #[serde(default)]
    pub driver_opts: BTreeMap<String, String>,
    /// Docker 28's gw-priority: the endpoint with the highest gives the default routes.
    #[serde(default)]
    pub gw_priority: i32,
    /// `--link NAME[:ALIAS]`.
    #[serde(default)]
    pub links: Vec<String>,
}

fn invalid(msg: String) -> NetdError {
    NetdError::InvalidArgument(msg)
}

impl RunRequest {
    /// Every network the container joins with what it asks of each: `networks`, the
    /// first with the request's own options merged in (Docker's CLI refuses the same
    /// option in both places, and so does this), or else `network` (default `bridge`)
    /// with them. A network twice is an error.
    pub fn endpoints(&self) -> Result<Vec<EndpointRequest>, NetdError> {
        let mut eps = self.networks.clone();
        if eps.is_empty() {
            eps.push(EndpointRequest {
                network: self.network.clone().unwrap_or_else(|| "bridge".into()),
                ..Default::default()
            });
        }
        let first = &mut eps[0];
        let conflict = |what: &str, per: &str| {
            invalid(format!(
                "conflicting options: cannot specify both {what} and per-network {per}"
            ))
        };
        if !self.aliases.is_empty() {
            if !first.aliases.is_empty() {
                return Err(conflict("--network-alias", "alias"));
            }
            first.aliases = self.aliases.clone();
        }
        if self.ip.is_some() {
            if first.ip.is_some() {
                return Err(conflict("--ip", "IPv4 address"));
            }
            first.ip = self.ip;
        }
        if self.ip6.is_some() {
            if first.ip6.is_some() {
                return Err(conflict("--ip6", "IPv6 address"));
            }
            first.ip6 = self.ip6;
        }
        if self.mac_address.is_some() {
            if first.mac_address.is_some() {
                return Err(conflict("--mac-address", "MAC address"));
            }
            first.mac_address = self.mac_address.clone();
        }
        if !self.link_local_ips.is_empty() {
            if !first.link_local_ips.is_empty() {
                return Err(conflict("--link-local-ip", "link-local IP addresses"));
            }
            first.link_local_ips = self.link_local_ips.clone();
        }
        for (i, e) in eps.iter().enumerate() {
            if e.network.trim().is_empty() {
                return Err(invalid("--network: no network name (name=NETWORK)".into()));
            }
            if eps[..i].iter().any(|o| o.network == e.network) {
                return Err(invalid(format!(
                    "network {:?} is specified multiple times",
                    e.network
                )));
            }
            check_driver_opts(&e.driver_opts)?;
            if let Some(m) = &e.mac_address {
                parse_mac(m)?;
            }
        }
        Ok(eps)
    }
}

/// A MAC address in any of the notations Go's net.ParseMAC (Docker's) takes for 6 bytes
/// (`92:d0:c6:0a:29:33`, `92-d0-c6-0a-29-33`, `92d0.c60a.2933`), unicast and not all
/// zeros: the kernel refuses those on a veth, and a multicast source is never a host.
/// The error says what is wrong with it.
pub fn mac_bytes(s: &str) -> Result<[u8; 6], &'static str> {
    let t = s.trim();
    let b = t.as_bytes();
    let hex: String = if t.len() == 14 && b[4] == b'.' && b[9] == b'.' {
        t.split('.').collect()
    } else if t.len() == 17 && (b[2] == b':' || b[2] == b'-') {
        if b.iter().skip(2).step_by(3).any(|x| *x != b[2]) {
            return Err("not a MAC address");
        }
        t.split(b[2] as char).collect()
    } else {
        return Err("not a MAC address");
    };
    if hex.len() != 12 || !hex.bytes().all(|x| x.is_ascii_hexdigit()) {
        return Err("not a MAC address");
    }
    let mut mac = [0u8; 6];
    for (i, x) in mac.iter_mut().enumerate() {
        *x = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| "not a MAC address")?;
    }
    if mac[0] & 1 == 1 {
        return Err("a multicast address: an interface needs a unicast one");
    }
    if mac == [0; 6] {
        return Err("all zeros");
    }
    Ok(mac)
}

/// `--mac-address` (or a network's `mac-address=`) as bytes (`mac_bytes`).
pub fn parse_mac(s: &str) -> Result<[u8; 6], NetdError> {
    mac_bytes(s).map_err(|why| {
        invalid(format!(
            "invalid --mac-address {s:?}: {why} (a unicast MAC address such as 92:d0:c6:0a:29:33)"
        ))
    })
}

/// An interface name the kernel takes (dev_valid_name): 1-15 bytes, no '/', ':' or
/// whitespace, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), NetdError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {ENDPOINT_IFNAME} {name:?}: an interface name of 1-15 characters without '/', ':' or spaces"
        )))
    }
}

/// A sysctl's name part: what /proc/sys paths are made of.
fn sysctl_word(w: &str) -> bool {
    !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One per-interface sysctl: `net.X.Y.IFNAME.Z` (X ipv4, ipv6 or mpls) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfSysctl {
    pub family: String,
    pub group: String,
    pub key: String,
    pub value: String,
}

impl IfSysctl {
    /// Its file for interface `ifname` in the namespace of the thread that opens it.
    pub fn path(&self, ifname: &str) -> String {
        format!(
            "/proc/sys/net/{}/{}/{ifname}/{}",
            self.family, self.group, self.key
        )
    }
}

/// `com.docker.network.endpoint.sysctls` as Docker checks it: a comma-separated list
/// of `net.X.Y.IFNAME.Z=V` ("ifname" too, since Docker's CLI lowercases driver
/// options), X one of ipv4, ipv6, mpls. netd also refuses keys the kernel does not
/// have (`exists` says whether `net.X.Y.default.Z` does) and `disable_ipv6`: netd
/// keeps IPv6 off on interfaces of networks without `--ipv6` (their IPv6 would not be
/// policed) and on for those with it.
pub fn parse_if_sysctls(
    list: &str,
    exists: impl Fn(&str) -> bool,
) -> Result<Vec<IfSysctl>, NetdError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = |why: &str| invalid(format!("invalid {ENDPOINT_SYSCTLS} entry {item:?}: {why}"));
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad("expected net.X.Y.IFNAME.Z=VALUE"))?;
        let parts: Vec<&str> = k.split('.').collect();
        let shape = parts.len() == 5
            && parts[0] == "net"
            && ["ipv4", "ipv6", "mpls"].contains(&parts[1])
            && (parts[3] == "IFNAME" || parts[3] == "ifname")
            && sysctl_word(parts[2])
            && sysctl_word(parts[4]);
        if !shape {
            return Err(bad(
                "represent net.X.Y.ethN.Z=V as net.X.Y.IFNAME.Z=V, X being ipv4, ipv6 or mpls",
            ));
        }
        if parts[4] == "disable_ipv6" {
            return Err(bad(
                "netd decides IPv6 per network (network create --ipv6), not per interface",
            ));
        }
        let default = format!("net.{}.{}.default.{}", parts[1], parts[2], parts[4]);
        if !exists(&default) {
            return Err(bad(&format!("the kernel has no such sysctl ({default})")));
        }
        if v.trim().is_empty() {
            return Err(bad("no value"));
        }
        out.push(IfSysctl {
            family: parts[1].into(),
            group: parts[2].into(),
            key: parts[4].into(),
            value: v.trim().into(),
        });
    }
    Ok(out)
}

/// Whether sysctl `key` (dotted) exists in the calling thread's namespace.
pub fn sysctl_exists(key: &str) -> bool {
    std::path::Path::new(&format!("/proc/sys/{}", key.replace('.', "/"))).is_file()
}

/// The endpoint driver options of a request, checked: only `ENDPOINT_OPTIONS`, a valid
/// interface name, well-formed sysctls.
pub fn check_driver_opts(opts: &BTreeMap<String, String>) -> Result<(), NetdError> {
    for (k, v) in opts {
        match k.as_str() {
            ENDPOINT_IFNAME => check_ifname(v)?,
            ENDPOINT_SYSCTLS => {
                parse_if_sysctls(v, sysctl_exists)?;
            }
            _ => {
                return Err(invalid(format!(
                    "unknown endpoint driver option {k:?} (netd knows {})",
                    ENDPOINT_OPTIONS.join(", ")
                )))
            }
        }
    }
    Ok(())
}

/// The interface sysctls an attachment asked for (checked when it was made).
pub fn if_sysctls_of(a: &Attachment) -> Vec<IfSysctl> {
    a.driver_opts
        .get(ENDPOINT_SYSCTLS)
        .and_then(|l| parse_if_sysctls(l, |_| true).ok())
        .unwrap_or_default()
}

/// `--sysctl KEY=VALUE` of a container's own namespace: net.* keys only (netd makes
/// network namespaces, no IPC or UTS ones), that the kernel has, none of an interface
/// (Docker 28 wants those as `com.docker.network.endpoint.sysctls`), and no
/// `disable_ipv6` (netd decides IPv6 per network).
pub fn check_ns_sysctls(
    sysctls: &BTreeMap<String, String>,
    exists: impl Fn(&str) -> bool,
) -> Result<(), NetdError> {
    for (k, v) in sysctls {
        let bad = |why: &str| invalid(format!("invalid --sysctl {k}={v}: {why}"));
        let parts: Vec<&str> = k.split('.').collect();
        if parts[0] != "net" || parts.len() < 2 || !parts.iter().all(|p| sysctl_word(p)) {
            return Err(bad(
                "netd sets net.* sysctls of the container's network namespace only",
            ));
        }
        if parts.len() == 5 && !["all", "default", "lo"].contains(&parts[3]) {
            return Err(bad(&format!(
                "an interface's sysctl goes in the endpoint driver option {ENDPOINT_SYSCTLS} (net.X.Y.IFNAME.Z=V)"
            )));
        }
        if parts.last() == Some(&"disable_ipv6") {
            return Err(bad(
                "netd decides IPv6 per network (network create --ipv6), not per container",
            ));
        }
        if !exists(k) {
            return Err(bad("the kernel has no such sysctl"));
        }
        if v.trim().is_empty() {
            return Err(bad("no value"));
        }
    }
    Ok(())
}

/// Which of a sandbox's endpoints give its default routes, IPv4's and IPv6's, as Docker
/// 28 decides (libnetwork's Endpoint.Less over the sandbox's endpoints): the highest
/// gw-priority first, then endpoints of networks that are not internal, then those
/// with gateways of both families, then by network name; the first with a gateway of a
/// family gives that family's route. `nets` resolves an attachment's network.
pub fn gateways<'a>(
    atts: &[Attachment],
    net_of: impl Fn(&Attachment) -> Option<&'a Network>,
) -> (Option<usize>, Option<usize>) {
    let has = |a: &Attachment| -> (bool, bool) {
        match net_of(a) {
            Some(n) if !n.internal => (true, a.ip6.is_some() && n.gateway6().is_some()),
            _ => (false, false),
        }
    };
    let mut order: Vec<usize> = (0..atts.len()).collect();
    order.sort_by_key(|&i| {
        let a = &atts[i];
        let net = net_of(a);
        let (g4, g6) = has(a);
        (
            std::cmp::Reverse(a.gw_priority),
            net.is_none_or(|n| n.internal),
            std::cmp::Reverse(u8::from(g4) + u8::from(g6)),
            net.map(|n| n.name.clone()).unwrap_or_default(),
        )
    });
    let v4 = order.iter().copied().find(|&i| has(&atts[i]).0);
    let v6 = order.iter().copied().find(|&i| has(&atts[i]).1);
    (v4, v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_attachment, test_network};

    #[test]
    fn macs_in_gos_notations_unicast_only() {
        let m = [0x92, 0xd0, 0xc6, 0x0a, 0x29, 0x33];
        assert_eq!(parse_mac("92:d0:c6:0a:29:33").unwrap(), m);
        assert_eq!(parse_mac("92-D0-C6-0A-29-33").unwrap(), m);
        assert_eq!(parse_mac("92d0.c60a.2933").unwrap(), m);
        for bad in [
            "",
            "92:d0:c6:0a:29",
            "92:d0:c6:0a:29:33:44",
            "92:d0-c6:0a:29:33",
            "zz:d0:c6:0a:29:33",
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
        ] {
            let e = parse_mac(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --mac-address"), "{bad}: {e}");
        }
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("multicast"));
    }

    #[test]
    fn interface_names_as_the_kernel_takes_them() {
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("backend.100").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen_chars_xx"] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_sysctls_follow_dockers_rules() {
        let all = |_: &str| true;
        let s = parse_if_sysctls(
            "net.ipv4.conf.IFNAME.log_martians=1,net.ipv6.conf.ifname.forwarding=0",
            all,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0].path("eth3"),
            "/proc/sys/net/ipv4/conf/eth3/log_martians"
        );
        assert_eq!(s[1].value, "0");
        for bad in [
            "net.ipv4.conf.eth0.log_martians=1",
            "net.core.conf.IFNAME.x=1",
            "net.ipv4.conf.IFNAME.log_martians",
            "net.ipv4.conf.IFNAME.a.b=1",
            "net.ipv4.conf.IFNAME..=1",
            "net.ipv4.conf.IFNAME.log_martians=",
            "net.ipv6.conf.IFNAME.disable_ipv6=0",
        ] {
            let e = parse_if_sysctls(bad, all).unwrap_err().to_string();
            assert!(e.contains(ENDPOINT_SYSCTLS), "{bad}: {e}");
        }
        let none = |_: &str| false;
        let e = parse_if_sysctls("net.ipv4.conf.IFNAME.nope=1", none).unwrap_err();
        assert!(e.to_string().contains("net.ipv4.conf.default.nope"), "{e}");
    }

    #[test]
    fn namespace_sysctls_are_net_keys_of_no_interface() {
        let all = |_: &str| true;
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(check_ns_sysctls(&one("net.ipv4.ip_unprivileged_port_start", "0"), all).is_ok());
        assert!(check_ns_sysctls(&one("net.ipv4.conf.all.forwarding", "1"), all).is_ok());
        for (k, why) in [
            ("kernel.msgmax", "net.*"),
            ("net.ipv4.conf.eth0.forwarding", ENDPOINT_SYSCTLS),
            ("net.ipv6.conf.all.disable_ipv6", "IPv6"),
        ] {
            let e = check_ns_sysctls(&one(k, "1"), all).unwrap_err().to_string();
            assert!(
                e.starts_with("invalid --sysctl") && e.contains(why),
                "{k}: {e}"
            );
        }
        let e = check_ns_sysctls(&one("net.ipv4.nope", "1"), |_| false).unwrap_err();
        assert!(e.to_string().contains("no such sysctl"), "{e}");
    }

    #[test]
    fn default_routes_as_docker_28_picks_them() {
        let net = |name: &str, id: &str, internal: bool, v6: bool| Network {
            name: name.into(),
            id: id.into(),
            internal,
            ..match v6 {
                true => crate::model::test_network_on(&["10.1.0.0/24", "fd00::/64"]),
                false => test_network(),
            }
        };
        let nets = [
            net("zeta", "z", false, false),
            net("alpha", "a", false, false),
            net("inner", "i", true, false),
            net("dual", "d", false, true),
        ];
        let att = |id: &str, prio: i32| Attachment {
            network: id.into(),
            gw_priority: prio,
            ip6: (id == "d").then(|| "fd00::2".parse().unwrap()),
            ..test_attachment()
        };
        let of = |a: &Attachment| nets.iter().find(|n| n.id == a.network);
        // Equal priorities: by name, whatever the order they were given in.
        assert_eq!(gateways(&[att("z", 0), att("a", 0)], of), (Some(1), None));
        // The highest priority wins, even over the name.
        assert_eq!(gateways(&[att("z", 5), att("a", 0)], of), (Some(0), None));
        // Internal networks give no route; dual stack comes before IPv4 only.
        assert_eq!(gateways(&[att("i", 9)], of), (None, None));
        assert_eq!(
            gateways(&[att("a", 0), att("d", 0)], of),
            (Some(1), Some(1))
        );
        // IPv4's route from the priority, IPv6's from the only endpoint with one.
        assert_eq!(
            gateways(&[att("a", 1), att("d", 0)], of),
            (Some(0), Some(1))
        );
    }
}
