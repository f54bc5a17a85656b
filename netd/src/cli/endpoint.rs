//! `--network` as Docker 25+ reads it: a network's name, or the long form
//! `name=N,alias=A,ip=IP,ip6=IP,mac-address=MAC,link-local-ip=IP,driver-opt=K=V,
//! gw-priority=N` (a CSV record: a field with commas is quoted, as in
//! `"driver-opt=com.docker.network.endpoint.sysctls=a=1,b=2"`).
use anyhow::{anyhow, bail};

use crate::model::EndpointRequest;

/// The fields of one CSV record (Go's encoding/csv, which Docker's CLI uses): `,`
/// separates, a field that starts with `"` runs to the closing `"` (`""` is a quote
/// inside it), a quote anywhere else is an error.
fn csv_fields(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => bail!("extraneous or missing \" in quoted-field"),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(_) => bail!("extraneous or missing \" in quoted-field"),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => break,
                    Some('"') => bail!("bare \" in non-quoted-field"),
                    Some(c) => field.push(c),
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                }
            }
        }
        out.push(field);
    }
}

/// One `--network` value: a plain network name (or host, none, container:NAME), or
/// the long form when it holds a `=` (network names never do).
pub fn parse_network(value: &str) -> anyhow::Result<EndpointRequest> {
    if !value.contains('=') {
        return Ok(EndpointRequest {
            network: value.to_string(),
            ..Default::default()
        });
    }
    let bad = |what: String| anyhow!("invalid --network {value:?}: {what}");
    let mut e = EndpointRequest::default();
    for field in csv_fields(value).map_err(|err| bad(err.to_string()))? {
        let (key, val) = field
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| bad(format!("field {field:?} is not KEY=VALUE")))?;
        let val = val.trim();
        let ip = |family: &str| bad(format!("{key}={val} is not an {family} address"));
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => e.network = val.to_string(),
            "alias" => e.aliases.push(val.to_string()),
            "ip" => e.ip = Some(val.parse().map_err(|_| ip("IPv4"))?),
            "ip6" => e.ip6 = Some(val.parse().map_err(|_| ip("IPv6"))?),
            "mac-address" => e.mac_address = Some(val.to_string()),
            "link-local-ip" => e.link_local_ips.push(val.parse().map_err(|_| ip("IP"))?),
            "driver-opt" => {
                let (k, v) = val
                    .split_once('=')
                    .filter(|(k, _)| !k.trim().is_empty())
                    .ok_or_else(|| bad(format!("driver-opt={val} is not KEY=VALUE")))?;
                e.driver_opts
                    .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            "gw-priority" => {
                e.gw_priority = val
                    .parse()
                    .map_err(|_| bad(format!("gw-priority={val} is not an integer")))?
            }
            other => {
                return Err(bad(format!(
                    "unknown key {other:?} (name, alias, ip, ip6, mac-address, link-local-ip, driver-opt, gw-priority)"
                )))
            }
        }
    }
    if e.network.is_empty() {
        return Err(bad("no network name (name=NETWORK)".into()));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_records_as_go_reads_them() {
        assert_eq!(csv_fields("a,b").unwrap(), ["a", "b"]);
        assert_eq!(csv_fields(r#""a,b",c"#).unwrap(), ["a,b", "c"]);
        assert_eq!(csv_fields(r#""say ""hi""""#).unwrap(), [r#"say "hi""#]);
        assert_eq!(csv_fields("a,").unwrap(), ["a", ""]);
        assert!(csv_fields(r#"a"b"#).is_err());
        assert!(csv_fields(r#""ab"#).is_err());
    }

    #[test]
    fn the_long_form_takes_dockers_keys() {
        let e = parse_network(
            r#"name=n1,alias=web,ip=10.1.0.9,ip6=fd00::9,mac-address=92:d0:c6:0a:29:33,link-local-ip=169.254.7.7,"driver-opt=com.docker.network.endpoint.sysctls=net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.forwarding=0",driver-opt=com.docker.network.endpoint.ifname=backend,gw-priority=-3"#,
        )
        .unwrap();
        assert_eq!(e.network, "n1");
        assert_eq!(e.aliases, ["web"]);
        assert_eq!(e.ip, Some("10.1.0.9".parse().unwrap()));
        assert_eq!(e.ip6, Some("fd00::9".parse().unwrap()));
        assert_eq!(e.mac_address.as_deref(), Some("92:d0:c6:0a:29:33"));
        assert_eq!(
            e.link_local_ips,
            ["169.254.7.7".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            e.driver_opts["com.docker.network.endpoint.sysctls"],
            "net.ipv4.conf.IFNAME.log_martians=1,net.ipv4.conf.IFNAME.forwarding=0"
        );
        assert_eq!(
            e.driver_opts["com.docker.network.endpoint.ifname"],
            "backend"
        );
        assert_eq!(e.gw_priority, -3);
        assert_eq!(parse_network("plain").unwrap().network, "plain");
        assert_eq!(
            parse_network("container:web").unwrap().network,
            "container:web"
        );
        for bad in [
            "alias=x",
            "name=n,colour=red",
            "name=n,ip=10.1.0",
            "name=n,gw-priority=high",
            "name=n,driver-opt=novalue",
            "name=n,ip6=10.0.0.1",
        ] {
            let e = parse_network(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --network"), "{bad}: {e}");
        }
    }
}
