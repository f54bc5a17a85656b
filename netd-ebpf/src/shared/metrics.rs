//! The two counter tables of `netd_common::counters`, each in its own per-CPU array.
//! Their index types differ, so an event cannot be counted as a drop or the reverse.
use aya_ebpf::maps::PerCpuArray;
use netd_common::{drop_reason, drop_reason::DropReason, event, event::Event};

use crate::maps::{DROPS, EVENTS};

/// Counts an event.
#[inline(always)]
pub fn count(e: Event) {
    bump(&EVENTS, e.0);
}

/// Counts a dropped packet. Called only at the single exit of each program, where an
/// `Err(DropReason)` becomes the drop verdict.
#[inline(always)]
pub fn count_drop(r: DropReason) {
    bump(&DROPS, r.0);
}

#[inline(always)]
fn bump(array: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = array.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *p += 1 };
    }
}

/// Counts a packet the NAT left to the stack untouched, by what it would have been
/// dropped for on its way out of a masquerading network (`parse::ParsedOf::Skip`).
#[inline(always)]
pub fn count_passed(r: DropReason) {
    if r.0 == drop_reason::MALFORMED.0 {
        count(event::MALFORMED_PASSED);
    } else if r.0 == drop_reason::FRAG_UNKNOWN.0 {
        count(event::FRAGMENT_PASSED);
    }
}
