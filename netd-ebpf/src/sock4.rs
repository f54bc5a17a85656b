//! `sock_connect4` / `sock_sendmsg4` / `sock_recvmsg4`: cgroup socket-address hooks that
//! let processes of the host namespace reach published ports on 127.0.0.1 or a host
//! address without a userland proxy and without per-packet NAT: the destination is
//! rewritten to the container once, at connect() or sendmsg() time. They act only on
//! sockets of the host namespace (checked by netns cookie), whatever cgroup they are
//! attached to.
use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netd_common::{Backend, PortKey, SockRevKey, SockRevValue, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    maps::{LOCAL_ADDRS, PORTS, SOCK_REVNAT},
    sockaddr::{in_host_netns, ALLOW},
};

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    if !in_host_netns(&ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: sa is the kernel's bpf_sock_addr for this call; these fields are readable
    // and (user_ip4, user_port) writable in recvmsg4.
    unsafe {
        let key = SockRevKey {
            cookie: bpf_get_socket_cookie(ctx.sock_addr as *mut _),
            ip: (*sa).user_ip4,
            port: (*sa).user_port as u16,
            _pad: 0,
        };
        if let Some(orig) = SOCK_REVNAT.get(&key) {
            (*sa).user_ip4 = orig.ip;
            (*sa).user_port = orig.port as u32;
        }
    }
    ALLOW
}

#[inline(always)]
fn to_backend(ctx: &SockAddrContext) {
    if !in_host_netns(ctx) {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: sa is the kernel's bpf_sock_addr for this call; user_ip4 and user_port are
    // readable and writable in connect4 and sendmsg4.
    unsafe {
        let proto = (*sa).protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return;
        }
        let ip = (*sa).user_ip4;
        // The port is in network byte order in the low 16 bits.
        let port = (*sa).user_port as u16;
        // 127.0.0.0/8 (first byte of the network-order address) or a host address.
        let loopback = ip.to_ne_bytes()[0] == 127;
        if !loopback && LOCAL_ADDRS.get(&ip).is_none() {
            return;
        }
        let Some(b) = lookup(proto, ip, port) else {
            return;
        };
        if proto == IPPROTO_UDP {
            let key = SockRevKey {
                cookie: bpf_get_socket_cookie(ctx.sock_addr as *mut _),
                ip: b.ip,
                port: b.port,
                _pad: 0,
            };
            let orig = SockRevValue { ip, port, _pad: 0 };
            let _ = SOCK_REVNAT.insert(&key, &orig, BPF_ANY as u64);
        }
        (*sa).user_ip4 = b.ip;
        (*sa).user_port = b.port as u32;
    }
}

/// Exact host-IP entry first, then the wildcard one (which also covers 127.0.0.1, as
/// Docker's 0.0.0.0 publishing does).
#[inline(always)]
fn lookup(proto: u8, ip: u32, port: u16) -> Option<Backend> {
    let mut key = PortKey {
        host_ip: ip,
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS.get(&key) } {
        return Some(*b);
    }
    key.host_ip = 0;
    unsafe { PORTS.get(&key) }.copied()
}
