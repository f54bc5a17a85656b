//! `netd version`: this client's build and the daemon's, as `docker version` shows them
//! (with the layouts an upgrade has to migrate).
use crate::{api::types::Version, client::Client, version};

fn print_section(title: &str, rows: &[(&str, String)]) {
    println!("{title}");
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!(" {k:width$}  {v}");
    }
}

fn pretty(key: &str) -> &str {
    match key {
        "GitCommit" => "Git commit:",
        "DatapathLayout" => "Datapath layout:",
        "StateVersion" => "State version:",
        "ApiVersion" => "API version:",
        "Version" => "Version:",
        other => other,
    }
}

/// Prints the client's facts, then the server's; a daemon that does not answer is the
/// error (after the client's part, as docker does).
pub async fn print(client: &Client, format: Option<&str>) -> anyhow::Result<()> {
    let server: anyhow::Result<Version> = client.get("/version").await;
    if format == Some("json") {
        let client_part: serde_json::Map<String, serde_json::Value> = version::details()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let out = serde_json::json!({
            "Client": client_part,
            "Server": server.as_ref().ok(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return server.map(drop);
    }
    let rows: Vec<(&str, String)> = version::details()
        .into_iter()
        .map(|(k, v)| (pretty(k), v))
        .collect();
    print_section("Client: netd", &rows);
    let server = server?;
    println!();
    let details = server
        .components
        .iter()
        .find(|c| c.name == "netd")
        .map(|c| c.details.clone())
        .unwrap_or_default();
    // In the client's order; what an older daemon does not report is left out.
    let rows: Vec<(&str, String)> = version::details()
        .into_iter()
        .filter_map(|(k, _)| Some((pretty(k), details.get(k)?.clone())))
        .collect();
    print_section("Server: netd", &rows);
    Ok(())
}
