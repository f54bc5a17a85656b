//! Docker 25-28's endpoint options, end to end: several `--network` flags and the long
//! form, gw-priority (which endpoint gives the default routes and takes the published
//! ports), `--mac-address` (what a peer's neighbour table sees, what the datapath lets
//! out), the interface name and per-interface sysctls as endpoint driver options,
//! `--sysctl`; through netd's CLI, the stock docker CLI and docker-py. Run as root
//! (cargo xtask test does).
use netd_tests::{docker_py, ok, Lab, CLIENT_IP, HOST_IP};

/// The namespace of container `name`.
fn ns(lab: &Lab, name: &str) -> String {
    format!("{}{name}", lab.container_prefix())
}

/// What a command inside container `name`'s namespace printed (it must succeed).
fn inside(lab: &Lab, name: &str, args: &[&str]) -> String {
    ok(&lab.exec_in(&ns(lab, name), args), &args.join(" "))
}

/// The IPv4 default route inside container `name`: (gateway, interface).
fn default_route(lab: &Lab, name: &str) -> (String, String) {
    let out = inside(lab, name, &["ip", "-4", "route", "show", "default"]);
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(out.lines().count(), 1, "one default route: {out}");
    let after = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .map(|i| w[i + 1].to_string())
            .unwrap_or_default()
    };
    (after("via"), after("dev"))
}

/// `netd ARGS` must fail with one line on stderr containing every one of `words`, and
/// leave no container named `name`.
fn refused(lab: &Lab, args: &[&str], words: &[&str], name: &str) {
    let o = lab.netd(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} was accepted");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
    }
    assert!(
        !lab.netd(&["inspect", name]).status.success(),
        "{name} exists"
    );
}

fn networks(lab: &Lab) {
    for (name, subnet) in [
        ("zeta", "10.81.2.0/24"),
        ("alpha", "10.81.1.0/24"),
        ("mid", "10.81.3.0/24"),
    ] {
        lab.netd_ok(&["network", "create", "--subnet", subnet, name]);
    }
}

#[test]
fn several_networks_default_routes_by_gw_priority_and_ports_follow() {
    let mut lab = Lab::new();
    networks(&lab);
    // Given in this order, the container joins each (eth0, eth1); with equal
    // priorities Docker 28 takes the default route from the network named first.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "--network",
        "name=zeta,alias=z1,ip=10.81.2.9",
        "--network",
        "alpha",
        "--",
        "sleep",
        "600",
    ]);
    let addrs = inside(&lab, "two", &["ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("eth0    inet 10.81.2.9/24"), "{addrs}");
    assert!(addrs.contains("eth1    inet 10.81.1.2/24"), "{addrs}");
    assert_eq!(
        default_route(&lab, "two"),
        ("10.81.1.1".into(), "eth1".into())
    );
    let v = lab.inspect("two");
    assert_eq!(v["HostConfig"]["NetworkMode"], "zeta");
    assert_eq!(v["NetworkSettings"]["Networks"]["zeta"]["Aliases"][0], "z1");
    // gw-priority wins over the name.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "prio",
        "--network",
        "name=zeta,gw-priority=10",
        "--network",
        "alpha",
        "--",
        "sleep",
        "600",
    ]);
    assert_eq!(
        default_route(&lab, "prio"),
        ("10.81.2.1".into(), "eth0".into())
    );
    assert_eq!(
        lab.inspect("prio")["NetworkSettings"]["Networks"]["zeta"]["GwPriority"],
        10
    );

    // A published port follows the gateway endpoint: replies leave through it.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "zeta",
        "-p",
        "8080:80",
        "--",
        netd_tests::tester_bin().to_str().unwrap(),
        "serve-tcp",
        "80",
    ]);
    lab.wait_listening(&ns(&lab, "web"), &["serve-tcp", "80"]);
    let reach = |lab: &Lab| lab.from_client(&["tcp", &format!("{HOST_IP}:8080")]);
    reach(&lab).expect("published through zeta");
    lab.netd_ok(&["network", "connect", "--gw-priority", "5", "alpha", "web"]);
    assert_eq!(
        default_route(&lab, "web"),
        ("10.81.1.1".into(), "eth1".into())
    );
    let got = reach(&lab).expect("published through alpha after the connect");
    assert!(got.contains(CLIENT_IP), "{got}");
    // A lower priority takes nothing over.
    lab.netd_ok(&["network", "connect", "--gw-priority", "1", "mid", "web"]);
    assert_eq!(
        default_route(&lab, "web"),
        ("10.81.1.1".into(), "eth1".into())
    );
    // The gateway endpoint leaves: the next one gives the route and takes the ports.
    lab.netd_ok(&["network", "disconnect", "alpha", "web"]);
    assert_eq!(
        default_route(&lab, "web"),
        ("10.81.3.1".into(), "eth2".into())
    );
    reach(&lab).expect("published through mid after the disconnect");
    lab.serve_in_client(&["serve-tcp", "7000"]);
    let out = lab
        .from_container("web", &["tcp", &format!("{CLIENT_IP}:7000")])
        .expect("out through mid");
    assert!(out.contains(HOST_IP), "masqueraded: {out}");

    // Bad values: one line naming the option, nothing made.
    fn run(net: &str) -> Vec<&str> {
        vec![
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            net,
            "--network",
            "alpha",
        ]
    }
    let mut a = run("name=zeta,gw-priority=high");
    refused(&lab, &a, &["gw-priority", "integer"], "bad");
    a = run("name=zeta,colour=red");
    refused(&lab, &a, &["colour", "gw-priority"], "bad");
    a = run("alpha");
    refused(&lab, &a, &["alpha", "specified multiple times"], "bad");
    a = vec![
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "host",
        "--network",
        "alpha",
    ];
    refused(&lab, &a, &["host", "cannot be combined"], "bad");
    a = run("name=zeta,ip=10.81.2.9");
    a.extend(["--ip", "10.81.2.10"]);
    refused(&lab, &a, &["--ip", "per-network"], "bad");
}

#[test]
fn mac_address_is_what_peers_see_and_what_the_datapath_lets_out() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.82.0.0/24", "n1"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "--mac-address",
        "92:d0:c6:0a:29:33",
        "--",
        "sleep",
        "600",
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "name=n1,mac-address=92-D0-C6-0A-29-44",
        "--",
        "sleep",
        "600",
    ]);
    let link = inside(&lab, "a", &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 92:d0:c6:0a:29:33"), "{link}");
    // a's packets pass the anti-spoofing check with its own MAC, and b's neighbour
    // table learns that MAC.
    let ping = lab.netd(&["exec", "a", "ping", "-c", "1", "-W", "2", "10.82.0.3"]);
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let neigh = inside(&lab, "b", &["ip", "neigh", "show", "10.82.0.2"]);
    assert!(neigh.contains("lladdr 92:d0:c6:0a:29:33"), "{neigh}");
    let neigh = inside(&lab, "a", &["ip", "neigh", "show", "10.82.0.3"]);
    assert!(neigh.contains("lladdr 92:d0:c6:0a:29:44"), "{neigh}");
    assert_eq!(
        lab.inspect("a")["NetworkSettings"]["Networks"]["n1"]["MacAddress"],
        "92:d0:c6:0a:29:33"
    );
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "n1",
        "--mac-address",
    ];
    for (mac, why) in [
        ("01:00:5e:00:00:01", "multicast"),
        ("92:d0:c6:0a:29", "not a MAC address"),
        ("92:d0:c6:0a:29:33", "has it on network n1"),
    ] {
        args.push(mac);
        refused(&lab, &args, &["--mac-address", why], "bad");
        args.pop();
    }
    refused(
        &lab,
        &[
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            "none",
            "--mac-address",
            "92:d0:c6:0a:29:55",
        ],
        &["--mac-address", "bridge network"],
        "bad",
    );
    // docker-py's container-wide MacAddress (API < 1.44's field) and network connect.
    lab.netd_ok(&["network", "create", "--subnet", "10.82.1.0/24", "n2"]);
    docker_py(
        &lab,
        "c.networks.get('n2').connect('b', driver_opt={'com.docker.network.endpoint.ifname': 'side'})",
    );
    let link = inside(&lab, "b", &["ip", "-o", "-4", "addr", "show", "side"]);
    assert!(link.contains("10.82.1.2/24"), "{link}");
}

#[test]
fn interface_names_and_sysctls_from_endpoint_driver_options() {
    let mut lab = Lab::new();
    networks(&lab);
    let sysctls = "driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.arp_ignore=2";
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "name=zeta,driver-opt=com.docker.network.endpoint.ifname=backend",
        "--network",
        &format!("name=alpha,\"{sysctls}\""),
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=99",
        "--",
        "sleep",
        "600",
    ]);
    let addrs = inside(&lab, "c", &["ip", "-o", "-4", "addr"]);
    assert!(addrs.contains("backend    inet 10.81.2.2/24"), "{addrs}");
    assert!(addrs.contains("eth0    inet 10.81.1.2/24"), "{addrs}");
    let read = |lab: &Lab, k: &str| {
        inside(lab, "c", &["cat", &format!("/proc/sys/{k}")])
            .trim()
            .to_string()
    };
    assert_eq!(read(&lab, "net/ipv4/conf/eth0/log_martians"), "1");
    assert_eq!(read(&lab, "net/ipv4/conf/eth0/arp_ignore"), "2");
    assert_eq!(read(&lab, "net/ipv4/conf/backend/log_martians"), "0");
    assert_eq!(read(&lab, "net/ipv4/ip_unprivileged_port_start"), "99");
    // The default route comes through the named interface (alpha sorts first).
    assert_eq!(
        default_route(&lab, "c"),
        ("10.81.1.1".into(), "eth0".into())
    );
    let v = lab.inspect("c");
    assert_eq!(
        v["NetworkSettings"]["Networks"]["zeta"]["DriverOpts"]
            ["com.docker.network.endpoint.ifname"],
        "backend"
    );
    assert_eq!(
        v["HostConfig"]["Sysctls"]["net.ipv4.ip_unprivileged_port_start"],
        "99"
    );
    // The stock docker CLI's network connect with driver options.
    ok(
        &lab.docker(&[
            "network",
            "connect",
            "--driver-opt",
            "com.docker.network.endpoint.ifname=mid0",
            "--driver-opt",
            "com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.forwarding=1",
            "mid",
            "c",
        ]),
        "docker network connect --driver-opt",
    );
    assert_eq!(read(&lab, "net/ipv4/conf/mid0/forwarding"), "1");
    // A default route left elsewhere (as a release that kept it on the first network
    // did) goes back to the gateway endpoint at the next start.
    lab.stop_daemon(libc::SIGTERM);
    ok(
        &lab.exec_in(
            &ns(&lab, "c"),
            &[
                "ip",
                "route",
                "replace",
                "default",
                "via",
                "10.81.2.1",
                "dev",
                "backend",
            ],
        ),
        "moving the default route",
    );
    lab.start_daemon().expect("restarting the daemon");
    assert_eq!(
        default_route(&lab, "c"),
        ("10.81.1.1".into(), "eth0".into())
    );
    // An interface lost while no agent ran comes back at the next start with its name,
    // its sysctls and the default route it gives.
    let veths = lab.inspect("c")["HostVeths"].clone();
    let alpha_veth = veths[1].as_str().expect("alpha's host veth").to_string();
    lab.stop_daemon(libc::SIGTERM);
    ok(
        &lab.exec_in(&lab.host, &["ip", "link", "del", &alpha_veth]),
        "deleting a host veth",
    );
    lab.start_daemon().expect("restarting the daemon");
    assert_eq!(read(&lab, "net/ipv4/conf/eth0/log_martians"), "1");
    assert_eq!(read(&lab, "net/ipv4/conf/eth0/arp_ignore"), "2");
    assert_eq!(
        default_route(&lab, "c"),
        ("10.81.1.1".into(), "eth0".into())
    );

    let run = |net: String| {
        vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            "bad".into(),
            "--network".into(),
            net,
        ]
    };
    for (opt, words) in [
        (
            "driver-opt=com.docker.network.endpoint.colour=red",
            vec!["colour", "com.docker.network.endpoint.ifname"],
        ),
        (
            "driver-opt=com.docker.network.endpoint.ifname=this_is_too_long",
            vec!["ifname", "1-15"],
        ),
        (
            "driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.eth0.forwarding=1",
            vec!["sysctls", "IFNAME"],
        ),
        (
            "driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.nope=1",
            vec!["sysctls", "no such sysctl"],
        ),
    ] {
        let a = run(format!("name=zeta,{opt}"));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        refused(&lab, &a, &words, "bad");
    }
    let base = ["run", "-d", "--name", "bad", "--sysctl"];
    for (s, words) in [
        ("kernel.msgmax=1", vec!["--sysctl", "net.*"]),
        (
            "net.ipv4.conf.eth0.forwarding=1",
            vec!["--sysctl", "com.docker.network.endpoint.sysctls"],
        ),
        (
            "net.ipv6.conf.all.disable_ipv6=0",
            vec!["--sysctl", "--ipv6"],
        ),
    ] {
        let mut a = base.to_vec();
        a.push(s);
        refused(&lab, &a, &words, "bad");
    }
    let dup = [
        "run",
        "-d",
        "--name",
        "bad",
        "--network",
        "name=zeta,driver-opt=com.docker.network.endpoint.ifname=x",
        "--network",
        "name=alpha,driver-opt=com.docker.network.endpoint.ifname=x",
    ];
    refused(&lab, &dup, &["interface name x"], "bad");
}

/// The stock docker CLI's output and errors, as (success, stdout, stderr).
fn docker(lab: &Lab, args: &[&str]) -> (bool, String, String) {
    let o = lab.docker(args);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn docker_run_and_docker_py_with_several_networks_macs_and_driver_options() {
    let lab = Lab::new();
    networks(&lab);
    // docker run as Docker 28's CLI sends it (API 1.48: EndpointsConfig of every
    // network, per-network MAC addresses and GwPriority).
    let (good, _, err) = docker(
        &lab,
        &[
            "run", "-d", "--name", "dr",
            "--network", "name=zeta,gw-priority=3",
            "--network", "name=alpha,mac-address=92:d0:c6:0a:29:66,driver-opt=com.docker.network.endpoint.ifname=front",
            "--sysctl", "net.ipv4.ip_unprivileged_port_start=77",
            "netd", "sleep", "600",
        ],
    );
    assert!(good, "docker run: {err}");
    assert_eq!(
        default_route(&lab, "dr"),
        ("10.81.2.1".into(), "eth0".into())
    );
    let link = inside(&lab, "dr", &["ip", "-o", "link", "show", "front"]);
    assert!(link.contains("link/ether 92:d0:c6:0a:29:66"), "{link}");
    let port_start = inside(
        &lab,
        "dr",
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(port_start.trim(), "77");
    let (_, fmt, _) = docker(
        &lab,
        &["inspect", "-f", "{{.NetworkSettings.Networks.zeta.GwPriority}} {{.NetworkSettings.Networks.alpha.MacAddress}}", "dr"],
    );
    assert_eq!(fmt.trim(), "3 92:d0:c6:0a:29:66");
    // --mac-address alone, and in the foreground: the command's output is docker's.
    let (good, out, err) = docker(
        &lab,
        &[
            "run",
            "--rm",
            "--network",
            "mid",
            "--mac-address",
            "92:d0:c6:0a:29:77",
            "netd",
            "ip",
            "-o",
            "link",
            "show",
            "eth0",
        ],
    );
    assert!(good, "docker run --mac-address: {err}");
    assert!(out.contains("link/ether 92:d0:c6:0a:29:77"), "{out}");
    // Bad values: one error line from netd naming the option.
    let (good, _, err) = docker(
        &lab,
        &[
            "run",
            "-d",
            "--network",
            "mid",
            "--mac-address",
            "01:00:5e:00:00:01",
            "netd",
            "sleep",
            "1",
        ],
    );
    assert!(
        !good && err.contains("--mac-address") && err.contains("multicast"),
        "{err}"
    );
    let (good, _, err) = docker(
        &lab,
        &[
            "run",
            "-d",
            "--network",
            "name=mid,driver-opt=com.docker.network.endpoint.colour=red",
            "netd",
            "sleep",
            "1",
        ],
    );
    assert!(
        !good && err.contains("colour") && err.contains("com.docker.network.endpoint.ifname"),
        "{err}"
    );
    let (good, _, err) = docker(
        &lab,
        &["run", "-d", "--pull", "never", "alpine", "sleep", "1"],
    );
    assert!(!good && err.contains("No such image: alpine"), "{err}");
    let (good, _, err) = docker(&lab, &["run", "-d", "-e", "A=1", "netd", "sleep", "1"]);
    assert!(!good && err.contains("Config.Env"), "{err}");

    // docker-py: the container-wide mac_address (the field of API < 1.44) goes to the
    // first network, as dockerd moves it.
    docker_py(
        &lab,
        "c.containers.run('netd', 'sleep 600', detach=True, name='py', network='zeta', mac_address='92:d0:c6:0a:29:88')",
    );
    let link = inside(&lab, "py", &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 92:d0:c6:0a:29:88"), "{link}");
}
