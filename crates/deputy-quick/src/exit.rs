//! deputy's exit codes, chosen like env(1) and sudo: 126 and 127 as a shell would, 125 for the
//! tool's own failure, and two more below them for refusals a script may want to tell apart.

use alloc::string::String;
use core::fmt;

use deputy_proto::Error;

/// The policy refused the request (or the session is not yours, or it needs a local caller
/// and came over TLS).
pub const POLICY: u8 = 123;
/// The logon was refused: wrong password, locked, expired, locked out.
pub const LOGON: u8 = 124;
/// Any other failure of deputy itself (daemon unreachable, bad arguments, internal error).
pub const ERROR: u8 = 125;
/// The command exists but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub const NOT_FOUND: u8 = 127;

/// The exit code for an error of the daemon.
pub fn code_for(err: &Error) -> u8 {
    match err {
        Error::PermissionDenied { .. }
        | Error::NoSuchSession { .. }
        | Error::NoSuchProcess { .. }
        | Error::NoPeerIdentity { .. } => POLICY,
        Error::AuthenticationFailed { .. }
        | Error::AccountLocked { .. }
        | Error::AccountExpired { .. }
        | Error::PasswordExpired { .. }
        | Error::LockedOut { .. }
        | Error::LogonRefused { .. }
        | Error::NoCredentials { .. } => LOGON,
        Error::ExecutableNotAccessible { .. } | Error::WorkdirNotAccessible { .. } => {
            CANNOT_EXECUTE
        }
        Error::ExecutableNotFound { .. } => NOT_FOUND,
        _ => ERROR,
    }
}

/// A failed call: the daemon's named error, or a problem of our own.
#[derive(Debug)]
pub enum Failure {
    /// An `io.deputy` error.
    Deputy(Error),
    /// Anything else, as text.
    Other(String),
}

impl Failure {
    /// The exit code that reports it.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Deputy(err) => code_for(err),
            Failure::Other(_) => ERROR,
        }
    }
}

/// The message printed for it, after `deputy: `.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Deputy(err) => err.fmt(f),
            Failure::Other(message) => f.write_str(message),
        }
    }
}
