//! The datapath's counters, in two tables: drop reasons (why a packet was dropped; each
//! drop counts exactly one, at the single exit of its program) and events (what the
//! datapath did: rewrites, new flows, redirects). Each table is one list below, from
//! which `counter_table!` makes the index constants, `COUNT`, `NAMES` and `DOCS`
//! together, so they cannot disagree. Each table has its own per-CPU array, indexed
//! from 0, and its own index type, so an event can never be counted as a drop.

/// Declares a counter table: a module with an index type, one constant of that type per
/// entry (numbered in order from 0), and `COUNT`, `NAMES` (the name in `netd stats`)
/// and `DOCS` (the entry's doc comment), indexed like the constants.
#[macro_export]
macro_rules! counter_table {
    (
        $(#[doc = $mdoc:literal])*
        pub mod $module:ident : $ty:ident {
            $( $(#[doc = $doc:literal])+ $name:ident = $label:literal, )+
        }
    ) => {
        $(#[doc = $mdoc])*
        pub mod $module {
            /// An index into this table (and its counter array).
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            #[repr(transparent)]
            pub struct $ty(pub u32);

            // The enum numbers the entries; the constants below carry its values.
            #[allow(
                non_camel_case_types,
                clippy::upper_case_acronyms,
                dead_code,
                reason = "variants are named like the constants; only their values are used"
            )]
            #[repr(u32)]
            enum Index {
                $($name,)+
            }

            $(
                $(#[doc = $doc])+
                pub const $name: $ty = $ty(Index::$name as u32);
            )+

            /// Number of entries, the size of the table's counter array.
            pub const COUNT: u32 = [$($label),+].len() as u32;
            /// Names, indexed like the constants.
            pub const NAMES: [&str; COUNT as usize] = [$($label),+];
            /// One-line descriptions (the entries' doc comments), indexed like the constants.
            pub const DOCS: [&str; COUNT as usize] = [$(concat!($($doc),+)),+];
        }
    };
}

counter_table! {
    /// Why a packet was dropped. Names keep the words `netd stats` has always shown.
    pub mod drop_reason: DropReason {
        /// A rewrite helper failed half-way: dropped rather than sent half-NATed.
        REWRITE_FAILED = "drop_rewrite_failed",
        /// No free masquerade source port for a new flow: dropped, never mis-mapped.
        SNAT_EXHAUSTED = "drop_snat_exhausted",
        /// The conntrack map refused a new flow's entry (out of memory, not a full LRU table).
        CT_INSERT_FAILED = "drop_ct_insert_failed",
        /// From outside, addressed straight to a NAT-protected container subnet.
        GUARD_TO_CONTAINER = "guard_drop_to_container",
        /// From outside with a container-subnet or loopback source (spoofed).
        GUARD_SPOOFED = "guard_drop_spoofed",
        /// From outside to loopback, or to a port published only on loopback.
        GUARD_LOOPBACK = "guard_drop_loopback",
        /// A container sent with a source IP that is not its own.
        SPOOFED_IP = "drop_spoofed_ip",
        /// A container sent with a source MAC that is not its own.
        SPOOFED_MAC = "drop_spoofed_mac",
        /// A container's ARP claimed an address or MAC that is not its own.
        SPOOFED_ARP = "drop_spoofed_arp",
        /// Between containers of different networks.
        OTHER_NETWORK = "drop_other_network",
        /// Between containers of a network with icc=false.
        ICC = "drop_icc",
        /// Leaving, or entering, an --internal network.
        INTERNAL = "drop_internal",
        /// Out of the VXLAN device, but not IPv4 from a container of that VNI on the
        /// node it came from (another node's container, or not an overlay's at all).
        OVERLAY_UNKNOWN_PEER = "drop_overlay_unknown_peer",
        /// Out of the VXLAN device, to an address that is no container of this node.
        OVERLAY_NO_ENDPOINT = "drop_overlay_no_endpoint",
        /// A container sent a router advertisement or an ICMPv6 redirect: no container
        /// may become its neighbours' router.
        ROUTER_ADVERT = "drop_router_advert",
        /// A container's neighbour advertisement claimed an address that is not its own.
        SPOOFED_ND = "drop_spoofed_nd",
        /// IPv6 from a container that has no IPv6 address on this network, or a broken
        /// IPv6 header.
        IPV6_REFUSED = "drop_ipv6_refused",
        /// IPv6 from a NAT66 network routed out of the uplink, which has no IPv6
        /// address to masquerade to: dropped, so no private source leaves the host.
        NAT66_NO_ADDRESS = "drop_nat66_no_address",
        /// A later fragment from a container whose first fragment netd did not see
        /// translated (out of order, or dropped): it cannot be translated, so it does
        /// not leave with the container's address.
        FRAG_UNKNOWN = "drop_frag_unknown",
        /// From a container of a masquerading network and routed out of the uplink,
        /// but nothing netd can translate (an ICMP message that is neither a query nor
        /// an error about a tracked flow, an IPv6 header chain too long to follow):
        /// dropped, so that no private source leaves the host.
        UNTRANSLATABLE = "drop_untranslatable",
        /// Broken headers from a container of a masquerading network, routed out of the
        /// uplink: dropped (the stack would forward whatever its IP checks accept).
        MALFORMED = "drop_malformed",
        /// A new masqueraded flow of a protocol without ports (GRE, ESP, ...) to a peer
        /// another container already reaches with that protocol: dropped, as the
        /// kernel's NAT drops it, since the replies could not be told apart.
        SNAT_CLASH = "drop_snat_clash",
        /// A fragmented SCTP packet whose port must change: its CRC32c covers the whole
        /// reassembled packet, whose length the first fragment does not tell.
        SCTP_FRAGMENT = "drop_sctp_fragment",
        /// A container's frame with a VLAN tag inside another: the kernel strips
        /// priority tags and would route what is inside past netd's checks.
        STACKED_VLAN = "drop_stacked_vlan",
        /// From outside, straight to a container of a `routed` network, to a port it
        /// does not publish and not part of a flow the datapath tracks.
        GUARD_UNPUBLISHED = "guard_drop_unpublished",
        /// To a published port (or a `routed` network's container port) from a source
        /// the network's or the daemon's published-port source restriction leaves out.
        SOURCE_DENIED = "drop_source_denied",
    }
}

counter_table! {
    /// What the datapath did with the packets it did not drop.
    pub mod event: Event {
        /// A packet of a published-port flow, rewritten towards its container.
        DNAT = "dnat",
        /// A reply of a published-port flow, rewritten back to the published address.
        DNAT_REPLY = "dnat_reply",
        /// A packet of a masqueraded flow, rewritten to the uplink's address.
        SNAT = "snat",
        /// A reply of a masqueraded flow, rewritten back to the container.
        SNAT_REPLY = "snat_reply",
        /// A new flow from a container to a published port through a host address.
        HAIRPIN = "hairpin",
        /// A new flow tracked: its two conntrack entries inserted.
        CT_NEW = "ct_new",
        /// A masquerade source port tried for a new flow was taken (range pressure).
        CT_PORT_TAKEN = "ct_port_taken",
        /// Another CPU tracked the same new flow first; its entries were used.
        CT_RACE_LOST = "ct_race_lost",
        /// A flow's first reply could not move it to the table of answered flows (full,
        /// --ct-max): it keeps working from the table of new flows, where a flood may
        /// evict it.
        CT_CONFIRM_FAILED = "ct_confirm_failed",
        /// Delivered with bpf_redirect or bpf_redirect_peer, past the stack.
        REDIRECT = "redirect",
        /// Of those, sent with bpf_redirect_neigh: the next hop had no neighbour entry yet.
        REDIRECT_NEIGH = "redirect_neigh",
        /// A redirect was not possible (no route, too big, helper error): the stack sent it.
        REDIRECT_FAILED = "redirect_failed",
        /// Broken headers: passed untouched, for the stack's own checks to judge.
        MALFORMED_PASSED = "malformed_passed",
        /// A later IP fragment netd saw no first fragment of (the host's own traffic,
        /// or one that came out of order): passed untouched to the stack.
        FRAGMENT_PASSED = "fragment_passed",
        /// A packet to a container of an overlay network on another node, tunnelled.
        OVERLAY_TX = "overlay_tx",
        /// A tunnelled packet delivered to its container here.
        OVERLAY_RX = "overlay_rx",
        /// An ARP request for a container on another node, answered here.
        OVERLAY_ARP = "overlay_arp_reply",
        /// The first fragment of a datagram netd translated: its ports are remembered
        /// for the fragments that follow.
        FRAGMENT_FIRST = "fragment_first",
        /// A later fragment, matched to its datagram's flow and translated alike.
        FRAGMENT_FOLLOWED = "fragment_followed",
        /// Too big for the uplink and not to be fragmented (IPv4 with DF, any IPv6):
        /// handed untranslated to the stack, which drops it and tells the container
        /// the path MTU ("fragmentation needed", "packet too big").
        PMTU_PASSED = "pmtu_passed",
        /// A packet of a flow straight between a container's address and the outside
        /// (gateway modes `routed`, `nat-unprotected`, trusted interfaces): tracked,
        /// not rewritten.
        DIRECT = "direct",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_numbered_in_order_and_named_uniquely() {
        assert_eq!(drop_reason::REWRITE_FAILED.0, 0);
        // Appended, never renumbered: the pinned arrays keep their counts by index.
        assert_eq!(drop_reason::NAT66_NO_ADDRESS.0, 17);
        assert_eq!(drop_reason::SOURCE_DENIED.0, drop_reason::COUNT - 1);
        assert_eq!(event::OVERLAY_ARP.0, 16);
        assert_eq!(event::DIRECT.0, event::COUNT - 1);
        assert_eq!(drop_reason::NAMES[drop_reason::ICC.0 as usize], "drop_icc");
        assert_eq!(event::NAMES[event::SNAT.0 as usize], "snat");
        let mut all: std::vec::Vec<&str> = drop_reason::NAMES.to_vec();
        all.extend(event::NAMES);
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            n,
            "a name is used twice: `netd stats` would merge them"
        );
        assert!(drop_reason::DOCS
            .iter()
            .chain(&event::DOCS)
            .all(|d| !d.trim().is_empty()));
    }
}
