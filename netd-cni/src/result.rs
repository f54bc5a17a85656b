//! CNI's ADD result (SPEC.md section 5) in the shape of the version the runtime asked
//! for: 1.0.0 and later drop the `version` of each IP that 0.3.x and 0.4.0 carry.
use netd::daemon::Endpoint;
use serde::{Deserialize, Serialize};

use crate::version::at_least;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path for interfaces inside the container; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": only in results before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR notation: "10.1.0.5/16".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl CniResult {
    /// The result of attaching `ep`: the bridge and the veth on the host, the interface
    /// in the namespace (index 2, which the addresses point to), the default routes.
    pub fn of_endpoint(ep: &Endpoint) -> CniResult {
        let inside = Interface {
            name: ep.ifname.clone(),
            mac: ep.mac.clone(),
            mtu: ep.mtu,
            sandbox: ep.netns.clone(),
            ..Default::default()
        };
        // A macvlan endpoint has no host side: its one interface is the sandbox's, as
        // the macvlan plugin reports it.
        let interfaces = if ep.host_veth.is_empty() {
            vec![inside]
        } else {
            vec![
                Interface {
                    name: ep.bridge.clone(),
                    mac: ep.bridge_mac.clone(),
                    ..Default::default()
                },
                Interface {
                    name: ep.host_veth.clone(),
                    ..Default::default()
                },
                inside,
            ]
        };
        let index = Some(interfaces.len() - 1);
        CniResult {
            cni_version: String::new(),
            interfaces,
            // As the bridge plugin with host-local ranges of both families: the IPv4
            // address first, then the IPv6 one, both on the interface in the sandbox.
            ips: std::iter::once(IpConfig {
                version: None,
                address: ep.address.to_string(),
                gateway: ep.gateway.map(|g| g.to_string()),
                interface: index,
            })
            .chain(ep.address6.map(|a| IpConfig {
                version: None,
                address: a.to_string(),
                gateway: ep.gateway6.map(|g| g.to_string()),
                interface: index,
            }))
            .collect(),
            routes: ep
                .routes
                .iter()
                .map(|r| Route {
                    dst: r.dst.to_string(),
                    gw: r.gw.map(|g| g.to_string()),
                    ..Default::default()
                })
                .collect(),
            dns: Dns::default(),
        }
    }

    /// `self` added after the result of earlier plugins in the chain: their interfaces,
    /// addresses and routes stay first, ours follow with their interface indices moved.
    pub fn after(self, prev: CniResult) -> CniResult {
        let offset = prev.interfaces.len();
        let mut out = prev;
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        out.routes.extend(self.routes);
        if out.dns.is_empty() {
            out.dns = self.dns;
        }
        out
    }

    /// The result as version `v` spells it.
    pub fn in_version(mut self, v: &str) -> CniResult {
        self.cni_version = v.to_string();
        let legacy = !at_least(v, "1.0.0");
        for ip in &mut self.ips {
            ip.version = legacy.then(|| {
                if ip.address.contains(':') {
                    "6".to_string()
                } else {
                    "4".to_string()
                }
            });
        }
        if !at_least(v, "1.1.0") {
            // Route attributes other than dst and gw came with 1.1.0.
            for r in &mut self.routes {
                *r = Route {
                    dst: std::mem::take(&mut r.dst),
                    gw: r.gw.take(),
                    ..Default::default()
                };
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd::daemon::Route as EpRoute;
    use serde_json::{json, Value};

    /// The bridge plugin's result from the spec's "Add example".
    const SPEC_BRIDGE_RESULT: &str = r#"{
        "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth3243", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
        ],
        "dns": {"nameservers": ["10.1.0.1"]}
    }"#;

    fn endpoint() -> Endpoint {
        Endpoint {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/blue".into(),
            container: "cni-abc-eth0".into(),
            network: "dbnet".into(),
            network_id: "n".repeat(64),
            address: "10.1.0.5/16".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            address6: None,
            gateway6: None,
            mac: "99:88:77:66:55:44".into(),
            mtu: None,
            host_veth: "veth3243".into(),
            bridge: "cni0".into(),
            bridge_mac: "00:11:22:33:44:55".into(),
            routes: vec![EpRoute {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            port_mappings: vec![],
            aliases: vec![],
        }
    }

    #[test]
    fn the_specs_result_round_trips() {
        let r: CniResult = serde_json::from_str(SPEC_BRIDGE_RESULT).unwrap();
        let want: Value = serde_json::from_str(SPEC_BRIDGE_RESULT).unwrap();
        let mut got = serde_json::to_value(&r).unwrap();
        got.as_object_mut().unwrap().remove("cniVersion");
        assert_eq!(got, want);
    }

    #[test]
    fn an_endpoint_reads_like_the_specs_bridge_result() {
        let r = CniResult::of_endpoint(&endpoint()).in_version("1.1.0");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "cni0", "mac": "00:11:22:33:44:55"},
                    {"name": "veth3243"},
                    {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
                ],
                "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
            })
        );
    }

    /// What the bridge plugin with host-local ranges of both families returns.
    #[test]
    fn a_dual_stack_endpoint_gives_two_ips_and_two_default_routes() {
        let mut ep = endpoint();
        ep.address6 = Some("fd00:1::5/64".parse().unwrap());
        ep.gateway6 = Some("fd00:1::1".parse().unwrap());
        ep.routes.push(EpRoute {
            dst: "::/0".parse().unwrap(),
            gw: Some("fd00:1::1".parse().unwrap()),
        });
        let r = CniResult::of_endpoint(&ep).in_version("1.1.0");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v["ips"],
            json!([
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
                {"address": "fd00:1::5/64", "gateway": "fd00:1::1", "interface": 2}
            ])
        );
        assert_eq!(
            v["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0", "gw": "fd00:1::1"}])
        );
        let old = CniResult::of_endpoint(&ep).in_version("0.4.0");
        assert_eq!(old.ips[1].version.as_deref(), Some("6"));
    }

    #[test]
    fn old_versions_carry_the_ip_version() {
        for (v, want) in [
            ("0.3.0", Some("4")),
            ("0.3.1", Some("4")),
            ("0.4.0", Some("4")),
            ("1.0.0", None),
        ] {
            let r = CniResult::of_endpoint(&endpoint()).in_version(v);
            assert_eq!(r.cni_version, v);
            assert_eq!(r.ips[0].version.as_deref(), want, "{v}");
        }
        let mut with_mtu = CniResult::of_endpoint(&endpoint());
        with_mtu.routes[0].mtu = Some(1400);
        assert_eq!(with_mtu.clone().in_version("1.0.0").routes[0].mtu, None);
        assert_eq!(with_mtu.in_version("1.1.0").routes[0].mtu, Some(1400));
    }

    #[test]
    fn chained_after_another_plugin_its_result_comes_first() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                sandbox: "/var/run/netns/blue".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                address: "127.0.0.1/8".into(),
                interface: Some(0),
                ..Default::default()
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let r = CniResult::of_endpoint(&endpoint()).after(prev);
        assert_eq!(r.interfaces.len(), 4);
        assert_eq!(r.interfaces[0].name, "lo");
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.ips[1].interface, Some(3));
        assert_eq!(r.interfaces[3].name, "eth0");
        assert_eq!(r.dns.nameservers, ["10.1.0.1"]);
    }
}
