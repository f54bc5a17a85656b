//! Packet fixtures for the datapath through BPF_PROG_TEST_RUN: each runs a program over a
//! crafted frame with chosen map contents and checks the verdict, the output bytes (with
//! full IP and L4 checksum verification), the conntrack entries and the counters.
//! Nothing is attached to any interface. Each fixture's thread enters a namespace of its
//! own (with an uplink veth, a default route and a static neighbour), so the FIB lookups
//! the programs make see a known table and never the machine's. Needs root.
use std::{net::Ipv4Addr, process::Command};

use netd::{
    datapath::Datapath,
    model::{PortMapping, Proto},
};
use netd_common::{
    ct_kind, prog_names::*, Backend, Endpoint, EP_F_ICC, EP_F_INTERNAL, EP_F_MASQUERADE,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

const HOST: [u8; 4] = [10, 0, 0, 1];
const NEXT_HOP: [u8; 4] = [10, 0, 0, 2];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT: [u8; 4] = [192, 0, 2, 7];
/// A client routed through UNRESOLVED_HOP, a next hop without a neighbour entry.
const FAR_CLIENT: [u8; 4] = [198, 51, 100, 7];
const UNRESOLVED_HOP: &str = "10.0.0.3";
const CONTAINER: [u8; 4] = [172, 17, 0, 2];
const CONTAINER_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 2];
const OTHER: [u8; 4] = [172, 17, 0, 3];
const OTHER_MAC: [u8; 6] = [0x02, 0x42, 172, 17, 0, 3];
const GATEWAY: [u8; 4] = [172, 17, 0, 1];
const GW_MAC: [u8; 6] = [0x0a, 0, 0, 0, 0, 1];
const SNAT_RANGE: (u16, u16) = (61000, 61003);

/// A pinned-map instance in its own bpffs dir and network namespace, removed on drop.
struct Fixture {
    dp: Datapath,
    dir: std::path::PathBuf,
    _netns: NsGuard,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Deletes the fixture's namespace and bpffs dir even when setup panics half-way.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {args:?}");
}

/// Creates namespace `name` with uplink `up0` = 10.0.0.1/24, a default route via
/// 10.0.0.2 (a permanent neighbour), forwarding on; moves this thread into it.
fn ifindex_of(ns: &str, dev: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", dev])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("ifindex")
}

fn enter_fixture_netns(name: &str) -> u32 {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
    ip(&["netns", "add", name]);
    ip(&[
        "-n", name, "link", "add", "up0", "type", "veth", "peer", "name", "cl0",
    ]);
    ip(&["-n", name, "addr", "add", "10.0.0.1/24", "dev", "up0"]);
    ip(&["-n", name, "link", "set", "up0", "up"]);
    ip(&["-n", name, "link", "set", "cl0", "up"]);
    ip(&["-n", name, "link", "set", "lo", "up"]);
    ip(&["-n", name, "route", "add", "default", "via", "10.0.0.2"]);
    // A remote network behind a next hop that has never answered ARP: the FIB finds the
    // route but no neighbour entry (nothing here ever resolves it, so it stays so).
    ip(&[
        "-n",
        name,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        UNRESOLVED_HOP,
    ]);
    ip(&[
        "-n",
        name,
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "up0",
        "nud",
        "permanent",
    ]);
    // Stand-ins for the containers' host-side veths (frames "arrive" on them).
    for dev in ["ve1", "ve2"] {
        ip(&[
            "-n",
            name,
            "link",
            "add",
            dev,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{dev}p"),
        ]);
        ip(&["-n", name, "link", "set", dev, "up"]);
    }
    let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    // /proc/sys/net follows the writer's namespace: this thread's now.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("ip_forward");
    let out = Command::new("ip")
        .args(["-n", name, "-o", "link", "show", "up0"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("up0 ifindex")
}

fn fixture(name: &str, fast_path: bool) -> Fixture {
    fixture_with(name, fast_path, SNAT_RANGE)
}

fn fixture_with(name: &str, fast_path: bool, snat: (u16, u16)) -> Fixture {
    let netns = NsGuard(format!("ndt-{}-pkt-{name}", std::process::id()));
    let uplink = enter_fixture_netns(&netns.0);
    let dir =
        std::path::PathBuf::from(format!("/sys/fs/bpf/ndt-{}-pkt-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut dp = Datapath::load(&dir).expect("loading the datapath (root? bpffs?)");
    dp.set_config(uplink, Ipv4Addr::from(HOST), fast_path, snat)
        .unwrap();
    dp.sync_local_addrs(&[Ipv4Addr::from(HOST), Ipv4Addr::from(GATEWAY)])
        .unwrap();
    let ep = |ifindex, mac| Endpoint {
        ifindex,
        net_id: 1,
        gw_ip: u32::from_ne_bytes(GATEWAY),
        flags: EP_F_MASQUERADE | EP_F_ICC,
        mac,
        gw_mac: GW_MAC,
    };
    let (ve1, ve2) = (ifindex_of(&netns.0, "ve1"), ifindex_of(&netns.0, "ve2"));
    dp.sync_endpoints(&[
        (Ipv4Addr::from(CONTAINER), ep(ve1, CONTAINER_MAC)),
        (Ipv4Addr::from(OTHER), ep(ve2, OTHER_MAC)),
    ])
    .unwrap();
    let mut f = Fixture {
        dp,
        dir,
        _netns: netns,
    };
    publish(&mut f, [0; 4], 8080, 80, Proto::Tcp);
    publish(&mut f, [0; 4], 5353, 53, Proto::Udp);
    f
}

/// Runs endpoint_egress on `frame` as a container sends it: from its own veth, with its
/// own MAC (chosen by the frame's source address among the fixture's endpoints).
fn egress(f: &Fixture, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut frame = frame.to_vec();
    let src: [u8; 4] = frame[26..30].try_into().unwrap();
    let (dev, mac) = if src == OTHER {
        ("ve2", OTHER_MAC)
    } else {
        ("ve1", CONTAINER_MAC)
    };
    frame[6..12].copy_from_slice(&mac);
    f.dp.test_run_on(ENDPOINT_EGRESS, &frame, Some(ifindex_of(&f._netns.0, dev)))
}

fn publish(f: &mut Fixture, host_ip: [u8; 4], host_port: u16, cport: u16, proto: Proto) {
    let m = PortMapping {
        host_ip: Ipv4Addr::from(host_ip),
        host_port,
        container_port: cport,
        proto,
    };
    let b = Backend {
        ip: u32::from(Ipv4Addr::from(CONTAINER)).to_be(),
        port: cport.to_be(),
        _pad: 0,
    };
    f.dp.set_port(&m, b).unwrap();
}

fn csum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

struct Pkt {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    /// Extra IPv4 option bytes (multiple of 4).
    options: Vec<u8>,
    frag: u16,
    udp_zero_csum: bool,
    /// Payload bytes beyond the standard ones.
    extra: usize,
}

impl Pkt {
    fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: 6,
            src,
            dst,
            sport,
            dport,
            options: vec![],
            frag: 0,
            udp_zero_csum: false,
            extra: 0,
        }
    }
    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Pkt {
        Pkt {
            proto: 17,
            ..Pkt::tcp(src, sport, dst, dport)
        }
    }
    /// ICMP echo request (dport = 8) or reply (dport = 0) with id `id`.
    fn icmp(src: [u8; 4], dst: [u8; 4], id: u16, ty: u16) -> Pkt {
        Pkt {
            proto: 1,
            ..Pkt::tcp(src, id, dst, ty)
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut payload = b"netd fixture payload".to_vec();
        payload.resize(payload.len() + self.extra, b'.');
        let payload = payload.as_slice();
        let mut l4 = Vec::new();
        if self.proto == 1 {
            l4.extend_from_slice(&[self.dport as u8, 0, 0, 0]);
            l4.extend_from_slice(&self.sport.to_be_bytes());
            l4.extend_from_slice(&[0, 1]); // sequence
            l4.extend_from_slice(payload);
            let c = csum(&l4, 0);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
            return self.frame(l4);
        }
        l4.extend_from_slice(&self.sport.to_be_bytes());
        l4.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            l4.extend_from_slice(&1234u32.to_be_bytes()); // seq
            l4.extend_from_slice(&0u32.to_be_bytes()); // ack
            l4.extend_from_slice(&[0x50, 0x02]); // doff 5, SYN
            l4.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, csum, urg
        } else {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.extend_from_slice(payload);
        let csum_off = if self.proto == 6 { 16 } else { 6 };
        if !(self.proto == 17 && self.udp_zero_csum) {
            let c = l4_csum(self.src, self.dst, self.proto, &l4);
            l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        }
        self.frame(l4)
    }

    fn frame(&self, l4: Vec<u8>) -> Vec<u8> {
        let ihl = 20 + self.options.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src);
        ip.extend_from_slice(&self.dst);
        ip.extend_from_slice(&self.options);
        let c = csum(&ip, 0);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0xaa; 6];
        f.extend_from_slice(&[0xbb; 6]);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend(ip);
        f.extend(l4);
        f
    }
}

fn l4_csum(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(l4);
    csum(&pseudo, 0)
}

/// What a frame says, after checking both checksums are valid.
#[derive(Debug, PartialEq)]
struct Seen {
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    l4_csum: u16,
}

fn inspect(frame: &[u8]) -> Seen {
    let ip = &frame[14..];
    let ihl = ((ip[0] & 0xf) * 4) as usize;
    assert_eq!(csum(&ip[..ihl], 0), 0, "IP header checksum invalid");
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let l4 = &ip[ihl..tot];
    let proto = ip[9];
    let src: [u8; 4] = ip[12..16].try_into().unwrap();
    let dst: [u8; 4] = ip[16..20].try_into().unwrap();
    if proto == 1 {
        assert_eq!(csum(l4, 0), 0, "ICMP checksum invalid");
        let id = u16::from_be_bytes([l4[4], l4[5]]);
        return Seen {
            src,
            dst,
            sport: id,
            dport: id,
            l4_csum: u16::from_be_bytes([l4[2], l4[3]]),
        };
    }
    let csum_off = if proto == 6 { 16 } else { 6 };
    let l4c = u16::from_be_bytes([l4[csum_off], l4[csum_off + 1]]);
    if !(proto == 17 && l4c == 0) {
        assert_eq!(l4_csum(src, dst, proto, l4), 0, "L4 checksum invalid");
    }
    Seen {
        src,
        dst,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
        l4_csum: l4c,
    }
}

fn in_snat_range(port: u16, range: (u16, u16)) -> bool {
    (range.0..=range.1).contains(&port)
}

fn counter(dp: &Datapath, name: &str) -> u64 {
    dp.stats()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or(0)
}

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
    let ct = f.dp.conntrack();
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
fn malformed_and_fragmented_packets_pass_untouched_and_are_counted() {
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
    let mut p = Pkt::tcp(CLIENT, 3, HOST, 8080);
    p.frag = 185; // offset 1480, no MF: a non-first fragment
    cases.push(("non-first fragment", p.build(), "fragment_passed"));
    let mut p = Pkt::udp(CLIENT, 3, HOST, 5353);
    p.frag = 0x2000; // MF set: first fragment
    cases.push(("first fragment", p.build(), "fragment_passed"));
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
        f.dp.conntrack().is_empty(),
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
        f.dp.conntrack().len(),
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

/// The fixture's next hop for FAR_CLIENT has no neighbour entry, and none appears.
fn assert_unresolved(f: &Fixture) {
    let out = Command::new("ip")
        .args(["-n", &f._netns.0, "neigh", "show", UNRESOLVED_HOP])
        .output()
        .expect("ip neigh");
    let neigh = String::from_utf8_lossy(&out.stdout);
    assert!(
        neigh.trim().is_empty() || neigh.contains("FAILED") || neigh.contains("INCOMPLETE"),
        "the next hop got resolved, the fixture proves nothing: {neigh}"
    );
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
    assert!(f.dp.conntrack().is_empty());
    let _ = NEXT_HOP;
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

#[test]
fn uplink_guard_verdicts() {
    let mut f = fixture("guard", false);
    publish(&mut f, [127, 0, 0, 1], 8081, 80, Proto::Tcp);
    f.dp.sync_subnets(&[
        (
            "172.17.0.0/16".parse().unwrap(),
            1 | netd_common::SUBNET_F_PROTECTED,
        ),
        // A network without masquerade: routed, its replies come to container addresses.
        ("172.20.0.0/16".parse().unwrap(), 2),
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

/// An ICMP error (type, code) from `src` to `dst` quoting the first 28 bytes of the IP
/// packet in `quoted` (an Ethernet frame).
fn icmp_error(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0x05, 0x78]; // next-hop MTU 1400
    icmp.extend_from_slice(&quoted[14..14 + 28]);
    let c = csum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let p = Pkt::icmp(src, dst, 0, 0);
    p.frame(icmp)
}

/// (outer src, outer dst, quoted src, quoted sport, quoted dst, quoted dport), after
/// checking the outer IP, ICMP and quoted IP checksums.
fn inspect_error(frame: &[u8]) -> ([u8; 4], [u8; 4], [u8; 4], u16, [u8; 4], u16) {
    let ip = &frame[14..];
    assert_eq!(csum(&ip[..20], 0), 0, "outer IP checksum invalid");
    let icmp = &ip[20..];
    assert_eq!(csum(icmp, 0), 0, "ICMP checksum invalid");
    let q = &icmp[8..];
    assert_eq!(csum(&q[..20], 0), 0, "quoted IP checksum invalid");
    let a = |b: &[u8]| -> [u8; 4] { b.try_into().unwrap() };
    (
        a(&ip[12..16]),
        a(&ip[16..20]),
        a(&q[12..16]),
        u16::from_be_bytes([q[20], q[21]]),
        a(&q[16..20]),
        u16::from_be_bytes([q[22], q[23]]),
    )
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

/// Re-registers the fixture's endpoints with other networks and flags.
fn set_endpoints(f: &mut Fixture, container: (u32, u32), other: (u32, u32)) {
    let ep = |ifindex, mac, (net_id, flags)| Endpoint {
        ifindex,
        net_id,
        gw_ip: u32::from_ne_bytes(GATEWAY),
        flags,
        mac,
        gw_mac: GW_MAC,
    };
    let (ve1, ve2) = (
        ifindex_of(&f._netns.0, "ve1"),
        ifindex_of(&f._netns.0, "ve2"),
    );
    f.dp.sync_endpoints(&[
        (Ipv4Addr::from(CONTAINER), ep(ve1, CONTAINER_MAC, container)),
        (Ipv4Addr::from(OTHER), ep(ve2, OTHER_MAC, other)),
    ])
    .unwrap();
}

#[test]
fn routed_networks_pass_the_guard() {
    let f = fixture("guard-routed", false);
    f.dp.test_run(UPLINK_GUARD, &Pkt::tcp(CLIENT, 1, HOST, 8080).build())
        .unwrap();
    let mut f = f;
    f.dp.sync_subnets(&[("172.20.0.0/16".parse().unwrap(), 2)])
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
    let ve1 = ifindex_of(&f._netns.0, "ve1");
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
    f.dp.set_config_flags(
        1,
        Ipv4Addr::from(HOST),
        netd_common::CONFIG_F_GUARD_IN_TC,
        SNAT_RANGE,
    )
    .unwrap();
    f.dp.sync_subnets(&[(
        "172.17.0.0/16".parse().unwrap(),
        1 | netd_common::SUBNET_F_PROTECTED,
    )])
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

/// The counters that moved between two readings, with how much.
fn moved(
    before: &[(&'static str, u64)],
    after: &[(&'static str, u64)],
) -> Vec<(&'static str, u64)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| a.1 != b.1)
        .map(|(b, a)| (a.0, a.1 - b.1))
        .collect()
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
    f.dp.sync_subnets(&[(
        "172.17.0.0/16".parse().unwrap(),
        1 | netd_common::SUBNET_F_PROTECTED,
    )])
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
        let flags = if xdp {
            0
        } else {
            netd_common::CONFIG_F_GUARD_IN_TC
        };
        f.dp.set_config_flags(1, Ipv4Addr::from(HOST), flags, SNAT_RANGE)
            .unwrap();
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
