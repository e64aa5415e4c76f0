//! The daemon's end of a session worker: start it, run the logon with the caller's
//! conversation, hand it starts, close the session.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use deputy_os::Pid;
use deputy_os::exec::{ChildStage, SpawnFailure, Spawned};
use deputy_os::pam::{Conversation, Echo, PamError};

use super::MAX_SECRET;
use super::error::LogonError;
use super::wire::{self, FromWorker, ToWorker};
use crate::spawn::{Prepared, SpawnError, SpawnRequest};
use crate::token::Token;
use crate::{Child, spawn};

pub(crate) enum WorkerLogonError {
    Pam(PamError),
    UserChanged(String),
    AnswerTooLong,
    Io(&'static str, io::Error),
    TimedOut,
}

pub(crate) enum CloseError {
    Pam(PamError),
    Io(io::Error),
}

/// How long a worker has to exit once its socket is closed.
const REAP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The daemon's end of a session worker.
#[derive(Debug)]
pub(crate) struct Worker {
    socket: OwnedFd,
    process: Option<Child>,
}

/// What the worker inherits of this process's environment (it starts from a clean one): what
/// PAM modules read from it. `KRB5_CONFIG` and `KRB5_KTNAME` point pam_krb5 at a realm's
/// configuration and keytab other than /etc/krb5.conf and /etc/krb5.keytab; the locale
/// variables choose the language of the stack's prompts.
const WORKER_ENVIRONMENT: [&str; 5] = ["KRB5_CONFIG", "KRB5_KTNAME", "LANG", "LC_ALL", "TZ"];

impl Worker {
    /// Starts the worker binary as this process itself, with its socket as fd 3.
    /// `service` lets the worker load that PAM stack before the logon request arrives.
    ///
    /// `timeout` bounds every wait for the worker's next message: a PAM module that hangs ends
    /// the logon (or start, or logoff) with an error instead of holding the caller forever.
    pub(crate) fn launch(
        path: &std::path::Path,
        service: &str,
        timeout: std::time::Duration,
    ) -> Result<Worker, LogonError> {
        let (ours, theirs) =
            wire::socket_pair().map_err(LogonError::worker("create its socket"))?;
        rustix::net::sockopt::set_socket_timeout(
            &ours,
            rustix::net::sockopt::Timeout::Recv,
            Some(timeout),
        )
        .map_err(|e| LogonError::Worker {
            what: "set its timeout",
            source: e.into(),
        })?;
        let me = Token::current()?;
        let mut request = SpawnRequest::new(path.as_os_str())
            .args(["--service", service])
            .fd(3, theirs);
        for name in WORKER_ENVIRONMENT {
            if let Some(value) = std::env::var_os(name) {
                request = request.env(name, value);
            }
        }
        if let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() {
            request = request.stderr(stderr);
        }
        let process = spawn(&me, request)?;
        Ok(Worker {
            socket: ours,
            process: Some(process),
        })
    }

    fn send(&self, message: &ToWorker, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        wire::send(self.socket.as_fd(), message.encode().as_slice(), fds)
    }

    fn recv(&self) -> io::Result<(FromWorker, Vec<OwnedFd>)> {
        match wire::recv(self.socket.as_fd())? {
            Some((record, fds)) => Ok((FromWorker::decode(&record)?, fds)),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the worker exited",
            )),
        }
    }

    /// Runs the logon in the worker, relaying its conversation; returns PAM's environment.
    pub(crate) fn log_on(
        &mut self,
        start: wire::Start,
        conversation: &mut dyn Conversation,
    ) -> Result<Vec<(OsString, OsString)>, WorkerLogonError> {
        let io = |what| move |err| WorkerLogonError::Io(what, err);
        self.send(&ToWorker::Start(start), &[])
            .map_err(io("send the logon"))?;
        loop {
            let (message, _) = self.recv().map_err(|err| {
                if err.kind() == io::ErrorKind::WouldBlock {
                    WorkerLogonError::TimedOut
                } else {
                    WorkerLogonError::Io("run the logon", err)
                }
            })?;
            match message {
                FromWorker::Prompt { echo_off, text } => {
                    tracing::trace!(prompt = %text, echo_off, "PAM asks");
                    let echo = if echo_off { Echo::Off } else { Echo::On };
                    let answer = conversation.prompt(&text, echo);
                    if answer.as_ref().is_some_and(|a| a.len() > MAX_SECRET) {
                        // Refuse the prompt so the worker's PAM call ends, then say why.
                        let _ = self.send(&ToWorker::Answer(None), &[]);
                        return Err(WorkerLogonError::AnswerTooLong);
                    }
                    self.send(&ToWorker::Answer(answer), &[])
                        .map_err(io("answer a prompt"))?;
                }
                FromWorker::Info(text) => conversation.info(&text),
                FromWorker::Error(text) => conversation.error(&text),
                FromWorker::LoggedOn { env, .. } => return Ok(env),
                FromWorker::Failed(error) => return Err(WorkerLogonError::Pam(error)),
                FromWorker::UserChanged(now) => return Err(WorkerLogonError::UserChanged(now)),
                _ => {
                    return Err(WorkerLogonError::Io(
                        "run the logon",
                        wire::protocol_error("unexpected reply"),
                    ));
                }
            }
        }
    }

    pub(crate) fn spawn(&mut self, prepared: Prepared) -> Result<Child, LogonError> {
        let plan = &prepared.plan;
        let message = ToWorker::Spawn(wire::Plan {
            argv: plan.argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            envp: plan.envp.iter().map(|e| e.as_bytes().to_vec()).collect(),
            targets: plan.fds.iter().map(|(target, _)| *target).collect(),
            uid: plan.uid.as_raw(),
            gid: plan.gid.as_raw(),
            groups: plan
                .groups
                .as_ref()
                .map(|groups| groups.iter().map(|g| g.as_raw()).collect()),
            rlimits: plan
                .rlimits
                .iter()
                .map(|(resource, limit)| {
                    (
                        wire::resource_index(*resource),
                        limit.current,
                        limit.maximum,
                    )
                })
                .collect(),
            umask: plan.umask.map(|mode| mode.as_raw_mode()),
            program_is_script: plan.program_is_script,
            controlling_tty: plan.controlling_tty,
        });
        let fds: Vec<BorrowedFd<'_>> = [plan.program.as_fd(), plan.cwd.as_fd()]
            .into_iter()
            .chain(plan.fds.iter().map(|(_, fd)| fd.as_fd()))
            .collect();
        if fds.len() > wire::MAX_FDS {
            return Err(SpawnError::InvalidRequest {
                what: "descriptors".into(),
                reason: format!("more than {} in one start", wire::MAX_FDS - 2),
            }
            .into());
        }
        self.send(&message, &fds).map_err(|source| {
            if source.kind() == io::ErrorKind::InvalidInput {
                LogonError::Spawn(SpawnError::InvalidRequest {
                    what: "argv and environment".into(),
                    reason: format!("{source}"),
                })
            } else {
                LogonError::Worker {
                    what: "send a start",
                    source,
                }
            }
        })?;
        let (reply, mut fds) = self.recv().map_err(LogonError::worker("start a process"))?;
        match reply {
            FromWorker::Spawned { pid } => {
                let pidfd = fds.pop().ok_or_else(|| LogonError::Worker {
                    what: "start a process",
                    source: wire::protocol_error("no pidfd"),
                })?;
                let pid = Pid::from_raw(pid).ok_or_else(|| LogonError::Worker {
                    what: "start a process",
                    source: wire::protocol_error("bad pid"),
                })?;
                Ok(prepared.into_child(Spawned { pid, pidfd }))
            }
            FromWorker::SpawnFailed {
                stage,
                errno,
                rlimit_index,
            } => {
                let failure = SpawnFailure {
                    stage: ChildStage::from_raw(stage).unwrap_or(ChildStage::Plan),
                    error: io::Error::from_raw_os_error(errno),
                    rlimit: rlimit_index.and_then(|i| wire::resource_from_index(i).ok()),
                };
                Err(prepared.failure(failure).into())
            }
            _ => Err(LogonError::Worker {
                what: "start a process",
                source: wire::protocol_error("unexpected reply"),
            }),
        }
    }

    /// Asks the worker to end the session and waits for it to exit.
    /// `Closed` comes after `pam_end`, so the session is over when this returns; the worker's
    /// exit (freeing its memory takes a few hundred microseconds) is awaited on another
    /// thread.
    pub(crate) fn close(mut self) -> Result<(), CloseError> {
        let result = self.send(&ToWorker::Close, &[]).and_then(|()| self.recv());
        if let Some(process) = self.process.take() {
            // Without a thread to be had, it is reaped here: slower, but no zombie.
            let process = std::sync::Arc::new(process);
            let reaper = std::sync::Arc::clone(&process);
            let spawned = std::thread::Builder::new()
                .name("deputy-reap".into())
                .spawn(move || reaper.wait());
            if spawned.is_err() {
                let _ = process.wait();
            }
        }
        match result {
            Ok((FromWorker::Closed(errors), _)) => match errors.into_iter().next() {
                Some(error) => Err(CloseError::Pam(error)),
                None => Ok(()),
            },
            Ok(_) => Err(CloseError::Io(wire::protocol_error(
                "unexpected reply to Close",
            ))),
            Err(err) => Err(CloseError::Io(err)),
        }
    }

    /// Ends a worker whose logon failed: a worker that timed out is stuck in a PAM module and
    /// is killed at once; any other is asked to finish.
    pub(crate) fn end_after(&mut self, err: &WorkerLogonError) {
        if matches!(err, WorkerLogonError::TimedOut)
            && let Some(process) = &self.process
        {
            let _ = process.signal(deputy_os::Signal::KILL);
        }
        self.reap();
    }

    /// Whether the worker process still runs (a spare may have been killed while it waited).
    pub(crate) fn is_alive(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|process| matches!(process.try_wait(), Ok(None)))
    }

    /// Closes our end and waits for the worker process to exit; a worker that does not exit
    /// within [`REAP_GRACE`] (a PAM module hangs) is killed.
    pub(crate) fn reap(&mut self) {
        // Closing the socket tells a worker still in a session to end it and exit.
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Both);
        if let Some(process) = self.process.take() {
            let pidfd = process.pidfd();
            let mut pollfd = [rustix::event::PollFd::new(
                &pidfd,
                rustix::event::PollFlags::IN,
            )];
            let grace = rustix::event::Timespec {
                tv_sec: REAP_GRACE.as_secs() as i64,
                tv_nsec: 0,
            };
            if !matches!(rustix::event::poll(&mut pollfd, Some(&grace)), Ok(1)) {
                let _ = process.signal(deputy_os::Signal::KILL);
            }
            let _ = process.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.reap();
    }
}
