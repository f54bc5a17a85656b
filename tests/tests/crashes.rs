//! End-to-end: crash safety. kill -9 between a commit to the store and the kernel work,
//! then a restart: the store and the kernel agree and nothing leaked. Run as root.
use netd_tests::Lab;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// kill -9 (a fault point aborts the daemon) between a commit and the kernel work, then
/// restart: the store and the kernel agree and nothing leaked.
#[test]
fn crashes_mid_change_are_repaired_on_restart() {
    let mut lab = Lab::new();
    let check_clean = |lab: &Lab| {
        let ps = lab.netd_ok(&["ps", "-a", "--format", "json"]);
        let listed: Vec<String> = json(&ps)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["Netns"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("/run/netns/")
                    .to_string()
            })
            .collect();
        let mut ns = lab.container_namespaces();
        ns.sort();
        let mut listed = listed;
        listed.sort();
        assert_eq!(ns, listed, "namespaces and store disagree");
        let veths: Vec<String> = lab
            .host_links()
            .into_iter()
            .filter(|l| l.starts_with("ndv"))
            .collect();
        let want: usize = json(&ps)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["HostVeths"].as_array().unwrap().len())
            .sum();
        assert_eq!(veths.len(), want, "veths {veths:?}");
    };
    for point in ["run-committed", "run-netns-created", "rm-committed"] {
        lab.stop_daemon(libc::SIGTERM);
        lab.fault = if point == "rm-committed" {
            None
        } else {
            Some(point.into())
        };
        lab.start_daemon().unwrap();
        if point == "rm-committed" {
            lab.netd_ok(&["run", "-d", "--name", "victim", "--", "sleep", "600"]);
            lab.stop_daemon(libc::SIGTERM);
            lab.fault = Some(point.into());
            lab.start_daemon().unwrap();
            let _ = lab.netd(&["rm", "-f", "victim"]);
        } else {
            let _ = lab.netd(&["run", "-d", "--name", "victim", "--", "sleep", "600"]);
        }
        let st = lab.wait_daemon_death().expect("daemon status");
        assert!(!st.success(), "{point}: the daemon did not die");
        lab.fault = None;
        lab.start_daemon().unwrap();
        check_clean(&lab);
        let _ = lab.netd(&["rm", "-f", "victim"]);
        check_clean(&lab);
        assert!(lab.container_namespaces().is_empty(), "{point}");
    }
    for point in ["network-create-committed", "network-rm-committed"] {
        lab.stop_daemon(libc::SIGTERM);
        if point == "network-rm-committed" {
            lab.fault = None;
            lab.start_daemon().unwrap();
            lab.netd_ok(&[
                "network",
                "create",
                "--subnet",
                "10.70.0.0/24",
                "-o",
                "com.docker.network.bridge.name=ndbr-crash",
                "crashnet",
            ]);
            lab.stop_daemon(libc::SIGTERM);
        }
        lab.fault = Some(point.into());
        lab.start_daemon().unwrap();
        let _ = if point == "network-create-committed" {
            lab.netd(&[
                "network",
                "create",
                "--subnet",
                "10.70.0.0/24",
                "-o",
                "com.docker.network.bridge.name=ndbr-crash",
                "crashnet",
            ])
        } else {
            lab.netd(&["network", "rm", "crashnet"])
        };
        assert!(!lab.wait_daemon_death().unwrap().success());
        lab.fault = None;
        lab.start_daemon().unwrap();
        let listed = lab.netd_ok(&["network", "ls", "--format", "{{.Name}}"]);
        let has_bridge = lab.host_links().iter().any(|l| l == "ndbr-crash");
        assert_eq!(
            listed.lines().any(|l| l == "crashnet"),
            has_bridge,
            "{point}: store and kernel disagree"
        );
        if point == "network-create-committed" {
            assert!(has_bridge, "the committed network was not completed");
            lab.netd_ok(&["network", "rm", "crashnet"]);
        } else {
            assert!(!has_bridge, "the removed network's bridge leaked");
        }
    }
}

/// kill -9 between a container's veth and its programs: the host end was left down, so
/// not a packet of the container passed it unfiltered, and the next agent puts the
/// programs on and brings it up.
#[test]
fn a_crash_between_a_veth_and_its_programs_leaves_it_down_until_the_restart_completes_it() {
    let mut lab = Lab::new();
    lab.stop_daemon(libc::SIGTERM);
    lab.fault = Some("run-veth-joined".into());
    lab.start_daemon().unwrap();
    let _ = lab.netd(&["run", "-d", "--name", "victim", "--", "sleep", "600"]);
    assert!(!lab.wait_daemon_death().expect("status").success());
    let veth = lab
        .host_links()
        .into_iter()
        .find(|l| l.starts_with("ndv"))
        .expect("the veth was made before the crash");
    let state = |lab: &Lab| {
        let o = lab.exec_in(&lab.host, &["ip", "-o", "link", "show", "dev", &veth]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let down = state(&lab);
    assert!(!down.contains(",UP") && !down.contains("<UP"), "{down}");
    assert!(lab.endpoint_programs().is_empty());
    lab.fault = None;
    lab.start_daemon().unwrap();
    let up = state(&lab);
    assert!(up.contains(",UP") || up.contains("<UP"), "{up}");
    let progs = lab.endpoint_programs();
    assert_eq!(progs.len(), 1, "{progs:?}");
    assert_eq!(progs[0].link, veth);
    lab.netd_ok(&["rm", "-f", "victim"]);
    assert!(lab.container_namespaces().is_empty());
}
