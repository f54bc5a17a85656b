//! Fixtures of the overlay programs: `overlay_egress` answers ARP for containers on
//! other nodes and tunnels to them, and leaves everything else to `endpoint_egress`;
//! `overlay_ingress` refuses what did not come out of a tunnel. (Decapsulation itself
//! needs a real VXLAN device: the overlay e2e tests cover it.)
use std::net::Ipv4Addr;

use netd::model::RemoteEndpoint;
use netd_common::{prog_names::*, EP_F_ICC, EP_F_MASQUERADE};

use crate::{fixture::*, frame::*};

/// TCX_NEXT (TC_ACT_UNSPEC): the next program on the hook decides.
const TC_NEXT: u32 = u32::MAX;
/// A container of the fixture's network on another node, and one of another network.
const REMOTE: [u8; 4] = [172, 17, 0, 9];
const REMOTE_ELSEWHERE: [u8; 4] = [172, 17, 0, 10];
const VTEP: [u8; 4] = [10, 198, 0, 11];
const VXLAN_IFINDEX: u32 = 4242;

fn overlay_net(net_id: u32, flags: u32) -> netd::model::Network {
    netd::model::Network {
        driver: "overlay".into(),
        vni: 4096 + net_id,
        ..network(net_id, "172.17.0.0/16", flags)
    }
}

fn remote(ip: [u8; 4], net: &netd::model::Network) -> RemoteEndpoint {
    RemoteEndpoint {
        node: "node-b".into(),
        vtep: Ipv4Addr::from(VTEP),
        network: net.id.clone(),
        vni: net.vni,
        ip: Ipv4Addr::from(ip),
        container: "r".into(),
        names: vec!["r".into()],
    }
}

/// The fixture's two containers on overlay network 1 (icc as given), REMOTE on the
/// same network on another node, REMOTE_ELSEWHERE on overlay network 2.
fn overlay_fixture(name: &str, icc: bool) -> Fixture {
    let mut f = fixture(name, false);
    let flags = EP_F_MASQUERADE | if icc { EP_F_ICC } else { 0 };
    let (n1, n2) = (overlay_net(1, flags), overlay_net(2, flags));
    set_endpoints(&mut f, (1, flags), (1, flags));
    f.dp.sync_overlay_peers(
        &[remote(REMOTE, &n1), remote(REMOTE_ELSEWHERE, &n2)],
        &[n1, n2],
        Some(VXLAN_IFINDEX),
    )
    .unwrap();
    f
}

fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0xff; 6];
    a.extend_from_slice(&CONTAINER_MAC);
    a.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    a.extend_from_slice(&CONTAINER_MAC);
    a.extend_from_slice(&CONTAINER);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&tpa);
    a
}

fn from_ve1(f: &Fixture, frame: &[u8]) -> (u32, Vec<u8>) {
    let ve1 = ifindex_of(&f.netns.0, "ve1");
    f.dp.test_run_on(OVERLAY_EGRESS, frame, Some(ve1)).unwrap()
}

#[test]
fn overlay_egress_answers_arp_for_remote_containers_of_its_network_only() {
    let f = overlay_fixture("ov-arp", true);
    let (v, out) = from_ve1(&f, &arp_request(REMOTE));
    assert_eq!(v, TC_ACT_REDIRECT, "sent back to the asking container");
    assert_eq!(&out[0..6], &CONTAINER_MAC, "to the asker");
    assert_eq!(&out[6..12], &GW_MAC, "from the gateway");
    assert_eq!(&out[20..22], &[0, 2], "a reply");
    assert_eq!(&out[22..28], &GW_MAC, "REMOTE is at the gateway's MAC");
    assert_eq!(&out[28..32], &REMOTE);
    assert_eq!(&out[32..38], &CONTAINER_MAC);
    assert_eq!(&out[38..42], &CONTAINER);
    assert_eq!(counter(&f.dp, "overlay_arp_reply"), 1);

    // A local neighbour or the gateway: the bridge's business.
    for tpa in [OTHER, GATEWAY, CLIENT] {
        let (v, out) = from_ve1(&f, &arp_request(tpa));
        assert_eq!(v, TC_NEXT, "{tpa:?}");
        assert_eq!(out[..42], arp_request(tpa)[..], "untouched");
    }
    // Another network's remote container: isolation.
    let (v, _) = from_ve1(&f, &arp_request(REMOTE_ELSEWHERE));
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_other_network"), 1);
    // A reply is not answered.
    let mut reply = arp_request(REMOTE);
    reply[21] = 2;
    assert_eq!(from_ve1(&f, &reply).0, TC_NEXT);
}

#[test]
fn overlay_egress_tunnels_to_remote_containers_and_leaves_the_rest() {
    let f = overlay_fixture("ov-tx", true);
    let mut pkt = Pkt::tcp(CONTAINER, 40000, REMOTE, 80).build();
    pkt[6..12].copy_from_slice(&CONTAINER_MAC);
    let (v, out) = from_ve1(&f, &pkt);
    assert_eq!(v, TC_ACT_REDIRECT, "to the VXLAN device");
    assert_eq!(out[12..], pkt[12..], "the inner packet is not rewritten");
    assert_eq!(counter(&f.dp, "overlay_tx"), 1);

    // Local, outside and host traffic: endpoint_egress's.
    for dst in [OTHER, CLIENT, GATEWAY, HOST] {
        let mut p = Pkt::tcp(CONTAINER, 40000, dst, 80).build();
        p[6..12].copy_from_slice(&CONTAINER_MAC);
        assert_eq!(from_ve1(&f, &p).0, TC_NEXT, "{dst:?}");
    }
    // Another network's container, a borrowed address, a borrowed MAC: dropped.
    let mut p = Pkt::tcp(CONTAINER, 40000, REMOTE_ELSEWHERE, 80).build();
    p[6..12].copy_from_slice(&CONTAINER_MAC);
    assert_eq!(from_ve1(&f, &p).0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_other_network"), 1);
    let mut p = Pkt::tcp(OTHER, 40000, REMOTE, 80).build();
    p[6..12].copy_from_slice(&CONTAINER_MAC);
    assert_eq!(from_ve1(&f, &p).0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_spoofed_ip"), 1);
    let mut p = Pkt::tcp(CONTAINER, 40000, REMOTE, 80).build();
    p[6..12].copy_from_slice(&OTHER_MAC);
    assert_eq!(from_ve1(&f, &p).0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_spoofed_mac"), 1);
    assert_eq!(counter(&f.dp, "overlay_tx"), 1);
}

#[test]
fn overlay_egress_keeps_icc_false_across_nodes() {
    let f = overlay_fixture("ov-icc", false);
    let mut pkt = Pkt::tcp(CONTAINER, 40000, REMOTE, 80).build();
    pkt[6..12].copy_from_slice(&CONTAINER_MAC);
    assert_eq!(from_ve1(&f, &pkt).0, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_icc"), 1);
    assert_eq!(counter(&f.dp, "overlay_tx"), 0);
}

#[test]
fn overlay_ingress_drops_what_no_tunnel_brought() {
    let f = overlay_fixture("ov-rx", true);
    let pkt = Pkt::tcp(REMOTE, 40000, CONTAINER, 80).build();
    let (v, _) = f.dp.test_run(OVERLAY_INGRESS, &pkt).unwrap();
    assert_eq!(v, TC_ACT_SHOT);
    assert_eq!(counter(&f.dp, "drop_overlay_unknown_peer"), 1);
    assert_eq!(counter(&f.dp, "overlay_rx"), 0);
}
