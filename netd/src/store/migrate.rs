//! State of older releases brought up to this release's layout; newer state refused.
//! Each step rewrites the state document of one version into the next, so state of any
//! earlier release reaches `STATE_VERSION` by the steps in order. The document is the
//! state file's JSON for versions 1 and 2 (`state.json`), and the database's records
//! gathered in the same shape from version 3 on (`db::read_doc`).
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use super::State;

/// The layout of the state. Bumped when `State` changes in a way older records do not
/// deserialize into as they are (a field renamed, moved or restructured; a new field
/// with a serde default needs no bump), with a step added to `STEPS`; or when the
/// database's tables change. Version 3 is the first kept in the database.
pub const STATE_VERSION: u32 = 4;

/// The version of a file without one: every release before versions existed (0.1.0).
const UNVERSIONED: u32 = 1;

type Step = fn(&mut Map<String, Value>) -> Result<(), String>;

/// `STEPS[i]` takes a document of version `i + 1` to version `i + 2`.
const STEPS: &[Step] = &[v1_to_v2, v2_to_v3, v3_to_v4];

/// netd 0.1.0's document is this one without its version (which `upgrade` adds).
fn v1_to_v2(_doc: &mut Map<String, Value>) -> Result<(), String> {
    Ok(())
}

/// Version 3 moves the records into the database as they are: one row each.
fn v2_to_v3(_doc: &mut Map<String, Value>) -> Result<(), String> {
    Ok(())
}

/// Version 4 keeps a network's subnets of both families in one list, `subnets`.
fn v3_to_v4(doc: &mut Map<String, Value>) -> Result<(), String> {
    let Some(nets) = doc.get_mut("networks").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for n in nets {
        let name = n
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let Some(obj) = n.as_object_mut() else {
            return Err(format!("network {name} is not a JSON object"));
        };
        crate::model::legacy::upgrade(obj).map_err(|e| format!("network {name}: {e}"))?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{} was written by a newer netd (state version {found}; netd {version} reads up to {STATE_VERSION}): start that release or a newer one, or remove this instance and its containers with that release's `netd daemon --cleanup`",
        .path.display(),
        version = env!("CARGO_PKG_VERSION")
    )]
    Newer { path: PathBuf, found: u32 },
    #[error("{}: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

use super::db::invalid;

/// The document's version, refusing one newer than this release's.
fn version_of(path: &Path, doc: &Map<String, Value>) -> Result<u32, StoreError> {
    let found = match doc.get("version") {
        None => UNVERSIONED,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= UNVERSIONED)
            .ok_or_else(|| invalid(path, format!("\"version\" is {v}, not a version")))?,
    };
    if found > STATE_VERSION {
        return Err(StoreError::Newer {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(found)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>, StoreError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(doc)) => Ok(doc),
        Ok(_) => Err(invalid(path, "not a JSON object")),
        Err(e) => Err(invalid(path, e)),
    }
}

/// The version of the state file at `path` (this release's when there is none),
/// refusing a newer one; changes nothing.
pub fn check(path: &Path) -> Result<u32, StoreError> {
    match fs::read(path) {
        Ok(bytes) => version_of(path, &parse(path, &bytes)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(STATE_VERSION),
        Err(source) => Err(StoreError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Brings a document of any earlier version to `STATE_VERSION`.
pub fn upgrade(path: &Path, doc: &mut Map<String, Value>) -> Result<u32, StoreError> {
    let found = version_of(path, doc)?;
    for (i, step) in STEPS
        .iter()
        .enumerate()
        .skip((found - UNVERSIONED) as usize)
    {
        let from = i as u32 + UNVERSIONED;
        step(doc).map_err(|why| invalid(path, format!("migrating from version {from}: {why}")))?;
    }
    doc.insert("version".into(), Value::from(STATE_VERSION));
    Ok(found)
}

/// The state in document `doc` (read from `path`) and the version it had, migrated if
/// it is older.
pub fn state_of(path: &Path, mut doc: Map<String, Value>) -> Result<(State, u32), StoreError> {
    let found = upgrade(path, &mut doc)?;
    let state = serde_json::from_value(Value::Object(doc)).map_err(|e| invalid(path, e))?;
    Ok((state, found))
}

/// The state in the state file's `bytes` (read from `path`) and its version.
pub fn read(path: &Path, bytes: &[u8]) -> Result<(State, u32), StoreError> {
    state_of(path, parse(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::V1;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-migrate-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d.join("state.json")
    }

    #[test]
    fn a_v1_document_reads_whole() {
        let (state, found) = read(Path::new("state.json"), V1.as_bytes()).unwrap();
        assert_eq!((found, state.version.0), (1, STATE_VERSION));
        let names: Vec<&str> = state.networks.iter().map(|n| n.name.as_str()).collect();
        assert!(
            names.contains(&"appnet") && names.contains(&"bridge"),
            "{names:?}"
        );
        let web = state.container("web").expect("web");
        // `-p 8080:80` on a dual-stack container: 0.0.0.0 and [::].
        assert_eq!(web.ports.len(), 2);
        assert_eq!(web.attachments.len(), 1);
        assert!(state.containers.iter().any(|c| c.name.starts_with("cni-")));
        assert!(!state.instance_id.is_empty());
    }

    #[test]
    fn every_step_is_applied_in_order_and_the_version_written() {
        let path = Path::new("state.json");
        let mut doc = parse(path, V1.as_bytes()).unwrap();
        assert_eq!(upgrade(path, &mut doc).unwrap(), 1);
        assert_eq!(doc["version"], Value::from(STATE_VERSION));
        // A current document goes through no step and keeps its version.
        assert_eq!(upgrade(path, &mut doc).unwrap(), STATE_VERSION);
        assert_eq!(STEPS.len() as u32, STATE_VERSION - UNVERSIONED);
    }

    #[test]
    fn a_newer_file_is_refused_by_check_and_read_naming_both_versions() {
        let path = tmp("newer");
        let newer = format!("{{\"version\": {}, \"networks\": []}}", STATE_VERSION + 1);
        fs::write(&path, &newer).unwrap();
        let e = check(&path).unwrap_err().to_string();
        assert!(
            e.contains(&format!("state version {}", STATE_VERSION + 1))
                && e.contains(&format!("up to {STATE_VERSION}"))
                && e.contains("--cleanup"),
            "{e}"
        );
        assert!(read(&path, newer.as_bytes()).is_err());
        // Nothing was written beside it.
        let files = fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(files, 1);
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_bad_version_or_document_is_one_clear_error() {
        let path = Path::new("/x/state.json");
        for (doc, want) in [
            ("{\"version\": \"two\"}", "not a version"),
            ("{\"version\": 0}", "not a version"),
            ("[1, 2]", "not a JSON object"),
        ] {
            let e = read(path, doc.as_bytes()).unwrap_err().to_string();
            assert!(e.starts_with("/x/state.json: ") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn no_file_yet_is_this_releases_version() {
        let path = tmp("none");
        assert_eq!(check(&path).unwrap(), STATE_VERSION);
    }
}
