//! Terminals for started processes: the Linux side of giving a logon session access to the
//! interactive desktop (`winsta0\default`).
//!
//! ```text
//!  open_pty(token) ─▶ leader (stays with the server, or is passed to the client)
//!                 └▶ follower /dev/pts/N: owner = the token's user, group tty, mode 0620
//!  SpawnRequest::terminal(follower) ─▶ stdin, stdout, stderr = follower; setsid + TIOCSCTTY
//! ```
//!
//! The follower belongs to the user from the start, as login(1) arranges it: `mesg`, `tty` and
//! `write` behave in the session as they do at a console login.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use rustix::fs::Mode;
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;

use crate::Token;

/// A pseudo-terminal pair.
#[derive(Debug)]
pub struct Pty {
    /// The leader (master) end: what the user's terminal emulator, or a relay, reads and writes.
    pub leader: OwnedFd,
    /// The follower (slave) end: the session's terminal.
    pub follower: OwnedFd,
    /// The follower's path, e.g. `/dev/pts/3`.
    pub path: PathBuf,
}

/// Opens a pty whose follower belongs to `owner` (group `tty`, mode 0620), of `rows` × `cols`
/// when given.
///
/// # Errors
/// When no pty can be allocated, or the follower cannot be given to the user (without
/// `CAP_CHOWN`).
pub fn open_pty(owner: &Token, size: Option<(u16, u16)>) -> io::Result<Pty> {
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let leader = rustix::pty::openpt(flags)?;
    rustix::pty::unlockpt(&leader)?;
    // TIOCGPTPEER opens the follower through the leader: no path lookup that could be raced.
    let follower = rustix::pty::ioctl_tiocgptpeer(&leader, flags)?;
    let path = PathBuf::from(
        rustix::pty::ptsname(&leader, Vec::new())?
            .into_string()
            .unwrap_or_default(),
    );
    let tty_group = deputy_os::account::group_id("tty").unwrap_or(owner.gid());
    rustix::fs::fchown(&follower, Some(owner.uid()), Some(tty_group))?;
    rustix::fs::fchmod(&follower, Mode::from_raw_mode(0o620))?;
    if let Some((rows, cols)) = size {
        resize(leader.as_fd(), rows, cols)?;
    }
    Ok(Pty {
        leader,
        follower,
        path,
    })
}

/// Sets the terminal's size; the kernel sends SIGWINCH to its foreground process group.
///
/// # Errors
/// When `leader` is not a terminal.
pub fn resize(leader: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    Ok(rustix::termios::tcsetwinsize(
        leader,
        Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        },
    )?)
}

/// The suspend character (Ctrl-Z) of the terminal whose leader is `leader`, when typing it
/// would stop `command` itself: the terminal generates signals (ISIG) and its foreground
/// process group is the command's. Such a command leads a session whose parent is outside it,
/// an orphaned process group, for which the kernel discards the terminal's SIGTSTP: whoever
/// relays the keys sends SIGSTOP instead. A shell running jobs on the terminal handles Ctrl-Z
/// for them itself (`None`).
pub fn suspend_key(leader: BorrowedFd<'_>, command: i32) -> Option<u8> {
    let termios = rustix::termios::tcgetattr(leader).ok()?;
    if !termios
        .local_modes
        .contains(rustix::termios::LocalModes::ISIG)
    {
        return None;
    }
    let foreground = rustix::termios::tcgetpgrp(leader).ok()?;
    (foreground.as_raw_nonzero().get() == command)
        .then(|| termios.special_codes[rustix::termios::SpecialCodeIndex::VSUSP])
}
