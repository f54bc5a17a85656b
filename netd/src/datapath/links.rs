//! The node's program attachments (uplink, VXLAN device, XDP guard, cgroup), all through
//! bpf_link and all pinned under `<bpf-dir>/links`, so the datapath keeps running while
//! the agent is down. One helper adopts a link an earlier agent pinned (swapping the
//! freshly loaded program in with bpf_link_update: there is no moment without a
//! program) or attaches anew; TC and XDP use it alike. Endpoints go through tc blocks
//! instead (`tc.rs` says why); those of an earlier release keep their pinned links.
use std::{fs, path::Path};

use anyhow::{anyhow, Context};
use aya::programs::tc::TcAttachOptions;
use aya::programs::{
    links::{CgroupAttachMode, FdLink, PinnedLink},
    tc::SchedClassifierLink,
    xdp::{XdpLink, XdpLinkId},
    CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode,
};
use netd_common::prog_names;

use super::{tc, Datapath};
use crate::netlink::Netlink;

/// A program type whose links can be adopted from a pin.
trait Adoptable {
    type Id;
    /// Swaps this program into an existing link; None if the link is of another kind.
    fn adopt(&mut self, link: FdLink) -> Option<Self::Id>;
    fn take_fd_link(&mut self, id: Self::Id) -> anyhow::Result<FdLink>;
}

impl Adoptable for SchedClassifier {
    type Id = aya::programs::tc::SchedClassifierLinkId;
    fn adopt(&mut self, link: FdLink) -> Option<Self::Id> {
        let link = SchedClassifierLink::try_from(link).ok()?;
        self.attach_to_link(link).ok()
    }
    fn take_fd_link(&mut self, id: Self::Id) -> anyhow::Result<FdLink> {
        FdLink::try_from(self.take_link(id)?).map_err(|e| anyhow!("not an fd link: {e}"))
    }
}

impl Adoptable for Xdp {
    type Id = XdpLinkId;
    fn adopt(&mut self, link: FdLink) -> Option<Self::Id> {
        let link = XdpLink::try_from(link).ok()?;
        self.attach_to_link(link).ok()
    }
    fn take_fd_link(&mut self, id: Self::Id) -> anyhow::Result<FdLink> {
        FdLink::try_from(self.take_link(id)?).map_err(|e| anyhow!("not an fd link: {e}"))
    }
}

/// Adopts the link pinned at `pin` or makes one with `attach`, then pins it there.
fn adopt_or_attach<P: Adoptable>(
    prog: &mut P,
    pin: &Path,
    attach: impl FnOnce(&mut P) -> anyhow::Result<P::Id>,
) -> anyhow::Result<()> {
    let adopted = match PinnedLink::from_pin(pin) {
        Ok(pinned) => prog.adopt(pinned.unpin()?),
        Err(_) => None,
    };
    let id = match adopted {
        Some(id) => id,
        None => {
            let _ = fs::remove_file(pin);
            attach(prog)?
        }
    };
    prog.take_fd_link(id)?
        .pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

impl Datapath {
    pub(super) fn program<P>(&mut self, name: &str) -> anyhow::Result<&mut P>
    where
        for<'a> &'a mut P:
            TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing from the object"))?
            .try_into()?)
    }

    /// Attaches `prog` at TC ingress of `ifname` under the pin name `pin`.
    fn attach_tc(&mut self, prog: &str, ifname: &str, pin: &str) -> anyhow::Result<()> {
        let pin = self.links_dir.join(pin);
        let prog: &mut SchedClassifier = self.program(prog)?;
        adopt_or_attach(prog, &pin, |p| {
            p.attach(ifname, TcAttachType::Ingress)
                .with_context(|| format!("attaching to {ifname}"))
        })
    }

    /// Unpins a link: that drops the last reference, so the kernel detaches the program.
    fn detach(&self, pin: &str) -> anyhow::Result<()> {
        let pin_path = self.links_dir.join(pin);
        match PinnedLink::from_pin(&pin_path) {
            Ok(p) => drop(p.unpin()?),
            Err(_) => {
                let _ = fs::remove_file(&pin_path);
            }
        }
        Ok(())
    }

    /// TC on the uplink, and the XDP guard in `xdp` mode (None: no guard).
    pub fn attach_uplink(&mut self, ifname: &str, xdp: Option<XdpMode>) -> anyhow::Result<()> {
        self.attach_tc(prog_names::UPLINK_INGRESS, ifname, "uplink")?;
        // IPv6 first in the chain: uplink_ingress leaves IPv6 to it.
        self.attach_first(prog_names::UPLINK_INGRESS6, ifname, "uplink6")?;
        match xdp {
            Some(mode) => {
                let pin = self.links_dir.join("uplink-xdp");
                let prog: &mut Xdp = self.program(prog_names::UPLINK_GUARD)?;
                adopt_or_attach(prog, &pin, |p| {
                    p.attach(ifname, mode)
                        .with_context(|| format!("attaching uplink_guard (XDP) to {ifname}"))
                })
            }
            None => self.detach("uplink-xdp"),
        }
    }

    /// The programs of an endpoint's host veth `veth` (ifindex `index`): bound to this
    /// agent's tc block for `set` (tc.rs), or, on a veth an earlier release attached
    /// through pinned TCX links, those links with the new programs swapped in.
    pub async fn attach_endpoint(
        &mut self,
        nl: &Netlink,
        veth: &str,
        index: u32,
        set: tc::ProgSet,
    ) -> anyhow::Result<()> {
        if self.adopt_endpoint_links(veth, set)? {
            return Ok(());
        }
        self.bind_to_block(nl, veth, index, set).await
    }

    /// Swaps the new programs into `veth`'s pinned TCX links if an earlier release left
    /// them; false if it did not, or if they went with an earlier veth of that name
    /// (their pins go too).
    fn adopt_endpoint_links(&mut self, veth: &str, set: tc::ProgSet) -> anyhow::Result<bool> {
        let mut adopted = false;
        for p in set.progs() {
            let pin = self.links_dir.join(format!("{}-{veth}", p.pin));
            let Ok(pinned) = PinnedLink::from_pin(&pin) else {
                continue;
            };
            let prog: &mut SchedClassifier = self.program(p.name)?;
            if let Some(id) = prog.adopt(pinned.unpin()?) {
                prog.take_fd_link(id)?
                    .pin(&pin)
                    .with_context(|| format!("pinning {}", pin.display()))?;
                adopted = true;
            }
        }
        Ok(adopted)
    }

    /// Unpins the TCX links of an endpoint an earlier release attached. A veth bound to
    /// a block leaves it when the veth is deleted, not before: no packet of the
    /// container passes it without the programs while it is going.
    pub fn detach_endpoint(&self, veth: &str) -> anyhow::Result<()> {
        for p in tc::ALL {
            self.detach(&format!("{}-{veth}", p.pin))?;
        }
        Ok(())
    }

    /// Attaches `prog` at TC ingress of `ifname` ahead of the programs already there
    /// (tcx order: first), under the pin name `pin`.
    fn attach_first(&mut self, prog: &str, ifname: &str, pin: &str) -> anyhow::Result<()> {
        let pin = self.links_dir.join(pin);
        let p: &mut SchedClassifier = self.program(prog)?;
        adopt_or_attach(p, &pin, |p| {
            p.attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .with_context(|| format!("attaching {prog} to {ifname}"))
        })
    }

    /// The decapsulating program on the node's VXLAN device.
    pub fn attach_vxlan(&mut self, ifname: &str) -> anyhow::Result<()> {
        self.attach_tc(prog_names::OVERLAY_INGRESS, ifname, "vxlan")
    }

    /// Attaches the socket programs to the cgroup (v2) directory `cgroup`. A link pinned
    /// by an earlier agent is replaced after the new one is in place (several programs
    /// may sit on one cgroup), so connect() is never left untranslated.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> anyhow::Result<()> {
        let dir = fs::File::open(cgroup)
            .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
        for name in [
            prog_names::SOCK_CONNECT4,
            prog_names::SOCK_SENDMSG4,
            prog_names::SOCK_RECVMSG4,
            prog_names::SOCK_CONNECT6,
            prog_names::SOCK_SENDMSG6,
            prog_names::SOCK_RECVMSG6,
        ] {
            let pin_path = self.links_dir.join(format!("cgroup-{name}"));
            let old = PinnedLink::from_pin(&pin_path).ok();
            let prog: &mut CgroupSockAddr = self.program(name)?;
            // Through bpf_link, cgroup programs always stack (the kernel rejects an
            // explicit ALLOW_MULTI flag there), so the old and new links can coexist.
            let id = prog
                .attach(&dir, CgroupAttachMode::default())
                .with_context(|| format!("attaching {name} to {}", cgroup.display()))?;
            let link = FdLink::try_from(prog.take_link(id)?)
                .map_err(|e| anyhow!("link of {name} is not an fd link: {e}"))?;
            if let Some(old) = old {
                drop(old.unpin()?);
            }
            link.pin(&pin_path)
                .with_context(|| format!("pinning {}", pin_path.display()))?;
        }
        Ok(())
    }

    /// Pinned endpoint links whose veth is not in `keep`: leftovers of removed containers.
    pub fn stale_endpoint_links(&self, keep: &std::collections::HashSet<String>) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.links_dir) else {
            return Vec::new();
        };
        let mut stale: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                name.strip_prefix("ep-")
                    .or_else(|| name.strip_prefix("ov-"))
                    .or_else(|| name.strip_prefix("v6-"))
                    .map(String::from)
            })
            .filter(|v| !keep.contains(v))
            .collect();
        stale.sort();
        stale.dedup();
        stale
    }
}

/// Removes a datapath whole (`netd daemon --cleanup`): every pinned link (which detaches
/// its program: the pin holds the last reference), then every pinned map, then the
/// directory. Returns how many pins went. Needs no loaded object, so it removes a
/// datapath of any layout.
pub fn remove_all(bpf_dir: &Path) -> anyhow::Result<usize> {
    let pins = |dir: &Path| -> Vec<std::path::PathBuf> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut removed = 0;
    for pin in pins(&bpf_dir.join("links")) {
        match PinnedLink::from_pin(&pin) {
            Ok(p) => drop(p.unpin()?),
            Err(_) => fs::remove_file(&pin)?,
        }
        removed += 1;
    }
    for dir in [bpf_dir.join("old-layout"), bpf_dir.to_path_buf()] {
        for pin in pins(&dir) {
            fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
            removed += 1;
        }
    }
    if bpf_dir.exists() {
        fs::remove_dir_all(bpf_dir).with_context(|| format!("removing {}", bpf_dir.display()))?;
    }
    Ok(removed)
}

/// Every pinned program link of a datapath, held open by this process: while held, a
/// link stays attached even if another process removes its pin.
pub struct HeldLinks(Vec<(std::path::PathBuf, FdLink)>);

/// Opens every pinned link under `bpf_dir` (`netd daemon --replace`, before it stops
/// the agent it replaces).
pub fn hold_links(bpf_dir: &Path) -> anyhow::Result<HeldLinks> {
    let mut held = Vec::new();
    if let Ok(rd) = fs::read_dir(bpf_dir.join("links")) {
        for e in rd.flatten() {
            let link = PinnedLink::from_pin(e.path())
                .with_context(|| format!("opening {}", e.path().display()))?;
            held.push((e.path(), FdLink::from(link)));
        }
    }
    Ok(HeldLinks(held))
}

impl HeldLinks {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Pins again every link whose pin is gone (an agent that unpinned its links when
    /// it stopped), so the next agent adopts it; returns how many. The others are just
    /// let go: their pins hold them.
    pub fn repin_missing(self) -> anyhow::Result<usize> {
        let mut n = 0;
        for (path, link) in self.0 {
            if !path.exists() {
                link.pin(&path)
                    .with_context(|| format!("pinning {} again", path.display()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}
