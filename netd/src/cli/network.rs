//! `netd network ...`.

use std::collections::BTreeMap;

use hyper::Method;
use serde_json::Value;

use crate::client::Client;

use super::{args::*, containers::each, format::*};
use crate::api::types::{
    EndpointIpamConfig, EndpointSettings, Ipam, IpamConfig, NetworkConnect, NetworkCreate,
    NetworkCreateResponse, NetworkResource, PrunedNetworks,
};

pub(super) async fn network(client: &Client, cmd: NetworkCommand) -> anyhow::Result<i32> {
    match cmd {
        NetworkCommand::Create(a) => create(client, a).await?,
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => ls(client, quiet, no_trunc, &filter, format.as_deref()).await?,
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(
                    client
                        .call(Method::GET, &format!("/networks/{n}"), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
        }
        NetworkCommand::Rm { names } => {
            return each(&names, |n| async move {
                client
                    .call(Method::DELETE, &format!("/networks/{n}"), None)
                    .await
            })
            .await
        }
        NetworkCommand::Prune { force } => prune(client, force).await?,
        NetworkCommand::Connect(a) => connect(client, a).await?,
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let body = serde_json::to_value(NetworkConnect {
                container,
                endpoint_config: None,
                force,
            })?;
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/disconnect"),
                    Some(body),
                )
                .await?;
        }
    }
    Ok(0)
}

/// `network ls`: Docker's columns, `-q`, `--format json|table|TEMPLATE`.
async fn ls(
    client: &Client,
    quiet: bool,
    no_trunc: bool,
    filter: &[String],
    format: Option<&str>,
) -> anyhow::Result<()> {
    let path = format!(
        "/networks?{}",
        filters_param(filter)?.trim_start_matches('&')
    );
    let list: Vec<NetworkResource> = client.get(&path).await?;
    let id = |n: &NetworkResource| -> String {
        if no_trunc {
            n.id.clone()
        } else {
            n.id.chars().take(12).collect()
        }
    };
    match format {
        Some("json") => {
            for n in &list {
                println!("{}", serde_json::to_string(n)?);
            }
        }
        _ if quiet => {
            for n in &list {
                println!("{}", id(n));
            }
        }
        Some(tpl) if tpl != "table" => {
            for n in &list {
                let fields = [
                    ("ID", id(n)),
                    ("Name", n.name.clone()),
                    ("Driver", n.driver.clone()),
                    ("Scope", n.scope.clone()),
                    ("Internal", n.internal.to_string()),
                    ("CreatedAt", n.created.clone()),
                ];
                println!("{}", render_template(tpl, &fields));
            }
        }
        _ => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|n| {
                    let subnet = n
                        .ipam
                        .config
                        .as_ref()
                        .and_then(|c| c.first())
                        .and_then(|c| c.subnet.clone())
                        .unwrap_or_default();
                    vec![
                        id(n),
                        n.name.clone(),
                        n.driver.clone(),
                        n.scope.clone(),
                        subnet,
                    ]
                })
                .collect();
            print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"], &rows);
        }
    }
    Ok(())
}

/// `network prune`: asks first unless `--force`, as Docker.
async fn prune(client: &Client, force: bool) -> anyhow::Result<()> {
    if !force {
        eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let v = client.call(Method::POST, "/networks/prune", None).await?;
    let pruned: PrunedNetworks = serde_json::from_value(v)?;
    if !pruned.networks_deleted.is_empty() {
        println!("Deleted Networks:");
        for d in pruned.networks_deleted {
            println!("{d}");
        }
    }
    Ok(())
}

/// `network connect` with the endpoint's settings.
async fn connect(client: &Client, a: ConnectArgs) -> anyhow::Result<()> {
    let ConnectArgs {
        ip,
        ip6,
        link_local_ip,
        aliases,
        link,
        driver_opt,
        gw_priority,
        network,
        container,
    } = a;
    let body = NetworkConnect {
        container,
        endpoint_config: Some(EndpointSettings {
            aliases: Some(aliases),
            links: (!link.is_empty()).then_some(link),
            ipam_config: (ip.is_some() || ip6.is_some() || !link_local_ip.is_empty()).then(|| {
                EndpointIpamConfig {
                    ipv4_address: ip.map(|ip| ip.to_string()),
                    ipv6_address: ip6.map(|ip| ip.to_string()),
                    link_local_ips: (!link_local_ip.is_empty())
                        .then(|| link_local_ip.iter().map(|ip| ip.to_string()).collect()),
                }
            }),
            driver_opts: (!driver_opt.is_empty())
                .then(|| key_values("driver-opt", &driver_opt, false))
                .transpose()?,
            gw_priority,
            ..Default::default()
        }),
        force: false,
    };
    client
        .call(
            Method::POST,
            &format!("/networks/{network}/connect"),
            Some(serde_json::to_value(&body)?),
        )
        .await?;
    Ok(())
}

async fn create(client: &Client, a: NetworkCreateArgs) -> anyhow::Result<()> {
    let aux = key_values("aux-address", &a.aux_address, false)?;
    let config = ipam_configs(&a.subnet, &a.gateway, &a.ip_range, &aux)?;
    let body = NetworkCreate {
        name: a.name,
        check_duplicate: true,
        driver: Some(a.driver),
        scope: a.scope,
        internal: a.internal,
        attachable: a.attachable,
        enable_ipv4: (!a.ipv4).then_some(false),
        enable_ipv6: a.ipv6,
        ipam: Some(Ipam {
            driver: Some(a.ipam_driver),
            config: Some(config),
            options: Some(key_values("ipam-opt", &a.ipam_opt, false)?),
        }),
        options: Some(key_values("option", &a.opt, false)?),
        labels: Some(key_values("label", &a.label, true)?),
        ..Default::default()
    };
    let created: NetworkCreateResponse =
        client.send(Method::POST, "/networks/create", &body).await?;
    // As the docker CLI does: the warning on stderr, the id on stdout.
    if !created.warning.is_empty() {
        eprintln!("WARNING: {}", created.warning);
    }
    println!("{}", created.id);
    Ok(())
}

/// `--subnet`, `--gateway`, `--ip-range` and `--aux-address` as Docker's IPAM configs,
/// the IPv4 ones first (in the order given), then the IPv6 one. Each value goes to its
/// family (an IPv6 literal always holds a ':', an IPv4 one never) and, where the family
/// has several subnets (overlay networks take several IPv4 ones), to the subnet holding
/// it, as the docker CLI pairs them; a family takes one gateway and one range per
/// subnet. Values of a family without a subnet go to the daemon, which says what is
/// missing; it checks every value.
fn ipam_configs(
    subnets: &[String],
    gateways: &[String],
    ranges: &[String],
    aux: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<IpamConfig>> {
    let mut out = Vec::new();
    for (v6, family) in [(false, "IPv4"), (true, "IPv6")] {
        let mine = |v: &String| v.contains(':') == v6;
        let fam_subnets: Vec<&String> = subnets.iter().filter(|v| mine(v)).collect();
        if v6 && fam_subnets.len() > 1 {
            anyhow::bail!(
                "--subnet given twice for IPv6 ({} and {}): a network takes one IPv6 subnet",
                fam_subnets[0],
                fam_subnets[1]
            );
        }
        let mut configs: Vec<IpamConfig> = fam_subnets
            .iter()
            .map(|s| IpamConfig {
                subnet: Some(s.to_string()),
                ..Default::default()
            })
            .collect();
        if configs.is_empty() {
            configs.push(IpamConfig::default());
        }
        for (flag, values) in [("gateway", gateways), ("ip-range", ranges)] {
            for v in values.iter().filter(|v| mine(v)) {
                let i = subnet_of(&configs, flag, v)?;
                let at = match &configs[i].subnet {
                    Some(subnet) => format!("{family} subnet {subnet}"),
                    None => family.to_string(),
                };
                let slot = match flag {
                    "gateway" => &mut configs[i].gateway,
                    _ => &mut configs[i].ip_range,
                };
                if let Some(first) = slot {
                    anyhow::bail!(
                        "--{flag} given twice for {at} ({first} and {v}): one per subnet"
                    );
                }
                *slot = Some(v.clone());
            }
        }
        for (k, v) in aux.iter().filter(|(_, v)| mine(v)) {
            let i = subnet_of(&configs, "aux-address", v)?;
            configs[i]
                .auxiliary_addresses
                .get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.clone());
        }
        out.extend(configs.into_iter().filter(|c| {
            c.subnet.is_some()
                || c.gateway.is_some()
                || c.ip_range.is_some()
                || c.auxiliary_addresses.is_some()
        }));
    }
    Ok(out)
}

/// Which of `configs` (one family's) value `v` of `--flag` belongs to: the only one, or
/// the one whose subnet holds it.
fn subnet_of(configs: &[IpamConfig], flag: &str, v: &str) -> anyhow::Result<usize> {
    if configs.len() == 1 {
        return Ok(0);
    }
    let ip = v
        .split('/')
        .next()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok());
    let holds = |c: &IpamConfig| {
        let net = c
            .subnet
            .as_deref()
            .and_then(|s| s.parse::<ipnetwork::IpNetwork>().ok());
        net.zip(ip).is_some_and(|(n, ip)| n.contains(ip))
    };
    configs.iter().position(holds).ok_or_else(|| {
        let all: Vec<&str> = configs.iter().filter_map(|c| c.subnet.as_deref()).collect();
        anyhow::anyhow!(
            "no matching subnet for --{flag} {v} (the subnets are {})",
            all.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn aux(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, x)| (k.to_string(), x.to_string()))
            .collect()
    }

    #[test]
    fn flags_go_to_their_family_once_each() {
        let c = ipam_configs(
            &s(&["fd00:1::/64", "10.1.0.0/24"]),
            &s(&["10.1.0.254", "fd00:1::fe"]),
            &s(&["fd00:1::/80"]),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        let (v4, v6) = (&c[0], &c[1]);
        assert_eq!(v4.subnet.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(v4.gateway.as_deref(), Some("10.1.0.254"));
        assert_eq!(v4.ip_range, None);
        assert_eq!(v6.subnet.as_deref(), Some("fd00:1::/64"));
        assert_eq!(v6.gateway.as_deref(), Some("fd00:1::fe"));
        assert_eq!(v6.ip_range.as_deref(), Some("fd00:1::/80"));
        let e = ipam_configs(
            &s(&["fd00:1::/64", "fd00:2::/64"]),
            &[],
            &[],
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("--subnet given twice for IPv6"),
            "{e}"
        );
        let e = ipam_configs(&[], &s(&["fd00::1", "fd00::2"]), &[], &BTreeMap::new()).unwrap_err();
        assert!(
            e.to_string().contains("--gateway given twice for IPv6"),
            "{e}"
        );
    }

    /// Docker's overlay example: two subnets, a gateway and two aux addresses each.
    #[test]
    fn several_ipv4_subnets_take_their_own_values() {
        let c = ipam_configs(
            &s(&["192.168.10.0/25", "192.168.20.0/25"]),
            &s(&["192.168.10.100", "192.168.20.100"]),
            &[],
            &aux(&[
                ("my-router", "192.168.10.5"),
                ("my-switch", "192.168.10.6"),
                ("my-printer", "192.168.20.5"),
                ("my-nas", "192.168.20.6"),
            ]),
        )
        .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].gateway.as_deref(), Some("192.168.10.100"));
        assert_eq!(c[1].gateway.as_deref(), Some("192.168.20.100"));
        let a1 = c[1].auxiliary_addresses.as_ref().unwrap();
        assert_eq!(a1.keys().collect::<Vec<_>>(), ["my-nas", "my-printer"]);
        let e = ipam_configs(
            &s(&["10.1.0.0/24", "10.2.0.0/24"]),
            &s(&["10.3.0.1"]),
            &[],
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no matching subnet for --gateway 10.3.0.1"),
            "{e}"
        );
        let e = ipam_configs(
            &s(&["10.1.0.0/24", "10.2.0.0/24"]),
            &s(&["10.1.0.1", "10.1.0.2"]),
            &[],
            &BTreeMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--gateway given twice for IPv4 subnet 10.1.0.0/24"),
            "{e}"
        );
    }
}
