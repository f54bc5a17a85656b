//! The latency of netd's API while the conntrack table is full (issue #16: the GC
//! walked the table under the daemon's lock and stalled `netd ps`). Each call is timed
//! on its own, at a steady pace over several GC intervals, so the calls that meet a
//! GC run are in the figures: none is dropped as an outlier.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What `netd ps -a` asks.
pub const CALL: &str = "GET /containers/json?all=1";
/// Calls per table state, one started every PERIOD (or every three times a call's own
/// time, where calls are slower than that: at N=10,000 the answer is large, and calls
/// that pile up on each other would measure the queue, not the table).
pub const CALLS: usize = 300;
pub const PERIOD: Duration = Duration::from_millis(10);
/// Calls made one by one first, to learn a call's own time.
const WARM_UP: usize = 5;
/// The daemon's `--ct-gc-interval` for the measurement: CALLS x PERIOD spans three.
pub const GC_INTERVAL: Duration = Duration::from_secs(1);
/// A call that takes longer is a failure of the daemon, not a latency.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The calls at one table state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Calls {
    /// Conntrack entries when the calls began, and when they ended.
    pub entries: u64,
    pub entries_after: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Every call, in order.
    pub samples_us: Vec<u64>,
}

impl Calls {
    fn new(entries: usize, entries_after: usize, samples_us: Vec<u64>) -> Calls {
        let mut s = samples_us.clone();
        s.sort_unstable();
        Calls {
            entries: entries as u64,
            entries_after: entries_after as u64,
            p50_us: percentile(&s, 50.0),
            p99_us: percentile(&s, 99.0),
            max_us: s.last().copied().unwrap_or(0),
            samples_us,
        }
    }
}

/// netd's API latency with an empty and with a full conntrack table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiLatency {
    pub call: String,
    pub gc_interval_s: u64,
    /// Calls started one every this many ms.
    pub period_ms: u64,
    /// max_entries of the conntrack map (entries, two per flow).
    pub capacity: u64,
    pub empty: Calls,
    pub full: Calls,
}

impl ApiLatency {
    pub fn new(capacity: u32, period: Duration, empty: Calls, full: Calls) -> ApiLatency {
        ApiLatency {
            call: CALL.into(),
            gc_interval_s: GC_INTERVAL.as_secs(),
            period_ms: period.as_millis() as u64,
            capacity: u64::from(capacity),
            empty,
            full,
        }
    }
}

/// Nearest-rank percentile of sorted `s`.
fn percentile(s: &[u64], p: f64) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// The pace of the calls: [`PERIOD`], or three times a call's own time if that is
/// longer (measured with a few calls one after the other).
pub fn pace(socket: &Path) -> Result<Duration> {
    let mut own = Vec::with_capacity(WARM_UP);
    for _ in 0..WARM_UP {
        let t0 = Instant::now();
        get(socket, CALL).context("a first call")?;
        own.push(t0.elapsed());
    }
    own.sort_unstable();
    Ok(PERIOD.max(own[WARM_UP / 2] * 3))
}

/// [`CALLS`] calls of [`CALL`] to the daemon at `socket`, one every `period`, each timed from connect to
/// the last byte of the answer; `entries` counts the conntrack table before and after.
///
/// The calls start on schedule, each on a thread of its own,
/// whether or not earlier ones have returned: a user's `netd ps` does not wait for
/// someone else's. Calls made one after the other would hide a stall behind a single
/// slow call (the ones that would have waited are simply not made until it ends).
pub fn calls(socket: &Path, period: Duration, entries: impl Fn() -> usize) -> Result<Calls> {
    let before = entries();
    let start = Instant::now();
    let mut running = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let due = start + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let socket = socket.to_path_buf();
        running.push(std::thread::spawn(move || {
            let t0 = Instant::now();
            get(&socket, CALL).map(|()| t0.elapsed().as_micros() as u64)
        }));
    }
    let mut samples = Vec::with_capacity(CALLS);
    for (i, call) in running.into_iter().enumerate() {
        let took = call
            .join()
            .map_err(|_| anyhow::anyhow!("the thread of call {} panicked", i + 1))?;
        samples.push(took.with_context(|| format!("call {} of {CALL}", i + 1))?);
    }
    Ok(Calls::new(before, entries(), samples))
}

/// One HTTP/1.1 request on a new connection, as the CLI makes it; the answer must be
/// 200 and is read to its end.
fn get(socket: &Path, call: &str) -> Result<()> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    s.set_read_timeout(Some(CALL_TIMEOUT))?;
    write!(
        s,
        "{call} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let status = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    let status = String::from_utf8_lossy(status);
    if !status.starts_with("HTTP/1.1 200") {
        bail!("the daemon answered {:?}", status.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&s, 50.0), 50);
        assert_eq!(percentile(&s, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        // The p99 of 300 calls is the 297th: slow calls show in it once more than 1%
        // (3) are slow, and always in the max.
        let mut s = vec![100u64; 297];
        s.extend([700_000, 800_000, 900_000]);
        assert_eq!(percentile(&s, 99.0), 100);
        s[296] = 600_000;
        assert_eq!(percentile(&s, 99.0), 600_000);
        let c = Calls::new(5, 5, vec![3, 1, 2]);
        assert_eq!((c.p50_us, c.max_us, c.samples_us), (2, 3, vec![3, 1, 2]));
    }
}
