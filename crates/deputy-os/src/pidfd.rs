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

/// Whether the process has ended (its pidfd is readable), without reaping it or waiting.
///
/// # Errors
/// What `poll` reports.
pub fn has_ended(pidfd: impl AsFd) -> io::Result<bool> {
    let mut polled = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let ready = rustix::event::poll(&mut polled, Some(&rustix::event::Timespec::default()))?;
    Ok(ready > 0)
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

/// The start time of process `pid`, in clock ticks since boot (field 22 of `/proc/PID/stat`):
/// with the pid, it names one process across a pid's reuse.
///
/// # Errors
/// `ENOENT` when there is no such process; `InvalidData` when the file does not parse.
pub fn start_time(pid: crate::Pid) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))?;
    // The command name (field 2) may hold spaces and parentheses: count from its last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed /proc/PID/stat"))
}

/// Now, on the clock and in the unit of [`start_time`] (CLOCK_BOOTTIME in clock ticks): a
/// process started between two readings has a start time between them, both included. Two
/// readings around a spawn name the process without reading `/proc` (a vDSO call, no system
/// call).
pub fn boot_ticks() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let hz = rustix::param::clock_ticks_per_second();
    let (secs, nanos) = (
        u64::try_from(now.tv_sec).unwrap_or(0),
        u64::try_from(now.tv_nsec).unwrap_or(0),
    );
    secs * hz + nanos * hz / 1_000_000_000
}

/// A pidfd for the running process `pid` if it is still the one that started between
/// `earliest` and `latest` (see [`boot_ticks`] and [`start_time`]); `None` if it has ended,
/// or its pid now names another process. For a process that is not our child (a daemon's
/// after a restart): it can be signalled and watched (the pidfd becomes readable when it
/// exits), not reaped.
///
/// # Errors
/// What `pidfd_open(2)` or reading `/proc` fails with, but for the process being gone.
pub fn adopt(
    pid: crate::Pid,
    earliest: u64,
    latest: u64,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(pidfd) => pidfd,
        Err(rustix::io::Errno::SRCH) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    // The pidfd pins the process: if the start time still matches now, it is the one meant,
    // and stays so for as long as the pidfd is open.
    match start_time(pid) {
        Ok(ticks) if (earliest..=latest).contains(&ticks) => Ok(Some(pidfd)),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_adopted_only_by_its_own_start_time() {
        let before = boot_ticks();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let after = boot_ticks();
        let pid = crate::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let ticks = start_time(pid).unwrap();
        assert!(
            (before..=after).contains(&ticks),
            "{before} ≤ {ticks} ≤ {after}"
        );
        let later = adopt(pid, after + 1, after + 2).unwrap();
        assert!(later.is_none(), "a process that started later");
        let earlier = adopt(pid, 0, ticks - 1).unwrap();
        assert!(earlier.is_none(), "a process that started earlier");
        let pidfd = adopt(pid, before, after)
            .unwrap()
            .expect("the same process");
        send_signal(&pidfd, Signal::KILL).unwrap();
        child.wait().unwrap();
        assert!(adopt(pid, before, after).unwrap().is_none(), "reaped");
    }

    #[test]
    fn the_start_time_survives_odd_command_names() {
        // Field 2 is "(name)"; a name with ") 1 2" in it must not shift the fields.
        // Copied by cp: a file this process wrote could still be open for writing in a child
        // another test thread is cloning (ETXTBSY).
        let dir = std::env::temp_dir().join(format!("deputy-os-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd = dir.join("a) 1 2 (b");
        let copied = std::process::Command::new("cp")
            .arg("/bin/sleep")
            .arg(&odd)
            .status();
        assert!(copied.unwrap().success());
        let mut child = std::process::Command::new(&odd).arg("30").spawn().unwrap();
        let pid = crate::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let ticks = start_time(pid).unwrap();
        let own = start_time(rustix::process::getpid()).unwrap();
        assert!(ticks >= own, "{ticks} < {own}");
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
