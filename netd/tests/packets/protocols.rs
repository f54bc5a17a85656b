//! Fixtures of every IP protocol through the NAT, and of what it cannot translate: GRE
//! and ESP masqueraded by address (as the kernel's MASQUERADE), SCTP by its ports with
//! its CRC32c kept right, ICMP queries by id; anything else from a masquerading network
//! that would leave through the uplink is dropped with its reason, never sent out with
//! a container's address.
use std::net::{IpAddr, Ipv6Addr};

use netd::model::{PortMapping, Proto};
use netd_common::{prog_names::*, EP_F_ICC};

use crate::{fixture::*, frame::*, nat6::*};

const GRE: u8 = 47;
const ESP: u8 = 50;

fn uplink(f: &Fixture, frame: &[u8]) -> (u32, Vec<u8>) {
    f.dp.test_run(UPLINK_INGRESS, frame).unwrap()
}

#[test]
fn gre_and_esp_are_masqueraded_by_address_and_their_replies_come_back() {
    let f = fixture("proto-gre", false);
    for proto in [GRE, ESP] {
        let out_frame = Pkt::other(CONTAINER, CLIENT, proto).build();
        let (v, out) = egress(&f, &out_frame).unwrap();
        assert_eq!(v, TC_ACT_OK, "proto {proto}");
        let s = inspect(&out);
        assert_eq!((s.src, s.dst), (HOST, CLIENT), "proto {proto}");
        assert_eq!(
            &out[34..],
            &out_frame[34..],
            "proto {proto}: payload touched"
        );
        let (v, back) = uplink(&f, &Pkt::other(CLIENT, HOST, proto).build());
        assert_eq!(v, TC_ACT_OK);
        assert_eq!(inspect(&back).dst, CONTAINER, "proto {proto}: reply");
    }
    assert_eq!(counter(&f.dp, "snat"), 2);
    assert_eq!(counter(&f.dp, "snat_reply"), 2);
    let gre: Vec<_> = conntrack(&f.dp)
        .into_iter()
        .filter(|(k, _)| k.proto == GRE)
        .collect();
    assert_eq!(gre.len(), 2, "one flow, two entries");
    assert!(gre.iter().all(|(k, _)| k.sport == 0 && k.dport == 0));
}

#[test]
fn a_second_containers_gre_to_the_same_peer_is_a_counted_clash() {
    let f = fixture("proto-clash", false);
    let (v, _) = egress(&f, &Pkt::other(CONTAINER, CLIENT, GRE).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    // Its replies could not be told from the first one's: the kernel's NAT drops it.
    let (v, _) = egress(&f, &Pkt::other(OTHER, CLIENT, GRE).build()).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_snat_clash"), 1);
    // To another peer it is a flow of its own.
    let (v, out) = egress(&f, &Pkt::other(OTHER, FAR_CLIENT, GRE).build()).unwrap();
    assert_eq!((v, inspect(&out).src), (TC_ACT_OK, HOST));
}

#[test]
fn sctp_is_masqueraded_with_its_port_and_published_with_its_crc_rewritten() {
    let mut f = fixture("proto-sctp", false);
    publish(&mut f, [0; 4], 8132, 132, Proto::Sctp);
    // Masquerade keeps a free port: the CRC is the container's own.
    let (_, out) = egress(&f, &Pkt::sctp(CONTAINER, 5000, CLIENT, 9).build()).unwrap();
    let s = inspect(&out);
    assert_eq!((s.src, s.sport), (HOST, 5000));
    // A second container with that port: another one, and a CRC that follows it.
    let (_, out) = egress(&f, &Pkt::sctp(OTHER, 5000, CLIENT, 9).build()).unwrap();
    let s = inspect(&out);
    assert!(in_snat_range(s.sport, SNAT_RANGE), "port {}", s.sport);
    // Its reply comes back to it, port and CRC restored.
    let (_, back) = uplink(&f, &Pkt::sctp(CLIENT, 9, HOST, s.sport).build());
    let r = inspect(&back);
    assert_eq!((r.dst, r.dport), (OTHER, 5000));
    // A published port: 8132 becomes 132, and the CRC verifies (inspect checks it).
    let (v, out) = uplink(&f, &Pkt::sctp(CLIENT, 40000, HOST, 8132).build());
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!((s.dst, s.dport), (CONTAINER, 132));
    let (_, out) = egress(&f, &Pkt::sctp(CONTAINER, 132, CLIENT, 40000).build()).unwrap();
    let s = inspect(&out);
    assert_eq!((s.src, s.sport), (HOST, 8132));
    // A CRC the stack has yet to compute (zero: offloaded) stays zero.
    let mut p = Pkt::sctp(CLIENT, 40001, HOST, 8132).build();
    p[14 + 20 + 8..14 + 20 + 12].fill(0);
    let (_, out) = uplink(&f, &p);
    assert_eq!(&out[14 + 20 + 8..14 + 20 + 12], &[0; 4]);
    assert_eq!(&out[14 + 20 + 2..14 + 20 + 4], &132u16.to_be_bytes());
}

#[test]
fn icmp_queries_other_than_echo_are_masqueraded_by_id() {
    let f = fixture("proto-icmp-ts", false);
    // Timestamp request (13) and its reply (14).
    let (v, out) = egress(&f, &Pkt::icmp(CONTAINER, CLIENT, 77, 13).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!(s.src, HOST);
    assert!(in_snat_range(s.sport, SNAT_RANGE), "id {}", s.sport);
    let (_, back) = uplink(&f, &Pkt::icmp(CLIENT, HOST, s.sport, 14).build());
    let r = inspect(&back);
    assert_eq!((r.dst, r.sport), (CONTAINER, 77));
}

/// The cases of what cannot be translated, from CONTAINER to `dst`: (what, frame,
/// drop reason when it would leave through the uplink).
fn untranslatable(dst: [u8; 4]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut cases = Vec::new();
    // A router solicitation: ICMP, but neither a query by id nor an error.
    let rs = Pkt::icmp(CONTAINER, dst, 0, 10).build();
    cases.push(("router solicitation", rs, "drop_untranslatable"));
    // An error about a flow netd does not track.
    let quoted = Pkt::udp(dst, 53, CONTAINER, 4444).build();
    let err = icmp_error(CONTAINER, dst, 3, 3, &quoted);
    cases.push(("untracked ICMP error", err, "drop_untranslatable"));
    // A TCP header cut short.
    let good = Pkt::tcp(CONTAINER, 3, dst, 80).build();
    let mut short = good[..14 + 20 + 8].to_vec();
    short[16..18].copy_from_slice(&28u16.to_be_bytes());
    let c = {
        short[24..26].copy_from_slice(&[0, 0]);
        csum(&short[14..34], 0)
    };
    short[24..26].copy_from_slice(&c.to_be_bytes());
    cases.push(("TCP header cut short", short, "drop_malformed"));
    // A total length beyond the frame.
    let mut long = good.clone();
    long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("total length beyond the frame", long, "drop_malformed"));
    cases
}

#[test]
fn what_cannot_be_translated_never_leaves_a_masquerading_network() {
    let mut f = fixture("proto-leak", false);
    for (what, frame, reason) in untranslatable(CLIENT) {
        let before = counter(&f.dp, reason);
        let (v, _) = egress(&f, &frame).unwrap();
        assert_eq!(v, TC_ACT_SHOT, "{what}");
        assert_eq!(counter(&f.dp, reason), before + 1, "{what}: {reason}");
    }
    // To another container of the network, and from a routed network: the same
    // packets go on as they are (bridged, or routed with an address the outside knows).
    for (what, frame, _) in untranslatable(OTHER) {
        let (v, out) = egress(&f, &frame).unwrap();
        assert_eq!((v, &out[12..]), (TC_ACT_OK, &frame[12..]), "{what} bridged");
    }
    set_endpoints(&mut f, (1, EP_F_ICC), (1, EP_F_ICC));
    for (what, frame, _) in untranslatable(CLIENT) {
        let (v, out) = egress(&f, &frame).unwrap();
        assert_eq!((v, &out[12..]), (TC_ACT_OK, &frame[12..]), "{what} routed");
    }
    assert!(conntrack(&f.dp).is_empty());
}

/// An IPv6 frame from CONTAINER's MAC to `dst`: UDP, a valid checksum.
fn v6_from_ipv4_only(dst: &str) -> Vec<u8> {
    frame6("fe80::42:acff:fe11:2", dst, 17, &udp(5000, 53))
}

#[test]
fn ipv6_from_an_endpoint_without_ipv6_stays_on_the_link() {
    let f = fixture("proto-v6-refused", false);
    let (v, _) = egress(&f, &v6_from_ipv4_only("2001:db8:99::7")).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_ipv6_refused"), 1);
    for dst in ["fe80::1", "ff02::1"] {
        let frame = v6_from_ipv4_only(dst);
        let (v, out) = egress(&f, &frame).unwrap();
        assert_eq!((v, &out[12..]), (TC_ACT_OK, &frame[12..]), "{dst}");
    }
}

#[test]
fn a_vlan_tag_inside_another_is_dropped() {
    let f = fixture("proto-vlan", false);
    // As TC sees it once the kernel took the outer tag off: another tag, then IPv4.
    let ip = Pkt::udp(CONTAINER, 5000, CLIENT, 53).build();
    let mut frame = ip[..12].to_vec();
    frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x00]);
    frame.extend_from_slice(&ip[12..]);
    let (v, _) = egress(&f, &frame).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_stacked_vlan"), 1);
}

/// An IPv6 frame of a protocol without checksum netd knows, `payload` after the
/// header.
fn frame6_raw(src: &str, dst: &str, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0,
    ];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&a6(src));
    f.extend_from_slice(&a6(dst));
    f.extend_from_slice(payload);
    f
}

#[test]
fn nat66_masquerades_gre_and_drops_what_it_cannot_translate() {
    let f = fixture6("proto6", false);
    let gre = frame6_raw(V6, CLIENT6, GRE, &[0, 0, 0x86, 0xdd, 1, 2, 3, 4]);
    let (v, out) = egress6(&f, &gre);
    assert_eq!(v, TC_ACT_OK, "translated, for the stack to route");
    assert_eq!(&out[22..38], &a6(HOST6));
    assert_eq!(&out[54..], &gre[54..]);
    let (_, back) = uplink6(&f, &frame6_raw(CLIENT6, HOST6, GRE, &[0, 0, 0x86, 0xdd]));
    assert_eq!(&back[38..54], &a6(V6));
    // A router solicitation to a global address, and a TCP header cut short.
    let rs = frame6(V6, CLIENT6, 58, &[133, 0, 0, 0, 0, 0, 0, 0]);
    let (v, _) = egress6(&f, &rs);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_untranslatable"), 1);
    let mut short = frame6(V6, CLIENT6, 6, &tcp(5000, 80));
    short.truncate(54 + 10);
    short[18..20].copy_from_slice(&10u16.to_be_bytes());
    let (v, _) = egress6(&f, &short);
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_malformed"), 1);
}

#[test]
fn sctp_over_ipv6_is_published_with_its_crc_rewritten() {
    let mut f = fixture6("proto6-sctp", false);
    let m = PortMapping {
        host_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        host_port: 8132,
        container_port: 132,
        proto: Proto::Sctp,
    };
    f.dp.publish(&m, ip6(V6)).unwrap();
    let p = frame6_raw(CLIENT6, HOST6, 132, &sctp_packet(40000, 8132, b"init"));
    let (v, out) = uplink6(&f, &p);
    assert_eq!(v, 0);
    assert_eq!(&out[38..54], &a6(V6));
    let l4 = &out[54..];
    assert_eq!(u16::from_be_bytes([l4[2], l4[3]]), 132);
    assert!(sctp_crc_ok(l4), "CRC32c after the port changed");
    let r = frame6_raw(V6, CLIENT6, 132, &sctp_packet(132, 40000, b"init-ack"));
    let (_, out) = egress6(&f, &r);
    let l4 = &out[54..];
    assert_eq!(u16::from_be_bytes([l4[0], l4[1]]), 8132);
    assert!(sctp_crc_ok(l4));
}
