//! End-to-end: `netd daemon --metrics-addr` scraped by a real Prometheus (Debian's) in
//! the lab's host namespace, after known traffic through a published port; promtool
//! checks the exposition.
use std::time::{Duration, Instant};

use netd_tests::{ok, Lab, HOST_IP};

const METRICS: &str = "127.0.0.1:9323";
const PROMETHEUS: &str = "127.0.0.1:9090";

/// GET `url` from the lab's host namespace (where the daemon and Prometheus listen on
/// the namespace's own loopback).
fn get(lab: &Lab, url: &str) -> String {
    ok(
        &lab.exec_in(&lab.host, &["curl", "-sS", "--max-time", "5", url]),
        url,
    )
}

/// The one value PromQL `query` gives now, if Prometheus answers with one.
fn promql(lab: &Lab, query: &str) -> Option<f64> {
    let url = format!("http://{PROMETHEUS}/api/v1/query");
    let q = format!("query={query}");
    let o = lab.exec_in(
        &lab.host,
        &[
            "curl",
            "-sf",
            "--max-time",
            "5",
            &url,
            "--data-urlencode",
            &q,
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    let r = v["data"]["result"].as_array()?;
    (r.len() == 1).then(|| r[0]["value"][1].as_str()?.parse().ok())?
}

fn eventually_equals(lab: &Lab, query: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = None;
    while Instant::now() < deadline {
        got = promql(lab, query);
        if got == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{query}: want {want}, Prometheus says {got:?}");
}

fn start_prometheus(lab: &mut Lab) {
    let dir = lab.dir.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: netd\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap();
    let (config, data) = (
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
    );
    let host = lab.host.clone();
    lab.spawn_in(
        &host,
        None,
        &[
            "prometheus",
            &config,
            &data,
            &format!("--web.listen-address={PROMETHEUS}"),
            "--log.level=warn",
        ],
    )
    .expect("starting prometheus");
}

#[test]
fn prometheus_scrapes_netd_and_promql_counts_the_packets_of_a_published_port() {
    let mut lab = Lab::with_args(&["--metrics-addr", METRICS]);
    lab.run_server("web", &["8081:7001/udp"], &["serve-udp", "7001"]);
    // Known traffic: five UDP exchanges, a request and its reply each, both through the
    // published port's DNAT.
    for i in 0..5 {
        let got = lab
            .from_client(&["udp", &format!("{HOST_IP}:8081"), &format!("m{i}")])
            .expect("udp through the published port");
        assert!(got.contains(&format!("m{i}")), "{got}");
    }
    start_prometheus(&mut lab);
    eventually_equals(
        &lab,
        r#"netd_published_port_packets_total{container="web",proto="udp",host_port="8081"}"#,
        10.0,
    );
    eventually_equals(
        &lab,
        r#"netd_containers{driver="bridge",origin="netd"}"#,
        1.0,
    );
    eventually_equals(&lab, r#"netd_networks{driver="bridge"}"#, 1.0);
    eventually_equals(
        &lab,
        r#"sum(netd_datapath_events_total{kind=~"dnat|dnat_reply"})"#,
        10.0,
    );
    // The API calls the lab made (netd run, inspect) were timed.
    let api = promql(&lab, "sum(netd_api_request_duration_seconds_count)").unwrap_or(0.0);
    assert!(api >= 2.0, "API requests timed: {api}");
    assert!(promql(&lab, "process_resident_memory_bytes").unwrap_or(0.0) > 1e6);

    dashboard_queries_run(&lab);

    // The exposition: Prometheus' text format as promtool checks it, the counter
    // table's own words as help.
    let text = get(&lab, &format!("http://{METRICS}/metrics"));
    assert!(
        text.contains("drop_icc: Between containers of a network with icc=false."),
        "{text}"
    );
    let file = lab.dir.join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("running promtool");
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn dns_queries_and_answers_are_counted() {
    let lab = Lab::with_args(&["--metrics-addr", METRICS]);
    lab.netd_ok(&["network", "create", "--subnet", "10.77.7.0/24", "names"]);
    let t = netd_tests::tester_bin().display().to_string();
    lab.netd_ok(&[
        "run",
        "-d",
        "--network",
        "names",
        "--name",
        "db",
        "--",
        &t,
        "serve-tcp",
        "7",
    ]);
    let ns = format!("{}db", lab.container_prefix());
    for _ in 0..3 {
        let d = netd_tests::dig(&lab, &ns, &["db"]);
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
    }
    let d = netd_tests::dig(&lab, &ns, &["+tcp", "db"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    let text = get(&lab, &format!("http://{METRICS}/metrics"));
    for want in [
        r#"netd_dns_queries_total{transport="udp"} 3"#,
        r#"netd_dns_queries_total{transport="tcp"} 1"#,
        r#"netd_dns_answers_total{rcode="noerror",source="local"} 4"#,
        r#"netd_dns_answer_duration_seconds_count{source="local"} 4"#,
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
}

/// Every query of the Grafana dashboard in docs/ runs in Prometheus (Grafana's
/// variables given their widest values) and names only metrics netd exposes.
fn dashboard_queries_run(lab: &Lab) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/netd.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let text = get(lab, &format!("http://{METRICS}/metrics"));
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for p in panels {
        let expr = p["targets"][0]["expr"].as_str().expect("expr");
        let q = expr
            .replace("$__rate_interval", "1m")
            .replace(r#"=~"$job""#, r#"=~".*""#);
        let url = format!("http://{PROMETHEUS}/api/v1/query");
        let arg = format!("query={q}");
        let o = lab.exec_in(
            &lab.host,
            &[
                "curl",
                "-s",
                "--max-time",
                "5",
                &url,
                "--data-urlencode",
                &arg,
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("Prometheus JSON");
        assert_eq!(v["status"], "success", "{}: {q}: {v}", p["title"]);
        for name in q
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("netd_") || w.starts_with("process_"))
        {
            assert!(
                text.contains(&format!("\n{name}")),
                "{}: {name} is not exposed",
                p["title"]
            );
        }
    }
}
