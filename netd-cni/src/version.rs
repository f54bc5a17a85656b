//! The CNI protocol versions netd-cni speaks.

pub const CURRENT_VERSION: &str = "1.1.0";
/// Every version whose ADD result netd-cni can write (0.3.0 introduced the result shape
/// with interfaces; 0.1 and 0.2 results had none).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// A version as (major, minor, patch); None for anything that is not one.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let parsed = (it.next()??, it.next()??, it.next().unwrap_or(Some(0))?);
    it.next().is_none().then_some(parsed)
}

/// Whether `v` is at least `min` (both versions netd-cni knows).
pub fn at_least(v: &str, min: &str) -> bool {
    matches!((parse_version(v), parse_version(min)), (Some(a), Some(b)) if a >= b)
}
