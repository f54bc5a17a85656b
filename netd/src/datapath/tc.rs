//! A container's endpoint programs go on its host veth through tc: a `clsact` qdisc and
//! cls_bpf filters in direct-action mode, not TCX links as the node's own hooks.
//!
//! Why: a TCX attach swaps the device's entry pair and then waits a full RCU grace
//! period (`tcx_entry_sync`) for readers of the old one, even on a device no packet
//! has crossed yet. That is 10 ms at HZ=250 on an idle host and 50 to 150 ms on one
//! busy with thousands of namespaces, on the path of every new container: two thirds
//! of the agent's time for one. A filter's insertion waits at most an expedited grace
//! period (`mini_qdisc_pair_swap`), about 0.2 ms.
//!
//! A filter belongs to its veth and needs no pin to outlast the agent; it goes when the
//! veth goes. A new agent swaps its program in place: cls_bpf replaces the program of a
//! filter of the same priority and handle atomically, so no packet passes without one.
//! Endpoints an earlier release attached through pinned TCX links keep them (the pins
//! are adopted as before); a veth is all one kind or the other, so its programs keep
//! their order.
use anyhow::Context;
use aya::programs::{
    links::Link as _,
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    ProgramError, SchedClassifier, TcAttachType,
};
use netd_common::prog_names;

use super::Datapath;

/// One of the programs an endpoint's veth may carry.
#[derive(Clone, Copy, Debug)]
pub struct EndpointProg {
    /// The program's name in the object.
    pub name: &'static str,
    /// The prefix of its pin under links/ on a veth attached through TCX.
    pub pin: &'static str,
    /// Its filter priority: tc runs lower ones first, and a program's TC_ACT_UNSPEC
    /// (TCX_NEXT) hands the packet to the next.
    prio: u16,
}

/// IPv6 first (the others leave IPv6 alone), then the overlay, then the endpoint
/// program, which gets what those pass on: the order the TCX links had.
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

/// Every filter of netd has this handle; the priority tells them apart.
const HANDLE: TcHandle = TcHandle::new(0, 1);

fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::TcError(TcError::NetlinkError(e)) | ProgramError::NetlinkError(e) => {
            e.raw_os_error()
        }
        _ => None,
    }
}

/// Adds the clsact qdisc to `veth` unless it has one.
fn clsact(veth: &str) -> anyhow::Result<()> {
    match tc::qdisc_add_clsact(veth) {
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.with_context(|| format!("adding the clsact qdisc to {veth}")),
    }
}

impl Datapath {
    /// Puts program `p` on `veth`'s tc ingress, or swaps it into the filter an earlier
    /// agent left there.
    pub(super) fn attach_filter(&mut self, p: EndpointProg, veth: &str) -> anyhow::Result<()> {
        clsact(veth)?;
        let prog: &mut SchedClassifier = self.program(p.name)?;
        let opts = NlOptions {
            priority: p.prio,
            handle: HANDLE,
            classid: None,
        };
        let id = match prog.attach_with_options(
            veth,
            TcAttachType::Ingress,
            TcAttachOptions::Netlink(opts),
        ) {
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                let link = SchedClassifierLink::attached(
                    veth,
                    TcAttachType::Ingress,
                    p.prio,
                    HANDLE,
                    None,
                )
                .with_context(|| format!("finding {veth}"))?;
                prog.attach_to_link(link)
            }
            r => r,
        }
        .with_context(|| format!("attaching {} to {veth}", p.name))?;
        // aya detaches a filter when its link is dropped; this one stays with the veth.
        std::mem::forget(prog.take_link(id)?);
        Ok(())
    }

    /// Removes program `p`'s filter from `veth`; nothing to do if the veth, its qdisc
    /// or the filter is gone.
    pub(super) fn detach_filter(p: EndpointProg, veth: &str) -> anyhow::Result<()> {
        let Ok(link) =
            SchedClassifierLink::attached(veth, TcAttachType::Ingress, p.prio, HANDLE, None)
        else {
            return Ok(());
        };
        match link.detach() {
            Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::EINVAL | libc::ENODEV)) => {
                Ok(())
            }
            r => r.with_context(|| format!("detaching {} from {veth}", p.name)),
        }
    }
}
