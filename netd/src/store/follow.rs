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
    /// The containers of `now` that are not the record at their place last time: new,
    /// changed, or moved by a removal before them.
    pub fn moved<'a>(&self, now: &'a [Arc<Container>]) -> Vec<&'a Arc<Container>> {
        now.iter()
            .enumerate()
            .filter(|(i, c)| !self.last.get(*i).is_some_and(|l| Arc::ptr_eq(l, c)))
            .map(|(_, c)| c)
            .collect()
    }

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
