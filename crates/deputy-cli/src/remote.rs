//! `deputy --remote HOST:PORT run -u USER -- CMD`: the same run, with a deputyd on another
//! machine, over TLS.
//!
//! ```text
//!  TLS (server certificate verified: --ca, else the system's CAs; --cert/--key if asked)
//!  GetInfo                 one round trip: the server has accepted us before any secret goes
//!  Logon{user, password}   the password inline: it travels only inside the verified TLS
//!  CreateProcess{session, pty?} with "upgrade"; reply: pid
//!  then frames (deputy_proto::stream): our stdin → Input (against credit), signals → Signal,
//!  SIGWINCH → Resize; Output/Errors → our stdout/stderr; Exit → our exit code
//! ```
//! Exit codes as locally: the command's own, 128+N for signal N, or deputy's (see `exit`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deputy_proto::stream::{self, ExitFrame, Frame, FrameBuffer};
use deputy_proto::{self as proto};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use zeroize::Zeroize;
use zlink::Call;
use zlink::connection::socket::{self, ReadHalf, ReadResult, Socket, WriteHalf};

use crate::Cli;
use crate::client::{self, Failure, Method};
use crate::run::RunArgs;

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection, as zlink's socket: no descriptors travel on it.
#[derive(Debug)]
pub struct Tls(Box<TlsStream>);

/// Its read half.
#[derive(Debug)]
pub struct TlsRead(tokio::io::ReadHalf<TlsStream>);

/// Its write half.
#[derive(Debug)]
pub struct TlsWrite(tokio::io::WriteHalf<TlsStream>);

impl Socket for Tls {
    type ReadHalf = TlsRead;
    type WriteHalf = TlsWrite;

    fn split(self) -> (TlsRead, TlsWrite) {
        let (read, write) = tokio::io::split(*self.0);
        (TlsRead(read), TlsWrite(write))
    }
}

impl socket::ReadHalf for TlsRead {
    async fn read(&mut self, buf: &mut [u8]) -> zlink::Result<ReadResult> {
        // zlink's own sockets build their results this way.
        Ok(ReadResult::new(self.0.read(buf).await?))
    }
}

impl socket::WriteHalf for TlsWrite {
    async fn write(
        &mut self,
        buf: &[u8],
        fds: &[impl std::os::fd::AsFd],
        _credentials: Option<&zlink::connection::PassedCredentials>,
    ) -> zlink::Result<()> {
        if !fds.is_empty() {
            return Err(zlink::Error::Io(std::io::Error::other(
                "descriptors cannot travel over TLS",
            )));
        }
        self.0.write_all(buf).await?;
        self.0.flush().await?;
        Ok(())
    }
}

/// The system's CA bundle on Debian, unless SSL_CERT_FILE says otherwise.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Every PEM block of type `T` in `path`, at least one: `what` names it in the error, which
/// names the `option` that gave the file.
fn pem_blocks<T: PemObject>(option: &str, what: &str, path: &Path) -> Result<Vec<T>, Failure> {
    let blocks = T::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| Failure::Other(format!("{option} {}: {e}", path.display())))?;
    if blocks.is_empty() {
        return Err(Failure::Other(format!(
            "{option} {}: no PEM {what} in it",
            path.display()
        )));
    }
    Ok(blocks)
}

fn certificates(option: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    pem_blocks(option, "certificate", path)
}

/// The revocation lists of `--crl` (PEM; a file may hold several).
fn revocation_lists(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, Failure> {
    let mut crls = Vec::new();
    for path in paths {
        crls.extend(pem_blocks("--crl", "revocation list (X509 CRL)", path)?);
    }
    Ok(crls)
}

/// Our TLS configuration: TLS 1.2 or 1.3 (the server chooses within what it allows), the
/// server verified against the CAs (and the revocation lists, when given), our certificate
/// when we have one.
fn client_config(cli: &Cli) -> Result<rustls::ClientConfig, Failure> {
    let ca = match &cli.ca {
        Some(path) => path.clone(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| PathBuf::from(SYSTEM_CAS), PathBuf::from),
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates("--ca", &ca)? {
        roots
            .add(certificate)
            .map_err(|e| Failure::Other(format!("--ca {}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Other(format!("TLS: {e}")))?;
    let builder = if cli.crls.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        // rustls's strict defaults: every certificate of the chain is checked, and one whose
        // issuer has no list among them is refused.
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .with_crls(revocation_lists(&cli.crls)?)
                .build()
                .map_err(|e| Failure::Other(format!("--ca and --crl: {e}")))?;
        builder.with_webpki_verifier(verifier)
    };
    match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("--cert", cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Failure::Other(format!("--key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Failure::Other(format!("--cert and --key: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `HOST:PORT` (or `[V6]:PORT`): the host, as a name to verify, and the port.
fn host_and_port(remote: &str) -> Result<(&str, u16), Failure> {
    let bad = || Failure::Other(format!("--remote {remote:?}: expected HOST:PORT"));
    let (host, port) = remote.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Connects and completes the handshake, the server's certificate verified for `host`.
async fn connect(cli: &Cli, remote: &str) -> Result<zlink::Connection<Tls>, Failure> {
    let (host, port) = host_and_port(remote)?;
    let config = client_config(cli)?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Failure::Other(format!("--remote {remote}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| Failure::Other(format!("cannot reach deputyd at {remote}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::Other(format!("TLS with {remote} failed, nothing was sent: {e}")))?;
    Ok(zlink::Connection::new(Tls(Box::new(tls))))
}

/// Runs the command on the remote deputyd; returns its exit code.
pub async fn run(cli: &Cli, remote: &str, args: &RunArgs) -> Result<u8, Failure> {
    let local_only = [
        (args.delegate, "--delegate"),
        (args.netonly, "--netonly"),
        (args.x11, "--x11"),
        (!args.grants.is_empty(), "--grant"),
        (args.keep_session, "--keep-session"),
        (args.session.is_some(), "--session"),
    ];
    if let Some((_, option)) = local_only.iter().find(|(set, _)| *set) {
        return Err(Failure::Other(format!(
            "{option} does not work with --remote: it acts on this machine, or outlives the connection"
        )));
    }
    let mut conn = connect(cli, remote).await?;
    // A round trip before any secret: with mutual TLS, the server checks our certificate
    // after the handshake, and refuses us here, not after it has had the password.
    let _: proto::Info = client::call(&mut conn, &Method::GetInfo, Vec::new())
        .await
        .map_err(|failure| match failure {
            Failure::Other(reason) => Failure::Other(format!(
                "deputyd at {remote} did not accept the connection, nothing was sent: {reason}"
            )),
            other => other,
        })?;
    let mut create = proto::CreateProcess {
        argv: args.command.clone(),
        env: (!args.env.is_empty()).then(|| args.env.clone()),
        cwd: args.cwd.as_ref().map(|dir| dir.display().to_string()),
        ..proto::CreateProcess::default()
    };
    if let Some(user) = &args.user {
        let password = crate::run::read_password(args, user)?;
        let mut logon = proto::Logon {
            user: user.clone(),
            password: Some(password.trim_end_matches('\n').to_owned()),
            logon_type: args.logon_type.clone(),
            ..proto::Logon::default()
        };
        let reply: Result<proto::LogonReply, _> =
            client::call(&mut conn, &Method::Logon(&logon), Vec::new()).await;
        if let Some(password) = logon.password.as_mut() {
            password.zeroize();
        }
        create.session = Some(reply?.session);
    }
    let use_pty = crate::terminal::wanted(args.pty, args.no_pty);
    if use_pty {
        let size = crate::terminal::size();
        create.pty = Some(true);
        create.rows = size.map(|(rows, _)| rows);
        create.cols = size.map(|(_, cols)| cols);
    }
    // Caught from before the start: one that comes early is queued.
    let (forward, forwarded) = crate::run::catch_signals()?;
    let window = signal(SignalKind::window_change())
        .map_err(|e| Failure::Other(format!("cannot catch signals: {e}")))?;
    conn.send_call(
        &Call::new(&Method::CreateProcess(&create)).set_upgrade(true),
        Vec::new(),
    )
    .await
    .map_err(client::transport)?;
    let (_started, _, _): (proto::ProcessEvent, bool, _) = client::receive(&mut conn).await?;
    let raw = if use_pty {
        crate::terminal::RawMode::enter()
    } else {
        None
    };
    let (read, write) = conn.split();
    let relay = Relay {
        forward,
        forwarded,
        window: use_pty.then_some(window),
        raw,
    };
    relay
        .run(read.into_read_half(), write.into_write_half())
        .await
}

/// The streams of a started command.
struct Relay {
    /// Signals to send to the command (also from the output threads: SIGPIPE).
    forward: mpsc::UnboundedSender<i32>,
    forwarded: mpsc::UnboundedReceiver<i32>,
    window: Option<tokio::signal::unix::Signal>,
    /// Our terminal in raw mode, with a terminal of the command's own.
    raw: Option<crate::terminal::RawMode>,
}

/// A writer of our stdout or stderr, on a thread of its own: a reader who stalls blocks it,
/// and through the bounded channel the frames, and through TCP deputyd and the command, but
/// not our signals and input. When our output is closed, the command gets SIGPIPE, as it would
/// writing to the closed pipe itself.
struct Output {
    chunks: Option<mpsc::Sender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    fn new(fd: i32, forward: mpsc::UnboundedSender<i32>) -> Output {
        let (chunks, mut receive) = mpsc::channel::<Vec<u8>>(4);
        let thread = std::thread::spawn(move || {
            let mut broken = false;
            while let Some(chunk) = receive.blocking_recv() {
                if broken {
                    continue;
                }
                let written = if fd == 1 {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&chunk).and_then(|()| out.flush())
                } else {
                    std::io::stderr().lock().write_all(&chunk)
                };
                if written.is_err() {
                    broken = true;
                    let _ = forward.send(rustix::process::Signal::PIPE.as_raw());
                }
            }
        });
        Output {
            chunks: Some(chunks),
            thread: Some(thread),
        }
    }

    async fn write(&self, bytes: &[u8]) {
        if let Some(chunks) = &self.chunks {
            let _ = chunks.send(bytes.to_vec()).await;
        }
    }

    /// Waits until everything sent is written.
    async fn finish(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Our stdin, read on a thread of its own (a terminal, pipe or file cannot all be polled;
/// and our stdin's file description is shared, so it is not made non-blocking): chunks, then
/// `None` at its end.
fn read_stdin() -> mpsc::Receiver<Option<Vec<u8>>> {
    let (send, receive) = mpsc::channel(2);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; stream::MAX_PAYLOAD];
        loop {
            let chunk = match rustix::io::read(rustix::stdio::stdin(), &mut buf[..]) {
                Ok(0) => None,
                Ok(n) => Some(buf[..n].to_vec()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => None,
            };
            let end = chunk.is_none();
            if send.blocking_send(chunk).is_err() || end {
                return;
            }
        }
    });
    receive
}

impl Relay {
    async fn run(
        mut self,
        mut read: zlink::connection::Rewind<TlsRead>,
        mut write: TlsWrite,
    ) -> Result<u8, Failure> {
        let mut stdout = Output::new(1, self.forward.clone());
        let mut stderr = Output::new(2, self.forward.clone());
        let mut stdin = read_stdin();
        let mut stdin_open = true;
        let mut credit = u64::from(stream::INPUT_WINDOW);
        // Input waiting for credit.
        let mut held: Option<Vec<u8>> = None;
        let mut buffer = FrameBuffer::default();
        let mut frames = Vec::new();
        // SIGPIPE is sent once, whether stdout or stderr (or both) broke.
        let mut piped = false;
        let lost =
            |e: zlink::Error| Failure::Other(format!("the connection to deputyd failed: {e}"));
        loop {
            // Every complete frame from deputyd first.
            loop {
                let frame = buffer
                    .next_frame()
                    .map_err(|e| Failure::Other(format!("deputyd sent {e}")))?;
                let Some(frame) = frame else { break };
                match frame {
                    Frame::Output(bytes) => stdout.write(bytes).await,
                    Frame::Errors(bytes) => stderr.write(bytes).await,
                    Frame::OutputEnd | Frame::ErrorsEnd => {}
                    Frame::Credit(n) => credit += u64::from(n),
                    Frame::Stopped(_) => {
                        // The command stopped (Ctrl-Z): give the terminal back and stop as a
                        // foreground job does; once resumed (fg), resume the command.
                        let was_raw = self.raw.take().is_some();
                        let _ = rustix::process::kill_process(
                            rustix::process::getpid(),
                            rustix::process::Signal::STOP,
                        );
                        if was_raw {
                            self.raw = crate::terminal::RawMode::enter();
                        }
                        let _ = self.forward.send(rustix::process::Signal::CONT.as_raw());
                    }
                    Frame::Continued => {}
                    Frame::Exit(exit) => {
                        stdout.finish().await;
                        stderr.finish().await;
                        let code = match exit {
                            ExitFrame::Code(code) => code,
                            ExitFrame::Signal(signal) => 128 + signal,
                            ExitFrame::Unknown => 255,
                        };
                        return Ok(u8::try_from(code & 0xff).unwrap_or(255));
                    }
                    other => {
                        return Err(Failure::Other(format!(
                            "deputyd sent a frame of kind {}, which only clients send",
                            other.name()
                        )));
                    }
                }
            }
            // Input we hold, as far as the credit goes.
            if let Some(chunk) = held.take() {
                let n = chunk
                    .len()
                    .min(usize::try_from(credit).unwrap_or(usize::MAX));
                if n > 0 {
                    frames.clear();
                    Frame::Input(&chunk[..n]).encode(&mut frames);
                    write
                        .write(&frames, &[] as &[std::os::fd::OwnedFd], None)
                        .await
                        .map_err(lost)?;
                    credit -= n as u64;
                }
                if n < chunk.len() {
                    held = Some(chunk[n..].to_vec());
                }
            }
            frames.clear();
            tokio::select! {
                read_result = read.read(buffer.spare()) => {
                    let n = read_result.map_err(lost)?.bytes_read();
                    if n == 0 {
                        return Err(Failure::Other("deputyd closed the connection before the command's exit".into()));
                    }
                    buffer.filled(n);
                    continue;
                }
                chunk = stdin.recv(), if stdin_open && held.is_none() => match chunk.flatten() {
                    Some(chunk) => {
                        held = Some(chunk);
                        continue;
                    }
                    None => {
                        stdin_open = false;
                        Frame::InputEnd.encode(&mut frames);
                    }
                },
                Some(signal) = self.forwarded.recv() => {
                    // Ctrl-Z must arrive as SIGSTOP: the command's process group is orphaned
                    // there, as it is locally (see run.rs).
                    let tstp = rustix::process::Signal::TSTP.as_raw();
                    let signal = if signal == tstp { rustix::process::Signal::STOP.as_raw() } else { signal };
                    if signal == rustix::process::Signal::PIPE.as_raw() && std::mem::replace(&mut piped, true) {
                        continue;
                    }
                    Frame::Signal(signal).encode(&mut frames);
                }
                Some(()) = async { match &mut self.window { Some(window) => window.recv().await, None => std::future::pending().await } } => {
                    let Some((rows, cols)) = crate::terminal::size() else { continue };
                    Frame::Resize { rows, cols }.encode(&mut frames);
                }
            }
            write
                .write(&frames, &[] as &[std::os::fd::OwnedFd], None)
                .await
                .map_err(lost)?;
        }
    }
}
