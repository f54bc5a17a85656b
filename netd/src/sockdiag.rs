//! The sockets of the calling thread's network namespace, from the kernel's sock_diag
//! netlink interface (what `ss` uses). The kernel filters by namespace and state
//! itself: reading /proc/net/tcp instead formats the whole machine's connection table
//! (4 ms with no socket at all on a 24 GB host, more with every socket of every
//! namespace), which made every `run -p` cost more on a fuller host.
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

pub use netlink_packet_sock_diag::inet::StateFlags as States;

/// TCP's LISTEN state, and the state of a bound, unconnected UDP socket (TCP_CLOSE).
pub const TCP_LISTEN: u8 = 10;
pub const UDP_BOUND: u8 = 7;

/// One socket: its local address and port, and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sock {
    pub ip: IpAddr,
    pub port: u16,
    pub state: u8,
}

/// The TCP (`udp` false) or UDP sockets of both families in the given states.
pub fn sockets(udp: bool, states: StateFlags) -> std::io::Result<Vec<Sock>> {
    let mut out = Vec::new();
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    for family in [AF_INET, AF_INET6] {
        dump(&mut socket, family, udp, states.clone(), &mut out)?;
    }
    Ok(out)
}

fn dump(
    socket: &mut Socket,
    family: u8,
    udp: bool,
    states: StateFlags,
    out: &mut Vec<Sock>,
) -> std::io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: if udp { IPPROTO_UDP } else { IPPROTO_TCP },
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        let mut at = 0;
        while at < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[at..n])
                .map_err(|e| std::io::Error::other(format!("sock_diag: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(Sock {
                    ip: r.header.socket_id.source_address,
                    port: r.header.socket_id.source_port,
                    state: r.header.state,
                }),
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(std::io::Error::other(format!("sock_diag: {e}")))
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_of_this_namespace_is_listed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let socks = sockets(false, StateFlags::LISTEN).unwrap();
        assert!(
            socks.iter().any(|s| s.port == port
                && s.state == TCP_LISTEN
                && s.ip == IpAddr::from([127, 0, 0, 1])),
            "{socks:?}"
        );
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let port = u.local_addr().unwrap().port();
        let socks = sockets(true, StateFlags::CLOSE).unwrap();
        assert!(
            socks.iter().any(|s| s.port == port && s.state == UDP_BOUND),
            "{socks:?}"
        );
    }
}
