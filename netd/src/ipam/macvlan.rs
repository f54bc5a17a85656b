//! A macvlan network's parent (`-o parent=IF` or `IF.VLAN`), as Docker checks it.
use std::collections::HashSet;

use super::invalid;
use crate::{
    error::NetdError,
    model::{split_parent, NetworkSpec, Plumbing, OPT_MACVLAN_MODE, OPT_PARENT},
    store::State,
};

/// The link a macvlan network owns on the host: the 802.1q sub-interface `IF.VLAN` it
/// makes with the network and removes with it, or "" when the parent is a plain
/// interface or a sub-interface that exists already (someone else's). `links` are the
/// host namespace's interfaces.
pub fn own_link(
    spec: &NetworkSpec,
    state: &State,
    links: &HashSet<String>,
) -> Result<String, NetdError> {
    let parent = spec
        .options
        .get(OPT_PARENT)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            invalid("the macvlan driver needs -o parent=INTERFACE (or INTERFACE.VLAN)".into())
        })?;
    if let Some(mode) = spec.options.get(OPT_MACVLAN_MODE) {
        if mode != "bridge" {
            return Err(invalid(format!(
                "invalid {OPT_MACVLAN_MODE} {mode:?}: netd's macvlan driver has bridge mode only"
            )));
        }
    }
    if spec.subnet.is_none() {
        return Err(invalid(format!(
            "a macvlan network needs --subnet: the subnet of {parent}'s segment"
        )));
    }
    if let Some(other) = state.networks.iter().find(|n| {
        n.traits().plumbing == Plumbing::Macvlan && n.options.get(OPT_PARENT) == Some(parent)
    }) {
        return Err(NetdError::Conflict(format!(
            "network {} is already using parent interface {parent}",
            other.name
        )));
    }
    let (base, vlan) = split_parent(parent)?;
    if links.contains(parent.as_str()) {
        return Ok(String::new());
    }
    match vlan {
        Some(_) if links.contains(base) => Ok(parent.clone()),
        _ => Err(invalid(format!(
            "parent interface {base} does not exist in the host namespace"
        ))),
    }
}
