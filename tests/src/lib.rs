//! The e2e tests' harness is the workspace's one lab crate (lab/, `netd-lab`); this
//! crate keeps the tests' traffic tool (src/bin/netd-tester.rs) and the tests.
pub use netd_lab::{
    cgroup::cgroup2_root, netd_bin, tester_bin, Lab, CLIENT_IP, CLIENT_IP6, HOST_IP, HOST_IP6,
    TEST_TAG as PREFIX,
};
