//! End-to-end: netd as Docker's network plugin. A real dockerd 20.10 runs in the lab's
//! host namespace beside netd (`netd daemon --docker-plugin NAME`); `docker network
//! create -d NAME` and unchanged `docker run -p` put Docker's containers on netd's
//! datapath. Run as root (cargo xtask test does).
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use netd_tests::{Lab, CLIENT_IP, HOST_IP, HOST_IP6};
use serde_json::Value;

#[path = "docker_plugin/dockerd.rs"]
mod dockerd;
#[path = "docker_plugin/protocol.rs"]
mod protocol;

use dockerd::{Dockerd, IMAGE};

/// The plugin's socket for this lab (a name of its own, so parallel runs never meet).
fn plugin(lab: &Lab) -> (String, PathBuf) {
    let name = format!("{}-plugin", lab.name);
    let sock = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
    (name, sock)
}

/// A lab whose netd serves the plugin protocol, and a dockerd beside it.
fn lab_with_docker() -> (Lab, Dockerd, String) {
    let mut lab = Lab::without_daemon();
    let (name, _) = plugin(&lab);
    lab.extra_daemon_args = vec!["--docker-plugin".into(), name.clone()];
    lab.start_daemon().expect("starting netd");
    let dk = Dockerd::start(&lab);
    (lab, dk, name)
}

fn in_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec");
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// GET http://HOST_IP:port/ from the client namespace (the outside world).
fn curl_from_client(lab: &Lab, port: u16) -> (bool, String) {
    let url = format!("http://{HOST_IP}:{port}/");
    in_ns(&lab.client, &["curl", "-s", "--max-time", "3", &url])
}

/// Retries `f` for up to 10 s (a container's server needs a moment to listen).
fn eventually(what: &str, mut f: impl FnMut() -> (bool, String)) -> String {
    let t0 = Instant::now();
    loop {
        let (ok, out) = f();
        if ok {
            return out;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stats(lab: &Lab) -> Value {
    serde_json::from_str(&lab.netd_ok(&["stats", "--format", "json"])).expect("stats json")
}

/// Packets netd's port map counted for host port `port`.
fn port_packets(lab: &Lab, port: u16) -> u64 {
    stats(lab)["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["mapping"]
                .as_str()
                .is_some_and(|m| m.ends_with(&format!(":{port}")))
        })
        .map(|p| p["packets"].as_u64().unwrap_or(0))
        .sum()
}

/// GET http://[HOST_IP6]:port/ from the client namespace, over IPv6.
fn curl6_from_client(lab: &Lab, port: u16) -> (bool, String) {
    let url = format!("http://[{HOST_IP6}]:{port}/");
    in_ns(&lab.client, &["curl", "-s", "-g", "--max-time", "3", &url])
}

/// The host namespace's firewall rules, both families of tools (and ip6tables).
fn host_rules(lab: &Lab) -> String {
    let (_, ipt) = in_ns(&lab.host, &["iptables-save"]);
    let (_, ip6t) = in_ns(&lab.host, &["ip6tables-save"]);
    let (_, nft) = in_ns(&lab.host, &["nft", "list", "ruleset"]);
    format!("{ipt}\n{ip6t}\n{nft}")
}

/// Links in the host namespace that netd made for endpoints (its veth prefix).
fn netd_veths(lab: &Lab) -> Vec<String> {
    lab.host_links()
        .into_iter()
        .filter(|l| l.starts_with("ndv"))
        .collect()
}

/// Link claims netd holds in its state directory.
fn link_claims(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.dir.join("state/owned/links"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ndv"))
        .collect()
}

/// A page fetched by a new container on network `net`. busybox's `wget -T` crashes,
/// so `timeout` bounds it, under a shell: as the container's pid 1 wget would ignore
/// the signal (the `exit` keeps the shell from exec'ing it).
fn fetch(dk: &Dockerd, net: &str, url: &str) -> String {
    dk.docker_ok(&[
        "run",
        "--rm",
        "--network",
        net,
        IMAGE,
        "sh",
        "-c",
        "timeout 5 wget -q -O - \"$0\"; exit $?",
        url,
    ])
}

fn network_id(dk: &Dockerd, net: &str) -> String {
    dk.docker_ok(&["network", "inspect", "-f", "{{.Id}}", net])
}

fn container_ip(dk: &Dockerd, ctr: &str, net: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    dk.docker_ok(&["inspect", "-f", &f, ctr])
}

#[test]
fn docker_run_on_a_netd_network_gets_netds_datapath() {
    let (lab, dk, driver) = lab_with_docker();
    let (_, sock) = plugin(&lab);
    assert!(sock.exists(), "no plugin socket at {}", sock.display());

    dk.docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.77.0.0/24",
        "dnet",
    ]);
    let id = network_id(&dk, "dnet");
    let nets = lab.netd_ok(&["network", "ls", "--no-trunc"]);
    assert!(nets.contains(&id), "netd network ls lacks {id}:\n{nets}");

    dk.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "dnet",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip = container_ip(&dk, "web", "dnet");
    assert!(ip.starts_with("10.77.0."), "{ip}");
    let body = eventually("the published port from the client", || {
        curl_from_client(&lab, 8080)
    });
    assert_eq!(body.trim(), "hello from docker");

    // netd's eBPF DNAT did it: no DNAT rule for the port, and netd's counters moved.
    let rules = host_rules(&lab);
    assert!(
        !rules
            .lines()
            .any(|l| l.contains("8080") && l.to_lowercase().contains("dnat")),
        "a DNAT rule for 8080 in the host namespace:\n{rules}"
    );
    assert!(port_packets(&lab, 8080) > 0, "{}", stats(&lab));
    let ps = lab.netd_ok(&["ps"]);
    assert!(ps.contains("docker-"), "netd ps lacks the endpoint:\n{ps}");
    let port = lab.netd_ok(&["port", ps_name(&ps).as_str()]);
    assert!(port.contains("8080"), "{port}");
    // What docs/docker-plugin.md says a plugin cannot change: dockerd reads published ports only
    // from its built-in drivers, so its own `docker port` shows none of a remote
    // driver's (`netd port` above does).
    let docker_port = dk.docker_ok(&["port", "web"]);
    assert!(docker_port.trim().is_empty(), "{docker_port}");
    let ports = dk.docker_ok(&["inspect", "-f", "{{json .NetworkSettings.Ports}}", "web"]);
    assert!(!ports.contains("8080"), "{ports}");

    // The container reaches the outside with the host's address (masquerade).
    let mut lab = lab;
    lab.spawn_in(
        &lab.client.clone(),
        None,
        &[
            &netd_tests::tester_bin().display().to_string(),
            "serve-tcp",
            "9000",
        ],
    )
    .expect("client server");
    let target = format!("{CLIENT_IP}:9000");
    let got = eventually("the client from the container", || {
        let o = dk.docker(&["exec", "web", "netd-tester", "tcp", &target]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    });
    assert!(got.starts_with(&format!("peer={HOST_IP}:")), "{got}");

    // Docker's embedded DNS on a netd network: a second container finds `web` by name.
    let page = fetch(&dk, "dnet", "http://web/");
    assert_eq!(page.trim(), "hello from docker");

    // connect/disconnect: web gets a second interface on another netd network.
    dk.docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.78.0.0/24",
        "dnet2",
    ]);
    dk.docker_ok(&["network", "connect", "dnet2", "web"]);
    let ip2 = container_ip(&dk, "web", "dnet2");
    assert!(ip2.starts_with("10.78.0."), "{ip2}");
    let url2 = format!("http://{ip2}/");
    let page = fetch(&dk, "dnet2", &url2);
    assert_eq!(page.trim(), "hello from docker");
    let veths = netd_veths(&lab).len();
    dk.docker_ok(&["network", "disconnect", "dnet2", "web"]);
    assert_eq!(netd_veths(&lab).len(), veths - 1, "{:?}", netd_veths(&lab));
    assert!(
        curl_from_client(&lab, 8080).0,
        "web lost its port on disconnect"
    );
    // netd's isolation holds between Docker's networks: from dnet2, web's address on
    // dnet is unreachable (it answered through its dnet2 interface a moment ago).
    let target1 = format!("{ip}:80");
    let o = dk.docker(&[
        "run",
        "--rm",
        "--network",
        "dnet2",
        "-e",
        "NETD_TESTER_TIMEOUT_MS=1000",
        IMAGE,
        "netd-tester",
        "tcp",
        &target1,
    ]);
    assert!(
        !o.status.success(),
        "dnet2 reached web on dnet: {}",
        String::from_utf8_lossy(&o.stdout)
    );

    // rm -f and network rm leave nothing of netd's behind.
    dk.docker_ok(&["rm", "-f", "web"]);
    assert!(!curl_from_client(&lab, 8080).0, "the port answers after rm");
    dk.docker_ok(&["network", "rm", "dnet", "dnet2"]);
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert!(link_claims(&lab).is_empty(), "{:?}", link_claims(&lab));
    assert!(lab.endpoint_pins().is_empty(), "{:?}", lab.endpoint_pins());
    let st = stats(&lab);
    assert_eq!(st["port_map_entries"], 0, "{st}");
    assert_eq!(st["endpoint_entries"], 0, "{st}");
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
    let nets = lab.netd_ok(&["network", "ls", "--no-trunc"]);
    assert!(!nets.contains(&id), "{nets}");

    let cgroups = dk.cgroup_dirs();
    assert!(!cgroups.is_empty(), "dockerd made no cgroup of its own?");
    drop(dk);
    let (_, sock) = plugin(&lab);
    drop(lab);
    assert!(!sock.exists(), "the plugin socket outlived netd");
    assert!(cgroups.iter().all(|c| !c.exists()), "{cgroups:?}");
}

#[test]
fn docker_run_on_a_dual_stack_netd_network_publishes_over_ipv6() {
    let (lab, dk, driver) = lab_with_docker();
    dk.docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--ipv6",
        "--subnet",
        "10.77.6.0/24",
        "--subnet",
        "fd00:77:6::/64",
        "d6net",
    ]);
    let id = network_id(&dk, "d6net");
    let net: Value = serde_json::from_str(&lab.netd_ok(&["network", "inspect", &id]))
        .expect("network inspect JSON");
    let net = if net.is_array() { &net[0] } else { &net };
    assert_eq!(net["EnableIPv6"], true, "{net}");

    dk.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web6",
        "--network",
        "d6net",
        "-p",
        "8086:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    // Docker's IPAM picked the addresses; netd used exactly those.
    let f = "{{(index .NetworkSettings.Networks \"d6net\").GlobalIPv6Address}}";
    let ip6 = dk.docker_ok(&["inspect", "-f", f, "web6"]);
    assert!(ip6.starts_with("fd00:77:6::"), "{ip6}");
    let ps: Value =
        serde_json::from_str(&lab.netd_ok(&["inspect", &ps_name(&lab.netd_ok(&["ps"]))]))
            .expect("inspect JSON");
    let ps = if ps.is_array() { &ps[0] } else { &ps };
    let netd_ip6 = ps["NetworkSettings"]["Networks"]
        .as_object()
        .and_then(|m| m.values().next())
        .and_then(|n| n["GlobalIPv6Address"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(netd_ip6, ip6, "{ps}");
    let a = dk.docker_ok(&["exec", "web6", "ip", "-6", "addr", "show", "eth0"]);
    assert!(a.contains(&format!("{ip6}/64")), "{a}");
    let gw = eventually("ping -6 the gateway from web6", || {
        let o = dk.docker(&[
            "exec",
            "web6",
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            "fd00:77:6::1",
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    });
    assert!(gw.contains("1 packets received"), "{gw}");

    // One -p, both families: IPv6 from the outside through netd's DNAT66, IPv4 as ever.
    let body = eventually("the published port over IPv6", || {
        curl6_from_client(&lab, 8086)
    });
    assert_eq!(body.trim(), "hello from docker");
    let body = eventually("the published port over IPv4", || {
        curl_from_client(&lab, 8086)
    });
    assert_eq!(body.trim(), "hello from docker");
    let port = lab.netd_ok(&["port", &ps_name(&lab.netd_ok(&["ps"]))]);
    assert!(
        port.contains("[::]:8086") && port.contains("0.0.0.0:8086"),
        "{port}"
    );
    let rules = host_rules(&lab);
    assert!(
        !rules
            .lines()
            .any(|l| l.contains("8086") && l.to_lowercase().contains("dnat")),
        "a DNAT rule for 8086 in the host namespace:\n{rules}"
    );
    let ct = lab.netd_ok(&["conntrack", "ls"]);
    assert!(ct.contains(netd_tests::CLIENT_IP6), "{ct}");

    dk.docker_ok(&["rm", "-f", "web6"]);
    assert!(
        !curl6_from_client(&lab, 8086).0,
        "the port answers after rm"
    );
    dk.docker_ok(&["network", "rm", "d6net"]);
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert!(link_claims(&lab).is_empty(), "{:?}", link_claims(&lab));
    let st = stats(&lab);
    assert_eq!(st["port_map_entries"], 0, "{st}");
    assert_eq!(st["endpoint_entries"], 0, "{st}");
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
}

/// The NAMES column of the first container line of `netd ps`.
fn ps_name(ps: &str) -> String {
    ps.lines()
        .skip(1)
        .find_map(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn docker_containers_on_netd_survive_restarts_of_netd_and_dockerd() {
    let (mut lab, mut dk, driver) = lab_with_docker();
    dk.docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.79.0.0/24",
        "rnet",
    ]);
    dk.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "rnet",
        "-p",
        "8082:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    eventually("web before any restart", || curl_from_client(&lab, 8082));
    let ps_before = lab.netd_ok(&["ps", "-q"]);

    // kill -9: the pinned datapath keeps forwarding without the agent; the next agent
    // adopts the endpoint (and takes over the stale plugin socket).
    lab.stop_daemon(libc::SIGKILL);
    assert!(
        curl_from_client(&lab, 8082).0,
        "no traffic while netd is down"
    );
    lab.start_daemon().expect("netd after kill -9");
    eventually("web after netd's kill -9", || curl_from_client(&lab, 8082));
    assert_eq!(lab.netd_ok(&["ps", "-q"]), ps_before);
    // A clean stop and start too.
    lab.stop_daemon(libc::SIGTERM);
    lab.start_daemon().expect("netd after SIGTERM");
    eventually("web after netd's restart", || curl_from_client(&lab, 8082));
    assert_eq!(lab.netd_ok(&["ps", "-q"]), ps_before);
    let port = lab.netd_ok(&["port", ps_name(&lab.netd_ok(&["ps"])).as_str()]);
    assert!(port.contains("8082"), "{port}");

    // dockerd restarted with live restore: the container keeps running, and what
    // dockerd sends again is no conflict.
    dk.restart();
    eventually("web after dockerd's restart", || {
        curl_from_client(&lab, 8082)
    });
    assert_eq!(lab.netd_ok(&["ps", "-q"]), ps_before);
    // Both agree afterwards: a new container works, and removing both clears netd.
    dk.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "rnet",
        "-p",
        "8083:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    eventually("web2 after the restarts", || curl_from_client(&lab, 8083));
    assert_eq!(
        fetch(&dk, "rnet", "http://web/").trim(),
        "hello from docker"
    );
    dk.docker_ok(&["rm", "-f", "web", "web2"]);
    dk.docker_ok(&["network", "rm", "rnet"]);
    assert_eq!(lab.netd_ok(&["ps", "-a", "-q"]).trim(), "");
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert!(link_claims(&lab).is_empty(), "{:?}", link_claims(&lab));
    let st = stats(&lab);
    assert_eq!(st["port_map_entries"], 0, "{st}");
    assert_eq!(st["endpoint_entries"], 0, "{st}");
}

#[test]
fn docker_networks_on_netd_take_gateway_modes_and_published_source_lists() {
    let (lab, dk, driver) = lab_with_docker();
    // What a compose file's `driver_opts` send: Docker 28's gateway mode and netd's
    // published-port source list, through dockerd to the plugin.
    dk.docker_ok(&[
        "network",
        "create",
        "-d",
        &driver,
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=routed",
        "-o",
        "netd.published_sources=10.199.0.0/24",
        "rnet",
    ]);
    dk.docker_ok(&[
        "run",
        "-d",
        "--name",
        "rweb",
        "--network",
        "rnet",
        "-p",
        "8082:80",
        IMAGE,
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let ip = container_ip(&dk, "rweb", "rnet");
    let (ok, out) = in_ns(
        &lab.client,
        &["ip", "route", "add", "10.78.0.0/24", "via", HOST_IP],
    );
    assert!(ok, "{out}");
    // Routed: the published container port straight at the container's address.
    let url = format!("http://{ip}:80/");
    let body = eventually("the routed container's port from the client", || {
        in_ns(&lab.client, &["curl", "-s", "--max-time", "3", &url])
    });
    assert_eq!(body.trim(), "hello from docker");
    let inspect = lab.netd_ok(&["network", "inspect", &network_id(&dk, "rnet")]);
    assert!(inspect.contains("gateway_mode_ipv4"), "{inspect}");
    // A bad mode is refused by the plugin, and dockerd says netd's line.
    let o = dk.docker(&[
        "network",
        "create",
        "-d",
        &driver,
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=open",
        "bad",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("gateway_mode_ipv4"),
        "{err}"
    );
}

#[test]
fn a_compose_file_with_docker_28_network_options_comes_up_on_netd() {
    let (lab, dk, driver) = lab_with_docker();
    let dir = lab.dir.join("compose");
    std::fs::create_dir_all(&dir).expect("compose dir");
    // What compose files written for Docker 28 carry: a gateway mode, trusted host
    // interfaces and netd's own published-port source list, as driver_opts.
    let file = format!(
        r#"version: "2.4"
services:
  web:
    image: {IMAGE}
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    ports: ["8084:80"]
    networks: [front]
networks:
  front:
    driver: {driver}
    driver_opts:
      com.docker.network.bridge.gateway_mode_ipv4: nat-unprotected
      com.docker.network.bridge.trusted_host_interfaces: "up0"
      netd.published_sources: "10.199.0.0/24"
    ipam:
      config:
        - subnet: 10.79.0.0/24
"#
    );
    std::fs::write(dir.join("docker-compose.yml"), file).expect("compose file");
    let o = dk.compose(&dir, &["-p", "gm", "up", "-d"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let body = eventually("the published port from the client", || {
        curl_from_client(&lab, 8084)
    });
    assert_eq!(body.trim(), "hello from docker");
    let ip = container_ip(&dk, "gm_web_1", "gm_front");
    let (ok, out) = in_ns(
        &lab.client,
        &["ip", "route", "add", "10.79.0.0/24", "via", HOST_IP],
    );
    assert!(ok, "{out}");
    // nat-unprotected: the container straight at its address, from outside.
    let url = format!("http://{ip}:80/");
    let body = eventually("the container straight from the client", || {
        in_ns(&lab.client, &["curl", "-s", "--max-time", "3", &url])
    });
    assert_eq!(body.trim(), "hello from docker");
    let o = dk.compose(&dir, &["-p", "gm", "down"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
