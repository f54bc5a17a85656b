//! The datapaths the bench compares, by name, and the ports and addresses every one
//! of them uses.
use netd_lab::Uplink;
use serde::{Deserialize, Serialize};

/// Service ports in the container, published last (after N-1 filler ports), so a
/// linear rule chain walks all N rules before it matches them.
pub const P_RR: u16 = 30001;
pub const P_CRR: u16 = 30002;
pub const P_IPERF: u16 = 30003;
pub const P_UDP: u16 = 30004;
/// The client's server that containers connect out to (masquerade).
pub const P_MASQ: u16 = 40000;
/// The client's UDP server for large datagrams from containers (masquerade).
pub const P_MASQ_UDP: u16 = 40001;
/// A large datagram: twice the uplink's MTU, so IP carries it in three fragments each
/// way (a big DNS answer, a game or VPN server's datagram).
pub const BIG_DATAGRAM: usize = 3000;
pub const FILLER_BASE: u16 = 20000;
/// The bench's uplink: the host's address is where ports are published.
pub const UPLINK: Uplink = Uplink {
    host_ip: "10.99.0.1",
    client_ip: "10.99.0.2",
    host_ip6: None,
    client_ip6: None,
};
pub const HOST_IP: &str = UPLINK.host_ip;
pub const CLIENT_IP: &str = UPLINK.client_ip;
/// The container network of the hand-made bridge and of netavark's and CNI's.
pub const CTR_NET: &str = "172.30.0";

/// Which datapath: the key of the results, in the order of the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Dp {
    Netd,
    IptablesNft,
    IptablesLegacy,
    Nftables,
    Dockerd,
    DockerdNoProxy,
    /// dockerd with netd as its network driver (`netd daemon --docker-plugin`).
    DockerdNetd,
    Netavark,
    Cni,
    Plain,
}

impl Dp {
    pub const ALL: [Dp; 10] = [
        Dp::Netd,
        Dp::IptablesNft,
        Dp::IptablesLegacy,
        Dp::Nftables,
        Dp::Dockerd,
        Dp::DockerdNoProxy,
        Dp::DockerdNetd,
        Dp::Netavark,
        Dp::Cni,
        Dp::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dp::Netd => "netd",
            Dp::IptablesNft => "iptables-nft",
            Dp::IptablesLegacy => "iptables-legacy",
            Dp::Nftables => "nftables",
            Dp::Dockerd => "dockerd",
            Dp::DockerdNoProxy => "dockerd-no-proxy",
            Dp::DockerdNetd => "dockerd-netd",
            Dp::Netavark => "netavark",
            Dp::Cni => "cni-portmap",
            Dp::Plain => "plain",
        }
    }

    /// Real peers: set up by their own tools, skipped (with the reason) if unavailable.
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Dp::Dockerd | Dp::DockerdNoProxy | Dp::DockerdNetd | Dp::Netavark | Dp::Cni
        )
    }

    /// The suffix of its lab's name (`ndb-PID-SHORT-...`).
    pub fn short(self) -> &'static str {
        match self {
            Dp::Netd => "nd",
            Dp::IptablesNft => "in",
            Dp::IptablesLegacy => "il",
            Dp::Nftables => "nf",
            Dp::Dockerd => "dk",
            Dp::DockerdNoProxy => "dn",
            Dp::DockerdNetd => "dx",
            Dp::Netavark => "nv",
            Dp::Cni => "cn",
            Dp::Plain => "pl",
        }
    }

    /// It publishes ports (plain routing does not).
    pub fn publishes(self) -> bool {
        self != Dp::Plain
    }

    /// "One more port" means something for it (netavark's and CNI's tools set up a
    /// whole container at a time).
    pub fn has_one_more(self) -> bool {
        !matches!(self, Dp::Plain | Dp::Netavark | Dp::Cni)
    }
}
