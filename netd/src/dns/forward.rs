//! Forwarding the names netd does not know: upstream selection with failover, timeouts,
//! and the sockets that reach an upstream from the right namespace.
//!
//! aardvark-dns's known failure is a dead first upstream stalling every lookup for its
//! whole timeout. Here an upstream that timed out is set aside for a while: later queries
//! try the ones that answered first, and the dead one only when nothing else is left.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::net::UdpSocket;

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

/// Where a forwarding socket is opened: the daemon's namespace, or a client's.
#[derive(Clone, Debug)]
pub enum From {
    Daemon,
    Netns(String),
}

async fn socket(from: &From, server: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let std_sock = match from {
        From::Daemon => std::net::UdpSocket::bind(any)?,
        // A socket belongs to the namespace it was created in: make it on a thread that
        // entered the client's namespace, then use it from the runtime as usual.
        From::Netns(ns) => {
            let ns = ns.clone();
            tokio::task::spawn_blocking(move || {
                crate::netns::run_in(&ns, move || Ok(std::net::UdpSocket::bind(any)?))
            })
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?
        }
    };
    std_sock.set_nonblocking(true)?;
    let s = UdpSocket::from_std(std_sock)?;
    s.connect(server).await?;
    Ok(s)
}

/// Sends `query` to the upstreams in turn until one answers with the same id; None when
/// none did.
pub async fn forward(ups: &Upstreams, from: &From, query: &[u8]) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for server in ups.order(Instant::now()) {
        let answer = async {
            let s = socket(from, server).await.ok()?;
            s.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = s.recv(&mut buf).await.ok()?;
                // A late answer to an earlier query on a reused port is not this one's.
                if buf.get(..2) == Some(id) {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, answer).await {
            Ok(Some(a)) => {
                ups.report(server, true, Instant::now());
                return Some(a);
            }
            _ => {
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
        let q = [0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let t = Instant::now();
        assert_eq!(forward(&ups, &From::Daemon, &q).await.unwrap(), q);
        assert!(t.elapsed() >= ATTEMPT_TIMEOUT);
        // The second query goes to the live one first: no stall.
        let t = Instant::now();
        assert_eq!(forward(&ups, &From::Daemon, &q).await.unwrap(), q);
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
