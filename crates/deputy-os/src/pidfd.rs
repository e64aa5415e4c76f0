//! Waiting for and signalling a process through its pidfd.
//!
//! A pidfd names one process for as long as the fd is open, so a signal or a wait can never hit
//! another process that happened to get the same pid after the first one was reaped.

use std::io;
use std::os::fd::AsFd;

use rustix::process::{WaitId, WaitIdOptions, WaitIdStatus};

use crate::Signal;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal with this number ended it.
    Signaled(i32),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The shell's convention: the exit code, or 128 plus the signal number.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }

    fn from_waitid(status: &WaitIdStatus) -> io::Result<Self> {
        if let Some(code) = status.exit_status() {
            return Ok(ExitStatus::Exited(code));
        }
        if let Some(signal) = status.terminating_signal() {
            return Ok(ExitStatus::Signaled(signal));
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "waitid reported neither an exit nor a signal",
        ))
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED)`: blocks until the process ends, and reaps it.
///
/// # Errors
/// `ECHILD` when the process is not a child of the caller or was already reaped.
pub fn wait(pidfd: impl AsFd) -> io::Result<ExitStatus> {
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), WaitIdOptions::EXITED) {
            Ok(Some(status)) => return ExitStatus::from_waitid(&status),
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WNOHANG)`: the status if the process has ended (and reaps
/// it), `None` while it runs.
///
/// # Errors
/// As [`wait`].
pub fn try_wait(pidfd: impl AsFd) -> io::Result<Option<ExitStatus>> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
    match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options)? {
        // With WNOHANG the kernel zeroes the siginfo when nothing has ended: no signal number.
        Some(status) if status.raw_signo() != 0 => Ok(Some(ExitStatus::from_waitid(&status)?)),
        _ => Ok(None),
    }
}

/// A change of state of a child process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEvent {
    /// It ended (and has been reaped).
    Exited(ExitStatus),
    /// A signal stopped it (Ctrl-Z's SIGTSTP, SIGSTOP, SIGTTIN, SIGTTOU).
    Stopped(i32),
    /// SIGCONT resumed it.
    Continued,
}

/// `waitid(P_PIDFD, pidfd, WEXITED | WSTOPPED | WCONTINUED | WNOHANG)`: the next change of
/// state, if any. An exit reaps the process.
///
/// # Errors
/// As [`wait`].
pub fn try_wait_event(pidfd: impl AsFd) -> io::Result<Option<ChildEvent>> {
    let options = WaitIdOptions::EXITED
        | WaitIdOptions::STOPPED
        | WaitIdOptions::CONTINUED
        | WaitIdOptions::NOHANG;
    match rustix::process::waitid(WaitId::PidFd(pidfd.as_fd()), options)? {
        Some(status) if status.raw_signo() != 0 => {
            if let Some(signal) = status.stopping_signal() {
                Ok(Some(ChildEvent::Stopped(signal)))
            } else if status.continued() {
                Ok(Some(ChildEvent::Continued))
            } else {
                Ok(Some(ChildEvent::Exited(ExitStatus::from_waitid(&status)?)))
            }
        }
        _ => Ok(None),
    }
}

/// `pidfd_send_signal(2)`.
///
/// # Errors
/// `ESRCH` when the process has ended; `EPERM` without the right to signal it.
pub fn send_signal(pidfd: impl AsFd, signal: Signal) -> io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, signal)?)
}
