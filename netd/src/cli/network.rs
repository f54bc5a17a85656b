//! `netd network ...`.

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
        NetworkCommand::Create {
            driver,
            ipv6,
            subnet,
            gateway,
            ip_range,
            aux_address,
            internal,
            attachable,
            label,
            opt,
            name,
        } => {
            let aux = key_values("aux-address", &aux_address, false)?;
            let [mut v4, v6] = ipam_by_family(&subnet, &gateway, &ip_range)?;
            if !aux.is_empty() {
                v4.auxiliary_addresses = Some(aux);
            }
            let config = [v4, v6]
                .into_iter()
                .filter(|c| {
                    c.subnet.is_some()
                        || c.gateway.is_some()
                        || c.ip_range.is_some()
                        || c.auxiliary_addresses.is_some()
                })
                .collect();
            let body = NetworkCreate {
                name,
                check_duplicate: true,
                driver: Some(driver),
                internal,
                attachable,
                enable_ipv6: ipv6,
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(config),
                    options: None,
                }),
                options: Some(key_values("option", &opt, false)?),
                labels: Some(key_values("label", &label, true)?),
                ..Default::default()
            };
            let created: NetworkCreateResponse =
                client.send(Method::POST, "/networks/create", &body).await?;
            // As the docker CLI does: the warning on stderr, the id on stdout.
            if !created.warning.is_empty() {
                eprintln!("WARNING: {}", created.warning);
            }
            println!("{}", created.id);
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let path = format!(
                "/networks?{}",
                filters_param(&filter)?.trim_start_matches('&')
            );
            let list: Vec<NetworkResource> = client.get(&path).await?;
            let id = |n: &NetworkResource| -> String {
                if no_trunc {
                    n.id.clone()
                } else {
                    n.id.chars().take(12).collect()
                }
            };
            match format.as_deref() {
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
        }
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
        NetworkCommand::Prune { force } => {
            if !force {
                eprint!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Ok(0);
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
        }
        NetworkCommand::Connect {
            ip,
            ip6,
            aliases,
            link,
            network,
            container,
        } => {
            let body = NetworkConnect {
                container,
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases),
                    links: (!link.is_empty()).then_some(link),
                    ipam_config: (ip.is_some() || ip6.is_some()).then(|| EndpointIpamConfig {
                        ipv4_address: ip.map(|ip| ip.to_string()),
                        ipv6_address: ip6.map(|ip| ip.to_string()),
                    }),
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
        }
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

/// `--subnet`, `--gateway` and `--ip-range` as Docker's IPAM configs, [IPv4, IPv6]: each
/// value goes to its family (an IPv6 literal always holds a ':', an IPv4 one never),
/// and each flag may be given once per family. The daemon checks the values.
fn ipam_by_family(
    subnets: &[String],
    gateways: &[String],
    ranges: &[String],
) -> anyhow::Result<[IpamConfig; 2]> {
    let mut out: [IpamConfig; 2] = Default::default();
    for (flag, values) in [
        ("subnet", subnets),
        ("gateway", gateways),
        ("ip-range", ranges),
    ] {
        for v in values {
            let (i, family) = if v.contains(':') {
                (1, "IPv6")
            } else {
                (0, "IPv4")
            };
            let slot = match flag {
                "subnet" => &mut out[i].subnet,
                "gateway" => &mut out[i].gateway,
                _ => &mut out[i].ip_range,
            };
            if let Some(first) = slot {
                anyhow::bail!(
                    "--{flag} given twice for {family} ({first} and {v}): a network takes one IPv4 and one IPv6 value"
                );
            }
            *slot = Some(v.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_go_to_their_family_once_each() {
        let [v4, v6] = ipam_by_family(
            &s(&["fd00:1::/64", "10.1.0.0/24"]),
            &s(&["10.1.0.254", "fd00:1::fe"]),
            &s(&["fd00:1::/80"]),
        )
        .unwrap();
        assert_eq!(v4.subnet.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(v4.gateway.as_deref(), Some("10.1.0.254"));
        assert_eq!(v4.ip_range, None);
        assert_eq!(v6.subnet.as_deref(), Some("fd00:1::/64"));
        assert_eq!(v6.gateway.as_deref(), Some("fd00:1::fe"));
        assert_eq!(v6.ip_range.as_deref(), Some("fd00:1::/80"));
        let e = ipam_by_family(&s(&["10.1.0.0/24", "10.2.0.0/24"]), &[], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--subnet given twice for IPv4"),
            "{e}"
        );
        let e = ipam_by_family(&[], &s(&["fd00::1", "fd00::2"]), &[]).unwrap_err();
        assert!(
            e.to_string().contains("--gateway given twice for IPv6"),
            "{e}"
        );
    }
}
