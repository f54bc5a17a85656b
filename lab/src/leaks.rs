//! What a lab (or the daemon inside it) may leave behind: namespaces, pins, cgroups.
//! After teardown each of these lists must be empty.
use std::path::Path;

use crate::netns;

/// Pinned endpoint links under a daemon's bpffs directory: the endpoint program
/// (`ep-*`), the overlay one (`ov-*`) and the IPv6 one (`v6-*`).
pub fn endpoint_pins(bpf_dir: &Path) -> Vec<String> {
    std::fs::read_dir(bpf_dir.join("links"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .filter(|n| ["ep-", "ov-", "v6-"].iter().any(|p| n.starts_with(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything of lab `name` that exists: namespaces named `NAME-*` (its own and its
/// daemon's containers'), its bpffs directory (pinned maps and links) and its cgroup.
pub fn leftovers(name: &str, bpf_dir: &Path, cgroup: Option<&Path>) -> Vec<String> {
    let mut left: Vec<String> = netns::with_prefix(&format!("{name}-"))
        .into_iter()
        .map(|ns| format!("namespace {ns}"))
        .collect();
    if bpf_dir.exists() {
        left.push(format!("pins under {}", bpf_dir.display()));
    }
    if let Some(cg) = cgroup.filter(|c| c.exists()) {
        left.push(format!("cgroup {}", cg.display()));
    }
    left
}
