//! The client side of an attached container: `run -i`/`-t` in the foreground and
//! `netd attach`. The caller's terminal goes raw (every key to the container, whose
//! own terminal echoes and edits), its size follows the caller's window, output is
//! copied back (demultiplexed into stdout and stderr without a terminal), and the
//! detach keys leave the container running.
use std::{
    io::Write,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::Context;
use hyper::Method;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{client::Client, model::DetachScanner};

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The detach keys: the container goes on.
    Detached,
    /// The output ended (the process closed it, usually by exiting).
    Ended,
}

/// What to attach to and how.
pub struct Attach {
    /// The container's id.
    pub id: String,
    pub tty: bool,
    pub stdin: bool,
    pub detach_keys: Vec<u8>,
    /// Docker's notation of `detach_keys`, for the daemon.
    pub detach_spec: String,
}

/// The caller's terminal in raw mode, restored when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .context("setting the terminal raw")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn is_terminal(fd: i32) -> bool {
    // SAFETY: isatty only looks at the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// The caller's window size (rows, columns), if its output is a terminal.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize that lives for the call.
    let r = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Opens the container's attached streams (before `start`, so no output is missed).
pub async fn open(
    client: &Client,
    a: &Attach,
) -> anyhow::Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    let path = format!(
        "/containers/{}/attach?stream=1&stdout=1&stderr=1&stdin={}&detachKeys={}",
        a.id,
        a.stdin as u8,
        a.detach_spec.replace(',', "%2C")
    );
    client.hijack(&path, None).await
}

/// Tells the daemon the caller's window size (with a terminal), now and whenever it
/// changes, until the session ends.
async fn follow_window(client: &Client, id: &str) {
    let resize = |(h, w): (u16, u16)| {
        let path = format!("/containers/{id}/resize?h={h}&w={w}");
        async move {
            let _ = client.call(Method::POST, &path, None).await;
        }
    };
    if let Some(size) = window_size() {
        resize(size).await;
    }
    let Ok(mut winch) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return std::future::pending().await;
    };
    while winch.recv().await.is_some() {
        if let Some(size) = window_size() {
            resize(size).await;
        }
    }
}

/// Runs an attached session on `conn` until the output ends or the caller detaches.
pub async fn session(
    client: &Client,
    a: &Attach,
    conn: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
) -> anyhow::Result<Outcome> {
    let _raw = if a.tty && a.stdin && is_terminal(0) {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let (rd, mut wr) = tokio::io::split(conn);
    let output = copy_output(rd, a.tty);
    let keys = a.detach_keys.clone();
    let stdin = a.stdin;
    let input = async move {
        if !stdin {
            return std::future::pending::<anyhow::Result<()>>().await;
        }
        let mut rx = stdin_chunks();
        let mut scanner = DetachScanner::new(keys);
        while let Some(chunk) = rx.recv().await {
            // Everything goes to the daemon, which holds the keys back from the
            // process and ends the session; the scan here only tells a detach from
            // an exit.
            wr.write_all(&chunk).await?;
            if scanner.scan(&chunk).detach {
                return Ok(());
            }
        }
        // The caller's input ended: so does the process's (with -i in the foreground).
        wr.shutdown().await?;
        std::future::pending::<anyhow::Result<()>>().await
    };
    let window = async {
        if a.tty && is_terminal(1) {
            follow_window(client, &a.id).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = output => { r?; Ok(Outcome::Ended) }
        r = input => { r?; Ok(Outcome::Detached) }
        _ = window => Ok(Outcome::Ended),
    }
}

/// The caller's stdin in chunks, read on a thread of its own: a blocked read there
/// never holds the process back from exiting.
fn stdin_chunks() -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Copies the daemon's output to stdout (and stderr): raw from a terminal, else
/// Docker's frames (stream, three zero bytes, big-endian length, bytes).
async fn copy_output(mut rd: impl AsyncRead + Unpin, tty: bool) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if tty {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            let mut out = std::io::stdout();
            out.write_all(&buf[..n])?;
            out.flush()?;
            continue;
        }
        let mut head = [0u8; 8];
        match rd.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut data = vec![0u8; len];
        rd.read_exact(&mut data).await?;
        if head[0] == 2 {
            let mut err = std::io::stderr();
            err.write_all(&data)?;
            err.flush()?;
        } else {
            let mut out = std::io::stdout();
            out.write_all(&data)?;
            out.flush()?;
        }
    }
}

/// Seconds since the epoch, as the event stream's `since` takes them.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The exit code of the container's first exit after `since`, from the daemon's event
/// stream (its history has it even when --rm removed the container already).
pub async fn exit_code(client: &Client, id: &str, since: f64) -> anyhow::Result<i32> {
    let filters = format!(r#"{{"container":["{id}"],"event":["die"],"type":["container"]}}"#);
    let path = format!(
        "/events?since={since}&filters={}",
        filters
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    );
    let mut code = None;
    client
        .stream_lines(&path, |line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            code = v["Actor"]["Attributes"]["exitCode"]
                .as_str()
                .and_then(|c| c.parse().ok());
            Ok(false)
        })
        .await?;
    code.context("the daemon's event stream ended before the container exited")
}
