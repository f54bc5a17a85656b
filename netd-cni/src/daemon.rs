//! The plugin's side of netd's endpoint API: HTTP/1.1 over the daemon's unix socket.
//! netd's CLI client turns every failure into a message; CNI needs to tell "daemon not
//! there" (try again, STATUS 50) and "not found" (DEL succeeds) from a refusal.
use std::path::Path;

use hyper::{body::Bytes, Method};
use netd::client::{Client, ClientError};
use serde::{de::DeserializeOwned, Serialize};

/// Why a call failed; the plugin's own words for an unreachable daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0} (is `netd daemon` running? the configuration's \"socket\" names its API socket)")]
    Unreachable(ClientError),
    #[error("{message}")]
    Refused {
        status: hyper::StatusCode,
        message: String,
    },
    #[error("talking to the netd daemon: {0}")]
    Protocol(String),
}

impl From<ClientError> for DaemonError {
    fn from(e: ClientError) -> DaemonError {
        match e {
            ClientError::Refused { status, message } => DaemonError::Refused { status, message },
            ClientError::Protocol(p) => DaemonError::Protocol(p),
            e @ ClientError::Unreachable { .. } => DaemonError::Unreachable(e),
        }
    }
}

pub struct Daemon {
    client: Client,
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
            client: Client::new(socket),
        }
    }

    /// Sends one request; the answer's body read as `T` (None when empty), or why not.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, DaemonError> {
        let proto = |e: serde_json::Error| DaemonError::Protocol(e.to_string());
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(proto)?),
            None => Bytes::new(),
        };
        let bytes = self.client.request(method, path, payload).await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(proto)
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
