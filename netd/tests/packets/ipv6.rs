//! Fixtures of `endpoint_egress6`: what a container of an IPv6 network may send as,
//! neighbour discovery and router advertisements, isolation for IPv6.
use std::net::Ipv6Addr;

use netd_common::{prog_names::*, EP_F_ICC, EP_F_MASQUERADE};

use crate::fixture::*;

/// TCX_NEXT (TC_ACT_UNSPEC): the next program on the hook decides.
const TC_NEXT: u32 = u32::MAX;
const V6: &str = "fd00:17::2";
const V6_OTHER: &str = "fd00:17::3";
const V6_GW: &str = "fd00:17::1";
const V6_ELSEWHERE: &str = "fd00:18::2";
const LINK_LOCAL: &str = "fe80::42:acff:fe11:2";

fn a6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// An Ethernet + IPv6 frame from CONTAINER's MAC (unless `smac`), with `payload` after
/// the IPv6 header (`next` its protocol).
fn frame6(smac: [u8; 6], src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&smac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 255]);
    f.extend_from_slice(&a6(src));
    f.extend_from_slice(&a6(dst));
    f.extend_from_slice(payload);
    f
}

/// An ICMPv6 message of type `ty` (checksum left 0: the program does not read it),
/// with `target` as the ND target where the type has one.
fn icmp6(ty: u8, target: Option<&str>) -> Vec<u8> {
    let mut p = vec![ty, 0, 0, 0, 0, 0, 0, 0];
    if let Some(t) = target {
        p.extend_from_slice(&a6(t));
    }
    p
}

fn tcp_payload() -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[12] = 0x50;
    p
}

/// The fixture's two containers with IPv6 addresses: CONTAINER (ve1, V6) and OTHER (ve2,
/// V6_OTHER) on network 1, and an address of network 2's.
fn v6_fixture(name: &str, icc: bool) -> Fixture {
    let mut f = fixture(name, false);
    let flags = EP_F_MASQUERADE | if icc { EP_F_ICC } else { 0 };
    set_endpoints(&mut f, (1, flags), (1, flags));
    let (ve1, ve2) = (ifindex_of(&f.netns.0, "ve1"), ifindex_of(&f.netns.0, "ve2"));
    let n1 = network(1, "172.17.0.0/16", flags);
    let n2 = network(2, "172.18.0.0/16", flags);
    let (c, o, e) = (
        attachment(CONTAINER, CONTAINER_MAC, ve1),
        attachment(OTHER, OTHER_MAC, ve2),
        attachment([172, 18, 0, 2], [2, 0x42, 172, 18, 0, 2], 999),
    );
    f.dp.sync_endpoints6(&[
        (&c, &n1, V6.parse().unwrap()),
        (&o, &n1, V6_OTHER.parse().unwrap()),
        (&e, &n2, V6_ELSEWHERE.parse().unwrap()),
    ])
    .unwrap();
    f
}

fn run(f: &Fixture, frame: &[u8]) -> u32 {
    let ve1 = ifindex_of(&f.netns.0, "ve1");
    f.dp.test_run_on(ENDPOINT_EGRESS6, frame, Some(ve1))
        .unwrap()
        .0
}

#[test]
fn ipv6_sources_must_be_the_containers_own() {
    let mut f = v6_fixture("v6-src", true);
    let tcp = tcp_payload();
    assert_eq!(run(&f, &frame6(CONTAINER_MAC, V6, V6_GW, 6, &tcp)), TC_NEXT);
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, LINK_LOCAL, "fe80::1", 6, &tcp)),
        TC_NEXT
    );
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6_OTHER, V6_GW, 6, &tcp)),
        TC_ACT_SHOT
    );
    assert_eq!(counter(&f.dp, "drop_spoofed_ip"), 1);
    assert_eq!(run(&f, &frame6(OTHER_MAC, V6, V6_GW, 6, &tcp)), TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_spoofed_mac"), 1);
    // :: only for duplicate address detection (a neighbour solicitation).
    let dad = frame6(
        CONTAINER_MAC,
        "::",
        "ff02::1:ff00:2",
        58,
        &icmp6(135, Some(V6)),
    );
    assert_eq!(run(&f, &dad), TC_NEXT);
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, "::", V6_GW, 6, &tcp)),
        TC_ACT_SHOT
    );
    // IPv4 is endpoint_egress's.
    let v4 = crate::frame::Pkt::tcp(CONTAINER, 1, OTHER, 80).build();
    assert_eq!(run(&f, &v4), TC_NEXT);
    // An endpoint without an IPv6 address sends no IPv6.
    let ve2 = ifindex_of(&f.netns.0, "ve2");
    f.dp.sync_endpoints6(&[]).unwrap();
    let (v, _) =
        f.dp.test_run_on(
            ENDPOINT_EGRESS6,
            &frame6(OTHER_MAC, V6_OTHER, V6_GW, 6, &tcp),
            Some(ve2),
        )
        .unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_ipv6_refused"), 1);
}

#[test]
fn containers_send_no_router_advertisement_and_advertise_only_their_own_addresses() {
    let f = v6_fixture("v6-nd", true);
    for ty in [134, 137] {
        let ra = frame6(
            CONTAINER_MAC,
            LINK_LOCAL,
            "ff02::1",
            58,
            &icmp6(ty, Some(V6)),
        );
        assert_eq!(run(&f, &ra), TC_ACT_SHOT, "type {ty}");
    }
    assert_eq!(counter(&f.dp, "drop_router_advert"), 2);
    // Behind a hop-by-hop header too.
    let mut hbh = vec![58, 0, 5, 2, 0, 0, 1, 0];
    hbh.extend_from_slice(&icmp6(134, None));
    let ra = frame6(CONTAINER_MAC, LINK_LOCAL, "ff02::1", 0, &hbh);
    assert_eq!(run(&f, &ra), TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_router_advert"), 3);
    for (target, want) in [
        (V6, TC_NEXT),
        (LINK_LOCAL, TC_NEXT),
        (V6_OTHER, TC_ACT_SHOT),
        (V6_GW, TC_ACT_SHOT),
    ] {
        let na = frame6(CONTAINER_MAC, V6, "ff02::1", 58, &icmp6(136, Some(target)));
        assert_eq!(run(&f, &na), want, "NA for {target}");
    }
    assert_eq!(counter(&f.dp, "drop_spoofed_nd"), 2);
}

#[test]
fn ipv6_isolation_between_networks_and_with_icc_false() {
    let f = v6_fixture("v6-iso", true);
    let tcp = tcp_payload();
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6, V6_OTHER, 6, &tcp)),
        TC_NEXT
    );
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6, V6_ELSEWHERE, 6, &tcp)),
        TC_ACT_SHOT
    );
    assert_eq!(counter(&f.dp, "drop_other_network"), 1);

    let f = v6_fixture("v6-icc", false);
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6, V6_OTHER, 6, &tcp)),
        TC_ACT_SHOT
    );
    let echo = icmp6(128, None);
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6, "ff02::1", 58, &echo)),
        TC_ACT_SHOT
    );
    assert_eq!(
        run(
            &f,
            &frame6(CONTAINER_MAC, LINK_LOCAL, "fe80::99", 58, &echo)
        ),
        TC_ACT_SHOT
    );
    assert_eq!(counter(&f.dp, "drop_icc"), 3);
    // The link's housekeeping passes; so does the gateway.
    let ns = icmp6(135, Some(V6_OTHER));
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, V6, V6_OTHER, 58, &ns)),
        TC_NEXT
    );
    let mut hbh = vec![58, 0, 5, 2, 0, 0, 1, 0];
    hbh.extend_from_slice(&icmp6(143, None));
    assert_eq!(
        run(&f, &frame6(CONTAINER_MAC, LINK_LOCAL, "ff02::16", 0, &hbh)),
        TC_NEXT
    );
    assert_eq!(run(&f, &frame6(CONTAINER_MAC, V6, V6_GW, 6, &tcp)), TC_NEXT);
}
