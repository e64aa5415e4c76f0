//! A bare Varlink client for deputyd, as the CLI makes its calls (`deputy-cli/src/client.rs`):
//! one connection, a call with its descriptors, typed replies. Nothing here retries or hides a
//! failure: a load test has to see every error the daemon returns.

use std::os::fd::OwnedFd;
use std::path::Path;

use deputy_proto as proto;
use serde::de::DeserializeOwned;
use zlink::Call;

/// A connection to deputyd.
pub type Connection = zlink::tokio::unix::Connection;

/// The calls, as the CLI makes them (deputy-quick's, shared with the CLI and the launcher).
pub use deputy_quick::wire::Method;

/// A failed call.
#[derive(Debug)]
pub enum Failure {
    /// The daemon answered with an `io.deputy` error.
    Deputy(proto::Error),
    /// The connection failed (refused, closed, malformed reply).
    Transport(String),
}

impl Failure {
    /// A short name for counting failures by kind: the Varlink error's name (with the limit,
    /// for `TooManyRequests`), or `transport`.
    pub fn kind(&self) -> String {
        match self {
            Failure::Deputy(proto::Error::TooManyRequests { limit }) => {
                format!("io.deputy.TooManyRequests ({limit})")
            }
            Failure::Deputy(err) => serde_json::to_value(err)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| "io.deputy.?".to_owned()),
            Failure::Transport(_) => "transport".to_owned(),
        }
    }
}

/// Whether `failure` is a per-uid limit that leaves the connection open (a refused
/// connection is closed by the daemon right after its error).
pub fn is_limit_keeping_connection(failure: &Failure) -> bool {
    match failure {
        Failure::Deputy(proto::Error::TooManyRequests { limit }) => {
            !limit.contains("connections_per_uid")
        }
        _ => false,
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Deputy(err) => write!(f, "{err}"),
            Failure::Transport(text) => f.write_str(text),
        }
    }
}

impl From<zlink::Error> for Failure {
    fn from(err: zlink::Error) -> Self {
        Failure::Transport(err.to_string())
    }
}

/// Connects to deputyd at `socket`.
pub async fn connect(socket: &Path) -> Result<Connection, Failure> {
    zlink::tokio::unix::connect(socket)
        .await
        .map_err(|err| Failure::Transport(format!("connect {}: {err}", socket.display())))
}

/// Sends `method` with `fds`; `more` asks for a stream of replies.
pub async fn send(
    conn: &mut Connection,
    method: &Method<'_>,
    more: bool,
    fds: Vec<OwnedFd>,
) -> Result<(), Failure> {
    conn.send_call(&Call::new(method).set_more(more), fds)
        .await?;
    Ok(())
}

/// Receives one reply: its parameters and whether more follow.
pub async fn receive<T: DeserializeOwned>(conn: &mut Connection) -> Result<(T, bool), Failure> {
    let (result, _fds) = conn
        .receive_reply::<serde_json::Value, proto::Error>()
        .await?;
    let reply = result.map_err(Failure::Deputy)?;
    let continues = reply.continues().unwrap_or(false);
    let value = reply
        .into_parameters()
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let parsed = serde_json::from_value(value)
        .map_err(|err| Failure::Transport(format!("unexpected reply: {err}")))?;
    Ok((parsed, continues))
}

/// One call, one reply.
pub async fn call<T: DeserializeOwned>(
    conn: &mut Connection,
    method: &Method<'_>,
    fds: Vec<OwnedFd>,
) -> Result<T, Failure> {
    send(conn, method, false, fds).await?;
    receive(conn).await.map(|(reply, _)| reply)
}

/// Who a start runs as, and how deputyd is asked for it.
#[derive(Clone, Debug)]
pub enum Route {
    /// No user: as the caller, through its peer token.
    Peer,
    /// `user` without a password: the trusted path (root).
    Trusted(String),
    /// In an existing session.
    Session(String),
}

/// A `CreateProcess` for `argv` on `route`; `keep` keeps the session.
pub fn create(route: &Route, argv: &[&str], keep: bool) -> proto::CreateProcess {
    let mut call = proto::CreateProcess {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        keep_session: keep.then_some(true),
        ..proto::CreateProcess::default()
    };
    match route {
        Route::Peer => {}
        Route::Trusted(user) => call.user = Some(user.clone()),
        Route::Session(id) => call.session = Some(id.clone()),
    }
    call
}

/// Starts `request` and waits for its exit (one reply, no "more"); returns the reply.
///
/// # Errors
/// The daemon's error, a transport failure, or a command that did not exit 0.
pub async fn start_and_wait(
    conn: &mut Connection,
    request: &proto::CreateProcess,
) -> Result<proto::ProcessEvent, Failure> {
    let event: proto::ProcessEvent =
        call(conn, &Method::CreateProcess(request), Vec::new()).await?;
    match event.exit {
        Some(proto::Exit {
            code: Some(0),
            signal: None,
        }) => Ok(event),
        other => Err(Failure::Transport(format!(
            "{} ended with {other:?}",
            request.argv.join(" ")
        ))),
    }
}
