//! `deputy run`: start a command through deputyd and become its stand-in — its exit code is
//! ours, and the signals we get are forwarded to it.
//!
//! ```text
//!  deputy run -- CMD         CreateProcess (peer token: as yourself)
//!  deputy run -u U -- CMD    root: CreateProcess{user} (no password, as policy allows)
//!                            others: Logon{user, passwordFd} → CreateProcess{session}
//!  --delegate                CreateProcess{delegateFd}: our ticket cache, opened by us
//!  --netonly -u U            Logon{user, logonType: new_credentials} → CreateProcess{session}
//!  then: stream reply 1 = pid, reply 2 = exit; SIGINT/TERM/HUP/QUIT → Signal{pid}
//! ```
//! The command's stdin, stdout and stderr are ours, passed as descriptors: not copied.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use deputy_proto as proto;
use tokio::signal::unix::{SignalKind, signal};
use zeroize::Zeroizing;

use crate::Cli;
use crate::client::{self, Failure, Method};

/// `deputy run`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run as this user: logged on with a password, or without one if the policy trusts you.
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,
    /// interactive, batch, service, network or new_credentials.
    #[arg(long, value_name = "TYPE")]
    pub logon_type: Option<String>,
    /// Keep the session after the command ends (until `deputy logoff` or the idle timeout).
    #[arg(long)]
    pub keep_session: bool,
    /// Run in an existing session of yours.
    #[arg(long, value_name = "ID", conflicts_with = "user")]
    pub session: Option<String>,
    /// The working directory (default: the user's home).
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Pass an environment variable (as the policy's allowlist permits).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Delegate: the command gets a copy of our Kerberos tickets ($KRB5CCNAME, a FILE: cache),
    /// for its session only. Only as ourselves (no -u).
    #[arg(long, conflicts_with_all = ["user", "session"])]
    pub delegate: bool,
    /// Run as ourselves locally, with USER's network credentials (runas /netonly): -u USER is
    /// logged on with a password (logon type new_credentials), its tickets handed to us.
    #[arg(long, requires = "user", conflicts_with = "logon_type")]
    pub netonly: bool,
    /// Read the password from the first line of standard input instead of the terminal.
    #[arg(long)]
    pub password_stdin: bool,
    /// Run the command on a terminal of its own (the default when stdin and stdout are
    /// terminals).
    #[arg(long, conflicts_with = "no_pty")]
    pub pty: bool,
    /// Never allocate a terminal: the command gets our stdin, stdout and stderr as they are.
    #[arg(long)]
    pub no_pty: bool,
    /// Let the command use our X display ($DISPLAY): deputyd adds SI:localuser:USER to the
    /// display's host access list for the session, with our Xauthority cookie.
    #[arg(long)]
    pub x11: bool,
    /// Grant the command's user access to this socket of ours (a Wayland socket, say) by ACL,
    /// for the session. Repeatable.
    #[arg(long = "grant", value_name = "PATH")]
    pub grants: Vec<PathBuf>,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Our own stdin, stdout and stderr, duplicated for passing. (rustix's descriptors, not std's
/// handles: those allocate buffers we would never use.)
fn own_stdio() -> Result<Vec<OwnedFd>, Failure> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Failure::Other(format!("cannot pass stdio: {e}")))
    };
    Ok(vec![
        dup(rustix::stdio::stdin())?,
        dup(rustix::stdio::stdout())?,
        dup(rustix::stdio::stderr())?,
    ])
}

pub fn read_password(args: &RunArgs, user: &str) -> Result<Zeroizing<String>, Failure> {
    let password = if args.password_stdin {
        // A byte at a time, up to the newline: what follows it is the command's input (its
        // stdin is ours), and a buffered read would take some of it away.
        let mut line = Zeroizing::new(Vec::new());
        let mut byte = [0u8; 1];
        loop {
            match rustix::io::read(rustix::stdio::stdin(), &mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    return Err(Failure::Other(format!("cannot read the password: {e}")));
                }
            }
        }
        Zeroizing::new(
            String::from_utf8(std::mem::take(&mut *line))
                .map_err(|_| Failure::Other("the password is not UTF-8".into()))?,
        )
    } else {
        Zeroizing::new(
            rpassword::prompt_password(format!("Password for {user}: ")).map_err(|e| {
                Failure::Other(format!(
                    "cannot read the password from the terminal: {e} (use --password-stdin)"
                ))
            })?,
        )
    };
    Ok(password)
}

/// Our Kerberos ticket cache ($KRB5CCNAME, else the default FILE:/tmp/krb5cc_UID), opened by us
/// for passing: deputyd never opens it by name.
fn own_tickets() -> Result<OwnedFd, Failure> {
    let name = std::env::var("KRB5CCNAME")
        .unwrap_or_else(|_| format!("FILE:/tmp/krb5cc_{}", rustix::process::getuid().as_raw()));
    let path = match name.split_once(':') {
        Some(("FILE", path)) => path,
        Some((kind, _)) if !kind.contains('/') => {
            return Err(Failure::Other(format!(
                "--delegate: KRB5CCNAME={name}: only FILE: caches can be delegated"
            )));
        }
        _ => name.as_str(),
    };
    std::fs::File::open(path).map(OwnedFd::from).map_err(|e| {
        Failure::Other(format!(
            "--delegate: cannot open the ticket cache {path}: {e} (kinit first?)"
        ))
    })
}

/// A pipe holding `secret`, for passing: the password never travels in the JSON.
fn secret_pipe(secret: &str) -> Result<OwnedFd, Failure> {
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| Failure::Other(format!("cannot make a pipe: {e}")))?;
    writer
        .write_all(secret.trim_end_matches('\n').as_bytes())
        .map_err(|e| Failure::Other(format!("cannot write the pipe: {e}")))?;
    drop(writer);
    Ok(reader.into())
}

/// Our display and the cookie we use for it (from $XAUTHORITY or ~/.Xauthority), for --x11.
fn x11_credentials() -> Result<proto::X11, Failure> {
    let display =
        std::env::var("DISPLAY").map_err(|_| Failure::Other("--x11: DISPLAY is not set".into()))?;
    let number = display
        .strip_prefix("unix")
        .unwrap_or(&display)
        .strip_prefix(':')
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<u16>().ok())
        .ok_or_else(|| Failure::Other(format!("--x11: {display:?} is not a local display (:N)")))?;
    let host = rustix::system::uname().nodename().to_bytes().to_vec();
    let (name, data) =
        x11rb_protocol::xauth::get_auth(x11rb_protocol::xauth::Family::LOCAL, &host, number)
            .map_err(|e| Failure::Other(format!("--x11: cannot read the Xauthority file: {e}")))?
            .ok_or_else(|| {
                Failure::Other(format!(
                    "--x11: no cookie for display {display} in the Xauthority file"
                ))
            })?;
    let data = Zeroizing::new(data);
    Ok(proto::X11 {
        display,
        auth_name: String::from_utf8_lossy(&name).into_owned(),
        auth_data: data.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

/// The signals we forward to the command (SIGINT, SIGTERM, SIGHUP, SIGQUIT, and SIGTSTP:
/// Ctrl-Z at our terminal when the command has none of its own; we stop ourselves once the
/// command is reported stopped), caught by tasks that feed one channel. Set up before the
/// command starts, so that a signal that comes early is queued, not fatal. The sender is for
/// more signals to send (SIGPIPE, SIGCONT).
pub fn catch_signals() -> Result<
    (
        tokio::sync::mpsc::UnboundedSender<i32>,
        tokio::sync::mpsc::UnboundedReceiver<i32>,
    ),
    Failure,
> {
    let (forward, forwarded) = tokio::sync::mpsc::unbounded_channel();
    for kind in [
        SignalKind::from_raw(rustix::process::Signal::TSTP.as_raw()),
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
        SignalKind::quit(),
    ] {
        let mut stream =
            signal(kind).map_err(|e| Failure::Other(format!("cannot catch signals: {e}")))?;
        let forward = forward.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let _ = forward.send(kind.as_raw_value());
            }
        });
    }
    Ok((forward, forwarded))
}

/// The next SIGWINCH, when it is caught (never otherwise).
async fn resized(window: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match window {
        Some(window) => window.recv().await,
        None => std::future::pending().await,
    }
}

/// The command's first word, if it is one of `deputy`'s own options that are not global
/// (`--remote` and its company, see `Cli`): after `run`, clap takes such an option for the
/// start of the command, which would then be looked for here instead of refused. The clap
/// definitions are consulted only for a first word that looks like a long option.
fn misplaced_option(command: &[String]) -> Option<&str> {
    let first = command.first()?;
    let name = first.strip_prefix("--")?.split('=').next()?;
    let cli = <Cli as clap::CommandFactory>::command();
    cli.get_arguments()
        .any(|arg| !arg.is_global_set() && arg.get_long() == Some(name))
        .then_some(first.split('=').next().unwrap_or(first))
}

/// Runs the command; returns its exit code (or deputy's).
pub async fn run(cli: &Cli, args: &RunArgs) -> u8 {
    match start_and_wait(cli, args).await {
        Ok(code) => code,
        Err(failure) => client::report(&failure),
    }
}

async fn start_and_wait(cli: &Cli, args: &RunArgs) -> Result<u8, Failure> {
    if let Some(option) = misplaced_option(&args.command) {
        return Err(Failure::Other(format!(
            "{option} is an option of deputy, not of run: it goes before `run` (deputy {option} ... run ...)"
        )));
    }
    if let Some(remote) = &cli.remote {
        return crate::remote::run(cli, remote, args).await;
    }
    let mut conn = client::connect(&cli.socket).await?;
    let mut create = proto::CreateProcess {
        argv: args.command.clone(),
        env: (!args.env.is_empty()).then(|| args.env.clone()),
        cwd: args.cwd.as_ref().map(|dir| dir.display().to_string()),
        keep_session: args.keep_session.then_some(true),
        session: args.session.clone(),
        ..proto::CreateProcess::default()
    };
    if args.x11 {
        create.x11 = Some(x11_credentials()?);
    }
    if !args.grants.is_empty() {
        let absolute = |p: &PathBuf| std::path::absolute(p).map(|p| p.display().to_string());
        create.grants = Some(
            args.grants
                .iter()
                .map(absolute)
                .collect::<Result<_, _>>()
                .map_err(|e| Failure::Other(format!("--grant: {e}")))?,
        );
    }
    let use_pty = crate::terminal::wanted(args.pty, args.no_pty);
    let mut stdio = if use_pty {
        let size = crate::terminal::size();
        create.pty = Some(true);
        create.rows = size.map(|(rows, _)| rows);
        create.cols = size.map(|(_, cols)| cols);
        Vec::new()
    } else {
        (create.stdin, create.stdout, create.stderr) = (Some(0), Some(1), Some(2));
        own_stdio()?
    };
    if args.delegate {
        create.delegate_fd = Some(stdio.len() as u32);
        stdio.push(own_tickets()?);
    }
    let logon_type = if args.netonly {
        Some("new_credentials".to_owned())
    } else {
        args.logon_type.clone()
    };
    if let Some(user) = &args.user {
        // new_credentials needs a password: it is the caller's own logon with another's name.
        let trusted = rustix::process::geteuid().is_root() && !args.password_stdin && !args.netonly;
        if trusted {
            create.user = Some(user.clone());
            create.logon_type = logon_type;
        } else {
            let password = read_password(args, user)?;
            let logon = proto::Logon {
                user: user.clone(),
                password_fd: Some(0),
                logon_type,
                keep_session: args.keep_session.then_some(true),
                ..proto::Logon::default()
            };
            let reply: proto::LogonReply = client::call(
                &mut conn,
                &Method::Logon(&logon),
                vec![secret_pipe(&password)?],
            )
            .await?;
            create.session = Some(reply.session);
        }
    }
    let (forward_tx, mut forward) = catch_signals()?;
    // A terminal's size follows ours: only then is SIGWINCH caught.
    let mut window = use_pty
        .then(|| signal(SignalKind::window_change()))
        .transpose()
        .map_err(|e| Failure::Other(format!("cannot catch signals: {e}")))?;
    client::send(&mut conn, &Method::CreateProcess(&create), true, stdio).await?;
    let (started, _, mut fds): (proto::ProcessEvent, bool, Vec<OwnedFd>) =
        client::receive(&mut conn).await?;
    let pid = started.pid;
    // On a terminal: raw mode (restored when `_raw` drops, on every way out) and the relay.
    let mut _raw = None;
    let mut output = None;
    if let Some(index) = started.pty {
        let leader = ((index as usize) < fds.len())
            .then(|| fds.swap_remove(index as usize))
            .ok_or_else(|| Failure::Other("deputyd sent no terminal".into()))?;
        _raw = crate::terminal::RawMode::enter();
        output = Some(
            crate::terminal::relay(leader, pid, forward_tx.clone())
                .map_err(|e| Failure::Other(format!("cannot relay the terminal: {e}")))?,
        );
    }

    loop {
        tokio::select! {
            finished = client::receive::<proto::ProcessEvent, _>(&mut conn) => {
                let (event, continues, _) = finished?;
                if event.stopped.is_some() {
                    // The command stopped (Ctrl-Z): give the terminal back and stop as a
                    // foreground job does; when the shell resumes us (fg), take the terminal
                    // again and resume the command. SIGSTOP, not SIGTSTP: we catch the latter.
                    let was_raw = _raw.take().is_some();
                    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
                    if was_raw {
                        _raw = crate::terminal::RawMode::enter();
                    }
                    if let Ok(mut other) = client::connect(&cli.socket).await {
                        let call = proto::Signal { pid: Some(pid), session: None, signal: rustix::process::Signal::CONT.as_raw() };
                        let _: Result<proto::Empty, _> = client::call(&mut other, &Method::Signal(&call), Vec::new()).await;
                    }
                    continue;
                }
                if event.exit.is_none() && continues {
                    continue;
                }
                if let Some(output) = &output {
                    crate::terminal::drain(output);
                }
                let code = event.exit.map_or(255, |exit| exit.shell_code());
                return Ok(u8::try_from(code).unwrap_or(255));
            }
            Some(()) = resized(&mut window), if output.is_some() => {
                if let (Some((rows, cols)), Ok(mut other)) = (crate::terminal::size(), client::connect(&cli.socket).await) {
                    let call = proto::ResizePty { pid, rows, cols };
                    let _: Result<proto::Empty, _> = client::call(&mut other, &Method::ResizePty(&call), Vec::new()).await;
                }
            }
            Some(signal) = forward.recv() => {
                // The command leads a session whose parent (deputyd) is outside it: an orphaned
                // process group, for which the kernel discards SIGTSTP, SIGTTIN and SIGTTOU.
                // Ctrl-Z must therefore arrive as SIGSTOP, which it cannot discard.
                let tstp = rustix::process::Signal::TSTP.as_raw();
                let signal = if signal == tstp { rustix::process::Signal::STOP.as_raw() } else { signal };
                // A second connection: the first one is busy streaming the process's events.
                if let Ok(mut other) = client::connect(&cli.socket).await {
                    let call = proto::Signal { pid: Some(pid), session: None, signal };
                    let _: Result<proto::Empty, _> = client::call(&mut other, &Method::Signal(&call), Vec::new()).await;
                }
            }
        }
    }
}
