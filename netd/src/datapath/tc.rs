//! A container's endpoint programs reach its host veth through tc: the veth gets a
//! `clsact` qdisc bound to one of this agent's shared tc blocks, whose cls_bpf filters
//! (direct-action) hold the programs. The node's own hooks stay TCX links (links.rs).
//!
//! Why not a TCX link per veth: a TCX attach swaps the device's entry pair and then
//! waits a full RCU grace period (`tcx_entry_sync`) for readers of the old one, even on
//! a device no packet has crossed yet: 10 ms at HZ=250 on an idle host, 50 to 150 ms
//! on one busy with thousands of namespaces, two thirds of the agent's time for a new
//! container. Binding a qdisc waits at most an expedited grace period.
//!
//! Why shared blocks, not filters per veth: a block of its own per qdisc goes on the
//! kernel's list of blocks for indirect offload, which every new block is looked up in
//! (`flow_indr_dev_setup_offload`): a walk over every veth of the host, two per
//! container, 3 ms a container at 5,000. Bound to a shared block, a veth adds nothing
//! there, and gets its programs in the same step as its qdisc.
//!
//! One block per set of programs a veth takes (IPv4, plus IPv6, plus the overlay, or
//! both) and one empty egress block, numbered from the agent's bpf directory so that
//! two agents on one host never share one. A block goes when its last veth goes, and
//! the next veth bound makes it again: the filters are checked at each bind (one dump
//! of at most three), put in if missing, and swapped for this agent's programs where an
//! earlier agent's are there (cls_bpf replaces a filter's program atomically, so a
//! restart leaves no moment without one). Filters are named `PROGRAM@TAG`, TAG the
//! agent's; a filter of another name in one of its blocks is not touched, and the bind
//! fails naming it.
use std::{os::fd::AsFd, path::Path};

use anyhow::bail;
use aya::programs::SchedClassifier;
use netd_common::prog_names;

use super::Datapath;
use crate::netlink::{BpfFilter, Netlink};

/// One of the programs an endpoint's veth may carry.
#[derive(Clone, Copy, Debug)]
pub struct EndpointProg {
    /// The program's name in the object.
    pub name: &'static str,
    /// The prefix of its pin under links/ on a veth an earlier release attached
    /// through TCX.
    pub pin: &'static str,
    /// Its filter priority: tc runs lower ones first, and a program's TC_ACT_UNSPEC
    /// (TCX_NEXT) hands the packet to the next.
    prio: u16,
}

/// IPv6 first (the others leave IPv6 alone), then the overlay, then the endpoint
/// program, which gets what those pass on.
pub const ENDPOINT6: EndpointProg = EndpointProg {
    name: prog_names::ENDPOINT_EGRESS6,
    pin: "v6",
    prio: 1,
};
pub const OVERLAY: EndpointProg = EndpointProg {
    name: prog_names::OVERLAY_EGRESS,
    pin: "ov",
    prio: 2,
};
pub const ENDPOINT: EndpointProg = EndpointProg {
    name: prog_names::ENDPOINT_EGRESS,
    pin: "ep",
    prio: 3,
};
pub const ALL: [EndpointProg; 3] = [ENDPOINT6, OVERLAY, ENDPOINT];

/// Which programs an endpoint's veth takes besides `endpoint_egress`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgSet {
    /// An endpoint with an IPv6 address: `endpoint_egress6`.
    pub ipv6: bool,
    /// An endpoint of a multi-host network: `overlay_egress`.
    pub overlay: bool,
}

impl ProgSet {
    pub fn progs(self) -> impl Iterator<Item = EndpointProg> {
        [
            self.ipv6.then_some(ENDPOINT6),
            self.overlay.then_some(OVERLAY),
            Some(ENDPOINT),
        ]
        .into_iter()
        .flatten()
    }

    /// Its block's place after the agent's first block.
    fn offset(self) -> u32 {
        u32::from(self.ipv6) | (u32::from(self.overlay) << 1)
    }
}

/// The agent's tc blocks and filter names, from its bpf directory.
#[derive(Clone, Copy, Debug)]
pub struct Blocks {
    tag: u32,
}

/// Block numbers netd takes from: four ingress blocks and an egress one per agent.
const BLOCK_BASE: u32 = 0x6e64_0000;
const BLOCKS_PER_AGENT: u32 = 5;
const AGENT_SLOTS: u32 = 0x3000;

impl Blocks {
    pub fn of(bpf_dir: &Path) -> Blocks {
        // FNV-1a: stable across releases, so a new agent finds the blocks it inherits.
        let tag = bpf_dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            });
        Blocks { tag }
    }

    fn first(self) -> u32 {
        BLOCK_BASE + (self.tag % AGENT_SLOTS) * BLOCKS_PER_AGENT
    }

    pub fn ingress(self, set: ProgSet) -> u32 {
        self.first() + set.offset()
    }

    pub fn egress(self) -> u32 {
        self.first() + 4
    }

    /// The name of `p`'s filters in this agent's blocks.
    pub fn filter_name(self, p: EndpointProg) -> String {
        format!("{}@{:08x}", p.name, self.tag)
    }
}

impl Datapath {
    /// Binds the veth with ifindex `index` to the block of `set`, whose filters are
    /// made sure of first if the veth is its first.
    pub(super) async fn bind_to_block(
        &mut self,
        nl: &Netlink,
        index: u32,
        set: ProgSet,
    ) -> anyhow::Result<()> {
        let block = self.blocks.ingress(set);
        nl.add_clsact_in_blocks(index, block, self.blocks.egress())
            .await?;
        self.fill_block(nl, block, set).await
    }

    /// Makes block `block` hold this agent's programs of `set`.
    async fn fill_block(&mut self, nl: &Netlink, block: u32, set: ProgSet) -> anyhow::Result<()> {
        let there = nl.block_filters(block).await?;
        check_foreign(&there, block, set, self.blocks)?;
        for p in set.progs() {
            let prog: &mut SchedClassifier = self.program(p.name)?;
            let id = prog.info()?.id();
            if there.iter().any(|f| f.prio == p.prio && f.id == id) {
                continue;
            }
            // Owned, so that no borrow of the datapath spans the request.
            let fd = prog.fd()?.try_clone()?;
            nl.set_block_filter(block, p.prio, fd.as_fd(), &self.blocks.filter_name(p))
                .await?;
        }
        Ok(())
    }
}

/// Fails on a filter in `block` that is not one of `set`'s of this agent.
fn check_foreign(
    there: &[BpfFilter],
    block: u32,
    set: ProgSet,
    blocks: Blocks,
) -> anyhow::Result<()> {
    for f in there {
        let ours = set
            .progs()
            .any(|p| p.prio == f.prio && blocks.filter_name(p) == f.name);
        if !ours {
            bail!(
                "tc block {block} holds a filter netd did not put there ({}, priority {}): \
                 something else uses netd's block numbers",
                f.name,
                f.prio
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_of_programs_has_a_block_of_its_own_and_agents_differ() {
        let a = Blocks::of(Path::new("/sys/fs/bpf/netd"));
        let sets = [(false, false), (true, false), (false, true), (true, true)]
            .map(|(ipv6, overlay)| a.ingress(ProgSet { ipv6, overlay }));
        let mut all = sets.to_vec();
        all.push(a.egress());
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(all
            .iter()
            .all(|b| (BLOCK_BASE..BLOCK_BASE + 0x10000).contains(b)));
        let b = Blocks::of(Path::new("/run/other/bpf"));
        assert_ne!(a.ingress(ProgSet::default()), b.ingress(ProgSet::default()));
        assert_ne!(a.filter_name(ENDPOINT), b.filter_name(ENDPOINT));
        // The same directory gives the same blocks: a new agent finds them.
        assert_eq!(
            Blocks::of(Path::new("/sys/fs/bpf/netd")).egress(),
            a.egress()
        );
    }

    #[test]
    fn a_filter_of_another_agent_in_a_block_is_refused() {
        let a = Blocks::of(Path::new("/a"));
        let b = Blocks::of(Path::new("/b"));
        let set = ProgSet::default();
        let ours = BpfFilter {
            prio: 3,
            name: a.filter_name(ENDPOINT),
            id: 7,
        };
        assert!(check_foreign(std::slice::from_ref(&ours), 1, set, a).is_ok());
        let theirs = BpfFilter {
            name: b.filter_name(ENDPOINT),
            ..ours.clone()
        };
        let e = check_foreign(&[ours, theirs], 1, set, a).unwrap_err();
        assert!(e.to_string().contains("did not put there"), "{e}");
    }
}
