//! The Varlink server: one tokio task per connection (zlink's `Server` would serve one call at
//! a time across all clients), the caller's identity from the socket's peer credentials, per-uid
//! limits, and dispatch to the methods.
//!
//! ```text
//!  accept ──▶ Token::from_peer (kernel) ──▶ connection task
//!                                             loop: receive a call (bounded size, timeout)
//!                                                   ├─ org.varlink.service.*  (info, description)
//!                                                   └─ io.deputy.*  ──▶ methods.rs
//! ```

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deputy::{ImpersonationLevel, Logons, Token};
use serde::Deserialize;
use serde_json::Value;
use zlink::Reply;
use zlink::varlink_service::Error as ServiceError;

use crate::audit::Audit;
use crate::methods::{self, PendingLogon};
use crate::policy::Policy;
use crate::sessions::Registry;
use crate::socket::Bounded;

/// A connection as zlink sees it.
pub type Connection = zlink::Connection<Bounded>;

/// Everything the connections share.
#[derive(Debug)]
pub struct Daemon {
    /// The policy.
    pub policy: Policy,
    /// Logons (PAM), with their failure accounting.
    pub logons: Arc<Logons>,
    /// Live sessions.
    pub sessions: Registry,
    /// The audit trail.
    pub audit: Audit,
    /// Bumped at every SIGCHLD: process waiters look for stops and continues then.
    pub child_changes: tokio::sync::watch::Sender<u64>,
    /// X11 grants by (display, user), shared by that user's sessions on that display.
    pub x11: Mutex<HashMap<(String, String), std::sync::Weak<crate::sessions::SharedX11>>>,
    connections: Mutex<HashMap<u32, usize>>,
    /// Each caller uid's turns: `requests_in_flight_per_uid` permits; further calls of that uid
    /// wait for one, in order. A caller that floods the daemon queues behind itself, not in
    /// front of everyone else.
    turns: Mutex<HashMap<u32, Arc<tokio::sync::Semaphore>>>,
    /// Process starts asked for and not yet done, over all callers: when a start is not alone
    /// it runs on a blocking thread, so that starts overlap (see `methods::create_process`).
    pub starting: std::sync::atomic::AtomicUsize,
    /// The descriptor limit deputyd was started with, for its processes (it raises its own).
    pub child_nofile: rustix::process::Rlimit,
}

impl Daemon {
    /// A daemon with no connection yet.
    pub fn new(policy: Policy, logons: Logons, audit: Audit) -> Daemon {
        Daemon {
            policy,
            logons: Arc::new(logons),
            sessions: Registry::default(),
            audit,
            child_changes: tokio::sync::watch::Sender::new(0),
            x11: Mutex::default(),
            connections: Mutex::default(),
            turns: Mutex::default(),
            starting: std::sync::atomic::AtomicUsize::new(0),
            child_nofile: rustix::process::getrlimit(rustix::process::Resource::Nofile),
        }
    }

    /// Waits for a turn of `uid` (one of `requests_in_flight_per_uid`).
    async fn turn(&self, uid: u32) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = self
            .turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(uid)
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    self.policy
                        .config()
                        .limits
                        .requests_in_flight_per_uid
                        .max(1),
                ))
            })
            .clone();
        semaphore
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// The grace time between SIGTERM and SIGKILL.
    pub fn grace(&self) -> Duration {
        self.policy.config().sessions.grace()
    }
}

/// A connection counted against `connections_per_uid`, given back on drop.
pub struct Slot {
    daemon: Arc<Daemon>,
    uid: u32,
}

impl Slot {
    fn take(daemon: &Arc<Daemon>, uid: u32, limit: usize) -> Option<Slot> {
        let mut map = daemon
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let held = map.entry(uid).or_default();
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(Slot {
            daemon: daemon.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self
            .daemon
            .connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(held) = map.get_mut(&self.uid) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.uid);
                // No connection of this uid is left, so none holds or waits for a turn.
                self.daemon
                    .turns
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(&self.uid);
            }
        }
    }
}

/// A CreateProcess counted in [`Daemon::starting`], from its arrival until its process has
/// started (or the call failed).
pub struct Starting(Arc<Daemon>);

impl Starting {
    fn new(daemon: &Arc<Daemon>) -> Starting {
        daemon
            .starting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Starting(daemon.clone())
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        self.0
            .starting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A method call, before its parameters are checked.
#[derive(Debug, Deserialize)]
struct RawCall {
    method: String,
    /// Taken out (zlink lends the call only by reference), not copied: an inline password
    /// in it then has one copy to wipe, the one the method moves into a `Secret`.
    #[serde(default)]
    parameters: std::cell::RefCell<Option<Value>>,
}

/// What a method produced.
pub enum Outcome {
    /// One reply.
    Reply(Value, Vec<OwnedFd>),
    /// The method sent its replies itself (CreateProcess with more).
    Sent,
    /// The connection now carries a process's streams (CreateProcess with upgrade, over TLS).
    Upgrade(Box<crate::relay::Streams>),
    /// The connection must end (the client vanished mid-call).
    Close,
}

/// A method's failure.
pub enum Failure {
    /// An `io.deputy` error.
    Deputy(deputy_proto::Error),
    /// An `org.varlink.service` error.
    Service(ServiceError<'static>),
}

impl From<deputy_proto::Error> for Failure {
    fn from(err: deputy_proto::Error) -> Self {
        Failure::Deputy(err)
    }
}

/// Who is calling.
pub enum Caller {
    /// A local process: the peer of the Unix socket, as the kernel identifies it.
    Local {
        /// Its token, at identification level.
        peer: Token,
        /// Its uid.
        uid: u32,
        /// Its pid at connect time.
        pid: i32,
    },
    /// A remote client: no kernel identity, only its address and (with mutual TLS) the name
    /// in its verified certificate.
    Remote(Arc<RemotePeer>),
}

/// A remote client's connection.
#[derive(Debug)]
pub struct RemotePeer {
    /// This connection's number, unique while deputyd runs: its sessions are its own.
    pub connection: u64,
    /// Where it comes from.
    pub address: std::net::SocketAddr,
    /// The name in its verified client certificate, with mutual TLS.
    pub client_cert: Option<String>,
}

/// The state of one client connection.
pub struct Client {
    /// The zlink connection.
    pub conn: Connection,
    /// Who is calling.
    pub caller: Caller,
    /// A multi-step logon in progress on this connection.
    pub pending: Option<PendingLogon>,
    /// The caller's turn for the call being handled (`requests_in_flight_per_uid`); a
    /// CreateProcess gives it back once the process has started (waiting for its exit is not
    /// work).
    pub in_flight: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The call is a CreateProcess not yet started (counted while it waits its turn too).
    pub starting: Option<Starting>,
    /// Lifts the connection's message bound when it is upgraded to carry streams.
    pub lift: crate::socket::Lift,
    /// A remote connection that has not logged a user on yet: counted against
    /// `remote.max_unauthenticated` until it does (or closes).
    pub unauthenticated: Option<crate::remote::Unauthenticated>,
}

impl Client {
    /// The caller's fields in an audit line: uid and pid, or address and certificate name.
    pub fn audit(&self, mut fields: Value) -> Value {
        if let Value::Object(map) = &mut fields {
            match &self.caller {
                Caller::Local { uid, pid, .. } => {
                    map.insert("caller_uid".into(), (*uid).into());
                    map.insert("caller_pid".into(), (*pid).into());
                }
                Caller::Remote(peer) => {
                    map.insert("remote".into(), peer.address.to_string().into());
                    map.insert("client_cert".into(), peer.client_cert.clone().into());
                }
            }
        }
        fields
    }

    /// The local caller's token, uid and pid; a remote caller has none, and `what` is refused
    /// by name.
    pub fn local(&self, what: &str) -> Result<(&Token, u32, i32), deputy_proto::Error> {
        match &self.caller {
            Caller::Local { peer, uid, pid } => Ok((peer, *uid, *pid)),
            Caller::Remote(_) => Err(deputy_proto::Error::NoPeerIdentity {
                what: what.to_owned(),
            }),
        }
    }

    /// The remote peer, for a remote caller.
    pub fn remote(&self) -> Option<&Arc<RemotePeer>> {
        match &self.caller {
            Caller::Remote(peer) => Some(peer),
            Caller::Local { .. } => None,
        }
    }

    /// Whom failed logons are counted against: the uid, or the remote address (without its
    /// port: a client gets a new one per connection).
    pub fn lockout_caller(&self) -> deputy::Caller {
        match &self.caller {
            Caller::Local { uid, .. } => deputy::Caller::Uid(*uid),
            Caller::Remote(peer) => deputy::Caller::Remote(peer.address.ip().to_string()),
        }
    }

    /// The uid a new session of this caller belongs to. A remote caller's sessions belong to
    /// its connection, and locally to root alone (an operator may list and end them).
    pub fn owner(&self) -> u32 {
        match &self.caller {
            Caller::Local { uid, .. } => *uid,
            Caller::Remote(_) => 0,
        }
    }

    /// Where a new session of this caller comes from, for a remote one.
    pub fn origin(&self) -> Option<crate::sessions::RemoteOrigin> {
        self.remote().map(|peer| crate::sessions::RemoteOrigin {
            connection: peer.connection,
            address: peer.address.to_string(),
            client_cert: peer.client_cert.clone(),
        })
    }

    /// Whether the caller may use `session`: a local caller as the policy says; a remote one
    /// only the sessions of its own connection.
    pub fn may_use(&self, policy: &Policy, session: &crate::sessions::Session) -> bool {
        match &self.caller {
            Caller::Local { uid, .. } => policy.may_use_session(*uid, session.owner).allowed,
            Caller::Remote(peer) => session
                .remote
                .as_ref()
                .is_some_and(|origin| origin.connection == peer.connection),
        }
    }

    /// What a log line calls the caller.
    pub fn describe(&self) -> String {
        match &self.caller {
            Caller::Local { uid, pid, .. } => format!("uid {uid} (pid {pid})"),
            Caller::Remote(peer) => format!("remote client {}", peer.address),
        }
    }
}

/// Serves one accepted local connection until it closes.
pub async fn serve_connection(daemon: Arc<Daemon>, stream: tokio::net::UnixStream) {
    let limits = daemon.policy.config().limits.clone();
    // The uid first (it costs no descriptor): a connection over its uid's limit is refused
    // before it gets a token, whose pidfd would be one more descriptor per connection.
    let refused = |reason: String| {
        let request = daemon.audit.request_id();
        daemon.audit.record(
            "connection_refused",
            &request,
            serde_json::json!({ "reason": reason }),
        );
    };
    let (pid, uid) = match deputy_os::peer::peer_credentials(std::os::fd::AsFd::as_fd(&stream)) {
        Ok((pid, uid, _)) => (pid.as_raw_nonzero().get(), uid.as_raw()),
        Err(err) => return refused(format!("cannot read the peer's credentials: {err}")),
    };
    let slot = Slot::take(&daemon, uid, limits.connections_per_uid);
    if slot.is_none() {
        return refuse_over_limit(&daemon, stream, uid, pid, &limits).await;
    }
    let peer = match Token::from_peer(&stream, ImpersonationLevel::Identification) {
        Ok(peer) => peer,
        Err(err) => return refused(err.to_string()),
    };
    let Ok(socket) = Bounded::new(stream) else {
        return;
    };
    let client = Client {
        lift: socket.lift(),
        conn: zlink::Connection::new(socket),
        caller: Caller::Local { peer, uid, pid },
        pending: None,
        in_flight: None,
        starting: None,
        unauthenticated: None,
    };
    let timeout = Duration::from_secs(limits.request_timeout_secs);
    serve_calls(&daemon, client, timeout).await;
}

/// Serves a connection's calls until it closes; the first must arrive within
/// `first_timeout`, each later one within `request_timeout_secs`.
pub async fn serve_calls(daemon: &Arc<Daemon>, mut client: Client, first_timeout: Duration) {
    let limits = daemon.policy.config().limits.clone();
    let mut timeout = first_timeout;
    loop {
        let received = tokio::time::timeout(timeout, client.conn.receive_call::<RawCall>()).await;
        let (method, parameters, more, oneway, upgrade, fds) = match received {
            Ok(Ok((call, fds))) => {
                let raw = call.method();
                (
                    raw.method.clone(),
                    raw.parameters.take(),
                    call.more(),
                    call.oneway(),
                    call.upgrade(),
                    fds,
                )
            }
            Ok(Err(zlink::Error::UnexpectedEof)) => return,
            Ok(Err(err)) => {
                let request = daemon.audit.request_id();
                daemon.audit.record(
                    "bad_input",
                    &request,
                    client.audit(serde_json::json!({ "reason": err.to_string() })),
                );
                return;
            }
            Err(_elapsed) => {
                let request = daemon.audit.request_id();
                let reason = format!("no complete message within {} s", timeout.as_secs());
                daemon.audit.record(
                    "bad_input",
                    &request,
                    client.audit(serde_json::json!({ "reason": reason })),
                );
                return;
            }
        };
        timeout = Duration::from_secs(limits.request_timeout_secs);
        // Starts waiting (for a turn, or for the runtime thread) are what make a start take a
        // blocking thread instead: count this one from now.
        client.starting = (method == "io.deputy.CreateProcess").then(|| Starting::new(daemon));
        // A local caller's turn: its calls beyond requests_in_flight_per_uid wait here, behind
        // its own, while other callers' calls go on. (A remote connection's calls come one
        // at a time, and its connections are bounded per address.)
        if let Caller::Local { uid, .. } = client.caller {
            client.in_flight = Some(daemon.turn(uid).await);
        }
        let call = Call {
            method: &method,
            parameters,
            more,
            upgrade,
        };
        let outcome = dispatch(daemon, &mut client, call, fds).await;
        client.in_flight = None;
        client.starting = None;
        let sent = match outcome {
            Ok(Outcome::Sent) => Ok(()),
            Ok(Outcome::Close) => return,
            Ok(Outcome::Upgrade(streams)) => {
                // From here on the connection carries frames, not messages.
                client.lift.lift();
                let (read, write) = client.conn.split();
                crate::relay::relay(
                    daemon,
                    *streams,
                    read.into_read_half(),
                    write.into_write_half(),
                )
                .await;
                return;
            }
            Ok(Outcome::Reply(_, _)) | Err(_) if oneway => Ok(()),
            Ok(Outcome::Reply(value, fds)) => {
                client.conn.send_reply(&Reply::new(Some(value)), fds).await
            }
            Err(Failure::Deputy(err)) => client.conn.send_error(&err, vec![]).await,
            Err(Failure::Service(err)) => client.conn.send_error(&err, vec![]).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// A call, once received.
pub struct Call<'a> {
    /// The method's full name.
    pub method: &'a str,
    /// Its parameters, unchecked.
    pub parameters: Option<Value>,
    /// The caller asked for several replies.
    pub more: bool,
    /// The caller asked to switch the connection to another protocol after the reply.
    pub upgrade: bool,
}

/// A connection over `connections_per_uid`: the caller is told why (in reply to its first
/// call, if it sends one within a second), then the connection is closed.
async fn refuse_over_limit(
    daemon: &Daemon,
    stream: tokio::net::UnixStream,
    uid: u32,
    pid: i32,
    limits: &crate::config::Limits,
) {
    let request = daemon.audit.request_id();
    daemon.audit.record(
        "limit",
        &request,
        serde_json::json!({"caller_uid": uid, "caller_pid": pid, "limit": "connections_per_uid"}),
    );
    let Ok(socket) = Bounded::new(stream) else {
        return;
    };
    let mut conn: Connection = zlink::Connection::new(socket);
    let err = deputy_proto::Error::TooManyRequests {
        limit: format!(
            "limits.connections_per_uid = {}",
            limits.connections_per_uid
        ),
    };
    if let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_secs(1), conn.receive_call::<RawCall>()).await
    {
        let _ = conn.send_error(&err, vec![]).await;
    }
}

fn params<T: serde::de::DeserializeOwned + Default>(
    parameters: Option<Value>,
) -> Result<T, Failure> {
    match parameters {
        None | Some(Value::Null) => {
            serde_json::from_value(Value::Object(Default::default())).map_err(invalid)
        }
        Some(value) => serde_json::from_value(value).map_err(invalid),
    }
}

/// A parameter error, naming the parameter where serde says which.
fn invalid(err: serde_json::Error) -> Failure {
    let text = err.to_string();
    let parameter = text
        .split('`')
        .nth(1)
        .filter(|_| text.contains("field"))
        .unwrap_or("parameters")
        .to_owned();
    Failure::Service(ServiceError::InvalidParameter {
        parameter: parameter.into(),
    })
}

async fn dispatch(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    call: Call<'_>,
    fds: Vec<OwnedFd>,
) -> Result<Outcome, Failure> {
    let reply = |value: Value| Ok(Outcome::Reply(value, Vec::new()));
    let Call {
        method,
        parameters,
        more,
        upgrade,
    } = call;
    if upgrade && method != "io.deputy.CreateProcess" {
        return Err(deputy_proto::Error::InvalidArgument {
            parameter: "upgrade".into(),
            reason: format!(
                "{method} has no protocol to switch to; only CreateProcess has (over TLS)"
            ),
        }
        .into());
    }
    match method {
        "org.varlink.service.GetInfo" => {
            reply(serde_json::to_value(methods::info()).unwrap_or_default())
        }
        "org.varlink.service.GetInterfaceDescription" => {
            let interface = parameters
                .as_ref()
                .and_then(|p| p.get("interface"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match methods::description(interface) {
                Some(description) => reply(serde_json::json!({ "description": description })),
                None => Err(Failure::Service(ServiceError::InterfaceNotFound {
                    interface: interface.to_owned().into(),
                })),
            }
        }
        "io.deputy.GetToken" => {
            let _: deputy_proto::Empty = params(parameters)?;
            let (peer, _, _) = client.local("GetToken (your identity as the kernel sees it)")?;
            reply(serde_json::json!({ "token": methods::token_info(peer) }))
        }
        "io.deputy.Logon" => methods::logon(daemon, client, params(parameters)?, fds).await,
        "io.deputy.BeginLogon" => methods::begin_logon(daemon, client, params(parameters)?).await,
        "io.deputy.AnswerLogon" => {
            methods::answer_logon(daemon, client, params(parameters)?, fds).await
        }
        "io.deputy.CreateProcess" => {
            methods::create_process(daemon, client, params(parameters)?, more, upgrade, fds).await
        }
        "io.deputy.Signal" => methods::signal(daemon, client, params(parameters)?),
        "io.deputy.ResizePty" => methods::resize_pty(daemon, client, params(parameters)?),
        "io.deputy.ListSessions" => {
            let _: deputy_proto::Empty = params(parameters)?;
            methods::list_sessions(daemon, client, more).await
        }
        "io.deputy.Logoff" => methods::logoff(daemon, client, params(parameters)?).await,
        other => {
            let interface = other
                .rsplit_once('.')
                .map_or("", |(interface, _)| interface);
            if interface == deputy_proto::INTERFACE || interface == "org.varlink.service" {
                Err(Failure::Service(ServiceError::MethodNotFound {
                    method: other.to_owned().into(),
                }))
            } else {
                Err(Failure::Service(ServiceError::InterfaceNotFound {
                    interface: interface.to_owned().into(),
                }))
            }
        }
    }
}
