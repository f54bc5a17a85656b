//! What this instance made, so that cleanup touches only that. Before netd creates a
//! namespace, a veth or a bridge, it leaves a marker file named after it under
//! `STATE_DIR/owned/<kind>/`; the marker goes after the object is deleted. At start,
//! leftovers are the objects that have a marker and that the store no longer wants:
//! a namespace of another instance, of a test suite or of anything else that happens to
//! share the prefix is never touched (it has no marker here).
use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Netns,
    Link,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Netns => "netns",
            Kind::Link => "links",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Owned {
    root: PathBuf,
}

impl Owned {
    pub fn new(state_dir: &Path) -> anyhow::Result<Owned> {
        let root = state_dir.join("owned");
        for k in [Kind::Netns, Kind::Link] {
            let d = root.join(k.dir());
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(Owned { root })
    }

    fn path(&self, kind: Kind, name: &str) -> PathBuf {
        self.root.join(kind.dir()).join(name)
    }

    /// Marks `name` as this instance's, before it is created.
    pub fn claim(&self, kind: Kind, name: &str) -> anyhow::Result<()> {
        let p = self.path(kind, name);
        fs::write(&p, b"").with_context(|| format!("writing {}", p.display()))
    }

    /// Forgets `name`, after it was deleted.
    pub fn release(&self, kind: Kind, name: &str) {
        let _ = fs::remove_file(self.path(kind, name));
    }

    #[cfg(test)]
    pub fn owns(&self, kind: Kind, name: &str) -> bool {
        self.path(kind, name).exists()
    }

    /// Everything of `kind` this instance made and has not deleted yet.
    pub fn all(&self, kind: Kind) -> HashSet<String> {
        fs::read_dir(self.root.join(kind.dir()))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_per_instance_and_released() {
        let base = std::env::temp_dir().join(format!("netd-owned-{}", std::process::id()));
        let a = Owned::new(&base.join("a")).unwrap();
        let b = Owned::new(&base.join("b")).unwrap();
        a.claim(Kind::Netns, "netd-web").unwrap();
        a.claim(Kind::Link, "ndv123").unwrap();
        assert!(a.owns(Kind::Netns, "netd-web"));
        assert!(
            !b.owns(Kind::Netns, "netd-web"),
            "another instance's is not ours"
        );
        assert!(!a.owns(Kind::Link, "netd-web"), "kinds are apart");
        assert_eq!(a.all(Kind::Link), HashSet::from(["ndv123".to_string()]));
        a.release(Kind::Netns, "netd-web");
        assert!(a.all(Kind::Netns).is_empty());
        fs::remove_dir_all(base).unwrap();
    }
}
