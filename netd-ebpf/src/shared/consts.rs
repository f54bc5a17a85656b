//! The one table of header constants: frame offsets, EtherTypes, IPv6 next headers,
//! ICMP, ICMPv6 and ARP types (IP protocol numbers are `netd_common`'s, which the
//! agent shares).

/// Ethernet.
pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// IPv4 header fields, as offsets in the frame.
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub const IP_DST_OFF: usize = ETH_HLEN + 16;

/// IPv6 header fields, as offsets in the frame, and its length.
pub const IP6_NEXTHDR: usize = ETH_HLEN + 6;
pub const IP6_SADDR: usize = ETH_HLEN + 8;
pub const IP6_DADDR: usize = ETH_HLEN + 24;
pub const IP6_HLEN: usize = 40;

/// IPv6 next headers the parser walks or the checks look for.
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_ICMP6: u8 = 58;
pub const NEXTHDR_DEST: u8 = 60;

/// ICMP types.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;
/// Queries answered by the type below them, identified like echo (the kernel's
/// conntrack tracks these): timestamp, information, address mask requests.
pub const ICMP_TIMESTAMP: u8 = 13;
pub const ICMP_ADDRESS_REPLY: u8 = 18;

/// ICMPv6 types: errors, echo, multicast listeners and neighbour discovery.
pub const ICMP6_DEST_UNREACH: u8 = 1;
pub const ICMP6_PACKET_TOO_BIG: u8 = 2;
pub const ICMP6_TIME_EXCEEDED: u8 = 3;
pub const ICMP6_PARAM_PROB: u8 = 4;
pub const ICMP6_ECHO_REQUEST: u8 = 128;
pub const ICMP6_ECHO_REPLY: u8 = 129;
pub const MLD_QUERY: u8 = 130;
pub const MLD_REPORT: u8 = 131;
pub const MLD_DONE: u8 = 132;
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_ROUTER_ADVERT: u8 = 134;
pub const ND_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOUR_ADVERT: u8 = 136;
pub const ND_REDIRECT: u8 = 137;
pub const MLD2_REPORT: u8 = 143;

/// ARP operations.
pub const ARPOP_REQUEST: u16 = 1;
pub const ARPOP_REPLY: u16 = 2;
