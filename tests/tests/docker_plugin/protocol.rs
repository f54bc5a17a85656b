//! The plugin protocol itself, call by call on the plugin socket as dockerd makes the
//! calls: answers, repeats, refusals, and a crash in the middle of a Join.
use std::{path::Path, process::Command};

use netd_tests::Lab;
use serde_json::{json, Value};

use super::{in_ns, link_claims, netd_veths, plugin, stats};

/// One call of the plugin protocol as dockerd makes it: (status, content type, JSON).
fn call(sock: &Path, method: &str, body: &Value) -> (u16, String, Value) {
    let o = Command::new("curl")
        .args(["-s", "--max-time", "10", "--unix-socket"])
        .arg(sock)
        .args([
            "-X",
            "POST",
            "-H",
            "Accept: application/vnd.docker.plugins.v1.2+json",
        ])
        .args(["-w", "\n%{http_code} %{content_type}", "-d"])
        .arg(body.to_string())
        .arg(format!("http://plugin/{method}"))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (json, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (
        code.parse().unwrap_or(0),
        ctype.to_string(),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

#[test]
fn the_plugin_protocol_answers_repeats_alike_and_refuses_bad_input_by_name() {
    let mut lab = Lab::without_daemon();
    let (name, sock) = plugin(&lab);
    lab.extra_daemon_args = vec!["--docker-plugin".into(), name];
    lab.start_daemon().expect("starting netd");

    let (code, ctype, v) = call(&sock, "Plugin.Activate", &Value::Null);
    assert_eq!(
        (code, ctype.as_str()),
        (200, "application/vnd.docker.plugins.v1.2+json")
    );
    assert_eq!(v["Implements"], json!(["NetworkDriver"]));
    let (_, _, v) = call(&sock, "NetworkDriver.GetCapabilities", &Value::Null);
    assert_eq!(v["Scope"], "local");

    let nid = "7e".repeat(32);
    let eid = "5a".repeat(32);
    let create = |pool: &str| {
        json!({"NetworkID": nid, "Options": {"com.docker.network.enable_ipv6": false,
               "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"}},
               "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": pool,
                             "Gateway": "10.81.0.1/24"}], "IPv6Data": []})
    };
    // A bad IPv6 pool is refused with its reason, and nothing is made.
    let mut v6 = create("10.81.0.0/24");
    v6["IPv6Data"] = json!([{"Pool": "10.99.0.0/24"}]);
    let (code, _, v) = call(&sock, "NetworkDriver.CreateNetwork", &v6);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("\"10.99.0.0/24\" is not an IPv6 subnet"),
        "{v}"
    );
    assert!(!lab.netd_ok(&["network", "ls"]).contains(&nid[..12]));
    // A repeat (dockerd restarted) is no error; another pool for the same id is.
    for _ in 0..2 {
        let (code, _, v) = call(
            &sock,
            "NetworkDriver.CreateNetwork",
            &create("10.81.0.0/24"),
        );
        assert_eq!(code, 200, "{v}");
    }
    let nets = lab.netd_ok(&["network", "ls"]);
    assert_eq!(
        nets.lines().filter(|l| l.contains(&nid[..12])).count(),
        1,
        "{nets}"
    );
    let (code, _, v) = call(
        &sock,
        "NetworkDriver.CreateNetwork",
        &create("10.82.0.0/24"),
    );
    assert_eq!(code, 409, "{v}");
    assert!(
        v["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("10.81.0.0/24"),
        "{v}"
    );

    // CreateEndpoint without a MAC gets Docker's 02:42 one, the same on a repeat.
    let ep = json!({"NetworkID": nid, "EndpointID": eid,
                    "Interface": {"Address": "10.81.0.5/24", "AddressIPv6": "", "MacAddress": ""},
                    "Options": {}});
    for _ in 0..2 {
        let (code, _, v) = call(&sock, "NetworkDriver.CreateEndpoint", &ep);
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["Interface"]["MacAddress"], "02:42:0a:51:00:05", "{v}");
    }
    // Join hands over a veth end waiting in the host namespace; a repeat names it again.
    let join = json!({"NetworkID": nid, "EndpointID": eid,
                      "SandboxKey": "/var/run/docker/netns/0123456789ab", "Options": {}});
    let (code, _, first) = call(&sock, "NetworkDriver.Join", &join);
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["Gateway"], "10.81.0.1");
    assert_eq!(first["InterfaceName"]["DstPrefix"], "eth");
    let (_, _, again) = call(&sock, "NetworkDriver.Join", &join);
    assert_eq!(again, first);
    let src = first["InterfaceName"]["SrcName"]
        .as_str()
        .unwrap()
        .to_string();
    // netd shows Docker's endpoint as a record of its own.
    let inspect = lab.netd_ok(&["inspect", &format!("docker-{}", &eid[..12])]);
    assert!(inspect.contains("10.81.0.5"), "{inspect}");
    let (_, link) = in_ns(&lab.host, &["ip", "-o", "link", "show", &src]);
    assert!(
        link.contains("mtu 1400") && link.contains("02:42:0a:51:00:05"),
        "{link}"
    );

    // Port bindings go to the port map; a repeat replaces them; Revoke removes them.
    let pec = json!({"NetworkID": nid, "EndpointID": eid, "Options": {
        "com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8090, "HostPortEnd": 8090}],
        "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}]}});
    for _ in 0..2 {
        let (code, _, v) = call(&sock, "NetworkDriver.ProgramExternalConnectivity", &pec);
        assert_eq!(code, 200, "{v}");
    }
    assert_eq!(stats(&lab)["port_map_entries"], 1);
    let epref = json!({"NetworkID": nid, "EndpointID": eid});
    let (_, _, info) = call(&sock, "NetworkDriver.EndpointOperInfo", &epref);
    assert_eq!(
        info["Value"]["com.docker.network.portmap"][0]["HostPort"], 8090,
        "{info}"
    );
    let (code, _, _) = call(&sock, "NetworkDriver.RevokeExternalConnectivity", &epref);
    assert_eq!(code, 200);
    assert_eq!(stats(&lab)["port_map_entries"], 0);

    // Bad input: a named refusal, never a crash or a half-made endpoint.
    let (code, _, v) = call(&sock, "NetworkDriver.AllocateNetwork", &json!({}));
    assert_eq!(code, 404, "{v}");
    let bad =
        json!({"NetworkID": nid, "EndpointID": "../etc", "Interface": {"Address": "10.81.0.6/24"}});
    let (code, _, v) = call(&sock, "NetworkDriver.CreateEndpoint", &bad);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["Err"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid endpoint id"),
        "{v}"
    );
    let o = Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(&sock)
        .args([
            "-X",
            "POST",
            "-d",
            "{not json",
            "http://plugin/NetworkDriver.Join",
        ])
        .output()
        .expect("curl");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert!(
        v["Err"].as_str().unwrap_or_default().contains("malformed"),
        "{v}"
    );

    // Leave, then DeleteEndpoint and DeleteNetwork, each twice: idempotent, and clean.
    for m in ["Leave", "DeleteEndpoint", "DeleteEndpoint"] {
        let (code, _, v) = call(&sock, &format!("NetworkDriver.{m}"), &epref);
        assert_eq!(code, 200, "{m}: {v}");
    }
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert!(!lab.host_links().contains(&src));
    for _ in 0..2 {
        let (code, _, v) = call(
            &sock,
            "NetworkDriver.DeleteNetwork",
            &json!({"NetworkID": nid}),
        );
        assert_eq!(code, 200, "{v}");
    }
    assert!(!lab.netd_ok(&["network", "ls"]).contains(&nid[..12]));
    assert!(link_claims(&lab).is_empty(), "{:?}", link_claims(&lab));
}

#[test]
fn a_crash_between_join_and_its_veth_leaves_an_endpoint_that_joins_again() {
    let mut lab = Lab::without_daemon();
    let (name, sock) = plugin(&lab);
    lab.extra_daemon_args = vec!["--docker-plugin".into(), name];
    lab.start_daemon().expect("starting netd");
    let nid = "3c".repeat(32);
    let eid = "4d".repeat(32);
    let net = json!({"NetworkID": nid, "Options": {},
                     "IPv4Data": [{"Pool": "10.83.0.0/24", "Gateway": "10.83.0.1/24"}]});
    assert_eq!(call(&sock, "NetworkDriver.CreateNetwork", &net).0, 200);
    let ep = json!({"NetworkID": nid, "EndpointID": eid,
                    "Interface": {"Address": "10.83.0.7/24"}});
    assert_eq!(call(&sock, "NetworkDriver.CreateEndpoint", &ep).0, 200);

    // The daemon dies right after committing the join, before any veth exists.
    lab.stop_daemon(libc::SIGTERM);
    lab.fault = Some("docker-join-committed".into());
    lab.start_daemon().expect("netd with a fault point");
    let join = json!({"NetworkID": nid, "EndpointID": eid, "SandboxKey": "/x", "Options": {}});
    let (code, _, _) = call(&sock, "NetworkDriver.Join", &join);
    assert_ne!(code, 200, "the join answered although the daemon died");
    lab.wait_daemon_death();
    lab.fault = None;
    lab.start_daemon().expect("netd after the crash");
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert_eq!(stats(&lab)["endpoint_entries"], 0);

    // dockerd's retry (or a new Join) plumbs it now; cleanup leaves nothing.
    let (code, _, v) = call(&sock, "NetworkDriver.Join", &join);
    assert_eq!(code, 200, "{v}");
    assert_eq!(netd_veths(&lab).len(), 2, "{:?}", netd_veths(&lab));
    assert_eq!(stats(&lab)["endpoint_entries"], 1);
    let epref = json!({"NetworkID": nid, "EndpointID": eid});
    assert_eq!(call(&sock, "NetworkDriver.DeleteEndpoint", &epref).0, 200);
    assert_eq!(
        call(
            &sock,
            "NetworkDriver.DeleteNetwork",
            &json!({"NetworkID": nid})
        )
        .0,
        200
    );
    assert!(netd_veths(&lab).is_empty(), "{:?}", netd_veths(&lab));
    assert!(link_claims(&lab).is_empty(), "{:?}", link_claims(&lab));
}
