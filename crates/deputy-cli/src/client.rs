//! Talking to deputyd: one Varlink connection, typed calls, and the commands that are a single
//! call (whoami, sessions, logoff).

use std::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::Path;

use deputy_proto as proto;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zlink::Call;
use zlink::connection::socket::Socket;

use crate::exit;
use crate::{Cli, Command};

/// A connection to deputyd.
pub type Connection = zlink::tokio::unix::Connection;

pub use deputy_quick::exit::Failure;
pub use deputy_quick::wire::Method;

/// Prints `failure` and returns the matching exit code.
pub fn report(failure: &Failure) -> u8 {
    exit::fail(&failure.to_string(), failure.code())
}

/// A failure to talk to deputyd.
pub fn transport(err: zlink::Error) -> Failure {
    Failure::Other(format!("talking to deputyd: {err}"))
}

/// Connects to deputyd at `socket`.
///
/// A blocking `connect`: to a Unix socket it completes at once (or waits for room in a full
/// backlog, as we would anyway), where the asynchronous one costs a turn of the runtime and
/// three more system calls on the path of every `deputy run`.
pub async fn connect(socket: &Path) -> Result<Connection, Failure> {
    let unreachable = |err: &dyn std::fmt::Display| {
        Failure::Other(format!(
            "cannot reach deputyd at {}: {err} (is it running?)",
            socket.display()
        ))
    };
    let stream = std::os::unix::net::UnixStream::connect(socket).map_err(|e| unreachable(&e))?;
    let stream = zlink::tokio::unix::Stream::try_from(stream).map_err(|e| unreachable(&e))?;
    Ok(zlink::Connection::new(stream))
}

/// Sends `method` with `fds`; `more` asks for a stream of replies.
pub async fn send<S: Socket>(
    conn: &mut zlink::Connection<S>,
    method: &Method<'_>,
    more: bool,
    fds: Vec<OwnedFd>,
) -> Result<(), Failure> {
    conn.send_call(&Call::new(method).set_more(more), fds)
        .await
        .map_err(transport)?;
    Ok(())
}

/// Receives one reply: its parameters, whether more follow, and the descriptors with it.
pub async fn receive<T: DeserializeOwned + std::fmt::Debug, S: Socket>(
    conn: &mut zlink::Connection<S>,
) -> Result<(T, bool, Vec<OwnedFd>), Failure> {
    let unexpected = |err: &dyn std::fmt::Display| {
        Failure::Other(format!("unexpected reply from deputyd: {err}"))
    };
    // Parsed straight into `T`: a reply comes on every `deputy run` twice (the pid, the exit).
    let (result, fds) = conn
        .receive_reply::<T, proto::Error>()
        .await
        .map_err(|err| match err {
            zlink::Error::Json(err) => unexpected(&err),
            err => transport(err),
        })?;
    let reply = result.map_err(Failure::Deputy)?;
    let continues = reply.continues().unwrap_or(false);
    let parsed = match reply.into_parameters() {
        Some(parsed) => parsed,
        // A reply without parameters: what `T` makes of an empty object.
        None => serde_json::from_str("{}").map_err(|err| unexpected(&err))?,
    };
    Ok((parsed, continues, fds))
}

/// One call, one reply.
pub async fn call<T: DeserializeOwned + std::fmt::Debug, S: Socket>(
    conn: &mut zlink::Connection<S>,
    method: &Method<'_>,
    fds: Vec<OwnedFd>,
) -> Result<T, Failure> {
    send(conn, method, false, fds).await?;
    receive(conn).await.map(|(reply, _, _)| reply)
}

/// Runs the parsed command line.
/// Returns the exit code.
pub async fn main(cli: Cli) -> u8 {
    if cli.remote.is_some() && !matches!(cli.command, Command::Run(_)) {
        return exit::fail(
            "only `deputy run` works with --remote: a remote deputyd has no kernel identity for you, and a remote session belongs to its connection",
            exit::ERROR,
        );
    }
    let result = match &cli.command {
        Command::Run(args) => return crate::run::run(&cli, args).await,
        Command::Whoami => whoami(&cli).await,
        Command::Sessions => sessions(&cli).await,
        Command::Logoff { id } => logoff(&cli, id).await,
        Command::Completions { .. } | Command::Man => Ok(()),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => report(&failure),
    }
}

fn print_json(value: &impl Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

async fn whoami(cli: &Cli) -> Result<(), Failure> {
    let mut conn = connect(&cli.socket).await?;
    let reply: proto::GetTokenReply = call(&mut conn, &Method::GetToken, Vec::new()).await?;
    let token = reply.token;
    if cli.json {
        print_json(&token);
        return Ok(());
    }
    let groups = token.groups.iter().fold(String::new(), |mut out, g| {
        let _ = write!(
            out,
            "{}{}({})",
            if out.is_empty() { "" } else { "," },
            g.gid,
            g.name.as_deref().unwrap_or("?")
        );
        out
    });
    println!("user     {} (uid {})", token.user, token.uid);
    println!("group    {}", token.gid);
    println!("groups   {groups}");
    println!("home     {}", token.home);
    println!("shell    {}", token.shell);
    println!(
        "token    {}{}",
        token.kind,
        token
            .level
            .map(|l| format!(", level {l}"))
            .unwrap_or_default()
    );
    if let Some(pid) = token.pid {
        println!("pid      {pid} (as the kernel recorded it when this connection was made)");
    }
    Ok(())
}

async fn sessions(cli: &Cli) -> Result<(), Failure> {
    let mut conn = connect(&cli.socket).await?;
    // Streamed in pieces (cheap for the daemon however long the list).
    send(&mut conn, &Method::ListSessions, true, Vec::new()).await?;
    let mut reply = proto::ListSessionsReply::default();
    loop {
        let (mut piece, continues, _): (proto::ListSessionsReply, bool, _) =
            receive(&mut conn).await?;
        reply.sessions.append(&mut piece.sessions);
        if !continues {
            break;
        }
    }
    if cli.json {
        print_json(&reply.sessions);
        return Ok(());
    }
    println!(
        "{:<32}  {:<16}  {:>6}  {:>6}  {:<15}  {:<4}  PROCESSES",
        "ID", "USER", "UID", "OWNER", "KIND", "KEEP"
    );
    for s in reply.sessions {
        let pids: Vec<String> = s.processes.iter().map(i32::to_string).collect();
        let keep = if s.keep { "yes" } else { "no" };
        println!(
            "{:<32}  {:<16}  {:>6}  {:>6}  {:<15}  {:<4}  {}",
            s.id,
            s.user,
            s.uid,
            s.owner,
            s.kind,
            keep,
            pids.join(",")
        );
    }
    Ok(())
}

async fn logoff(cli: &Cli, id: &str) -> Result<(), Failure> {
    let mut conn = connect(&cli.socket).await?;
    let _: proto::Empty = call(
        &mut conn,
        &Method::Logoff(&proto::Logoff {
            session: id.to_owned(),
        }),
        Vec::new(),
    )
    .await?;
    if cli.json {
        print_json(&serde_json::json!({ "session": id, "ended": true }));
    }
    Ok(())
}
