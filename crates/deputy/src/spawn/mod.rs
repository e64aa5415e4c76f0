//! Starting a process as a token's user: `CreateProcessAsUser`.
//!
//! ```text
//!  spawn(token, request)
//!   ├─ token must be primary                     (else NotPrimary)
//!   ├─ environment from the token + request      (denylist applied, see `env`)
//!   ├─ as the user (Impersonation guard, this thread only):
//!   │    open the working directory, check it may be entered
//!   │    find the program in the user's PATH, open it, check it may be executed
//!   ├─ stdio not given → /dev/null
//!   └─ deputy_os::exec::spawn: clone, setsid, rlimits, fds, setgroups → setresgid →
//!      setresuid, capabilities emptied, drop verified, execveat(the opened program)
//! ```

mod env;
mod program;

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use deputy_os::exec::{ChildStage, ExecPlan, SpawnFailure};
use deputy_os::pidfd::{self, ExitStatus};
use deputy_os::{Mode, Pid, Resource, Rlimit, Signal};

pub use env::{DENIED_NAMES, DENIED_PREFIXES, ROOT_PATH, USER_PATH, is_denied};

use crate::impersonate::{Impersonation, ImpersonationError};
use crate::token::{Token, TokenKind};

/// Why a process could not be started. Each names the user and, where there is one, the path.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Only a primary token can start processes.
    #[error(
        "cannot start a process for {user} from a token of kind {kind}: a primary token is needed (Token::to_primary)"
    )]
    NotPrimary {
        /// The token's user.
        user: String,
        /// Its kind.
        kind: TokenKind,
    },
    /// The request is malformed.
    #[error("invalid {what}: {reason}")]
    InvalidRequest {
        /// Which part of the request.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No directory of the search path holds the program.
    #[error("cannot find {program:?} in PATH {search_path:?} as {user}")]
    ProgramNotFound {
        /// The program name.
        program: OsString,
        /// The user.
        user: String,
        /// The search path used.
        search_path: OsString,
    },
    /// The program exists but the user may not execute it (or it is not a regular file).
    #[error("cannot execute {} as {user}: {source}", path.display())]
    ProgramNotAccessible {
        /// The path that was tried.
        path: PathBuf,
        /// The user.
        user: String,
        /// The errno.
        source: io::Error,
    },
    /// The working directory cannot be entered by the user.
    #[error("cannot enter {} as {user}: {source}", path.display())]
    WorkdirNotAccessible {
        /// The directory.
        path: PathBuf,
        /// The user.
        user: String,
        /// The errno.
        source: io::Error,
    },
    /// Acting as the user, to open the program, failed.
    #[error(transparent)]
    Impersonation(#[from] ImpersonationError),
    /// Opening `/dev/null` for stdio failed.
    #[error("cannot open /dev/null: {0}")]
    DevNull(io::Error),
    /// A resource limit could not be set (raising one above the daemon's hard limit needs
    /// `CAP_SYS_RESOURCE`).
    #[error("cannot set the {resource:?} limit for {user}: {source}")]
    LimitRefused {
        /// The limit.
        resource: Resource,
        /// The user.
        user: String,
        /// The errno.
        source: io::Error,
    },
    /// A step of starting the process failed (in the child, or creating it).
    #[error("cannot {} for {user} ({}): {source}", stage.describe(), path.display())]
    Start {
        /// The step.
        stage: ChildStage,
        /// The user.
        user: String,
        /// The program.
        path: PathBuf,
        /// The errno.
        source: io::Error,
    },
}

/// The test hook's type: called with the opened program's path.
#[cfg(feature = "test-hooks")]
type AfterOpenHook = Box<dyn FnOnce(&Path) + Send>;

/// What to start: program, arguments, environment additions, working directory, descriptors,
/// limits.
///
/// # Example
/// ```no_run
/// use deputy::{SpawnRequest, Token};
///
/// let alice = Token::for_user("dpt-alice")?;           // needs root to act on
/// let child = deputy::spawn(&alice, SpawnRequest::new("id").arg("-Gn").env("LANG", "C.UTF-8"))?;
/// assert!(child.wait()?.success());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SpawnRequest {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    fds: Vec<(RawFd, OwnedFd)>,
    rlimits: Vec<(Resource, Rlimit)>,
    umask: Option<Mode>,
    terminal: Option<OwnedFd>,
    #[cfg(feature = "test-hooks")]
    after_open_hook: Option<AfterOpenHook>,
}

impl std::fmt::Debug for SpawnRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpawnRequest")
            .field("program", &self.program)
            .field("args", &self.args)
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("cwd", &self.cwd)
            .field(
                "fds",
                &self
                    .fds
                    .iter()
                    .map(|(target, _)| target)
                    .collect::<Vec<_>>(),
            )
            .field("rlimits", &self.rlimits)
            .field("umask", &self.umask)
            .finish()
    }
}

impl SpawnRequest {
    /// A request to run `program`, which is also `argv[0]`. A name without a slash is looked up
    /// in the `PATH` the command will have.
    pub fn new(program: impl Into<OsString>) -> Self {
        SpawnRequest {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            fds: Vec::new(),
            rlimits: Vec::new(),
            umask: None,
            terminal: None,
            #[cfg(feature = "test-hooks")]
            after_open_hook: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable. Names on the denylist ([`DENIED_NAMES`],
    /// [`DENIED_PREFIXES`]) are dropped and reported by [`Child::removed_environment`].
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The working directory; by default the user's home, or `/` when the user cannot enter it.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Standard input. Without it the command reads `/dev/null`.
    pub fn stdin(self, fd: impl Into<OwnedFd>) -> Self {
        self.fd(0, fd)
    }

    /// Standard output. Without it the command writes to `/dev/null`.
    pub fn stdout(self, fd: impl Into<OwnedFd>) -> Self {
        self.fd(1, fd)
    }

    /// Standard error. Without it the command writes to `/dev/null`.
    pub fn stderr(self, fd: impl Into<OwnedFd>) -> Self {
        self.fd(2, fd)
    }

    /// Gives the command `fd` as descriptor number `target`. Only the descriptors given this
    /// way (and stdio) are open in the command. A later call for the same number replaces the
    /// earlier one.
    pub fn fd(mut self, target: RawFd, fd: impl Into<OwnedFd>) -> Self {
        self.fds.retain(|(existing, _)| *existing != target);
        self.fds.push((target, fd.into()));
        self
    }

    /// Sets a resource limit in the command (`setrlimit(2)`, before the ids change). Without
    /// `CAP_SYS_RESOURCE` a limit can be lowered but not raised above the daemon's hard limit.
    pub fn rlimit(mut self, resource: Resource, soft: Option<u64>, hard: Option<u64>) -> Self {
        self.rlimits.push((
            resource,
            Rlimit {
                current: soft,
                maximum: hard,
            },
        ));
        self
    }

    /// Runs the command on a terminal: `follower` (see [`crate::pty::open_pty`]) becomes its
    /// stdin, stdout and stderr and its controlling terminal (job control, Ctrl-C, Ctrl-Z work).
    /// Stdio given with [`stdin`](Self::stdin) and the like is replaced.
    pub fn terminal(mut self, follower: impl Into<OwnedFd>) -> Self {
        self.terminal = Some(follower.into());
        self
    }

    /// The command's file mode creation mask.
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(Mode::from_raw_mode(mask));
        self
    }

    /// Test hook: runs after the program was found, opened and checked, right before the
    /// process is created, with the program's path. The tests use it to swap the path.
    #[cfg(feature = "test-hooks")]
    pub fn after_open_hook(mut self, hook: impl FnOnce(&Path) + Send + 'static) -> Self {
        self.after_open_hook = Some(Box::new(hook));
        self
    }
}

/// A started process.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: OwnedFd,
    path: PathBuf,
    removed_env: Vec<String>,
}

impl Child {
    /// The process id (also its session and process-group id).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The pidfd, for waiting in an event loop.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// The program that was executed.
    pub fn program(&self) -> &Path {
        &self.path
    }

    /// Environment names from the request that were dropped by the denylist.
    pub fn removed_environment(&self) -> &[String] {
        &self.removed_env
    }

    /// Waits for the process to end and reaps it.
    ///
    /// # Errors
    /// `ECHILD` if it was already reaped.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        pidfd::wait(&self.pidfd)
    }

    /// The exit status if the process has ended (reaping it), `None` if it still runs.
    ///
    /// # Errors
    /// `ECHILD` if it was already reaped.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        pidfd::try_wait(&self.pidfd)
    }

    /// Whether the process has ended, without reaping it.
    ///
    /// # Errors
    /// What `poll` reports.
    pub fn has_ended(&self) -> io::Result<bool> {
        pidfd::has_ended(&self.pidfd)
    }

    /// The process's next change of state — stopped, continued or ended (then reaped) — if
    /// there is one. The caller learns of changes from SIGCHLD, or from the pidfd becoming
    /// readable (which it does for the exit only).
    ///
    /// # Errors
    /// `ECHILD` if it was already reaped.
    pub fn try_wait_event(&self) -> io::Result<Option<deputy_os::pidfd::ChildEvent>> {
        pidfd::try_wait_event(&self.pidfd)
    }

    /// Sends `signal` to the process through its pidfd.
    ///
    /// # Errors
    /// `ESRCH` once it has been reaped.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        pidfd::send_signal(&self.pidfd, signal)
    }
}

/// Starts `request` as `token`'s user (`CreateProcessAsUser`).
///
/// The process runs with exactly the token's uid, gid and groups, in a session of its own, with
/// no capabilities (unless the user is root), only the descriptors the request names, and an
/// environment built from the token and the request — never the caller's. The program and the
/// working directory are opened as the user, and the opened program is what runs.
///
/// # Errors
/// See [`SpawnError`]: each variant names the user and the path.
///
/// # Example
/// Starting a command as yourself needs no privilege; as another user it needs root (or
/// `CAP_SETUID` and `CAP_SETGID`) and a token from [`Token::for_user`], a peer or a logon.
/// ```
/// use std::io::Read;
/// use deputy::{ExitStatus, SpawnRequest, Token};
///
/// let me = Token::current()?;
/// let (mut output, stdout) = std::io::pipe()?;
/// let child = deputy::spawn(&me, SpawnRequest::new("sh").args(["-c", "echo $USER; exit 3"]).stdout(stdout))?;
/// let mut text = String::new();
/// output.read_to_string(&mut text)?;
/// assert_eq!(text.trim(), me.user());
/// assert_eq!(child.wait()?, ExitStatus::Exited(3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn(token: &Token, request: SpawnRequest) -> Result<Child, SpawnError> {
    let prepared = prepare(token, request, &[])?;
    let spawned =
        deputy_os::exec::spawn(&prepared.plan).map_err(|failure| prepared.failure(failure))?;
    Ok(prepared.into_child(spawned))
}

/// A start that is ready: program and working directory opened as the user, environment and
/// descriptors in place. A logon session hands it to its worker; [`spawn`] runs it here.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub plan: ExecPlan,
    pub path: PathBuf,
    pub user: String,
    pub removed_env: Vec<String>,
}

impl Prepared {
    /// The error for a failed start, naming the user, the program and (for a limit) which one.
    pub(crate) fn failure(&self, failure: SpawnFailure) -> SpawnError {
        let SpawnFailure {
            stage,
            error: source,
            rlimit,
        } = failure;
        let (user, path) = (self.user.clone(), self.path.clone());
        match (stage, rlimit) {
            (ChildStage::Exec, _) => SpawnError::ProgramNotAccessible { path, user, source },
            (ChildStage::Rlimit, Some(resource)) => SpawnError::LimitRefused {
                resource,
                user,
                source,
            },
            _ => SpawnError::Start {
                stage,
                user,
                path,
                source,
            },
        }
    }

    pub(crate) fn into_child(self, spawned: deputy_os::exec::Spawned) -> Child {
        Child {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            path: self.path,
            removed_env: self.removed_env,
        }
    }
}

/// Everything of [`spawn`] up to the clone. `session_env` (from PAM) joins the environment
/// after the account's variables and before the request's.
pub(crate) fn prepare(
    token: &Token,
    request: SpawnRequest,
    session_env: &[(OsString, OsString)],
) -> Result<Prepared, SpawnError> {
    if !token.is_primary() {
        return Err(SpawnError::NotPrimary {
            user: token.user().to_owned(),
            kind: token.kind(),
        });
    }
    let user = token.user();
    let argv = build_argv(&request)?;
    let environment = env::build(token, session_env, &request.env)?;

    let (cwd, program) = {
        let _as_user = Impersonation::begin(token)?;
        let cwd = match &request.cwd {
            Some(dir) => {
                program::open_dir(dir).map_err(|source| SpawnError::WorkdirNotAccessible {
                    path: dir.clone(),
                    user: user.to_owned(),
                    source,
                })?
            }
            None => program::open_dir(token.home())
                .or_else(|_| program::open_dir(Path::new("/")))
                .map_err(|source| SpawnError::WorkdirNotAccessible {
                    path: "/".into(),
                    user: user.to_owned(),
                    source,
                })?,
        };
        let program =
            program::open_program(&request.program, &environment.path, cwd.as_fd(), user)?;
        (cwd, program)
    };

    #[cfg(feature = "test-hooks")]
    if let Some(hook) = request.after_open_hook {
        hook(&program.path);
    }

    let mut fds = request.fds;
    let controlling_tty = request.terminal.is_some();
    if let Some(terminal) = request.terminal {
        fds.retain(|(target, _)| *target > 2);
        for stdio in 0..3 {
            let copy = terminal.try_clone().map_err(|source| SpawnError::Start {
                stage: ChildStage::Fds,
                user: user.to_owned(),
                path: program.path.clone(),
                source,
            })?;
            fds.push((stdio, copy));
        }
    }
    for stdio in 0..3 {
        if !fds.iter().any(|(target, _)| *target == stdio) {
            fds.push((stdio, open_dev_null()?));
        }
    }
    let plan = ExecPlan {
        program: program.fd,
        program_is_script: program.is_script,
        argv,
        envp: environment.entries,
        fds,
        cwd,
        uid: token.uid(),
        gid: token.gid(),
        groups: groups_to_set(token),
        rlimits: request.rlimits,
        umask: request.umask,
        controlling_tty,
        clone_parent: false,
    };
    Ok(Prepared {
        plan,
        path: program.path,
        user: user.to_owned(),
        removed_env: environment.removed,
    })
}

fn build_argv(request: &SpawnRequest) -> Result<Vec<CString>, SpawnError> {
    if request.program.is_empty() {
        return Err(SpawnError::InvalidRequest {
            what: "program".into(),
            reason: "it is empty".into(),
        });
    }
    std::iter::once(&request.program)
        .chain(&request.args)
        .enumerate()
        .map(|(i, arg)| {
            CString::new(arg.as_bytes()).map_err(|_| SpawnError::InvalidRequest {
                what: format!("argv[{i}] {:?}", arg.to_string_lossy()),
                reason: "it contains a NUL byte".into(),
            })
        })
        .collect()
}

/// The groups to give the command: the token's — or, for an unprivileged process starting a
/// command as itself with the groups it already has, none to set, since `setgroups` needs
/// `CAP_SETGID` even for no change.
fn groups_to_set(token: &Token) -> Option<Vec<deputy_os::Gid>> {
    let unchanged = rustix::process::getuid() == token.uid()
        && rustix::process::getgroups().is_ok_and(|current| {
            current.len() == token.groups().len()
                && current.iter().all(|g| token.groups().contains(g))
        });
    if unchanged && !rustix::process::geteuid().is_root() {
        None
    } else {
        Some(token.groups().to_vec())
    }
}

fn open_dev_null() -> Result<OwnedFd, SpawnError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(SpawnError::DevNull)
}
