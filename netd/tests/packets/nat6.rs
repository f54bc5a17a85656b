//! Fixtures of the IPv6 NAT: DNAT66 in `uplink_ingress6`, NAT66 masquerade and its
//! replies, ICMPv6 echo and error translation, extension headers, malformed input, the
//! guard's IPv6 checks. Every output frame's upper-layer checksum is verified against
//! the IPv6 pseudo-header (IPv6 has no header checksum; the pseudo-header covers both
//! addresses, so every address rewrite must fold into it).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netd::model::{PortMapping, Proto};
use netd_common::{prog_names::*, EP_F_ICC, EP_F_MASQUERADE};

use crate::{fixture::*, frame::csum};

pub const TC_NEXT: u32 = u32::MAX;
pub const V6: &str = "fd00:17::2";
pub const V6_GW: &str = "fd00:17::1";
pub const HOST6: &str = "2001:db8::1";
pub const CLIENT6: &str = "2001:db8:99::7";
pub const ROUTER6: &str = "2001:db8::2";

pub fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// The upper-layer checksum of `l4` (checksum field included as it is) over the IPv6
/// pseudo-header: 0 means it verifies.
pub fn verify6(src: &[u8], dst: &[u8], next: u8, l4: &[u8]) -> u16 {
    let mut data = [src, dst].concat();
    data.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, next]);
    data.extend_from_slice(l4);
    csum(&data, 0)
}

/// The checksum field's offset in an upper-layer header of protocol `next`.
pub fn csum_at(next: u8) -> usize {
    match next {
        6 => 16,
        17 => 6,
        _ => 2,
    }
}

/// An Ethernet + IPv6 frame carrying `l4` (protocol `next`) with a valid checksum, and
/// `ext` (already-formed extension headers, the first one's type in `first`) before it.
pub fn frame6_ext(src: &str, dst: &str, next: u8, l4: &[u8], ext: Option<(u8, &[u8])>) -> Vec<u8> {
    let mut l4 = l4.to_vec();
    let c = csum_at(next);
    l4[c] = 0;
    l4[c + 1] = 0;
    let sum = verify6(&a6(src), &a6(dst), next, &l4);
    l4[c..c + 2].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![
        2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0,
    ];
    let (first, ext) = ext.unwrap_or((next, &[]));
    f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[first, 64]);
    f.extend_from_slice(&a6(src));
    f.extend_from_slice(&a6(dst));
    f.extend_from_slice(ext);
    f.extend_from_slice(&l4);
    f
}

pub fn frame6(src: &str, dst: &str, next: u8, l4: &[u8]) -> Vec<u8> {
    frame6_ext(src, dst, next, l4, None)
}

pub fn tcp(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x02; // SYN
    t
}

pub fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = vec![0u8; 12];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&12u16.to_be_bytes());
    u
}

pub fn echo(ty: u8, id: u16) -> Vec<u8> {
    let mut e = vec![ty, 0, 0, 0, 0, 0, 0, 1, b'p', b'i', b'n', b'g'];
    e[4..6].copy_from_slice(&id.to_be_bytes());
    e
}

/// What an IPv6 frame carries after the program: (src, dst, sport, dport), with its
/// upper-layer checksum verified (no extension headers).
pub fn seen(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, u16, u16) {
    let next = frame[20];
    let (src, dst) = (&frame[22..38], &frame[38..54]);
    let l4 = &frame[54..];
    assert_eq!(verify6(src, dst, next, l4), 0, "bad checksum: {frame:02x?}");
    let s: [u8; 16] = src.try_into().unwrap();
    let d: [u8; 16] = dst.try_into().unwrap();
    let (sp, dp) = if next == 58 {
        let id = u16::from_be_bytes([l4[4], l4[5]]);
        (id, id)
    } else {
        (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        )
    };
    (s.into(), d.into(), sp, dp)
}

pub fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The IPv4 fixture plus IPv6: the uplink holds HOST6 with a default route via ROUTER6
/// (a permanent neighbour), IPv6 forwarding on, CONTAINER with V6 on a NAT66 network,
/// ports 8080/tcp and 5353/udp published on [::].
pub fn fixture6(name: &str, fast_path: bool) -> Fixture {
    let mut f = fixture(name, fast_path);
    let ns = f.netns.0.clone();
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    ip(&["-n", &ns, "-6", "route", "add", "default", "via", ROUTER6]);
    ip(&[
        "-n",
        &ns,
        "neigh",
        "add",
        ROUTER6,
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "up0",
        "nud",
        "permanent",
    ]);
    // /proc/sys/net follows the writer's namespace: this thread is in the fixture's.
    std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").expect("forwarding");
    let mut net = network(1, "172.17.0.0/16", EP_F_MASQUERADE | EP_F_ICC);
    net.subnets.push(v6_subnet());
    let ve1 = ifindex_of(&ns, "ve1");
    f.dp.sync_endpoints6(&[(&attachment(CONTAINER, CONTAINER_MAC, ve1), &net, ip6(V6))])
        .unwrap();
    f.dp.sync_subnets(std::slice::from_ref(&net)).unwrap();
    let v4 = [Ipv4Addr::from(HOST), Ipv4Addr::from(GATEWAY)];
    f.dp.sync_local_addrs(&v4, &[ip6(HOST6), ip6(V6_GW)])
        .unwrap();
    f.dp.set_uplink_ip6(Some(ip6(HOST6))).unwrap();
    for (port, cport, proto) in [(8080, 80, Proto::Tcp), (5353, 53, Proto::Udp)] {
        let m = PortMapping {
            host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            host_port: port,
            container_port: cport,
            proto,
        };
        f.dp.publish(&m, ip6(V6)).unwrap();
    }
    f
}

pub fn uplink6(f: &Fixture, frame: &[u8]) -> (u32, Vec<u8>) {
    let up = ifindex_of(&f.netns.0, "up0");
    f.dp.test_run_on(UPLINK_INGRESS6, frame, Some(up)).unwrap()
}

pub fn egress6(f: &Fixture, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut frame = frame.to_vec();
    frame[6..12].copy_from_slice(&CONTAINER_MAC);
    let ve1 = ifindex_of(&f.netns.0, "ve1");
    f.dp.test_run_on(ENDPOINT_EGRESS6, &frame, Some(ve1))
        .unwrap()
}

#[test]
fn dnat66_rewrites_the_destination_keeps_the_client_and_the_reply_goes_back() {
    let f = fixture6("dnat66", false);
    let (v, out) = uplink6(&f, &frame6(CLIENT6, HOST6, 6, &tcp(40000, 8080)));
    assert_eq!(v, 0, "rewritten and handed to the stack (no fast path)");
    assert_eq!(seen(&out), (ip6(CLIENT6), ip6(V6), 40000, 80));
    // The reply, from the container: back to the published address.
    let (v, out) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(80, 40000)));
    assert_eq!(v, 0);
    assert_eq!(seen(&out), (ip6(HOST6), ip6(CLIENT6), 8080, 40000));
    // UDP too, and conntrack lists the flow.
    let (_, out) = uplink6(&f, &frame6(CLIENT6, HOST6, 17, &udp(40001, 5353)));
    assert_eq!(seen(&out), (ip6(CLIENT6), ip6(V6), 40001, 53));
    assert!(counter(&f.dp, "dnat") >= 2 && counter(&f.dp, "dnat_reply") >= 1);
    // A port that is not published, and a destination that is not the host's: untouched.
    let other = frame6(CLIENT6, HOST6, 6, &tcp(40000, 9999));
    assert_eq!(uplink6(&f, &other), (TC_NEXT, other.clone()));
    let elsewhere = frame6(CLIENT6, "2001:db8::77", 6, &tcp(40000, 8080));
    assert_eq!(uplink6(&f, &elsewhere), (TC_NEXT, elsewhere.clone()));
}

#[test]
fn dnat66_fast_path_redirects_into_the_container() {
    let f = fixture6("dnat66-fast", true);
    let (v, out) = uplink6(&f, &frame6(CLIENT6, HOST6, 6, &tcp(40000, 8080)));
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &CONTAINER_MAC);
    assert_eq!(&out[6..12], &GW_MAC);
    assert_eq!(seen(&out).1, ip6(V6));
}

#[test]
fn a_hop_by_hop_header_does_not_hide_a_flow() {
    let f = fixture6("ext66", false);
    // Hop-by-hop: next header TCP, length 0 (8 bytes), a PadN option.
    let hbh = [6u8, 0, 1, 4, 0, 0, 0, 0];
    let (v, out) = uplink6(
        &f,
        &frame6_ext(CLIENT6, HOST6, 6, &tcp(40000, 8080), Some((0, &hbh))),
    );
    assert_eq!(v, 0);
    assert_eq!(
        &out[38..54],
        &a6(V6),
        "destination rewritten past the option"
    );
    let l4 = &out[62..];
    assert_eq!(verify6(&out[22..38], &out[38..54], 6, l4), 0);
    assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), 80);
}

#[test]
fn malformed_ipv6_passes_untouched_and_counted() {
    let f = fixture6("bad66", false);
    let good = frame6(CLIENT6, HOST6, 6, &tcp(40000, 8080));
    // Payload length beyond the frame.
    let mut long = good.clone();
    long[18..20].copy_from_slice(&200u16.to_be_bytes());
    // A jumbogram's payload length (0).
    let mut jumbo = good.clone();
    jumbo[18..20].copy_from_slice(&0u16.to_be_bytes());
    // A TCP header cut short.
    let mut short = good.clone();
    short.truncate(54 + 10);
    short[18..20].copy_from_slice(&10u16.to_be_bytes());
    for bad in [long, jumbo, short] {
        assert_eq!(uplink6(&f, &bad), (TC_NEXT, bad.clone()));
    }
    assert_eq!(counter(&f.dp, "malformed_passed"), 3);
    assert!(f.dp.conntrack().flows().unwrap().is_empty());
}

#[test]
fn nat66_masquerades_to_the_uplink_and_restores_the_reply() {
    let f = fixture6("masq66", false);
    let (v, out) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(45000, 443)));
    assert_eq!(v, 0);
    let (src, dst, sport, dport) = seen(&out);
    assert_eq!((src, dst, dport), (ip6(HOST6), ip6(CLIENT6), 443));
    let (v, back) = uplink6(&f, &frame6(CLIENT6, HOST6, 6, &tcp(443, sport)));
    assert_eq!(v, 0);
    assert_eq!(seen(&back), (ip6(CLIENT6), ip6(V6), 443, 45000));
    // ICMPv6 echo: the id is masqueraded and restored, with the pseudo-header checksum.
    let (_, out) = egress6(&f, &frame6(V6, CLIENT6, 58, &echo(128, 7)));
    let (src, _, id, _) = seen(&out);
    assert_eq!(src, ip6(HOST6));
    assert!(in_snat_range(id, SNAT_RANGE), "echo id {id}");
    let (_, back) = uplink6(&f, &frame6(CLIENT6, HOST6, 58, &echo(129, id)));
    assert_eq!(seen(&back), (ip6(CLIENT6), ip6(V6), 7, 7));
    let flows = f.dp.conntrack().flows().unwrap();
    assert!(flows.iter().any(|fl| fl.kind == "snat"), "{flows:?}");
    assert_eq!(counter(&f.dp, "snat"), 2);
    assert_eq!(counter(&f.dp, "snat_reply"), 2);
}

/// The masquerade range check the IPv4 fixtures use, for ports.
fn in_snat_range(port: u16, range: (u16, u16)) -> bool {
    (range.0..=range.1).contains(&port)
}

#[test]
fn without_an_uplink_ipv6_address_nothing_leaves_with_a_private_source() {
    let mut f = fixture6("noaddr66", false);
    f.dp.set_uplink_ip6(None).unwrap();
    let (v, _) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(45000, 443)));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_nat66_no_address"), 1);
}

#[test]
fn packet_too_big_for_a_masqueraded_flow_reaches_the_container() {
    let f = fixture6("ptb66", false);
    let (_, out) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(45000, 443)));
    let sport = seen(&out).2;
    // A router on the path quotes the packet as it left the host.
    let quoted = &out[14..];
    let mut icmp = vec![2u8, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(quoted);
    let (v, err) = uplink6(&f, &frame6(ROUTER6, HOST6, 58, &icmp));
    assert_eq!(v, TC_NEXT, "translated, then routed by the stack");
    assert_eq!(&err[38..54], &a6(V6), "the error goes to the container");
    let l4 = &err[54..];
    assert_eq!(
        verify6(&err[22..38], &err[38..54], 58, l4),
        0,
        "ICMPv6 checksum"
    );
    let inner = &l4[8..];
    assert_eq!(&inner[8..24], &a6(V6), "quoted source restored");
    assert_eq!(&inner[24..40], &a6(CLIENT6));
    assert_eq!(u16::from_be_bytes([inner[40], inner[41]]), 45000);
    assert_ne!(sport, 0);
    // An error about no tracked flow passes untouched.
    let mut icmp = vec![2u8, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&frame6(HOST6, CLIENT6, 6, &tcp(1234, 443))[14..]);
    let stray = frame6(ROUTER6, HOST6, 58, &icmp);
    assert_eq!(uplink6(&f, &stray), (TC_NEXT, stray.clone()));
}

#[test]
fn hairpin66_to_itself_comes_from_the_gateway() {
    let f = fixture6("hairpin66", false);
    let (v, out) = egress6(&f, &frame6(V6, HOST6, 6, &tcp(46000, 8080)));
    assert_eq!(v, 0);
    let (src, dst, _, dport) = seen(&out);
    assert_eq!((src, dst, dport), (ip6(V6_GW), ip6(V6), 80));
    assert_eq!(counter(&f.dp, "hairpin"), 1);
}

#[test]
fn the_guard_drops_ipv6_to_protected_subnets_spoofed_and_loopback_only() {
    let mut f = fixture6("guard66", false);
    let to_container = frame6(CLIENT6, V6, 6, &tcp(40000, 80));
    let spoofed = frame6(V6, HOST6, 6, &tcp(40000, 8080));
    let loopback = frame6(CLIENT6, "::1", 6, &tcp(40000, 8080));
    for fr in [&to_container, &spoofed, &loopback] {
        let (v, _) = f.dp.test_run_on(UPLINK_GUARD, fr, None).unwrap();
        assert_eq!(v, XDP_DROP);
    }
    assert_eq!(counter(&f.dp, "guard_drop_to_container"), 1);
    assert_eq!(counter(&f.dp, "guard_drop_spoofed"), 1);
    assert_eq!(counter(&f.dp, "guard_drop_loopback"), 1);
    // A port published only on [::1] is not for outside.
    let m = PortMapping {
        host_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        host_port: 9090,
        container_port: 80,
        proto: Proto::Tcp,
    };
    f.dp.publish(&m, ip6(V6)).unwrap();
    let fr = frame6(CLIENT6, HOST6, 6, &tcp(40000, 9090));
    assert_eq!(
        f.dp.test_run_on(UPLINK_GUARD, &fr, None).unwrap().0,
        XDP_DROP
    );
    // Neighbour discovery and the published port pass.
    let ns = frame6("fe80::2", "ff02::1:ff00:1", 58, &[135, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        f.dp.test_run_on(UPLINK_GUARD, &ns, None).unwrap().0,
        XDP_PASS
    );
    let ok = frame6(CLIENT6, HOST6, 6, &tcp(40000, 8080));
    assert_eq!(
        f.dp.test_run_on(UPLINK_GUARD, &ok, None).unwrap().0,
        XDP_PASS
    );
}

#[test]
fn an_internal_networks_ipv6_reaches_only_its_gateway() {
    let mut f = fixture6("internal66", false);
    let mut net = network(1, "172.17.0.0/16", netd_common::EP_F_INTERNAL | EP_F_ICC);
    net.subnets.push(v6_subnet());
    let ve1 = ifindex_of(&f.netns.0, "ve1");
    f.dp.sync_endpoints6(&[(&attachment(CONTAINER, CONTAINER_MAC, ve1), &net, ip6(V6))])
        .unwrap();
    let (v, _) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(45000, 443)));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_internal"), 1);
    let (v, _) = egress6(&f, &frame6(V6, V6_GW, 6, &tcp(45000, 53)));
    assert_eq!(v, TC_NEXT, "the gateway is within reach");
}

#[test]
fn too_big_for_the_uplink_is_left_for_the_stack_to_answer_the_container() {
    let f = fixture6("mtu66", false);
    ip(&["-n", &f.netns.0, "link", "set", "up0", "mtu", "1280"]);
    let mut big = tcp(45000, 443);
    big.resize(1400, 0);
    // A new flow: not masqueraded, so the stack's "packet too big" goes to the
    // container's address, not to the host's.
    let mut fr = frame6(V6, CLIENT6, 6, &big);
    fr[6..12].copy_from_slice(&CONTAINER_MAC);
    let (v, out) = egress6(&f, &fr);
    assert!(
        v == TC_NEXT && out == fr,
        "verdict {v}, rewritten: {}",
        out != fr
    );
    assert!(f.dp.conntrack().flows().unwrap().is_empty());
    // An established flow: the same for its big packets; small ones are NATed.
    let (_, out) = egress6(&f, &frame6(V6, CLIENT6, 6, &tcp(45000, 443)));
    assert_eq!(seen(&out).0, ip6(HOST6));
    let (v, out) = egress6(&f, &fr);
    assert!(
        v == TC_NEXT && out == fr,
        "verdict {v}, rewritten: {}",
        out != fr
    );
}

/// The fixture network's IPv6 subnet, fd00:17::/64 through `V6_GW`.
fn v6_subnet() -> netd::model::Subnet {
    netd::model::Subnet {
        subnet: "fd00:17::/64".parse().unwrap(),
        gateway: ip6(V6_GW).into(),
        ip_range: None,
        user: true,
    }
}
