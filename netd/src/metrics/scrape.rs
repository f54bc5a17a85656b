//! The families read at each scrape: the datapath's counters and conntrack from the
//! pinned maps, the state's census, the agent's restarts. Values come from the kernel
//! and the state as they are, so a counter here is the datapath's own (it survives agent
//! restarts with the pinned maps).
use prometheus::{
    core::Collector, proto::MetricFamily, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

use crate::{
    daemon::Census,
    datapath::{Counted, Readings},
};

type Families = Vec<MetricFamily>;

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), labels)
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

/// A counter table as one family with a label, its HELP the table's own explanations
/// (`netd stats` shows the same names and words).
fn table(name: &str, what: &str, label: &str, rows: &[Counted]) -> prometheus::Result<Families> {
    let meanings: Vec<String> = rows
        .iter()
        .map(|c| format!("{}: {}", c.name, c.help))
        .collect();
    let help = format!("{what}, by {label}. {}", meanings.join(" "));
    let v = counter_vec(name, &help, &[label])?;
    for c in rows {
        v.with_label_values(&[c.name]).inc_by(c.value);
    }
    Ok(v.collect())
}

/// The datapath's counters, conntrack and published ports.
pub fn datapath(r: &Readings, census: &Census) -> anyhow::Result<Families> {
    let drops = r.drops();
    let events = r.events();
    let mut out = table(
        "netd_datapath_drops_total",
        "Packets the eBPF datapath dropped",
        "reason",
        &drops,
    )?;
    out.extend(table(
        "netd_datapath_events_total",
        "What the eBPF datapath did with packets it did not drop",
        "kind",
        &events,
    )?);
    let entries = gauge_vec(
        "netd_conntrack_entries",
        "Conntrack entries now (two a flow), by address family and table: answered flows, and new flows not answered yet (an LRU that floods churn).",
        &["family", "table"],
    )?;
    let capacity = gauge_vec(
        "netd_conntrack_capacity_entries",
        "Entries a conntrack table holds at most (answered: 2 x --ct-max), by address family and table.",
        &["family", "table"],
    )?;
    for (family, c) in ["ipv4", "ipv6"].iter().zip(r.conntrack()?) {
        entries
            .with_label_values(&[family, "answered"])
            .set(c.answered as i64);
        entries
            .with_label_values(&[family, "new"])
            .set(c.new as i64);
        capacity
            .with_label_values(&[family, "answered"])
            .set(i64::from(c.answered_capacity));
        capacity
            .with_label_values(&[family, "new"])
            .set(i64::from(c.new_capacity));
    }
    out.extend(entries.collect());
    out.extend(capacity.collect());
    // As `netd stats` counts them: new flows the table refused, and answered ones it
    // could not confirm (full).
    let failures = IntCounter::new(
        "netd_conntrack_insert_failures_total",
        "Flows conntrack could not record (drop_ct_insert_failed) or move to the table of answered flows because it was full (ct_confirm_failed).",
    )?;
    let failed: u64 = drops
        .iter()
        .chain(&events)
        .filter(|c| matches!(c.name, "drop_ct_insert_failed" | "ct_confirm_failed"))
        .map(|c| c.value)
        .sum();
    failures.inc_by(failed);
    out.extend(failures.collect());
    out.extend(ports(r, census)?);
    Ok(out)
}

fn ports(r: &Readings, census: &Census) -> prometheus::Result<Families> {
    let labels = ["container", "proto", "host_ip", "host_port"];
    let packets = counter_vec(
        "netd_published_port_packets_total",
        "Packets of a published port's flows, both directions, by container and the host address, port and protocol it is published on.",
        &labels,
    )?;
    let bytes = counter_vec(
        "netd_published_port_bytes_total",
        "Bytes of those packets (IP headers included).",
        &labels,
    )?;
    for (container, m) in &census.ports {
        let (p, b) = r.port(m);
        let (proto, ip, port) = (
            m.proto.to_string(),
            m.host_ip.to_string(),
            m.host_port.to_string(),
        );
        let l = [container.as_str(), &proto, &ip, &port];
        packets.with_label_values(&l).inc_by(p);
        bytes.with_label_values(&l).inc_by(b);
    }
    let mut out = packets.collect();
    out.extend(bytes.collect());
    Ok(out)
}

/// Networks and containers by driver, and the agent's restarts.
pub fn state(census: &Census, restarts: u64) -> prometheus::Result<Families> {
    let networks = gauge_vec("netd_networks", "Networks, by driver.", &["driver"])?;
    for (driver, n) in &census.networks {
        networks.with_label_values(&[driver]).set(*n as i64);
    }
    let containers = gauge_vec(
        "netd_containers",
        "Containers (network sandboxes), by the driver of their networks (one count per driver) and by who made them (netd, cni, docker).",
        &["driver", "origin"],
    )?;
    for ((driver, origin), n) in &census.containers {
        containers
            .with_label_values(&[driver, origin])
            .set(*n as i64);
    }
    let restarts_total = IntCounter::new(
        "netd_agent_restarts_total",
        "Times the agent started again on this state directory (a restart of any kind: a stop, a crash, an upgrade).",
    )?;
    restarts_total.inc_by(restarts);
    let mut out = networks.collect();
    out.extend(containers.collect());
    out.extend(restarts_total.collect());
    Ok(out)
}
