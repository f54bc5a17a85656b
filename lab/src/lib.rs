//! The one lab harness of netd, used by the e2e tests (tests/), the bench and
//! `cargo xtask lab up|down`.
//!
//! A lab is a "host" namespace (where a netd daemon runs, with its own state, run and
//! bpffs directories), a "client" namespace on the far end of its uplink standing for
//! the outside world, a cgroup for the daemon's socket programs, and whatever its user
//! adds (namespaces, background servers, a real dockerd: [`dockerd`]). Every name
//! starts with `TAG-PID-`, so parallel runs never collide and a later run sweeps what a
//! crashed one left (only its own tag, only dead pids). Dropping a lab removes everything, even on panic, and
//! checks that no namespace, pin or cgroup of it is left. Nothing is ever created in
//! the root namespace except the named namespace files, the bpffs directory and the
//! cgroup.
mod bins;
pub mod cgroup;
pub mod cluster;
pub mod cmd;
pub mod daemon;
pub mod dockerd;
mod error;
mod lab;
pub mod leaks;
pub mod netns;
mod probe;
pub mod sweep;
pub mod tls;
pub mod topology;

pub use bins::{netd_bin, tester_bin};
pub use error::{Error, Result};
pub use lab::{Lab, LabName, LabOptions, TEST_TAG};
pub use topology::{Uplink, DEFAULT_UPLINK};

/// The e2e lab's uplink addresses: the host's, and the client's (the outside world).
pub const HOST_IP: &str = DEFAULT_UPLINK.host_ip;
pub const CLIENT_IP: &str = DEFAULT_UPLINK.client_ip;
/// The default uplink's IPv6 addresses (fd00:199::/64).
pub const HOST_IP6: &str = DEFAULT_UPLINK.host_ip6.unwrap();
pub const CLIENT_IP6: &str = DEFAULT_UPLINK.client_ip6.unwrap();
