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
//! there, and gets the block's programs as its qdisc is made.
//!
//! One block per set of programs a veth takes (IPv4, plus IPv6, plus the overlay, or
//! both) and one empty egress block, numbered from the instance's id (the state keeps
//! it) so that two agents on one host never share one. A block goes when its last veth
//! goes, and the next veth bound makes it again: the filters are checked at each bind
//! (one dump of at most three), put in if missing, and swapped for this agent's
//! programs where an earlier agent's are there (cls_bpf replaces a filter's program
//! atomically, so a restart leaves no moment without one). Filters are named
//! `PROGRAM@TAG`, TAG the instance's: one of its own that the set no longer has goes;
//! a filter of anyone else in one of its blocks is not touched, and the bind fails
//! naming it. So does a veth that has a clsact qdisc not bound to the block.
use std::os::fd::AsFd;

use anyhow::bail;
use aya::programs::SchedClassifier;
use netd_common::prog_names;

use super::Datapath;
use crate::netlink::{Netlink, TcFilter};

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

/// The agent's tc blocks and filter names, from its instance's id.
#[derive(Clone, Copy, Debug)]
pub struct Blocks {
    tag: u32,
}

/// What a filter in one of the agent's blocks is.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// One of the set's, holding this agent's program.
    Current,
    /// One of the set's, holding another program (an earlier agent's).
    Stale,
    /// The instance's, at a priority the set has no program for.
    Unwanted,
    /// Not the instance's.
    Foreign,
}

/// Block numbers netd takes from: four ingress blocks and an egress one per agent.
const BLOCK_BASE: u32 = 0x6e64_0000;
const BLOCKS_PER_AGENT: u32 = 5;
const AGENT_SLOTS: u32 = 0x3000;

impl Blocks {
    pub fn of(instance_id: &str) -> Blocks {
        // FNV-1a: stable across releases, so a new agent finds the blocks it inherits.
        let tag = instance_id.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
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

    /// What filter `f` of a block of `set` is, `id` giving this agent's program of a
    /// priority.
    fn classify(self, f: &TcFilter, set: ProgSet, id: impl Fn(EndpointProg) -> u32) -> Found {
        let Some(name) = f.name.as_deref().filter(|_| f.kind == "bpf") else {
            return Found::Foreign;
        };
        match set.progs().find(|p| p.prio == f.prio) {
            Some(p) if name == self.filter_name(p) => match f.id == Some(id(p)) {
                true => Found::Current,
                false => Found::Stale,
            },
            _ if name.ends_with(&format!("@{:08x}", self.tag)) => Found::Unwanted,
            _ => Found::Foreign,
        }
    }
}

impl Datapath {
    /// Binds the veth `veth` (ifindex `index`) to the block of `set`, whose filters are
    /// made sure of then.
    pub(super) async fn bind_to_block(
        &mut self,
        nl: &Netlink,
        veth: &str,
        index: u32,
        set: ProgSet,
    ) -> anyhow::Result<()> {
        let blocks = self.blocks()?;
        let block = blocks.ingress(set);
        let made = nl
            .add_clsact_in_blocks(index, block, blocks.egress())
            .await?;
        self.fill_block(nl, block, set).await?;
        // A clsact there already is the block's after a restart; anyone else's would
        // leave the veth without the programs.
        if !made
            && !self
                .endpoint_problems(veth, &nl.ingress_filters(index).await?, set)?
                .is_empty()
        {
            bail!("{veth} has a clsact qdisc that is not bound to netd's tc block {block}");
        }
        Ok(())
    }

    fn blocks(&self) -> anyhow::Result<Blocks> {
        self.blocks
            .ok_or_else(|| anyhow::anyhow!("the datapath has no instance id for its tc blocks"))
    }

    /// This agent's program of `p`, by the kernel's id.
    fn prog_id(&self, p: EndpointProg) -> anyhow::Result<u32> {
        let prog = self
            .ebpf
            .program(p.name)
            .ok_or_else(|| anyhow::anyhow!("program {} missing from the object", p.name))?;
        Ok(prog.info()?.id())
    }

    /// Makes block `block` hold this agent's programs of `set`, and only those.
    async fn fill_block(&mut self, nl: &Netlink, block: u32, set: ProgSet) -> anyhow::Result<()> {
        let blocks = self.blocks()?;
        let ids = ALL
            .iter()
            .map(|p| Ok((p.prio, self.prog_id(*p)?)))
            .collect::<anyhow::Result<Vec<(u16, u32)>>>()?;
        let id = |p: EndpointProg| {
            ids.iter()
                .find(|(prio, _)| *prio == p.prio)
                .map_or(0, |(_, id)| *id)
        };
        let there = nl.block_filters(block).await?;
        for f in &there {
            match blocks.classify(f, set, id) {
                Found::Foreign => bail!(
                    "tc block {block} holds a filter netd did not put there ({} {}, priority \
                     {}): something else uses netd's block numbers",
                    f.kind,
                    f.name.as_deref().unwrap_or("(no name)"),
                    f.prio
                ),
                Found::Unwanted => nl.del_block_filter(block, f.prio).await?,
                Found::Current | Found::Stale => {}
            }
        }
        for p in set.progs() {
            let current = there
                .iter()
                .any(|f| f.prio == p.prio && blocks.classify(f, set, id) == Found::Current);
            if current {
                continue;
            }
            // Owned, so that no borrow of the datapath spans the request.
            let prog: &mut SchedClassifier = self.program(p.name)?;
            let fd = prog.fd()?.try_clone()?;
            nl.set_block_filter(block, p.prio, fd.as_fd(), &blocks.filter_name(p))
                .await?;
        }
        Ok(())
    }

    /// What is wrong with the programs of `set` on `veth` (`filters`: those at its tc
    /// ingress): each that is missing, or not this agent's. A veth an earlier release
    /// attached through TCX links is checked by its endpoint program's pin.
    pub fn endpoint_problems(
        &self,
        veth: &str,
        filters: &[TcFilter],
        set: ProgSet,
    ) -> anyhow::Result<Vec<String>> {
        if self
            .links_dir
            .join(format!("{}-{veth}", ENDPOINT.pin))
            .exists()
        {
            return Ok(Vec::new());
        }
        let blocks = self.blocks()?;
        let mut problems = Vec::new();
        for p in set.progs() {
            let name = blocks.filter_name(p);
            let id = self.prog_id(p)?;
            match filters.iter().find(|f| f.name.as_deref() == Some(&name)) {
                None if p.name == ENDPOINT.name => {
                    problems.push(format!("the endpoint program is not on {veth}"))
                }
                None => problems.push(format!("{} is not on {veth}", p.name)),
                Some(f) if f.id != Some(id) => problems.push(format!(
                    "{veth} runs another {} than this agent's (program {:?}, not {id})",
                    p.name, f.id
                )),
                Some(_) => {}
            }
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_set_of_programs_has_a_block_of_its_own_and_agents_differ() {
        let a = Blocks::of("6f1c0a");
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
        let b = Blocks::of("0b99e2");
        assert_ne!(a.ingress(ProgSet::default()), b.ingress(ProgSet::default()));
        assert_ne!(a.filter_name(ENDPOINT), b.filter_name(ENDPOINT));
        // The same instance gives the same blocks: a new agent finds them.
        assert_eq!(Blocks::of("6f1c0a").egress(), a.egress());
    }

    #[test]
    fn filters_in_a_block_are_told_apart() {
        let (a, b) = (Blocks::of("a"), Blocks::of("b"));
        let set = ProgSet::default();
        let id = |_: EndpointProg| 7;
        let f = |prio, kind: &str, name: Option<String>, id| TcFilter {
            prio,
            kind: kind.into(),
            name,
            id,
        };
        let ours = Some(a.filter_name(ENDPOINT));
        assert_eq!(
            a.classify(&f(3, "bpf", ours.clone(), Some(7)), set, id),
            Found::Current
        );
        assert_eq!(
            a.classify(&f(3, "bpf", ours.clone(), Some(6)), set, id),
            Found::Stale
        );
        // An IPv6 program of ours in a block of IPv4 endpoints: ours, not wanted.
        let v6 = Some(a.filter_name(ENDPOINT6));
        assert_eq!(
            a.classify(&f(1, "bpf", v6, Some(7)), set, id),
            Found::Unwanted
        );
        assert_eq!(
            a.classify(
                &f(3, "bpf", ours, Some(7)),
                ProgSet {
                    ipv6: true,
                    overlay: false
                },
                id
            ),
            Found::Current
        );
        for other in [
            f(3, "bpf", Some(b.filter_name(ENDPOINT)), Some(7)),
            f(3, "bpf", None, Some(7)),
            f(3, "u32", None, None),
            f(3, "bpf", Some("endpoint_egress".into()), Some(7)),
        ] {
            assert_eq!(a.classify(&other, set, id), Found::Foreign, "{other:?}");
        }
    }
}
