//! What an earlier agent pinned, brought to this release's layout without a moment of
//! lost forwarding (the layout rules are in `netd_common::layout`).
//!
//! The steps, around the load of the object:
//! 1. `check`: the recorded layout; one newer than this release is a downgrade, refused
//!    before anything is touched.
//! 2. `Migration::prepare`: every pin this release cannot reuse (another type or size,
//!    or a layout dated after the recorded one) is moved aside into `old-layout/`. The
//!    programs still attached keep using those maps: moving a pin does not close them.
//! 3. The load makes fresh maps at the freed pins; `carry` fills them: entries copied
//!    where their bytes still mean the same (a capacity change, a counter table that
//!    grew), otherwise left to the store (`reconcile` writes every map it owns) or lost
//!    with a log line naming what (flows, counters).
//! 4. The agent swaps its programs into the pinned links; `finish` copies the entries the
//!    old programs made meanwhile, removes the old pins and those of maps this release
//!    no longer has, and records the layout.
//!
//! A crash between the steps leaves `old-layout/`, which the next start carries again.
use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use log::{info, warn};
use netd_common::{layout, map_names};

use super::{
    rawmap::{self, copy_entries, copy_missing_entries, Shape},
    DatapathError,
};

/// Where pins that the load must not reuse wait for `finish`.
/// (bpffs refuses names with a dot.)
const ASIDE: &str = "old-layout";

/// Pins of maps an earlier release had under another name, and the map that took over
/// their entries.
const RENAMED: &[(&str, &str)] = &[(map_names::CONNTRACK_V1, map_names::CONNTRACK)];

/// Maps whose entries nobody else can give back: flows, host sockets' reverse NAT,
/// counters. Every other map is written whole from the store by `reconcile`.
const CARRIED: &[&str] = &[
    map_names::CONNTRACK,
    map_names::CONNTRACK_NEW,
    map_names::CONNTRACK6,
    map_names::CONNTRACK6_NEW,
    map_names::SOCK_REVNAT,
    map_names::SOCK_REVNAT6,
    map_names::DROPS,
    map_names::EVENTS,
    map_names::PORT_STATS,
    map_names::PORT_STATS6,
];

/// The datapath layout of the pins in `bpf_dir`, refusing one newer than this release.
pub fn check(bpf_dir: &Path) -> Result<u32, DatapathError> {
    let pin = bpf_dir.join(map_names::LAYOUT);
    let found = match MapData::from_pin(&pin) {
        Ok(m) => rawmap::read_u32(&m, 0)?,
        Err(_) if !pin.exists() => layout::UNRECORDED_LAYOUT,
        Err(e) => return Err(DatapathError::Map(format!("{}: {e}", pin.display()))),
    };
    if found > layout::DATAPATH_LAYOUT {
        return Err(DatapathError::Newer {
            dir: bpf_dir.to_path_buf(),
            found,
        });
    }
    Ok(found)
}

/// What the object wants of one pinned map.
pub struct Wanted {
    pub name: String,
    pub shape: Shape,
}

/// A pin moved aside, waiting for its entries to be carried and for `finish`.
struct Aside {
    name: String,
    /// The map that takes its entries (itself, or its successor for a renamed one).
    into: String,
    /// Its entries still mean what they meant (only the capacity, or nothing, differs).
    same_meaning: bool,
}

pub struct Migration {
    bpf_dir: PathBuf,
    found: u32,
    aside: Vec<Aside>,
    /// The pinned maps of this release, so `finish` knows which pins are obsolete.
    ours: HashSet<String>,
}

impl Migration {
    /// Moves aside every pin in `bpf_dir` that the load must not reuse.
    pub fn prepare(bpf_dir: &Path, wanted: &[Wanted]) -> Result<Migration, DatapathError> {
        let found = check(bpf_dir)?;
        let dir = bpf_dir.join(ASIDE);
        let mut m = Migration {
            bpf_dir: bpf_dir.to_path_buf(),
            found,
            aside: Vec::new(),
            ours: wanted.iter().map(|w| w.name.clone()).collect(),
        };
        m.ours.insert(map_names::LAYOUT.to_string());
        // Left by an agent that died in the middle of a migration: carried again.
        for name in pin_names(&dir) {
            if let Some(w) = wanted.iter().find(|w| w.name == name) {
                m.aside.push(Aside {
                    same_meaning: found >= layout::since(&name),
                    into: w.name.clone(),
                    name,
                });
            }
        }
        for w in wanted {
            m.set_aside_if_stale(w)?;
        }
        for (old, new) in RENAMED {
            if bpf_dir.join(old).exists() {
                m.move_aside(old)?;
                m.aside.push(Aside {
                    name: old.to_string(),
                    into: new.to_string(),
                    same_meaning: true,
                });
            }
        }
        Ok(m)
    }

    fn set_aside_if_stale(&mut self, w: &Wanted) -> Result<(), DatapathError> {
        let pin = self.bpf_dir.join(&w.name);
        let Ok(old) = MapData::from_pin(&pin) else {
            return Ok(());
        };
        let have = Shape::of(&old)?;
        let dated = self.found < layout::since(&w.name);
        if !dated && have == w.shape {
            return Ok(());
        }
        info!(
            "datapath: map {} changes (pinned layout {}, {have:?}; now layout {}, {:?}): migrating",
            w.name,
            self.found,
            layout::DATAPATH_LAYOUT,
            w.shape
        );
        self.move_aside(&w.name)?;
        self.aside.push(Aside {
            name: w.name.clone(),
            into: w.name.clone(),
            same_meaning: !dated,
        });
        Ok(())
    }

    fn move_aside(&self, name: &str) -> Result<(), DatapathError> {
        let dir = self.bpf_dir.join(ASIDE);
        fs::create_dir_all(&dir).map_err(DatapathError::io("creating", &dir))?;
        let (from, to) = (self.bpf_dir.join(name), dir.join(name));
        // A copy left by an interrupted migration is older than the pin now in place.
        let _ = fs::remove_file(&to);
        fs::rename(&from, &to).map_err(DatapathError::io("moving aside", &from))
    }

    /// Whether the load will make fresh maps that `reconcile` must fill before any
    /// program uses them.
    pub fn needs_store(&self) -> bool {
        self.aside
            .iter()
            .any(|a| !CARRIED.contains(&a.into.as_str()))
    }

    /// After the load: fills the fresh maps from the ones set aside.
    pub fn carry(&self) -> Result<(), DatapathError> {
        for a in &self.aside {
            let old = self.bpf_dir.join(ASIDE).join(&a.name);
            let new = self.bpf_dir.join(&a.into);
            let (Ok(old), Ok(new)) = (MapData::from_pin(&old), MapData::from_pin(&new)) else {
                continue;
            };
            let fits = Shape::of(&old)?.entries_fit(&Shape::of(&new)?);
            if a.same_meaning && fits {
                let n = copy_entries(&old, &new)?;
                info!(
                    "datapath: carried {n} entries of {} into {}",
                    a.name, a.into
                );
            } else if CARRIED.contains(&a.into.as_str()) {
                warn!(
                    "datapath: the entries of {} have another layout now and are not carried over",
                    a.name
                );
            } else {
                info!("datapath: {} is written anew from the store", a.into);
            }
        }
        Ok(())
    }

    /// After the programs were swapped: the entries the old programs made since
    /// `carry`, then the old pins go and the layout is recorded.
    pub fn finish(self) -> Result<(), DatapathError> {
        for a in &self.aside {
            let old = self.bpf_dir.join(ASIDE).join(&a.name);
            let new = self.bpf_dir.join(&a.into);
            if let (Ok(o), Ok(n)) = (MapData::from_pin(&old), MapData::from_pin(&new)) {
                if a.same_meaning && Shape::of(&o)?.entries_fit(&Shape::of(&n)?) {
                    copy_missing_entries(&o, &n)?;
                }
            }
            fs::remove_file(&old).map_err(DatapathError::io("removing", &old))?;
        }
        let _ = fs::remove_dir(self.bpf_dir.join(ASIDE));
        for name in pin_names(&self.bpf_dir) {
            if !self.ours.contains(&name) {
                info!("datapath: removing {name}, a map this release no longer has");
                let p = self.bpf_dir.join(&name);
                fs::remove_file(&p).map_err(DatapathError::io("removing", &p))?;
            }
        }
        record(&self.bpf_dir)
    }
}

/// Writes this release's layout into the pinned record (made if missing).
fn record(bpf_dir: &Path) -> Result<(), DatapathError> {
    let pin = bpf_dir.join(map_names::LAYOUT);
    if !pin.exists() {
        rawmap::create_pinned_u32_array(map_names::LAYOUT, 1, &pin)?;
    }
    let m = MapData::from_pin(&pin).map_err(|e| DatapathError::Map(format!("{e}")))?;
    rawmap::write_u32(&m, 0, layout::DATAPATH_LAYOUT)
}

/// Names of the pins (files) directly in `dir`; directories (links/, old-layout/) are
/// not maps.
fn pin_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect()
}
