//! What the socket-address hooks of both families (`sock4`, `sock6`) share.
use aya_ebpf::{helpers::bpf_get_netns_cookie, programs::SockAddrContext};

use crate::maps::config;

/// The verdict that lets the syscall go on.
pub const ALLOW: i32 = 1;

/// Whether the socket is of the host namespace, the only one whose published-port
/// connections the hooks rewrite (they see every namespace's sockets of their cgroup).
#[inline(always)]
pub fn in_host_netns(ctx: &SockAddrContext) -> bool {
    let want = config().netns_cookie;
    // SAFETY: a helper call on the program's own context.
    want != 0 && unsafe { bpf_get_netns_cookie(ctx.sock_addr as *mut _) } == want
}
