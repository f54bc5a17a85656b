//! Docker's legacy link environment: for `--link db:alias`, the linking container's
//! processes get ALIAS_NAME and ALIAS_PORT_<port>_<proto>[_ADDR|_PORT|_PROTO] for each port
//! the target exposes (published or `--expose`d), and ALIAS_PORT for the lowest one.
use crate::{
    model::{Container, Proto},
    store::State,
};
use std::sync::Arc;

fn var_prefix(alias: &str) -> String {
    alias
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The ports `c` serves, lowest first: what a link opens and what its variables name.
pub fn exposed_ports(c: &Container) -> Vec<(u16, Proto)> {
    let mut v: Vec<(u16, Proto)> = c
        .ports
        .iter()
        .map(|p| (p.container_port, p.proto))
        .chain(c.exposed.iter().copied())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The variables of every link of `c` whose target shares a network with it.
pub fn env(c: &Container, all: &[Arc<Container>]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for l in &c.links {
        let Some(t) = all.iter().find(|x| x.id == l.target) else {
            continue;
        };
        let Some(ip) = t
            .attachments
            .iter()
            .find(|ta| c.attachments.iter().any(|a| a.network == ta.network))
            .map(|ta| ta.ip)
        else {
            continue;
        };
        let p = var_prefix(&l.alias);
        out.push((format!("{p}_NAME"), format!("/{}/{}", c.name, l.alias)));
        let ports = exposed_ports(t);
        if let Some((port, proto)) = ports.first() {
            out.push((format!("{p}_PORT"), format!("{proto}://{ip}:{port}")));
        }
        for (port, proto) in ports {
            let k = format!("{p}_PORT_{port}_{}", proto.to_string().to_ascii_uppercase());
            out.push((k.clone(), format!("{proto}://{ip}:{port}")));
            out.push((format!("{k}_ADDR"), ip.to_string()));
            out.push((format!("{k}_PORT"), port.to_string()));
            out.push((format!("{k}_PROTO"), proto.to_string()));
        }
    }
    out
}

/// The eBPF exceptions the links of `state` need: on a network with icc=false, each
/// linking container may reach its target on the target's exposed ports (and get the
/// replies), and nothing else.
pub fn rules(state: &State) -> Vec<crate::datapath::LinkRule> {
    let mut out = Vec::new();
    for c in &state.containers {
        for l in &c.links {
            let Some(t) = state.containers.iter().find(|x| x.id == l.target) else {
                continue;
            };
            let ports = exposed_ports(t);
            for a in &c.attachments {
                let closed = state.network_by_id(&a.network).is_some_and(|n| !n.icc);
                let Some(ta) = t.attachments.iter().find(|x| x.network == a.network) else {
                    continue;
                };
                if !closed {
                    continue;
                }
                for &(port, proto) in &ports {
                    out.push(crate::datapath::LinkRule {
                        from: a.ip,
                        to: ta.ip,
                        port,
                        proto,
                    });
                }
            }
        }
    }
    out
}
