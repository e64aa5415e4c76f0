//! `deputy`, the launcher: the command people run.
//!
//! It is built without libc and without std (origin starts it, rustix makes its system calls),
//! because a process that links glibc pays about 0.3 ms at every start — glibc's CPU and cache
//! probes are trapped CPUID instructions on a virtual machine — and a whole
//! `deputy run -- /bin/true` is about 1.5 ms. It serves the plain, non-interactive
//! `deputy run` lines itself ([`run`]): as yourself, as another user when root and the policy
//! trusts it, in a session of yours, or with `--password-stdin`. Every other line — another
//! subcommand, `--help`, `--remote`, a terminal for the command, a password to prompt for, a
//! line it does not read exactly as clap would — it hands, unchanged, to the full CLI,
//! `deputy-cli`, installed next to it ([`hand_over`]).
//!
//! What both must agree on (the plain line's grammar, the calls and replies, the exit codes)
//! is one crate, deputy-quick; deputy-cli's tests hold the grammar to clap's, and the end-to-end
//! tests run through this program.

#![no_std]
#![no_main]

extern crate alloc;
// Its `_start` is the program's entry; nothing else names it.
extern crate origin;

mod run;
mod sys;

use alloc::ffi::CString;
use alloc::format;
use alloc::vec::Vec;

use deputy_quick::exit::Failure;
use deputy_quick::line::{self, Plain};

/// The full CLI's file name, in the launcher's own directory.
const FULL_CLI: &str = "deputy-cli";

/// The launcher: returns the exit code.
fn main(start: &sys::Start) -> u8 {
    let words = start.args.iter().skip(1).map(|word| word.to_str().ok());
    let socket_env = start
        .env
        .iter()
        .find_map(|var| var.to_bytes().strip_prefix(b"DEPUTY_SOCKET="))
        .map(|value| core::str::from_utf8(value).ok());
    match line::parse(words, socket_env) {
        Some(plain) if ours(&plain) => run::run(&plain),
        _ => hand_over(start),
    }
}

/// Whether the launcher serves `plain` itself: not when the command gets a terminal (raw
/// mode and the relay are the full CLI's), not when a password must be prompted for, and not
/// when the command's first word looks like an option (the full CLI tells `--remote` and its
/// company, misplaced after `run`, from a command that starts with `--`).
fn ours(plain: &Plain) -> bool {
    let prompt =
        plain.user.is_some() && !plain.password_stdin && !rustix::process::geteuid().is_root();
    let terminal = plain.pty
        || (!plain.no_pty
            && rustix::termios::isatty(sys::stdin())
            && rustix::termios::isatty(sys::stdout()));
    let option_like = plain
        .command
        .first()
        .is_some_and(|word| word.starts_with("--"));
    !(prompt || terminal || option_like)
}

/// Replaces the launcher with the full CLI, same arguments, same environment.
fn hand_over(start: &sys::Start) -> u8 {
    let failure = match full_cli() {
        Ok(path) => {
            let err = start.exec(&path);
            Failure::Other(format!(
                "cannot run {}: {} (deputy-cli is installed next to deputy)",
                path.to_string_lossy(),
                run::describe(err)
            ))
        }
        Err(failure) => failure,
    };
    run::fail(&failure)
}

/// `deputy-cli` in the directory this program was started from.
fn full_cli() -> Result<CString, Failure> {
    let exe = rustix::fs::readlink("/proc/self/exe", Vec::new()).map_err(|err| {
        Failure::Other(format!(
            "cannot find deputy-cli: /proc/self/exe: {}",
            run::describe(err)
        ))
    })?;
    let exe = exe.as_bytes();
    let dir = &exe[..exe.iter().rposition(|&b| b == b'/').unwrap_or(0)];
    let mut path = Vec::with_capacity(dir.len() + 1 + FULL_CLI.len());
    path.extend_from_slice(dir);
    path.push(b'/');
    path.extend_from_slice(FULL_CLI.as_bytes());
    CString::new(path).map_err(|_| Failure::Other("cannot find deputy-cli".into()))
}
