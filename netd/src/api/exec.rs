//! Docker's exec endpoints: `POST /containers/{id}/exec` (create), `POST
//! /exec/{id}/start` (attached through the taken-over connection, or detached), `GET
//! /exec/{id}/json` (running, exit code), and its resize in `attach`.
use axum::{
    extract::{Path, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper::upgrade::OnUpgrade;
use serde::{Deserialize, Serialize};

use super::{
    attach::{detach_keys, hijack, run, Streams},
    ApiJson, Json, D,
};
use crate::{
    daemon::{ExecConfig, ExecInfo, ExecStarted},
    error::NetdError,
};

/// `POST /containers/{id}/exec`'s body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ExecCreate {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub detach_keys: String,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub privileged: bool,
    pub user: String,
    pub working_dir: String,
    /// The client terminal's size: the exec's terminal starts with it.
    pub console_size: Option<[u16; 2]>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdResponse {
    pub id: String,
}

/// `POST /exec/{id}/start`'s body.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ExecStart {
    pub detach: bool,
    pub tty: bool,
}

/// `GET /exec/{id}/json`, with Docker's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecInspect {
    #[serde(rename = "ID")]
    pub id: String,
    pub running: bool,
    /// null while it runs.
    pub exit_code: Option<i32>,
    pub process_config: ProcessConfig,
    pub open_stdin: bool,
    pub open_stderr: bool,
    pub open_stdout: bool,
    pub can_remove: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub detach_keys: String,
    pub pid: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProcessConfig {
    pub tty: bool,
    pub entrypoint: String,
    pub arguments: Vec<String>,
    pub privileged: bool,
    pub user: String,
}

pub async fn create(
    State(d): D,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ExecCreate>,
) -> Result<(StatusCode, Json<IdResponse>), NetdError> {
    let cfg = ExecConfig {
        cmd: b.cmd.unwrap_or_default(),
        env: b.env.unwrap_or_default(),
        user: b.user,
        workdir: b.working_dir,
        tty: b.tty,
        attach_stdin: b.attach_stdin,
        attach_stdout: b.attach_stdout,
        attach_stderr: b.attach_stderr,
        privileged: b.privileged,
        detach_keys: b.detach_keys,
        console_size: b.console_size,
    };
    let id = d.exec_create(&id, cfg).await?;
    Ok((StatusCode::CREATED, Json(IdResponse { id })))
}

/// Started detached: 200 at once. Attached: the connection is taken over and carries
/// the exec's streams until it ends (its exit code is recorded by then).
pub async fn start(
    State(d): D,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, NetdError> {
    let upgrade = req.extensions_mut().remove::<OnUpgrade>();
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| NetdError::InvalidArgument(format!("invalid request body: {e}")))?;
    let b: ExecStart = if bytes.is_empty() {
        ExecStart::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| NetdError::InvalidArgument(format!("invalid request body: {e}")))?
    };
    let keys = detach_keys(Some(&d.exec_detach_keys(&id)))?;
    if b.detach {
        d.exec_start(&id, true).await?;
        return Ok(StatusCode::OK.into_response());
    }
    let tty = d.exec_claim(&id)?.config.tty;
    // The process starts once the connection is taken over, as dockerd's: a client
    // that reads the upgrade's answer through a buffer (docker-py) would otherwise
    // lose output that came in the same read.
    Ok(hijack(
        upgrade,
        Box::new(move |conn| {
            Box::pin(async move {
                match d.exec_spawn(&id, false).await {
                    Ok(started) => run(conn, streams_of(started, keys)).await,
                    Err(e) => refuse(conn, tty, &e.to_string()).await,
                }
            })
        }),
    ))
}

fn streams_of(s: ExecStarted, keys: Vec<u8>) -> Streams {
    let cfg = &s.info.config;
    Streams {
        out: s.out,
        tty: cfg.tty,
        stdin: cfg.attach_stdin,
        stdout: cfg.attach_stdout,
        stderr: cfg.attach_stderr,
        stdin_once: true,
        detach_keys: keys,
        replay: Vec::new(),
        exit: Some(s.exit),
        hub: s.hub,
    }
}

/// An exec that could not start, on a taken-over connection: the reason, as the
/// command's error output (Docker writes it there too), and the end.
async fn refuse(mut conn: Box<dyn super::attach::Conn>, tty: bool, why: &str) {
    use tokio::io::AsyncWriteExt;
    let msg = format!("{why}\n");
    if !tty {
        let len = u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes();
        let _ = conn
            .write_all(&[2, 0, 0, 0, len[0], len[1], len[2], len[3]])
            .await;
    }
    let _ = conn.write_all(msg.as_bytes()).await;
    let _ = conn.shutdown().await;
}

pub async fn inspect(State(d): D, Path(id): Path<String>) -> Result<Json<ExecInspect>, NetdError> {
    let i: ExecInfo = d.exec_inspect(&id)?;
    let c = &i.config;
    Ok(Json(ExecInspect {
        id: i.id.clone(),
        running: i.running,
        exit_code: i.exit_code,
        process_config: ProcessConfig {
            tty: c.tty,
            entrypoint: c.cmd.first().cloned().unwrap_or_default(),
            arguments: c.cmd.iter().skip(1).cloned().collect(),
            privileged: c.privileged,
            user: c.user.clone(),
        },
        open_stdin: c.attach_stdin,
        open_stderr: c.attach_stderr,
        open_stdout: c.attach_stdout,
        can_remove: !i.running && i.exit_code.is_some(),
        container_id: i.container_id,
        detach_keys: c.detach_keys.clone(),
        pid: i.pid.unwrap_or(0),
    }))
}
