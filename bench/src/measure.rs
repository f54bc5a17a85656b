//! The traffic figures of one round: request/response, connection rate, UDP, one and
//! two streams of throughput, and masquerade from the container; the same tester-based
//! client for every datapath (client on CPU 0, servers on CPU 1).
use std::{path::Path, time::Duration};

use anyhow::{anyhow, Context, Result};
use netd_lab::{cmd::in_ns, Lab};
use serde_json::Value;

use crate::{
    cell::Sample,
    dp::{Dp, BIG_DATAGRAM, CLIENT_IP, P_CRR, P_IPERF, P_MASQ, P_MASQ_UDP, P_RR, P_UDP},
    peers::Datapath,
};

pub(crate) fn tester_load(
    ns: &str,
    tester: &Path,
    kind: &str,
    addr: &str,
    secs: f64,
) -> Result<Value> {
    tester_json(ns, tester, &[kind, addr, &format!("{secs}")])
}

/// Runs the tester with `args` in `ns` on CPU 0 and reads its one JSON line.
fn tester_json(ns: &str, tester: &Path, args: &[&str]) -> Result<Value> {
    let tester = tester.display().to_string();
    let mut argv = vec![tester.as_str()];
    argv.extend_from_slice(args);
    let out = in_ns(ns, Some(0), &argv)?;
    serde_json::from_str(out.trim()).with_context(|| format!("tester output {out:?}"))
}

/// Lets connections from `ns` reuse a local port whose earlier connection waits in
/// TIME_WAIT (after a second), as a busy client host is set up: a connection-rate run
/// leaves tens of thousands of them for a minute, and the next run in that minute would
/// otherwise measure the client's exhausted ephemeral ports, not the datapath.
pub(crate) fn reuse_time_wait(ns: &str) -> Result<()> {
    in_ns(ns, None, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    Ok(())
}

pub(crate) fn iperf(ns: &str, addr: &str, streams: usize, secs: f64) -> Result<f64> {
    let t = format!("{}", secs.ceil().max(1.0) as u64);
    let out = in_ns(
        ns,
        Some(0),
        &[
            "iperf3",
            "-c",
            addr,
            "-p",
            &P_IPERF.to_string(),
            "-t",
            &t,
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| anyhow!("iperf3 gave no result"))
}

/// One round of every traffic figure through datapath `dp` in `lab`.
pub fn measure(lab: &Lab, dp: &dyn Datapath, tester: &Path, secs: f64) -> Result<Sample> {
    let target = dp.target();
    let t = |p: u16| format!("{target}:{p}");
    let rr = tester_load(&lab.client, tester, "rr", &t(P_RR), secs)?;
    dp.flush_conntrack(lab);
    // SYN retries after a conntrack flush stall for a second: let things settle.
    std::thread::sleep(Duration::from_millis(500));
    let crr = tester_load(&lab.client, tester, "crr", &t(P_CRR), secs)?;
    let udp = tester_load(&lab.client, tester, "udprr", &t(P_UDP), secs)?;
    let big = big_udp_rr(&lab.client, tester, &t(P_UDP), secs)?;
    let tput1 = iperf(&lab.client, target, 1, secs)?;
    let tput2 = iperf(&lab.client, target, 2, secs)?;
    dp.flush_conntrack(lab);
    std::thread::sleep(Duration::from_millis(500));
    let masq = tester_load(
        dp.container_ns(),
        tester,
        "crr",
        &format!("{CLIENT_IP}:{P_MASQ}"),
        secs,
    )?;
    let masq_big = match dp.dp() {
        Dp::Plain => Value::Null,
        _ => big_udp_rr(
            dp.container_ns(),
            tester,
            &format!("{CLIENT_IP}:{P_MASQ_UDP}"),
            secs,
        )?,
    };
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(Sample {
        rr_rate: f(&rr, "rate"),
        rr_p50_us: u(&rr, "p50_us"),
        rr_p99_us: u(&rr, "p99_us"),
        crr_rate: f(&crr, "rate"),
        crr_p50_us: u(&crr, "p50_us"),
        crr_p99_us: u(&crr, "p99_us"),
        crr_errors: u(&crr, "errors"),
        udp_rr_rate: f(&udp, "rate"),
        tput1_gbps: tput1,
        tput2_gbps: tput2,
        masq_crr_rate: if dp.dp() == Dp::Plain {
            0.0
        } else {
            f(&masq, "rate")
        },
        big_udp_rr_rate: f(&big, "rate"),
        masq_big_udp_rr_rate: f(&masq_big, "rate"),
    })
}

/// UDP request/response of `BIG_DATAGRAM` bytes each way, from `ns` to `addr`.
fn big_udp_rr(ns: &str, tester: &Path, addr: &str, secs: f64) -> Result<Value> {
    let (secs, size) = (format!("{secs}"), BIG_DATAGRAM.to_string());
    tester_json(ns, tester, &["udprr", addr, &secs, &size])
}
