//! Fixtures of IP fragments, both families: a datagram larger than the path MTU goes
//! through a published port, through masquerade and its answers, and through hairpin,
//! with its ports only in the first fragment. Every fragment is checked on its own
//! (IPv4 header checksum, the payload of later ones untouched), and the fragments are
//! put back together to check the datagram's own checksum over its new addresses.
use netd::model::Proto;
use netd_common::prog_names::*;

use crate::{fixture::*, frame::*, nat6::*};

/// A UDP datagram of 2,048 bytes, which a 1,500-byte MTU cuts in two.
fn big_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
    let mut p = Pkt::udp(src, sport, dst, dport);
    p.extra = 2000;
    p
}

fn uplink(f: &Fixture, frame: &[u8]) -> (u32, Vec<u8>) {
    f.dp.test_run(UPLINK_INGRESS, frame).unwrap()
}

fn egress_ok(f: &Fixture, frame: &[u8]) -> Vec<u8> {
    let (v, out) = egress(f, frame).unwrap();
    assert_eq!(v, TC_ACT_OK, "verdict");
    out
}

#[test]
fn a_published_udp_port_takes_a_datagram_in_fragments_and_answers_in_fragments() {
    let f = fixture("frag-dnat", false);
    let (a, b) = fragments(&big_udp(CLIENT, 40000, HOST, 5353), 1480);
    let (va, a2) = uplink(&f, &a);
    let (vb, b2) = uplink(&f, &b);
    assert_eq!((va, vb), (TC_ACT_OK, TC_ACT_OK));
    let s = inspect(&reassemble(&a2, &b2));
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (CLIENT, 40000, CONTAINER, 53)
    );
    assert_eq!(
        &b2[34..],
        &b[34..],
        "a later fragment's payload is not touched"
    );
    assert_eq!(counter(&f.dp, "fragment_first"), 1);
    assert_eq!(counter(&f.dp, "fragment_followed"), 1);
    // The answer, as big, in fragments from the container: from the published port.
    let (a, b) = fragments(&big_udp(CONTAINER, 53, CLIENT, 40000), 1480);
    let s = inspect(&reassemble(&egress_ok(&f, &a), &egress_ok(&f, &b)));
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (HOST, 5353, CLIENT, 40000)
    );
    assert_eq!(counter(&f.dp, "fragment_followed"), 2);
}

#[test]
fn masquerade_takes_a_containers_datagram_in_fragments_and_its_answer() {
    let f = fixture("frag-snat", false);
    let (a, b) = fragments(&big_udp(CONTAINER, 5000, CLIENT, 7001), 1480);
    let (a2, b2) = (egress_ok(&f, &a), egress_ok(&f, &b));
    let s = inspect(&reassemble(&a2, &b2));
    assert_eq!((s.src, s.dst, s.dport), (HOST, CLIENT, 7001));
    assert_eq!(
        inspect_header(&b2).0,
        HOST,
        "no fragment leaves with the private source"
    );
    let sport = s.sport;
    // A small query answered in fragments (a big DNS answer).
    let (a, b) = fragments(&big_udp(CLIENT, 7001, HOST, sport), 1480);
    let (va, a2) = uplink(&f, &a);
    let (vb, b2) = uplink(&f, &b);
    assert_eq!((va, vb), (TC_ACT_OK, TC_ACT_OK));
    let s = inspect(&reassemble(&a2, &b2));
    assert_eq!((s.src, s.dst, s.dport), (CLIENT, CONTAINER, 5000));
}

#[test]
fn hairpin_takes_a_datagram_in_fragments() {
    let f = fixture("frag-hairpin", false);
    let (a, b) = fragments(&big_udp(OTHER, 6000, HOST, 5353), 1480);
    let s = inspect(&reassemble(&egress_ok(&f, &a), &egress_ok(&f, &b)));
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (OTHER, 6000, CONTAINER, 53)
    );
    let (a, b) = fragments(&big_udp(CONTAINER, 53, OTHER, 6000), 1480);
    let s = inspect(&reassemble(&egress_ok(&f, &a), &egress_ok(&f, &b)));
    assert_eq!((s.src, s.sport, s.dst, s.dport), (HOST, 5353, OTHER, 6000));
}

#[test]
fn a_later_fragment_without_its_first_never_leaves_untranslated() {
    let f = fixture("frag-unknown", false);
    let (_, b) = fragments(&big_udp(CONTAINER, 5000, CLIENT, 7001), 1480);
    // Out of a masquerading network through the uplink: dropped, counted.
    let (v, _) = egress(&f, &b).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_frag_unknown"), 1);
    // To another container of the network: bridged as it is.
    let (_, b) = fragments(&big_udp(CONTAINER, 5000, OTHER, 7001), 1480);
    let (v, out) = egress(&f, &b).unwrap();
    assert_eq!((v, &out[26..]), (TC_ACT_OK, &b[26..]));
    // From outside (the host's own datagram, or one out of order): the stack's.
    let (_, b) = fragments(&big_udp(CLIENT, 7001, HOST, 5000), 1480);
    assert_eq!(uplink(&f, &b), (TC_ACT_OK, b.clone()));
    // Both passed (bridged, and to the stack) are counted as such.
    assert_eq!(counter(&f.dp, "fragment_passed"), 2);
    assert!(conntrack(&f.dp).is_empty());
}

#[test]
fn an_sctp_fragment_whose_port_changes_is_dropped_and_counted() {
    let mut f = fixture("frag-sctp", false);
    publish(&mut f, [0; 4], 8132, 132, Proto::Sctp);
    let mut p = Pkt::sctp(CLIENT, 40000, HOST, 8132);
    p.extra = 2000;
    let (a, _) = fragments(&p, 1480);
    let (v, _) = uplink(&f, &a);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_sctp_fragment"), 1);
    // Masquerade keeps a free port, so the CRC stands and fragments go out.
    let mut p = Pkt::sctp(CONTAINER, 5000, CLIENT, 9);
    p.extra = 2000;
    let (a, b) = fragments(&p, 1480);
    let whole = reassemble(&egress_ok(&f, &a), &egress_ok(&f, &b));
    let s = inspect(&whole);
    assert_eq!((s.src, s.sport), (HOST, 5000));
}

#[test]
fn too_big_with_df_goes_to_the_stack_untranslated_for_path_mtu_discovery() {
    let f = fixture("frag-pmtu", false);
    let mut big = big_udp(CONTAINER, 5002, CLIENT, 7001);
    big.frag = 0x4000; // DF
    let frame = big.build();
    // A new flow: handed over as it came; the stack drops it and answers the
    // container "fragmentation needed" (and never fragments it: DF).
    let (v, out) = egress(&f, &frame).unwrap();
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(&out[14..], &frame[14..], "untranslated");
    assert_eq!(counter(&f.dp, "pmtu_passed"), 1);
    // A known flow: the same.
    egress_ok(&f, &Pkt::udp(CONTAINER, 5002, CLIENT, 7001).build());
    let (v, out) = egress(&f, &frame).unwrap();
    assert_eq!((v, &out[14..]), (TC_ACT_OK, &frame[14..]));
    assert_eq!(counter(&f.dp, "pmtu_passed"), 2);
    // Without DF it is translated, for the stack to fragment.
    let big = big_udp(CONTAINER, 5002, CLIENT, 7001).build();
    assert_eq!(inspect(&egress_ok(&f, &big)).src, HOST);
}

/// (source, destination) of an IPv4 frame, after checking its header checksum.
fn inspect_header(frame: &[u8]) -> ([u8; 4], [u8; 4]) {
    assert_eq!(csum(&frame[14..34], 0), 0, "IP header checksum invalid");
    (
        frame[26..30].try_into().unwrap(),
        frame[30..34].try_into().unwrap(),
    )
}

/// An IPv6 datagram (`next`, `l4` with its checksum made valid) cut into two fragments
/// after `first` bytes (a multiple of 8), each with a fragment header (id 7).
fn fragments6(src: &str, dst: &str, next: u8, l4: &[u8], first: usize) -> (Vec<u8>, Vec<u8>) {
    let whole = frame6(src, dst, next, l4);
    let l4 = &whole[54..];
    let piece = |data: &[u8], offset_m: u16| {
        let mut ext = vec![next, 0];
        ext.extend_from_slice(&offset_m.to_be_bytes());
        ext.extend_from_slice(&7u32.to_be_bytes());
        let mut f = whole[..54].to_vec();
        f[18..20].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        f[20] = 44;
        f.extend_from_slice(&ext);
        f.extend_from_slice(data);
        f
    };
    (piece(&l4[..first], 1), piece(&l4[first..], first as u16))
}

/// (src, dst, sport, dport) of the datagram two IPv6 fragments make, after checking
/// they agree on addresses and verifying its upper-layer checksum.
fn reassemble6(a: &[u8], b: &[u8]) -> (std::net::Ipv6Addr, std::net::Ipv6Addr, u16, u16) {
    assert_eq!(&a[22..54], &b[22..54], "addresses differ");
    let mut l4 = a[62..].to_vec();
    l4.extend_from_slice(&b[62..]);
    let next = a[54];
    assert_eq!(
        verify6(&a[22..38], &a[38..54], next, &l4),
        0,
        "bad checksum"
    );
    let ip = |s: &[u8]| -> std::net::Ipv6Addr { <[u8; 16]>::try_from(s).unwrap().into() };
    (
        ip(&a[22..38]),
        ip(&a[38..54]),
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

fn big_udp6(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = udp(sport, dport);
    u.resize(2000, b'.');
    let len = u.len() as u16;
    u[4..6].copy_from_slice(&len.to_be_bytes());
    u
}

#[test]
fn ipv6_fragments_through_a_published_port_masquerade_and_back() {
    let f = fixture6("frag6", false);
    let (a, b) = fragments6(CLIENT6, HOST6, 17, &big_udp6(40000, 5353), 1400);
    let (va, a2) = uplink6(&f, &a);
    let (vb, b2) = uplink6(&f, &b);
    assert_eq!((va, vb), (0, 0));
    assert_eq!(reassemble6(&a2, &b2), (ip6(CLIENT6), ip6(V6), 40000, 53));
    assert_eq!(
        &b2[62..],
        &b[62..],
        "a later fragment's payload is not touched"
    );
    // The answer in fragments: from the published address.
    let (a, b) = fragments6(V6, CLIENT6, 17, &big_udp6(53, 40000), 1400);
    let ((_, a2), (_, b2)) = (egress6(&f, &a), egress6(&f, &b));
    assert_eq!(
        reassemble6(&a2, &b2),
        (ip6(HOST6), ip6(CLIENT6), 5353, 40000)
    );
    // Masquerade (NAT66) of a datagram in fragments.
    let (a, b) = fragments6(V6, CLIENT6, 17, &big_udp6(5000, 7001), 1400);
    let ((_, a2), (_, b2)) = (egress6(&f, &a), egress6(&f, &b));
    let (src, dst, _, dport) = reassemble6(&a2, &b2);
    assert_eq!((src, dst, dport), (ip6(HOST6), ip6(CLIENT6), 7001));
    assert_eq!(counter(&f.dp, "fragment_first"), 3);
    assert_eq!(counter(&f.dp, "fragment_followed"), 3);
}

#[test]
fn an_ipv6_later_fragment_without_its_first_never_leaves_untranslated() {
    let f = fixture6("frag6-unknown", false);
    let (_, b) = fragments6(V6, CLIENT6, 17, &big_udp6(5000, 7001), 1400);
    let (v, _) = egress6(&f, &b);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_frag_unknown"), 1);
    let (_, b) = fragments6(CLIENT6, HOST6, 17, &big_udp6(7001, 5000), 1400);
    assert_eq!(uplink6(&f, &b), (TC_NEXT, b.clone()));
    assert_eq!(counter(&f.dp, "fragment_passed"), 1);
}

#[test]
fn an_atomic_ipv6_fragment_is_a_whole_packet() {
    let f = fixture6("frag6-atomic", false);
    // A fragment header with offset 0 and no more fragments (RFC 6946).
    let frag = [17u8, 0, 0, 0, 0, 0, 0, 9];
    let fr = frame6_ext(CLIENT6, HOST6, 17, &udp(40000, 5353), Some((44, &frag)));
    let (v, out) = uplink6(&f, &fr);
    assert_eq!(v, 0);
    assert_eq!(&out[38..54], &a6(V6), "destination rewritten");
    assert_eq!(verify6(&out[22..38], &out[38..54], 17, &out[62..]), 0);
    assert_eq!(counter(&f.dp, "fragment_first"), 0);
}
