//! `POST /containers/create`: Docker's container create (what `docker run`, `docker
//! create`, docker-py's `containers.run` and compose send) as netd's run request. netd
//! runs commands on the host's filesystem: the one image is `netd`. What netd honours
//! is read; any other field must be empty (Docker's zero value), else the request is
//! refused naming it, never ignored.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use axum::{
    extract::{Query, State},
    http::StatusCode,
};
use serde_json::{json, Map, Value};

use super::{ApiJson, Json, D, Q};
use crate::{
    error::NetdError,
    model::{self, EndpointRequest, PortSpec, Proto, RunRequest},
};

/// The image netd's containers have (what inspect shows).
pub const IMAGE: &str = "netd";

fn invalid(msg: String) -> NetdError {
    NetdError::InvalidArgument(msg)
}

/// Config fields netd reads (the rest must be empty).
const CONFIG_KNOWN: &[&str] = &[
    "Hostname",
    "Cmd",
    "Entrypoint",
    "Image",
    "Labels",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "MacAddress",
    "HostConfig",
    "NetworkingConfig",
    // Docker's defaults that mean "as usual".
    "StopSignal",
    "StopTimeout",
];
const HOST_CONFIG_KNOWN: &[&str] = &[
    "NetworkMode",
    "PortBindings",
    "PublishAllPorts",
    "AutoRemove",
    "Dns",
    "DnsSearch",
    "DnsOptions",
    "Links",
    "Sysctls",
    "RestartPolicy",
    "LogConfig",
    // The terminal's first size: netd follows resizes instead.
    "ConsoleSize",
];

/// Docker's zero value: what a client sends for a field the user did not set.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_zero),
        Value::Object(o) => o.values().all(is_zero),
    }
}

/// Refuses a non-empty field of `obj` that netd does not read.
fn only_known(obj: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), NetdError> {
    for (k, v) in obj {
        // -1 is Docker's "unset" for the swappiness the docker CLI always sends.
        let unset = is_zero(v) || (k == "MemorySwappiness" && v.as_i64() == Some(-1));
        if !known.contains(&k.as_str()) && !unset {
            return Err(invalid(format!(
                "netd cannot honour {prefix}{k}: its containers run commands on the host's filesystem with networking of their own only"
            )));
        }
    }
    Ok(())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `80/tcp` as a port and protocol.
fn port_key(k: &str) -> Result<(u16, Proto), NetdError> {
    model::parse_expose(k)?
        .first()
        .copied()
        .ok_or_else(|| invalid(format!("invalid port {k:?}")))
}

/// HostConfig.PortBindings as `-p` specs.
fn port_specs(v: Option<&Value>) -> Result<Vec<PortSpec>, NetdError> {
    let mut out = Vec::new();
    for (k, bindings) in v.and_then(Value::as_object).into_iter().flatten() {
        let (port, proto) = port_key(k)?;
        for b in bindings.as_array().into_iter().flatten() {
            let host_ip = match text(b.get("HostIp")) {
                Some(ip) => Some(
                    ip.parse::<IpAddr>()
                        .map_err(|_| invalid(format!("invalid HostIp {ip:?} of port {k}")))?,
                ),
                None => None,
            };
            let host_port = match text(b.get("HostPort")) {
                Some(p) => p
                    .parse()
                    .map_err(|_| invalid(format!("invalid HostPort {p:?} of port {k}")))?,
                None => 0,
            };
            out.push(PortSpec {
                host_ip,
                host_port,
                container_port: port,
                proto,
            });
        }
    }
    Ok(out)
}

/// One entry of NetworkingConfig.EndpointsConfig as an endpoint request.
fn endpoint(network: &str, v: &Value) -> Result<EndpointRequest, NetdError> {
    let ipam = v.get("IPAMConfig");
    let ip = |key: &str| text(ipam.and_then(|i| i.get(key)));
    let bad = |what: &str, s: &str| invalid(format!("invalid {what} {s:?} for network {network}"));
    Ok(EndpointRequest {
        network: network.to_string(),
        aliases: strings(v.get("Aliases")),
        ip: ip("IPv4Address")
            .map(|s| s.parse::<Ipv4Addr>().map_err(|_| bad("IPv4Address", s)))
            .transpose()?,
        ip6: ip("IPv6Address")
            .map(|s| s.parse::<Ipv6Addr>().map_err(|_| bad("IPv6Address", s)))
            .transpose()?,
        link_local_ips: strings(ipam.and_then(|i| i.get("LinkLocalIPs")))
            .iter()
            .map(|s| s.parse().map_err(|_| bad("LinkLocalIPs", s)))
            .collect::<Result<_, _>>()?,
        mac_address: text(v.get("MacAddress")).map(String::from),
        driver_opts: string_map(v.get("DriverOpts")),
        gw_priority: match v.get("GwPriority") {
            None | Some(Value::Null) => 0,
            Some(p) => p
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "invalid GwPriority {p} for network {network}: an integer"
                    ))
                })?,
        },
        links: strings(v.get("Links")),
    })
}

/// The networks to join: HostConfig.NetworkMode's first (`default` is `bridge`), then
/// the other EndpointsConfig entries; the container-wide MacAddress (API < 1.44's
/// field) goes to the first, as Docker moves it there.
fn endpoints(cfg: &Value, host: &Value) -> Result<Vec<EndpointRequest>, NetdError> {
    let normal = |n: &str| match n {
        "" | "default" => "bridge".to_string(),
        n => n.to_string(),
    };
    let mode = normal(text(host.get("NetworkMode")).unwrap_or(""));
    let mut eps: Vec<EndpointRequest> = Vec::new();
    let configs = cfg
        .pointer("/NetworkingConfig/EndpointsConfig")
        .and_then(Value::as_object);
    let entries: Vec<(String, &Value)> = configs
        .into_iter()
        .flatten()
        .map(|(k, v)| (normal(k), v))
        .collect();
    let first = entries.iter().find(|(k, _)| *k == mode);
    eps.push(match first {
        Some((k, v)) => endpoint(k, v)?,
        None => EndpointRequest {
            network: mode.clone(),
            ..Default::default()
        },
    });
    for (k, v) in entries.iter().filter(|(k, _)| *k != mode) {
        eps.push(endpoint(k, v)?);
    }
    if let Some(mac) = text(cfg.get("MacAddress")) {
        match &eps[0].mac_address {
            Some(m) if m != mac => {
                return Err(invalid("the container-wide MAC address must match the endpoint-specific MAC address for the main network, or be left empty".into()))
            }
            _ => eps[0].mac_address = Some(mac.to_string()),
        }
    }
    Ok(eps)
}

/// The command: Entrypoint then Cmd, as Docker runs them.
fn command(cfg: &Value) -> Vec<String> {
    let mut cmd = strings(cfg.get("Entrypoint"));
    cmd.extend(strings(cfg.get("Cmd")));
    cmd
}

/// Docker's create body as netd's run request (not started).
fn run_request(name: Option<String>, cfg: &Value) -> Result<RunRequest, NetdError> {
    let obj = cfg
        .as_object()
        .ok_or_else(|| invalid("the request body must be a JSON object".into()))?;
    only_known(obj, CONFIG_KNOWN, "Config.")?;
    let null = Value::Null;
    let host = cfg.get("HostConfig").unwrap_or(&null);
    only_known(
        host.as_object().unwrap_or(&Map::new()),
        HOST_CONFIG_KNOWN,
        "HostConfig.",
    )?;
    let image = text(cfg.get("Image")).unwrap_or("");
    if image != IMAGE && image != "netd:latest" {
        return Err(NetdError::NotFound(format!(
            "No such image: {image} (netd runs commands on the host's filesystem: use the image {IMAGE})"
        )));
    }
    if let Some(p) = text(host.pointer("/RestartPolicy/Name")).filter(|p| *p != "no") {
        return Err(invalid(format!(
            "restart policy {p:?}: netd restarts nothing by itself (no)"
        )));
    }
    let exposed = cfg
        .get("ExposedPorts")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| port_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = port_specs(host.get("PortBindings"))?;
    if host.get("PublishAllPorts").and_then(Value::as_bool) == Some(true) {
        for &(port, proto) in &exposed {
            if !ports
                .iter()
                .any(|p| p.container_port == port && p.proto == proto)
            {
                ports.push(PortSpec {
                    host_ip: None,
                    host_port: 0,
                    container_port: port,
                    proto,
                });
            }
        }
    }
    let flag = |k: &str| cfg.get(k).and_then(Value::as_bool).unwrap_or(false);
    let networks = endpoints(cfg, host)?;
    Ok(RunRequest {
        name,
        hostname: text(cfg.get("Hostname")).map(String::from),
        network: networks.first().map(|e| e.network.clone()),
        ports,
        cmd: command(cfg),
        start: false,
        auto_remove: host.get("AutoRemove").and_then(Value::as_bool) == Some(true),
        labels: string_map(cfg.get("Labels")),
        exposed,
        dns: strings(host.get("Dns")),
        dns_search: strings(host.get("DnsSearch")),
        dns_options: strings(host.get("DnsOptions")),
        links: strings(host.get("Links"))
            .into_iter()
            // Docker's stored form is /target:/self/alias; a request's is NAME:ALIAS.
            .map(|l| l.trim_start_matches('/').to_string())
            .collect(),
        tty: flag("Tty"),
        open_stdin: flag("OpenStdin"),
        attached: flag("StdinOnce") || flag("AttachStdout"),
        networks,
        sysctls: string_map(host.get("Sysctls")),
        ..Default::default()
    })
}

/// `POST /containers/create?name=NAME`: 201 with the id, as Docker.
pub async fn create(
    State(d): D,
    Query(q): Q,
    ApiJson(body): ApiJson<Value>,
) -> Result<(StatusCode, Json<Value>), NetdError> {
    let name = q.get("name").filter(|n| !n.is_empty()).cloned();
    let req = run_request(name, &body)?;
    let c = d.run(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": c.id, "Warnings": []})),
    ))
}

/// `POST /images/create` (docker run's pull of a missing image): netd has no images.
pub async fn pull() -> NetdError {
    NetdError::NotFound(format!(
        "netd pulls no images: its containers run commands on the host's filesystem (use the image {IMAGE})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: Value) -> Value {
        let mut v = json!({
            "Hostname": "", "Env": [], "Cmd": ["sleep", "600"], "Image": "netd",
            "Volumes": {}, "WorkingDir": "", "Entrypoint": null, "OnBuild": null,
            "Labels": {}, "AttachStdout": true,
            "HostConfig": {
                "Binds": null, "LogConfig": {"Type": "", "Config": {}},
                "NetworkMode": "zeta", "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "ConsoleSize": [24, 80], "Memory": 0, "Sysctls": {"net.ipv4.ip_forward": "1"}
            },
            "NetworkingConfig": {"EndpointsConfig": {
                "alpha": {"GwPriority": 5, "MacAddress": "92:d0:c6:0a:29:33",
                    "DriverOpts": {"com.docker.network.endpoint.ifname": "a0"}},
                "zeta": {"Aliases": ["z"], "IPAMConfig": {"IPv4Address": "10.81.2.9"}}
            }}
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    #[test]
    fn the_docker_clis_create_body_as_a_run_request() {
        let r = run_request(Some("web".into()), &body(json!({}))).unwrap();
        assert_eq!(r.cmd, ["sleep", "600"]);
        assert_eq!(r.networks[0].network, "zeta");
        assert_eq!(r.networks[0].ip, Some("10.81.2.9".parse().unwrap()));
        assert_eq!(r.networks[1].network, "alpha");
        assert_eq!(r.networks[1].gw_priority, 5);
        assert_eq!(
            r.networks[1].driver_opts["com.docker.network.endpoint.ifname"],
            "a0"
        );
        assert_eq!(r.sysctls["net.ipv4.ip_forward"], "1");
        assert!(!r.start);
    }

    #[test]
    fn what_netd_cannot_honour_is_refused_by_name() {
        let e = run_request(None, &body(json!({"Env": ["A=1"]}))).unwrap_err();
        assert!(e.to_string().contains("Config.Env"), "{e}");
        let e = run_request(None, &body(json!({"Image": "alpine"}))).unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(e.to_string().starts_with("No such image: alpine"), "{e}");
        let mut b = body(json!({"MacAddress": "92:d0:c6:0a:29:44"}));
        b["NetworkingConfig"]["EndpointsConfig"]["zeta"]["MacAddress"] = json!("92:d0:c6:0a:29:33");
        let e = run_request(None, &b).unwrap_err();
        assert!(e.to_string().contains("container-wide MAC"), "{e}");
        let mut b = body(json!({}));
        b["HostConfig"]["Memory"] = json!(1024);
        let e = run_request(None, &b).unwrap_err();
        assert!(e.to_string().contains("HostConfig.Memory"), "{e}");
    }
}
