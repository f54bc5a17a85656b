//! The Docker Engine API as the stock `docker` CLI and SDKs use it: filters that are
//! honoured or refused (never ignored), /info, /events, /system/df, inspect's fields,
//! Docker's statuses and JSON error bodies. Run as root (cargo xtask test does).
use netd_tests::{http, Lab};

fn ok(o: &std::process::Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn container_filters_are_honoured_or_refused_never_ignored() {
    let lab = Lab::new();
    for (n, extra) in [
        ("c1", vec!["--label", "team=blue", "--label", "tier=db"]),
        ("c2", vec!["--label", "team=blue", "-p", "8082:80"]),
        ("c3", vec!["--expose", "53/udp"]),
    ] {
        let mut args = vec!["run", "-d", "--name", n];
        args.extend(extra);
        args.extend(["--", "sleep", "600"]);
        lab.netd_ok(&args);
    }
    lab.netd_ok(&["network", "create", "--subnet", "10.61.0.0/24", "other"]);
    lab.netd_ok(&["network", "connect", "other", "c2"]);
    lab.netd_ok(&["stop", "-t", "0", "c1"]);
    let id3 = lab.inspect("c3")["Id"].as_str().unwrap()[..12].to_string();
    // The line that removed everything when filters were ignored.
    let q = ok(
        &lab.docker(&["ps", "-aq", "--filter", "name=c3"]),
        "ps name",
    );
    assert_eq!(q.trim(), id3);
    let q = ok(
        &lab.docker(&["ps", "-q", "--filter", "network=other"]),
        "ps network",
    );
    assert_eq!(q.trim().lines().count(), 1, "{q}");
    let q = ok(
        &lab.docker(&["ps", "-aq", "--filter", "status=exited"]),
        "ps status",
    );
    assert_eq!(q.trim().lines().count(), 1, "{q}");
    let q = ok(
        &lab.docker(&["ps", "-q", "--filter", &format!("id={id3}")]),
        "ps id",
    );
    assert_eq!(q.trim(), id3);
    let q = ok(&lab.docker(&["ps", "-q"]), "ps");
    assert_eq!(q.trim().lines().count(), 2, "running only: {q}");
    // Newest first, limit and latest.
    let names = ok(&lab.docker(&["ps", "-a", "--format", "{{.Names}}"]), "ps");
    assert_eq!(names.trim().lines().collect::<Vec<_>>(), ["c3", "c2", "c1"]);
    let q = ok(&lab.docker(&["ps", "-q", "--last", "2"]), "ps --last");
    assert_eq!(q.trim().lines().count(), 2, "{q}");
    let q = ok(&lab.docker(&["ps", "-lq"]), "ps -l");
    assert_eq!(q.trim(), id3);
    // Docker's status column.
    let st = ok(
        &lab.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]),
        "ps",
    );
    assert!(st.contains("c3 Up "), "{st}");
    assert!(st.contains("c1 Exited (") && st.contains(" ago"), "{st}");
    // Docker's other filters: names and ids are regular expressions, every label
    // must match, before/since by container, publish/expose by port.
    let ps = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        ok(&lab.docker(&args), "docker ps --filter")
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ps(&["name=c[12]"]), ["c2", "c1"]);
    assert_eq!(ps(&["name=^/c2$"]), ["c2"]);
    assert_eq!(ps(&["label=team=blue"]), ["c2", "c1"]);
    assert_eq!(ps(&["label=team=blue", "label=tier"]), ["c1"]);
    assert_eq!(ps(&["before=c3"]), ["c2", "c1"]);
    assert_eq!(ps(&["since=c1"]), ["c3", "c2"]);
    assert_eq!(ps(&["publish=80/tcp"]), ["c2"]);
    assert_eq!(ps(&["expose=53/udp"]), ["c3"]);
    assert_eq!(ps(&["expose=80"]), ["c2"]);
    // netd's own ps takes the same filters and docker's -n/-l.
    let netd_ps = |args: &[&str]| {
        let mut full = vec!["ps", "--format", "json"];
        full.extend(args);
        let v: serde_json::Value = serde_json::from_str(&lab.netd_ok(&full)).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["Names"][0]
                    .as_str()
                    .unwrap()
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        netd_ps(&[
            "-a",
            "--filter",
            "label=team=blue",
            "--filter",
            "label=tier=db"
        ]),
        ["c1"]
    );
    assert_eq!(netd_ps(&["-a", "--filter", "name=c[13]"]), ["c3", "c1"]);
    assert_eq!(netd_ps(&["-n", "2"]), ["c3", "c2"]);
    assert_eq!(netd_ps(&["-l"]), ["c3"]);
    // A filter netd does not know is a 400 naming it; one it knows of but cannot
    // honour says so.
    let o = lab.docker(&["ps", "-q", "--filter", "ancestor=busybox"]);
    assert!(!o.status.success(), "an unknown filter was ignored: {o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("filter 'ancestor' is not supported by netd: netd runs no images"),
        "{o:?}"
    );
    let o = lab.netd(&["ps", "--filter", "bogus=1"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid filter 'bogus'"),
        "{o:?}"
    );
    let (code, v) = http(
        &lab,
        "GET",
        "/containers/json?filters=%7B%22volume%22%3A%5B%22x%22%5D%7D",
        None,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("volume"),
        "{v}"
    );
}

/// Containers made within the same second still list newest first: the order is the
/// order of creation, not a timestamp's.
#[test]
fn ps_lists_newest_first_even_within_one_second() {
    let lab = Lab::new();
    let made: Vec<String> = (0..6)
        .map(|i| {
            let id = lab.netd_ok(&["create", "--name", &format!("n{i}")]);
            id.trim()[..12].to_string()
        })
        .collect();
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    let listed = ok(&lab.docker(&["ps", "-aq"]), "docker ps -aq");
    assert_eq!(listed.lines().collect::<Vec<_>>(), newest_first);
    let listed = lab.netd_ok(&["ps", "-aq"]);
    assert_eq!(listed.lines().collect::<Vec<_>>(), newest_first);
    let last2 = ok(&lab.docker(&["ps", "-q", "-n", "2"]), "docker ps -n 2");
    assert_eq!(last2.lines().collect::<Vec<_>>(), newest_first[..2]);
}

#[test]
fn networks_dangling_attachable_and_docker_statuses() {
    let lab = Lab::new();
    lab.netd_ok(&[
        "network",
        "create",
        "--attachable",
        "--label",
        "a=1",
        "--label",
        "b=2",
        "empty",
    ]);
    lab.netd_ok(&["network", "create", "--label", "a=1", "busy"]);
    // Every label filter must match (docker's MatchKVList), from docker and from netd.
    for cli in ["docker", "netd"] {
        let args = [
            "network",
            "ls",
            "--filter",
            "label=a=1",
            "--filter",
            "label=b=2",
            "--format",
            "{{.Name}}",
        ];
        let o = if cli == "docker" {
            lab.docker(&args)
        } else {
            lab.netd(&args)
        };
        assert_eq!(ok(&o, cli).trim(), "empty", "{cli}");
    }
    let o = lab.docker(&[
        "network",
        "ls",
        "--filter",
        "name=^(bu|em)",
        "--format",
        "{{.Name}}",
    ]);
    let mut listed: Vec<String> = ok(&o, "ls name").lines().map(String::from).collect();
    listed.sort();
    assert_eq!(
        listed,
        ["busy", "empty"],
        "network names are regular expressions too"
    );
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "busy",
        "--",
        "sleep",
        "600",
    ]);
    let d = ok(
        &lab.docker(&[
            "network",
            "ls",
            "--filter",
            "dangling=true",
            "--format",
            "{{.Name}}",
        ]),
        "dangling",
    );
    assert_eq!(d.trim(), "empty", "only unused user networks are dangling");
    let a = ok(
        &lab.docker(&["network", "inspect", "-f", "{{.Attachable}}", "empty"]),
        "inspect",
    );
    assert_eq!(a.trim(), "true");
    // Docker's 403s, with JSON bodies.
    let (code, v) = http(&lab, "DELETE", "/networks/bridge", None);
    assert_eq!(code, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("pre-defined"),
        "{v}"
    );
    let (code, v) = http(&lab, "DELETE", "/networks/busy", None);
    assert_eq!(code, 403, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("active endpoints"),
        "{v}"
    );
    // Malformed and mistyped bodies, unknown paths: JSON messages too.
    let (code, v) = http(&lab, "POST", "/networks/create", Some("{bad"));
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("malformed JSON"),
        "{v}"
    );
    let (code, v) = http(&lab, "POST", "/networks/create", Some(r#"{"Name": 5}"#));
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].is_string(), "{v}");
    let (code, v) = http(&lab, "GET", "/no/such/thing", None);
    assert_eq!(code, 404, "{v}");
    assert!(v["message"].is_string(), "{v}");
    // Rejections the router itself makes (a path that is not UTF-8) are JSON too.
    let (code, v) = http(&lab, "GET", "/v1.41/containers/%FF/json", None);
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("UTF-8"), "{v}");
    // Docker's booleans: anything but 0/false/no/none is true.
    lab.netd_ok(&["create", "--name", "idle"]);
    for (all, n) in [("yes", 2), ("1", 2), ("no", 1), ("false", 1)] {
        let (code, v) = http(&lab, "GET", &format!("/containers/json?all={all}"), None);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v.as_array().unwrap().len(), n, "all={all}: {v}");
    }
}

#[test]
fn info_events_df_and_inspect_as_docker_clients_read_them() {
    let lab = Lab::new();
    let info = ok(
        &lab.docker(&["info", "--format", "{{json .}}"]),
        "docker info",
    );
    let info: serde_json::Value = serde_json::from_str(info.trim()).expect("info JSON");
    assert!(info["NCPU"].as_u64().unwrap_or(0) >= 1, "{info}");
    assert!(info["MemTotal"].as_u64().unwrap_or(0) > 0, "{info}");
    assert_eq!(info["OSType"], "linux");
    assert_eq!(info["ID"].as_str().unwrap_or("").len(), 64);
    // What docker prints: no swarm, containers that outlive the agent, the host's own
    // architecture and cgroup version.
    let human = ok(&lab.docker(&["info"]), "docker info");
    for want in [
        "Swarm: inactive",
        "Live Restore Enabled: true",
        "Containers: 0",
    ] {
        assert!(human.contains(want), "docker info lacks {want:?}:\n{human}");
    }
    let uname_m = String::from_utf8(
        std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(info["Architecture"], uname_m.trim());
    let cgroup = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    assert_eq!(info["CgroupVersion"], cgroup);
    let server_arch = ok(
        &lab.docker(&["version", "--format", "{{.Server.Arch}}"]),
        "docker version",
    );
    let go_arch = match uname_m.trim() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(
        server_arch.trim(),
        go_arch,
        "Docker's /version names the architecture as Go does"
    );
    // docker-py, as Testcontainers and scripts call it.
    let script = format!(
        "import docker, json; c = docker.DockerClient(base_url='unix://{}', version='auto'); print(json.dumps(c.info()))",
        lab.socket().display()
    );
    // Debian's interpreter, where `cargo xtask test` installs python3-docker (a
    // python3 earlier on PATH, such as pyenv's, may lack the module).
    let o = std::process::Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    let py: serde_json::Value =
        serde_json::from_str(ok(&o, "docker-py client.info() (needs python3-docker)").trim())
            .unwrap();
    assert_eq!(py["ID"], info["ID"]);
    assert_eq!(py["Swarm"]["LocalNodeState"], "inactive");
    ok(&lab.docker(&["system", "df"]), "docker system df");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // An empty stream that ends at `until`.
    let t = std::time::Instant::now();
    let o = lab.docker(&["events", "--since", "0", "--until", &(now + 1).to_string()]);
    assert!(ok(&o, "docker events --until").trim().is_empty());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "did not end at until"
    );
    let (code, v) = http(&lab, "GET", "/events?since=20&until=10", None);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("cannot be after"),
        "{v}"
    );

    lab.netd_ok(&["network", "create", "--subnet", "10.62.0.0/24", "user"]);
    lab.run_server("onbridge", &["8080:80"], &["serve-tcp", "80"]);
    lab.netd_ok(&[
        "run",
        "-d",
        "--name",
        "onuser",
        "--network",
        "user",
        "--ip",
        "10.62.0.9",
        "--alias",
        "db",
        "-p",
        "8081:81/udp",
        "--expose",
        "90",
        "--label",
        "team=blue",
        "--",
        "sleep",
        "600",
    ]);
    let f = |c: &str, tmpl: &str| {
        ok(&lab.docker(&["inspect", "-f", tmpl, c]), tmpl)
            .trim()
            .to_string()
    };
    // The most common line in users' scripts: the default bridge fills the legacy
    // top-level fields, a user network does not (as Docker).
    let ip = f("onbridge", "{{.NetworkSettings.IPAddress}}");
    assert!(ip.starts_with("172.") || ip.starts_with("192.168."), "{ip}");
    assert!(!f("onbridge", "{{.NetworkSettings.MacAddress}}").is_empty());
    assert!(!f("onbridge", "{{.NetworkSettings.Gateway}}").is_empty());
    assert_eq!(f("onuser", "{{.NetworkSettings.IPAddress}}"), "");
    assert_eq!(f("onuser", "{{.HostConfig.NetworkMode}}"), "user");
    assert_eq!(f("onbridge", "{{.HostConfig.NetworkMode}}"), "bridge");
    // PortBindings is the request (no address given: ""), Ports what was made; an
    // exposed port is in ExposedPorts, and null in Ports.
    assert_eq!(
        f("onuser", "{{json .HostConfig.PortBindings}}"),
        r#"{"81/udp":[{"HostIp":"","HostPort":"8081"}]}"#
    );
    assert_eq!(
        f("onuser", "{{json .Config.ExposedPorts}}"),
        r#"{"81/udp":{},"90/tcp":{}}"#
    );
    assert_eq!(
        f("onuser", "{{json .NetworkSettings.Ports}}"),
        r#"{"81/udp":[{"HostIp":"0.0.0.0","HostPort":"8081"}],"90/tcp":null}"#
    );
    assert_eq!(f("onuser", "{{json .Config.Labels}}"), r#"{"team":"blue"}"#);
    let ps = ok(
        &lab.docker(&[
            "ps",
            "--filter",
            "name=onuser",
            "--format",
            "{{.Ports}}|{{.Labels}}",
        ]),
        "ps ports",
    );
    assert_eq!(ps.trim(), "90/tcp, 0.0.0.0:8081->81/udp|team=blue");
    // No aliases on the default network: null, as Docker.
    assert_eq!(
        f(
            "onbridge",
            "{{json .NetworkSettings.Networks.bridge.Aliases}}"
        ),
        "null"
    );
    assert_eq!(
        f("onbridge", "{{json .NetworkSettings.Ports}}"),
        r#"{"80/tcp":[{"HostIp":"0.0.0.0","HostPort":"8080"}]}"#
    );
    assert_eq!(
        f(
            "onuser",
            "{{(index .NetworkSettings.Networks \"user\").IPAMConfig.IPv4Address}}"
        ),
        "10.62.0.9"
    );
    let id = f("onuser", "{{.Id}}");
    let aliases = f(
        "onuser",
        "{{json (index .NetworkSettings.Networks \"user\").Aliases}}",
    );
    assert_eq!(aliases, format!(r#"["db","{}"]"#, &id[..12]));
    // Connected later under its short id as an alias: Docker adds that alias once.
    lab.netd_ok(&["network", "create", "--subnet", "10.63.0.0/24", "later"]);
    lab.netd_ok(&[
        "network",
        "connect",
        "--alias",
        &id[..12],
        "later",
        "onuser",
    ]);
    assert_eq!(
        f(
            "onuser",
            "{{json (index .NetworkSettings.Networks \"later\").Aliases}}"
        ),
        format!(r#"["{}"]"#, &id[..12])
    );
    // `docker port` and `netd port` with a private port.
    assert_eq!(
        ok(&lab.docker(&["port", "onbridge", "80/tcp"]), "docker port").trim(),
        "0.0.0.0:8080"
    );
    assert_eq!(
        lab.netd_ok(&["port", "onbridge", "80"]).trim(),
        "0.0.0.0:8080"
    );
    assert_eq!(
        lab.netd_ok(&["port", "onuser", "81/udp"]).trim(),
        "0.0.0.0:8081"
    );
    let o = lab.netd(&["port", "onbridge", "81"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no public port '81/tcp'"),
        "{o:?}"
    );
}
