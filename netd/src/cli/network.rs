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
            let config = IpamConfig {
                subnet,
                gateway,
                ip_range,
                auxiliary_addresses: (!aux.is_empty()).then_some(aux),
            };
            let body = NetworkCreate {
                name,
                check_duplicate: true,
                driver: Some(driver),
                internal,
                attachable,
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(
                        if config.subnet.is_some() || config.auxiliary_addresses.is_some() {
                            vec![config]
                        } else {
                            vec![]
                        },
                    ),
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
            aliases,
            network,
            container,
        } => {
            let body = NetworkConnect {
                container,
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(aliases),
                    ipam_config: ip.map(|ip| EndpointIpamConfig {
                        ipv4_address: Some(ip.to_string()),
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
