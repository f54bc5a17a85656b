//! One namespace's embedded DNS server: UDP and TCP sockets on 127.0.0.11:53 opened in
//! the namespace (no DNAT rule), served by tokio tasks that read the current record table
//! on every query.
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{
        rdata::{A, PTR},
        Name, RData, Record, RecordType,
    },
};
use tokio::{
    io::{unix::AsyncFd, AsyncReadExt, AsyncWriteExt, Interest},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinHandle,
};

use super::{
    forward::{self, Upstreams},
    records::{Lookup, Table, SERVER_IP},
    Shared,
};

/// Docker's TTL for container names.
const TTL: u32 = 600;
/// Forwarded queries in flight per namespace; more get SERVFAIL at once rather than
/// queueing behind a slow upstream.
const MAX_IN_FLIGHT: usize = 128;

/// What to do with one query.
#[derive(Debug)]
pub enum Reply {
    Answer(Vec<u8>),
    /// Not a local name: forward (the client may), or refuse.
    Forward,
}

fn response(q: &Message, code: ResponseCode) -> Message {
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.metadata.message_type = MessageType::Response;
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.response_code = code;
    m.queries = q.queries.clone();
    m
}

fn encode(m: &Message) -> Vec<u8> {
    m.to_vec().unwrap_or_default()
}

/// The IPv4 address of an in-addr.arpa name.
fn arpa_v4(name: &Name) -> Option<Ipv4Addr> {
    let s = name.to_ascii().to_ascii_lowercase();
    let rest = s.trim_end_matches('.').strip_suffix(".in-addr.arpa")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// Answers `query` from the table as namespace `ns` sees it. Several addresses come
/// shuffled, so clients that take the first one spread over them. Over UDP an answer
/// larger than the client takes (512 bytes without EDNS) comes truncated (TC): the
/// client asks again over TCP.
pub fn answer(table: &Table, ns: &str, query: &[u8], shuffle_seed: u64, udp: bool) -> Reply {
    let q = match Message::from_vec(query) {
        Ok(q) if q.metadata.message_type == MessageType::Query => q,
        _ => {
            // Unparseable: FORMERR with the id, when there is one.
            if query.len() < 2 {
                return Reply::Answer(Vec::new());
            }
            let id = u16::from_be_bytes([query[0], query[1]]);
            let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            return Reply::Answer(encode(&m));
        }
    };
    let Some(question) = q.queries.first() else {
        return Reply::Answer(encode(&response(&q, ResponseCode::FormErr)));
    };
    if q.metadata.op_code != OpCode::Query || q.queries.len() != 1 {
        return Reply::Answer(encode(&response(&q, ResponseCode::NotImp)));
    }
    let name = question.name();
    if question.query_type() == RecordType::PTR {
        if let Some(ip) = arpa_v4(name) {
            if let Some(target) = table.reverse(ns, ip) {
                let mut m = response(&q, ResponseCode::NoError);
                if let Ok(t) = Name::from_ascii(format!("{target}.")) {
                    m.add_answer(Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(t))));
                }
                return Reply::Answer(encode(&m));
            }
        }
        return Reply::Forward;
    }
    match table.lookup(ns, &name.to_ascii()) {
        Lookup::Unknown => Reply::Forward,
        Lookup::Found(mut ips) => {
            // A name that exists answers NOERROR, empty for types it has no record of.
            let mut m = response(&q, ResponseCode::NoError);
            m.metadata.authoritative = true;
            if matches!(question.query_type(), RecordType::A | RecordType::ANY) {
                shuffle(&mut ips, shuffle_seed);
                for ip in ips {
                    m.add_answer(Record::from_rdata(name.clone(), TTL, RData::A(A(ip))));
                }
            }
            let a = encode(&m);
            if udp && a.len() > usize::from(q.max_payload()) {
                return Reply::Answer(encode(&m.truncate()));
            }
            Reply::Answer(a)
        }
    }
}

/// Fisher-Yates with a xorshift: enough to spread clients, no need to be unpredictable.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn refuse(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(q) => encode(&response(&q, ResponseCode::Refused)),
        Err(_) => Vec::new(),
    }
}

fn servfail(query: &[u8]) -> Vec<u8> {
    match Message::from_vec(query) {
        Ok(q) => encode(&response(&q, ResponseCode::ServFail)),
        Err(_) => Vec::new(),
    }
}

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

/// Per-namespace context of the serving tasks.
struct Ctx {
    ns: String,
    shared: Arc<Shared>,
    /// The client's `--dns` servers and the socket in its namespace that asks them.
    own: Option<(Upstreams, forward::Forwarder)>,
    in_flight: Semaphore,
}

impl Ctx {
    async fn resolve(&self, query: &[u8], seed: u64, udp: bool) -> Vec<u8> {
        let table = self.shared.table();
        let reply = answer(&table, &self.ns, query, seed, udp);
        match reply {
            Reply::Answer(a) => a,
            Reply::Forward => {
                let forward = table.client(&self.ns).is_some_and(|c| c.forward);
                drop(table);
                if !forward {
                    return refuse(query);
                }
                let Ok(_permit) = self.in_flight.try_acquire() else {
                    return servfail(query);
                };
                let r = match &self.own {
                    Some((ups, fwd)) => forward::forward(ups, fwd, query).await,
                    None => match &self.shared.host_forwarder {
                        Some(fwd) => {
                            forward::forward(&self.shared.host_upstreams, fwd, query).await
                        }
                        None => None,
                    },
                };
                r.unwrap_or_else(|| servfail(query))
            }
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
    let ctx = Arc::new(Ctx {
        ns: ns.to_string(),
        shared,
        own,
        in_flight: Semaphore::new(MAX_IN_FLIGHT),
    });
    let tasks = vec![
        tokio::spawn(serve_udp(udp, ctx.clone())),
        tokio::spawn(serve_tcp(tcp, ctx)),
    ];
    Ok(Server { tasks })
}

async fn serve_udp(sock: Arc<AsyncFd<std::net::UdpSocket>>, ctx: Arc<Ctx>) {
    let mut buf = vec![0u8; 4096];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    loop {
        let mut ready = match sock.readable().await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("dns {}: {e}", ctx.ns);
                return;
            }
        };
        let (n, peer) = match ready.try_io(|s| s.get_ref().recv_from(&mut buf)) {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                log::warn!("dns {}: {e}", ctx.ns);
                continue;
            }
            Err(_would_block) => continue,
        };
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let query = &buf[..n];
        // Local names are answered inline; forwarding goes to a task of its own so a
        // slow upstream never holds up the next query.
        let table = ctx.shared.table();
        match answer(&table, &ctx.ns, query, seed, true) {
            Reply::Answer(a) => send(&sock, &a, peer),
            Reply::Forward => {
                drop(table);
                let (sock, ctx, query) = (sock.clone(), ctx.clone(), query.to_vec());
                tokio::spawn(async move {
                    let a = ctx.resolve(&query, seed, true).await;
                    send(&sock, &a, peer);
                });
            }
        }
    }
}

/// Sends one answer without waiting: a UDP socket whose buffer is full drops it, as the
/// network would, and the client asks again.
fn send(sock: &AsyncFd<std::net::UdpSocket>, a: &[u8], peer: SocketAddr) {
    if !a.is_empty() {
        let _ = sock.get_ref().send_to(a, peer);
    }
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
        let a = ctx.resolve(&q, seed, false).await;
        let Ok(n) = u16::try_from(a.len()) else {
            return;
        };
        if s.write_all(&n.to_be_bytes()).await.is_err() || s.write_all(&a).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    #[test]
    fn arpa_names() {
        let n = Name::from_ascii("4.3.2.10.in-addr.arpa.").unwrap();
        assert_eq!(arpa_v4(&n), Some(Ipv4Addr::new(10, 2, 3, 4)));
        assert_eq!(arpa_v4(&Name::from_ascii("example.com.").unwrap()), None);
    }

    #[test]
    fn unknown_names_forward_and_garbage_gets_formerr() {
        let t = Table::default();
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        assert!(matches!(
            answer(&t, "ns", &encode(&q), 1, true),
            Reply::Forward
        ));
        let Reply::Answer(a) = answer(&t, "ns", &[0xab, 0xcd, 0xff], 1, true) else {
            panic!("garbage must be answered");
        };
        let m = Message::from_vec(&a).unwrap();
        assert_eq!(m.metadata.id, 0xabcd);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn a_big_udp_answer_is_truncated_and_whole_over_tcp() {
        use crate::model::{test_attachment, test_network, Attachment, Container, Network};
        let net = Network {
            builtin: false,
            ..test_network()
        };
        let mut st = crate::store::State::default();
        st.networks.push(net.clone());
        // 60 containers share the alias "pool": 60 A records do not fit 512 bytes.
        for i in 0..60u8 {
            let a = Attachment {
                network: net.id.clone(),
                ip: [10, 1, 0, i + 2].into(),
                aliases: vec!["pool".into()],
                ..test_attachment()
            };
            let mut c: Container = serde_json::from_value(serde_json::json!({
                "id": format!("{i:064}"), "name": format!("c{i}"), "hostname": null,
                "mode": "bridge", "netns": format!("ns{i}"), "attachments": [], "ports": [],
                "cmd": [], "state": "running", "pid": null, "pid_start": null,
                "exit_code": null, "auto_remove": false, "created": 0
            }))
            .unwrap();
            c.attachments.push(a);
            st.containers.push(c);
        }
        let t = Table::build(&st);
        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("pool.").unwrap(),
            RecordType::A,
        ));
        let Reply::Answer(udp) = answer(&t, "ns0", &encode(&q), 7, true) else {
            panic!("pool is a local name");
        };
        let m = Message::from_vec(&udp).unwrap();
        assert!(udp.len() <= 512 && m.metadata.truncation && m.answers.is_empty());
        let Reply::Answer(tcp) = answer(&t, "ns0", &encode(&q), 7, false) else {
            panic!("pool is a local name");
        };
        let m = Message::from_vec(&tcp).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 60);
        assert_eq!(m.metadata.id, q.metadata.id);
    }

    #[test]
    fn shuffle_keeps_every_element() {
        let mut v: Vec<u32> = (0..10).collect();
        shuffle(&mut v, 42);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..10).collect::<Vec<_>>());
    }
}
