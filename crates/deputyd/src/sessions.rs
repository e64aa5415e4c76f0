//! The session registry: every session the daemon holds, with its owner and its processes.
//!
//! A session belongs to the uid that created it. Processes started through a peer token are
//! grouped in one `peer` session per uid. A session ends when its last process ends, unless it
//! was asked to be kept; then Logoff or the idle timeout ends it. Ending a session with
//! processes left sends them SIGTERM, then SIGKILL after the grace time, and then closes its
//! PAM session (on a blocking thread: PAM may take its time).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deputy::{Child, ExitStatus, LogonSession, SessionId, Signal, Token};
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::state::{self, GrantRecord, Store};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An X11 grant shared by every session of the same user on the same display: the entry is
/// added by the first and removed when the last one ends (unless it was there before).
#[derive(Debug)]
pub struct SharedX11 {
    /// How ListSessions and the audit log name it.
    pub description: String,
    access: Mutex<Option<X11Held>>,
}

/// A grant made here (with its connection), or found in a record after a restart.
#[derive(Debug)]
enum X11Held {
    Live(Box<deputy::grant::X11Access>),
    Recorded(deputy::grant::X11Record),
}

impl SharedX11 {
    /// Wraps a fresh grant.
    pub fn new(access: deputy::grant::X11Access, user: &str) -> SharedX11 {
        let description = format!("x11 {} SI:localuser:{user}", access.display());
        SharedX11 {
            description,
            access: Mutex::new(Some(X11Held::Live(Box::new(access)))),
        }
    }

    /// Wraps a grant found in a session's record after a restart.
    pub fn recorded(record: deputy::grant::X11Record) -> SharedX11 {
        SharedX11 {
            description: format!("x11 {} SI:localuser:{}", record.display, record.user),
            access: Mutex::new(Some(X11Held::Recorded(record))),
        }
    }

    /// What a restarted daemon needs to revoke it; `None` once revoked.
    fn record(&self) -> Option<deputy::grant::X11Record> {
        match lock(&self.access).as_ref()? {
            X11Held::Live(access) => Some(access.record()),
            X11Held::Recorded(record) => Some(record.clone()),
        }
    }

    fn revoke(&self) -> Result<(), String> {
        match lock(&self.access).take() {
            Some(X11Held::Live(access)) => access.revoke().map_err(|e| e.to_string()),
            Some(X11Held::Recorded(record)) => record.revoke().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

impl Drop for SharedX11 {
    fn drop(&mut self) {
        let _ = self.revoke();
    }
}

/// Where a remote session comes from.
#[derive(Clone, Debug)]
pub struct RemoteOrigin {
    /// The TLS connection it belongs to.
    pub connection: u64,
    /// The client's address.
    pub address: String,
    /// The name in the client's certificate, with mutual TLS.
    pub client_cert: Option<String>,
}

/// A start counted in its session (see [`Session::reserve`]).
#[derive(Debug)]
pub struct Reservation {
    session: Arc<Session>,
    /// Still counted in the session's `spawning`.
    counted: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.counted {
            lock(&self.session.state).spawning -= 1;
        }
    }
}

/// A desktop grant held by a session.
#[derive(Debug)]
pub enum Grant {
    /// A display's host access list entry.
    X11(Arc<SharedX11>),
    /// ACL entries on a socket and its directories.
    Acl(deputy::grant::AclGrant),
    /// A delegated Kerberos ticket cache: destroyed (zeroed and removed) when revoked.
    Tickets(deputy::tickets::TicketCache),
    /// A grant made before the daemon restarted, revoked from its record.
    Recorded(GrantRecord),
}

impl Grant {
    /// How ListSessions and the audit log name it.
    pub fn describe(&self) -> String {
        match self {
            Grant::X11(shared) => shared.description.clone(),
            Grant::Acl(acl) => format!("acl {}", acl.path().display()),
            Grant::Tickets(cache) => format!("krb5 {}", cache.name()),
            Grant::Recorded(record) => record.describe(),
        }
    }

    /// What it takes to revoke it after a restart (`None`: nothing left to revoke).
    fn record(&self) -> Option<GrantRecord> {
        Some(match self {
            Grant::X11(shared) => GrantRecord::X11(shared.record()?),
            Grant::Acl(acl) => GrantRecord::Acl(acl.record()),
            Grant::Tickets(cache) => GrantRecord::Tickets {
                path: cache.path().to_owned(),
                owner: cache.owner().to_owned(),
            },
            Grant::Recorded(record) => record.clone(),
        })
    }
}

/// One session.
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// `peer`, `trusted`, or the logon type.
    pub kind: String,
    /// The user its processes run as.
    pub user: String,
    /// That user's uid.
    pub uid: u32,
    /// The uid that created it.
    pub owner: u32,
    /// Outlives its last process.
    pub keep: bool,
    /// The one peer session a uid's plain peer runs share (not one of its own: kept, or
    /// holding delegated tickets).
    pub shared: bool,
    /// When it was created.
    pub created: SystemTime,
    /// The token its processes run with (peer sessions use each connection's own).
    pub token: Token,
    /// For a session logged on over TLS: the connection it belongs to (and ends with).
    pub remote: Option<RemoteOrigin>,
    /// Found by a restarted daemon: its processes are watched, not reaped, and it starts no
    /// new ones unless it is a peer session (its PAM session, if any, is held by a worker of
    /// the daemon that died, which closes it when the processes end).
    pub adopted: bool,
    /// Where its record is kept (once it is in the registry).
    store: OnceLock<Arc<Store>>,
    /// Whether a record of it is on disk.
    recorded: std::sync::atomic::AtomicBool,
    /// Held while its record is written or removed: writes land in order, and none after
    /// the removal.
    record_lock: Mutex<()>,
    logon: Mutex<Option<LogonSession>>,
    grants: Mutex<Vec<Grant>>,
    state: Mutex<State>,
    /// Woken whenever a process of the session ends.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    processes: BTreeMap<i32, Arc<Child>>,
    /// Processes found running after a restart: not our children, watched through a pidfd.
    adopted: BTreeMap<i32, Arc<OwnedFd>>,
    /// When each process started (clock ticks since boot, a reading before and one after;
    /// see [`deputy_os::pidfd::boot_ticks`]), for the record.
    start_times: BTreeMap<i32, (u64, u64)>,
    /// The terminal leaders of processes started with a pty, for ResizePty.
    terminals: BTreeMap<i32, std::os::fd::OwnedFd>,
    last_active: Instant,
    ending: bool,
    /// Starts reserved and not yet done ([`Session::reserve`]): while one is, the session is
    /// not over, and is not ended for want of processes.
    spawning: usize,
}

impl State {
    /// No process, and none starting.
    fn unused(&self) -> bool {
        self.processes.is_empty() && self.adopted.is_empty() && self.spawning == 0
    }

    /// No process yet, active now.
    fn new() -> State {
        State {
            processes: BTreeMap::new(),
            adopted: BTreeMap::new(),
            start_times: BTreeMap::new(),
            terminals: BTreeMap::new(),
            last_active: Instant::now(),
            ending: false,
            spawning: 0,
        }
    }
}

impl Session {
    /// A new session; `logon` is `None` for peer sessions.
    pub fn new(
        kind: &str,
        owner: u32,
        token: Token,
        logon: Option<LogonSession>,
        keep: bool,
    ) -> std::io::Result<Session> {
        let id = match logon.as_ref() {
            Some(logon) => logon.id(),
            None => SessionId::generate()?,
        };
        Ok(Session {
            id: id.to_string(),
            kind: kind.to_owned(),
            user: token.user().to_owned(),
            uid: token.uid().as_raw(),
            owner,
            keep,
            shared: false,
            created: SystemTime::now(),
            token,
            remote: None,
            adopted: false,
            store: OnceLock::new(),
            recorded: std::sync::atomic::AtomicBool::new(false),
            record_lock: Mutex::new(()),
            logon: Mutex::new(logon),
            grants: Mutex::new(Vec::new()),
            state: Mutex::new(State::new()),
            changed: Notify::new(),
        })
    }

    /// The session `record` describes, found by a restarted daemon, with `token` for its
    /// user and `grants` made from the record's. Its processes are added with
    /// [`Session::adopt`].
    pub fn adopted(record: &state::Record, token: Token, grants: Vec<Grant>) -> Session {
        Session {
            id: record.id.clone(),
            kind: record.kind.clone(),
            user: record.user.clone(),
            uid: record.uid,
            owner: record.owner,
            keep: record.keep,
            shared: false,
            created: UNIX_EPOCH + Duration::from_secs(record.created),
            token,
            remote: None,
            adopted: true,
            store: OnceLock::new(),
            // Its record is on disk: the predecessor wrote it.
            recorded: std::sync::atomic::AtomicBool::new(true),
            record_lock: Mutex::new(()),
            logon: Mutex::new(None),
            grants: Mutex::new(grants),
            state: Mutex::new(State::new()),
            changed: Notify::new(),
        }
    }

    /// Starts a process in the session, in the place `reservation` holds for it: through its
    /// logon session, or as `token` (peer). Logged off meanwhile, the session gets the
    /// process, and the process SIGKILL.
    ///
    /// # Errors
    /// The library's error, or `Adopted` for a session a restarted daemon adopted.
    pub fn spawn(
        &self,
        mut reservation: Reservation,
        token: &Token,
        request: deputy::SpawnRequest,
    ) -> Result<Arc<Child>, SpawnOutcome> {
        debug_assert!(std::ptr::eq(&*reservation.session, self));
        if self.adopted && self.kind != "peer" {
            return Err(SpawnOutcome::Adopted);
        }
        let before = deputy_os::pidfd::boot_ticks();
        let child = match lock(&self.logon).as_ref() {
            Some(logon) => logon.spawn(request).map_err(SpawnOutcome::Logon)?,
            None => deputy::spawn(token, request).map_err(SpawnOutcome::Spawn)?,
        };
        let start_time = (before, deputy_os::pidfd::boot_ticks());
        let child = Arc::new(child);
        let pid = child.pid().as_raw_nonzero().get();
        let ending = {
            let mut state = lock(&self.state);
            state.processes.insert(pid, child.clone());
            state.start_times.insert(pid, start_time);
            state.last_active = Instant::now();
            // The process is in place: the reservation ends under the same lock.
            state.spawning -= 1;
            reservation.counted = false;
            state.ending
        };
        if ending {
            // Logged off while it started: it goes the way of the session's other processes.
            let _ = child.signal(Signal::KILL);
        }
        // The record is the caller's to write (Session::save), once the client has its reply:
        // the write is then off the path the client waits on.
        Ok(child)
    }

    /// Counts a start in the session from before its process exists, unless the session is
    /// ending. Pass the reservation to [`Session::spawn`]; dropped unused, it is given back.
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, SpawnOutcome> {
        let mut state = lock(&self.state);
        if state.ending {
            return Err(SpawnOutcome::Ending);
        }
        state.spawning += 1;
        Ok(Reservation {
            session: self.clone(),
            counted: true,
        })
    }

    /// Watches `pidfd`, process `process` found running after a restart.
    pub fn adopt(&self, process: state::Process, pidfd: OwnedFd) -> Arc<OwnedFd> {
        let pidfd = Arc::new(pidfd);
        let mut state = lock(&self.state);
        state.adopted.insert(process.pid, pidfd.clone());
        state
            .start_times
            .insert(process.pid, (process.started_after, process.started_before));
        pidfd
    }

    /// The pids of its running processes.
    pub fn pids(&self) -> Vec<i32> {
        let state = lock(&self.state);
        state
            .processes
            .keys()
            .chain(state.adopted.keys())
            .copied()
            .collect()
    }

    /// Sends `signal` to its process `pid`; `None` if it has no such process.
    pub fn signal(&self, pid: i32, signal: Signal) -> Option<std::io::Result<()>> {
        let state = lock(&self.state);
        if let Some(child) = state.processes.get(&pid) {
            return Some(child.signal(signal));
        }
        let pidfd = state.adopted.get(&pid)?;
        Some(deputy_os::pidfd::send_signal(&**pidfd, signal))
    }

    /// Removes its record, once it has ended (after any write in progress).
    fn forget_record(&self) {
        let _writing = lock(&self.record_lock);
        if let Some(store) = self.store.get()
            && self
                .recorded
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(err) = store.remove(&self.id)
        {
            tracing::error!(session = %self.id, "cannot remove the session's record: {err}");
        }
    }

    /// Its record, as the state directory keeps it.
    fn record_of(&self, state: &State) -> state::Record {
        let processes = state
            .start_times
            .iter()
            .map(|(&pid, &(started_after, started_before))| state::Process {
                pid,
                started_after,
                started_before,
            })
            .collect();
        state::Record {
            id: self.id.clone(),
            kind: self.kind.clone(),
            user: self.user.clone(),
            uid: self.uid,
            owner: self.owner,
            keep: self.keep,
            created: self.created_secs(),
            processes,
            grants: lock(&self.grants)
                .iter()
                .filter_map(Grant::record)
                .collect(),
        }
    }

    /// Writes its record, if it is in a registry with a state directory and holds something a
    /// restarted daemon must see to (processes or grants); removes it once it holds nothing.
    /// Not once the session is ending: its end removes the record.
    ///
    /// Called when a process has started or a grant was added, not when a process ends: a
    /// pid in the record whose process is gone is harmless (a restarted daemon finds it gone,
    /// by its start time), and the next write drops it.
    pub fn save(&self) {
        use std::sync::atomic::Ordering;
        let Some(store) = self.store.get() else {
            return;
        };
        // An end marks the session ending, then removes the record under this lock: a write
        // that began before waits for nothing and lands first; one that begins after sees the
        // mark and does nothing.
        let _writing = lock(&self.record_lock);
        let record = {
            let state = lock(&self.state);
            if state.ending {
                return;
            }
            self.record_of(&state)
        };
        let result = if record.processes.is_empty() && record.grants.is_empty() {
            if self.recorded.swap(false, Ordering::Relaxed) {
                store.remove(&self.id)
            } else {
                Ok(())
            }
        } else {
            self.recorded.store(true, Ordering::Relaxed);
            store.save(&record)
        };
        if let Err(err) = result {
            tracing::error!(session = %self.id, "cannot write the session's record: {err}");
        }
    }

    /// The process `pid`, if it belongs to this session.
    pub fn process(&self, pid: i32) -> Option<Arc<Child>> {
        lock(&self.state).processes.get(&pid).cloned()
    }

    /// Adds a grant, revoked when the session ends.
    pub fn add_grant(&self, grant: Grant) {
        lock(&self.grants).push(grant);
        self.save();
    }

    /// The grants, as ListSessions shows them.
    pub fn grant_names(&self) -> Vec<String> {
        lock(&self.grants).iter().map(Grant::describe).collect()
    }

    /// Keeps the terminal leader of process `pid`, for [`Session::resize`].
    pub fn set_terminal(&self, pid: i32, leader: std::os::fd::OwnedFd) {
        lock(&self.state).terminals.insert(pid, leader);
    }

    /// Resizes the terminal of process `pid`; `None` if it has none.
    pub fn resize(&self, pid: i32, rows: u16, cols: u16) -> Option<std::io::Result<()>> {
        let state = lock(&self.state);
        let leader = state.terminals.get(&pid)?;
        Some(deputy::pty::resize(
            std::os::fd::AsFd::as_fd(leader),
            rows,
            cols,
        ))
    }

    /// Signals every process of the session.
    pub fn signal_all(&self, signal: Signal) {
        let state = lock(&self.state);
        for child in state.processes.values() {
            let _ = child.signal(signal);
        }
        for pidfd in state.adopted.values() {
            let _ = deputy_os::pidfd::send_signal(&**pidfd, signal);
        }
    }

    fn remove(&self, pid: i32) -> bool {
        let mut state = lock(&self.state);
        state.processes.remove(&pid);
        state.adopted.remove(&pid);
        state.start_times.remove(&pid);
        state.terminals.remove(&pid);
        state.last_active = Instant::now();
        self.changed.notify_waiters();
        state.unused() && !self.keep && !state.ending
    }

    /// Idle: no process for longer than `timeout`.
    fn idle_for(&self, timeout: Duration) -> bool {
        let state = lock(&self.state);
        state.unused() && !state.ending && state.last_active.elapsed() >= timeout
    }

    /// Seconds since 1970 of its creation.
    pub fn created_secs(&self) -> u64 {
        self.created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Waits until the session has no process left, or `limit` passes.
    async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.changed.notified();
            if self.pids().is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.pids().is_empty();
            }
        }
    }
}

/// Why a start in a session failed.
#[derive(Debug)]
pub enum SpawnOutcome {
    /// The session is being ended.
    Ending,
    /// The session was adopted after a restart and holds no logon session to start in.
    Adopted,
    /// The logon session refused.
    Logon(deputy::LogonError),
    /// The spawn failed.
    Spawn(deputy::SpawnError),
}

/// All sessions, with the indexes a start consults, so that its cost does not grow with the
/// number of sessions.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Indexed>,
    /// Where each session's record is kept; none in tests of the registry alone.
    store: OnceLock<Arc<Store>>,
}

#[derive(Debug, Default)]
struct Indexed {
    sessions: HashMap<String, Arc<Session>>,
    /// Sessions per uid their processes run as (for sessions_per_user).
    per_user: HashMap<u32, usize>,
    /// Each owner's shared peer session.
    shared: HashMap<u32, Arc<Session>>,
}

impl Indexed {
    fn insert(&mut self, session: Arc<Session>) {
        *self.per_user.entry(session.uid).or_default() += 1;
        if session.shared {
            self.shared.insert(session.owner, session.clone());
        }
        self.sessions.insert(session.id.clone(), session);
    }
}

impl Registry {
    /// Keeps a record of each session from now on in `store` (once).
    pub fn keep_records(&self, store: Store) {
        let _ = self.store.set(Arc::new(store));
    }

    fn track(&self, session: &Session) {
        if let Some(store) = self.store.get() {
            let _ = session.store.set(store.clone());
            session.save();
        }
    }

    /// Adds a session.
    pub fn insert(&self, session: Arc<Session>) {
        self.track(&session);
        lock(&self.inner).insert(session);
    }

    /// The session `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        lock(&self.inner).sessions.get(id).cloned()
    }

    /// Every session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut sessions: Vec<_> = lock(&self.inner).sessions.values().cloned().collect();
        sessions.sort_by_key(|s| s.created);
        sessions
    }

    /// Sessions whose processes run as `uid`.
    pub fn count_for_user(&self, uid: u32) -> usize {
        lock(&self.inner).per_user.get(&uid).copied().unwrap_or(0)
    }

    /// The `peer` session of `uid`, created from `token` when there is none.
    pub fn peer_session(&self, owner: u32, token: &Token) -> std::io::Result<Arc<Session>> {
        let mut inner = lock(&self.inner);
        // Only the shared one: a kept session, or one holding delegated tickets, is its run's
        // own and must not take in another run's process.
        if let Some(session) = inner.shared.get(&owner)
            && !lock(&session.state).ending
        {
            return Ok(session.clone());
        }
        let mut session = Session::new("peer", owner, token.clone(), None, false)?;
        session.shared = true;
        let session = Arc::new(session);
        self.track(&session);
        inner.insert(session.clone());
        Ok(session)
    }

    /// Takes `id` out of the registry and marks it ending; `None` if it is gone already, or
    /// if `only_unused` and it has a process or a start pending (checked under the registry's
    /// lock, which a new start into the shared peer session takes too).
    fn take(&self, id: &str, only_unused: bool) -> Option<Arc<Session>> {
        let mut inner = lock(&self.inner);
        if only_unused && !lock(&inner.sessions.get(id)?.state).unused() {
            return None;
        }
        let session = inner.sessions.remove(id)?;
        if let Some(count) = inner.per_user.get_mut(&session.uid) {
            *count -= 1;
            if *count == 0 {
                inner.per_user.remove(&session.uid);
            }
        }
        if inner
            .shared
            .get(&session.owner)
            .is_some_and(|shared| Arc::ptr_eq(shared, &session))
        {
            inner.shared.remove(&session.owner);
        }
        lock(&session.state).ending = true;
        drop(inner);
        Some(session)
    }

    /// Sessions idle for longer than `timeout`.
    pub fn idle(&self, timeout: Duration) -> Vec<String> {
        lock(&self.inner)
            .sessions
            .values()
            .filter(|s| s.idle_for(timeout))
            .map(|s| s.id.clone())
            .collect()
    }
}

/// How a session ended, for the audit line.
#[derive(Debug)]
pub struct Ended {
    /// The session.
    pub session: Arc<Session>,
    /// Processes that had to be killed after the grace time.
    pub killed: usize,
    /// The PAM close failed (the session is ended all the same).
    pub close_error: Option<String>,
    /// Grants revoked (shared X11 grants only when this was their last session), and the
    /// revocations that failed.
    pub revoked: Vec<String>,
    /// Grants that could not be revoked, with the reason.
    pub revoke_errors: Vec<String>,
}

/// Ends session `id`: SIGTERM to its processes, SIGKILL after `grace`, then the PAM session is
/// closed. `None` if no such session exists (any more).
pub async fn end(registry: &Registry, id: &str, grace: Duration) -> Option<Ended> {
    finish(registry.take(id, false)?, grace).await
}

/// Ends session `id` if it has no process and no start pending (its last process ended, or
/// it has been idle): `None` if it has one by now, or is gone. A start that reserved its place
/// in the session a moment earlier is not left in an ending session.
pub async fn end_unused(registry: &Registry, id: &str, grace: Duration) -> Option<Ended> {
    finish(registry.take(id, true)?, grace).await
}

async fn finish(session: Arc<Session>, grace: Duration) -> Option<Ended> {
    let mut killed = 0;
    if !session.pids().is_empty() {
        session.signal_all(Signal::TERM);
        if !session.drained(grace).await {
            killed = session.pids().len();
            session.signal_all(Signal::KILL);
            session.drained(Duration::from_secs(5)).await;
        }
    }
    let logon = lock(&session.logon).take();
    let close_error = match logon {
        // Without a PAM session (a trusted logon's account check) there is nothing to wait for.
        Some(logon) if !logon.holds_pam_session() => logon.logoff().err().map(|e| e.to_string()),
        Some(logon) => tokio::task::spawn_blocking(move || logon.logoff())
            .await
            .map_err(|join| join.to_string())
            .and_then(|result| result.map_err(|e| e.to_string()))
            .err(),
        None => None,
    };
    // Grants last: PAM is closed, no process of the session is left to use them.
    let grants = std::mem::take(&mut *lock(&session.grants));
    // Most sessions hold no grant: do not wake a blocking thread for nothing.
    let (revoked, revoke_errors) = if grants.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        revoke(grants).await
    };
    // Last: until everything above is done, a restarted daemon would find it and finish it.
    session.forget_record();
    Some(Ended {
        session,
        killed,
        close_error,
        revoked,
        revoke_errors,
    })
}

/// Revokes `grants` (off the runtime: X11 and the file system may block): the names of those
/// revoked, and the failures.
async fn revoke(grants: Vec<Grant>) -> (Vec<String>, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let (mut revoked, mut errors) = (Vec::new(), Vec::new());
        for grant in grants {
            let name = grant.describe();
            let result = match grant {
                // Still shared by another session: that one revokes it.
                Grant::X11(shared) if Arc::strong_count(&shared) > 1 => continue,
                Grant::X11(shared) => shared.revoke(),
                Grant::Acl(acl) => acl.revoke().map_err(|e| e.to_string()),
                Grant::Tickets(cache) => {
                    drop(cache);
                    Ok(())
                }
                Grant::Recorded(record) => record.revoke(),
            };
            match result {
                Ok(()) => revoked.push(name),
                Err(reason) => errors.push(format!("{name}: {reason}")),
            }
        }
        (revoked, errors)
    })
    .await
    .unwrap_or_default()
}

/// Follows `child` until it ends: stops and continues (learned from SIGCHLD, which `changes`
/// counts) go to `events` as they happen; the exit (the pidfd becomes readable) reaps it and
/// removes it from `session`. Returns the status, and whether the session is now over (no
/// process left and not kept).
pub async fn wait_exit(
    session: &Session,
    child: &Child,
    mut changes: tokio::sync::watch::Receiver<u64>,
    events: tokio::sync::mpsc::UnboundedSender<deputy::ChildEvent>,
) -> (std::io::Result<ExitStatus>, bool) {
    let status = async {
        let fd = deputy_os::async_fd(child.pidfd().try_clone_to_owned()?, Interest::READABLE)?;
        loop {
            while let Some(event) = child.try_wait_event()? {
                if let deputy::ChildEvent::Exited(status) = event {
                    return Ok(status);
                }
                let _ = events.send(event);
            }
            tokio::select! {
                ready = fd.readable() => ready?.clear_ready(),
                changed = changes.changed() => {
                    if changed.is_err() {
                        // No more SIGCHLD news (shutting down): the pidfd still tells the exit.
                        fd.readable().await?.clear_ready();
                    }
                }
            }
        }
    }
    .await;
    let over = session.remove(child.pid().as_raw_nonzero().get());
    (status, over)
}

/// Follows `pidfd`, a process adopted after a restart, until it ends (its pidfd becomes
/// readable: it is not our child, so there is no status to reap), and removes it from
/// `session`. Returns whether the session is now over.
pub async fn wait_adopted(session: &Session, pid: i32, pidfd: Arc<OwnedFd>) -> bool {
    if let Ok(fd) = pidfd
        .try_clone()
        .and_then(|fd| deputy_os::async_fd(fd, Interest::READABLE))
    {
        let _ = fd.readable().await;
    }
    session.remove(pid)
}
