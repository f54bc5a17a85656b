//! Packet fixtures for the datapath through BPF_PROG_TEST_RUN: each runs a program over a
//! crafted frame with chosen map contents and checks the verdict, the output bytes (with
//! full IP and L4 checksum verification), the conntrack entries and the counters.
//! Nothing is attached to any interface. Each fixture's thread enters a namespace of its
//! own (with an uplink veth, a default route and a static neighbour), so the FIB lookups
//! the programs make see a known table and never the machine's. Needs root.
//!
//! This file holds the NAT fixtures; `packets/policy.rs` the guard, isolation and
//! counters; `packets/overlay.rs` the overlay programs; `packets/ipv6.rs` the IPv6
//! policy; `packets/nat6.rs` the IPv6 NAT; `packets/frag.rs` fragments of both
//! families; `packets/protocols.rs` every other IP protocol and what cannot be
//! translated; `packets/fixture.rs` and `packets/frame.rs` what they share.
// A test crate's root resolves modules beside itself: these live in packets/.
#[path = "packets/fixture.rs"]
mod fixture;
#[path = "packets/frag.rs"]
mod frag;
#[path = "packets/frame.rs"]
mod frame;
#[path = "packets/ipv6.rs"]
mod ipv6;
#[path = "packets/nat6.rs"]
mod nat6;
#[path = "packets/overlay.rs"]
mod overlay;
#[path = "packets/policy.rs"]
mod policy;
#[path = "packets/protocols.rs"]
mod protocols;

use netd::model::Proto;
use netd_common::{ct_kind, prog_names::*};

use crate::{fixture::*, frame::*};

#[test]
fn dnat_tcp_rewrites_destination_with_valid_checksums_and_tracks_both_directions() {
    let f = fixture("dnat-tcp", false);
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 40000, HOST, 8080).build())
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (CLIENT, 40000, CONTAINER, 80)
    );
    let ct = conntrack(&f.dp);
    assert_eq!(ct.len(), 2, "{ct:?}");
    let fwd = ct
        .iter()
        .find(|(_, e)| e.kind == ct_kind::DNAT)
        .expect("forward entry");
    assert_eq!(u16::from_be(fwd.1.dport), 80);
    assert_ne!(fwd.1.ifindex, 0, "delivered into the container");
    let rev = ct
        .iter()
        .find(|(_, e)| e.kind == ct_kind::DNAT_REPLY)
        .expect("reply entry");
    assert_eq!(rev.0.saddr, u32::from_ne_bytes(CONTAINER));
    assert_eq!(u16::from_be(rev.0.dport), 40000);
    assert_eq!(rev.1.saddr, u32::from_ne_bytes(HOST));
    assert_eq!(rev.1.ifindex, 0, "the reply is routed out");
    assert_eq!(counter(&f.dp, "ct_new"), 1);

    // The reply, leaving the container, gets the published address back.
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 80, CLIENT, 40000).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (HOST, 8080, CLIENT, 40000)
    );
    assert_eq!(counter(&f.dp, "dnat_reply"), 1);

    // A second packet of the flow uses the entry (no new flow).
    f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 40000, HOST, 8080).build())
        .unwrap();
    assert_eq!(counter(&f.dp, "ct_new"), 1);
    assert_eq!(counter(&f.dp, "dnat"), 2);
}

#[test]
fn dnat_udp_keeps_a_zero_checksum_zero() {
    let f = fixture("dnat-udp", false);
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::udp(CLIENT, 5000, HOST, 5353).build())
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!((s.dst, s.dport), (CONTAINER, 53));
    assert_ne!(s.l4_csum, 0);
    let mut p = Pkt::udp(CLIENT, 5001, HOST, 5353);
    p.udp_zero_csum = true;
    let (_, out) = f.dp.test_run(UPLINK_INGRESS, &p.build()).unwrap();
    let s = inspect(&out);
    assert_eq!((s.dst, s.dport, s.l4_csum), (CONTAINER, 53, 0));
}

#[test]
fn exact_host_ip_entry_wins_over_the_wildcard_and_foreign_destinations_pass() {
    let mut f = fixture("exact", false);
    // 10.0.0.1:8080 exactly -> container port 81 (the wildcard goes to 80).
    publish(&mut f, HOST, 8080, 81, Proto::Tcp);
    let (_, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 1, HOST, 8080).build())
            .unwrap();
    assert_eq!(inspect(&out).dport, 81);
    // Not a host address: forwarded traffic is not ours, bytes unchanged.
    let pkt = Pkt::tcp(CLIENT, 1, [10, 0, 0, 99], 8080).build();
    let (v, out) = f.dp.test_run(UPLINK_INGRESS, &pkt).unwrap();
    assert_eq!((v, out), (TC_ACT_OK, pkt));
    // An unpublished port on a host address: unchanged.
    let pkt = Pkt::tcp(CLIENT, 1, HOST, 9999).build();
    let (v, out) = f.dp.test_run(UPLINK_INGRESS, &pkt).unwrap();
    assert_eq!((v, out), (TC_ACT_OK, pkt));
}

#[test]
fn ip_options_shift_the_l4_header_and_are_handled() {
    let f = fixture("options", false);
    let mut p = Pkt::tcp(CLIENT, 2, HOST, 8080);
    p.options = vec![1, 1, 1, 0]; // NOP NOP NOP EOL
    let (v, out) = f.dp.test_run(UPLINK_INGRESS, &p.build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!((s.dst, s.dport), (CONTAINER, 80));
}

#[test]
fn malformed_packets_from_outside_pass_untouched_and_are_counted() {
    let f = fixture("malformed", false);
    let good = Pkt::tcp(CLIENT, 3, HOST, 8080).build();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // (A frame shorter than an IP header is refused by BPF_PROG_TEST_RUN itself.)
    let mut bare = good[..14 + 20].to_vec();
    bare[16..18].copy_from_slice(&20u16.to_be_bytes());
    cases.push(("IP header with no TCP header", bare, "malformed_passed"));
    let mut ihl4 = good.clone();
    ihl4[14] = 0x44;
    cases.push(("IHL below 5", ihl4, "malformed_passed"));
    let mut long = good.clone();
    long[16..18].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("total length beyond the frame", long, "malformed_passed"));
    let truncated_tcp = {
        let mut t = good[..14 + 20 + 8].to_vec();
        t[16..18].copy_from_slice(&28u16.to_be_bytes());
        t
    };
    cases.push(("TCP header cut short", truncated_tcp, "malformed_passed"));
    for (what, pkt, reason) in cases {
        let before = counter(&f.dp, reason);
        let (v, out) =
            f.dp.test_run(UPLINK_INGRESS, &pkt)
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(v, TC_ACT_OK, "{what}");
        assert_eq!(out, pkt, "{what}: bytes changed");
        assert_eq!(
            counter(&f.dp, reason),
            before + 1,
            "{what}: {reason} not counted"
        );
    }
    assert!(
        conntrack(&f.dp).is_empty(),
        "malformed input created conntrack state"
    );
    // ARP is not ours.
    let mut arp = vec![0xaa; 6];
    arp.extend_from_slice(&[0xbb; 6]);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    let (v, out) = f.dp.test_run(UPLINK_INGRESS, &arp).unwrap();
    assert_eq!((v, out), (TC_ACT_OK, arp));
}

#[test]
fn fast_path_redirects_into_the_container_with_its_macs() {
    let f = fixture("fast", true);
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 4, HOST, 8080).build())
            .unwrap();
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(&out[0..6], &CONTAINER_MAC, "destination MAC");
    assert_eq!(&out[6..12], &GW_MAC, "source MAC");
    assert_eq!(inspect(&out).dst, CONTAINER);
    assert_eq!(counter(&f.dp, "redirect"), 1);
}

#[test]
fn masquerade_rewrites_the_source_to_the_uplink_and_the_reply_back() {
    let f = fixture("snat", false);
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 5000, CLIENT, 80).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, s.dport), (HOST, CLIENT, 80));
    // As the kernel's MASQUERADE does: the original port, when nothing uses the tuple.
    assert_eq!(s.sport, 5000);
    assert_eq!(counter(&f.dp, "snat"), 1);
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 80, HOST, s.sport).build())
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    let r = inspect(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (CLIENT, 80, CONTAINER, 5000)
    );
    // Same remote, same source port, from another container: a different SNAT port.
    let (_, out) = egress(&f, &Pkt::tcp(OTHER, 5000, CLIENT, 80).build()).unwrap();
    let s2 = inspect(&out);
    assert_eq!(s2.src, HOST);
    assert_ne!(s2.sport, s.sport, "two flows share a masquerade tuple");
    assert!(
        in_snat_range(s2.sport, SNAT_RANGE),
        "fallback port {} outside the range",
        s2.sport
    );
    // A privileged source port is never kept: it comes from the range.
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 99, CLIENT, 80).build()).unwrap();
    assert!(in_snat_range(inspect(&out).sport, SNAT_RANGE));
}

#[test]
fn masquerade_port_exhaustion_is_a_counted_drop_not_a_wrong_mapping() {
    let f = fixture_with("exhaust", false, (61000, 61001));
    // Privileged source ports always come from the range (two ports here).
    for sport in [100, 101] {
        let (v, _) = egress(&f, &Pkt::udp(CONTAINER, sport, CLIENT, 53).build()).unwrap();
        assert_eq!(v, TC_ACT_OK);
    }
    let (v, _) = egress(&f, &Pkt::udp(CONTAINER, 102, CLIENT, 53).build()).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_snat_exhausted"), 1);
    // Every port it tried was taken: the pressure on the range shows.
    assert!(counter(&f.dp, "ct_port_taken") >= netd_common::SNAT_TRIES as u64);
    assert_eq!(
        conntrack(&f.dp).len(),
        4,
        "only the two mapped flows are tracked"
    );
    // Another remote port has its own tuples: still fine.
    let (v, _) = egress(&f, &Pkt::udp(CONTAINER, 5002, CLIENT, 54).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
}

#[test]
fn icmp_echo_id_is_masqueraded_and_restored() {
    let f = fixture("icmp", false);
    let (v, out) = egress(&f, &Pkt::icmp(CONTAINER, CLIENT, 77, 8).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!((s.src, s.dst), (HOST, CLIENT));
    assert!(in_snat_range(s.sport, SNAT_RANGE), "echo id {}", s.sport);
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::icmp(CLIENT, HOST, s.sport, 0).build())
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    let r = inspect(&out);
    assert_eq!((r.src, r.dst, r.sport), (CLIENT, CONTAINER, 77));
}

#[test]
fn hairpin_from_another_container_keeps_its_source() {
    let f = fixture("hairpin", false);
    let (v, out) = egress(&f, &Pkt::tcp(OTHER, 6000, HOST, 8080).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let s = inspect(&out);
    assert_eq!(
        (s.src, s.sport, s.dst, s.dport),
        (OTHER, 6000, CONTAINER, 80)
    );
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 80, OTHER, 6000).build()).unwrap();
    let r = inspect(&out);
    assert_eq!((r.src, r.sport, r.dst, r.dport), (HOST, 8080, OTHER, 6000));
    assert_eq!(counter(&f.dp, "hairpin"), 1);
}

#[test]
fn hairpin_to_itself_comes_from_the_gateway() {
    let f = fixture("hairpin-self", false);
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 6001, HOST, 8080).build()).unwrap();
    let s = inspect(&out);
    assert_eq!((s.src, s.dst, s.dport), (GATEWAY, CONTAINER, 80));
    assert_eq!(s.sport, 6001, "the original port, free here");
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 80, GATEWAY, s.sport).build()).unwrap();
    let r = inspect(&out);
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (HOST, 8080, CONTAINER, 6001)
    );
}

#[test]
fn fast_path_masquerade_redirects_to_the_uplink_with_the_neighbours_mac() {
    let f = fixture("fast-snat", true);
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 5000, CLIENT, 80).build()).unwrap();
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(
        &out[0..6],
        &NEXT_HOP_MAC,
        "destination MAC from the neighbour table"
    );
    assert_eq!(inspect(&out).src, HOST);
}

/// Issue 16: the first packet to a next hop without a neighbour entry must leave
/// masqueraded like every other (it once went out with the container's source).
#[test]
fn masquerade_decides_by_the_route_not_by_the_neighbour_entry() {
    let f = fixture("snat-no-neigh", false);
    for pkt in [
        Pkt::tcp(CONTAINER, 5000, FAR_CLIENT, 80),
        Pkt::udp(CONTAINER, 5001, FAR_CLIENT, 53),
        Pkt::icmp(CONTAINER, FAR_CLIENT, 77, 8),
    ] {
        let (v, out) = egress(&f, &pkt.build()).unwrap();
        assert_eq!(v, TC_ACT_OK);
        let s = inspect(&out);
        assert_eq!((s.src, s.dst), (HOST, FAR_CLIENT), "proto {}", pkt.proto);
    }
    assert_eq!(counter(&f.dp, "snat"), 3);
    // The replies find their way back.
    let (_, out) =
        f.dp.test_run(
            UPLINK_INGRESS,
            &Pkt::tcp(FAR_CLIENT, 80, HOST, 5000).build(),
        )
        .unwrap();
    assert_eq!(inspect(&out).dst, CONTAINER);
    assert_unresolved(&f);
}

/// With the fast path, packets to an unresolved next hop go out through
/// bpf_redirect_neigh (the kernel resolves it), masqueraded, and so do replies of
/// published ports; a packet too big for the uplink goes to the stack instead.
#[test]
fn fast_path_hands_an_unresolved_next_hop_to_redirect_neigh() {
    let f = fixture("fast-no-neigh", true);
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 5000, FAR_CLIENT, 80).build()).unwrap();
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(inspect(&out).src, HOST);
    assert_eq!(counter(&f.dp, "redirect_neigh"), 1);
    // A published port's reply to a client behind that next hop.
    let (v, _) =
        f.dp.test_run(
            UPLINK_INGRESS,
            &Pkt::tcp(FAR_CLIENT, 40000, HOST, 8080).build(),
        )
        .unwrap();
    assert_eq!(v, TC_ACT_REDIRECT, "into the container");
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 80, FAR_CLIENT, 40000).build()).unwrap();
    assert_eq!(v, TC_ACT_REDIRECT);
    let s = inspect(&out);
    assert_eq!((s.src, s.sport, s.dst), (HOST, 8080, FAR_CLIENT));
    assert_eq!(counter(&f.dp, "redirect_neigh"), 2);
    // Beyond the uplink's MTU (1500), not GSO: still masqueraded, sent by the stack.
    let mut big = Pkt::udp(CONTAINER, 5002, FAR_CLIENT, 53);
    big.extra = 1600;
    let failed = counter(&f.dp, "redirect_failed");
    let (v, out) = egress(&f, &big.build()).unwrap();
    assert_eq!((v, inspect(&out).src), (TC_ACT_OK, HOST));
    assert_eq!(counter(&f.dp, "redirect_failed"), failed + 1);
    assert_eq!(counter(&f.dp, "redirect_neigh"), 2);
    assert_unresolved(&f);
}

#[test]
fn fragmentation_needed_for_a_masqueraded_flow_reaches_the_container() {
    let f = fixture("icmp-frag", false);
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 5000, CLIENT, 80).build()).unwrap();
    let sport = inspect(&out).sport;
    // A router on the way says the (masqueraded) packet was too big.
    let router = [10, 0, 0, 254];
    let err = icmp_error(router, HOST, 3, 4, &out);
    let (v, got) = f.dp.test_run(UPLINK_INGRESS, &err).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let (os, od, qs, qsp, qd, qdp) = inspect_error(&got);
    assert_eq!((os, od), (router, CONTAINER), "outer");
    assert_eq!(
        (qs, qsp, qd, qdp),
        (CONTAINER, 5000, CLIENT, 80),
        "quoted (was {sport})"
    );
    assert_eq!(
        &got[14 + 20 + 6..14 + 20 + 8],
        &[0x05, 0x78],
        "the MTU survives"
    );
}

#[test]
fn port_unreachable_from_a_published_container_speaks_with_the_published_address() {
    let f = fixture("icmp-unreach", false);
    let (_, dnated) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::udp(CLIENT, 40000, HOST, 5353).build())
            .unwrap();
    // Nothing listens in the container: it answers port unreachable.
    let err = icmp_error(CONTAINER, CLIENT, 3, 3, &dnated);
    let (v, got) = egress(&f, &err).unwrap();
    assert_eq!(v, TC_ACT_OK);
    let (os, od, qs, qsp, qd, qdp) = inspect_error(&got);
    assert_eq!((os, od), (HOST, CLIENT), "outer");
    assert_eq!((qs, qsp, qd, qdp), (CLIENT, 40000, HOST, 5353), "quoted");
}

#[test]
fn icmp_errors_about_untracked_flows_pass_untouched() {
    let f = fixture("icmp-untracked", false);
    let quoted = Pkt::udp(HOST, 1234, CLIENT, 53).build();
    let err = icmp_error(CLIENT, HOST, 3, 3, &quoted);
    let (v, got) = f.dp.test_run(UPLINK_INGRESS, &err).unwrap();
    assert_eq!((v, got), (TC_ACT_OK, err));
}

/// Keeping the container's source port must never steal a host socket's traffic: a
/// host socket that would receive the reply makes the port taken.
#[test]
fn masquerade_does_not_keep_a_port_a_host_socket_uses() {
    let f = fixture("snat-host-socket", false);
    // This thread is inside the fixture's namespace: these are "host" sockets there.
    let _udp = std::net::UdpSocket::bind("10.0.0.1:5003").unwrap();
    let _tcp = std::net::TcpListener::bind("0.0.0.0:5004").unwrap();
    let (_, out) = egress(&f, &Pkt::udp(CONTAINER, 5003, CLIENT, 53).build()).unwrap();
    let s = inspect(&out);
    assert!(
        in_snat_range(s.sport, SNAT_RANGE),
        "kept port {} a host UDP socket holds",
        s.sport
    );
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 5004, CLIENT, 80).build()).unwrap();
    let s = inspect(&out);
    assert!(
        in_snat_range(s.sport, SNAT_RANGE),
        "kept port {} a host listener holds",
        s.sport
    );
    // A free port is kept.
    let (_, out) = egress(&f, &Pkt::tcp(CONTAINER, 5005, CLIENT, 80).build()).unwrap();
    assert_eq!(inspect(&out).sport, 5005);
}
