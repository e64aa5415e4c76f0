//! Logon sessions: `LogonUser` over PAM.
//!
//! [`Logons::logon`] authenticates a user with credentials through the PAM service `deputy`
//! and, for the logon types that have one, opens a PAM session. The result is a
//! [`LogonSession`]: a session id, a primary token, PAM's environment, and a worker process that
//! holds the PAM handle (see `worker.rs` for why). [`LogonSession::spawn`] starts processes in
//! the session; [`LogonSession::logoff`] — or dropping it — closes the PAM session, deletes the
//! credentials and ends the transaction, exactly once.
//!
//! | logon type | PAM calls | processes run as |
//! |---|---|---|
//! | interactive, batch, service | authenticate, acct_mgmt, setcred, open_session | the user |
//! | network | authenticate, acct_mgmt | none: it has no credentials to act with |
//! | new_credentials | as interactive, for the named user | the caller, with the named user's PAM environment |
//!
//! A trusted caller (the daemon's policy decides who: root) may log a user on without a
//! password: [`Logons::trusted_logon`]. Failed logons cost a fixed delay (PAM's own is taken
//! over) and are counted: see [`LockoutPolicy`].

mod error;
mod handle;
mod lockout;
mod wire;
mod worker;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deputy_os::pam::{Echo, Pam};
use deputy_os::secret::Secret;

pub use deputy_os::pam::Conversation;
pub use error::LogonError;
pub use lockout::{Caller, LockoutPolicy};
pub use worker::run_session_worker;

use crate::Child;
use crate::spawn::{SpawnRequest, prepare};
use crate::tickets::{self, TicketCache, TicketError};
use crate::token::{SessionId, Token};
use error::{map_pam, map_refusal, shadow_refusal};
use handle::{CloseError, Worker};
use wire::Mode;

/// The longest user name accepted (Linux allows 32; directory services more).
pub const MAX_USER_NAME: usize = 256;
/// The longest password or conversation answer accepted.
pub const MAX_SECRET: usize = 4096;

/// The kind of logon (`LOGON32_LOGON_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogonType {
    /// A person at a terminal or display: full session.
    Interactive,
    /// Work on the user's behalf without a person present: full session.
    Batch,
    /// A service running as the user: full session.
    Service,
    /// Check the credentials only: no credentials are cached and no process can be started.
    Network,
    /// Run as the caller, carrying the named user's credentials and environment
    /// (`runas /netonly`).
    NewCredentials,
}

impl LogonType {
    /// The type's name in the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            LogonType::Interactive => "interactive",
            LogonType::Batch => "batch",
            LogonType::Service => "service",
            LogonType::Network => "network",
            LogonType::NewCredentials => "new_credentials",
        }
    }
}

impl fmt::Display for LogonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
/// How logons are made: the PAM service, the worker binary, the delay and lockout rules.
#[derive(Clone, Debug)]
pub struct LogonConfig {
    /// The PAM service (a file in /etc/pam.d). Default `deputy`.
    pub service: String,
    /// The `deputy-session-worker` binary. Default: beside the running executable.
    pub worker: PathBuf,
    /// What every failed logon costs, instead of PAM's own delay. Default 2 s.
    pub fail_delay: Duration,
    /// When repeated failures lock a caller out.
    pub lockout: LockoutPolicy,
    /// Keep one worker started ahead, so a logon does not wait for a process to start (about
    /// 2 ms here). Default on.
    pub prestart_worker: bool,
    /// How long the PAM stack may take for one step (before or after a prompt), a start or a
    /// logoff, before the logon is abandoned and its worker killed. Default 120 s.
    pub timeout: Duration,
}

impl Default for LogonConfig {
    fn default() -> Self {
        let worker = std::env::current_exe()
            .map(|exe| exe.with_file_name("deputy-session-worker"))
            .unwrap_or_else(|_| PathBuf::from("/usr/libexec/deputy/deputy-session-worker"));
        LogonConfig {
            service: "deputy".to_owned(),
            worker,
            fail_delay: Duration::from_secs(2),
            lockout: LockoutPolicy::default(),
            prestart_worker: true,
            timeout: Duration::from_secs(120),
        }
    }
}

/// A logon to make: who, how, and how to answer PAM's questions.
pub struct LogonRequest {
    user: String,
    logon_type: LogonType,
    caller: Caller,
    conversation: Box<dyn Conversation>,
    password_too_long: bool,
    tty: Option<String>,
    remote_host: Option<String>,
    on_behalf_of: Option<Token>,
}

impl fmt::Debug for LogonRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogonRequest")
            .field("user", &self.user)
            .field("logon_type", &self.logon_type)
            .field("caller", &self.caller)
            .field("tty", &self.tty)
            .field("remote_host", &self.remote_host)
            .finish_non_exhaustive()
    }
}

impl LogonRequest {
    /// A logon that answers the stack's password prompt with `password` (and any other prompt
    /// with nothing, which fails the logon with [`LogonError::Conversation`]).
    pub fn password(
        user: impl Into<String>,
        logon_type: LogonType,
        password: impl Into<Secret>,
    ) -> Self {
        let password = password.into();
        let too_long = password.len() > MAX_SECRET;
        let mut request = Self::with_conversation(
            user,
            logon_type,
            Box::new(PasswordConversation::new(password)),
        );
        request.password_too_long = too_long;
        request
    }

    /// A logon whose prompts `conversation` answers: a password, a one-time code, a new
    /// password, whatever the stack asks.
    pub fn with_conversation(
        user: impl Into<String>,
        logon_type: LogonType,
        conversation: Box<dyn Conversation>,
    ) -> Self {
        LogonRequest {
            user: user.into(),
            logon_type,
            caller: Caller::Uid(rustix::process::getuid().as_raw()),
            conversation,
            password_too_long: false,
            tty: None,
            remote_host: None,
            on_behalf_of: None,
        }
    }

    /// Who asks, for failure accounting. Default: this process's uid.
    pub fn caller(mut self, caller: Caller) -> Self {
        self.caller = caller;
        self
    }

    /// `PAM_TTY`: the terminal or display of the session.
    pub fn tty(mut self, tty: impl Into<String>) -> Self {
        self.tty = Some(tty.into());
        self
    }

    /// `PAM_RHOST`: the remote host the caller connects from.
    pub fn remote_host(mut self, host: impl Into<String>) -> Self {
        self.remote_host = Some(host.into());
        self
    }

    /// For [`LogonType::NewCredentials`]: the caller's own primary token, which the session's
    /// processes run with.
    pub fn on_behalf_of(mut self, caller_token: Token) -> Self {
        self.on_behalf_of = Some(caller_token);
        self
    }
}

/// Answers a password prompt with a password; refuses every other prompt.
pub struct PasswordConversation {
    password: Secret,
    asked: bool,
}

impl PasswordConversation {
    /// Answers with `password`, once.
    pub fn new(password: Secret) -> Self {
        PasswordConversation {
            password,
            asked: false,
        }
    }
}

impl fmt::Debug for PasswordConversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordConversation")
            .finish_non_exhaustive()
    }
}

impl Conversation for PasswordConversation {
    fn prompt(&mut self, _text: &str, echo: Echo) -> Option<Secret> {
        // One hidden prompt: the password. A second one (a new password, a code) cannot be
        // answered by a password alone.
        if echo == Echo::Off && !self.asked {
            self.asked = true;
            return Some(self.password.clone());
        }
        None
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

/// Makes logons, and keeps the failure accounting they share.
#[derive(Debug)]
pub struct Logons {
    config: LogonConfig,
    ledger: lockout::Ledger,
    /// A worker started ahead of need (see [`LogonConfig::prestart_worker`]).
    spare: Arc<Mutex<Option<Worker>>>,
    /// The PAM handle of the trusted fast path's account checks.
    account_check: Mutex<AccountCheck>,
    /// Its successor, started on another thread before it is needed.
    next_account_check: Arc<Mutex<AccountCheck>>,
}

impl Logons {
    /// Logons made as `config` says.
    pub fn new(config: LogonConfig) -> Self {
        let ledger = lockout::Ledger::new(config.lockout.clone());
        Logons {
            config,
            ledger,
            spare: Arc::default(),
            account_check: Mutex::new(None),
            next_account_check: Arc::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LogonConfig {
        &self.config
    }

    /// A worker for a new session: the spare one if it is still alive, else a new one. A new
    /// spare starts on another thread, off the caller's path.
    fn worker(&self) -> Result<Worker, LogonError> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let worker = match spare {
            Some(worker) if worker.is_alive() => worker,
            _ => Worker::launch(
                &self.config.worker,
                &self.config.service,
                self.config.timeout,
            )?,
        };
        if self.config.prestart_worker {
            let slot = self.spare.clone();
            let (path, service, timeout) = (
                self.config.worker.clone(),
                self.config.service.clone(),
                self.config.timeout,
            );
            // Without a thread to be had, the next logon starts its worker itself.
            let _ = std::thread::Builder::new()
                .name("deputy-spare-worker".into())
                .spawn(move || {
                    if let Ok(worker) = Worker::launch(&path, &service, timeout) {
                        // A spare that is already there wins; ours is dropped (and reaped).
                        slot.lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .get_or_insert(worker);
                    }
                });
        }
        Ok(worker)
    }

    /// Logs a user on with credentials (`LogonUser`).
    ///
    /// # Errors
    /// [`LogonError::InvalidArgument`] before PAM is involved; [`LogonError::LockedOut`] while
    /// the caller is locked out; [`LogonError::AuthenticationFailed`],
    /// [`LogonError::AccountLocked`], [`LogonError::AccountExpired`],
    /// [`LogonError::PasswordExpired`] and the other refusals after the fail delay.
    pub fn logon(&self, request: LogonRequest) -> Result<LogonSession, LogonError> {
        validate_user(&request.user)?;
        if request.password_too_long {
            return Err(LogonError::InvalidArgument {
                what: "password",
                reason: format!("longer than {MAX_SECRET} bytes"),
            });
        }
        if (request.logon_type == LogonType::NewCredentials) != request.on_behalf_of.is_some() {
            return Err(LogonError::InvalidArgument {
                what: "logon type",
                reason:
                    "new_credentials needs the caller's token (on_behalf_of), and only it takes one"
                        .to_owned(),
            });
        }
        let (user, caller) = (request.user.clone(), request.caller.clone());
        tracing::debug!(user = %user, logon_type = %request.logon_type, caller = %caller, "logon requested");
        let result = match self.ledger.check(&caller, &user) {
            Err(until) => Err(LogonError::LockedOut {
                user: user.clone(),
                caller: caller.clone(),
                until,
            }),
            Ok(()) => self.authenticate(request),
        };
        match &result {
            Ok(session) => {
                tracing::debug!(user = %user, session = %session.id, "logon succeeded");
                self.ledger.record_success(&caller, &user);
            }
            Err(err) => {
                tracing::debug!(user = %user, caller = %caller, error = %err, "logon failed");
                if err.counts_as_failure() {
                    self.ledger.record_failure(&caller, &user);
                }
                if err.is_refusal() {
                    // Only this caller's thread waits; other logons go on.
                    std::thread::sleep(self.config.fail_delay);
                }
            }
        }
        result
    }

    fn authenticate(&self, request: LogonRequest) -> Result<LogonSession, LogonError> {
        let LogonRequest {
            user,
            logon_type,
            mut conversation,
            tty,
            remote_host,
            on_behalf_of,
            ..
        } = request;
        let mode = if logon_type == LogonType::Network {
            Mode::AuthenticateOnly
        } else {
            Mode::Full
        };
        let start = wire::Start {
            service: self.config.service.clone(),
            user: user.clone(),
            mode,
            tty,
            remote_host,
        };
        let mut worker = self.worker()?;
        let env = match worker.log_on(start, conversation.as_mut()) {
            Ok(env) => env,
            Err(err) => {
                worker.end_after(&err);
                return Err(map_refusal(err, &user, self.config.timeout));
            }
        };
        let id = SessionId::generate().map_err(LogonError::worker("generate a session id"))?;
        let user_token = Token::for_user(&user)?.with_session(id);
        let mut env = env;
        let mut tickets = None;
        let (token, backend) = match (logon_type, on_behalf_of) {
            (LogonType::Network, _) => {
                worker.reap();
                (user_token, Backend::NoCredentials)
            }
            (LogonType::NewCredentials, Some(caller)) => {
                let caller = caller.to_primary()?.with_session(id);
                // The user's tickets (pam_krb5's cache, the user's own file) go to a cache of
                // the caller's, which its processes can read; the user's is closed with PAM.
                if let Some(copy) = hand_over_tickets(&user_token, &caller, &mut env) {
                    match copy {
                        Ok(cache) => tickets = Some(cache),
                        Err(source) => {
                            let _ = worker.close();
                            return Err(LogonError::Tickets { user, source });
                        }
                    }
                }
                (caller, Backend::Worker(worker))
            }
            _ => (user_token, Backend::Worker(worker)),
        };
        Ok(LogonSession {
            id,
            user,
            logon_type: Some(logon_type),
            token,
            env,
            backend: Mutex::new(backend),
            tickets: Mutex::new(tickets),
        })
    }

    /// Logs a user on without a password, for a caller the daemon's policy trusts (the S4U
    /// case). With `session` `None`, only the account check runs (`pam_acct_mgmt`: a locked or
    /// expired account is still refused) and no PAM session is opened: the fast path. With a
    /// logon type, account, setcred and open_session run, as `runuser` does.
    ///
    /// # Errors
    /// [`LogonError::AccountLocked`], [`LogonError::AccountExpired`],
    /// [`LogonError::PasswordExpired`], [`LogonError::AccessDenied`], or
    /// [`LogonError::InvalidArgument`] for new_credentials, which needs a caller's token.
    pub fn trusted_logon(
        &self,
        user: &str,
        session: Option<LogonType>,
    ) -> Result<LogonSession, LogonError> {
        validate_user(user)?;
        self.trusted_logon_of(&Token::for_user(user)?, session)
    }

    /// [`Logons::trusted_logon`] for an account already looked up (a caller that checked its
    /// policy against the token saves a second NSS lookup).
    ///
    /// # Errors
    /// As [`Logons::trusted_logon`].
    pub fn trusted_logon_of(
        &self,
        account: &Token,
        session: Option<LogonType>,
    ) -> Result<LogonSession, LogonError> {
        let user = account.user();
        validate_user(user)?;
        let token = account.to_primary()?;
        // pam_acct_mgmt does not look at the lock ('!' in the hash); check it here.
        if let Some(locked @ LogonError::AccountLocked { .. }) = shadow_refusal(user) {
            return Err(locked);
        }
        let id = SessionId::generate().map_err(LogonError::worker("generate a session id"))?;
        let token = token.with_session(id);
        let (backend, env) = match session {
            None | Some(LogonType::Network) => {
                self.account_check(user)?;
                let backend = if session.is_none() {
                    Backend::Local
                } else {
                    Backend::NoCredentials
                };
                (backend, Vec::new())
            }
            Some(LogonType::NewCredentials) => {
                return Err(LogonError::InvalidArgument {
                    what: "logon type",
                    reason: "new_credentials needs the caller's token; use Logons::logon"
                        .to_owned(),
                });
            }
            Some(_) => {
                let start = wire::Start {
                    service: self.config.service.clone(),
                    user: user.to_owned(),
                    mode: Mode::Trusted,
                    tty: None,
                    remote_host: None,
                };
                let mut worker = self.worker()?;
                match worker.log_on(start, &mut NoConversation) {
                    Ok(env) => (Backend::Worker(worker), env),
                    Err(err) => {
                        worker.end_after(&err);
                        return Err(map_refusal(err, user, self.config.timeout));
                    }
                }
            }
        };
        Ok(LogonSession {
            id,
            user: user.to_owned(),
            logon_type: session,
            token,
            env,
            backend: Mutex::new(backend),
            tickets: Mutex::new(None),
        })
    }
}

/// How long the account-check PAM handle is reused before the stack is read again (so that a
/// change to the PAM configuration takes effect within this time).
const ACCOUNT_CHECK_REUSE: Duration = Duration::from_secs(60);

/// How many checks one account-check PAM handle serves. Modules keep data on the handle that
/// only `pam_end` frees — `pam_modutil_getpwnam` stores every answer under a new name — so a
/// handle used without bound grows in memory, and each `pam_get_data` walks a longer list
/// (after 10,000 checks a check cost 30 ms instead of 0.1 ms). 32 is about the best trade
/// here: `cargo bench -p deputy --bench logon -- trusted_account_check` gave a mean of 95 µs
/// with 32 uses, 122 µs with 128, 985 µs with 512.
const ACCOUNT_CHECK_USES: u32 = 32;

/// How many checks before the handle is used up its successor is started, on another thread:
/// starting one (reading the stack's configuration, loading its modules) takes ~1.2 ms here,
/// which every 32nd trusted start used to wait for.
const ACCOUNT_CHECK_AHEAD: u32 = 4;

/// A PAM handle kept for account checks, when it was started and how many checks it served.
type AccountCheck = Option<(Pam, std::time::Instant, u32)>;

fn lock_check(slot: &Mutex<AccountCheck>) -> std::sync::MutexGuard<'_, AccountCheck> {
    slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new account-check handle for `service`, unused.
fn start_account_check(
    service: &str,
) -> Result<(Pam, std::time::Instant, u32), deputy_os::pam::PamError> {
    let pam = Pam::start(service, None, Box::new(NoConversation))?;
    Ok((pam, std::time::Instant::now(), 0))
}

/// Whether a kept handle may serve no more checks.
fn used_up((_, started, uses): &(Pam, std::time::Instant, u32)) -> bool {
    started.elapsed() > ACCOUNT_CHECK_REUSE || *uses >= ACCOUNT_CHECK_USES
}

impl Logons {
    /// `pam_acct_mgmt` for `user` on a PAM handle kept between calls: loading the stack (its
    /// configuration and modules) costs more than the check, and the trusted fast path runs it
    /// for every start. The handle is reused for [`ACCOUNT_CHECK_REUSE`], with `PAM_USER` set
    /// for each check, for at most [`ACCOUNT_CHECK_USES`] checks, and dropped after any failure
    /// other than a refusal of the account. Its successor is started ahead, off the caller's
    /// path.
    fn account_check(&self, user: &str) -> Result<(), LogonError> {
        let mut slot = lock_check(&self.account_check);
        if slot.as_ref().is_some_and(used_up) {
            *slot = None;
        }
        if slot.is_none() {
            let next = lock_check(&self.next_account_check).take();
            *slot = match next {
                Some(next) if !used_up(&next) => Some(next),
                _ => Some(
                    start_account_check(&self.config.service)
                        .map_err(|error| map_pam(error, user))?,
                ),
            };
        }
        let (pam, _, uses) = slot.as_mut().expect("started above");
        *uses += 1;
        if *uses == ACCOUNT_CHECK_USES - ACCOUNT_CHECK_AHEAD {
            self.start_next_account_check();
        }
        let result = pam
            .set_item(deputy_os::pam::Item::User, user)
            .and_then(|()| pam.acct_mgmt());
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let refusal = map_pam(error, user);
                if !refusal.is_refusal() {
                    *slot = None;
                }
                Err(refusal)
            }
        }
    }

    /// Starts the next account-check handle on another thread (a handle already waiting wins).
    /// Without a thread to be had, the check that needs the handle starts it, as before.
    fn start_next_account_check(&self) {
        let (next, service) = (self.next_account_check.clone(), self.config.service.clone());
        let _ = std::thread::Builder::new()
            .name("deputy-pam-start".into())
            .spawn(move || {
                if let Ok(fresh) = start_account_check(&service) {
                    lock_check(&next).get_or_insert(fresh);
                }
            });
    }
}

/// For new_credentials: copies the cache `KRB5CCNAME` names in `env` (read as `user`) into a new
/// cache of `caller`'s and points `KRB5CCNAME` at it. `None` when the stack made no cache.
fn hand_over_tickets(
    user: &Token,
    caller: &Token,
    env: &mut [(OsString, OsString)],
) -> Option<Result<TicketCache, TicketError>> {
    let entry = env.iter_mut().find(|(name, _)| name == "KRB5CCNAME")?;
    let result = entry
        .1
        .to_str()
        .ok_or_else(|| TicketError::Invalid("KRB5CCNAME is not UTF-8".into()))
        .and_then(|name| tickets::read_as(user, name))
        .and_then(|data| TicketCache::create(Path::new(tickets::DEFAULT_DIR), caller, &data));
    if let Ok(cache) = &result {
        entry.1 = cache.name().into();
    }
    Some(result)
}

/// Where a session's processes are started.
#[derive(Debug)]
enum Backend {
    /// By its worker, which holds the PAM session.
    Worker(Worker),
    /// Here: a trusted logon without a PAM session.
    Local,
    /// Nowhere: a network logon.
    NoCredentials,
    /// Logged off.
    Ended,
}

/// A logged-on user: a session id, the token its processes run with, PAM's environment.
#[derive(Debug)]
pub struct LogonSession {
    id: SessionId,
    user: String,
    logon_type: Option<LogonType>,
    token: Token,
    env: Vec<(OsString, OsString)>,
    backend: Mutex<Backend>,
    /// A ticket cache deputy made for the session (new_credentials), destroyed at logoff.
    tickets: Mutex<Option<TicketCache>>,
}

impl LogonSession {
    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The user who logged on.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The logon type (`None` for a trusted logon without a PAM session).
    pub fn logon_type(&self) -> Option<LogonType> {
        self.logon_type
    }

    /// The primary token the session's processes run with: the user's, or the caller's for
    /// new_credentials. It carries the session id.
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// The environment PAM set up (`pam_getenvlist`), which every process of the session gets.
    pub fn environment(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// Starts a process in the session (`CreateProcessAsUser` with the session's token). The
    /// program and working directory are opened here, as the session's user; the worker that
    /// holds the PAM session starts it, and the caller of this method is its parent.
    ///
    /// # Errors
    /// [`LogonError::NoCredentials`] for a network logon, [`LogonError::SessionEnded`] after
    /// logoff, [`LogonError::Spawn`] as for [`crate::spawn`].
    pub fn spawn(&self, request: SpawnRequest) -> Result<Child, LogonError> {
        let mut backend = self
            .backend
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match &mut *backend {
            Backend::NoCredentials => Err(LogonError::NoCredentials {
                user: self.user.clone(),
            }),
            Backend::Ended => Err(LogonError::SessionEnded(self.id)),
            Backend::Local => {
                drop(backend);
                let prepared = prepare(&self.token, request, &self.env)?;
                let spawned = deputy_os::exec::spawn(&prepared.plan)
                    .map_err(|failure| prepared.failure(failure))?;
                Ok(prepared.into_child(spawned))
            }
            Backend::Worker(worker) => {
                let prepared = prepare(&self.token, request, &self.env)?;
                worker.spawn(prepared)
            }
        }
    }

    /// Whether a PAM session is open for it (in its worker): then [`LogonSession::logoff`]
    /// waits for the stack to close it. Otherwise logging off only drops what deputy holds.
    pub fn holds_pam_session(&self) -> bool {
        matches!(
            *self
                .backend
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Backend::Worker(_)
        )
    }

    /// Ends the session: `pam_close_session`, `pam_setcred(DELETE_CRED)`, `pam_end`, each once.
    /// Processes started in the session keep running; ending them is the caller's choice.
    ///
    /// # Errors
    /// [`LogonError::Pam`] when a module failed to close (the session is ended all the same),
    /// [`LogonError::Worker`] when the worker did not answer (it ends the session itself when
    /// it loses the daemon).
    pub fn logoff(self) -> Result<(), LogonError> {
        self.end()
    }

    fn end(&self) -> Result<(), LogonError> {
        let backend = {
            let mut slot = self
                .backend
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            std::mem::replace(&mut *slot, Backend::Ended)
        };
        // deputy's own copy of the tickets goes first; PAM's goes with the PAM session.
        drop(
            self.tickets
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        match backend {
            Backend::Worker(worker) => worker.close().map_err(|errors| match errors {
                CloseError::Pam(error) => LogonError::Pam {
                    user: self.user.clone(),
                    error,
                },
                CloseError::Io(source) => LogonError::Worker {
                    what: "close the session",
                    source,
                },
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for LogonSession {
    /// Dropping a session logs it off, on every path (errors, panics, shutdown).
    fn drop(&mut self) {
        let _ = self.end();
    }
}

fn validate_user(user: &str) -> Result<(), LogonError> {
    let invalid = |reason: &str| {
        Err(LogonError::InvalidArgument {
            what: "user name",
            reason: reason.to_owned(),
        })
    };
    if user.is_empty() {
        return invalid("it is empty");
    }
    if user.len() > MAX_USER_NAME {
        return invalid(&format!("longer than {MAX_USER_NAME} bytes"));
    }
    if let Some(bad) = user.chars().find(|c| matches!(c, '\0' | '/' | ':' | '\n')) {
        return invalid(&format!("it contains {bad:?}"));
    }
    Ok(())
}

/// For stacks that should ask nothing: a trusted logon.
struct NoConversation;

impl Conversation for NoConversation {
    fn prompt(&mut self, _text: &str, _echo: Echo) -> Option<Secret> {
        None
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_logons_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<LogonSession>();
        send_sync::<Logons>();
    }

    #[test]
    fn bad_user_names_are_refused_before_pam() {
        let long = "a".repeat(MAX_USER_NAME + 1);
        for name in ["", "a/b", "a:b", "a\nb", "a\0b", long.as_str()] {
            let err = validate_user(name).unwrap_err();
            assert!(err.to_string().starts_with("invalid user name: "), "{err}");
        }
        validate_user("dpt-alice").unwrap();
    }

    #[test]
    fn a_password_conversation_answers_one_hidden_prompt() {
        let mut conversation = PasswordConversation::new(Secret::from("pw"));
        assert_eq!(conversation.prompt("Password: ", Echo::On), None);
        assert_eq!(
            conversation
                .prompt("Password: ", Echo::Off)
                .unwrap()
                .expose(),
            b"pw"
        );
        assert_eq!(conversation.prompt("New password: ", Echo::Off), None);
        assert!(!format!("{conversation:?}").contains("pw"));
    }
}
