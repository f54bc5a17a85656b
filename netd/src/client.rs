//! The CLI's side of the API: HTTP/1.1 over the daemon's unix socket.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

pub struct Client {
    socket: PathBuf,
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

    /// Sends one request; a non-2xx answer becomes an error carrying the daemon's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|e| {
            anyhow!(
                "cannot connect to the netd daemon at {}: {e} (is `netd daemon` running? pick another socket with -H)",
                self.socket.display()
            )
        })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(format!("http://netd{path}"))
            .header("host", "netd")
            .header("content-type", "application/json")
            .body(Full::new(payload))?;
        let resp = sender
            .send_request(req)
            .await
            .context("talking to the daemon")?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        if !status.is_success() {
            let msg = value
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| format!("daemon answered {status}"));
            return Err(anyhow!(msg));
        }
        Ok(value)
    }
}
