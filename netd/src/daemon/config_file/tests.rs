use super::*;

/// `netd daemon ARGV` as the CLI parses it, with the command line noted.
fn parse(argv: &[&str]) -> DaemonArgs {
    let cmd = DaemonArgs::augment_args(Command::new("daemon"));
    let m = cmd
        .try_get_matches_from(std::iter::once("daemon").chain(argv.iter().copied()))
        .expect("valid flags");
    let mut a = DaemonArgs::from_arg_matches(&m).expect("flags");
    note_command_line(&mut a, &m);
    a
}

fn file(json: &str) -> (tempdir::Dir, PathBuf) {
    let d = tempdir::Dir::new();
    let p = d.0.join("daemon.json");
    std::fs::write(&p, json).expect("write");
    (d, p)
}

mod tempdir {
    /// A directory removed at drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "netd-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn apply_json(argv: &[&str], json: &str) -> anyhow::Result<DaemonArgs> {
    let (_d, p) = file(json);
    let mut args = parse(argv);
    args.config_file = Some(p);
    apply(args).map(|(a, _)| a)
}

#[test]
fn keys_set_what_their_flags_set() {
    let a = apply_json(
        &[],
        r#"{"icc": false, "ipv6": true, "fixed-cidr-v6": "fd00:1::/64", "ct-max": 70000,
            "metrics-addr": "127.0.0.1:9323", "log-level": "debug", "group": "netd",
            "snat-port-range": "40000-41000", "docker-plugin": "nd",
            "cluster-store": "etcd://10.0.0.1:2379",
            "cluster-store-opts": {"kv.cacertfile": "/etc/netd/ca.pem"}}"#,
    )
    .expect("applies");
    assert!(!a.icc);
    assert!(a.ipv6);
    assert_eq!(a.ct_max, Some(70_000));
    assert_eq!(a.metrics_addr, Some("127.0.0.1:9323".parse().unwrap()));
    assert_eq!(a.log_level, log::LevelFilter::Debug);
    assert_eq!(a.group.as_deref(), Some("netd"));
    assert_eq!(a.snat_port_range, (40000, 41000));
    assert_eq!(a.docker_plugin.as_deref(), Some("nd"));
    assert_eq!(a.cluster_store_opt, vec!["kv.cacertfile=/etc/netd/ca.pem"]);
    // What the file does not set keeps its default.
    assert_eq!(a.bridge_name, "netd0");
    assert_eq!(a.ct_gc_interval, 10);
}

#[test]
fn the_command_line_and_the_file_add_up() {
    let a = apply_json(&["--ipv6", "--bridge-name", "b0"], r#"{"icc": false}"#).unwrap();
    assert!(a.ipv6 && !a.icc);
    assert_eq!(a.bridge_name, "b0");
}

#[test]
fn a_setting_in_both_places_is_refused_as_dockerd_refuses_it() {
    let e = apply_json(&["--icc=false"], r#"{"icc": true}"#).unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("specified both as a flag and in the configuration file: icc: (from flag: false, from file: true)"),
        "{msg}"
    );
    let e = apply_json(&["--ipv6"], r#"{"ipv6": true}"#).unwrap_err();
    assert!(format!("{e:#}").contains("ipv6: (from flag: true"), "{e:#}");
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key() {
    let e = apply_json(&[], r#"{"iptables": false}"#).unwrap_err();
    assert!(
        format!("{e:#}").ends_with("don't match any configuration option: iptables"),
        "{e:#}"
    );
    let e = apply_json(&[], r#"{"icc": "no"}"#).unwrap_err();
    assert!(
        format!("{e:#}").ends_with("icc must be true or false, not \"no\""),
        "{e:#}"
    );
    let e = apply_json(&[], r#"{"ct-max": "lots"}"#).unwrap_err();
    assert!(format!("{e:#}").contains("ct-max must be a non-negative whole number"));
    let e = apply_json(&[], r#"{"ct-max": 100}"#).unwrap_err();
    assert!(format!("{e:#}").contains("ct-max: "), "{e:#}");
    assert!(format!("{e:#}").contains("outside 1024"), "{e:#}");
    let e = apply_json(&[], r#"{"config-file": "/x"}"#).unwrap_err();
    assert!(format!("{e:#}").contains("config-file"), "{e:#}");
    let e = apply_json(&[], r#"["icc"]"#).unwrap_err();
    assert!(format!("{e:#}").contains("not a JSON object"), "{e:#}");
    let e = apply_json(&[], r#"{"cluster-store-opts": {"kv.cacertfile": 1}}"#).unwrap_err();
    assert!(
        format!("{e:#}").contains("cluster-store-opts.kv.cacertfile must be a string"),
        "{e:#}"
    );
}

#[test]
fn a_missing_file_named_on_the_command_line_is_an_error() {
    let mut a = parse(&[]);
    a.config_file = Some("/nonexistent/netd/daemon.json".into());
    let e = apply(a).unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/netd/daemon.json"));
}

#[test]
fn reload_applies_the_log_level_and_names_the_rest() {
    let (_d, p) = file(r#"{"log-level": "info", "icc": true}"#);
    let mut cli = parse(&[]);
    cli.config_file = Some(p.clone());
    let (_, mut cf) = apply(cli.clone()).unwrap();
    std::fs::write(&p, r#"{"log-level": "debug", "icc": false}"#).unwrap();
    let r = cf.reload(&cli).unwrap();
    assert_eq!(r.log_level, Some(log::LevelFilter::Debug));
    assert_eq!(r.at_next_start, vec!["icc".to_string()]);
    // A broken file changes nothing and says why.
    std::fs::write(&p, r#"{"log-level": "loud"}"#).unwrap();
    assert!(format!("{:#}", cf.reload(&cli).unwrap_err()).contains("log-level"));
    // Unchanged: nothing to do.
    std::fs::write(&p, r#"{"log-level": "debug", "icc": false}"#).unwrap();
    assert_eq!(cf.reload(&cli).unwrap(), Reload::default());
}
