//! Datagrams larger than a link's MTU, which IP carries in fragments.
//!
//!   netd-tester udp-size ADDR:PORT SIZE [SPORT]   send SIZE bytes, print the first
//!                                                 word of the answer and its length
//!   netd-tester serve-udp-size SIZE PORT          answer each datagram, on [::] (both
//!                                                 families), with SIZE bytes saying
//!                                                 "peer=IP:PORT len=N"
use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

/// The largest datagram a socket can take.
pub const MAX: usize = 65_535;

fn size(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n <= MAX - 48)
        .ok_or_else(|| format!("{s:?} is not a datagram size"))
}

/// Sends a SIZE-byte datagram (from SPORT, 0 for any) and prints
/// "<first word of the answer> got=<answer length>".
pub fn send(addr: &str, bytes: &str, sport: &str, timeout: Duration) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let msg = vec![b'x'; size(bytes)?];
    let bind = if a.is_ipv6() {
        format!("[::]:{sport}")
    } else {
        format!("0.0.0.0:{sport}")
    };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout.min(Duration::from_millis(700))))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX];
    // The first datagram may be lost while neighbours resolve: a few tries.
    for _ in 0..4 {
        s.send_to(&msg, a)
            .map_err(|e| format!("send to {addr}: {e}"))?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n.min(120)]).into_owned();
            let first = text.split(' ').next().unwrap_or("");
            println!("{first} got={n}");
            return Ok(());
        }
    }
    Err(format!("no answer from {addr}"))
}

/// Answers each datagram with SIZE bytes (at least its own words):
/// "peer=IP:PORT len=N " padded with dots.
pub fn serve(port: &str, bytes: &str) -> Result<(), String> {
    let want = size(bytes)?;
    let s = UdpSocket::bind(format!("[::]:{port}")).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX];
    loop {
        let (n, peer) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let mut reply = format!("peer={peer} len={n} ").into_bytes();
        if reply.len() < want {
            reply.resize(want, b'.');
        }
        let _ = s.send_to(&reply, peer);
    }
}
