//! Docker's attached streams: `POST /containers/{id}/attach` and `POST
//! /exec/{id}/start` take over the connection (HTTP upgrade to `tcp`, Docker's hijack)
//! and carry the process's output one way (multiplexed into stdout and stderr frames,
//! or raw from a terminal) and what the client types the other, until the output ends
//! or the client types the detach keys. Also `resize` and `wait`.
use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, Query, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{broadcast, watch},
};

use super::{filters::query_flag, D, Q};
use crate::{
    daemon::{
        stdio::{Frame, Hub, STDERR, STDOUT},
        WaitCondition,
    },
    error::NetdError,
    model::{parse_detach_keys, DetachScanner, DEFAULT_DETACH_KEYS},
};

/// A taken-over connection, whatever carries it.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

type Session = Box<dyn FnOnce(Box<dyn Conn>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What one attached session carries.
pub struct Streams {
    pub hub: Arc<Hub>,
    /// Subscribed before the answer goes out: nothing the process writes after it is
    /// lost.
    pub out: broadcast::Receiver<Frame>,
    /// Raw terminal output (with -t) rather than Docker's multiplexed frames.
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// The process's stdin ends when the client's does.
    pub stdin_once: bool,
    pub detach_keys: Vec<u8>,
    /// Log output to send first (`logs=1`).
    pub replay: Vec<u8>,
    /// An exec's exit: the session ends only once its code is recorded, so a client
    /// that asks for it right after reads the real one.
    pub exit: Option<watch::Receiver<Option<i32>>>,
}

/// The answer that takes the connection over (101, Docker's raw-stream headers) and
/// runs `session` on it; a client that did not ask to upgrade gets the output as a
/// plain streamed body instead (no stdin).
pub fn hijack(upgrade: Option<OnUpgrade>, session: Session) -> Response {
    let raw = HeaderValue::from_static("application/vnd.docker.raw-stream");
    match upgrade {
        Some(on) => {
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    session(Box::new(TokioIo::new(up))).await;
                }
            });
            let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, raw);
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
            r
        }
        None => {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(session(Box::new(ours)));
            let body = futures::stream::unfold(theirs, |mut rd| async move {
                let mut buf = vec![0u8; 16 * 1024];
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(buf), rd))
                    }
                }
            });
            let mut r = Body::from_stream(body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, raw);
            r
        }
    }
}

/// Copies output to the client and input to the process until the output ends (then
/// the connection closes) or the detach keys are typed.
pub async fn run(conn: Box<dyn Conn>, s: Streams) {
    let (mut rd, mut wr) = tokio::io::split(conn);
    let Streams {
        hub,
        mut out,
        tty,
        stdin,
        stdout,
        stderr,
        stdin_once,
        detach_keys,
        replay,
        mut exit,
    } = s;
    let output = async move {
        if !replay.is_empty() && write_frame(&mut wr, tty, STDOUT, &replay).await.is_err() {
            return;
        }
        loop {
            match out.recv().await {
                Ok(Frame::Out(n, data)) => {
                    let wanted = (n == STDOUT && stdout) || (n == STDERR && stderr);
                    if wanted && write_frame(&mut wr, tty, n, &data).await.is_err() {
                        return;
                    }
                }
                Ok(Frame::End) | Err(broadcast::error::RecvError::Closed) => break,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
        if let Some(exit) = exit.as_mut() {
            let _ = exit.wait_for(Option::is_some).await;
        }
        let _ = wr.shutdown().await;
    };
    let input = async move {
        if !stdin {
            return std::future::pending::<()>().await;
        }
        let mut keys = DetachScanner::new(detach_keys);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = rd.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                if stdin_once {
                    hub.close_stdin().await;
                }
                // The output goes on until the process ends it.
                return std::future::pending::<()>().await;
            }
            let scanned = keys.scan(&buf[..n]);
            if !scanned.pass.is_empty() && hub.write(&scanned.pass).await.is_err() {
                return std::future::pending::<()>().await;
            }
            if scanned.detach {
                // Detached: the session ends, the process goes on.
                return;
            }
        }
    };
    tokio::select! {
        _ = output => {}
        _ = input => {}
    }
}

/// One chunk of output: raw from a terminal, else in Docker's frame (stream number,
/// three zero bytes, the length in big-endian, the bytes).
async fn write_frame(
    wr: &mut (impl AsyncWrite + Unpin),
    tty: bool,
    stream: u8,
    data: &[u8],
) -> std::io::Result<()> {
    if !tty {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes();
        let head = [stream, 0, 0, 0, len[0], len[1], len[2], len[3]];
        wr.write_all(&head).await?;
    }
    wr.write_all(data).await?;
    wr.flush().await
}

/// `detachKeys` (Docker's notation) as bytes, Docker's default without one.
pub fn detach_keys(q: Option<&str>) -> Result<Vec<u8>, NetdError> {
    parse_detach_keys(q.filter(|k| !k.is_empty()).unwrap_or(DEFAULT_DETACH_KEYS))
}

/// `POST /containers/{id}/attach?stream=1&stdin=1&stdout=1&stderr=1[&logs=1]
/// [&detachKeys=...]` of a container created with -i or -t.
pub async fn attach(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
    mut req: Request,
) -> Result<Response, NetdError> {
    let keys = detach_keys(q.get("detachKeys").map(String::as_str))?;
    let (c, hub) = d.attach_container(&id).await?;
    let flag = |k: &str| query_flag(q.get(k));
    let replay = if flag("logs") {
        std::fs::read(d.log_path(&c.id)).unwrap_or_default()
    } else {
        Vec::new()
    };
    let streams = Streams {
        out: hub.subscribe(),
        hub,
        tty: c.config.tty,
        stdin: flag("stdin") && c.config.open_stdin,
        stdout: flag("stdout"),
        stderr: flag("stderr"),
        stdin_once: c.config.stdin_once(),
        detach_keys: keys,
        replay,
        exit: None,
    };
    let upgrade = req.extensions_mut().remove::<OnUpgrade>();
    Ok(hijack(
        upgrade,
        Box::new(move |conn| Box::pin(run(conn, streams))),
    ))
}

/// Docker's `h` and `w` (rows and columns).
fn size(q: &HashMap<String, String>) -> Result<(u16, u16), NetdError> {
    let get = |k: &str| {
        q.get(k).and_then(|v| v.parse::<u16>().ok()).ok_or_else(|| {
            NetdError::InvalidArgument(format!("invalid {k}: a terminal size (0-65535)"))
        })
    };
    Ok((get("h")?, get("w")?))
}

/// `POST /containers/{id}/resize?h=ROWS&w=COLUMNS`.
pub async fn resize(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let (rows, cols) = size(&q)?;
    let (c, hub) = d.attach_container(&id).await?;
    if !c.config.tty {
        return Err(NetdError::Conflict(format!(
            "container {} has no terminal (created without -t)",
            c.name
        )));
    }
    // Before the process starts there is no terminal to size yet: Docker accepts it.
    let _ = hub.resize(rows, cols);
    Ok(StatusCode::OK)
}

/// `POST /exec/{id}/resize?h=ROWS&w=COLUMNS`.
pub async fn exec_resize(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Q,
) -> Result<StatusCode, NetdError> {
    let (rows, cols) = size(&q)?;
    d.exec_resize(&id, rows, cols)?;
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/wait[?condition=not-running|next-exit|removed]`.
pub async fn wait(State(d): D, Path(id): Path<String>, Query(q): Q) -> Result<Response, NetdError> {
    let until = match q.get("condition").map(String::as_str) {
        None | Some("") | Some("not-running") => WaitCondition::NotRunning,
        Some("next-exit") => WaitCondition::NextExit,
        Some("removed") => WaitCondition::Removed,
        Some(other) => {
            return Err(NetdError::InvalidArgument(format!(
                "invalid condition {other:?}: not-running, next-exit or removed"
            )))
        }
    };
    let waiter = d.wait_container(&id, until).await?;
    // The answer's head goes out now, its body at the exit: Docker's clients return
    // from the call on the head and read the body later (docker attach waits for it
    // before it attaches).
    let body = futures::stream::once(async move {
        let v = match waiter.wait().await {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.to_string()}}),
        };
        Ok::<_, std::io::Error>(format!("{v}\n"))
    });
    let mut r = Body::from_stream(body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
