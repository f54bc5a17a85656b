//! Fixtures of the policy side: the uplink guard (XDP and TC, one parser), isolation,
//! anti-spoofing, and how drops and events are counted.
use std::net::Ipv4Addr;

use netd::{datapath::config_flags, model::Proto};
use netd_common::{prog_names::*, EP_F_ICC, EP_F_INTERNAL, EP_F_MASQUERADE};

use crate::{fixture::*, frame::*};

#[test]
fn container_to_container_and_to_the_host_pass_untouched() {
    let f = fixture("passthrough", false);
    for pkt in [
        Pkt::tcp(CONTAINER, 1, OTHER, 80).build(),
        Pkt::tcp(CONTAINER, 1, GATEWAY, 22).build(),
        Pkt::icmp(CONTAINER, GATEWAY, 5, 8).build(),
    ] {
        let (v, out) = egress(&f, &pkt).unwrap();
        assert_eq!(v, TC_ACT_OK);
        assert_eq!(out[12..], pkt[12..], "bytes changed");
    }
    assert!(conntrack(&f.dp).is_empty());
    let _ = NEXT_HOP;
}

#[test]
fn uplink_guard_verdicts() {
    let mut f = fixture("guard", false);
    publish(&mut f, [127, 0, 0, 1], 8081, 80, Proto::Tcp);
    f.dp.sync_subnets(&[
        network(1, "172.17.0.0/16", EP_F_MASQUERADE),
        // A network without masquerade: routed, its replies come to container addresses.
        network(2, "172.20.0.0/16", 0),
    ])
    .unwrap();
    let cases = [
        (
            "published port",
            Pkt::tcp(CLIENT, 1, HOST, 8080),
            XDP_PASS,
            None,
        ),
        (
            "unpublished port",
            Pkt::tcp(CLIENT, 1, HOST, 22),
            XDP_PASS,
            None,
        ),
        (
            "straight to a container",
            Pkt::tcp(CLIENT, 1, CONTAINER, 80),
            XDP_DROP,
            Some("guard_drop_to_container"),
        ),
        (
            "container source",
            Pkt::tcp(OTHER, 1, HOST, 8080),
            XDP_DROP,
            Some("guard_drop_spoofed"),
        ),
        (
            "loopback source",
            Pkt::udp([127, 0, 0, 1], 1, HOST, 5353),
            XDP_DROP,
            Some("guard_drop_spoofed"),
        ),
        (
            "loopback destination",
            Pkt::tcp(CLIENT, 1, [127, 0, 0, 1], 8081),
            XDP_DROP,
            Some("guard_drop_loopback"),
        ),
        (
            "port published on loopback only",
            Pkt::tcp(CLIENT, 1, HOST, 8081),
            XDP_DROP,
            Some("guard_drop_loopback"),
        ),
        (
            "ICMP to the host",
            Pkt::icmp(CLIENT, HOST, 1, 8),
            XDP_PASS,
            None,
        ),
    ];
    for (what, pkt, want, reason) in cases {
        let before = reason.map(|r| counter(&f.dp, r));
        let (v, out) = f.dp.test_run(UPLINK_GUARD, &pkt.build()).unwrap();
        assert_eq!(v, want, "{what}");
        if v == XDP_PASS {
            assert_eq!(out, pkt.build(), "{what}: bytes changed");
        }
        if let (Some(r), Some(b)) = (reason, before) {
            assert_eq!(counter(&f.dp, r), b + 1, "{what}: {r} not counted");
        }
    }
}

#[test]
fn routed_networks_pass_the_guard() {
    let f = fixture("guard-routed", false);
    f.dp.test_run(UPLINK_GUARD, &Pkt::tcp(CLIENT, 1, HOST, 8080).build())
        .unwrap();
    let mut f = f;
    f.dp.sync_subnets(&[network(2, "172.20.0.0/16", 0)])
        .unwrap();
    let (v, _) =
        f.dp.test_run(
            UPLINK_GUARD,
            &Pkt::tcp(CLIENT, 1, [172, 20, 0, 5], 80).build(),
        )
        .unwrap();
    assert_eq!(v, XDP_PASS);
}

#[test]
fn spoofed_source_ip_mac_and_arp_are_dropped_and_counted() {
    let f = fixture("spoof", false);
    let ve1 = ifindex_of(&f.netns.0, "ve1");
    // From ve1 (CONTAINER's veth) claiming OTHER's address.
    let mut pkt = Pkt::tcp(OTHER, 1, CLIENT, 80).build();
    pkt[6..12].copy_from_slice(&CONTAINER_MAC);
    let (v, _) = f.dp.test_run_on(ENDPOINT_EGRESS, &pkt, Some(ve1)).unwrap();
    assert_eq!((v, counter(&f.dp, "drop_spoofed_ip")), (TC_ACT_SHOT, 1));
    // Its own address with another MAC.
    let mut pkt = Pkt::tcp(CONTAINER, 1, CLIENT, 80).build();
    pkt[6..12].copy_from_slice(&OTHER_MAC);
    let (v, _) = f.dp.test_run_on(ENDPOINT_EGRESS, &pkt, Some(ve1)).unwrap();
    assert_eq!((v, counter(&f.dp, "drop_spoofed_mac")), (TC_ACT_SHOT, 1));
    // ARP claiming OTHER's address, then an honest one.
    let arp = |spa: [u8; 4]| {
        let mut a = vec![0xff; 6];
        a.extend_from_slice(&CONTAINER_MAC);
        a.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        a.extend_from_slice(&CONTAINER_MAC);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&GATEWAY);
        a
    };
    let (v, _) =
        f.dp.test_run_on(ENDPOINT_EGRESS, &arp(OTHER), Some(ve1))
            .unwrap();
    assert_eq!((v, counter(&f.dp, "drop_spoofed_arp")), (TC_ACT_SHOT, 1));
    let (v, _) =
        f.dp.test_run_on(ENDPOINT_EGRESS, &arp(CONTAINER), Some(ve1))
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    // Legitimate traffic keeps flowing.
    let (v, _) = egress(&f, &Pkt::tcp(CONTAINER, 1, OTHER, 80).build()).unwrap();
    assert_eq!(v, TC_ACT_OK);
}

#[test]
fn isolation_verdicts() {
    let mut f = fixture("isolation", false);
    let flags = EP_F_MASQUERADE | EP_F_ICC;
    let to_other = || Pkt::tcp(CONTAINER, 1, OTHER, 80).build();
    // Same network, icc on: passes.
    assert_eq!(egress(&f, &to_other()).unwrap().0, TC_ACT_OK);
    // Different networks: dropped, whatever the protocol.
    set_endpoints(&mut f, (1, flags), (2, flags));
    assert_eq!(egress(&f, &to_other()).unwrap().0, TC_ACT_SHOT);
    let mut raw = Pkt::udp(CONTAINER, 1, OTHER, 80).build();
    raw[14 + 9] = 47; // GRE: not parsed, still isolated
    assert_eq!(egress(&f, &raw).unwrap().0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_other_network"), 2);
    // Same network, icc=false: dropped; the gateway and the outside still reachable.
    set_endpoints(&mut f, (1, EP_F_MASQUERADE), (1, EP_F_MASQUERADE));
    assert_eq!(egress(&f, &to_other()).unwrap().0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_icc"), 1);
    assert_eq!(
        egress(&f, &Pkt::icmp(CONTAINER, GATEWAY, 1, 8).build())
            .unwrap()
            .0,
        TC_ACT_OK
    );
    let (v, out) = egress(&f, &Pkt::tcp(CONTAINER, 2, CLIENT, 80).build()).unwrap();
    assert_eq!((v, inspect(&out).src), (TC_ACT_OK, HOST));
    // Internal: its own containers and the gateway, nothing else, no masquerade.
    set_endpoints(
        &mut f,
        (1, EP_F_ICC | EP_F_INTERNAL),
        (1, EP_F_ICC | EP_F_INTERNAL),
    );
    assert_eq!(egress(&f, &to_other()).unwrap().0, TC_ACT_OK);
    assert_eq!(
        egress(&f, &Pkt::icmp(CONTAINER, GATEWAY, 1, 8).build())
            .unwrap()
            .0,
        TC_ACT_OK
    );
    assert_eq!(
        egress(&f, &Pkt::tcp(CONTAINER, 3, CLIENT, 80).build())
            .unwrap()
            .0,
        TC_ACT_SHOT
    );
    assert_eq!(
        egress(&f, &Pkt::tcp(CONTAINER, 3, HOST, 22).build())
            .unwrap()
            .0,
        TC_ACT_SHOT
    );
    assert_eq!(counter(&f.dp, "drop_internal"), 2);
    // And nothing gets in: its published port leads nowhere.
    let (v, _) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 4, HOST, 8080).build())
            .unwrap();
    assert_eq!((v, counter(&f.dp, "drop_internal")), (TC_ACT_SHOT, 3));
}

/// On virtual uplinks the guard's checks run in uplink_ingress (TC): same verdicts,
/// same counters.
#[test]
fn the_guard_in_tc_drops_what_the_xdp_guard_drops() {
    let mut f = fixture("guard-tc", false);
    configure(&mut f.dp, 1, config_flags::GUARD_IN_TC, SNAT_RANGE);
    f.dp.sync_subnets(&[network(1, "172.17.0.0/16", EP_F_MASQUERADE)])
        .unwrap();
    publish(&mut f, [127, 0, 0, 1], 8081, 80, Proto::Tcp);
    for (pkt, reason) in [
        (
            Pkt::tcp(CLIENT, 1, CONTAINER, 80),
            "guard_drop_to_container",
        ),
        (Pkt::tcp(OTHER, 1, HOST, 8080), "guard_drop_spoofed"),
        (Pkt::tcp(CLIENT, 1, HOST, 8081), "guard_drop_loopback"),
    ] {
        let (v, _) = f.dp.test_run(UPLINK_INGRESS, &pkt.build()).unwrap();
        assert_eq!((v, counter(&f.dp, reason)), (TC_ACT_SHOT, 1), "{reason}");
    }
    let (v, out) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 2, HOST, 8080).build())
            .unwrap();
    assert_eq!(
        (v, inspect(&out).dst),
        (TC_ACT_OK, CONTAINER),
        "published traffic still DNATed"
    );
}

/// Drop reasons and events are two tables whose indexes overlap, in two arrays: a drop
/// moves its reason and nothing else, a rewrite its events and no drop reason.
#[test]
fn drops_and_events_are_counted_apart() {
    let mut f = fixture("counters", false);
    // icc off: container to container is a drop.
    set_endpoints(&mut f, (1, EP_F_MASQUERADE), (1, EP_F_MASQUERADE));
    let before = f.dp.stats();
    let (v, _) = egress(&f, &Pkt::tcp(CONTAINER, 1, OTHER, 80).build()).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(moved(&before, &f.dp.stats()), vec![("drop_icc", 1)]);
    let before = f.dp.stats();
    let (v, _) =
        f.dp.test_run(UPLINK_INGRESS, &Pkt::tcp(CLIENT, 1, HOST, 8080).build())
            .unwrap();
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(
        moved(&before, &f.dp.stats()),
        vec![("dnat", 1), ("ct_new", 1)]
    );
}

/// XDP and TC read the guard's headers with the same parser: the same verdicts on IP
/// options (the port further in), fragments (only the first has ports) and a total
/// length the stack accepts on aggregates (0, BIG TCP), which must not hide a packet's
/// addresses from the guard.
#[test]
fn xdp_and_tc_guard_parse_alike() {
    let mut f = fixture("guard-parse", false);
    f.dp.sync_subnets(&[network(1, "172.17.0.0/16", EP_F_MASQUERADE)])
        .unwrap();
    publish(&mut f, [127, 0, 0, 1], 8081, 80, Proto::Tcp);
    let loopback_only = |options: Vec<u8>, frag: u16| {
        let mut p = Pkt::tcp(CLIENT, 1, HOST, 8081);
        p.options = options;
        p.frag = frag;
        p.build()
    };
    let mut zero_len = Pkt::tcp(CLIENT, 1, CONTAINER, 80).build();
    zero_len[16..18].copy_from_slice(&[0, 0]);
    let cases = [
        (
            "IP options",
            loopback_only(vec![1, 1, 1, 0, 1, 1, 1, 0], 0),
            Some("guard_drop_loopback"),
        ),
        (
            "first fragment",
            loopback_only(vec![], 0x2000),
            Some("guard_drop_loopback"),
        ),
        // No ports in it: nothing to judge beyond the addresses.
        ("later fragment", loopback_only(vec![], 185), None),
        ("total length 0", zero_len, Some("guard_drop_to_container")),
    ];
    for (xdp, prog) in [(true, UPLINK_GUARD), (false, UPLINK_INGRESS)] {
        let flags = if xdp { 0 } else { config_flags::GUARD_IN_TC };
        configure(&mut f.dp, 1, flags, SNAT_RANGE);
        for (what, pkt, reason) in &cases {
            let before = reason.map(|r| counter(&f.dp, r));
            let (v, _) = f.dp.test_run(prog, pkt).unwrap();
            let dropped = if xdp { v == XDP_DROP } else { v == TC_ACT_SHOT };
            assert_eq!(dropped, reason.is_some(), "{prog}: {what}");
            if let (Some(r), Some(b)) = (reason, before) {
                assert_eq!(counter(&f.dp, r), b + 1, "{prog}: {what}: {r}");
            }
        }
    }
}

#[test]
fn a_link_opens_icc_false_for_the_pair_on_the_exposed_port_only() {
    let mut f = fixture("link", false);
    set_endpoints(&mut f, (1, EP_F_MASQUERADE), (1, EP_F_MASQUERADE));
    // CONTAINER --link OTHER, which exposes 5432/tcp.
    f.dp.sync_links(&[netd::datapath::LinkRule {
        from: CONTAINER.into(),
        to: OTHER.into(),
        port: 5432,
        proto: Proto::Tcp,
    }])
    .unwrap();
    let verdict = |f: &Fixture, pkt: Vec<u8>| egress(f, &pkt).unwrap().0;
    // The linked pair, to the exposed port: passes; so does the reply from it.
    assert_eq!(
        verdict(&f, Pkt::tcp(CONTAINER, 40000, OTHER, 5432).build()),
        TC_ACT_OK
    );
    // The reply leaves OTHER's veth (egress picks the endpoint by source address).
    assert_eq!(
        verdict(&f, Pkt::tcp(OTHER, 5432, CONTAINER, 40000).build()),
        TC_ACT_OK
    );
    // Another port, another protocol, or the target opening a connection: icc=false.
    let before = counter(&f.dp, "drop_icc");
    assert_eq!(
        verdict(&f, Pkt::tcp(CONTAINER, 40000, OTHER, 22).build()),
        TC_ACT_SHOT
    );
    assert_eq!(
        verdict(&f, Pkt::udp(CONTAINER, 40000, OTHER, 5432).build()),
        TC_ACT_SHOT
    );
    // The target may not open connections to the linking container.
    assert_eq!(
        verdict(&f, Pkt::tcp(OTHER, 40001, CONTAINER, 5432).build()),
        TC_ACT_SHOT
    );
    assert_eq!(counter(&f.dp, "drop_icc"), before + 3);
    // The link removed: closed again.
    f.dp.sync_links(&[]).unwrap();
    assert_eq!(
        verdict(&f, Pkt::tcp(CONTAINER, 40000, OTHER, 5432).build()),
        TC_ACT_SHOT
    );
}

#[test]
fn gateway_modes_at_the_guard_and_source_restrictions_at_published_ports() {
    let mut f = fixture("guard-modes", false);
    let mode = |id, subnet, m: &str| {
        let mut n = network(id, subnet, EP_F_MASQUERADE);
        n.options.insert(
            "com.docker.network.bridge.gateway_mode_ipv4".into(),
            m.into(),
        );
        n
    };
    let (routed, open) = (
        mode(2, "172.20.0.0/16", "routed"),
        mode(3, "172.21.0.0/16", "nat-unprotected"),
    );
    let nat = network(1, "172.17.0.0/16", EP_F_MASQUERADE);
    f.dp.sync_subnets(&[nat.clone(), routed.clone(), open])
        .unwrap();
    let r = [172, 20, 0, 5];
    f.dp.set_endpoint(&attachment(r, [2, 0, 0, 0, 0, 5], 999), &routed)
        .unwrap();
    let m = netd::model::PortMapping {
        host_ip: Ipv4Addr::UNSPECIFIED.into(),
        host_port: 8085,
        container_port: 80,
        proto: Proto::Tcp,
    };
    f.dp.publish(&m, Ipv4Addr::from(r)).unwrap();
    let guard = |f: &Fixture, pkt: Pkt| f.dp.test_run(UPLINK_GUARD, &pkt.build()).unwrap().0;
    assert_eq!(
        guard(&f, Pkt::tcp(CLIENT, 1, r, 80)),
        XDP_PASS,
        "published port"
    );
    let before = counter(&f.dp, "guard_drop_unpublished");
    assert_eq!(
        guard(&f, Pkt::tcp(CLIENT, 1, r, 81)),
        XDP_DROP,
        "unpublished"
    );
    assert_eq!(
        guard(&f, Pkt::udp(CLIENT, 1, r, 80)),
        XDP_DROP,
        "other protocol"
    );
    assert_eq!(counter(&f.dp, "guard_drop_unpublished"), before + 2);
    assert_eq!(guard(&f, Pkt::icmp(CLIENT, r, 1, 8)), XDP_PASS, "ICMP");
    assert_eq!(
        guard(&f, Pkt::tcp(CLIENT, 1, [172, 21, 0, 9], 22)),
        XDP_PASS,
        "unprotected"
    );
    assert_eq!(
        guard(&f, Pkt::tcp(CLIENT, 1, CONTAINER, 80)),
        XDP_DROP,
        "nat"
    );
    f.dp.unpublish(&m);
    assert_eq!(
        guard(&f, Pkt::tcp(CLIENT, 1, r, 80)),
        XDP_DROP,
        "closed again"
    );

    // Who may reach published ports: the daemon's list, CLIENT in it, FAR_CLIENT not.
    f.dp.set_default_sources(vec!["192.0.2.0/28".parse().unwrap()]);
    f.dp.sync_sources(&[nat]).unwrap();
    let ingress = |f: &Fixture, src| {
        let pkt = Pkt::tcp(src, 40000, HOST, 8080).build();
        f.dp.test_run(UPLINK_INGRESS, &pkt).unwrap().0
    };
    assert_ne!(ingress(&f, CLIENT), TC_ACT_SHOT, "an allowed source");
    let before = counter(&f.dp, "drop_source_denied");
    assert_eq!(ingress(&f, FAR_CLIENT), TC_ACT_SHOT, "a source left out");
    assert_eq!(counter(&f.dp, "drop_source_denied"), before + 1);
    f.dp.set_default_sources(Vec::new());
    f.dp.sync_sources(&[network(1, "172.17.0.0/16", EP_F_MASQUERADE)])
        .unwrap();
    assert_ne!(
        ingress(&f, FAR_CLIENT),
        TC_ACT_SHOT,
        "no restriction: anyone"
    );
}
