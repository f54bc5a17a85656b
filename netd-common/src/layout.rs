//! The layout of what the datapath leaves pinned, so one release can read what another
//! left: agents are restarted and upgraded while the pinned programs keep forwarding.
//!
//! `DATAPATH_LAYOUT` numbers the layout of the whole set of pinned maps. It is recorded
//! in a pinned map of its own (`map_names::LAYOUT`, an array of one `u32`) by every
//! agent that has migrated the pins; pins without it are layout 1 (every release before
//! the record existed). Each map's current layout is dated by `SINCE`: the datapath
//! layout that introduced it. An agent reuses a pin when the recorded layout is at least
//! the map's `SINCE` and the pinned map's type and sizes match; otherwise it migrates
//! the map (see the agent's `datapath::layout`). A recorded layout newer than
//! `DATAPATH_LAYOUT` is a downgrade, which an agent refuses before touching anything.
//!
//! Changing a pinned map's type, key, value or meaning: bump `DATAPATH_LAYOUT`, set the
//! map's `SINCE` entry to the new number, and say in the agent how its entries carry
//! over. Growing a counter table (appending drop reasons or events) changes only the
//! arrays' sizes; the agent carries counters over by index.
use crate::map_names;

/// The datapath's layout version (see the module doc).
pub const DATAPATH_LAYOUT: u32 = 2;

/// The layout pins carry when no `map_names::LAYOUT` record exists.
pub const UNRECORDED_LAYOUT: u32 = 1;

/// For each pinned map, the datapath layout that introduced its current layout. A map
/// not listed is layout 1's.
pub const SINCE: &[(&str, u32)] = &[(map_names::LAYOUT, 2)];

/// The layout in which `map`'s current layout appeared.
pub fn since(map: &str) -> u32 {
    SINCE
        .iter()
        .find(|(n, _)| *n == map)
        .map(|(_, v)| *v)
        .unwrap_or(UNRECORDED_LAYOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_map_is_dated_after_the_current_layout() {
        for (name, v) in SINCE {
            assert!(*v <= DATAPATH_LAYOUT, "{name} dated {v}");
            assert!(*v >= UNRECORDED_LAYOUT, "{name} dated {v}");
        }
        assert_eq!(since(map_names::PORTS), UNRECORDED_LAYOUT);
    }
}
