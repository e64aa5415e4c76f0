//! `deputy run` on a terminal: our terminal in raw mode, both directions relayed to the pty
//! leader that deputyd passed back, window size forwarded, and the terminal restored on every
//! way out (the command's exit, a forwarded signal, an error, a panic — the guard's `Drop`).
//!
//! ```text
//!  our stdin ──thread──▶ leader ──(pty)──▶ the command's terminal
//!  our stdout ◀─thread── leader ◀─(pty)── the command's output
//!  SIGWINCH ─▶ ResizePty{pid, rows, cols}
//! ```
//! Typed keys go to the pty as bytes, so Ctrl-C, Ctrl-Z and Ctrl-D act inside the session (its
//! line discipline turns them into SIGINT, SIGTSTP and EOF for its foreground job), not on us.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use rustix::termios::{OptionalActions, Termios};

/// Whether `deputy run` should use a terminal: asked for, or both stdin and stdout are terminals.
pub fn wanted(pty: bool, no_pty: bool) -> bool {
    pty || (!no_pty
        && rustix::termios::isatty(rustix::stdio::stdin())
        && rustix::termios::isatty(rustix::stdio::stdout()))
}

/// Our terminal's size, if stdout (or stdin) is one.
pub fn size() -> Option<(u16, u16)> {
    let winsize = rustix::termios::tcgetwinsize(rustix::stdio::stdout())
        .or_else(|_| rustix::termios::tcgetwinsize(rustix::stdio::stdin()))
        .ok()?;
    (winsize.ws_row > 0 && winsize.ws_col > 0).then_some((winsize.ws_row, winsize.ws_col))
}

/// Our terminal in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode — only when it is one and we are in its foreground
    /// process group: changing a terminal from the background stops us with SIGTTOU (the hang
    /// sudo has had reports about).
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !rustix::termios::isatty(&stdin) {
            return None;
        }
        let foreground = rustix::termios::tcgetpgrp(&stdin).ok()?;
        if foreground != rustix::process::getpgrp() {
            return None;
        }
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        // TCSADRAIN, not TCSAFLUSH: keys typed ahead belong to the command, not to the bin.
        rustix::termios::tcsetattr(&stdin, OptionalActions::Drain, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(std::io::stdin(), OptionalActions::Drain, &self.saved);
    }
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(0) => return false,
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// The suspend character (Ctrl-Z) of the pty, when typing it would stop the command itself:
/// the terminal generates signals (ISIG) and its foreground process group is the command's.
/// A shell running jobs in the pty is left to handle Ctrl-Z for its jobs.
fn suspend_key(leader: &OwnedFd, command: i32) -> Option<u8> {
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

/// Starts relaying between our stdio and `leader`. Ctrl-Z meant for the command itself is not
/// passed on but turned into a SIGTSTP on `signals` (see `run`): the kernel would discard the
/// terminal's own. The returned receiver yields once the command's output has ended (the last
/// follower closed).
pub fn relay(
    leader: OwnedFd,
    command: i32,
    signals: tokio::sync::mpsc::UnboundedSender<i32>,
) -> std::io::Result<mpsc::Receiver<()>> {
    let input_leader = leader.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match rustix::io::read(std::io::stdin(), &mut buf) {
                Ok(0) => {
                    // Our input ended (a pipe): the terminal's EOF character tells the command.
                    write_all(&input_leader, b"\x04");
                    return;
                }
                Ok(n) => {
                    let mut chunk = &buf[..n];
                    if let Some(key) = suspend_key(&input_leader, command)
                        && let Some(at) = chunk.iter().position(|b| *b == key)
                    {
                        if !write_all(&input_leader, &chunk[..at]) {
                            return;
                        }
                        let _ = signals.send(rustix::process::Signal::TSTP.as_raw());
                        chunk = &chunk[at + 1..];
                    }
                    if !write_all(&input_leader, chunk) {
                        return;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return,
            }
        }
    });
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match rustix::io::read(&leader, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if !write_all(std::io::stdout(), &buf[..n]) {
                        break;
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                // EIO: every follower is closed, the command and its children are done.
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
    Ok(finished)
}

/// Waits a little for the command's last output to reach us.
pub fn drain(finished: &mpsc::Receiver<()>) {
    let _ = finished.recv_timeout(Duration::from_millis(500));
}
