//! End-to-end NAT beyond a single published port: masquerade, hairpin, random and
//! host-IP-bound ports, conntrack management, counters. Real daemon, real packets.
use std::time::Duration;

use netd_tests::{Lab, CLIENT_IP, HOST_IP};

fn peer_of(reply: &str) -> (String, u16) {
    let peer = reply
        .trim()
        .trim_start_matches("peer=")
        .split(' ')
        .next()
        .unwrap_or("")
        .to_string();
    let (ip, port) = peer.rsplit_once(':').expect("peer=IP:PORT");
    (ip.to_string(), port.parse().expect("port"))
}

fn assert_rulesets_empty(lab: &Lab) {
    let (ipt, nft) = lab.host_rulesets();
    assert!(
        ipt.is_empty() && nft.is_empty(),
        "host rulesets not empty:\n{ipt}\n{nft}"
    );
}

#[test]
fn masquerade_tcp_udp_and_ping_leave_with_the_uplink_address() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp", "7000"]);
    lab.serve_in_client(&["serve-udp", "7001"]);
    lab.run_server("app", &[], &["serve-tcp", "80"]);
    let got = lab
        .from_container("app", &["tcp", &format!("{CLIENT_IP}:7000")])
        .expect("tcp out");
    let (ip, port) = peer_of(&got);
    assert_eq!(ip, HOST_IP, "the client sees the uplink address");
    // The container's own port is kept when free (as MASQUERADE does); never 0.
    assert!(port > 0);
    let got = lab
        .from_container("app", &["udp", &format!("{CLIENT_IP}:7001"), "x"])
        .expect("udp out");
    assert_eq!(peer_of(&got).0, HOST_IP);
    let o = lab.netd(&["exec", "app", "ping", "-c", "1", "-W", "2", CLIENT_IP]);
    assert!(
        o.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let st = lab.stats();
    assert!(st["counters"]["snat"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["counters"]["snat_reply"].as_u64().unwrap() >= 3, "{st}");
    let ct = lab.netd_ok(&["conntrack", "ls", "--proto", "icmp"]);
    assert!(ct.contains("snat"), "{ct}");
    assert_rulesets_empty(&lab);
}

#[test]
fn two_containers_with_the_same_source_port_to_the_same_remote_both_work() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-udp", "7001"]);
    lab.run_server("a", &[], &["serve-tcp", "80"]);
    lab.run_server("b", &[], &["serve-tcp", "80"]);
    let dst = format!("{CLIENT_IP}:7001");
    let ra = lab
        .from_container("a", &["udp", &dst, "from-a", "40000"])
        .expect("a");
    let rb = lab
        .from_container("b", &["udp", &dst, "from-b", "40000"])
        .expect("b");
    assert!(ra.contains("from-a") && rb.contains("from-b"), "{ra} {rb}");
    let (pa, pb) = (peer_of(&ra).1, peer_of(&rb).1);
    assert_ne!(pa, pb, "both flows got the same masquerade tuple");
}

#[test]
fn masquerade_port_exhaustion_is_counted_not_mis_mapped() {
    let mut lab = Lab::with_args(&["--snat-port-range", "61000-61001"]);
    lab.serve_in_client(&["serve-udp", "7001"]);
    lab.run_server("a", &[], &["serve-tcp", "80"]);
    let dst = format!("{CLIENT_IP}:7001");
    let mut ports = Vec::new();
    // Privileged source ports are never kept: both come from the 2-port range.
    for sport in ["100", "101"] {
        let r = lab
            .from_container("a", &["udp", &dst, "x", sport])
            .expect("fits the range");
        ports.push(peer_of(&r).1);
    }
    ports.sort();
    assert_eq!(ports, vec![61000, 61001]);
    assert!(
        lab.from_container("a", &["udp", &dst, "x", "102"]).is_err(),
        "a third flow got through"
    );
    let st = lab.stats();
    assert!(
        st["counters"]["drop_snat_exhausted"].as_u64().unwrap() >= 1,
        "{st}"
    );
}

#[test]
fn hairpin_from_another_container_and_from_itself() {
    let lab = Lab::new();
    let web_ip = lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    let other_ip = lab.run_server("other", &[], &["serve-tcp", "80"]);
    let target = format!("{HOST_IP}:8080");
    let got = lab
        .from_container("other", &["tcp", &target])
        .expect("hairpin from another container");
    assert_eq!(
        peer_of(&got).0,
        other_ip,
        "source preserved between containers"
    );
    let got = lab
        .from_container("web", &["tcp", &target])
        .expect("hairpin to itself");
    let (src, _) = peer_of(&got);
    assert_ne!(src, web_ip);
    assert!(
        src.ends_with(".1"),
        "to itself it comes from the gateway, got {src}"
    );
    assert!(lab.stats()["counters"]["hairpin"].as_u64().unwrap() >= 2);
}

#[test]
fn random_host_ports_and_publish_all() {
    let lab = Lab::new();
    let tester = netd_tests::tester_bin();
    let t = tester.to_str().unwrap();
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "-p",
        "80",
        "--expose",
        "81",
        "-P",
        "--",
        t,
        "serve-tcp",
        "80",
    ]);
    let ports = lab.netd_ok(&["port", "r"]);
    assert_eq!(ports.lines().count(), 2, "{ports}");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let (lo, hi): (u16, u16) = {
        let v: Vec<u16> = range
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1])
    };
    let mut host_port = 0;
    for line in ports.lines() {
        let hp: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        assert!((lo..=hi).contains(&hp), "{hp} outside {lo}-{hi}");
        if line.starts_with("80/tcp") {
            host_port = hp;
        }
    }
    lab.wait_listening(
        &format!("{}r", lab.container_prefix()),
        &["serve-tcp", "80"],
    );
    let body = lab
        .from_client(&["tcp", &format!("{HOST_IP}:{host_port}")])
        .expect("random port answers");
    assert!(body.starts_with(&format!("peer={CLIENT_IP}")), "{body}");
}

#[test]
fn host_ip_binding_restricts_the_published_port() {
    let lab = Lab::new();
    lab.run_server(
        "lo",
        &["127.0.0.1:8081:80", "10.199.0.1:8082:80"],
        &["serve-tcp", "80"],
    );
    assert!(
        lab.from_client(&["tcp", &format!("{HOST_IP}:8081")])
            .is_err(),
        "loopback-bound port reachable from outside"
    );
    lab.from_client(&["tcp", &format!("{HOST_IP}:8082")])
        .expect("address-bound port answers");
}

#[test]
fn a_port_a_host_process_listens_on_cannot_be_published() {
    let lab = Lab::new();
    let mut srv = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.host])
        .arg(netd_tests::tester_bin())
        .args(["serve-tcp", "9090"])
        .spawn()
        .unwrap();
    lab.wait_listening(&lab.host, &["serve-tcp", "9090"]);
    let o = lab.netd(&["run", "-d", "-p", "9090:80", "--", "sleep", "60"]);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("in use by a process in the host namespace"),
        "{err}"
    );
}

#[test]
fn conntrack_flush_gc_and_per_port_counters() {
    let lab = Lab::with_args(&["--ct-gc-interval", "1", "--ct-udp-timeout", "1"]);
    lab.run_server("dns", &["5353:53/udp"], &["serve-udp", "53"]);
    lab.run_server("web", &["8080:80"], &["serve-tcp", "80"]);
    lab.from_client(&["udp", &format!("{HOST_IP}:5353"), "q"])
        .expect("udp");
    lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("tcp");
    let st = lab.stats();
    let ports = st["ports"].as_array().unwrap();
    let web = ports
        .iter()
        .find(|p| p["container"] == "web")
        .expect("web counters");
    assert!(web["packets"].as_u64().unwrap() >= 4, "{st}");
    assert!(web["bytes"].as_u64().unwrap() > 0, "{st}");
    assert!(!lab
        .netd_ok(&["conntrack", "ls", "--proto", "udp"])
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .is_empty());
    // One-way UDP... this one was answered: a stream, kept 120s. Flush it instead.
    let out = lab.netd_ok(&["conntrack", "flush", "--proto", "udp"]);
    assert!(out.starts_with('2'), "{out}");
    assert_eq!(
        lab.netd_ok(&["conntrack", "ls", "--proto", "udp"])
            .lines()
            .count(),
        1
    );
    assert!(
        lab.netd_ok(&["conntrack", "ls", "--proto", "tcp"])
            .lines()
            .count()
            > 1
    );
    // A one-way UDP flow (nothing listens on 5354's backend port) expires by itself.
    lab.run_server("sink", &["5354:54/udp"], &["serve-tcp", "80"]);
    let _ = lab.from_client(&["udp", &format!("{HOST_IP}:5354"), "nobody"]);
    assert!(
        lab.netd_ok(&["conntrack", "ls", "--port", "5354"])
            .lines()
            .count()
            > 1
    );
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        lab.netd_ok(&["conntrack", "ls", "--port", "5354"])
            .lines()
            .count(),
        1,
        "expired flow still tracked"
    );
    lab.netd_ok(&["conntrack", "flush"]);
    assert_eq!(lab.stats()["conntrack_entries"], 0);
}

#[test]
fn host_processes_reach_published_ports_on_loopback_and_host_ip_without_a_proxy() {
    let lab = Lab::new();
    lab.run_server(
        "web",
        &["8080:80", "127.0.0.1:8081:80"],
        &["serve-tcp", "80"],
    );
    lab.run_server("dns", &["5353:53/udp"], &["serve-udp", "53"]);
    for target in ["127.0.0.1:8080", "10.199.0.1:8080", "127.0.0.1:8081"] {
        let got = lab
            .from_lab_cgroup(&lab.host, &["tcp", target])
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        assert!(got.starts_with("peer=172."), "{target}: {got}");
    }
    // UDP: the reply appears to come from the address the application sent to.
    let got = lab
        .from_lab_cgroup(&lab.host, &["udp", "127.0.0.1:5353", "q"])
        .expect("udp via loopback");
    assert!(got.trim_end().ends_with("from=127.0.0.1:5353"), "{got}");
    // Only the host namespace's sockets are translated: the client namespace, even in
    // the same cgroup, reaches its own loopback.
    assert!(lab
        .from_lab_cgroup(&lab.client, &["tcp", "127.0.0.1:8080"])
        .is_err());
    // No proxy process: the daemon is the only netd process in the host namespace.
    let pids = lab.exec_in(&lab.host, &["ss", "-H", "-tlnp"]);
    assert!(
        String::from_utf8_lossy(&pids.stdout).trim().is_empty(),
        "something listens in the host namespace"
    );
}

#[test]
fn uplink_guard_drops_direct_spoofed_and_loopback_only_traffic_from_outside() {
    let lab = Lab::new();
    let ip = lab.run_server(
        "web",
        &["8080:80", "127.0.0.1:8081:80"],
        &["serve-tcp", "80"],
    );
    let counter = |name: &str| lab.stats()["counters"][name].as_u64().unwrap_or(0);
    let ipc = |args: &[&str]| {
        let mut full = vec!["-n", lab.client.as_str()];
        full.extend_from_slice(args);
        assert!(
            std::process::Command::new("ip")
                .args(&full)
                .status()
                .unwrap()
                .success(),
            "ip {full:?}"
        );
    };
    // Straight to the container, routed through the host: dropped in XDP.
    ipc(&["route", "add", &format!("{ip}/32"), "via", HOST_IP]);
    assert!(
        lab.from_client(&["tcp", &format!("{ip}:80")]).is_err(),
        "direct access to a container"
    );
    assert!(counter("guard_drop_to_container") >= 1);
    // A port published on 127.0.0.1 only: dropped, not even a reset.
    assert!(lab
        .from_client(&["tcp", &format!("{HOST_IP}:8081")])
        .is_err());
    assert!(counter("guard_drop_loopback") >= 1);
    // A forged container source address: dropped.
    ipc(&["addr", "add", "172.17.255.99/32", "dev", "cl0"]);
    ipc(&[
        "route",
        "add",
        &format!("{HOST_IP}/32"),
        "dev",
        "cl0",
        "src",
        "172.17.255.99",
    ]);
    assert!(
        lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
            .is_err(),
        "spoofed source got in"
    );
    assert!(counter("guard_drop_spoofed") >= 1);
    // Honest traffic is untouched.
    ipc(&["route", "del", &format!("{HOST_IP}/32")]);
    lab.from_client(&["tcp", &format!("{HOST_IP}:8080")])
        .expect("published port still answers");
}

#[test]
fn port_unreachable_from_a_container_reaches_the_client_as_connection_refused() {
    let lab = Lab::new();
    // Published, but nothing listens on the container's UDP port 54.
    lab.run_server("quiet", &["5354:54/udp"], &["serve-tcp", "80"]);
    let got = lab
        .from_client(&["udp-connected", &format!("{HOST_IP}:5354"), "anyone?"])
        .expect("an answer or a refusal");
    assert_eq!(
        got.trim(),
        "refused",
        "the ICMP error was not translated back"
    );
}

#[test]
fn network_options_masquerade_off_and_host_binding() {
    let mut lab = Lab::new();
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let tester = netd_tests::tester_bin();
    let t = tester.to_str().unwrap();
    // No masquerade: the container's own address goes out; the outside routes it back.
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.51.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "routed",
    ]);
    assert!(std::process::Command::new("ip")
        .args([
            "-n",
            &lab.client,
            "route",
            "add",
            "10.51.0.0/24",
            "via",
            HOST_IP
        ])
        .status()
        .unwrap()
        .success());
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "r",
        "--network",
        "routed",
        "--ip",
        "10.51.0.20",
        "--",
        "sleep",
        "600",
    ]);
    let got = lab
        .from_container("r", &["tcp", &format!("{CLIENT_IP}:7000")])
        .expect("out without NAT");
    assert_eq!(peer_of(&got).0, "10.51.0.20", "{got}");
    assert_eq!(lab.stats()["counters"]["snat"], 0);
    // host_binding_ipv4: -p without an address binds to the network's default.
    lab.netd_ok(&[
        "network",
        "create",
        "--subnet",
        "10.52.0.0/24",
        "-o",
        "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
        "loopbound",
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "hb",
        "--network",
        "loopbound",
        "-p",
        "8086:80",
        "--",
        t,
        "serve-tcp",
        "80",
    ]);
    lab.wait_listening(
        &format!("{}hb", lab.container_prefix()),
        &["serve-tcp", "80"],
    );
    assert_eq!(
        lab.netd_ok(&["port", "hb"]).trim(),
        "80/tcp -> 127.0.0.1:8086"
    );
    assert!(
        lab.from_client(&["tcp", &format!("{HOST_IP}:8086")])
            .is_err(),
        "reachable from outside"
    );
    lab.from_lab_cgroup(&lab.host, &["tcp", "127.0.0.1:8086"])
        .expect("reachable on the host's loopback");
}

/// Removing a container drops its flows: a UDP client that keeps its source port does
/// not stay stuck on the old container when the port is published again (the
/// conntrack bug Docker and netavark have).
#[test]
fn republished_udp_port_does_not_blackhole_a_kept_flow() {
    let lab = Lab::new();
    lab.run_server("old", &["5353:53/udp"], &["serve-udp", "53"]);
    let dst = format!("{HOST_IP}:5353");
    lab.from_client(&["udp", &dst, "one", "41000"])
        .expect("first server");
    lab.netd_ok(&["rm", "-f", "old"]);
    // A filler takes the old address, so a stale entry would now lead to a container
    // with no server.
    lab.netd_ok(&["run", "-d", "--name", "filler", "--", "sleep", "600"]);
    lab.run_server("new", &["5353:53/udp"], &["serve-udp", "53"]);
    let got = lab
        .from_client(&["udp", &dst, "two", "41000"])
        .expect("the re-published port answers");
    assert!(got.contains("two"), "{got}");
}

/// Every frame crossing interface `dev` of namespace `ns` while it runs: a raw socket
/// in a thread of its own that entered the namespace (setns moves only that thread).
struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<u8>>>,
}

impl Capture {
    fn start(ns: &str, dev: &str) -> Capture {
        use std::{ffi::CString, os::fd::AsRawFd, sync::atomic::Ordering};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready, started) = std::sync::mpsc::channel();
        let (ns, dev, flag) = (ns.to_string(), CString::new(dev).unwrap(), stop.clone());
        let thread = std::thread::spawn(move || {
            let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
            let all = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain syscalls on values that live across them; the socket is
            // closed below.
            let fd = unsafe {
                assert_eq!(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET), 0);
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, all as i32);
                assert!(fd >= 0, "AF_PACKET socket");
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = all;
                sll.sll_ifindex = libc::if_nametoindex(dev.as_ptr()) as i32;
                assert!(sll.sll_ifindex > 0, "no {dev:?} in {ns}");
                let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                assert_eq!(libc::bind(fd, &sll as *const _ as *const _, len), 0);
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 50_000,
                };
                let tvlen = std::mem::size_of::<libc::timeval>() as u32;
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const _,
                    tvlen,
                );
                fd
            };
            ready.send(()).unwrap();
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                // SAFETY: buf outlives the call and its length is passed.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), 0) };
                if n > 0 {
                    frames.push(buf[..n as usize].to_vec());
                } else if flag.load(Ordering::SeqCst) {
                    break;
                }
            }
            // SAFETY: fd is the socket opened above, closed once.
            unsafe { libc::close(fd) };
            frames
        });
        started
            .recv_timeout(Duration::from_secs(5))
            .expect("capture started");
        Capture { stop, thread }
    }

    fn finish(self) -> Vec<Vec<u8>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("capture thread")
    }
}

/// (source, destination) of each IPv4 packet, and (sender, target) of each ARP frame.
fn addresses(frame: &[u8]) -> Option<(std::net::Ipv4Addr, std::net::Ipv4Addr, u8)> {
    let a = |o: usize| std::net::Ipv4Addr::new(frame[o], frame[o + 1], frame[o + 2], frame[o + 3]);
    match (frame.get(12..14)?, frame.len()) {
        ([0x08, 0x00], n) if n >= 34 => Some((a(26), a(30), frame[23])),
        ([0x08, 0x06], n) if n >= 42 => Some((a(28), a(38), 0)),
        _ => None,
    }
}

/// Issue 16: on a fresh host (no neighbour entry for the next hop yet) the very first
/// packets of a container, a ping and a TCP SYN, leave masqueraded: answered at once,
/// with no container address ever on the client's wire.
fn first_packets_to_an_unresolved_next_hop_leave_masqueraded(daemon_args: &[&str]) -> Lab {
    let mut lab = Lab::with_args(daemon_args);
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let app_ip: std::net::Ipv4Addr = lab
        .run_server("app", &[], &["serve-tcp", "80"])
        .parse()
        .expect("container IP");
    let forget_the_client = || {
        let o = lab.exec_in(&lab.host, &["ip", "neigh", "flush", "dev", "up0"]);
        assert!(o.status.success(), "ip neigh flush");
        let o = lab.exec_in(&lab.host, &["ip", "neigh", "show", CLIENT_IP]);
        let neigh = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(neigh.trim().is_empty(), "still resolved: {neigh}");
    };
    let cap = Capture::start(&lab.client, "cl0");
    forget_the_client();
    // One echo request: it must be the one answered.
    let o = lab.netd(&["exec", "app", "ping", "-c", "1", "-W", "2", CLIENT_IP]);
    let ping_ok = o.status.success();
    forget_the_client();
    // Answered before the SYN's first retransmit (1 s): the first SYN made it.
    let tester = netd_tests::tester_bin();
    let addr = format!("{CLIENT_IP}:7000");
    let o = lab.netd(&[
        "exec",
        "app",
        "env",
        "NETD_TESTER_TIMEOUT_MS=800",
        tester.to_str().expect("utf-8 path"),
        "tcp",
        &addr,
    ]);
    let tcp = String::from_utf8_lossy(&o.stdout).into_owned();
    let frames = cap.finish();
    let seen: Vec<_> = frames.iter().filter_map(|f| addresses(f)).collect();
    let leaks: Vec<_> = seen
        .iter()
        .filter(|(s, d, _)| *s == app_ip || *d == app_ip)
        .collect();
    assert!(leaks.is_empty(), "container address on the wire: {leaks:?}");
    assert!(ping_ok, "the first ping got no answer");
    assert!(o.status.success(), "the first SYN got no answer: {tcp}");
    assert_eq!(peer_of(&tcp).0, HOST_IP);
    let host: std::net::Ipv4Addr = HOST_IP.parse().unwrap();
    for (proto, what) in [(1, "ping"), (6, "SYN")] {
        assert!(
            seen.iter().any(|(s, _, p)| *s == host && *p == proto),
            "the capture saw no masqueraded {what}: {seen:?}"
        );
    }
    lab
}

#[test]
fn first_packets_to_an_unresolved_next_hop_leave_masqueraded_fast_path() {
    let lab = first_packets_to_an_unresolved_next_hop_leave_masqueraded(&[]);
    let st = lab.stats();
    assert!(
        st["counters"]["redirect_neigh"].as_u64().unwrap_or(0) >= 2,
        "bpf_redirect_neigh was not used: {st}"
    );
}

#[test]
fn first_packets_to_an_unresolved_next_hop_leave_masqueraded_through_the_stack() {
    let lab = first_packets_to_an_unresolved_next_hop_leave_masqueraded(&["--no-fast-path"]);
    assert_eq!(lab.stats()["counters"]["redirect_neigh"], 0);
}
