//! netd's own views of the datapath: stats, conntrack ls and flush (`trace` apart).
use std::net::IpAddr;

use hyper::Method;

use super::format::{print_counters, print_table};
use crate::{
    api::types::Flushed,
    client::Client,
    daemon::{ConntrackRow, Stats},
    model::IpProto,
};

/// `netd stats`: the counters with their meaning, then the published ports' counters.
pub async fn stats(client: &Client, format: Option<&str>) -> anyhow::Result<()> {
    let st: Stats = client.get("/netd/stats").await?;
    if format == Some("json") {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print_counters(&st);
        let ports: Vec<Vec<String>> = st
            .ports
            .iter()
            .map(|p| {
                vec![
                    p.container.clone(),
                    p.mapping.clone(),
                    p.packets.to_string(),
                    p.bytes.to_string(),
                ]
            })
            .collect();
        if !ports.is_empty() {
            println!();
            print_table(&["CONTAINER", "MAPPING", "PACKETS", "BYTES"], &ports);
        }
    }
    Ok(())
}

/// `netd conntrack ls`, filtered by the daemon.
pub async fn conntrack_ls(
    client: &Client,
    format: Option<&str>,
    proto: Option<IpProto>,
    addr: Option<IpAddr>,
    port: Option<u16>,
) -> anyhow::Result<()> {
    // The daemon filters: the CLI never re-parses the addresses it formatted.
    let mut q = Vec::new();
    if let Some(p) = proto {
        q.push(format!("proto={p}"));
    }
    if let Some(a) = addr {
        q.push(format!("addr={a}"));
    }
    if let Some(p) = port {
        q.push(format!("port={p}"));
    }
    let list: Vec<ConntrackRow> = client
        .get(&format!("/netd/conntrack?{}", q.join("&")))
        .await?;
    if format == Some("json") {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                vec![
                    e.proto.to_string(),
                    e.src.to_string(),
                    e.dst.to_string(),
                    e.kind.clone(),
                    e.to_src.to_string(),
                    e.to_dst.to_string(),
                    e.tcp.clone(),
                    e.packets.to_string(),
                    e.bytes.to_string(),
                    e.idle_s.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "PROTO", "SRC", "DST", "KIND", "TO SRC", "TO DST", "TCP", "PACKETS", "BYTES",
                "IDLE(s)",
            ],
            &rows,
        );
    }
    Ok(())
}

/// `netd conntrack flush [--proto P]`.
pub async fn conntrack_flush(client: &Client, proto: Option<IpProto>) -> anyhow::Result<()> {
    let path = match proto {
        Some(p) => format!("/netd/conntrack?proto={p}"),
        None => "/netd/conntrack".to_string(),
    };
    let v = client.call(Method::DELETE, &path, None).await?;
    let f: Flushed = serde_json::from_value(v)?;
    println!("{} entries removed", f.removed);
    Ok(())
}
