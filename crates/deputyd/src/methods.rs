//! The `io.deputy` methods. Each takes the caller (from the kernel), checks the policy, acts
//! through the deputy library, writes its audit lines and returns a reply or a named error.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deputy::{
    Conversation, Echo, ImpersonationLevel, LogonError, LogonRequest, LogonType, Secret, Signal,
    SpawnError, SpawnRequest, Token, TokenKind,
};
use deputy_proto::{self as proto, Error as E};
use serde_json::json;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};
use zlink::Reply;

use crate::policy::Target;
use crate::server::{Client, Daemon, Failure, Outcome};
use crate::sessions::{self, Session, SpawnOutcome};

/// `org.varlink.service.GetInfo`.
pub fn info() -> proto::Info {
    proto::Info {
        vendor: "deputy".into(),
        product: "deputyd".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: "https://example.invalid/deputy".into(),
        interfaces: vec!["org.varlink.service".into(), proto::INTERFACE.into()],
    }
}

const SERVICE_DESCRIPTION: &str = "interface org.varlink.service\n\
method GetInfo() -> (vendor: string, product: string, version: string, url: string, interfaces: []string)\n\
method GetInterfaceDescription(interface: string) -> (description: string)\n\
error InterfaceNotFound (interface: string)\n\
error MethodNotFound (method: string)\n\
error MethodNotImplemented (method: string)\n\
error InvalidParameter (parameter: string)\n\
error PermissionDenied ()\n\
error ExpectedMore ()\n";

/// `org.varlink.service.GetInterfaceDescription`.
pub fn description(interface: &str) -> Option<&'static str> {
    match interface {
        proto::INTERFACE => Some(proto::DESCRIPTION),
        "org.varlink.service" => Some(SERVICE_DESCRIPTION),
        _ => None,
    }
}

/// A token as the API shows it.
pub fn token_info(token: &Token) -> proto::Token {
    let (kind, level) = match token.kind() {
        TokenKind::Primary => ("primary", None),
        TokenKind::Impersonation(level) => ("impersonation", Some(level.as_str().to_owned())),
    };
    proto::Token {
        user: token.user().to_owned(),
        uid: token.uid().as_raw(),
        gid: token.gid().as_raw(),
        groups: token
            .groups()
            .iter()
            .map(|gid| proto::Group {
                gid: gid.as_raw(),
                name: deputy_os::account::group_name(*gid),
            })
            .collect(),
        home: token.home().display().to_string(),
        shell: token.shell().display().to_string(),
        kind: kind.to_owned(),
        level,
        session: token.session().map(|s| s.to_string()),
        pid: token.peer().map(|p| p.pid().as_raw_nonzero().get()),
    }
}

fn logon_type(name: Option<&str>) -> Result<LogonType, E> {
    Ok(match name.unwrap_or("interactive") {
        "interactive" => LogonType::Interactive,
        "batch" => LogonType::Batch,
        "service" => LogonType::Service,
        "network" => LogonType::Network,
        "new_credentials" => LogonType::NewCredentials,
        other => {
            return Err(E::InvalidArgument {
                parameter: "logonType".into(),
                reason: format!(
                    "{other:?} is none of interactive, batch, service, network, new_credentials"
                ),
            });
        }
    })
}

/// The named error for a failed logon.
fn logon_error(err: &LogonError) -> E {
    match err {
        LogonError::InvalidArgument { what, reason } => E::InvalidArgument {
            parameter: (*what).to_owned(),
            reason: reason.clone(),
        },
        LogonError::LockedOut { user, .. } => {
            let until = err
                .to_string()
                .rsplit("refused until ")
                .next()
                .unwrap_or_default()
                .to_owned();
            E::LockedOut {
                user: user.clone(),
                until,
            }
        }
        LogonError::AuthenticationFailed { user } => E::AuthenticationFailed { user: user.clone() },
        LogonError::AccountLocked { user } => E::AccountLocked { user: user.clone() },
        LogonError::AccountExpired { user } => E::AccountExpired { user: user.clone() },
        LogonError::PasswordExpired { user } => E::PasswordExpired { user: user.clone() },
        LogonError::AccessDenied { user, .. }
        | LogonError::UserChanged {
            requested: user, ..
        }
        | LogonError::Conversation { user }
        | LogonError::TimedOut { user, .. }
        | LogonError::Pam { user, .. } => E::LogonRefused {
            user: user.clone(),
            reason: err.to_string(),
        },
        LogonError::NoCredentials { user } => E::NoCredentials { user: user.clone() },
        LogonError::SessionEnded(id) => E::NoSuchSession {
            session: id.to_string(),
        },
        LogonError::Spawn(spawn) => spawn_error(spawn),
        LogonError::Token(token) => E::InvalidArgument {
            parameter: "user".into(),
            reason: token.to_string(),
        },
        LogonError::Worker { .. } | LogonError::Tickets { .. } => E::InternalError {
            reason: err.to_string(),
        },
    }
}

/// The named error for a failed start.
fn spawn_error(err: &SpawnError) -> E {
    match err {
        SpawnError::ProgramNotFound {
            program,
            search_path,
            ..
        } => E::ExecutableNotFound {
            program: program.to_string_lossy().into_owned(),
            path: search_path.to_string_lossy().into_owned(),
        },
        SpawnError::ProgramNotAccessible { path, source, .. } => E::ExecutableNotAccessible {
            path: path.display().to_string(),
            reason: source.to_string(),
        },
        SpawnError::WorkdirNotAccessible { path, source, .. } => E::WorkdirNotAccessible {
            path: path.display().to_string(),
            reason: source.to_string(),
        },
        SpawnError::InvalidRequest { what, reason } => E::InvalidArgument {
            parameter: what.clone(),
            reason: reason.clone(),
        },
        other => E::SpawnFailed {
            reason: other.to_string(),
        },
    }
}

fn spawn_outcome_error(outcome: &SpawnOutcome, session: &str) -> E {
    match outcome {
        SpawnOutcome::Ending => E::NoSuchSession {
            session: session.to_owned(),
        },
        SpawnOutcome::Adopted => E::InvalidArgument {
            parameter: "session".into(),
            reason: format!(
                "session {session} was adopted by a restarted deputyd: it holds its running processes to their end, but starts no new ones"
            ),
        },
        SpawnOutcome::Logon(err) => logon_error(err),
        SpawnOutcome::Spawn(err) => spawn_error(err),
    }
}

/// Reads a secret from a passed pipe: up to EOF, at most 4 KiB, within 5 seconds. A final
/// newline is dropped.
async fn read_secret(fd: OwnedFd, parameter: &str) -> Result<Secret, E> {
    let invalid = |reason: String| E::InvalidArgument {
        parameter: parameter.to_owned(),
        reason,
    };
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| invalid(e.to_string()))?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
        .map_err(|e| invalid(e.to_string()))?;
    let fd = deputy_os::async_fd(fd, Interest::READABLE).map_err(|e| invalid(e.to_string()))?;
    let mut secret = Secret::default();
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(256));
    let read = async {
        let mut buf = zeroize::Zeroizing::new([0u8; 1024]);
        loop {
            let mut ready = fd.readable().await.map_err(|e| invalid(e.to_string()))?;
            match rustix::io::read(fd.get_ref(), &mut buf[..]) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    bytes.extend_from_slice(&buf[..n]);
                    if bytes.len() > deputy::logon::MAX_SECRET + 1 {
                        return Err(invalid(format!(
                            "longer than {} bytes",
                            deputy::logon::MAX_SECRET
                        )));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(invalid(e.to_string())),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| invalid("the pipe was not closed within 5 seconds".into()))??;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if !bytes.is_empty() {
        secret = Secret::copy_from(&bytes);
    }
    Ok(secret)
}

/// A secret given either inline (`inline`, named `name`) or as a pipe among the call's
/// descriptors (index `index`, named `fd_name`): exactly one of the two.
async fn secret_param(
    fds: Vec<OwnedFd>,
    inline: Option<String>,
    index: Option<u32>,
    name: &str,
    fd_name: &str,
) -> Result<Secret, E> {
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    match (take_fd(&mut fds, index, fd_name)?, inline) {
        (Some(fd), None) => read_secret(fd, fd_name).await,
        (None, Some(text)) => Ok(Secret::from(text)),
        _ => Err(E::InvalidArgument {
            parameter: name.to_owned(),
            reason: format!("give exactly one of {name} and {fd_name}"),
        }),
    }
}

fn take_fd(
    fds: &mut [Option<OwnedFd>],
    index: Option<u32>,
    parameter: &str,
) -> Result<Option<OwnedFd>, E> {
    let Some(index) = index else { return Ok(None) };
    fds.get_mut(index as usize)
        .and_then(Option::take)
        .map(Some)
        .ok_or_else(|| E::InvalidArgument {
            parameter: parameter.to_owned(),
            reason: format!("no descriptor {index} came with the call (or it was named twice)"),
        })
}

/// The account `user`, when it exists, for the policy.
fn target_uid(user: &str) -> Option<u32> {
    Token::for_user(user).ok().map(|t| t.uid().as_raw())
}

fn deny(
    daemon: &Daemon,
    request: &str,
    client: &Client,
    what: &str,
    decision: &crate::policy::Decision,
) -> Failure {
    daemon.audit.record(
        "policy_denied",
        request,
        client.audit(json!({"request": what, "rule": decision.rule, "reason": decision.reason})),
    );
    Failure::Deputy(E::PermissionDenied {
        reason: decision.to_string(),
    })
}

/// The caller's primary token: calling a method that starts a process as the caller is its
/// consent to the Impersonation level.
fn acting(peer: &Token) -> Token {
    peer.with_level(ImpersonationLevel::Impersonation)
        .to_primary()
        .expect("impersonation level may act")
}

fn logon_request(
    client: &Client,
    user: &str,
    kind: LogonType,
    conversation: Box<dyn Conversation>,
) -> Result<LogonRequest, E> {
    let mut request =
        LogonRequest::with_conversation(user, kind, conversation).caller(client.lockout_caller());
    if kind == LogonType::NewCredentials {
        let (peer, _, _) =
            client.local("a new_credentials logon (it runs as you, with another's tickets)")?;
        request = request.on_behalf_of(acting(peer));
    }
    Ok(request)
}

/// Checks a logon against the policy and the limits; returns the audit request id.
fn admit_logon(daemon: &Daemon, client: &Client, user: &str) -> Result<String, Failure> {
    audit_admits(daemon)?;
    let request = daemon.audit.request_id();
    if let Some(uid) = target_uid(user) {
        let target = Target { user, uid };
        let decision = match client.local("") {
            Ok((_, caller, _)) => daemon.policy.may_log_on(caller, target),
            // A remote caller is no uid: who may be logged on at all is what applies.
            Err(_) => daemon.policy.may_become(target),
        };
        if !decision.allowed {
            return Err(deny(daemon, &request, client, "logon", &decision));
        }
        let limit = daemon.policy.config().limits.sessions_per_user;
        if daemon.sessions.count_for_user(uid) >= limit {
            return Err(E::TooManyRequests {
                limit: format!("limits.sessions_per_user = {limit}"),
            }
            .into());
        }
    }
    Ok(request)
}

/// Registers a new logon session and writes the audit line.
fn register_logon(
    daemon: &Daemon,
    client: &mut Client,
    request: &str,
    kind: LogonType,
    keep: bool,
    result: Result<deputy::LogonSession, LogonError>,
    user: &str,
) -> Result<String, Failure> {
    match result {
        Ok(logon) => {
            let token = logon.token().clone();
            let mut session = Session::new(kind.as_str(), client.owner(), token, Some(logon), keep)
                .map_err(|e| E::InternalError {
                    reason: e.to_string(),
                })?;
            session.remote = client.origin();
            let id = session.id.clone();
            daemon.audit.record(
                "logon",
                request,
                client.audit(
                    json!({"user": user, "logon_type": kind.as_str(), "session": id, "ok": true}),
                ),
            );
            daemon.sessions.insert(Arc::new(session));
            // A user is logged on: the connection no longer counts as unauthenticated.
            client.unauthenticated = None;
            Ok(id)
        }
        Err(err) => {
            daemon.audit.record("logon", request, client.audit(json!({"user": user, "logon_type": kind.as_str(), "ok": false, "reason": err.to_string()})));
            Err(logon_error(&err).into())
        }
    }
}

/// A remote session lives as long as its connection: it cannot be kept.
fn remote_logon_allowed(client: &Client, keep: Option<bool>) -> Result<(), E> {
    if client.remote().is_some() && keep == Some(true) {
        return Err(E::InvalidArgument {
            parameter: "keepSession".into(),
            reason: "a session logged on over TLS belongs to its connection and ends with it"
                .into(),
        });
    }
    Ok(())
}

/// `Logon`: one call, one password.
pub async fn logon(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    call: proto::Logon,
    fds: Vec<OwnedFd>,
) -> Result<Outcome, Failure> {
    let kind = logon_type(call.logon_type.as_deref())?;
    remote_logon_allowed(client, call.keep_session)?;
    let request = admit_logon(daemon, client, &call.user)?;
    let password = secret_param(
        fds,
        call.password,
        call.password_fd,
        "password",
        "passwordFd",
    )
    .await?;
    let conversation = Box::new(deputy::PasswordConversation::new(password));
    let logon_request = logon_request(client, &call.user, kind, conversation)?;
    let logons = daemon.logons.clone();
    let result = tokio::task::spawn_blocking(move || logons.logon(logon_request))
        .await
        .map_err(|e| E::InternalError {
            reason: e.to_string(),
        })?;
    let id = register_logon(
        daemon,
        client,
        &request,
        kind,
        call.keep_session.unwrap_or(false),
        result,
        &call.user,
    )?;
    Ok(Outcome::Reply(json!({ "session": id }), Vec::new()))
}

/// What the conversation thread tells the connection.
enum Event {
    Prompt(proto::Prompt),
    Done(Box<Result<deputy::LogonSession, LogonError>>),
}

/// A multi-step logon in progress on a connection.
pub struct PendingLogon {
    events: mpsc::UnboundedReceiver<Event>,
    answers: std::sync::mpsc::Sender<Option<Secret>>,
    request: String,
    user: String,
    kind: LogonType,
    keep: bool,
}

/// The conversation of a multi-step logon: each prompt goes to the client, each answer comes
/// back from `AnswerLogon`. Dropping the connection ends the wait with no answer.
struct Relay {
    events: mpsc::UnboundedSender<Event>,
    answers: std::sync::mpsc::Receiver<Option<Secret>>,
}

impl Conversation for Relay {
    fn prompt(&mut self, text: &str, echo: Echo) -> Option<Secret> {
        let prompt = proto::Prompt {
            text: text.to_owned(),
            echo: echo == Echo::On,
        };
        self.events.send(Event::Prompt(prompt)).ok()?;
        self.answers
            .recv_timeout(Duration::from_secs(300))
            .ok()
            .flatten()
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

async fn next_step(daemon: &Daemon, client: &mut Client) -> Result<Outcome, Failure> {
    let Some(mut pending) = client.pending.take() else {
        return Err(E::NoLogonInProgress {}.into());
    };
    match pending.events.recv().await {
        Some(Event::Prompt(prompt)) => {
            client.pending = Some(pending);
            Ok(Outcome::Reply(json!({ "prompt": prompt }), Vec::new()))
        }
        Some(Event::Done(result)) => {
            let id = register_logon(
                daemon,
                client,
                &pending.request,
                pending.kind,
                pending.keep,
                *result,
                &pending.user,
            )?;
            Ok(Outcome::Reply(json!({ "session": id }), Vec::new()))
        }
        None => Err(E::InternalError {
            reason: "the logon ended without a result".into(),
        }
        .into()),
    }
}

/// `BeginLogon`.
pub async fn begin_logon(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    call: proto::BeginLogon,
) -> Result<Outcome, Failure> {
    if client.pending.is_some() {
        return Err(E::LogonInProgress {}.into());
    }
    let kind = logon_type(call.logon_type.as_deref())?;
    remote_logon_allowed(client, call.keep_session)?;
    let request = admit_logon(daemon, client, &call.user)?;
    let (event_tx, events) = mpsc::unbounded_channel();
    let (answers, answer_rx) = std::sync::mpsc::channel();
    let relay = Box::new(Relay {
        events: event_tx.clone(),
        answers: answer_rx,
    });
    let logon_request = logon_request(client, &call.user, kind, relay)?;
    let logons = daemon.logons.clone();
    tokio::task::spawn_blocking(move || {
        let result = logons.logon(logon_request);
        let _ = event_tx.send(Event::Done(Box::new(result)));
    });
    client.pending = Some(PendingLogon {
        events,
        answers,
        request,
        user: call.user,
        kind,
        keep: call.keep_session.unwrap_or(false),
    });
    next_step(daemon, client).await
}

/// `AnswerLogon`.
pub async fn answer_logon(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    call: proto::AnswerLogon,
    fds: Vec<OwnedFd>,
) -> Result<Outcome, Failure> {
    let Some(pending) = client.pending.as_ref() else {
        return Err(E::NoLogonInProgress {}.into());
    };
    let answer = secret_param(fds, call.answer, call.answer_fd, "answer", "answerFd").await?;
    let _ = pending.answers.send(Some(answer));
    next_step(daemon, client).await
}

/// Environment entries a caller passed: the kept pairs, and the names the allowlist dropped.
type Filtered = (Vec<(OsString, OsString)>, Vec<String>);

/// Validates `NAME=value` entries against the allowlist.
fn environment(daemon: &Daemon, env: &[String]) -> Result<Filtered, E> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for entry in env {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(E::InvalidArgument {
                parameter: "env".into(),
                reason: format!("{entry:?} is not NAME=value"),
            });
        };
        if daemon.policy.may_pass_env(name) {
            kept.push((name.into(), value.into()));
        } else {
            dropped.push(name.to_owned());
        }
    }
    Ok((kept, dropped))
}

/// Chooses the session a CreateProcess runs in, logging on (trusted path) when asked.
async fn session_for(
    daemon: &Arc<Daemon>,
    client: &Client,
    call: &proto::CreateProcess,
    request: &str,
) -> Result<(Arc<Session>, Token), Failure> {
    if let Some(id) = &call.session {
        let session = daemon.sessions.get(id).ok_or_else(|| E::NoSuchSession {
            session: id.clone(),
        })?;
        if !client.may_use(&daemon.policy, &session) {
            // Another user's session is as good as absent: do not confirm it exists.
            let decision = crate::policy::Decision::deny(
                "sessions.owner",
                "the session belongs to another user or connection",
            );
            deny(daemon, request, client, "use session", &decision);
            return Err(E::NoSuchSession {
                session: id.clone(),
            }
            .into());
        }
        let token = session.token.clone();
        return Ok((session, token));
    }
    if let Some(user) = &call.user {
        let (_, caller, _) = client.local("CreateProcess as another user without a password")?;
        let account = Token::for_user(user).map_err(|err| E::InvalidArgument {
            parameter: "user".into(),
            reason: err.to_string(),
        })?;
        let uid = account.uid().as_raw();
        let decision = daemon
            .policy
            .may_act_without_password(caller, Target { user, uid });
        if !decision.allowed {
            return Err(deny(
                daemon,
                request,
                client,
                "create process without password",
                &decision,
            ));
        }
        let limit = daemon.policy.config().limits.sessions_per_user;
        if daemon.sessions.count_for_user(uid) >= limit {
            return Err(E::TooManyRequests {
                limit: format!("limits.sessions_per_user = {limit}"),
            }
            .into());
        }
        let kind = call
            .logon_type
            .as_deref()
            .map(|name| logon_type(Some(name)))
            .transpose()?;
        let logons = daemon.logons.clone();
        let alone = kind.is_none() && starting_alone(daemon).await;
        let result = match kind {
            // The fast path (an account check on a kept PAM handle) is quick enough to run
            // here when this start is alone; with others, off the runtime thread like them.
            None if alone => logons.trusted_logon_of(&account, None),
            None => tokio::task::spawn_blocking(move || logons.trusted_logon_of(&account, None))
                .await
                .map_err(|e| E::InternalError {
                    reason: e.to_string(),
                })?,
            Some(kind) => {
                tokio::task::spawn_blocking(move || logons.trusted_logon_of(&account, Some(kind)))
                    .await
                    .map_err(|e| E::InternalError {
                        reason: e.to_string(),
                    })?
            }
        };
        let logon = result.map_err(|err| {
            daemon.audit.record(
                "logon",
                request,
                client.audit(
                    json!({"user": user, "trusted": true, "ok": false, "reason": err.to_string()}),
                ),
            );
            logon_error(&err)
        })?;
        let token = logon.token().clone();
        let kind_name = kind.map_or("trusted", LogonType::as_str);
        let session = Arc::new(
            Session::new(
                kind_name,
                caller,
                token.clone(),
                Some(logon),
                call.keep_session.unwrap_or(false),
            )
            .map_err(|e| E::InternalError {
                reason: e.to_string(),
            })?,
        );
        daemon.audit.record("logon", request, client.audit(json!({"user": user, "trusted": true, "logon_type": kind_name, "session": session.id, "ok": true})));
        daemon.sessions.insert(session.clone());
        return Ok((session, token));
    }
    // The caller itself: calling CreateProcess is its consent to the impersonation level.
    // Its processes share one peer session per uid, except one asked to be kept, which gets a
    // session of its own (a kept session must not hold the others' processes hostage).
    let (peer, caller, _) = client.local("CreateProcess as yourself (your peer token)")?;
    let token = acting(peer);
    let internal = |e: std::io::Error| E::InternalError {
        reason: e.to_string(),
    };
    // Delegated tickets belong to one session only: such a run gets its own, as a kept one does.
    let session = if call.keep_session.unwrap_or(false) || call.delegate_fd.is_some() {
        // A session of its own counts against sessions_per_user, as a logon's does.
        let limit = daemon.policy.config().limits.sessions_per_user;
        if daemon.sessions.count_for_user(caller) >= limit {
            return Err(E::TooManyRequests {
                limit: format!("limits.sessions_per_user = {limit}"),
            }
            .into());
        }
        let session = Arc::new(
            Session::new(
                "peer",
                caller,
                token.clone(),
                None,
                call.keep_session.unwrap_or(false),
            )
            .map_err(internal)?,
        );
        daemon.sessions.insert(session.clone());
        session
    } else {
        daemon
            .sessions
            .peer_session(caller, &token)
            .map_err(internal)?
    };
    Ok((session, token))
}

/// Whether this start is the only one asked for, so that it may run on the runtime thread.
///
/// Calls are counted in `Daemon::starting` once received, and they are received only when their
/// connection's task runs: on the one runtime thread, a start done in place would keep every
/// other connection's call unread, so each would in turn find itself alone and run in place,
/// one after the other — and another user's call would queue behind all of a flooder's. So a
/// start first lets the other ready tasks run (and receive their calls), and only then looks.
/// Alone, that costs one turn of the scheduler.
async fn starting_alone(daemon: &Daemon) -> bool {
    if daemon.starting.load(Ordering::Relaxed) > 1 {
        return false;
    }
    tokio::task::yield_now().await;
    daemon.starting.load(Ordering::Relaxed) <= 1
}

/// New work (a logon, a start) waits for an audit log that can record it, if the policy says
/// so.
fn audit_admits(daemon: &Daemon) -> Result<(), E> {
    daemon
        .audit
        .admit()
        .map_err(|reason| E::AuditUnavailable { reason })
}

/// `CreateProcess`.
pub async fn create_process(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    call: proto::CreateProcess,
    more: bool,
    upgrade: bool,
    fds: Vec<OwnedFd>,
) -> Result<Outcome, Failure> {
    audit_admits(daemon)?;
    if upgrade && client.remote().is_none() {
        return Err(E::InvalidArgument {
            parameter: "upgrade".into(),
            reason: "a local caller passes its descriptors; upgrade (streams on the connection) is for remote clients over TLS".into(),
        }
        .into());
    }
    if call.delegate_fd.is_some() {
        client.local("delegation (a ticket cache you opened yourself)")?;
    }
    let request = daemon.audit.request_id();
    // Counted in Daemon::starting since it was received (see server.rs); no longer once the
    // process is started.
    let starting = client.starting.take();
    let Some(program) = call.argv.first() else {
        return Err(E::InvalidArgument {
            parameter: "argv".into(),
            reason: "it is empty".into(),
        }
        .into());
    };
    let (env, dropped) = environment(daemon, call.env.as_deref().unwrap_or_default())?;
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut stdio = [
        take_fd(&mut fds, call.stdin, "stdin")?,
        take_fd(&mut fds, call.stdout, "stdout")?,
        take_fd(&mut fds, call.stderr, "stderr")?,
    ];
    // Streams over the connection: pipes whose other ends stay here, for the relay.
    let mut pipes = None;
    if upgrade && call.pty != Some(true) {
        let pipe = || {
            std::io::pipe().map_err(|e| E::SpawnFailed {
                reason: format!("cannot make a pipe: {e}"),
            })
        };
        let ((stdin_r, stdin_w), (stdout_r, stdout_w), (stderr_r, stderr_w)) =
            (pipe()?, pipe()?, pipe()?);
        stdio = [
            Some(stdin_r.into()),
            Some(stdout_w.into()),
            Some(stderr_w.into()),
        ];
        pipes = Some(crate::relay::Io::Pipes {
            stdin: stdin_w.into(),
            stdout: stdout_r.into(),
            stderr: stderr_r.into(),
        });
    }
    let delegated = take_fd(&mut fds, call.delegate_fd, "delegateFd")?;
    if delegated.is_some() && (call.user.is_some() || call.session.is_some()) {
        return Err(E::InvalidArgument {
            parameter: "delegateFd".into(),
            reason: "delegation hands your own tickets to your own processes: it goes with neither user nor session".into(),
        }
        .into());
    }
    // The start's place in its session, from now on: a session whose last process ends
    // meanwhile is not ended under it. The shared peer session may have just ended (its last
    // process gone) when it was chosen: then a new one is.
    let mut tries = 0;
    let (session, token, reservation) = loop {
        let (session, token) = session_for(daemon, client, &call, &request).await?;
        match session.reserve() {
            Ok(reservation) => break (session, token, reservation),
            Err(_) if session.shared && tries < 3 => tries += 1,
            Err(outcome) => return Err(spawn_outcome_error(&outcome, &session.id).into()),
        }
    };
    let limit = daemon.policy.config().limits.processes_per_session;
    if session.pids().len() >= limit {
        return Err(E::TooManyRequests {
            limit: format!("limits.processes_per_session = {limit}"),
        }
        .into());
    }
    let mut spawn = SpawnRequest::new(program).args(&call.argv[1..]);
    for (name, value) in env {
        spawn = spawn.env(name, value);
    }
    if let Some(cwd) = &call.cwd {
        spawn = spawn.current_dir(cwd);
    }
    for (target, fd) in (0..).zip(stdio) {
        if let Some(fd) = fd {
            spawn = spawn.fd(target, fd);
        }
    }
    let rlimits = daemon.policy.rlimits();
    if !rlimits
        .iter()
        .any(|(r, _, _)| *r == deputy::Resource::Nofile)
    {
        let nofile = &daemon.child_nofile;
        spawn = spawn.rlimit(deputy::Resource::Nofile, nofile.current, nofile.maximum);
    }
    for (resource, soft, hard) in rlimits {
        spawn = spawn.rlimit(resource, Some(soft), Some(hard));
    }
    // A terminal: the follower is the user's and the process's controlling terminal; the
    // leader goes back to the client, and a copy stays here for ResizePty.
    let mut leader = None;
    if call.pty == Some(true) {
        if !more && !upgrade {
            return Err(E::InvalidArgument { parameter: "pty".into(), reason: "a terminal's leader comes with the first of several replies: call with \"more\"".into() }.into());
        }
        let size = call.rows.zip(call.cols);
        let pty = deputy::pty::open_pty(&token, size).map_err(|e| E::SpawnFailed {
            reason: format!("cannot allocate a terminal: {e}"),
        })?;
        spawn = spawn.terminal(pty.follower);
        leader = Some(pty.leader);
    }
    if let Err(err) = grant_desktop(daemon, client, &call, &session, &token, &request).await {
        end_if_unused(daemon, &session);
        return Err(err.into());
    }
    if let Some(x11) = &call.x11 {
        spawn = spawn.env("DISPLAY", &x11.display);
    }
    if let Some(file) = delegated {
        match delegate(daemon, &session, &token, file, &request) {
            Ok(name) => spawn = spawn.env("KRB5CCNAME", name),
            Err(err) => {
                end_if_unused(daemon, &session);
                return Err(err.into());
            }
        }
    }
    let started = Instant::now();
    // Alone, a start runs here: no thread hop on the path of a single client. When others are
    // starting too it runs on a blocking thread, so that starts overlap on the CPUs instead of
    // queueing behind each other's clone (which suspends the calling thread until the exec).
    let spawned = if !starting_alone(daemon).await {
        let (session, token) = (session.clone(), token.clone());
        tokio::task::spawn_blocking(move || session.spawn(reservation, &token, spawn))
            .await
            .map_err(|e| E::InternalError {
                reason: e.to_string(),
            })?
    } else {
        session.spawn(reservation, &token, spawn)
    };
    drop(starting);
    let child = match spawned {
        Ok(child) => child,
        Err(outcome) => {
            let err = spawn_outcome_error(&outcome, &session.id);
            daemon.audit.record("process_failed", &request, client.audit(json!({"user": session.user, "session": session.id, "argv": call.argv, "reason": err.to_string()})));
            end_if_unused(daemon, &session);
            return Err(err.into());
        }
    };
    let pid = child.pid().as_raw_nonzero().get();
    client.in_flight = None;
    let leader_for_client = match leader {
        // Over TLS the leader stays here: the relay reads and writes it.
        Some(leader) if upgrade => {
            let copy = leader.try_clone().ok();
            session.set_terminal(pid, leader);
            pipes = copy.map(crate::relay::Io::Pty);
            None
        }
        Some(leader) => {
            let copy = leader.try_clone().ok();
            session.set_terminal(pid, leader);
            copy
        }
        None => None,
    };
    daemon.audit.record(
        "process_start",
        &request,
        client.audit(json!({"user": session.user, "uid": session.uid, "session": session.id, "pid": pid, "argv": call.argv, "cwd": call.cwd, "env_dropped": dropped, "env_removed": child.removed_environment()})),
    );

    // The process's own waiter: it reaps, audits the exit and ends the session if it was the
    // last process, whether or not the client is still there.
    let (exit_tx, exit_rx) = oneshot::channel();
    let (event_tx, mut events) = mpsc::unbounded_channel();
    {
        let (daemon, session, child, request) = (
            daemon.clone(),
            session.clone(),
            child.clone(),
            request.clone(),
        );
        tokio::spawn(async move {
            let changes = daemon.child_changes.subscribe();
            let (status, over) = sessions::wait_exit(&session, &child, changes, event_tx).await;
            let exit = match &status {
                Ok(deputy::ExitStatus::Exited(code)) => proto::Exit {
                    code: Some(*code),
                    signal: None,
                },
                Ok(deputy::ExitStatus::Signaled(signal)) => proto::Exit {
                    code: None,
                    signal: Some(*signal),
                },
                Err(_) => proto::Exit {
                    code: None,
                    signal: None,
                },
            };
            daemon.audit.record("process_exit", &request, json!({"session": session.id, "pid": pid, "exit": exit, "seconds": started.elapsed().as_secs_f64()}));
            // A session that ends with its last process is over — PAM closed, grants and
            // tickets gone — before its client hears of the exit.
            if over
                && let Some(ended) =
                    sessions::end_unused(&daemon.sessions, &session.id, daemon.grace()).await
            {
                audit_ended(&daemon, &request, &ended, "last process ended");
            }
            let _ = exit_tx.send(exit);
        });
    }

    if upgrade {
        let Some(io) = pipes else {
            client_gone(daemon, &session, &child, &request);
            return Err(E::SpawnFailed {
                reason: "cannot keep the terminal's leader for the relay".into(),
            }
            .into());
        };
        let event = proto::ProcessEvent {
            pid,
            session: session.id.clone(),
            ..proto::ProcessEvent::default()
        };
        let sent = client
            .conn
            .send_reply(&Reply::new(Some(event)), Vec::new())
            .await;
        session.save();
        if sent.is_err() {
            client_gone(daemon, &session, &child, &request);
            return Ok(Outcome::Close);
        }
        return Ok(Outcome::Upgrade(Box::new(crate::relay::Streams {
            pid,
            session,
            child,
            request,
            exit: exit_rx,
            events,
            io,
        })));
    }
    if more {
        let mut fds = Vec::new();
        let mut index = |fd: Option<OwnedFd>| {
            fd.map(|fd| {
                fds.push(fd);
                fds.len() as u32 - 1
            })
        };
        let event = proto::ProcessEvent {
            pid,
            session: session.id.clone(),
            pidfd: index(child.pidfd().try_clone_to_owned().ok()),
            pty: index(leader_for_client),
            ..proto::ProcessEvent::default()
        };
        let reply = Reply::new(Some(event)).set_continues(Some(true));
        let sent = client.conn.send_reply(&reply, fds).await;
        // The session's record, for a restarted daemon: written once the client has its pid,
        // so that the write is not on the path it waits on.
        save_started(&session, &child);
        if sent.is_err() {
            client_gone(daemon, &session, &child, &request);
            return Ok(Outcome::Close);
        }
    } else {
        save_started(&session, &child);
    }
    // Wait for the exit, and notice a client that goes away meanwhile. Stops and continues
    // are streamed to a client that asked for more: it stops itself when its command stops
    // (Ctrl-Z), as a shell expects, and resumes it when resumed.
    let mut exit_rx = exit_rx;
    let exit = loop {
        tokio::select! {
            exit = &mut exit_rx => break exit.unwrap_or(proto::Exit { code: None, signal: None }),
            Some(event) = events.recv(), if more => {
                let (stopped, continued) = match event {
                    deputy::ChildEvent::Stopped(signal) => (Some(signal), None),
                    deputy::ChildEvent::Continued => (None, Some(true)),
                    deputy::ChildEvent::Exited(_) => continue,
                };
                let event = proto::ProcessEvent { pid, session: session.id.clone(), stopped, continued, ..proto::ProcessEvent::default() };
                if client.conn.send_reply(&Reply::new(Some(event)).set_continues(Some(true)), Vec::new()).await.is_err() {
                    client_gone(daemon, &session, &child, &request);
                    return Ok(Outcome::Close);
                }
            }
            _ = client.conn.receive_call::<serde_json::Value>() => {
                client_gone(daemon, &session, &child, &request);
                return Ok(Outcome::Close);
            }
        }
    };
    let event = proto::ProcessEvent {
        pid,
        session: session.id.clone(),
        exit: Some(exit),
        ..proto::ProcessEvent::default()
    };
    if more {
        client
            .conn
            .send_reply(&Reply::new(Some(event)), Vec::new())
            .await
            .map_err(|e| E::InternalError {
                reason: e.to_string(),
            })?;
        return Ok(Outcome::Sent);
    }
    Ok(Outcome::Reply(
        serde_json::to_value(event).unwrap_or_default(),
        Vec::new(),
    ))
}

/// A session that a failed start leaves empty (and not kept) is ended.
fn end_if_unused(daemon: &Arc<Daemon>, session: &Arc<Session>) {
    if session.pids().is_empty() && !session.keep {
        let (daemon, id) = (daemon.clone(), session.id.clone());
        tokio::spawn(async move {
            if let Some(ended) = sessions::end_unused(&daemon.sessions, &id, daemon.grace()).await {
                audit_ended(&daemon, &daemon.audit.request_id(), &ended, "start failed");
            }
        });
    }
}

/// The audit lines of an ended session: the logoff, and each grant removed.
pub fn audit_ended(daemon: &Daemon, request: &str, ended: &sessions::Ended, reason: &str) {
    for grant in &ended.revoked {
        daemon.audit.record(
            "grant_removed",
            request,
            json!({"session": ended.session.id, "grant": grant}),
        );
    }
    for error in &ended.revoke_errors {
        daemon.audit.record(
            "grant_remove_failed",
            request,
            json!({"session": ended.session.id, "reason": error}),
        );
    }
    daemon.audit.record(
        "logoff",
        request,
        json!({"session": ended.session.id, "user": ended.session.user, "reason": reason, "killed": ended.killed, "close_error": ended.close_error}),
    );
}

fn hex(text: &str) -> Option<Secret> {
    // Hex digits only: from_str_radix alone would take "+a" as a pair.
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    bytes.map(Secret::new)
}

/// The desktop grants a CreateProcess asks for, added to its session before the process starts.
async fn grant_desktop(
    daemon: &Arc<Daemon>,
    client: &Client,
    call: &proto::CreateProcess,
    session: &Arc<Session>,
    token: &Token,
    request: &str,
) -> Result<(), E> {
    let denied = |e: deputy::grant::GrantError| E::PermissionDenied {
        reason: e.to_string(),
    };
    if call.x11.is_none() && call.grants.is_none() {
        return Ok(());
    }
    let (peer, _, _) = client.local("x11 and grants (they are made as you, with your rights)")?;
    let caller = acting(peer);
    if let Some(x11) = &call.x11 {
        let display =
            deputy::grant::X11Display::parse(&x11.display).map_err(|e| E::InvalidArgument {
                parameter: "x11.display".into(),
                reason: e.to_string(),
            })?;
        let data = hex(&x11.auth_data).ok_or_else(|| E::InvalidArgument {
            parameter: "x11.authData".into(),
            reason: "not hex".into(),
        })?;
        let cookie = deputy::grant::X11Cookie {
            name: x11.auth_name.as_bytes().to_vec(),
            data,
        };
        let (shared_daemon, user, caller) =
            (daemon.clone(), token.user().to_owned(), caller.clone());
        let shared = tokio::task::spawn_blocking(move || {
            let mut registry = shared_daemon
                .x11
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let key = (display.to_string(), user.clone());
            if let Some(existing) = registry.get(&key).and_then(std::sync::Weak::upgrade) {
                return Ok((existing, false));
            }
            let access = deputy::grant::X11Access::grant(&display, &cookie, &user, &caller)?;
            let shared = Arc::new(sessions::SharedX11::new(access, &user));
            registry.insert(key, Arc::downgrade(&shared));
            Ok((shared, true))
        })
        .await
        .map_err(|e| E::InternalError {
            reason: e.to_string(),
        })?
        .map_err(denied)?;
        let (shared, new) = shared;
        daemon.audit.record(
            "grant_added",
            request,
            json!({"session": session.id, "grant": shared.description, "shared": !new}),
        );
        session.add_grant(sessions::Grant::X11(shared));
    }
    for path in call.grants.iter().flatten() {
        let (path_owned, user, caller) = (
            std::path::PathBuf::from(path),
            token.clone(),
            caller.clone(),
        );
        let grant = tokio::task::spawn_blocking(move || {
            deputy::grant::grant_acl(&path_owned, &user, &caller)
        })
        .await
        .map_err(|e| E::InternalError {
            reason: e.to_string(),
        })?
        .map_err(denied)?;
        let grant = sessions::Grant::Acl(grant);
        daemon.audit.record(
            "grant_added",
            request,
            json!({"session": session.id, "grant": grant.describe()}),
        );
        session.add_grant(grant);
    }
    Ok(())
}

/// Delegation: copies the caller's ticket cache (`file`, which the caller opened) into a new
/// cache of the caller's that belongs to `session`; returns its `KRB5CCNAME`.
fn delegate(
    daemon: &Daemon,
    session: &Session,
    token: &Token,
    file: OwnedFd,
    request: &str,
) -> Result<String, E> {
    let invalid = |e: deputy::tickets::TicketError| E::InvalidArgument {
        parameter: "delegateFd".into(),
        reason: e.to_string(),
    };
    let tickets = deputy::tickets::read_passed(file).map_err(invalid)?;
    // The caller consents to the Delegation level by passing its tickets.
    let owner = token.with_level(ImpersonationLevel::Delegation);
    let cache = deputy::tickets::TicketCache::create(
        std::path::Path::new(deputy::tickets::DEFAULT_DIR),
        &owner,
        &tickets,
    )
    .map_err(|e| E::InternalError {
        reason: e.to_string(),
    })?;
    let name = cache.name();
    let grant = sessions::Grant::Tickets(cache);
    daemon.audit.record(
        "grant_added",
        request,
        json!({"session": session.id, "grant": grant.describe()}),
    );
    session.add_grant(grant);
    Ok(name)
}

/// Writes the session's record now that `child` has started, unless `child` has already ended
/// (a short command, often): then the record would name no process that a restarted daemon
/// could find, and the write, and the removal after it, are saved.
fn save_started(session: &sessions::Session, child: &deputy::Child) {
    if !child.has_ended().unwrap_or(false) {
        session.save();
    }
}

/// The client of a running process went away (or broke the protocol mid-call): unless the
/// session is kept, its process is ended — SIGTERM, then SIGKILL after the grace time.
pub fn client_gone(
    daemon: &Arc<Daemon>,
    session: &Arc<Session>,
    child: &Arc<deputy::Child>,
    request: &str,
) {
    daemon.audit.record("client_gone", request, json!({"session": session.id, "pid": child.pid().as_raw_nonzero().get(), "kept": session.keep}));
    if session.keep {
        return;
    }
    let _ = child.signal(Signal::TERM);
    let (child, grace) = (child.clone(), daemon.grace());
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        // The waiter task reaps it; a process that is gone just makes this fail.
        let _ = child.signal(Signal::KILL);
    });
}

/// `Signal`.
pub fn signal(
    daemon: &Arc<Daemon>,
    client: &Client,
    call: proto::Signal,
) -> Result<Outcome, Failure> {
    let signal = Signal::from_named_raw(call.signal).ok_or_else(|| E::InvalidArgument {
        parameter: "signal".into(),
        reason: format!("{} is not a signal number", call.signal),
    })?;
    let visible = |s: &Arc<Session>| client.may_use(&daemon.policy, s);
    match (call.pid, &call.session) {
        (Some(pid), _) => {
            daemon
                .sessions
                .all()
                .into_iter()
                .filter(visible)
                .find_map(|s| s.signal(pid, signal))
                .ok_or(E::NoSuchProcess { pid })?
                .map_err(|_| E::NoSuchProcess { pid })?;
        }
        (None, Some(id)) => {
            let session =
                daemon
                    .sessions
                    .get(id)
                    .filter(visible)
                    .ok_or_else(|| E::NoSuchSession {
                        session: id.clone(),
                    })?;
            session.signal_all(signal);
        }
        (None, None) => {
            return Err(E::InvalidArgument {
                parameter: "pid".into(),
                reason: "give a pid or a session".into(),
            }
            .into());
        }
    }
    Ok(Outcome::Reply(json!({}), Vec::new()))
}

/// `ResizePty`.
pub fn resize_pty(
    daemon: &Arc<Daemon>,
    client: &Client,
    call: proto::ResizePty,
) -> Result<Outcome, Failure> {
    let missing = || Failure::Deputy(E::NoSuchProcess { pid: call.pid });
    let session = daemon
        .sessions
        .all()
        .into_iter()
        .filter(|s| client.may_use(&daemon.policy, s))
        .find(|s| s.process(call.pid).is_some())
        .ok_or_else(missing)?;
    match session.resize(call.pid, call.rows, call.cols) {
        Some(Ok(())) => Ok(Outcome::Reply(json!({}), Vec::new())),
        Some(Err(e)) => Err(E::InvalidArgument {
            parameter: "rows".into(),
            reason: e.to_string(),
        }
        .into()),
        None => Err(E::InvalidArgument {
            parameter: "pid".into(),
            reason: format!("process {} has no terminal", call.pid),
        }
        .into()),
    }
}

/// `ListSessions`.
pub async fn list_sessions(
    daemon: &Arc<Daemon>,
    client: &mut Client,
    more: bool,
) -> Result<Outcome, Failure> {
    let sessions = visible_sessions(daemon, client);
    if !more {
        return Ok(Outcome::Reply(json!({ "sessions": sessions }), Vec::new()));
    }
    // In pieces: zlink grows its write buffer 256 bytes at a time and serializes the whole
    // reply again each time, so one reply of 10,000 sessions costs seconds (quadratic), while
    // pieces of a few dozen cost what their bytes cost.
    let mut pieces = sessions.chunks(LIST_PIECE).peekable();
    if pieces.peek().is_none() {
        return Ok(Outcome::Reply(json!({ "sessions": [] }), Vec::new()));
    }
    while let Some(piece) = pieces.next() {
        let last = pieces.peek().is_none();
        let reply = Reply::new(Some(json!({ "sessions": piece }))).set_continues(Some(!last));
        if client.conn.send_reply(&reply, Vec::new()).await.is_err() {
            return Ok(Outcome::Close);
        }
    }
    Ok(Outcome::Sent)
}

/// Sessions per reply of a ListSessions called with "more".
const LIST_PIECE: usize = 64;

fn visible_sessions(daemon: &Daemon, client: &Client) -> Vec<proto::Session> {
    daemon
        .sessions
        .all()
        .into_iter()
        .filter(|s| client.may_use(&daemon.policy, s))
        .map(|s| proto::Session {
            id: s.id.clone(),
            user: s.user.clone(),
            uid: s.uid,
            owner: s.owner,
            kind: s.kind.clone(),
            processes: s.pids(),
            grants: s.grant_names(),
            keep: s.keep,
            created: s.created_secs(),
            remote: s.remote.as_ref().map(|origin| match &origin.client_cert {
                Some(name) => format!("{} {name}", origin.address),
                None => origin.address.clone(),
            }),
        })
        .collect()
}

/// `Logoff`.
pub async fn logoff(
    daemon: &Arc<Daemon>,
    client: &Client,
    call: proto::Logoff,
) -> Result<Outcome, Failure> {
    let request = daemon.audit.request_id();
    let missing = || {
        Failure::Deputy(E::NoSuchSession {
            session: call.session.clone(),
        })
    };
    let session = daemon.sessions.get(&call.session).ok_or_else(missing)?;
    if !client.may_use(&daemon.policy, &session) {
        return Err(missing());
    }
    let ended = sessions::end(&daemon.sessions, &call.session, daemon.grace())
        .await
        .ok_or_else(missing)?;
    audit_ended(
        daemon,
        &request,
        &ended,
        &format!("Logoff by {}", client.describe()),
    );
    Ok(Outcome::Reply(json!({}), Vec::new()))
}
