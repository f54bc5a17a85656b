//! The store's unit tests: round trips, per-record writes, the import of 0.1.0's state
//! file, the refusal of a newer database.
use super::*;

/// A state file as netd 0.1.0 (77bdce0) wrote it: a user network with IPv6, a
/// container of netd's own with a published port, and a CNI endpoint.
pub const V1: &str = include_str!("testdata/state-v1.json");

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("netd-store-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// The 0.1.0 sample as this release's state.
fn sample() -> State {
    migrate::read(Path::new("state.json"), V1.as_bytes())
        .unwrap()
        .0
}

/// Every file in `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Rows inserted, changed or deleted by this store's connection so far.
fn row_writes(store: &Store) -> u64 {
    store.open.lock().unwrap().conn.total_changes()
}

fn set_version(dir: &Path, v: u32) {
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    c.execute("UPDATE meta SET value = ?1 WHERE key = 'version'", [v])
        .unwrap();
}

#[test]
fn the_state_round_trips_through_the_database() {
    let dir = tmp("round-trip");
    let (store, empty) = Store::open(&dir).unwrap();
    assert_eq!(empty, State::default());
    let mut st = sample();
    st.next_net_id = 7;
    store.commit(&st).unwrap();
    drop(store);
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!(again, st);
    assert_eq!(Store::check(&dir).unwrap(), STATE_VERSION);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_commit_writes_only_the_records_that_changed() {
    let dir = tmp("per-record");
    let (store, _) = Store::open(&dir).unwrap();
    let mut st = sample();
    store.commit(&st).unwrap();
    let writes = |st: &State| {
        let before = row_writes(&store);
        store.commit(st).unwrap();
        row_writes(&store) - before
    };
    assert_eq!(writes(&st), 0, "nothing changed, nothing written");
    let mut c = (*st.containers[0]).clone();
    c.id = "f".repeat(64);
    c.name = "another".into();
    st.containers.push(c.into());
    assert_eq!(writes(&st), 1, "a container added: its row");
    std::sync::Arc::make_mut(&mut st.containers[0])
        .labels
        .insert("k".into(), "v".into());
    assert_eq!(writes(&st), 1, "a container changed: its row");
    st.containers.remove(0);
    assert_eq!(writes(&st), 1, "a container removed: its row");
    st.next_net_id += 1;
    assert_eq!(writes(&st), 2, "the scalars");
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, st);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_order_of_records_survives_insertion_and_removal() {
    let dir = tmp("order");
    let (store, _) = Store::open(&dir).unwrap();
    let mut st = sample();
    store.commit(&st).unwrap();
    let mut first = st.networks[0].clone();
    first.id = "0".repeat(64);
    first.name = "first".into();
    st.networks.insert(0, first);
    st.containers.reverse();
    store.commit(&st).unwrap();
    st.networks.remove(1);
    store.commit(&st).unwrap();
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, st);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn after_a_failed_commit_the_next_writes_the_state_whole() {
    let dir = tmp("whole");
    let (store, _) = Store::open(&dir).unwrap();
    let mut st = sample();
    store.commit(&st).unwrap();
    store.open.lock().unwrap().last = None;
    st.containers.pop();
    store.commit(&st).unwrap();
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, st);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_v1_state_file_is_imported_and_kept_as_it_was() {
    let dir = tmp("import");
    fs::write(dir.join(JSON_FILE), V1).unwrap();
    assert_eq!(Store::check(&dir).unwrap(), 1);
    let (store, st) = Store::open(&dir).unwrap();
    assert_eq!(st, sample());
    assert_eq!(st.version.0, STATE_VERSION);
    let web = st.container("web").expect("web");
    assert_eq!((web.ports.len(), web.attachments.len()), (2, 1));
    // Version 4: both families' subnets in one list, IPv4 first, each with its own.
    let app = st.network("appnet").expect("appnet");
    let subnets: Vec<(String, String, bool)> = app
        .subnets
        .iter()
        .map(|s| (s.subnet.to_string(), s.gateway.to_string(), s.user))
        .collect();
    assert_eq!(
        subnets,
        [
            ("10.88.0.0/24".into(), "10.88.0.1".into(), true),
            ("fd00:88::/64".into(), "fd00:88::1".into(), true),
        ]
    );
    assert!(st.network("host").expect("host").subnets.is_empty());
    assert!(!st.network("bridge").expect("bridge").subnets[0].user);
    assert!(!dir.join(JSON_FILE).exists());
    assert_eq!(fs::read_to_string(dir.join("state.json.v1")).unwrap(), V1);
    assert_eq!(Store::check(&dir).unwrap(), STATE_VERSION);
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, st, "from the database alone");
    assert_eq!(
        peek_instance_id(&dir).unwrap().as_deref(),
        Some(st.instance_id.as_str())
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_v2_state_file_is_kept_as_v2() {
    let dir = tmp("import-v2");
    let v2 = serde_json::to_string(&serde_json::json!({
        "version": 2, "networks": [], "containers": [], "next_net_id": 4,
        "instance_id": "abc"
    }))
    .unwrap();
    fs::write(dir.join(JSON_FILE), &v2).unwrap();
    let (_, st) = Store::open(&dir).unwrap();
    assert_eq!((st.next_net_id, st.instance_id.as_str()), (4, "abc"));
    assert_eq!(fs::read_to_string(dir.join("state.json.v2")).unwrap(), v2);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_state_file_left_beside_its_database_is_not_imported_again() {
    let dir = tmp("leftover");
    fs::write(dir.join(JSON_FILE), V1).unwrap();
    let (store, mut st) = Store::open(&dir).unwrap();
    st.next_net_id = 42;
    store.commit(&st).unwrap();
    drop(store);
    // As if the agent died between the import's commit and moving the file aside.
    fs::write(dir.join(JSON_FILE), V1).unwrap();
    assert_eq!(Store::check(&dir).unwrap(), STATE_VERSION);
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!(again.next_net_id, 42);
    assert!(!dir.join(JSON_FILE).exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_newer_database_is_refused_before_anything_is_touched() {
    let dir = tmp("newer");
    let (store, _) = Store::open(&dir).unwrap();
    store.commit(&sample()).unwrap();
    drop(store);
    set_version(&dir, STATE_VERSION + 1);
    let before = files(&dir);
    let e = Store::check(&dir).unwrap_err().to_string();
    assert!(
        e.starts_with(&dir.join(DB_FILE).display().to_string())
            && e.contains(&format!("state version {}", STATE_VERSION + 1))
            && e.contains(&format!("up to {STATE_VERSION}"))
            && e.contains("--cleanup")
            && !e.contains('\n'),
        "{e}"
    );
    let e = Store::open(&dir).err().expect("refused").to_string();
    assert!(
        e.contains(&format!("state version {}", STATE_VERSION + 1)),
        "{e}"
    );
    assert!(before == files(&dir), "a refused state was changed");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_older_database_is_kept_and_written_again() {
    let dir = tmp("older");
    let (store, _) = Store::open(&dir).unwrap();
    let st = sample();
    store.commit(&st).unwrap();
    drop(store);
    set_version(&dir, 2);
    let (_, again) = Store::open(&dir).unwrap();
    assert_eq!(again, st);
    assert_eq!(Store::check(&dir).unwrap(), STATE_VERSION);
    let kept = db::peek_version(&dir.join("state.db.v2")).unwrap();
    assert_eq!(kept, Some(2));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_version_3_database_gets_each_networks_subnets_in_one_list() {
    let dir = tmp("v3");
    let (store, _) = Store::open(&dir).unwrap();
    store.commit(&sample()).unwrap();
    drop(store);
    // Version 3's record of a network: the families' subnets as fields of their own.
    let c = Connection::open(dir.join(DB_FILE)).unwrap();
    let (seq, text): (i64, String) = c
        .query_row(
            "SELECT seq, record FROM networks WHERE record LIKE '%appnet%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut rec: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    rec.remove("subnets");
    for (k, v) in [
        ("subnet", serde_json::json!("10.88.0.0/24")),
        ("gateway", serde_json::json!("10.88.0.1")),
        ("ip_range", serde_json::json!("10.88.0.128/25")),
        ("user_subnet", serde_json::json!(true)),
        (
            "more_subnets",
            serde_json::json!([{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}]),
        ),
        ("ipv6", serde_json::json!(true)),
        ("subnet6", serde_json::json!("fd00:88::/64")),
        ("gateway6", serde_json::json!("fd00:88::1")),
        ("user_subnet6", serde_json::json!(false)),
    ] {
        rec.insert(k.into(), v);
    }
    c.execute(
        "UPDATE networks SET record = ?1 WHERE seq = ?2",
        rusqlite::params![serde_json::to_string(&rec).unwrap(), seq],
    )
    .unwrap();
    drop(c);
    set_version(&dir, 3);
    let (_, st) = Store::open(&dir).unwrap();
    let app = st.network("appnet").unwrap();
    let got: Vec<String> = app
        .subnets
        .iter()
        .map(|s| format!("{} {} {:?} {}", s.subnet, s.gateway, s.ip_range, s.user))
        .collect();
    assert_eq!(
        got,
        [
            "10.88.0.0/24 10.88.0.1 Some(V4(Ipv4Network { addr: 10.88.0.128, prefix: 25 })) true",
            "10.89.0.0/24 10.89.0.1 None true",
            "fd00:88::/64 fd00:88::1 None false",
        ]
    );
    assert_eq!(db::peek_version(&dir.join("state.db.v3")).unwrap(), Some(3));
    assert_eq!(Store::check(&dir).unwrap(), STATE_VERSION);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_savepoint_puts_the_committed_state_back() {
    let dir = tmp("savepoint");
    let (store, _) = Store::open(&dir).unwrap();
    let mut st = sample();
    store.commit(&st).unwrap();
    let before = store.savepoint(&st);
    // An operation's change, committed, then its kernel work fails.
    st.containers.pop();
    st.networks[0].labels.insert("k".into(), "v".into());
    st.next_net_id = 99;
    store.commit(&st).unwrap();
    before.rollback(&mut st);
    assert_eq!(st, sample());
    store.commit(&st).unwrap();
    drop(store);
    assert_eq!(Store::open(&dir).unwrap().1, sample());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_container_is_found_by_id_name_or_id_prefix_and_changed_by_id() {
    let mut state = State::default();
    let id = |n: u8| format!("{:02x}", n).repeat(32);
    for n in 0..3u8 {
        let c = crate::model::test_container(&id(n), &format!("c{n}"));
        state.containers.push(Arc::new(c));
    }
    // A name that is another container's id prefix: the name wins, as in Docker.
    let tricky = crate::model::test_container(&id(9), &id(1)[..8]);
    state.containers.push(Arc::new(tricky));
    assert_eq!(state.container("c1").map(|c| c.id.clone()), Some(id(1)));
    assert_eq!(state.container(&id(2)).map(|c| c.name.as_str()), Some("c2"));
    assert_eq!(
        state.container(&id(0)[..12]).map(|c| c.name.as_str()),
        Some("c0")
    );
    assert_eq!(
        state.container(&id(1)[..8]).map(|c| c.id.clone()),
        Some(id(9))
    );
    assert!(state.container("c7").is_none());
    assert!(state.container(&id(0)[..4]).is_none(), "a prefix under 6");
    // Removed and renamed ones are not found by what they were.
    state.containers.remove(0);
    assert!(state.container("c0").is_none());
    state.container_mut(&id(2)).expect("c2").name = "renamed".into();
    assert!(state.container("c2").is_none());
    assert_eq!(
        state.container("renamed").map(|c| c.id.clone()),
        Some(id(2))
    );
    assert!(state.container_mut("c1").is_none(), "by id only");
}
