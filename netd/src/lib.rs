//! netd: a container network agent whose NAT and isolation run in eBPF.
//!
//! `netd daemon` owns the kernel state (links, namespaces, eBPF programs and maps) and
//! serves an HTTP/JSON API on a unix socket; every other `netd` command is a client.
pub mod api;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod daemon;
pub mod datapath;
pub mod dns;
pub mod driver;
pub mod error;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod notify;
pub mod plugin;
pub mod ports;
pub mod process;
pub mod sandbox;
pub mod server;
pub mod sockdiag;
pub mod store;
pub mod sysctl;
pub mod terminal;
pub mod unix_socket;
pub mod version;
