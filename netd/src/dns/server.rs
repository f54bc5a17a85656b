//! One namespace's embedded DNS server: UDP and TCP sockets on 127.0.0.11:53 opened in
//! the namespace (no DNAT rule), served by tokio tasks that read the current record table
//! on every query.
use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{unix::AsyncFd, AsyncReadExt, AsyncWriteExt, Interest},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use super::{
    answer::Ctx,
    forward::{self, Upstreams},
    records::SERVER_IP,
    Shared,
};

/// A running server; its tasks end when it is dropped.
pub struct Server {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens 127.0.0.11:53 (UDP and TCP) inside namespace `ns` and serves it.
pub fn start(ns: &str, shared: Arc<Shared>, own: Vec<SocketAddr>) -> anyhow::Result<Server> {
    let addr = SocketAddr::from((SERVER_IP, 53));
    let want_fwd = !own.is_empty();
    let (udp, tcp, fwd) = crate::netns::run_in(ns, move || {
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        // `--dns` servers are asked from the container's namespace (its routes, its
        // address): the forwarding socket is made here too.
        let fwd = if want_fwd {
            Some(std::net::UdpSocket::bind((
                std::net::Ipv4Addr::UNSPECIFIED,
                0,
            ))?)
        } else {
            None
        };
        Ok((udp, tcp, fwd))
    })?;
    let own = match fwd {
        Some(s) => Some((Upstreams::new(own), forward::Forwarder::new(s)?)),
        None => None,
    };
    // Readable interest only: a UDP send never waits for room, and a socket registered for
    // writability makes every send (loopback frees the buffer at once) wake the runtime's
    // parked worker through epoll, which cost more than the query itself.
    // SAFETY: the AsyncFd owns the socket, so the fd stays open and the same for its life.
    let udp = Arc::new(unsafe { AsyncFd::register_with_interest(udp, Interest::READABLE) }?);
    let tcp = TcpListener::from_std(tcp)?;
    let ctx = Arc::new(Ctx::new(ns, shared, own));
    let tasks = vec![
        tokio::spawn(super::udp::serve(udp, ctx.clone())),
        tokio::spawn(serve_tcp(tcp, ctx)),
    ];
    Ok(Server { tasks })
}

async fn serve_tcp(listener: TcpListener, ctx: Arc<Ctx>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_tcp_conn(stream, ctx.clone()));
    }
}

/// DNS over TCP: each message carries a two-byte length.
async fn serve_tcp_conn(mut s: TcpStream, ctx: Arc<Ctx>) {
    let mut seed = u64::from(std::process::id()) | 1;
    loop {
        let mut len = [0u8; 2];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if s.read_exact(&mut q).await.is_err() {
            return;
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        crate::metrics::instruments::dns_query(crate::metrics::instruments::Transport::Tcp);
        let a = ctx.resolve(&q, seed, false).await;
        let Ok(n) = u16::try_from(a.len()) else {
            return;
        };
        if s.write_all(&n.to_be_bytes()).await.is_err() || s.write_all(&a).await.is_err() {
            return;
        }
    }
}
