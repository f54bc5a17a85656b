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

fn get(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_string())
}

/// Turns IPv6 forwarding on in the calling thread's namespace (the daemon's), as dockerd
/// does once a network with IPv6 exists: NAT66 and routed networks need the host to
/// forward. With forwarding on, the kernel ignores router advertisements on interfaces
/// with accept_ra=1, so the uplink (which may get its address and default route by
/// SLAAC) goes to accept_ra=2 first, as dockerd does; any other value is the admin's
/// and stays. Never turned off again (dockerd leaves it on too). Returns whether this
/// call turned it on.
pub fn enable_ipv6_forwarding(uplink: &str) -> anyhow::Result<bool> {
    const FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
    if get(FORWARDING)? == "1" {
        return Ok(false);
    }
    let accept_ra = format!("/proc/sys/net/ipv6/conf/{uplink}/accept_ra");
    // An uplink without IPv6 (disabled, or no such entry) has nothing to keep.
    if get(&accept_ra).is_ok_and(|v| v == "1") {
        set_ipv6_conf(uplink, "accept_ra", "2")?;
    }
    set("net.ipv6.conf.all.forwarding", "1")?;
    Ok(true)
}
