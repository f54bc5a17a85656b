//! A small traffic tool for the end-to-end tests (netavark's habit): servers that report
//! the peer address they saw, and clients with hard timeouts. Only std, so it runs in
//! any namespace without extra packages.
//!
//!   netd-tester serve-tcp PORT          answer each connection with "peer=IP:PORT\n"
//!   netd-tester serve-udp PORT          answer each datagram with "peer=IP:PORT <data>"
//!   netd-tester serve-tcp6|serve-udp6|serve-crr6|serve-echo6 PORT
//!                                       the same servers on [::] (IPv6, and IPv4 too)
//!   netd-tester tcp ADDR:PORT           print what the server says (exit 1 on failure)
//!   netd-tester udp ADDR:PORT MSG [SPORT]  send MSG (from SPORT), print the answer
//!   netd-tester serve-push PORT MS      on each connection: "1\n", then after MS "2\n"
//!   netd-tester read-push ADDR:PORT MS  read both lines of serve-push within MS
//!   netd-tester udp-flood ADDR:PORT N   one datagram from each of N new source ports
//!   netd-tester connect-every ADDR:PORT SECS MS [SEND]  a new connection every MS
//!                                       for SECS, each sent SEND (if given) and read
//!                                       to its end; prints
//!                                       {"ok":N,"failed":F,"first_error":".."}
//!   netd-tester udp-connected ADDR:PORT MSG  the same on a connected socket; prints
//!                                            "refused" when an ICMP port-unreachable
//!                                            for that exact peer comes back
//!   netd-tester udp-size, serve-udp-size     datagrams of a given size (`datagrams`)
//!   netd-tester udprr ADDR SECS [SIZE]       UDP request/response of SIZE bytes (1)
// Beside this file: a crate root finds its modules in its own directory.
#[path = "netd-tester/datagrams.rs"]
mod datagrams;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::exit,
    time::Duration,
};

/// Client timeout: NETD_TESTER_TIMEOUT_MS, or 3 s. Probes of paths that should be
/// blocked set it low, since a drop shows only as a timeout.
fn timeout() -> Duration {
    std::env::var("NETD_TESTER_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(3))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["serve-tcp", port] => serve_tcp(&any4(port)),
        ["serve-udp", port] => serve_udp(&any4(port)),
        // IPv6 servers, on [::] (which takes IPv4 too, as ::ffff:a.b.c.d).
        ["serve-tcp6", port] => serve_tcp(&any6(port)),
        ["serve-udp6", port] => serve_udp(&any6(port)),
        ["serve-crr6", port] => serve_crr(&any6(port)),
        ["serve-echo6", port] => serve_echo(&any6(port)),
        ["tcp", addr] => tcp(addr),
        ["udp", addr, msg] => udp(addr, msg, "0"),
        ["udp", addr, msg, sport] => udp(addr, msg, sport),
        ["udp-connected", addr, msg] => udp_connected(addr, msg),
        ["serve-echo", port] => serve_echo(&any4(port)),
        ["serve-crr", port] => serve_crr(&any4(port)),
        ["rr", addr, secs] => load(addr, secs, Load::TcpRr),
        ["crr", addr, secs] => load(addr, secs, Load::TcpCrr),
        ["udprr", addr, secs] => load(addr, secs, Load::UdpRr(1)),
        ["udprr", addr, secs, size] => match size.parse() {
            Ok(n) if n > 0 && n <= datagrams::MAX => load(addr, secs, Load::UdpRr(n)),
            _ => Err(format!("{size:?} is not a datagram size")),
        },
        ["udp-size", addr, size] => datagrams::send(addr, size, "0", timeout()),
        ["udp-size", addr, size, sport] => datagrams::send(addr, size, sport, timeout()),
        ["serve-udp-size", size, port] => datagrams::serve(port, size),
        ["hold", addr, secs] => hold(addr, secs),
        ["serve-push", port, ms] => serve_push(port, ms),
        ["read-push", addr, ms] => read_push(addr, ms),
        ["udp-flood", addr, n] => udp_flood(addr, n),
        ["connect-every", addr, secs, ms] => connect_every(addr, secs, ms, ""),
        ["connect-every", addr, secs, ms, send] => connect_every(addr, secs, ms, send),
        _ => Err("usage: netd-tester serve-tcp PORT | serve-udp PORT | tcp ADDR:PORT | udp ADDR:PORT MSG".into()),
    };
    if let Err(e) = r {
        eprintln!("netd-tester: {e}");
        exit(1);
    }
}

/// The wildcard addresses servers bind to.
fn any4(port: &str) -> String {
    format!("0.0.0.0:{port}")
}

fn any6(port: &str) -> String {
    format!("[::]:{port}")
}

/// The unspecified address of `a`'s family, port `port`: a client socket's bind.
fn local_for(a: &SocketAddr, port: &str) -> String {
    if a.is_ipv6() {
        any6(port)
    } else {
        any4(port)
    }
}

fn serve_tcp(bind: &str) -> Result<(), String> {
    let l = TcpListener::bind(bind).map_err(|e| e.to_string())?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let peer = s.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = s.write_all(format!("peer={peer}\n").as_bytes());
        });
    }
    Ok(())
}

fn serve_udp(bind: &str) -> Result<(), String> {
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; datagrams::MAX];
    loop {
        let (n, peer) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let reply = format!("peer={peer} {}", String::from_utf8_lossy(&buf[..n]));
        let _ = s.send_to(reply.as_bytes(), peer);
    }
}

fn tcp(addr: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&a, timeout()).map_err(|e| format!("connect {a}: {e}"))?;
    s.set_read_timeout(Some(timeout()))
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| format!("read from {a}: {e}"))?;
    print!("{out}");
    Ok(())
}

/// One thread, one connection at a time: accept, read a byte, answer it, close. No
/// fork or thread per connection, so a connection-rate test measures the network path.
fn serve_crr(bind: &str) -> Result<(), String> {
    let l = TcpListener::bind(bind).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let _ = s.set_nodelay(true);
        if s.read_exact(&mut b).is_ok() {
            let _ = s.write_all(&b);
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Load {
    /// One TCP connection, 1-byte request and response, back to back.
    TcpRr,
    /// Connect, 1-byte request and response, close; again.
    TcpCrr,
    /// One UDP socket, a request of this many bytes, any answer.
    UdpRr(usize),
}

/// Runs `kind` against `addr` for `secs` seconds and prints one JSON line:
/// {"ops":N,"secs":S,"rate":R,"p50_us":..,"p99_us":..,"errors":E}.
fn load(addr: &str, secs: &str, kind: Load) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let secs: f64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number"))?;
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    let start = std::time::Instant::now();
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut errors = 0u64;
    let mut b = [0u8; 1];
    match kind {
        Load::TcpRr => {
            let mut s = TcpStream::connect_timeout(&a, timeout())
                .map_err(|e| format!("connect {a}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(timeout()))
                .map_err(|e| e.to_string())?;
            while std::time::Instant::now() < end {
                let t = std::time::Instant::now();
                s.write_all(b"x").map_err(|e| e.to_string())?;
                s.read_exact(&mut b).map_err(|e| e.to_string())?;
                lat.push(t.elapsed().as_micros() as u32);
            }
        }
        Load::TcpCrr => {
            while std::time::Instant::now() < end {
                let t = std::time::Instant::now();
                let r = (|| -> std::io::Result<()> {
                    let mut s = TcpStream::connect_timeout(&a, timeout())?;
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(timeout()))?;
                    s.write_all(b"x")?;
                    s.read_exact(&mut b)
                })();
                match r {
                    Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
        }
        Load::UdpRr(size) => {
            let s = UdpSocket::bind(local_for(&a, "0")).map_err(|e| e.to_string())?;
            s.connect(a).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let (msg, mut buf) = (vec![b'x'; size], vec![0u8; datagrams::MAX]);
            while std::time::Instant::now() < end {
                let t = std::time::Instant::now();
                if s.send(&msg).is_err() || s.recv(&mut buf).is_err() {
                    errors += 1;
                    continue;
                }
                lat.push(t.elapsed().as_micros() as u32);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"ops\":{},\"secs\":{elapsed:.3},\"rate\":{:.1},\"p50_us\":{},\"p99_us\":{},\"errors\":{errors}}}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}

/// Echoes every byte back, per connection.
fn serve_echo(bind: &str) -> Result<(), String> {
    let l = TcpListener::bind(bind).map_err(|e| e.to_string())?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while let Ok(n) = s.read(&mut b) {
                if n == 0 || s.write_all(&b[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Holds one TCP connection for SECS seconds, a byte and its echo every 100 ms; prints
/// "held N" or fails with "stalled after N round trips" (so a test can see an
/// established connection being cut).
fn hold(addr: &str, secs: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let secs: u64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number"))?;
    let mut s =
        TcpStream::connect_timeout(&a, timeout()).map_err(|e| format!("connect {a}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .map_err(|e| e.to_string())?;
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    let mut n = 0u64;
    let mut b = [0u8; 1];
    while std::time::Instant::now() < end {
        if s.write_all(b"x").is_err() || s.read_exact(&mut b).is_err() {
            return Err(format!("stalled after {n} round trips"));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("held {n}");
    Ok(())
}

/// New connections at a steady pace (not back to back: a restart test wants to know
/// that every connection attempted while the agent was away got through, not a rate).
/// Each one must answer (serve-tcp's greeting) within the client timeout.
fn connect_every(addr: &str, secs: &str, ms: &str, send: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let secs: f64 = secs
        .parse()
        .map_err(|_| format!("{secs:?} is not a number"))?;
    let ms: u64 = ms.parse().map_err(|_| format!("{ms:?} is not a number"))?;
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    let (mut ok, mut failed, mut first_error) = (0u64, 0u64, String::new());
    while std::time::Instant::now() < end {
        let r = (|| -> std::io::Result<usize> {
            let mut s = TcpStream::connect_timeout(&a, timeout())?;
            s.set_read_timeout(Some(timeout()))?;
            s.write_all(send.as_bytes())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)
        })();
        match r {
            Ok(n) if n > 0 => ok += 1,
            other => {
                failed += 1;
                if first_error.is_empty() {
                    first_error = match other {
                        Ok(_) => "closed without a greeting".into(),
                        Err(e) => e.to_string(),
                    };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(ms));
    }
    println!("{{\"ok\":{ok},\"failed\":{failed},\"first_error\":{first_error:?}}}");
    Ok(())
}

fn udp_connected(addr: &str, msg: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let s = UdpSocket::bind(local_for(&a, "0")).map_err(|e| e.to_string())?;
    s.connect(addr)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout().min(Duration::from_millis(700))))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for _ in 0..4 {
        let _ = s.send(msg.as_bytes());
        match s.recv(&mut buf) {
            Ok(n) => {
                println!("{}", String::from_utf8_lossy(&buf[..n]));
                return Ok(());
            }
            // The kernel matched an ICMP error to this connected socket's exact tuple.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                println!("refused");
                return Ok(());
            }
            Err(_) => {}
        }
    }
    Err(format!("no answer from {addr}"))
}

fn udp(addr: &str, msg: &str, sport: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let s = UdpSocket::bind(local_for(&a, sport)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout().min(Duration::from_millis(700))))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    // UDP may lose the first datagram while neighbours resolve: retry a few times.
    for _ in 0..4 {
        s.send_to(msg.as_bytes(), addr)
            .map_err(|e| format!("send to {addr}: {e}"))?;
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            println!("{} from={from}", String::from_utf8_lossy(&buf[..n]));
            return Ok(());
        }
    }
    Err(format!("no answer from {addr}"))
}

/// On each connection: a first line at once, a second after `ms` of silence. The
/// second is what an idle established flow must still carry (server speaks first).
fn serve_push(port: &str, ms: &str) -> Result<(), String> {
    let ms: u64 = ms.parse().map_err(|_| format!("{ms:?} is not a number"))?;
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).map_err(|e| e.to_string())?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.write_all(b"1\n");
            std::thread::sleep(Duration::from_millis(ms));
            let _ = s.write_all(b"2\n");
        });
    }
    Ok(())
}

/// Reads serve-push's two lines, waiting at most `ms` for each (more than the server's
/// pause).
fn read_push(addr: &str, ms: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let wait = Duration::from_millis(ms.parse().map_err(|_| format!("{ms:?} is not a number"))?);
    let mut s =
        TcpStream::connect_timeout(&a, timeout()).map_err(|e| format!("connect {a}: {e}"))?;
    s.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut b = [0u8; 16];
    while !got.ends_with(b"2\n") {
        let n = s.read(&mut b).map_err(|e| {
            format!(
                "read from {a} after {:?}: {e}",
                String::from_utf8_lossy(&got)
            )
        })?;
        if n == 0 {
            return Err(format!(
                "{a} closed after {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&b[..n]);
    }
    print!("{}", String::from_utf8_lossy(&got));
    Ok(())
}

/// `n` new UDP flows: one datagram each from a fresh socket (a new source port).
fn udp_flood(addr: &str, n: &str) -> Result<(), String> {
    let a: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let n: usize = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
    let mut sent = 0;
    for _ in 0..n {
        let s = UdpSocket::bind(local_for(&a, "0")).map_err(|e| e.to_string())?;
        if s.send_to(b"x", a).is_ok() {
            sent += 1;
        }
    }
    println!("sent={sent}");
    Ok(())
}
