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

/// A BPF program in a tc filter at a link's ingress, as `tc filter show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcProgram {
    pub link: String,
    /// The shared tc block the link's ingress is bound to, if it is.
    pub block: Option<u32>,
    pub pref: u32,
    pub name: String,
    /// The kernel's id of the program: a new one after an agent swapped its own in.
    pub id: u32,
}

/// The BPF programs in the tc filters at the ingress of every link of namespace `ns`
/// (netd puts a container's endpoint programs there, on its host veth).
pub fn tc_programs(ns: &str) -> Vec<TcProgram> {
    let mut out = Vec::new();
    for link in netns::links(ns) {
        let Ok(text) =
            crate::cmd::run("tc", &["-n", ns, "filter", "show", "dev", &link, "ingress"])
        else {
            continue;
        };
        out.extend(text.lines().filter_map(|l| parse_tc_program(&link, l)));
    }
    out
}

/// `filter block 1852047360 protocol all pref 3 bpf chain 0 handle 0x1
/// endpoint_egress@1a2b3c4d direct-action not_in_hw id 57 name endpoint_egress tag
/// 0123456789abcdef jited`
fn parse_tc_program(link: &str, line: &str) -> Option<TcProgram> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| w.iter().position(|x| *x == key).and_then(|i| w.get(i + 1));
    if !w.contains(&"bpf") {
        return None;
    }
    let handle = w.iter().position(|x| *x == "handle")?;
    Some(TcProgram {
        link: link.to_string(),
        block: after("block").and_then(|b| b.parse().ok()),
        pref: after("pref")?.parse().ok()?,
        name: w.get(handle + 2)?.to_string(),
        id: after("id")?.parse().ok()?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tc_filter_line_gives_its_program() {
        let l = "filter block 1852047360 protocol all pref 3 bpf chain 0 handle 0x1 \
                 endpoint_egress@1a2b3c4d direct-action not_in_hw id 57 name endpoint_egres \
                 tag 0123456789abcdef jited";
        assert_eq!(
            parse_tc_program("ndv0", l),
            Some(TcProgram {
                link: "ndv0".into(),
                block: Some(1852047360),
                pref: 3,
                name: "endpoint_egress@1a2b3c4d".into(),
                id: 57
            })
        );
        assert_eq!(
            parse_tc_program("ndv0", "filter protocol all pref 3 bpf chain 0"),
            None
        );
    }
}
