//! deputy's exit codes, chosen like env(1) and sudo: 126 and 127 as a shell would, 125 for the
//! tool's own failure, and two more below them for refusals a script may want to tell apart.

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

/// Prints `message` and returns `code`.
pub fn fail(message: &str, code: u8) -> u8 {
    eprintln!("deputy: {message}");
    code
}
