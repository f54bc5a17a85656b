//! `netd trace`: the datapath's decisions as they happen.
use super::args::TraceArgs;
use crate::{
    client::Client,
    daemon::{TraceItem, TraceLine},
};

pub async fn trace(client: &Client, a: TraceArgs) -> anyhow::Result<()> {
    // The daemon filters; the CLI only prints.
    let mut q = Vec::new();
    if let Some(p) = a.proto {
        q.push(format!("proto={p}"));
    }
    if let Some(addr) = a.addr {
        q.push(format!("addr={addr}"));
    }
    if let Some(p) = a.port {
        q.push(format!("port={p}"));
    }
    let json = a.format.is_some();
    let mut seen = 0u64;
    if a.count == Some(0) {
        return Ok(());
    }
    client
        .stream_lines(&format!("/netd/trace?{}", q.join("&")), |line| {
            let item: TraceItem = serde_json::from_str(line)?;
            match (&item, json) {
                (_, true) => println!("{line}"),
                (TraceItem::Packet(p), false) => println!("{} {}", clock(p), p.brief()),
                (TraceItem::Lost { lost }, false) => {
                    println!("... {lost} packets not shown (the terminal fell behind)")
                }
            }
            if matches!(item, TraceItem::Packet(_)) {
                seen += 1;
            }
            Ok(a.count.is_none_or(|n| seen < n))
        })
        .await
}

/// `HH:MM:SS.micros` (UTC) of a line.
fn clock(p: &TraceLine) -> String {
    let us = p.time_us;
    let secs = us / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        us % 1_000_000
    )
}
