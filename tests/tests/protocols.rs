//! End-to-end: IP protocols beyond TCP, UDP and ICMP through netd's NAT, sent and
//! answered with raw sockets (protocols/raw.py): GRE and ESP from a container leave
//! with the host's address and their answers come back, as with Docker's MASQUERADE;
//! SCTP is published as Docker publishes it (`-p 8132:132/sctp`), and masqueraded, with
//! a right CRC32c after every port change, on both families.
use netd_tests::{ok, Lab, CLIENT_IP, HOST_IP};

const RAW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/protocols/raw.py");
const HOST6: &str = "fd00:199::1";
const CLIENT6: &str = "fd00:199::2";

fn network(lab: &Lab, name: &str, v4: &str, v6: &str) {
    let bridge = format!("com.docker.network.bridge.name=ndt-{name}");
    lab.netd_ok(&[
        "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, "-o", &bridge, name,
    ]);
}

/// `raw.py ask` from container `name`: its output, which must be an answer.
fn ask_from(lab: &Lab, name: &str, args: &[&str]) -> String {
    let mut argv = vec!["exec", name, "python3", RAW, "ask"];
    argv.extend_from_slice(args);
    ok(&lab.netd(&argv), &format!("{name}: raw.py ask {args:?}"))
}

#[test]
fn gre_and_esp_leave_with_the_host_address_and_their_answers_come_back() {
    let mut lab = Lab::new();
    let client = lab.client.clone();
    // The outside answers every GRE and ESP packet to the address it came from: an
    // answer to a container's own address would find no route back.
    for fam in ["4", "6"] {
        for proto in ["47", "50"] {
            lab.spawn_in(&client, None, &["python3", RAW, "echo", fam, proto])
                .expect("an echo in the client");
        }
    }
    network(&lab, "raw", "10.91.0.0/24", "fd00:91::/64");
    let tester = netd_tests::tester_bin();
    let t = tester.to_str().expect("utf-8");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "app",
        "--network",
        "raw",
        "--",
        t,
        "serve-tcp6",
        "80",
    ]);
    for (fam, dst) in [("4", CLIENT_IP), ("6", CLIENT6)] {
        for proto in ["47", "50"] {
            let got = ask_from(&lab, "app", &[fam, proto, dst]);
            assert!(got.contains(&format!("src={dst}")), "{fam}/{proto}: {got}");
        }
    }
    let st = lab.stats();
    assert!(st["counters"]["snat"].as_u64().unwrap_or(0) >= 4, "{st}");
    assert!(
        st["counters"]["snat_reply"].as_u64().unwrap_or(0) >= 4,
        "{st}"
    );
    let ct = lab.netd_ok(&["conntrack", "ls", "--proto", "gre"]);
    assert!(ct.contains("snat"), "{ct}");
}

#[test]
fn sctp_is_published_and_masqueraded_with_a_right_crc_on_both_families() {
    let mut lab = Lab::new();
    let client = lab.client.clone();
    for fam in ["4", "6"] {
        lab.spawn_in(&client, None, &["python3", RAW, "echo", fam, "132", "9"])
            .expect("an SCTP echo in the client");
    }
    network(&lab, "sctp", "10.92.0.0/24", "fd00:92::/64");
    // An SCTP server on port 132 of both families, published on host port 8132.
    let serve = format!("python3 {RAW} echo 4 132 132 & exec python3 {RAW} echo 6 132 132");
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "sctp",
        "-p",
        "8132:132/sctp",
        "--",
        "sh",
        "-c",
        &serve,
    ]);
    let ports = lab.netd_ok(&["port", "srv"]);
    assert!(ports.contains("132/sctp"), "{ports}");
    // From outside to the published port: 8132 became 132 (the server only answers a
    // packet to 132 with a right CRC), and its answer comes from 8132, CRC right again.
    for host in [HOST_IP, HOST6] {
        let fam = if host.contains(':') { "6" } else { "4" };
        let o = lab.exec_in(&client, &["python3", RAW, "ask", fam, "132", host, "8132"]);
        let got = ok(&o, &format!("SCTP to {host}:8132"));
        assert!(
            got.contains(&format!("src={host} sport=8132 dport=5000 crc=ok")),
            "{got}"
        );
    }
    // From the container to the outside: masqueraded, its port kept, the CRC right.
    for (fam, dst) in [("4", CLIENT_IP), ("6", CLIENT6)] {
        let got = ask_from(&lab, "srv", &[fam, "132", dst, "9"]);
        assert!(
            got.contains(&format!("src={dst} sport=9 dport=5000 crc=ok")),
            "{got}"
        );
    }
}
