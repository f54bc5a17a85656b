//! tc through rtnetlink: clsact qdiscs bound to shared blocks, and direct-action BPF
//! filters in those blocks. A shared block's filters act on every device bound to it;
//! the block exists while one qdisc binds it.
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption},
    RouteNetlinkMessage,
};

use super::Netlink;

/// `TCA_INGRESS_BLOCK` and `TCA_EGRESS_BLOCK` (include/uapi/linux/rtnetlink.h), which
/// netlink-packet-route has no names for.
const TCA_INGRESS_BLOCK: u16 = 13;
const TCA_EGRESS_BLOCK: u16 = 14;
/// Every filter of netd has this handle; the priority tells them apart.
const FILTER_HANDLE: u32 = 1;

/// A tc filter, of any kind: BPF ones name their program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    /// The filter's priority (tc runs lower ones first).
    pub prio: u16,
    /// Its classifier (`bpf`, `flower`, `u32`, ..).
    pub kind: String,
    /// The name a BPF filter was given (`TCA_BPF_NAME`).
    pub name: Option<String>,
    /// The kernel's id of a BPF filter's program.
    pub id: Option<u32>,
}

/// The filter `m` describes; None for the message a dump gives each priority's
/// classifier itself (handle 0, no options).
fn tc_filter(m: &TcMessage) -> Option<TcFilter> {
    if u32::from(m.header.handle) == 0 {
        return None;
    }
    let mut f = TcFilter {
        prio: (m.header.info >> 16) as u16,
        kind: String::new(),
        name: None,
        id: None,
    };
    for a in &m.attributes {
        match a {
            TcAttribute::Kind(k) => f.kind.clone_from(k),
            TcAttribute::Options(opts) => {
                for o in opts {
                    match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => f.name = Some(n.clone()),
                        TcOption::Bpf(TcFilterBpfOption::ProgId(i)) => f.id = Some(*i),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(f)
}

fn u32_nla(kind: u16, v: u32) -> TcAttribute {
    TcAttribute::Other(DefaultNla::new(kind, v.to_ne_bytes().to_vec()))
}

impl Netlink {
    /// Sends `msg` with `flags` and waits for the kernel's answer.
    async fn tc_request(&self, msg: RouteNetlinkMessage, flags: u16) -> anyhow::Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut answers = self.handle.clone().request(req)?;
        while let Some(m) = answers.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                return Err(rtnetlink::Error::NetlinkError(e).into());
            }
        }
        Ok(())
    }

    /// Adds a clsact qdisc to link `index` whose ingress and egress are the shared
    /// blocks `ingress` and `egress` (made if no qdisc binds them yet). False if the
    /// link has a clsact qdisc already.
    pub async fn add_clsact_in_blocks(
        &self,
        index: u32,
        ingress: u32,
        egress: u32,
    ) -> anyhow::Result<bool> {
        let mut m = TcMessage::with_index(index as i32);
        m.header.parent = TcHandle::CLSACT;
        m.header.handle = TcHandle::from(0xffff_0000);
        m.attributes = vec![
            TcAttribute::Kind("clsact".into()),
            u32_nla(TCA_INGRESS_BLOCK, ingress),
            u32_nla(TCA_EGRESS_BLOCK, egress),
        ];
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        match self
            .tc_request(RouteNetlinkMessage::NewQueueDiscipline(m), flags)
            .await
        {
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(false),
            r => r
                .map(|()| true)
                .with_context(|| format!("adding clsact to link {index} in block {ingress}")),
        }
    }

    /// The filters of shared block `block`; none if it does not exist (no qdisc binds
    /// it).
    pub async fn block_filters(&self, block: u32) -> anyhow::Result<Vec<TcFilter>> {
        let mut m = TcMessage::with_index(TcHeader::TCM_IFINDEX_MAGIC_BLOCK as i32);
        m.header.parent = TcHandle::from(block);
        self.filters(m)
            .await
            .with_context(|| format!("listing the filters of tc block {block}"))
    }

    /// The filters at link `index`'s tc ingress (a shared block's if it is bound to
    /// one).
    pub async fn ingress_filters(&self, index: u32) -> anyhow::Result<Vec<TcFilter>> {
        let mut m = TcMessage::with_index(index as i32);
        m.header.parent = TcHandle {
            major: 0xffff,
            minor: TcHandle::MIN_INGRESS,
        };
        self.filters(m)
            .await
            .with_context(|| format!("listing the tc filters of link {index}"))
    }

    async fn filters(&self, m: TcMessage) -> anyhow::Result<Vec<TcFilter>> {
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(m));
        req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let answers = self.handle.clone().request(req)?;
        let msgs: Vec<TcMessage> = answers
            .map(|m| match m.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(t)) => {
                    Ok(Some(t))
                }
                NetlinkPayload::Error(e) => Err(rtnetlink::Error::NetlinkError(e)),
                _ => Ok(None),
            })
            .try_filter_map(|t| async move { Ok(t) })
            .try_collect()
            .await?;
        Ok(msgs.iter().filter_map(tc_filter).collect())
    }

    /// Deletes the filter at priority `prio` of shared block `block`.
    pub async fn del_block_filter(&self, block: u32, prio: u16) -> anyhow::Result<()> {
        let mut m = TcMessage::with_index(TcHeader::TCM_IFINDEX_MAGIC_BLOCK as i32);
        m.header.parent = TcHandle::from(block);
        m.header.info = u32::from(prio) << 16;
        self.tc_request(RouteNetlinkMessage::DelTrafficFilter(m), 0)
            .await
            .with_context(|| format!("deleting priority {prio} of tc block {block}"))
    }

    /// Puts program `prog` as a direct-action filter named `name` at priority `prio` of
    /// shared block `block`; a filter there already gets the program in its place
    /// (cls_bpf swaps it atomically).
    pub async fn set_block_filter(
        &self,
        block: u32,
        prio: u16,
        prog: BorrowedFd<'_>,
        name: &str,
    ) -> anyhow::Result<()> {
        let mut m = TcMessage::with_index(TcHeader::TCM_IFINDEX_MAGIC_BLOCK as i32);
        m.header.parent = TcHandle::from(block);
        m.header.handle = TcHandle::from(FILTER_HANDLE);
        let all = (libc::ETH_P_ALL as u16).to_be();
        m.header.info = (u32::from(prio) << 16) | u32::from(all);
        m.attributes = vec![
            TcAttribute::Kind("bpf".into()),
            TcAttribute::Options(vec![
                TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
                TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
                TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
            ]),
        ];
        self.tc_request(RouteNetlinkMessage::NewTrafficFilter(m), NLM_F_CREATE)
            .await
            .with_context(|| format!("putting {name} in tc block {block} (priority {prio})"))
    }
}

/// The errno of a netlink error, if `e` is one.
fn errno(e: &anyhow::Error) -> Option<i32> {
    match e.downcast_ref::<rtnetlink::Error>()? {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}
