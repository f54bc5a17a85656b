//! `sock_connect6` / `sock_sendmsg6` / `sock_recvmsg6`: `sock4.rs` for IPv6. Processes of
//! the host namespace reach published ports on [::1] or a host IPv6 address with no
//! userland proxy: the destination becomes the container at connect()/sendmsg() time.
//! This goes beyond Docker and netavark: the kernel has no route_localnet for IPv6, so
//! they need a proxy for [::1]; a socket-level rewrite needs no route at all.
use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netd_common::{Backend6, PortKey6, SockRevKey6, SockRevValue6, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    maps::{LOCAL_ADDRS6, PORTS6, SOCK_REVNAT6},
    parse6::loopback,
    sockaddr::{in_host_netns, ALLOW},
};

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    to_backend(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    if !in_host_netns(&ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: sa is the kernel's bpf_sock_addr for this call; user_ip6 and user_port are
    // readable and writable in recvmsg6. The 16 address bytes travel as four u32 words
    // in wire order, so a byte-wise reinterpretation is exact.
    unsafe {
        let key = SockRevKey6 {
            cookie: bpf_get_socket_cookie(ctx.sock_addr as *mut _),
            ip: get_ip6(sa),
            port: (*sa).user_port as u16,
            _pad: [0; 6],
        };
        if let Some(orig) = SOCK_REVNAT6.get(&key) {
            set_ip6(sa, &orig.ip);
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
    // SAFETY: as in sock_recvmsg6; user_ip6 and user_port are writable in connect6 and
    // sendmsg6.
    unsafe {
        let proto = (*sa).protocol as u8;
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return;
        }
        let ip = get_ip6(sa);
        let port = (*sa).user_port as u16;
        if !loopback(&ip) && LOCAL_ADDRS6.get(&ip).is_none() {
            return;
        }
        let Some(b) = lookup(proto, &ip, port) else {
            return;
        };
        if proto == IPPROTO_UDP {
            let key = SockRevKey6 {
                cookie: bpf_get_socket_cookie(ctx.sock_addr as *mut _),
                ip: b.ip,
                port: b.port,
                _pad: [0; 6],
            };
            let orig = SockRevValue6 { ip, port, _pad: 0 };
            let _ = SOCK_REVNAT6.insert(&key, &orig, BPF_ANY as u64);
        }
        set_ip6(sa, &b.ip);
        (*sa).user_port = b.port as u32;
    }
}

/// Reads the socket address's IPv6 address, one 32-bit word at a time at its own offset
/// from the context: the verifier refuses an access through a pointer to the middle of
/// the context, which is what copying the array whole compiles to.
///
/// # Safety
/// `sa` is the program's bpf_sock_addr.
#[inline(always)]
unsafe fn get_ip6(sa: *const aya_ebpf::bindings::bpf_sock_addr) -> [u8; 16] {
    let w = [
        core::ptr::read_volatile(&(*sa).user_ip6[0]),
        core::ptr::read_volatile(&(*sa).user_ip6[1]),
        core::ptr::read_volatile(&(*sa).user_ip6[2]),
        core::ptr::read_volatile(&(*sa).user_ip6[3]),
    ];
    core::mem::transmute::<[u32; 4], [u8; 16]>(w)
}

/// Writes the socket address's IPv6 address, word by word as `get_ip6` reads it.
///
/// # Safety
/// `sa` is the program's bpf_sock_addr, in a hook where user_ip6 is writable.
#[inline(always)]
unsafe fn set_ip6(sa: *mut aya_ebpf::bindings::bpf_sock_addr, ip: &[u8; 16]) {
    let w = core::mem::transmute::<[u8; 16], [u32; 4]>(*ip);
    core::ptr::write_volatile(&mut (*sa).user_ip6[0], w[0]);
    core::ptr::write_volatile(&mut (*sa).user_ip6[1], w[1]);
    core::ptr::write_volatile(&mut (*sa).user_ip6[2], w[2]);
    core::ptr::write_volatile(&mut (*sa).user_ip6[3], w[3]);
}

/// Exact host-address entry first, then the wildcard one (which also covers [::1], as
/// a port published on [::] does).
#[inline(always)]
fn lookup(proto: u8, ip: &[u8; 16], port: u16) -> Option<Backend6> {
    let mut key = PortKey6 {
        host_ip: *ip,
        host_port: port,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only lookups of plain-data values.
    if let Some(b) = unsafe { PORTS6.get(&key) } {
        return Some(*b);
    }
    key.host_ip = [0; 16];
    unsafe { PORTS6.get(&key) }.copied()
}
