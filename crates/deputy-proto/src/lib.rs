//! The `io.deputy` Varlink interface: its description ([`DESCRIPTION`], the file
//! `io.deputy.varlink`) and typed calls, replies and errors, shared by deputyd and the CLI.
//! No I/O here, and no `std`: `alloc` is enough, so that the libc-free `deputy` launcher
//! (`launch/`) shares these types with everything else.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod stream;

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// The interface's name.
pub const INTERFACE: &str = "io.deputy";
/// The interface description, served by `org.varlink.service.GetInterfaceDescription`.
pub const DESCRIPTION: &str = include_str!("../io.deputy.varlink");
/// Where deputyd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/deputy/io.deputy";
/// The largest message deputyd accepts.
pub const MAX_MESSAGE: usize = 1024 * 1024;
/// The most descriptors one call may pass.
pub const MAX_FDS: usize = 16;

/// A group of a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The group id.
    pub gid: u32,
    /// Its name, when the group database has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A token, as `GetToken` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Account name.
    pub user: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<Group>,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
    /// `primary` or `impersonation`.
    pub kind: String,
    /// The impersonation level, for an impersonation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// The logon session, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The peer's pid, for a peer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

/// Reply of `GetToken`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GetTokenReply {
    /// Who the daemon sees the caller as.
    pub token: Token,
}

/// Parameters of `Logon`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logon {
    /// The user to log on.
    pub user: String,
    /// The password, inline (prefer `password_fd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Index of a passed pipe holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_fd: Option<u32>,
    /// The logon type's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logon_type: Option<String>,
    /// Keep the session after its last process ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_session: Option<bool>,
}

/// Reply of `Logon`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogonReply {
    /// The new session's id.
    pub session: String,
}

/// Parameters of `BeginLogon`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BeginLogon {
    /// The user to log on.
    pub user: String,
    /// The logon type's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logon_type: Option<String>,
    /// Keep the session after its last process ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_session: Option<bool>,
}

/// Parameters of `AnswerLogon`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerLogon {
    /// The answer, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Index of a passed pipe holding the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_fd: Option<u32>,
}

/// A question from the PAM stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The prompt's text.
    pub text: String,
    /// Whether the answer may be shown as it is typed.
    pub echo: bool,
}

/// Reply of `BeginLogon` and `AnswerLogon`: the next prompt, or the session.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LogonStep {
    /// The next question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<Prompt>,
    /// The session, once the logon is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

/// Parameters of `CreateProcess`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProcess {
    /// `argv`, program first.
    pub argv: Vec<String>,
    /// `NAME=value` entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// A logon session to start it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// A user to start it as (trusted callers, without a password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// With `user`: open a full PAM session of this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logon_type: Option<String>,
    /// Keep the session after its last process ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_session: Option<bool>,
    /// Index of the passed descriptor for stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<u32>,
    /// Index of the passed descriptor for stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<u32>,
    /// Index of the passed descriptor for stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<u32>,
    /// Run the process on a terminal allocated by the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<bool>,
    /// The terminal's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// The terminal's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// An X display to grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x11: Option<X11>,
    /// Sockets to grant by ACL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<String>>,
    /// Delegation: the index of a passed descriptor of the caller's own Kerberos ticket cache
    /// (a FILE cache, opened by the caller), copied into a cache of the process's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_fd: Option<u32>,
}

/// An X display and the caller's credentials for it.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct X11 {
    /// `:N` or `:N.S`.
    pub display: String,
    /// The authorization protocol, e.g. `MIT-MAGIC-COOKIE-1`.
    pub auth_name: String,
    /// The authorization data, hex.
    pub auth_data: String,
}

impl core::fmt::Debug for X11 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("X11")
            .field("display", &self.display)
            .field("auth_name", &self.auth_name)
            .finish_non_exhaustive()
    }
}

/// Parameters of `ResizePty`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizePty {
    /// The process.
    pub pid: i32,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its exit code, if it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

impl Exit {
    /// The shell's convention: the code, or 128 plus the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 255,
        }
    }
}

/// A reply of `CreateProcess`: first the pid (continues), then stops and continues as they
/// happen, then the exit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// The process id.
    pub pid: i32,
    /// The session it runs in.
    pub session: String,
    /// Index of the pidfd passed with this reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidfd: Option<u32>,
    /// Index of the terminal's leader passed with this reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<u32>,
    /// The process was stopped by this signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<i32>,
    /// The process was resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued: Option<bool>,
    /// How it ended (the last reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
}

/// Parameters of `Signal`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Signal {
    /// The process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Every process of this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The signal number.
    pub signal: i32,
}

/// A logon session, as `ListSessions` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: String,
    /// The user it runs as.
    pub user: String,
    /// That user's uid.
    pub uid: u32,
    /// The uid that created it.
    pub owner: u32,
    /// `peer`, `trusted`, or the logon type.
    pub kind: String,
    /// Its running processes.
    pub processes: Vec<i32>,
    /// Its desktop grants.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Whether it outlives its last process.
    pub keep: bool,
    /// When it was created, in seconds since 1970-01-01.
    pub created: u64,
    /// For a session logged on over TLS: the client's address, and the name in its
    /// certificate with mutual TLS (`192.0.2.7:50122 ci-agent-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Reply of `ListSessions`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ListSessionsReply {
    /// The sessions.
    pub sessions: Vec<Session>,
}

/// Parameters of `Logoff`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logoff {
    /// The session to end.
    pub session: String,
}

/// An empty reply.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// The errors of `io.deputy`, serialized as Varlink errors
/// (`{"error": "io.deputy.Name", "parameters": {...}}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "error", content = "parameters")]
#[allow(missing_docs)] // each variant is documented in io.deputy.varlink
pub enum Error {
    #[serde(rename = "io.deputy.InvalidArgument")]
    InvalidArgument { parameter: String, reason: String },
    #[serde(rename = "io.deputy.PermissionDenied")]
    PermissionDenied { reason: String },
    #[serde(rename = "io.deputy.AuthenticationFailed")]
    AuthenticationFailed { user: String },
    #[serde(rename = "io.deputy.AccountLocked")]
    AccountLocked { user: String },
    #[serde(rename = "io.deputy.AccountExpired")]
    AccountExpired { user: String },
    #[serde(rename = "io.deputy.PasswordExpired")]
    PasswordExpired { user: String },
    #[serde(rename = "io.deputy.LockedOut")]
    LockedOut { user: String, until: String },
    #[serde(rename = "io.deputy.LogonRefused")]
    LogonRefused { user: String, reason: String },
    #[serde(rename = "io.deputy.NoCredentials")]
    NoCredentials { user: String },
    #[serde(rename = "io.deputy.NoSuchSession")]
    NoSuchSession { session: String },
    #[serde(rename = "io.deputy.NoSuchProcess")]
    NoSuchProcess { pid: i32 },
    #[serde(rename = "io.deputy.NoLogonInProgress")]
    NoLogonInProgress {},
    #[serde(rename = "io.deputy.LogonInProgress")]
    LogonInProgress {},
    #[serde(rename = "io.deputy.ExecutableNotFound")]
    ExecutableNotFound { program: String, path: String },
    #[serde(rename = "io.deputy.ExecutableNotAccessible")]
    ExecutableNotAccessible { path: String, reason: String },
    #[serde(rename = "io.deputy.WorkdirNotAccessible")]
    WorkdirNotAccessible { path: String, reason: String },
    #[serde(rename = "io.deputy.SpawnFailed")]
    SpawnFailed { reason: String },
    #[serde(rename = "io.deputy.TooManyRequests")]
    TooManyRequests { limit: String },
    #[serde(rename = "io.deputy.AuditUnavailable")]
    AuditUnavailable { reason: String },
    #[serde(rename = "io.deputy.InternalError")]
    InternalError { reason: String },
    #[serde(rename = "io.deputy.NoPeerIdentity")]
    NoPeerIdentity { what: String },
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::InvalidArgument { parameter, reason } => {
                write!(f, "invalid {parameter}: {reason}")
            }
            Error::PermissionDenied { reason } => write!(f, "permission denied: {reason}"),
            Error::AuthenticationFailed { user } => write!(f, "authentication failed for {user}"),
            Error::AccountLocked { user } => write!(f, "the account {user} is locked"),
            Error::AccountExpired { user } => write!(f, "the account {user} has expired"),
            Error::PasswordExpired { user } => {
                write!(
                    f,
                    "the password of {user} has expired and must be changed before logging on"
                )
            }
            Error::LockedOut { user, until } => write!(
                f,
                "too many failed logons for {user}: refused until {until}"
            ),
            Error::LogonRefused { user, reason } => write!(f, "logon of {user} refused: {reason}"),
            Error::NoCredentials { user } => {
                write!(
                    f,
                    "a network logon of {user} has no credentials to start processes with"
                )
            }
            Error::NoSuchSession { session } => write!(f, "no such session: {session}"),
            Error::NoSuchProcess { pid } => write!(f, "no such process started by deputy: {pid}"),
            Error::NoLogonInProgress {} => {
                f.write_str("no logon is in progress on this connection")
            }
            Error::LogonInProgress {} => {
                f.write_str("a logon is in progress on this connection: answer it first")
            }
            Error::ExecutableNotFound { program, path } => {
                write!(f, "cannot find {program} in PATH {path}")
            }
            Error::ExecutableNotAccessible { path, reason } => {
                write!(f, "cannot execute {path}: {reason}")
            }
            Error::WorkdirNotAccessible { path, reason } => {
                write!(f, "cannot enter {path}: {reason}")
            }
            Error::SpawnFailed { reason } => write!(f, "cannot start the process: {reason}"),
            Error::TooManyRequests { limit } => write!(f, "too many requests: {limit}"),
            Error::AuditUnavailable { reason } => {
                write!(f, "refused: the audit log cannot be written ({reason})")
            }
            Error::InternalError { reason } => write!(f, "internal error: {reason}"),
            Error::NoPeerIdentity { what } => write!(
                f,
                "{what} needs a caller the kernel identifies (a local peer): over the network, log a user on with a password and run in that session"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// `org.varlink.service.GetInfo`'s reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Info {
    /// `deputy`.
    pub vendor: String,
    /// `deputyd`.
    pub product: String,
    /// The daemon's version.
    pub version: String,
    /// Where to learn more.
    pub url: String,
    /// The interfaces served.
    pub interfaces: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::format;

    use super::*;

    #[test]
    fn errors_serialize_as_varlink_errors() {
        let err = Error::AuthenticationFailed {
            user: "dpt-bob".into(),
        };
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": "io.deputy.AuthenticationFailed", "parameters": {"user": "dpt-bob"}})
        );
        assert_eq!(serde_json::from_value::<Error>(json).unwrap(), err);
        let unit = serde_json::to_value(Error::NoLogonInProgress {}).unwrap();
        assert_eq!(unit["error"], "io.deputy.NoLogonInProgress");
    }

    #[test]
    fn every_error_is_declared_in_the_description() {
        for name in [
            "InvalidArgument",
            "PermissionDenied",
            "AuthenticationFailed",
            "AccountLocked",
            "AccountExpired",
            "PasswordExpired",
            "LockedOut",
            "LogonRefused",
            "NoCredentials",
            "NoSuchSession",
            "NoSuchProcess",
            "NoLogonInProgress",
            "LogonInProgress",
            "ExecutableNotFound",
            "ExecutableNotAccessible",
            "WorkdirNotAccessible",
            "SpawnFailed",
            "TooManyRequests",
            "AuditUnavailable",
            "InternalError",
            "NoPeerIdentity",
        ] {
            assert!(
                DESCRIPTION.contains(&format!("error {name} (")),
                "{name} is not in io.deputy.varlink"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<CreateProcess>(r#"{"argv": ["id"], "uid": 0}"#).is_err());
        let call: CreateProcess =
            serde_json::from_str(r#"{"argv": ["id"], "keepSession": true, "stdout": 1}"#).unwrap();
        assert_eq!((call.keep_session, call.stdout), (Some(true), Some(1)));
    }
}
