//! sysctls of the calling thread's network namespace (/proc/sys/net is per namespace).
use anyhow::Context;

pub fn set(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).with_context(|| format!("setting {key}={value}"))
}
