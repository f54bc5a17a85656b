//! The standard streams of the processes netd holds open for clients to attach to:
//! containers run with `-i` or `-t`, and execs. netd holds the pseudo-terminal's master
//! side (with `-t`) or the pipes, copies what the process writes to every attached
//! client (and to the container's log), and what a client types to the process.
//!
//! A terminal outlives the agent: a holder process keeps its master side while no agent
//! does (`crate::terminal`), and the next agent wires it in again. Pipes (`-i` without
//! `-t`) live in the agent: one that stops closes them, and the process sees its stdin
//! end, as when the other side of a pipe goes away.
use std::{
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use tokio::{
    io::{unix::AsyncFd, AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::{Child, ChildStdin},
    sync::{broadcast, Mutex},
};

use crate::process::ChildIo;

/// Docker's stream numbers in a multiplexed attach stream.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;

/// What an attached client receives: output of one stream, or the end of the output
/// (the process closed it, usually by exiting).
#[derive(Clone, Debug)]
pub enum Frame {
    Out(u8, Arc<[u8]>),
    End,
}

/// Where what the clients type goes.
enum Sink {
    Tty(Arc<AsyncFd<OwnedFd>>),
    Pipe(ChildStdin),
}

/// One process's streams (a container's survive its restarts: each start wires its
/// new process in).
pub struct Hub {
    out: broadcast::Sender<Frame>,
    sink: Mutex<Option<Sink>>,
    tty: std::sync::Mutex<Option<Arc<AsyncFd<OwnedFd>>>>,
    /// A process of this daemon's is wired in (false before the first start, after
    /// the output ended, and for a process adopted after a restart).
    wired: AtomicBool,
}

/// The master side of a new pseudo-terminal, kept until the process is spawned.
pub struct Master(OwnedFd);

impl Master {
    /// The master side itself (for its holder: see `crate::terminal`).
    pub fn fd(&self) -> &OwnedFd {
        &self.0
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub {
            out: broadcast::channel(1024).0,
            sink: Mutex::new(None),
            tty: std::sync::Mutex::new(None),
            wired: AtomicBool::new(false),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.out.subscribe()
    }

    pub fn wired(&self) -> bool {
        self.wired.load(Ordering::Acquire)
    }

    /// The streams for a process about to start: the slave side of a new terminal
    /// (`tty`), or pipes (stdin one if `stdin`).
    pub fn prepare(tty: bool, stdin: bool) -> io::Result<(ChildIo, Option<Master>)> {
        if !tty {
            return Ok((ChildIo::Pipes { stdin }, None));
        }
        let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        Ok((ChildIo::Tty(pty.slave), Some(Master(pty.master))))
    }

    /// Wires a started process in: its terminal's master side, or its pipes (taken
    /// from `child`). Output is copied to the clients and appended to `log`.
    pub async fn wire(
        self: &Arc<Self>,
        master: Option<Master>,
        child: &mut Child,
        log: Option<PathBuf>,
    ) -> io::Result<()> {
        let log = match log {
            Some(p) => Some(tokio::fs::File::create(p).await?),
            None => None,
        };
        match master {
            Some(Master(fd)) => self.wire_terminal(fd, log).await,
            None => {
                self.wired.store(true, Ordering::Release);
                let hub = self.clone();
                *self.sink.lock().await = child.stdin.take().map(Sink::Pipe);
                let (out, err) = (child.stdout.take(), child.stderr.take());
                tokio::spawn(async move {
                    let log = tokio::sync::Mutex::new(log);
                    tokio::join!(hub.copy(out, STDOUT, &log), hub.copy(err, STDERR, &log));
                    hub.end();
                });
                Ok(())
            }
        }
    }

    /// Wires a terminal's master side in: what the process writes goes to the clients
    /// and to `log`, what they type to the process. After a restart, the master side
    /// comes from the terminal's holder (see `crate::terminal`).
    pub async fn wire_terminal(
        self: &Arc<Self>,
        fd: OwnedFd,
        mut log: Option<tokio::fs::File>,
    ) -> io::Result<()> {
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd returns the fd it owns for as long as it lives, which is as
        // long as the AsyncFd that owns it.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| io::Error::other(format!("watching the terminal: {e}")))?;
        let fd = Arc::new(fd);
        *self.sink.lock().await = Some(Sink::Tty(fd.clone()));
        *self.tty.lock().unwrap_or_else(|p| p.into_inner()) = Some(fd.clone());
        self.wired.store(true, Ordering::Release);
        let hub = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            // EIO once the terminal's last user is gone: the end.
            while let Ok(n) = read_fd(&fd, &mut buf).await {
                if n == 0 {
                    break;
                }
                hub.send(STDOUT, &buf[..n], log.as_mut()).await;
            }
            hub.end();
        });
        Ok(())
    }

    async fn copy(
        &self,
        from: Option<impl AsyncRead + Unpin>,
        stream: u8,
        log: &tokio::sync::Mutex<Option<tokio::fs::File>>,
    ) {
        let Some(mut from) = from else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            self.send(stream, &buf[..n], log.lock().await.as_mut())
                .await;
        }
    }

    async fn send(&self, stream: u8, data: &[u8], log: Option<&mut tokio::fs::File>) {
        if let Some(f) = log {
            // A full disk must not stop the process: the clients still get it.
            let _ = f.write_all(data).await;
        }
        let _ = self.out.send(Frame::Out(stream, Arc::from(data)));
    }

    fn end(&self) {
        self.wired.store(false, Ordering::Release);
        *self.tty.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let _ = self.out.send(Frame::End);
    }

    /// Writes what a client typed to the process.
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        match &mut *self.sink.lock().await {
            Some(Sink::Pipe(p)) => p.write_all(data).await,
            Some(Sink::Tty(fd)) => write_all_fd(fd, data).await,
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the process's stdin is closed",
            )),
        }
    }

    /// The client's input ended (Docker's StdinOnce): the process's stdin ends too; on
    /// a terminal, as a typed end-of-file does.
    pub async fn close_stdin(&self) {
        let mut sink = self.sink.lock().await;
        if let Some(Sink::Tty(fd)) = &*sink {
            let _ = write_all_fd(fd, &[4]).await;
            return;
        }
        *sink = None;
    }

    /// The terminal's size (rows, columns), as a client's terminal has it.
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let tty = self.tty.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(fd) = tty else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the process has no terminal",
            ));
        };
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize that lives for the call.
        let r = unsafe { libc::ioctl(fd.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(())
}

async fn read_fd(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        // SAFETY: reads into a buffer of `buf.len()` bytes that outlives the call.
        let r = guard.try_io(|inner| {
            let n = unsafe { libc::read(inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        if let Ok(result) = r {
            return result;
        }
    }
}

async fn write_all_fd(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        // SAFETY: writes from a buffer of `data.len()` bytes that outlives the call.
        let r = guard.try_io(|inner| {
            let n = unsafe { libc::write(inner.as_raw_fd(), data.as_ptr().cast(), data.len()) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        if let Ok(n) = r {
            data = &data[n?..];
        }
    }
    Ok(())
}
