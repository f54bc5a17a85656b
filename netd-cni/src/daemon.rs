//! The plugin's side of netd's endpoint API: HTTP/1.1 over the daemon's unix socket.
//! netd's CLI client turns every failure into a message; CNI needs to tell "daemon not
//! there" (try again, STATUS 50) and "not found" (DEL succeeds) from a refusal.
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("netd daemon not reachable at {socket}: {why} (is `netd daemon` running? the configuration's \"socket\" names its API socket)")]
    Unreachable { socket: String, why: String },
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    #[error("talking to the netd daemon: {0}")]
    Protocol(String),
}

pub struct Daemon {
    socket: PathBuf,
}

/// Percent-encodes a path segment (container ids are safe; interface names may not be).
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Daemon {
    pub fn new(socket: &Path) -> Daemon {
        Daemon {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request; returns the status and the body, or the daemon's message for
    /// a non-2xx answer.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, DaemonError> {
        let unreachable = |why: String| DaemonError::Unreachable {
            socket: self.socket.display().to_string(),
            why,
        };
        let proto = |e: &dyn std::fmt::Display| DaemonError::Protocol(e.to_string());
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| proto(&e))?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://netd{path}"))
            .header("host", "netd")
            .header("content-type", "application/json")
            .body(Full::new(payload))
            .map_err(|e| proto(&e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| proto(&e))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(String::from))
                .unwrap_or_else(|| format!("the daemon answered {status}"));
            return Err(DaemonError::Refused { status, message });
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| proto(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("abc-1_2.3"), "abc-1_2.3");
        assert_eq!(segment("net 1/x"), "net%201%2Fx");
    }
}
