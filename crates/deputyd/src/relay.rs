//! A remote client's process streams, once its connection is upgraded: the process's stdin,
//! stdout and stderr (or its terminal) are pipes held here, relayed as the frames of
//! [`deputy_proto::stream`].
//!
//! ```text
//!  client ──Input/InputEnd/Resize/Signal──▶ inbound ──queue (≤ INPUT_WINDOW)──▶ input ──▶ stdin pipe
//!         ◀──Output/Errors/…/Credit/Exit─── output ◀── stdout, stderr pipes, exit, credits
//! ```
//!
//! Three futures of one task. Memory stays bounded whatever the client does: input is taken
//! only against credit (a client that sends more is cut off), and output is read from a pipe
//! only once the previous frame is written, so a client that stops reading stops the process
//! at a full pipe, not the daemon at a growing buffer.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deputy::Signal;
use deputy_proto::stream::{self, ExitFrame, Frame, FrameBuffer};
use deputy_proto::{self as proto};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, mpsc, oneshot};
use zlink::connection::socket::{ReadHalf, WriteHalf};

use crate::server::Daemon;
use crate::sessions::Session;
use crate::socket::{BoundedRead, BoundedWrite};

/// How long output is still relayed after the process exits, while it keeps coming (a
/// background child may hold the pipe): after this long without any, the exit is sent.
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// The most time output is relayed after the exit.
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// What the relay of one process needs, from CreateProcess.
pub struct Streams {
    /// The process.
    pub pid: i32,
    /// Its session.
    pub session: Arc<Session>,
    /// Its handle, for signals.
    pub child: Arc<deputy::Child>,
    /// The request id of its start, for the audit.
    pub request: String,
    /// Its exit, once its waiter has seen it.
    pub exit: oneshot::Receiver<proto::Exit>,
    /// Its stops and continues.
    pub events: mpsc::UnboundedReceiver<deputy::ChildEvent>,
    /// Its ends of the streams.
    pub io: Io,
}

/// deputyd's ends of a process's streams.
pub enum Io {
    /// Three pipes: the writing end of its stdin, the reading ends of its stdout and stderr.
    Pipes {
        /// Its stdin.
        stdin: OwnedFd,
        /// Its stdout.
        stdout: OwnedFd,
        /// Its stderr.
        stderr: OwnedFd,
    },
    /// The leader of its terminal.
    Pty(OwnedFd),
}

/// One end of a pipe or terminal, non-blocking, on the runtime.
struct Fd(AsyncFd<OwnedFd>);

impl Fd {
    fn new(fd: OwnedFd, interest: Interest) -> io::Result<Fd> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
        deputy_os::async_fd(fd, interest).map(Fd)
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = self
                .0
                .async_io(Interest::WRITABLE, |fd| {
                    rustix::io::write(fd, bytes).map_err(io::Error::from)
                })
                .await?;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

/// Relays `streams` over an upgraded connection until the process has exited and its exit
/// has been sent, or the client is gone (then the process is ended, as for a local client
/// that goes away).
pub async fn relay(
    daemon: &Arc<Daemon>,
    streams: Streams,
    mut read: zlink::connection::Rewind<BoundedRead>,
    mut write: BoundedWrite,
) {
    let Streams {
        pid,
        session,
        child,
        request,
        exit,
        events,
        io,
    } = streams;
    let opened = match io {
        Io::Pipes {
            stdin,
            stdout,
            stderr,
        } => Fd::new(stdin, Interest::WRITABLE).and_then(|stdin| {
            Ok((
                stdin,
                (
                    Some(Fd::new(stdout, Interest::READABLE)?),
                    Some(Fd::new(stderr, Interest::READABLE)?),
                ),
                false,
            ))
        }),
        // Input and output on two descriptors of the leader: each registered for its own
        // direction.
        Io::Pty(leader) => leader.try_clone().and_then(|input| {
            Ok((
                Fd::new(input, Interest::WRITABLE)?,
                (Some(Fd::new(leader, Interest::READABLE)?), None),
                true,
            ))
        }),
    };
    let (stdin, outputs, terminal) = match opened {
        Ok(opened) => opened,
        Err(err) => {
            daemon.audit.record("stream_failed", &request, serde_json::json!({"session": session.id, "pid": pid, "reason": format!("cannot relay the process's streams: {err}")}));
            crate::methods::client_gone(daemon, &session, &child, &request);
            return;
        }
    };

    let queue = Input::default();
    let (credits, credit_rx) = mpsc::unbounded_channel();
    let inbound = inbound(&mut read, &queue, &session, &child, pid);
    let input = feed(stdin, &queue, credits, terminal.then_some((&*child, pid)));
    let output = output(&mut write, outputs, credit_rx, events, exit);
    let cut = tokio::select! {
        cut = inbound => Some(cut),
        cut = output => cut.err(),
        () = input => None,
    };
    match cut {
        None => write.close().await,
        Some(reason) => {
            daemon.audit.record(
                "stream_cut",
                &request,
                serde_json::json!({"session": session.id, "pid": pid, "reason": reason}),
            );
            crate::methods::client_gone(daemon, &session, &child, &request);
        }
    }
}

/// The input taken from the client and not yet written to the process.
#[derive(Default)]
struct Input {
    chunks: Mutex<VecDeque<Vec<u8>>>,
    /// Bytes taken and not yet credited back.
    outstanding: AtomicU64,
    /// The client's stdin has ended.
    ended: AtomicBool,
    arrived: Notify,
}

impl Input {
    fn chunks(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.chunks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Reads the client's frames; returns why it stopped.
async fn inbound(
    read: &mut zlink::connection::Rewind<BoundedRead>,
    queue: &Input,
    session: &Session,
    child: &deputy::Child,
    pid: i32,
) -> String {
    let mut buffer = FrameBuffer::default();
    loop {
        loop {
            let frame = match buffer.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return err.to_string(),
            };
            match frame {
                Frame::Input(data) => {
                    let outstanding = queue.outstanding.load(Ordering::Relaxed) + data.len() as u64;
                    if outstanding > u64::from(stream::INPUT_WINDOW) {
                        return format!(
                            "{outstanding} bytes of input sent against a window of {}",
                            stream::INPUT_WINDOW
                        );
                    }
                    queue.outstanding.store(outstanding, Ordering::Relaxed);
                    queue.chunks().push_back(data.to_vec());
                    queue.arrived.notify_one();
                }
                Frame::InputEnd => {
                    queue.ended.store(true, Ordering::Relaxed);
                    queue.arrived.notify_one();
                }
                Frame::Resize { rows, cols } => {
                    let _ = session.resize(pid, rows, cols);
                }
                Frame::Signal(number) => {
                    // Not a signal (or the process has just ended): nothing to do.
                    if let Some(signal) = Signal::from_named_raw(number) {
                        let _ = child.signal(signal);
                    }
                }
                other => {
                    return format!(
                        "the client sent a frame of kind {}, which only deputyd sends",
                        other.name()
                    );
                }
            }
        }
        match read.read(buffer.spare()).await {
            Ok(result) if result.bytes_read() == 0 => {
                return if buffer.is_partial() {
                    "the connection ended inside a frame".into()
                } else {
                    "the client closed the connection".into()
                };
            }
            Ok(result) => buffer.filled(result.bytes_read()),
            Err(err) => return err.to_string(),
        }
    }
}

/// Writes the queued input to the process, crediting the client for each chunk written (or
/// dropped, once the process has closed its stdin). On a terminal (`terminal`: the process
/// and its pid), the input's end is the terminal's EOF character, and Ctrl-Z meant for the
/// process itself stops it with SIGSTOP, as the local CLI does (`deputy::pty::suspend_key`).
/// Never returns.
async fn feed(
    stdin: Fd,
    queue: &Input,
    credits: mpsc::UnboundedSender<u32>,
    terminal: Option<(&deputy::Child, i32)>,
) {
    let mut stdin = Some(stdin);
    let mut ended = false;
    loop {
        let chunk = queue.chunks().pop_front();
        let Some(chunk) = chunk else {
            if queue.ended.load(Ordering::Relaxed) && !ended {
                ended = true;
                match (&stdin, terminal) {
                    (Some(fd), Some(_)) => {
                        let _ = fd.write_all(b"\x04").await;
                    }
                    // EOF for the process: its stdin's last writer closes.
                    _ => stdin = None,
                }
            }
            queue.arrived.notified().await;
            continue;
        };
        if let Some(fd) = &stdin
            && write_input(fd, &chunk, terminal).await.is_err()
        {
            // EPIPE: the process closed its stdin. The rest is dropped, as a pipe would.
            stdin = None;
        }
        let n = chunk.len() as u32;
        queue.outstanding.fetch_sub(u64::from(n), Ordering::Relaxed);
        let _ = credits.send(n);
    }
}

/// Writes `chunk` to the process's stdin or terminal; on a terminal, a suspend key meant for
/// the process stops it instead of being written.
async fn write_input(
    fd: &Fd,
    mut chunk: &[u8],
    terminal: Option<(&deputy::Child, i32)>,
) -> io::Result<()> {
    if let Some((child, pid)) = terminal
        && let Some(key) = deputy::pty::suspend_key(std::os::fd::AsFd::as_fd(fd.0.get_ref()), pid)
        && let Some(at) = chunk.iter().position(|b| *b == key)
    {
        fd.write_all(&chunk[..at]).await?;
        let _ = child.signal(Signal::STOP);
        chunk = &chunk[at + 1..];
    }
    fd.write_all(chunk).await
}

/// Writes the process's output, credits, stops and continues, and last its exit.
async fn output(
    write: &mut BoundedWrite,
    (mut stdout, mut stderr): (Option<Fd>, Option<Fd>),
    mut credits: mpsc::UnboundedReceiver<u32>,
    mut events: mpsc::UnboundedReceiver<deputy::ChildEvent>,
    mut exit: oneshot::Receiver<proto::Exit>,
) -> Result<(), String> {
    let mut frames = Vec::with_capacity(stream::HEADER + stream::MAX_PAYLOAD);
    let mut data = vec![0u8; stream::MAX_PAYLOAD];
    let mut exited: Option<proto::Exit> = None;
    let mut drain_until = tokio::time::Instant::now();
    let mut drain_end = tokio::time::Instant::now();
    while exited.is_none() || stdout.is_some() || stderr.is_some() {
        frames.clear();
        tokio::select! {
            biased;
            Some(n) = credits.recv() => Frame::Credit(n).encode(&mut frames),
            Some(event) = events.recv() => match event {
                deputy::ChildEvent::Stopped(signal) => Frame::Stopped(signal).encode(&mut frames),
                deputy::ChildEvent::Continued => Frame::Continued.encode(&mut frames),
                deputy::ChildEvent::Exited(_) => continue,
            },
            ready = readable(&stdout), if stdout.is_some() => {
                let Some(read) = take(ready, &mut data) else { continue };
                if !relay_read(read, &data, &mut frames, |b| Frame::Output(b), Frame::OutputEnd) {
                    stdout = None;
                }
                drain_until = tokio::time::Instant::now() + DRAIN_IDLE;
            }
            ready = readable(&stderr), if stderr.is_some() => {
                let Some(read) = take(ready, &mut data) else { continue };
                if !relay_read(read, &data, &mut frames, |b| Frame::Errors(b), Frame::ErrorsEnd) {
                    stderr = None;
                }
                drain_until = tokio::time::Instant::now() + DRAIN_IDLE;
            }
            status = &mut exit, if exited.is_none() => {
                exited = Some(status.unwrap_or(proto::Exit { code: None, signal: None }));
                let now = tokio::time::Instant::now();
                drain_until = now + DRAIN_IDLE;
                drain_end = now + DRAIN_MAX;
                continue;
            }
            () = tokio::time::sleep_until(drain_until.min(drain_end)), if exited.is_some() => break,
        }
        send(write, &frames).await?;
    }
    let exit = match exited {
        Some(proto::Exit {
            code: Some(code), ..
        }) => ExitFrame::Code(code),
        Some(proto::Exit {
            signal: Some(signal),
            ..
        }) => ExitFrame::Signal(signal),
        _ => ExitFrame::Unknown,
    };
    frames.clear();
    Frame::Exit(exit).encode(&mut frames);
    send(write, &frames).await
}

/// Waits until `fd` (which is open) may be read.
async fn readable(fd: &Option<Fd>) -> io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>> {
    match fd {
        Some(fd) => fd.0.readable().await,
        None => std::future::pending().await,
    }
}

/// Reads what a readiness promised: `None` when it was spurious (readiness cleared; wait
/// again), else the read's result (0 at the end; a terminal's EIO is its end too).
fn take(
    ready: io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>>,
    data: &mut [u8],
) -> Option<io::Result<usize>> {
    let mut guard = match ready {
        Ok(guard) => guard,
        Err(err) => return Some(Err(err)),
    };
    match guard.try_io(|fd| rustix::io::read(fd.get_ref(), &mut *data).map_err(io::Error::from)) {
        Ok(Err(err)) if err.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => {
            Some(Ok(0))
        }
        Ok(read) => Some(read),
        Err(_would_block) => None,
    }
}

/// Encodes a read's bytes as a data frame, or its end as an end frame; false at the end.
fn relay_read(
    read: io::Result<usize>,
    data: &[u8],
    frames: &mut Vec<u8>,
    bytes: fn(&[u8]) -> Frame<'_>,
    end: Frame<'static>,
) -> bool {
    match read {
        Ok(n) if n > 0 => {
            bytes(&data[..n]).encode(frames);
            true
        }
        // The end, or an error, which ends the stream the same way.
        _ => {
            end.encode(frames);
            false
        }
    }
}

async fn send(write: &mut BoundedWrite, frames: &[u8]) -> Result<(), String> {
    write
        .write(frames, &[] as &[OwnedFd], None)
        .await
        .map_err(|err| format!("cannot write to the client: {err}"))
}
