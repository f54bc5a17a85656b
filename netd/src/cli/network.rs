//! `netd network ...`.
use std::collections::BTreeMap;

use hyper::Method;
use serde_json::{json, Value};

use crate::client::Client;

use super::{args::*, containers::each, format::*};

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
            let labels = key_values("label", &label, true)?;
            let options = key_values("option", &opt, false)?;
            let mut cfg = serde_json::Map::new();
            for (k, v) in [
                ("Subnet", subnet),
                ("Gateway", gateway),
                ("IPRange", ip_range),
            ] {
                if let Some(v) = v {
                    cfg.insert(k.into(), v.into());
                }
            }
            if !aux.is_empty() {
                cfg.insert("AuxiliaryAddresses".into(), json!(aux));
            }
            let body = json!({
                "Name": name, "Driver": driver, "Internal": internal, "Attachable": attachable,
                "CheckDuplicate": true,
                "IPAM": {"Driver": "default", "Config": if cfg.is_empty() { vec![] } else { vec![Value::Object(cfg)] }},
                "Options": options, "Labels": labels,
            });
            let v = client
                .call(Method::POST, "/networks/create", Some(body))
                .await?;
            // As the docker CLI does: the warning on stderr, the id on stdout.
            if let Some(w) = v["Warning"].as_str().filter(|w| !w.is_empty()) {
                eprintln!("WARNING: {w}");
            }
            println!("{}", s(&v["Id"]));
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let filters = key_values("filter", &filter, false)?;
            let mut path = "/networks".to_string();
            if !filters.is_empty() {
                let mut f: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
                for (k, v) in filters {
                    f.entry(k).or_default().insert(v, true);
                }
                path = format!("/networks?filters={}", enc(&serde_json::to_string(&f)?));
            }
            let v = client.call(Method::GET, &path, None).await?;
            let list = v.as_array().cloned().unwrap_or_default();
            let id = |n: &Value| -> String {
                let id = s(&n["Id"]);
                if no_trunc {
                    id
                } else {
                    id.chars().take(12).collect()
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
                            ("Name", s(&n["Name"])),
                            ("Driver", s(&n["Driver"])),
                            ("Scope", s(&n["Scope"])),
                            ("Internal", s(&n["Internal"])),
                            ("CreatedAt", s(&n["Created"])),
                        ];
                        println!("{}", render_template(tpl, &fields));
                    }
                }
                _ => {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|n| {
                            vec![
                                id(n),
                                s(&n["Name"]),
                                s(&n["Driver"]),
                                s(&n["Scope"]),
                                s(&n["IPAM"]["Config"][0]["Subnet"]),
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
            let deleted = v["NetworksDeleted"].as_array().cloned().unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for d in deleted {
                    println!("{}", s(&d));
                }
            }
        }
        NetworkCommand::Connect {
            ip,
            aliases,
            network,
            container,
        } => {
            let mut ec = json!({"Aliases": aliases});
            if let Some(ip) = ip {
                ec["IPAMConfig"] = json!({"IPv4Address": ip.to_string()});
            }
            let body = json!({"Container": container, "EndpointConfig": ec});
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/connect"),
                    Some(body),
                )
                .await?;
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            let body = json!({"Container": container, "Force": force});
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
