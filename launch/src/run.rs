//! A plain `deputy run`, start to exit code — what the full CLI's `run` does for the same
//! line, without a terminal: blocking system calls on one thread, no runtime.
//!
//! ```text
//!  deputy run -- CMD                    CreateProcess (peer token: as yourself)
//!  deputy run -u U -- CMD   (root)      CreateProcess{user} (no password, as policy allows)
//!  deputy run -u U --password-stdin     Logon{user, passwordFd} → CreateProcess{session}
//!  deputy run --session ID -- CMD       CreateProcess{session}
//!  then: reply 1 = pid, reply 2 = exit; SIGINT/TERM/HUP/QUIT → Signal{pid} on a second
//!  connection; SIGTSTP → Signal{SIGSTOP}, and when the command is reported stopped, we stop
//!  too, and resume it (SIGCONT) when we are resumed
//! ```
//! The command's stdin, stdout and stderr are ours, passed as descriptors: not copied.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use deputy_proto as proto;
use deputy_quick::exit::Failure;
use deputy_quick::line::Plain;
use deputy_quick::wire::{self, Method};
use origin::signal::Signal;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::sys;

/// The most descriptors a call of ours passes: stdin, stdout, stderr.
const MAX_FDS: usize = 3;

/// Runs `plain`; returns its exit code (or deputy's).
pub fn run(plain: &Plain) -> u8 {
    match start_and_wait(plain) {
        Ok(code) => code,
        Err(failure) => fail(&failure),
    }
}

/// Prints `failure` as the full CLI does and returns its exit code.
pub fn fail(failure: &Failure) -> u8 {
    // A stderr whose reader is gone must cost us the message, not the exit code (std's
    // programs, the full CLI among them, ignore SIGPIPE for the same reason).
    sys::ignore(Signal::PIPE);
    let message = format!("deputy: {failure}\n");
    let _ = rustix::io::write(sys::stderr(), message.as_bytes());
    failure.code()
}

fn start_and_wait(plain: &Plain) -> Result<u8, Failure> {
    let mut conn = Connection::open(&plain.socket)?;
    let mut create = proto::CreateProcess {
        argv: plain.command.clone(),
        env: (!plain.env.is_empty()).then(|| plain.env.clone()),
        cwd: plain.cwd.clone(),
        keep_session: plain.keep_session.then_some(true),
        session: plain.session.clone(),
        stdin: Some(0),
        stdout: Some(1),
        stderr: Some(2),
        ..proto::CreateProcess::default()
    };
    if let Some(user) = &plain.user {
        if rustix::process::geteuid().is_root() && !plain.password_stdin {
            create.user = Some(user.clone());
            create.logon_type = plain.logon_type.clone();
        } else {
            let password = read_password()?;
            let logon = proto::Logon {
                user: user.clone(),
                password_fd: Some(0),
                logon_type: plain.logon_type.clone(),
                keep_session: plain.keep_session.then_some(true),
                ..proto::Logon::default()
            };
            let pipe = secret_pipe(&password)?;
            conn.send(&Method::Logon(&logon), false, &[pipe.as_fd()])?;
            drop(pipe);
            let (reply, _): (proto::LogonReply, _) = conn.receive()?;
            create.session = Some(reply.session);
        }
    }
    // Caught before the command starts, so that a signal that comes early is queued, not fatal.
    let signals = sys::catch(&[
        Signal::TSTP,
        Signal::INT,
        Signal::TERM,
        Signal::HUP,
        Signal::QUIT,
    ])
    .map_err(|err| Failure::Other(format!("cannot catch signals: {}", describe(err))))?;
    conn.send(
        &Method::CreateProcess(&create),
        true,
        &[sys::stdin(), sys::stdout(), sys::stderr()],
    )?;
    let (started, _): (proto::ProcessEvent, _) = conn.receive()?;
    let pid = started.pid;
    loop {
        while let Some(message) = conn.buffered() {
            let (event, continues): (proto::ProcessEvent, _) = wire::decode_reply(&message)?;
            if event.stopped.is_some() {
                // The command stopped (Ctrl-Z): stop as a foreground job does; when the shell
                // resumes us (fg), resume the command. SIGSTOP, not SIGTSTP: we catch the latter.
                let _ = rustix::process::kill_process(rustix::process::getpid(), Signal::STOP);
                forward(&plain.socket, pid, Signal::CONT);
                continue;
            }
            if event.exit.is_none() && continues {
                continue;
            }
            let code = event.exit.map_or(255, |exit| exit.shell_code());
            return Ok(u8::try_from(code).unwrap_or(255));
        }
        let mut fds = [
            PollFd::new(&conn.socket, PollFlags::IN),
            PollFd::new(&signals, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(err) => return Err(Failure::Other(format!("cannot wait: {}", describe(err)))),
        }
        let (socket_ready, signal_ready) =
            (!fds[0].revents().is_empty(), !fds[1].revents().is_empty());
        if signal_ready {
            let mut caught = [0u8; 16];
            while let Ok(count @ 1..) = rustix::io::read(&signals, &mut caught) {
                for &number in &caught[..count] {
                    // The command leads a session whose parent (deputyd) is outside it: an
                    // orphaned process group, for which the kernel discards SIGTSTP. Ctrl-Z must
                    // therefore arrive as SIGSTOP, which it cannot discard.
                    let signal = match Signal::from_named_raw(i32::from(number)) {
                        Some(Signal::TSTP) => Signal::STOP,
                        Some(signal) => signal,
                        None => continue,
                    };
                    forward(&plain.socket, pid, signal);
                }
            }
        }
        if socket_ready {
            conn.fill()?;
        }
    }
}

/// Sends `signal` to the command, over a second connection: the first one is busy streaming
/// the process's events. Best effort, as in the full CLI: the command may be gone.
fn forward(socket: &str, pid: i32, signal: Signal) {
    if let Ok(mut other) = Connection::open(socket) {
        let call = proto::Signal {
            pid: Some(pid),
            session: None,
            signal: signal.as_raw(),
        };
        if other.send(&Method::Signal(&call), false, &[]).is_ok() {
            let _: Result<(proto::Empty, bool), _> = other.receive();
        }
    }
}

/// The password: the first line of stdin, read a byte at a time, up to the newline. What
/// follows it is the command's input (its stdin is ours), and a buffered read would take some
/// of it away.
fn read_password() -> Result<Zeroizing<String>, Failure> {
    let mut line = Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(sys::stdin(), &mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(Errno::INTR) => {}
            Err(err) => {
                return Err(Failure::Other(format!(
                    "cannot read the password: {}",
                    describe(err)
                )));
            }
        }
    }
    match String::from_utf8(core::mem::take(&mut *line)) {
        Ok(password) => Ok(Zeroizing::new(password)),
        Err(err) => {
            // Zeroed before it is dropped: it holds the password's bytes.
            let _ = Zeroizing::new(err.into_bytes());
            Err(Failure::Other("the password is not UTF-8".to_owned()))
        }
    }
}

/// A pipe holding `secret`, for passing: the password never travels in the JSON.
fn secret_pipe(secret: &str) -> Result<OwnedFd, Failure> {
    let pipe_failed = |err| Failure::Other(format!("cannot make a pipe: {}", describe(err)));
    let (reader, writer) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(pipe_failed)?;
    let mut bytes = secret.trim_end_matches('\n').as_bytes();
    while !bytes.is_empty() {
        match rustix::io::write(&writer, bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(Errno::INTR) => {}
            Err(err) => {
                return Err(Failure::Other(format!(
                    "cannot write the pipe: {}",
                    describe(err)
                )));
            }
        }
    }
    Ok(reader)
}

/// One connection to deputyd: blocking, and messages split at their NULs.
struct Connection {
    socket: OwnedFd,
    /// Bytes received and not yet taken as messages.
    received: Vec<u8>,
}

impl Connection {
    /// Connects to deputyd at `path`.
    fn open(path: &str) -> Result<Self, Failure> {
        let unreachable = |err: Errno| {
            Failure::Other(format!(
                "cannot reach deputyd at {path}: {} (is it running?)",
                describe(err)
            ))
        };
        let address = rustix::net::SocketAddrUnix::new(path).map_err(unreachable)?;
        let socket = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(unreachable)?;
        rustix::net::connect(&socket, &address).map_err(unreachable)?;
        Ok(Connection {
            socket,
            received: Vec::new(),
        })
    }

    /// Sends `method` with `fds`, in one message; `more` asks for a stream of replies.
    fn send(
        &mut self,
        method: &Method<'_>,
        more: bool,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), Failure> {
        let message = wire::encode_call(method, more);
        let mut space = [core::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Failure::Other("too many descriptors to pass".to_owned()));
        }
        let mut sent = 0;
        while sent < message.len() {
            let chunk = [rustix::io::IoSlice::new(&message[sent..])];
            // The descriptors go with the first bytes only.
            let result = if sent == 0 {
                rustix::net::sendmsg(&self.socket, &chunk, &mut control, SendFlags::NOSIGNAL)
            } else {
                rustix::net::send(&self.socket, &message[sent..], SendFlags::NOSIGNAL)
            };
            match result {
                Ok(count) => sent += count,
                Err(Errno::INTR) => {}
                Err(err) => return Err(transport(err)),
            }
        }
        Ok(())
    }

    /// The next reply: waits for it.
    fn receive<T: DeserializeOwned>(&mut self) -> Result<(T, bool), Failure> {
        loop {
            if let Some(message) = self.buffered() {
                return wire::decode_reply(&message);
            }
            self.fill()?;
        }
    }

    /// The next whole message already received, if any (without its NUL).
    fn buffered(&mut self) -> Option<Vec<u8>> {
        let end = self.received.iter().position(|&b| b == 0)?;
        let mut message: Vec<u8> = self.received.drain(..=end).collect();
        message.pop();
        Some(message)
    }

    /// Receives what has come. Descriptors passed with it (a reply's pidfd) are not taken:
    /// the kernel closes them.
    fn fill(&mut self) -> Result<(), Failure> {
        let mut chunk = [0u8; 4096];
        loop {
            match rustix::net::recv(&self.socket, &mut chunk, RecvFlags::empty()) {
                Ok((0, _)) => {
                    return Err(Failure::Other(
                        "talking to deputyd: the connection was closed".to_owned(),
                    ));
                }
                Ok((count, _)) => {
                    if self.received.len() + count > proto::MAX_MESSAGE {
                        return Err(Failure::Other(
                            "talking to deputyd: a reply over 1 MiB".to_owned(),
                        ));
                    }
                    self.received.extend_from_slice(&chunk[..count]);
                    return Ok(());
                }
                Err(Errno::INTR) => {}
                Err(err) => return Err(transport(err)),
            }
        }
    }
}

/// A failure to talk to deputyd.
fn transport(err: Errno) -> Failure {
    Failure::Other(format!("talking to deputyd: {}", describe(err)))
}

/// `err` as std prints it ("No such file or directory (os error 2)"), for the errors the
/// launcher can meet; others by number. (Without libc there is no strerror.)
pub fn describe(err: Errno) -> String {
    let text = match err {
        Errno::NOENT => "No such file or directory",
        Errno::ACCESS => "Permission denied",
        Errno::PERM => "Operation not permitted",
        Errno::CONNREFUSED => "Connection refused",
        Errno::CONNRESET => "Connection reset by peer",
        Errno::PIPE => "Broken pipe",
        Errno::NOTDIR => "Not a directory",
        Errno::NOTSOCK => "Socket operation on non-socket",
        Errno::NAMETOOLONG => "File name too long",
        Errno::LOOP => "Too many levels of symbolic links",
        Errno::AGAIN => "Resource temporarily unavailable",
        Errno::MFILE => "Too many open files",
        Errno::NFILE => "Too many open files in system",
        Errno::NOMEM => "Cannot allocate memory",
        Errno::NOEXEC => "Exec format error",
        Errno::INVAL => "Invalid argument",
        _ => return format!("os error {}", err.raw_os_error()),
    };
    format!("{text} (os error {})", err.raw_os_error())
}
