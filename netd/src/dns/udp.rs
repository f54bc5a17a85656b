//! The UDP side of a namespace's DNS server: one readiness wake takes every queued query
//! (up to `BATCH`) with one recvmmsg, answers them against one snapshot of the table into
//! reused buffers, and sends the answers with one sendmmsg. Under load that divides the
//! syscalls and the runtime's wakeups by the batch size; one query alone costs what it
//! did (a recvmmsg of one, a sendmmsg of one).
use std::{
    cell::RefCell,
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::AsRawFd,
    sync::Arc,
};

use tokio::io::unix::AsyncFd;

use crate::metrics::instruments as metrics;

use super::{
    answer::{answer_into, Ctx, Handled},
    Table,
};

/// Queries taken per recvmmsg.
const BATCH: usize = 32;
/// The largest query read: a query is a name of at most 255 bytes and a few EDNS0
/// options, so 4 KiB holds any real one while a batch's buffers stay at 128 KiB; a
/// longer datagram is cut, does not parse and gets FORMERR.
const MAX_QUERY: usize = 4096;

/// Buffers of one batch. They live per runtime thread, not per namespace (128 KiB a
/// piece): a batch is received, answered and sent without an await in between, so one
/// set serves every namespace's server on that thread.
struct Batch {
    queries: Vec<u8>,
    lens: [usize; BATCH],
    peers: [libc::sockaddr_in; BATCH],
    answers: Vec<Vec<u8>>,
    /// Which slots have an answer to send, in order.
    outgoing: Vec<usize>,
}

thread_local! {
    static SCRATCH: RefCell<Batch> = RefCell::new(Batch::new());
}

impl Batch {
    fn new() -> Batch {
        Batch {
            queries: vec![0; BATCH * MAX_QUERY],
            lens: [0; BATCH],
            // SAFETY: sockaddr_in is plain C data; all zeroes is a valid value.
            peers: unsafe { std::mem::zeroed() },
            answers: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            outgoing: Vec::with_capacity(BATCH),
        }
    }

    /// Receives up to `BATCH` queued datagrams; how many (WouldBlock if none).
    fn recv(&mut self, fd: i32) -> io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: self.queries[i * MAX_QUERY..].as_mut_ptr().cast(),
            iov_len: MAX_QUERY,
        });
        // SAFETY: mmsghdr is plain C data (pointers and lengths); zeroes are valid and
        // every pointer the kernel uses is set below.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut self.peers[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iov[i];
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at its own buffer of MAX_QUERY bytes and its own
        // sockaddr_in, all alive and unaliased for the call; the socket is non-blocking.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for (len, h) in self.lens.iter_mut().zip(&hdrs).take(n) {
            *len = h.msg_len as usize;
        }
        Ok(n)
    }

    /// Sends the answers of `outgoing`. An answer the socket refuses (a full buffer) is
    /// dropped, as the network would drop it; the client asks again.
    fn send(&mut self, fd: i32) {
        let mut iov: Vec<libc::iovec> = self
            .outgoing
            .iter()
            .map(|&i| libc::iovec {
                iov_base: self.answers[i].as_mut_ptr().cast(),
                iov_len: self.answers[i].len(),
            })
            .collect();
        // SAFETY: as in `recv`, plain C data whose used pointers are all set below.
        let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iov.len()];
        for ((h, iov), &i) in hdrs.iter_mut().zip(iov.iter_mut()).zip(&self.outgoing) {
            h.msg_hdr.msg_name = std::ptr::from_mut(&mut self.peers[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut at = 0;
        while at < hdrs.len() {
            // SAFETY: every header from `at` on points at a live answer buffer and peer
            // address, not touched until the call returns.
            let sent = unsafe {
                libc::sendmmsg(
                    fd,
                    hdrs[at..].as_mut_ptr(),
                    (hdrs.len() - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            // The first answer not sent failed: drop it and go on with the rest.
            at += if sent > 0 { sent as usize } else { 1 };
        }
    }

    fn peer(&self, i: usize) -> SocketAddr {
        let p = &self.peers[i];
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(p.sin_addr.s_addr)),
            u16::from_be(p.sin_port),
        ))
    }
}

/// Serves the namespace's UDP socket until the server is dropped.
pub(super) async fn serve(sock: Arc<AsyncFd<std::net::UdpSocket>>, ctx: Arc<Ctx>) {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    loop {
        let mut ready = match sock.readable().await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("dns {}: {e}", ctx.ns);
                return;
            }
        };
        match ready.try_io(|_| SCRATCH.with_borrow_mut(|b| round(b, &sock, &ctx, &mut seed))) {
            Ok(Ok(n)) if n < BATCH => {
                // The queue is empty: wait for the next wake rather than ask again (any
                // datagram that came in since raised a new edge).
                ready.clear_ready();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::warn!("dns {}: {e}", ctx.ns),
            Err(_would_block) => {}
        }
    }
}

/// One batch: receive, answer, send; how many queries it took.
fn round(
    b: &mut Batch,
    sock: &Arc<AsyncFd<std::net::UdpSocket>>,
    ctx: &Arc<Ctx>,
    seed: &mut u64,
) -> io::Result<usize> {
    let fd = sock.get_ref().as_raw_fd();
    let n = b.recv(fd)?;
    let table = ctx.shared.table();
    b.answer(n, &table, &ctx.ns, seed, |query, peer, seed| {
        // Forwarding goes to a task of its own so a slow upstream never holds up the
        // next query.
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::spawn(async move {
            let a = ctx.resolve(&query, seed, true).await;
            send_one(&sock, &a, peer);
        });
    });
    drop(table);
    b.send(fd);
    Ok(n)
}

impl Batch {
    /// Answers the `n` queries received into the answer buffers and lists those to send;
    /// hands the ones to forward (query, client, shuffle seed) to `forward`.
    fn answer(
        &mut self,
        n: usize,
        table: &Table,
        ns: &str,
        seed: &mut u64,
        mut forward: impl FnMut(Vec<u8>, SocketAddr, u64),
    ) {
        self.outgoing.clear();
        let t0 = std::time::Instant::now();
        for i in 0..n {
            *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let query = &self.queries[i * MAX_QUERY..][..self.lens[i].min(MAX_QUERY)];
            metrics::dns_query(metrics::Transport::Udp);
            match answer_into(table, ns, query, *seed, true, &mut self.answers[i]) {
                Handled::Answered => {
                    metrics::dns_answer(metrics::Source::Local, &self.answers[i], t0.elapsed());
                    if !self.answers[i].is_empty() {
                        self.outgoing.push(i);
                    }
                }
                Handled::Forward => forward(query.to_vec(), self.peer(i), *seed),
            }
        }
    }
}

/// Sends one answer without waiting (a forwarded one): dropped if the buffer is full.
fn send_one(sock: &AsyncFd<std::net::UdpSocket>, a: &[u8], peer: SocketAddr) {
    if !a.is_empty() {
        let _ = sock.get_ref().send_to(a, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::{Message, Query, ResponseCode},
        rr::{rdata::A, Name, RData, RecordType},
    };
    use std::{net::UdpSocket, time::Duration};

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = id;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        q.to_vec().unwrap()
    }

    #[test]
    fn a_batch_answers_each_client_at_its_own_address_and_hands_on_the_rest() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let fd = server.as_raw_fd();
        let to = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                c
            })
            .collect();
        // More queries than one batch takes; every tenth is for a name netd does not know.
        let total = 2 * BATCH as u16 + 5;
        let unknown = |i: u16| i % 10 == 9;
        for i in 0..total {
            let name = if unknown(i) { "example.com." } else { "c1." };
            clients[usize::from(i % 3)]
                .send_to(&query(i, name), to)
                .unwrap();
        }
        let table = crate::dns::answer::tests::pool_table(2);
        let mut b = Batch::new();
        let (mut seed, mut taken, mut rounds) = (1, 0, 0);
        let mut forwarded = Vec::new();
        while taken < usize::from(total) {
            let n = b.recv(fd).expect("queries are queued");
            assert!(n <= BATCH);
            b.answer(n, &table, "ns0", &mut seed, |q, peer, _| {
                forwarded.push((Message::from_vec(&q).unwrap().metadata.id, peer));
            });
            b.send(fd);
            taken += n;
            rounds += 1;
        }
        assert!(rounds >= 3, "{total} queries in {rounds} batches");
        assert_eq!(
            b.recv(fd).map_err(|e| e.kind()).unwrap_err(),
            io::ErrorKind::WouldBlock
        );
        for (k, c) in clients.iter().enumerate() {
            let want: Vec<u16> = (0..total)
                .filter(|i| usize::from(i % 3) == k && !unknown(*i))
                .collect();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            for _ in &want {
                let n = c.recv(&mut buf).expect("an answer for each query");
                let m = Message::from_vec(&buf[..n]).unwrap();
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                assert_eq!(m.answers[0].data, RData::A(A::new(10, 1, 0, 3)));
                got.push(m.metadata.id);
            }
            got.sort();
            assert_eq!(got, want, "client {k}");
        }
        let want: Vec<(u16, SocketAddr)> = (0..total)
            .filter(|i| unknown(*i))
            .map(|i| (i, clients[usize::from(i % 3)].local_addr().unwrap()))
            .collect();
        assert_eq!(forwarded, want);
    }
}
