//! The bench's output: two tables per N (traffic; control plane and memory, with
//! netd's API latency under a full conntrack table), a JSON file with every sample,
//! and the plot; `--replot` makes them again from an earlier run's JSON.
use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    api_latency::ApiLatency,
    cell::{med, stats, Cell, Sample},
    dp::{Dp, BIG_DATAGRAM},
    plot::plot,
};

/// netd's API latency at N: with an empty and with a full conntrack table.
fn api_table(text: &mut String, n: usize, api: &ApiLatency) {
    let _ = writeln!(
        text,
        "\nN = {n}: netd API latency under conntrack pressure ({}, {} calls, one every {} ms whether or not the last returned, conntrack GC every {} s; ms)",
        api.call,
        api.full.samples_us.len(),
        api.period_ms,
        api.gc_interval_s
    );
    let _ = writeln!(
        text,
        "{:16} {:>18} {:>9} {:>9} {:>9}",
        "conntrack table", "entries (after)", "p50", "p99", "max"
    );
    let ms = |us: u64| format!("{:.2}", us as f64 / 1e3);
    for (what, c) in [
        ("empty".to_string(), &api.empty),
        (format!("full (of {})", api.capacity), &api.full),
    ] {
        let _ = writeln!(
            text,
            "{:16} {:>18} {:>9} {:>9} {:>9}",
            what,
            format!("{} ({})", c.entries, c.entries_after),
            ms(c.p50_us),
            ms(c.p99_us),
            ms(c.max_us)
        );
    }
}

/// Large datagrams at N: `BIG_DATAGRAM`-byte UDP request/response, which IP carries in
/// fragments over the 1500-byte uplink, through the published port and out through
/// masquerade.
fn big_table<'a>(
    text: &mut String,
    n: usize,
    dps: &[Dp],
    get: &dyn Fn(usize, Dp) -> Option<&'a Cell>,
) {
    let _ = writeln!(
        text,
        "\nN = {n}: {BIG_DATAGRAM}-byte UDP request/response, in IP fragments (medians; /nft, /plain as above)"
    );
    let _ = writeln!(
        text,
        "{:16} {:>13} {:>5} {:>6} {:>13} {:>5}",
        "datapath", "published/s", "/nft", "/plain", "masquerade/s", "/nft"
    );
    for &dp in dps {
        let Some(c) = get(n, dp) else { continue };
        let ratio = |mine: f64, d: Dp, f: fn(&Sample) -> f64| {
            get(n, d)
                .map(|b| med(b, f))
                .filter(|b| *b > 0.0 && mine > 0.0)
                .map(|b| format!("{:.2}", mine / b))
                .unwrap_or_else(|| "-".into())
        };
        let (publ, masq) = (
            med(c, |s| s.big_udp_rr_rate),
            med(c, |s| s.masq_big_udp_rr_rate),
        );
        let masq_cell = match dp {
            Dp::Plain => "-".to_string(),
            _ => format!("{masq:.0}"),
        };
        let _ = writeln!(
            text,
            "{:16} {:>13.0} {:>5} {:>6} {:>13} {:>5}",
            dp.name(),
            publ,
            ratio(publ, Dp::IptablesNft, |s| s.big_udp_rr_rate),
            ratio(publ, Dp::Plain, |s| s.big_udp_rr_rate),
            masq_cell,
            ratio(masq, Dp::IptablesNft, |s| s.masq_big_udp_rr_rate),
        );
    }
}

pub fn replot(file: &Path, out: &Path) -> Result<()> {
    #[derive(Deserialize)]
    struct Row {
        ports: usize,
        datapath: String,
        cell: Cell,
    }
    let rows: Vec<Row> = serde_json::from_slice(
        &std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    )
    .with_context(|| format!("{} is not a bench JSON file", file.display()))?;
    let mut results = BTreeMap::new();
    for r in rows {
        let dp = Dp::ALL
            .into_iter()
            .find(|d| d.name() == r.datapath)
            .ok_or_else(|| anyhow!("unknown datapath {:?} in {}", r.datapath, file.display()))?;
        results.insert((r.ports, dp), r.cell);
    }
    let mut ports: Vec<usize> = results.keys().map(|(n, _)| *n).collect();
    ports.dedup();
    let mut dps: Vec<Dp> = results.keys().map(|(_, d)| *d).collect();
    dps.sort();
    dps.dedup();
    std::fs::create_dir_all(out)?;
    report(&results, &ports, &dps, out)
}

pub fn report(
    results: &BTreeMap<(usize, Dp), Cell>,
    ports: &[usize],
    dps: &[Dp],
    out: &Path,
) -> Result<()> {
    let get = |n: usize, dp: Dp| results.get(&(n, dp));
    let mut text = String::new();
    for &n in ports {
        let _ = writeln!(text, "\nN = {n} published ports: traffic (medians of the rounds, min-max of conn/s; /nft = against iptables-nft, /plain = against plain routing)");
        let _ = writeln!(
            text,
            "{:16} {:>8} {:>5} {:>6} {:>10} {:>14} {:>5} {:>6} {:>10} {:>8} {:>7} {:>7} {:>8}",
            "datapath",
            "rr/s",
            "/nft",
            "/plain",
            "rr p50/99",
            "conn/s",
            "/nft",
            "/plain",
            "conn p50/99",
            "udp rr/s",
            "Gb/s x1",
            "Gb/s x2",
            "masq c/s"
        );
        for &dp in dps {
            let Some(c) = get(n, dp) else { continue };
            let base = |d: Dp, f: &dyn Fn(&Sample) -> f64| {
                get(n, d).map(|b| med(b, f)).filter(|x| *x > 0.0)
            };
            let ratio = |mine: f64, d: Dp, f: &dyn Fn(&Sample) -> f64| {
                base(d, f)
                    .map(|b| format!("{:.2}", mine / b))
                    .unwrap_or_else(|| "-".into())
            };
            let rr = med(c, |s| s.rr_rate);
            let crr = med(c, |s| s.crr_rate);
            let (_, lo, hi) = stats(&c.samples.iter().map(|s| s.crr_rate).collect::<Vec<_>>());
            let masq = if dp == Dp::Plain {
                "-".to_string()
            } else {
                format!("{:.0}", med(c, |s| s.masq_crr_rate))
            };
            let _ = writeln!(
                text,
                "{:16} {:>8.0} {:>5} {:>6} {:>10} {:>14} {:>5} {:>6} {:>10} {:>8.0} {:>7.2} {:>7.2} {:>8}",
                dp.name(),
                rr,
                ratio(rr, Dp::IptablesNft, &|s| s.rr_rate),
                ratio(rr, Dp::Plain, &|s| s.rr_rate),
                format!("{:.0}/{:.0}", med(c, |s| s.rr_p50_us as f64), med(c, |s| s.rr_p99_us as f64)),
                format!("{crr:.0} ({lo:.0}-{hi:.0})"),
                ratio(crr, Dp::IptablesNft, &|s| s.crr_rate),
                ratio(crr, Dp::Plain, &|s| s.crr_rate),
                format!("{:.0}/{:.0}", med(c, |s| s.crr_p50_us as f64), med(c, |s| s.crr_p99_us as f64)),
                med(c, |s| s.udp_rr_rate),
                med(c, |s| s.tput1_gbps),
                med(c, |s| s.tput2_gbps),
                masq,
            );
        }
        big_table(&mut text, n, dps, &get);
        let _ = writeln!(text, "\nN = {n}: control plane and memory (latencies in us; agent = netd, or dockerd+containerd+shims)");
        let _ = writeln!(
            text,
            "{:16} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
            "datapath",
            "publish ms",
            "+1 port ms",
            "remove ms",
            "agent MB",
            "proxies MB",
            "BPF maps MB"
        );
        let mb = |b: u64| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", b as f64 / 1e6)
            }
        };
        let ms = |v: f64, applies: bool| {
            if applies && v.is_finite() {
                format!("{v:.1}")
            } else {
                "-".to_string()
            }
        };
        for &dp in dps {
            let Some(c) = get(n, dp) else { continue };
            let _ = writeln!(
                text,
                "{:16} {:>11} {:>11} {:>11} {:>9} {:>11} {:>11}",
                dp.name(),
                ms(c.publish_ms, dp.publishes()),
                ms(c.one_more_ms, dp.has_one_more()),
                ms(c.remove_ms, dp.publishes()),
                mb(c.rss_bytes),
                mb(c.proxy_rss_bytes),
                mb(c.map_bytes),
            );
        }
        if let Some(c) = get(n, Dp::Netd) {
            if !c.one_more_phases.is_empty() {
                let _ = writeln!(
                    text,
                    "netd '+1 port' is a whole container; of it, the port map update took {:.0} us. Phases: {}",
                    c.one_more_ports_us, c.one_more_phases
                );
            }
            if let Some(api) = &c.api {
                api_table(&mut text, n, api);
            }
            if let Some(r) = &c.restart {
                let ((w, wlo, whi), (st, _, _)) = (stats(&r.window_ms), stats(&r.stop_ms));
                let _ = writeln!(
                    text,
                    "netd restart at N={n}: SIGTERM to serving the API again {w:.0} ms (min {wlo:.0}, max {whi:.0}; of it the old agent's exit {st:.0} ms), {} restarts; new connections to a published port meanwhile: {} of {} failed",
                    r.window_ms.len(),
                    r.failed,
                    r.connections
                );
            }
        }
    }
    print!("{text}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let json_path = out.join(format!("bench-{stamp}.json"));
    let raw: Vec<Value> = results
        .iter()
        .map(|((n, dp), c)| serde_json::json!({"ports": n, "datapath": dp.name(), "cell": c}))
        .collect();
    std::fs::write(&json_path, serde_json::to_string_pretty(&raw)?)?;
    std::fs::write(out.join("latest.txt"), &text)?;
    let svg = out.join("bench.svg");
    plot(results, ports, dps, &svg)?;
    println!(
        "\nraw samples: {}\nplot: {}",
        json_path.display(),
        svg.display()
    );
    Ok(())
}
