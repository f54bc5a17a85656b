//! The CNI verbs, each a translation into netd's endpoint API. The plugin itself never
//! touches a link or a map: the daemon owns IPAM, the maps and the pinned programs.
use std::path::Path;

use hyper::{Method, StatusCode};
use netd::daemon::{Endpoint, EndpointKey, EndpointRequest, GcRequest};
use serde_json::{json, Value};

use crate::{
    conf::NetConf,
    daemon::{segment, Daemon, DaemonError},
    error::{code, CniError},
    result::CniResult,
    version::{at_least, CURRENT_VERSION, SUPPORTED_VERSIONS},
};

/// CNI_COMMAND.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Verb {
    pub fn parse(s: &str) -> Result<Verb, CniError> {
        Ok(match s {
            "ADD" => Verb::Add,
            "DEL" => Verb::Del,
            "CHECK" => Verb::Check,
            "STATUS" => Verb::Status,
            "VERSION" => Verb::Version,
            "GC" => Verb::Gc,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    "invalid CNI_COMMAND",
                    format!(
                        "CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, STATUS, VERSION or GC"
                    ),
                ))
            }
        })
    }
}

/// The CNI_* parameters of one invocation.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    fn require<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
        v.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                "missing environment variable",
                format!("{name} is not set"),
            )
        })
    }

    fn container_id(&self) -> Result<&str, CniError> {
        Self::require(&self.container_id, "CNI_CONTAINERID")
    }

    fn ifname(&self) -> Result<&str, CniError> {
        Self::require(&self.ifname, "CNI_IFNAME")
    }

    /// CNI_NETNS, which must name an existing namespace by absolute path.
    fn netns(&self) -> Result<&str, CniError> {
        let ns = Self::require(&self.netns, "CNI_NETNS")?;
        let bad = |why: &str| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                "invalid CNI_NETNS",
                format!("CNI_NETNS={ns}: {why}"),
            )
        };
        if !ns.starts_with('/') {
            return Err(bad("not an absolute path"));
        }
        if !Path::new(ns).exists() {
            return Err(bad("no such network namespace"));
        }
        Ok(ns)
    }

    fn endpoint_path(&self) -> Result<String, CniError> {
        Ok(format!(
            "/netd/endpoints/{}/{}",
            segment(self.container_id()?),
            segment(self.ifname()?)
        ))
    }
}

/// A daemon failure as CNI's error. `refused` is the code for a refusal the spec has
/// no word for.
fn from_daemon(e: DaemonError, refused: u32) -> CniError {
    match &e {
        DaemonError::Unreachable { .. } => CniError::new(
            code::TRY_AGAIN_LATER,
            "netd daemon not reachable",
            e.to_string(),
        ),
        DaemonError::Refused { status, .. }
            if *status == StatusCode::BAD_REQUEST || *status == StatusCode::NOT_FOUND =>
        {
            CniError::new(code::INVALID_CONFIG, "refused by netd", e.to_string())
        }
        DaemonError::Refused { .. } => CniError::new(refused, "refused by netd", e.to_string()),
        DaemonError::Protocol(_) => CniError::new(code::IO_FAILURE, "netd API", e.to_string()),
    }
}

fn decode_prev(conf: &NetConf) -> Result<Option<CniResult>, CniError> {
    conf.prev_result
        .clone()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                CniError::new(
                    code::DECODING_FAILURE,
                    "cannot decode prevResult",
                    e.to_string(),
                )
            })
        })
        .transpose()
}

/// VERSION: the versions netd-cni speaks, in the version the runtime asked in.
pub fn version(stdin: &[u8]) -> String {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.to_string());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS}).to_string()
}

pub async fn add(conf: &NetConf, env: &Env) -> Result<String, CniError> {
    let (ip, ip6) = conf.static_ips()?;
    let req = EndpointRequest {
        container_id: env.container_id()?.to_string(),
        ifname: env.ifname()?.to_string(),
        netns: env.netns()?.to_string(),
        network: conf.network()?,
        ip,
        ip6,
        mac: conf.runtime_config.mac.clone(),
        port_mappings: conf.port_mappings()?,
        aliases: conf.aliases(),
    };
    let prev = decode_prev(conf)?;
    let ep: Endpoint = Daemon::new(&conf.socket())
        .call(Method::POST, "/netd/endpoints", Some(&req))
        .await
        .map_err(|e| from_daemon(e, code::DAEMON_REFUSED))?
        .ok_or_else(|| CniError::new(code::IO_FAILURE, "netd API", "empty answer to ADD"))?;
    let mut result = CniResult::of_endpoint(&ep);
    if let Some(prev) = prev {
        result = result.after(prev);
    }
    Ok(serde_json::to_string(&result.in_version(&conf.cni_version)).unwrap_or_default())
}

/// DEL succeeds whenever the attachment is gone afterwards: a second DEL, a namespace
/// that no longer exists, a daemon that no longer knows it.
pub async fn del(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    let r = Daemon::new(&conf.socket())
        .call::<(), Value>(Method::DELETE, &env.endpoint_path()?, None)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(DaemonError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
        Err(e) => Err(from_daemon(e, code::DAEMON_REFUSED)),
    }
}

/// CHECK: prevResult against the daemon's record, then the daemon's record against the
/// kernel (interface, address, route, veth, program, map entries).
pub async fn check(conf: &NetConf, env: &Env) -> Result<(), CniError> {
    if !at_least(&conf.cni_version, "0.4.0") {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "CHECK needs cniVersion 0.4.0 or later",
            format!("the configuration is cniVersion {}", conf.cni_version),
        ));
    }
    let netns = env.netns()?;
    let prev = decode_prev(conf)?.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult",
            "the runtime passed no prevResult",
        )
    })?;
    let daemon = Daemon::new(&conf.socket());
    let path = env.endpoint_path()?;
    let ep: Endpoint = match daemon.call::<(), Endpoint>(Method::GET, &path, None).await {
        Ok(Some(ep)) => ep,
        Ok(None) => return Err(CniError::new(code::IO_FAILURE, "netd API", "empty answer")),
        Err(DaemonError::Refused { status, message }) if status == StatusCode::NOT_FOUND => {
            return Err(CniError::new(
                code::UNKNOWN_CONTAINER,
                "unknown container",
                message,
            ))
        }
        Err(e) => return Err(from_daemon(e, code::DAEMON_REFUSED)),
    };
    let mut drift = compare(&prev, &ep, netns, &conf.network()?);
    let kernel: Value = daemon
        .call::<(), Value>(Method::GET, &format!("{path}/check"), None)
        .await
        .map_err(|e| from_daemon(e, code::DAEMON_REFUSED))?
        .unwrap_or_default();
    if let Some(problems) = kernel["problems"].as_array() {
        drift.extend(problems.iter().filter_map(|p| p.as_str().map(String::from)));
    }
    if drift.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::DRIFT,
            "the attachment differs from what ADD made",
            drift.join("; "),
        ))
    }
}

/// What differs between prevResult and the daemon's endpoint.
pub fn compare(prev: &CniResult, ep: &Endpoint, netns: &str, network: &str) -> Vec<String> {
    let mut drift = Vec::new();
    if ep.network != network && ep.network_id != network {
        drift.push(format!(
            "attached to network {}, the configuration names {network}",
            ep.network
        ));
    }
    if ep.netns != netns {
        drift.push(format!("attached in {}, CNI_NETNS is {netns}", ep.netns));
    }
    let Some(idx) = prev
        .interfaces
        .iter()
        .position(|i| i.name == ep.ifname && i.sandbox == netns)
    else {
        drift.push(format!(
            "prevResult has no interface {} in {netns}",
            ep.ifname
        ));
        return drift;
    };
    let iface = &prev.interfaces[idx];
    if !iface.mac.is_empty() && !iface.mac.eq_ignore_ascii_case(&ep.mac) {
        drift.push(format!(
            "{} has MAC {}, prevResult says {}",
            ep.ifname, ep.mac, iface.mac
        ));
    }
    let v4 = (ep.address.to_string(), ep.gateway.map(|g| g.to_string()));
    let v6 = ep
        .address6
        .map(|a| (a.to_string(), ep.gateway6.map(|g| g.to_string())));
    for (address, gw) in std::iter::once(v4).chain(v6) {
        let listed = prev.ips.iter().find(|ip| {
            ip.interface == Some(idx)
                && ip.address.parse::<ipnetwork::IpNetwork>().ok() == address.parse().ok()
        });
        match listed {
            None => drift.push(format!(
                "{} has address {address}, which prevResult does not list",
                ep.ifname
            )),
            Some(ip) if ip.gateway.is_some() && ip.gateway != gw => drift.push(format!(
                "gateway of {address} is {}, prevResult says {}",
                gw.unwrap_or_default(),
                ip.gateway.clone().unwrap_or_default()
            )),
            Some(_) => {}
        }
    }
    for r in &ep.routes {
        let dst = r.dst.to_string();
        if !prev.routes.iter().any(|p| p.dst == dst) {
            drift.push(format!("prevResult lacks the route to {dst}"));
        }
    }
    drift
}

/// STATUS: ready when the daemon answers and knows the network.
pub async fn status(conf: &NetConf) -> Result<(), CniError> {
    require_1_1(conf, "STATUS")?;
    let network = conf.network()?;
    let r = Daemon::new(&conf.socket())
        .call::<(), Value>(
            Method::GET,
            &format!("/networks/{}", segment(&network)),
            None,
        )
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e @ DaemonError::Unreachable { .. }) => Err(CniError::new(
            code::PLUGIN_NOT_AVAILABLE,
            "netd daemon not reachable",
            e.to_string(),
        )),
        Err(e @ DaemonError::Refused { .. }) => Err(CniError::new(
            code::PLUGIN_NOT_AVAILABLE,
            "netd cannot attach to this network",
            e.to_string(),
        )),
        Err(e) => Err(from_daemon(e, code::PLUGIN_NOT_AVAILABLE)),
    }
}

/// GC: the daemon removes this network's endpoints not in `cni.dev/valid-attachments`.
pub async fn gc(conf: &NetConf) -> Result<(), CniError> {
    require_1_1(conf, "GC")?;
    let keep = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "GC needs cni.dev/valid-attachments",
            "without the list every attachment would look stale",
        )
    })?;
    let req = GcRequest {
        network: conf.network()?,
        keep: keep
            .into_iter()
            .map(|a| EndpointKey {
                container_id: a.container_id,
                ifname: a.ifname,
            })
            .collect(),
    };
    let r = Daemon::new(&conf.socket())
        .call::<_, Value>(Method::POST, "/netd/endpoints/gc", Some(&req))
        .await;
    match r {
        Ok(_) => Ok(()),
        // A network netd does not know has no endpoints to collect.
        Err(DaemonError::Refused { status, .. }) if status == StatusCode::NOT_FOUND => Ok(()),
        Err(e) => Err(from_daemon(e, code::DAEMON_REFUSED)),
    }
}

fn require_1_1(conf: &NetConf, verb: &str) -> Result<(), CniError> {
    if at_least(&conf.cni_version, "1.1.0") {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            &format!("{verb} needs cniVersion 1.1.0"),
            format!("the configuration is cniVersion {}", conf.cni_version),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netd::daemon::Route;

    fn endpoint() -> Endpoint {
        Endpoint {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/blue".into(),
            container: "cni-abc-eth0".into(),
            network: "dbnet".into(),
            network_id: "n".repeat(64),
            address: "10.1.0.5/16".parse().unwrap(),
            gateway: Some("10.1.0.1".parse().unwrap()),
            address6: None,
            gateway6: None,
            mac: "02:42:0a:01:00:05".into(),
            mtu: None,
            host_veth: "ndv0123".into(),
            bridge: "br0".into(),
            bridge_mac: "00:11:22:33:44:55".into(),
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.1".parse().unwrap()),
            }],
            port_mappings: vec![],
            aliases: vec![],
        }
    }

    #[test]
    fn verbs_and_version() {
        assert_eq!(Verb::parse("GC").unwrap(), Verb::Gc);
        let e = Verb::parse("ATTACH").unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.details.contains("CNI_COMMAND"), "{e}");
        let v: Value = serde_json::from_str(&version(br#"{"cniVersion":"0.4.0"}"#)).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let v: Value = serde_json::from_str(&version(b"")).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn check_compares_prev_result_with_the_endpoint() {
        let ep = endpoint();
        let prev = CniResult::of_endpoint(&ep).in_version("1.1.0");
        assert!(compare(&prev, &ep, "/run/netns/blue", "dbnet").is_empty());
        let mut moved = prev.clone();
        moved.ips[0].address = "10.1.0.9/16".into();
        moved.interfaces[2].mac = "02:42:0a:01:00:09".into();
        let d = compare(&moved, &ep, "/run/netns/blue", "dbnet");
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            d[0].contains("MAC") && d[1].contains("10.1.0.5/16"),
            "{d:?}"
        );
        let d = compare(&prev, &ep, "/run/netns/red", "othernet");
        assert!(d.iter().any(|x| x.contains("othernet")), "{d:?}");
        assert!(d.iter().any(|x| x.contains("no interface eth0")), "{d:?}");
    }

    #[test]
    fn check_compares_the_ipv6_address_too() {
        let mut ep = endpoint();
        ep.address6 = Some("fd00:1::5/64".parse().unwrap());
        ep.gateway6 = Some("fd00:1::1".parse().unwrap());
        let prev = CniResult::of_endpoint(&ep).in_version("1.1.0");
        assert!(compare(&prev, &ep, "/run/netns/blue", "dbnet").is_empty());
        let mut moved = prev.clone();
        moved.ips[1].address = "fd00:1::9/64".into();
        let d = compare(&moved, &ep, "/run/netns/blue", "dbnet");
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("fd00:1::5/64"), "{d:?}");
        let mut gw = prev;
        gw.ips[1].gateway = Some("fd00:1::fe".into());
        let d = compare(&gw, &ep, "/run/netns/blue", "dbnet");
        assert!(d[0].contains("gateway of fd00:1::5/64"), "{d:?}");
    }

    #[test]
    fn missing_environment_is_error_4_naming_the_variable() {
        let e = Env::default().container_id().unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.details.contains("CNI_CONTAINERID"));
        let e = Env {
            netns: Some("relative".into()),
            ..Default::default()
        }
        .netns()
        .unwrap_err();
        assert!(e.details.contains("absolute"), "{e}");
    }
}
