//! What a container asks of name resolution: `--dns`, `--dns-search`, `--dns-option`
//! and `--link NAME[:ALIAS]`, validated once at the edge so the store holds only values
//! that make sense.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::NetdError;

/// A container's resolver settings (Docker's HostConfig.Dns, DnsSearch, DnsOptions).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    /// Checks the strings a user gave and turns them into a config.
    pub fn parse(
        servers: &[String],
        search: &[String],
        options: &[String],
    ) -> Result<Self, NetdError> {
        let servers = servers
            .iter()
            .map(|s| {
                s.parse::<IpAddr>().map_err(|_| {
                    NetdError::InvalidArgument(format!(
                        "--dns {s:?} is not an IP address (give the server's address, e.g. 192.0.2.53)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for d in search {
            let ok = d == "."
                || (!d.is_empty()
                    && d.len() <= 253
                    && d.trim_end_matches('.').split('.').all(valid_label));
            if !ok {
                return Err(NetdError::InvalidArgument(format!(
                    "--dns-search {d:?} is not a domain name"
                )));
            }
        }
        for o in options {
            let ok = !o.is_empty()
                && o.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c));
            if !ok {
                return Err(NetdError::InvalidArgument(format!(
                    "--dns-option {o:?} is not a resolv.conf option (e.g. ndots:2, timeout:1)"
                )));
            }
        }
        Ok(DnsConfig {
            servers,
            search: search.to_vec(),
            options: options.to_vec(),
        })
    }
}

fn valid_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `--link NAME[:ALIAS]`: the target container (by id once resolved) and the name the
/// linking container knows it by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The linked container's id.
    pub target: String,
    pub alias: String,
}

/// Splits `NAME[:ALIAS]`; the alias defaults to the name.
pub fn parse_link(spec: &str) -> Result<(String, String), NetdError> {
    let (name, alias) = match spec.split_once(':') {
        Some((n, a)) => (n, a),
        None => (spec, spec),
    };
    let name = name.trim_start_matches('/');
    if name.is_empty() || alias.is_empty() || !alias.split('.').all(valid_label) {
        return Err(NetdError::InvalidArgument(format!(
            "--link {spec:?}: expected NAME[:ALIAS] (a container and a host name for it)"
        )));
    }
    Ok((name.to_string(), alias.to_string()))
}

/// Whether `name` can be a DNS name (container names, aliases, hostnames).
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(valid_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_flags_are_checked() {
        let c = DnsConfig::parse(
            &["10.0.0.1".into()],
            &["example.com".into()],
            &["ndots:2".into()],
        )
        .unwrap();
        assert_eq!(c.servers, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let e = DnsConfig::parse(&["dns.example".into()], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("not an IP address"), "{e}");
        assert!(DnsConfig::parse(&[], &["bad domain".into()], &[]).is_err());
        assert!(DnsConfig::parse(&[], &[], &["nd ots".into()]).is_err());
    }

    #[test]
    fn links_split_name_and_alias() {
        assert_eq!(parse_link("db").unwrap(), ("db".into(), "db".into()));
        assert_eq!(
            parse_link("/db:data").unwrap(),
            ("db".into(), "data".into())
        );
        assert!(parse_link("db:").is_err());
        assert!(parse_link(":x").is_err());
        assert!(parse_link("db:a b").is_err());
    }
}
