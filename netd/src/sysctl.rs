//! sysctls of the calling thread's network namespace (/proc/sys/net is per namespace).
use anyhow::Context;

pub fn set(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value}"))
}

/// `net.ipv6.conf.IFNAME.KEY`: written by path, since an interface name may hold a dot
/// (which `set` would take for a separator).
pub fn set_ipv6_conf(ifname: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    std::fs::write(&path, value).with_context(|| format!("setting {path}={value}"))
}
