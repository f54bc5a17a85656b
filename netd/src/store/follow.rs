//! Following the state's containers from one look to the next at the cost of what
//! changed: the state shares a container's record until something changes it, so a
//! record at its place of the list since the last look is known unchanged by its
//! pointer, without being read. The DNS tracker and the checks' index follow it so.
use std::{collections::HashSet, sync::Arc};

use crate::model::Container;

/// The list as last seen.
#[derive(Debug, Default)]
pub struct Follow {
    last: Vec<Arc<Container>>,
}

impl Follow {
    /// The containers of `now` that are not the record at their place last time (new,
    /// changed, or moved by a removal before them); `now` is remembered for the next
    /// look, at the cost of those.
    pub fn moved<'a>(&mut self, now: &'a [Arc<Container>]) -> Vec<&'a Arc<Container>> {
        self.last.truncate(now.len());
        let mut moved = Vec::new();
        for (i, c) in now.iter().enumerate() {
            match self.last.get_mut(i) {
                Some(l) if Arc::ptr_eq(l, c) => {}
                Some(l) => {
                    *l = c.clone();
                    moved.push(c);
                }
                None => {
                    self.last.push(c.clone());
                    moved.push(c);
                }
            }
        }
        moved
    }

    /// Remembers `now` whole (after a rebuild that did not ask what moved).
    pub fn remember(&mut self, now: &[Arc<Container>]) {
        self.last = now.to_vec();
    }
}

/// The ids of `known` that `now` no longer has (a walk over `now`: for when some went).
pub fn missing<'a>(known: impl Iterator<Item = &'a String>, now: &[Arc<Container>]) -> Vec<String> {
    let ids: HashSet<&str> = now.iter().map(|c| c.id.as_str()).collect();
    known
        .filter(|id| !ids.contains(id.as_str()))
        .cloned()
        .collect()
}
