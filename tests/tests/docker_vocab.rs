//! The rest of Docker's vocabulary through netd's socket, as the stock docker CLI and
//! docker-py use it: events (history, filters, live), restart, prune, the /info and
//! inspect keys SDKs read, Docker's statuses and messages, IPAM options, link-local
//! addresses. Run as root (cargo xtask test does).
use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use netd_tests::{docker_py, http, json, ok, Lab};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(String::from).collect()
}

/// `docker events --since SINCE --until UNTIL --format FMT [ARGS]`.
fn events(lab: &Lab, since: f64, until: f64, fmt: &str, args: &[&str]) -> Vec<String> {
    let (s, u) = (format!("{since}"), format!("{until}"));
    let mut full = vec!["events", "--since", &s, "--until", &u, "--format", fmt];
    full.extend_from_slice(args);
    lines(&ok(&lab.docker(&full), "docker events"))
}

#[test]
fn events_replay_history_stream_live_and_filter_as_docker() {
    let lab = Lab::new();
    let t0 = now() - 0.5;
    lab.netd_ok(&["network", "create", "--subnet", "10.93.0.0/24", "n1"]);
    lab.netd_ok(&[
        "run", "-d", "--name", "web", "--label", "team=a", "--", "sleep", "600",
    ]);
    lab.netd_ok(&["network", "connect", "n1", "web"]);
    lab.netd_ok(&["network", "disconnect", "bridge", "web"]);
    ok(&lab.docker(&["stop", "-t", "1", "web"]), "docker stop");
    lab.netd_ok(&["rm", "web"]);
    lab.netd_ok(&["network", "rm", "n1"]);
    let t1 = now() + 0.5;
    let fmt = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}";
    assert_eq!(
        events(&lab, t0, t1, fmt, &[]),
        [
            "network create n1",
            "container create web",
            "network connect bridge",
            "container start web",
            "network connect n1",
            "network disconnect bridge",
            "container kill web",
            "container die web",
            "container stop web",
            "network disconnect n1",
            "container destroy web",
            "network destroy n1",
        ]
    );
    // Docker's filters: type and event exactly, a container by name, labels.
    let f = &["--filter", "type=network", "--filter", "event=connect"];
    assert_eq!(
        events(&lab, t0, t1, fmt, f),
        ["network connect bridge", "network connect n1"]
    );
    let f = &["--filter", "container=web", "--filter", "event=die"];
    let die = events(&lab, t0, t1, "{{.Actor.Attributes.exitCode}}", f);
    assert_eq!(die, ["143"], "SIGTERM's exit status");
    let f = &["--filter", "label=team=a", "--filter", "event=create"];
    assert_eq!(events(&lab, t0, t1, fmt, f), ["container create web"]);
    // A window that ended before the first event: nothing, at once.
    assert!(events(&lab, t0 - 10.0, t0, fmt, &[]).is_empty());
    // docker-py reads the same stream.
    let py = docker_py(
        &lab,
        &format!(
            "print(json.dumps([e['Action'] for e in c.events(since={t0}, until={t1}, decode=True, filters={{'type': 'network'}})]))"
        ),
    );
    assert_eq!(
        json(py.trim()),
        serde_json::json!([
            "create",
            "connect",
            "connect",
            "disconnect",
            "disconnect",
            "destroy"
        ])
    );

    // Live: a reader started before the container sees it come and go.
    let until = format!("{}", now() + 4.0);
    let mut reader = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", lab.socket().display()))
        .args(["events", "--until", &until, "--filter", "type=container"])
        .args(["--format", "{{.Action}} {{.Actor.Attributes.name}}"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let listening = || {
        let (_, info) = http(&lab, "GET", "/info", None);
        info["NEventsListener"].as_u64().unwrap_or(0) >= 1
    };
    let t = std::time::Instant::now();
    while !listening() {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the reader never subscribed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    lab.netd_ok(&["run", "-d", "--name", "live", "--", "sleep", "0.2"]);
    let mut out = String::new();
    reader
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        reader.wait().unwrap().success(),
        "the stream ends at --until"
    );
    assert_eq!(lines(&out), ["create live", "start live", "die live"]);
}

#[test]
fn restart_and_prune_through_the_docker_cli_and_docker_py() {
    let lab = Lab::new();
    lab.netd_ok(&["run", "-d", "--name", "web", "--", "sleep", "600"]);
    let before = lab.inspect("web");
    std::thread::sleep(Duration::from_millis(1100));
    ok(
        &lab.docker(&["restart", "-t", "1", "web"]),
        "docker restart",
    );
    let after = lab.inspect("web");
    assert_eq!(after["State"]["Status"], "running");
    assert_ne!(
        after["State"]["Pid"], before["State"]["Pid"],
        "a new process"
    );
    assert_ne!(after["State"]["StartedAt"], before["State"]["StartedAt"]);
    // netd's own restart.
    let pid = lab.inspect("web")["State"]["Pid"].clone();
    assert_eq!(lab.netd_ok(&["restart", "-t", "1", "web"]).trim(), "web");
    assert_ne!(lab.inspect("web")["State"]["Pid"], pid);
    // docker-py's restart of a stopped container starts it.
    lab.netd_ok(&["stop", "-t", "0", "web"]);
    docker_py(&lab, "c.api.restart('web', timeout=1)");
    assert_eq!(lab.inspect("web")["State"]["Status"], "running");

    lab.netd_ok(&["create", "--name", "idle"]);
    lab.netd_ok(&["run", "-d", "--name", "done", "--", "true"]);
    lab.netd_ok(&[
        "run", "-d", "--name", "kept", "--label", "keep=1", "--", "true",
    ]);
    lab.netd_ok(&["network", "create", "unused"]);
    lab.netd_ok(&["network", "create", "--label", "keep=1", "unused-kept"]);
    std::thread::sleep(Duration::from_millis(500));
    let pruned = ok(
        &lab.docker(&["container", "prune", "-f", "--filter", "label!=keep"]),
        "docker container prune",
    );
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    let names = |args: &[&str]| {
        let mut full = vec!["ps", "-a", "--format", "{{.Names}}"];
        full.extend_from_slice(args);
        let mut v = lines(&ok(&lab.docker(&full), "docker ps"));
        v.sort();
        v
    };
    assert_eq!(
        names(&[]),
        ["kept", "web"],
        "stopped ones went, but the labelled"
    );
    // `system prune`: its network part removes unused networks (a filter applies to
    // both parts); netd has no images or build cache to prune.
    let out = ok(
        &lab.docker(&["system", "prune", "-f", "--filter", "label!=keep"]),
        "docker system prune",
    );
    assert!(out.contains("Deleted Networks:\nunused\n"), "{out}");
    let nets = lines(&ok(
        &lab.docker(&["network", "ls", "--format", "{{.Name}}"]),
        "network ls",
    ));
    assert!(nets.contains(&"unused-kept".to_string()) && !nets.contains(&"unused".to_string()));
    // docker-py's prunes.
    let py = docker_py(
        &lab,
        "print(json.dumps([c.containers.prune(), c.networks.prune()]))",
    );
    let v = json(py.trim());
    assert_eq!(
        v[0]["ContainersDeleted"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert_eq!(v[1]["NetworksDeleted"], serde_json::json!(["unused-kept"]));
    assert_eq!(names(&[]), ["web"]);
    // A prune filter netd does not know is refused, not ignored.
    let o = lab.docker(&["container", "prune", "-f", "--filter", "name=web"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid filter 'name'"),
        "{o:?}"
    );
}

#[test]
fn info_and_inspect_have_the_keys_sdks_read() {
    let lab = Lab::new();
    let info = json(docker_py(&lab, "print(json.dumps(c.info()))").trim());
    assert_eq!(info["DefaultRuntime"], "netd");
    assert!(
        info["Runtimes"]["netd"]["path"]
            .as_str()
            .unwrap()
            .ends_with("netd"),
        "{info}"
    );
    assert_eq!(info["IndexServerAddress"], "");
    assert_eq!(
        info["RegistryConfig"]["IndexConfigs"],
        serde_json::json!({})
    );
    assert_eq!(info["RegistryConfig"]["Mirrors"], serde_json::json!([]));
    assert_eq!(info["DefaultAddressPools"][0]["Base"], "172.17.0.0/16");
    assert_eq!(info["ContainerdCommit"]["ID"], "");
    assert_eq!(info["MemoryLimit"], false);
    for key in [
        "BridgeNfIptables",
        "OSVersion",
        "NEventsListener",
        "HttpProxy",
        "NoProxy",
        "Isolation",
        "InitBinary",
        "SecurityOptions",
        "CDISpecDirs",
        "GenericResources",
        "KernelMemoryTCP",
        "PidsLimit",
        "OomKillDisable",
        "ProductLicense",
    ] {
        assert!(info.get(key).is_some(), "/info lacks {key}: {info}");
    }

    lab.netd_ok(&[
        "run", "-d", "--name", "db", "--expose", "5432", "--", "sleep", "600",
    ]);
    lab.netd_ok(&[
        "run", "-d", "--name", "app", "--link", "db:pg", "--", "sleep", "600",
    ]);
    let py = docker_py(&lab, "print(json.dumps(c.api.inspect_container('app')))");
    let c = json(py.trim());
    assert_eq!(c["Mounts"], serde_json::json!([]));
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "no");
    assert_eq!(c["HostConfig"]["LogConfig"]["Type"], "json-file");
    let env: Vec<&str> = c["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"PG_NAME=/app/pg"), "{env:?}");
    assert!(
        env.iter().any(|e| e.starts_with("PG_PORT_5432_TCP_ADDR=")),
        "{env:?}"
    );
    assert_eq!(c["Config"]["User"], "");
    assert_eq!(c["Config"]["Tty"], false);
    assert_eq!(c["Config"]["OpenStdin"], false);
    assert_eq!(c["Config"]["WorkingDir"], "");
    assert_eq!(c["Config"]["Entrypoint"], serde_json::Value::Null);
    let ns = &c["NetworkSettings"];
    assert_eq!(ns["HairpinMode"], false);
    assert_eq!(ns["LinkLocalIPv6Address"], "");
    assert_eq!(ns["LinkLocalIPv6PrefixLen"], 0);
    assert_eq!(ns["SecondaryIPAddresses"], serde_json::Value::Null);
    assert_eq!(ns["SecondaryIPv6Addresses"], serde_json::Value::Null);
    let resolv = c["ResolvConfPath"].as_str().unwrap();
    assert!(std::path::Path::new(resolv).exists(), "{resolv}");
    let hosts = std::fs::read_to_string(c["HostsPath"].as_str().unwrap()).unwrap();
    assert!(
        hosts.split_whitespace().any(|w| w == "pg"),
        "the --link alias: {hosts}"
    );

    // The default bridge's options, as dockerd shows its own.
    let o = ok(
        &lab.docker(&["network", "inspect", "-f", "{{json .Options}}", "bridge"]),
        "network inspect bridge",
    );
    let o = json(o.trim());
    assert_eq!(o["com.docker.network.bridge.default_bridge"], "true");
    assert_eq!(o["com.docker.network.bridge.enable_ip_masquerade"], "true");
    assert_eq!(o["com.docker.network.bridge.enable_icc"], "true");
    assert_eq!(o["com.docker.network.bridge.host_binding_ipv4"], "0.0.0.0");
    assert_eq!(o["com.docker.network.driver.mtu"], "1500");
    assert!(o["com.docker.network.bridge.name"].is_string());
}

#[test]
fn docker_statuses_messages_scope_and_network_mode() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.94.0.0/24", "n1"]);
    lab.netd_ok(&["network", "create", "--subnet", "10.94.1.0/24", "n2"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "n1",
        "--",
        "sleep",
        "600",
    ]);
    // A second connect is Docker's 403, with its message.
    let body = r#"{"Container":"c"}"#;
    let (code, v) = http(&lab, "POST", "/networks/n1/connect", Some(body));
    assert_eq!(code, 403, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("endpoint with name c already exists in network n1"),
        "{v}"
    );
    // NetworkMode is what the container was created with, whatever came after.
    lab.netd_ok(&["network", "connect", "n2", "c"]);
    lab.netd_ok(&["network", "disconnect", "n1", "c"]);
    lab.netd_ok(&["network", "connect", "n1", "c"]);
    let mode = |c: &str| {
        ok(
            &lab.docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", c]),
            "inspect",
        )
        .trim()
        .to_string()
    };
    assert_eq!(mode("c"), "n1");
    lab.netd_ok(&["run", "-d", "--name", "b", "--", "sleep", "600"]);
    lab.netd_ok(&["network", "connect", "n2", "b"]);
    lab.netd_ok(&["network", "disconnect", "bridge", "b"]);
    assert_eq!(mode("b"), "bridge");
    // Scope: swarm and a mismatched one are refused, not quietly made local.
    for (args, want) in [
        (vec!["--scope", "swarm", "s1"], "invalid --scope swarm"),
        (vec!["--scope", "global", "s2"], "invalid --scope global"),
        (vec!["--scope", "world", "s3"], "local or global"),
    ] {
        let mut full = vec!["network", "create"];
        full.extend(args);
        for o in [lab.docker(&full), lab.netd(&full)] {
            assert!(!o.status.success(), "{full:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(want) && err.trim().lines().count() == 1,
                "{full:?}: {err}"
            );
        }
    }
    ok(
        &lab.docker(&["network", "create", "--scope", "local", "s4"]),
        "scope local",
    );
    // Docker's words, which scripts grep for.
    for o in [
        lab.docker(&["rm", "nosuch"]),
        lab.docker(&["restart", "nosuch"]),
        lab.netd(&["stop", "nosuch"]),
    ] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("No such container: nosuch"), "{err}");
    }
    // `network list` is Docker's alias of `ls`.
    let listed = lab.netd_ok(&["network", "list", "--format", "{{.Name}}"]);
    assert!(listed.lines().any(|l| l == "s4"), "{listed}");
}

#[test]
fn ports_on_both_families_show_their_ipv6_rows() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.97.0.0/24",
        "--subnet",
        "fd00:97::/64",
        "v6",
    ]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "both",
        "--network",
        "v6",
        "-p",
        "8080:80",
        "--",
        "sleep",
        "600",
    ]);
    let ps = lab.netd_ok(&["ps"]);
    assert!(
        ps.contains("0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"),
        "netd ps, as Docker 27+ prints it:\n{ps}"
    );
    let ps = ok(&lab.docker(&["ps", "--format", "{{.Ports}}"]), "docker ps");
    assert!(ps.contains("[::]:8080->80/tcp"), "{ps}");
    let port = ok(&lab.docker(&["port", "both"]), "docker port");
    assert_eq!(
        lines(&port),
        ["80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]
    );
}

#[test]
fn ipam_driver_and_options_are_dockers_default_ones() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "default",
        "--ipam-opt",
        "com.docker.network.ipam.serial=true",
        "--subnet",
        "10.95.0.0/24",
        "serial",
    ]);
    lab.netd_ok(&[
        "network",
        "create",
        "--ipam-driver",
        "default",
        "--subnet",
        "10.95.1.0/24",
        "plain",
    ]);
    let ipam = json(
        ok(
            &lab.docker(&["network", "inspect", "-f", "{{json .IPAM}}", "serial"]),
            "inspect",
        )
        .trim(),
    );
    assert_eq!(ipam["Driver"], "default");
    assert_eq!(ipam["Options"]["com.docker.network.ipam.serial"], "true");
    // Serial: an address given back is not handed out again at once.
    for net in ["serial", "plain"] {
        for n in ["a", "b"] {
            let name = format!("{net}-{n}");
            lab.netd_ok(&["create", "--name", &name, "--network", net]);
        }
        lab.netd_ok(&["rm", &format!("{net}-a")]);
        lab.netd_ok(&["create", "--name", &format!("{net}-c"), "--network", net]);
    }
    let ip = |c: &str| {
        let v = lab.inspect(c);
        v["NetworkSettings"]["Networks"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(ip("serial-c"), "10.95.0.4");
    assert_eq!(
        ip("plain-c"),
        "10.95.1.2",
        "the lowest free without the option"
    );
    // Bad values: one line naming the option and what it takes.
    for (args, want) in [
        (
            vec!["--ipam-opt", "com.docker.network.ipam.serial=maybe"],
            "use true or false",
        ),
        (vec!["--ipam-driver", "dhcp"], "--ipam-driver \"dhcp\""),
    ] {
        let mut full = vec!["network", "create"];
        full.extend(args);
        full.push("bad");
        for o in [lab.docker(&full), lab.netd(&full)] {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success() && err.contains(want), "{full:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
    // An option the default driver does not use: kept and shown, as Docker does, and
    // not in silence: the create's warning names it.
    let o = lab.netd(&["network", "create", "--ipam-opt", "foo=bar", "x"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(
        err.starts_with("WARNING: ")
            && err.contains("--ipam-opt foo")
            && err.contains("com.docker.network.ipam.serial=true|false"),
        "{err}"
    );
    let v = json(&lab.netd_ok(&["network", "inspect", "x"]));
    assert_eq!(v[0]["IPAM"]["Options"]["foo"], "bar", "{v}");
}

#[test]
fn link_local_ips_are_the_containers_own_addresses() {
    let lab = Lab::new();
    lab.netd_ok(&["network", "create", "--subnet", "10.96.0.0/24", "ll"]);
    lab.netd_ok(&["network", "create", "--subnet", "10.96.1.0/24", "other"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "ll",
        "--link-local-ip",
        "169.254.10.11",
        "--",
        "sleep",
        "600",
    ]);
    lab.netd_ok(&["run", "-d", "--name", "b", "--", "sleep", "600"]);
    lab.netd_ok(&[
        "network",
        "connect",
        "--link-local-ip",
        "169.254.10.10",
        "ll",
        "b",
    ]);
    let ns = |c: &str| format!("{}{c}", lab.container_prefix());
    let addrs = lab.exec_in(&ns("b"), &["ip", "-4", "-o", "addr", "show", "eth1"]);
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    assert!(addrs.contains("169.254.10.10/16"), "{addrs}");
    // The datapath knows them as the container's: they talk over them.
    let o = lab.exec_in(&ns("a"), &["ping", "-c", "1", "-W", "2", "169.254.10.10"]);
    assert!(o.status.success(), "ping over link-local: {o:?}");
    // The docker CLI's connect, and inspect's LinkLocalIPs.
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "other",
        "--",
        "sleep",
        "600",
    ]);
    ok(
        &lab.docker(&[
            "network",
            "connect",
            "--link-local-ip",
            "169.254.10.12",
            "ll",
            "c",
        ]),
        "docker network connect --link-local-ip",
    );
    let got = ok(
        &lab.docker(&[
            "inspect",
            "-f",
            "{{json (index .NetworkSettings.Networks \"ll\").IPAMConfig.LinkLocalIPs}}",
            "c",
        ]),
        "inspect",
    );
    assert_eq!(got.trim(), r#"["169.254.10.12"]"#);
    let o = lab.exec_in(&ns("c"), &["ping", "-c", "1", "-W", "2", "169.254.10.11"]);
    assert!(o.status.success(), "ping over link-local: {o:?}");
    for (args, want) in [
        (
            vec!["--link-local-ip", "10.1.1.1", "ll", "x"],
            "invalid --link-local-ip 10.1.1.1: not a link-local address",
        ),
        (
            vec!["--link-local-ip", "169.254.10.10", "ll", "x"],
            "169.254.10.10 is already used by container b",
        ),
        (
            vec!["--link-local-ip", "fe80::5", "ll", "x"],
            "network ll has no IPv6",
        ),
    ] {
        lab.netd_ok(&["create", "--name", "x", "--network", "other"]);
        let mut full = vec!["network", "connect"];
        full.extend(args);
        let o = lab.netd(&full);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{full:?}: {err}");
        lab.netd_ok(&["rm", "-f", "x"]);
    }
}
