//! Forwarding the names netd does not know: upstream selection with failover, timeouts,
//! and the sockets that reach an upstream from the right namespace.
//!
//! aardvark-dns's known failure is a dead first upstream stalling every lookup for its
//! whole timeout. Here an upstream that timed out is set aside for a while: later queries
//! try the ones that answered first, and the dead one only when nothing else is left.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::oneshot};

/// How long one upstream gets to answer before the next is tried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long an upstream that did not answer is tried only after the others.
pub const HOLD_DOWN: Duration = Duration::from_secs(30);

/// A set of upstream servers in the user's order, with what netd learnt about them.
#[derive(Debug)]
pub struct Upstreams {
    servers: Vec<SocketAddr>,
    /// Per server: set aside until this instant (after a failure).
    down_until: Mutex<Vec<Option<Instant>>>,
}

impl Upstreams {
    pub fn new(servers: Vec<SocketAddr>) -> Upstreams {
        let n = servers.len();
        Upstreams {
            servers,
            down_until: Mutex::new(vec![None; n]),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The order to try the servers in at `now`: the healthy ones in the user's order,
    /// then the set-aside ones, soonest back first.
    pub fn order(&self, now: Instant) -> Vec<SocketAddr> {
        let down = match self.down_until.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut idx: Vec<usize> = (0..self.servers.len()).collect();
        idx.sort_by_key(|&i| match down[i] {
            Some(t) if t > now => (1, Some(t)),
            _ => (0, None),
        });
        idx.into_iter().map(|i| self.servers[i]).collect()
    }

    /// Records whether `server` answered.
    pub fn report(&self, server: SocketAddr, answered: bool, now: Instant) {
        let Some(i) = self.servers.iter().position(|s| *s == server) else {
            return;
        };
        let mut g = match self.down_until.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g[i] = (!answered).then_some(now + HOLD_DOWN);
    }
}

/// The nameservers of a resolv.conf, port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Queries in flight on a forwarder: its id -> (the server asked, who waits).
type Pending = HashMap<u16, (SocketAddr, oneshot::Sender<Vec<u8>>)>;

/// One UDP socket that forwards queries from one namespace (the daemon's or a
/// client's), with the answers matched back to their queries by a query id of its own.
/// Made once per namespace: no socket, and no thread to enter the namespace, per query.
pub struct Forwarder {
    sock: Arc<UdpSocket>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Forwarder {
    /// A forwarder on `sock` (bound, non-blocking, created in the namespace the queries
    /// must leave from).
    pub fn new(sock: std::net::UdpSocket) -> std::io::Result<Forwarder> {
        sock.set_nonblocking(true)?;
        let sock = Arc::new(UdpSocket::from_std(sock)?);
        let pending: Arc<Mutex<Pending>> = Arc::default();
        let reader = tokio::spawn(read_answers(sock.clone(), pending.clone()));
        // Start the ids somewhere unpredictable (an off-path guess has to hit an id in
        // flight as well as the port).
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Ok(Forwarder {
            sock,
            pending,
            next_id: AtomicU32::new(seed),
            reader,
        })
    }

    /// A forwarder in the daemon's own namespace.
    pub fn in_daemon() -> std::io::Result<Forwarder> {
        Forwarder::new(std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?)
    }

    /// Sends `query` to `server` and waits up to `ATTEMPT_TIMEOUT` for its answer.
    async fn ask(&self, server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
        let orig = query.get(..2)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = lock(&self.pending);
            // Bounded in-flight queries (per server) keep this far below 65536 ids.
            let mut id;
            loop {
                let n = self.next_id.fetch_add(0x9e37, Ordering::Relaxed);
                id = (n ^ (n >> 16)) as u16;
                if !p.contains_key(&id) {
                    break;
                }
            }
            p.insert(id, (server, tx));
            id
        };
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let answer = async {
            self.sock.send_to(&q, server).await.ok()?;
            rx.await.ok()
        };
        let r = tokio::time::timeout(ATTEMPT_TIMEOUT, answer)
            .await
            .ok()
            .flatten();
        lock(&self.pending).remove(&id);
        r.map(|mut a| {
            a[..2].copy_from_slice(orig);
            a
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Hands each answer to the query waiting for it: same id, from the server it was sent
/// to. Anything else is dropped.
async fn read_answers(sock: Arc<UdpSocket>, pending: Arc<Mutex<Pending>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let waiter = {
            let mut p = lock(&pending);
            match p.get(&id) {
                Some((server, _)) if *server == from => p.remove(&id),
                _ => None,
            }
        };
        if let Some((_, tx)) = waiter {
            let _ = tx.send(buf[..n].to_vec());
        }
    }
}

/// Sends `query` to the upstreams in turn until one answers; None when none did.
pub async fn forward(ups: &Upstreams, fwd: &Forwarder, query: &[u8]) -> Option<Vec<u8>> {
    for server in ups.order(Instant::now()) {
        match fwd.ask(server, query).await {
            Some(a) => {
                ups.report(server, true, Instant::now());
                return Some(a);
            }
            None => {
                log::debug!("dns: upstream {server} did not answer");
                ups.report(server, false, Instant::now());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_dead_upstream_moves_behind_the_live_ones_for_a_while() {
        let ups = Upstreams::new(vec![addr("192.0.2.1:53"), addr("192.0.2.2:53")]);
        let t0 = Instant::now();
        assert_eq!(ups.order(t0)[0], addr("192.0.2.1:53"));
        ups.report(addr("192.0.2.1:53"), false, t0);
        assert_eq!(
            ups.order(t0 + Duration::from_secs(1)),
            vec![addr("192.0.2.2:53"), addr("192.0.2.1:53")]
        );
        // After the hold-down, the user's order again.
        assert_eq!(ups.order(t0 + HOLD_DOWN * 2)[0], addr("192.0.2.1:53"));
        // An answer clears it at once.
        ups.report(addr("192.0.2.1:53"), false, t0);
        ups.report(addr("192.0.2.1:53"), true, t0);
        assert_eq!(ups.order(t0)[0], addr("192.0.2.1:53"));
    }

    #[tokio::test]
    async fn failover_reaches_the_second_upstream_and_remembers() {
        // A silent upstream (bound, never answers) and a live one that echoes.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let live = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move {
            let mut b = [0u8; 512];
            while let Ok((n, p)) = live.recv_from(&mut b).await {
                let _ = live.send_to(&b[..n], p).await;
            }
        });
        let ups = Upstreams::new(vec![dead.local_addr().unwrap(), live_addr]);
        let fwd = Forwarder::in_daemon().unwrap();
        let q = [0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let t = Instant::now();
        // The answer carries the client's id again (the forwarder used one of its own).
        assert_eq!(forward(&ups, &fwd, &q).await.unwrap(), q);
        assert!(t.elapsed() >= ATTEMPT_TIMEOUT);
        // The second query goes to the live one first: no stall.
        let t = Instant::now();
        assert_eq!(forward(&ups, &fwd, &q).await.unwrap(), q);
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn resolv_conf_nameservers() {
        let t = "# x\nnameserver 127.0.0.53\nsearch a\nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![addr("127.0.0.53:53"), addr("[fe80::1]:53")]
        );
    }
}
