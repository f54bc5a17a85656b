//! The clients' side of the API: HTTP/1.1 over the daemon's unix socket, for netd's CLI
//! and the CNI plugin (`request` with its typed errors: a plugin must tell "no daemon"
//! and "not found" from a refusal).
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Client {
    socket: PathBuf,
}

/// Why a request got no 2xx answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon at the socket, or the connection broke.
    #[error("netd daemon not reachable at {socket}: {why}")]
    Unreachable { socket: String, why: String },
    /// The daemon's answer was not 2xx: its status and `message`.
    #[error("{message}")]
    Refused { status: StatusCode, message: String },
    /// Something neither side should send.
    #[error("talking to the netd daemon: {0}")]
    Protocol(String),
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    /// GETs `path` and reads the answer as `T` (one of api::types).
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let v = self.call(Method::GET, path, None).await?;
        serde_json::from_value(v).with_context(|| format!("reading the daemon's answer to {path}"))
    }

    /// Sends `body` (one of api::types) and reads the answer as `T`.
    pub async fn send<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let v = self
            .call(method, path, Some(serde_json::to_value(body)?))
            .await?;
        serde_json::from_value(v).with_context(|| format!("reading the daemon's answer to {path}"))
    }

    /// GETs a streamed answer (JSON lines) and calls `each` with every line until it
    /// returns false or the daemon ends the stream.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let (mut sender, _conn) = self.connect().await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(format!("http://netd{path}"))
            .header("host", "netd")
            .body(Full::new(Bytes::new()))?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the daemon")?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(error_of(status, &bytes));
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if !each(String::from_utf8_lossy(&line).trim_end())? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn connect(
        &self,
    ) -> anyhow::Result<(
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
        tokio::task::JoinHandle<()>,
    )> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "netd daemon not reachable at {}: {e} (is `netd daemon` running? pick another socket with -H)",
                self.socket.display()
            )
        })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, task))
    }

    /// POSTs `path` asking to take the connection over (Docker's hijack, HTTP upgrade
    /// to `tcp`): the raw connection once the daemon answers 101, or its error.
    pub async fn hijack(
        &self,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<TokioIo<hyper::upgrade::Upgraded>> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "netd daemon not reachable at {}: {e} (is `netd daemon` running? pick another socket with -H)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://netd{path}"))
            .header("host", "netd")
            .header("connection", "Upgrade")
            .header("upgrade", "tcp")
            .header("content-type", "application/json")
            .body(Full::new(payload))?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the daemon")?;
        let status = resp.status();
        if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let bytes = resp.into_body().collect().await?.to_bytes();
            return Err(error_of(status, &bytes));
        }
        let up = hyper::upgrade::on(resp)
            .await
            .context("taking the connection over")?;
        Ok(TokioIo::new(up))
    }

    /// Sends one request with a JSON body; the body of a 2xx answer, else why not.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Bytes, ClientError> {
        let unreachable = |why: String| ClientError::Unreachable {
            socket: self.socket.display().to_string(),
            why,
        };
        let proto = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(format!("http://netd{path}"))
            .header("host", "netd")
            .header("content-type", "application/json")
            .body(Full::new(body))
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
            return Err(ClientError::Refused {
                status,
                message: message_of(status, &bytes),
            });
        }
        Ok(bytes)
    }

    /// Sends one request; a non-2xx answer becomes an error carrying the daemon's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let bytes = self
            .request(method, path, payload)
            .await
            .map_err(|e| match e {
                ClientError::Unreachable { .. } => {
                    anyhow!("{e} (is `netd daemon` running? pick another socket with -H)")
                }
                e => anyhow!(e),
            })?;
        Ok(if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        })
    }
}

/// The daemon's `message` in a non-2xx answer, else the status.
fn message_of(status: StatusCode, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| format!("the daemon answered {status}"))
}

/// A non-2xx answer as an error: the daemon's `message`, else the status.
fn error_of(status: StatusCode, body: &[u8]) -> anyhow::Error {
    anyhow!(message_of(status, body))
}
