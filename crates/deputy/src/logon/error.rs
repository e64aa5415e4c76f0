//! What can go wrong in a logon, and how PAM's answers become named errors.

use std::io;
use std::time::SystemTime;

use deputy_os::pam::{PamCode, PamError};

use super::MAX_SECRET;
use super::handle::WorkerLogonError;
use super::lockout::{self, Caller};
use crate::spawn::SpawnError;
use crate::token::{SessionId, TokenError};

/// Why a logon, a start in a session, or a logoff failed.
#[derive(Debug, thiserror::Error)]
pub enum LogonError {
    /// The request is malformed; nothing reached PAM.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Too many failures: refused, whatever the password, until `until`.
    #[error("too many failed logons for {user} from {caller}: refused until {}", lockout::utc(*until))]
    LockedOut {
        /// The account.
        user: String,
        /// Who tried.
        caller: Caller,
        /// When attempts are accepted again.
        until: SystemTime,
    },
    /// Wrong credentials (or no such user: the two are not told apart).
    #[error("authentication failed for {user}")]
    AuthenticationFailed {
        /// The account.
        user: String,
    },
    /// The account is locked (`passwd -l`).
    #[error("the account {user} is locked")]
    AccountLocked {
        /// The account.
        user: String,
    },
    /// The account has expired.
    #[error("the account {user} has expired")]
    AccountExpired {
        /// The account.
        user: String,
    },
    /// The password has expired and must be changed first; deputy never accepts it as is.
    #[error("the password of {user} has expired and must be changed before logging on")]
    PasswordExpired {
        /// The account.
        user: String,
    },
    /// The account policy refused the logon (pam_access, pam_time, ...).
    #[error("logon of {user} refused by the account policy ({error})")]
    AccessDenied {
        /// The account.
        user: String,
        /// What PAM said.
        error: PamError,
    },
    /// A PAM module changed the user name during authentication.
    #[error(
        "PAM changed the user from {requested} to {now}; deputy refuses to act for another user than the one named"
    )]
    UserChanged {
        /// The name given.
        requested: String,
        /// The name PAM ended with.
        now: String,
    },
    /// The PAM stack asked something the conversation could not answer.
    #[error("the logon of {user} needs an answer the conversation could not give")]
    Conversation {
        /// The account.
        user: String,
    },
    /// Another PAM failure.
    #[error("PAM failed for {user}: {error}")]
    Pam {
        /// The account.
        user: String,
        /// What PAM said.
        error: PamError,
    },
    /// A network logon has no credentials to start processes with.
    #[error("a network logon of {user} has no credentials to start processes with")]
    NoCredentials {
        /// The account.
        user: String,
    },
    /// The session was logged off already.
    #[error("the logon session {0} has ended")]
    SessionEnded(SessionId),
    /// Starting a process in the session failed.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// The account database failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The PAM stack did not answer within the configured time; the logon was abandoned and
    /// its worker killed.
    #[error("PAM did not answer the logon of {user} within {} s; the logon was abandoned", after.as_secs())]
    TimedOut {
        /// The account.
        user: String,
        /// The time allowed.
        after: std::time::Duration,
    },
    /// The logged-on user's tickets could not be handed to the caller (new_credentials).
    #[error("the tickets of {user} could not be handed over: {source}")]
    Tickets {
        /// The account.
        user: String,
        /// Why.
        source: crate::tickets::TicketError,
    },
    /// The session worker could not be started or stopped answering.
    #[error("session worker: {what}: {source}")]
    Worker {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl LogonError {
    pub(crate) fn worker(what: &'static str) -> impl FnOnce(io::Error) -> LogonError {
        move |source| LogonError::Worker { what, source }
    }

    /// A refusal of the credentials or the account: costs the fail delay.
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            LogonError::LockedOut { .. }
                | LogonError::AuthenticationFailed { .. }
                | LogonError::AccountLocked { .. }
                | LogonError::AccountExpired { .. }
                | LogonError::PasswordExpired { .. }
                | LogonError::AccessDenied { .. }
                | LogonError::UserChanged { .. }
                | LogonError::Conversation { .. }
        )
    }

    /// A wrong password (or a guess at a locked account): counts toward a lockout.
    pub(crate) fn counts_as_failure(&self) -> bool {
        matches!(
            self,
            LogonError::AuthenticationFailed { .. } | LogonError::AccountLocked { .. }
        )
    }
}

/// Turns what the worker reported into a named refusal.
pub(crate) fn map_refusal(
    err: WorkerLogonError,
    user: &str,
    timeout: std::time::Duration,
) -> LogonError {
    match err {
        WorkerLogonError::Pam(error) => map_pam(error, user),
        WorkerLogonError::UserChanged(now) => LogonError::UserChanged {
            requested: user.to_owned(),
            now,
        },
        WorkerLogonError::AnswerTooLong => LogonError::InvalidArgument {
            what: "conversation answer",
            reason: format!("longer than {MAX_SECRET} bytes"),
        },
        WorkerLogonError::Io(what, source) => LogonError::Worker { what, source },
        WorkerLogonError::TimedOut => LogonError::TimedOut {
            user: user.to_owned(),
            after: timeout,
        },
    }
}

pub(crate) fn map_pam(error: PamError, user: &str) -> LogonError {
    let owned = user.to_owned();
    match (error.call, error.code) {
        (
            "pam_authenticate",
            PamCode::AUTH_ERR
            | PamCode::USER_UNKNOWN
            | PamCode::MAXTRIES
            | PamCode::CRED_INSUFFICIENT,
        ) => {
            // pam_unix says AUTH_ERR for a locked account too; the shadow entry tells them apart.
            match shadow_refusal(user) {
                Some(locked @ LogonError::AccountLocked { .. }) => locked,
                _ => LogonError::AuthenticationFailed { user: owned },
            }
        }
        (_, PamCode::CONV_ERR) => LogonError::Conversation { user: owned },
        ("pam_acct_mgmt", PamCode::ACCT_EXPIRED) => LogonError::AccountExpired { user: owned },
        ("pam_acct_mgmt", PamCode::NEW_AUTHTOK_REQD) => LogonError::PasswordExpired { user: owned },
        // Debian's common-account sends pam_unix's specific answers through pam_deny, which
        // says AUTH_ERR: read the reason from the shadow entry, as OpenSSH does.
        ("pam_acct_mgmt", _) => {
            shadow_refusal(user).unwrap_or(LogonError::AccessDenied { user: owned, error })
        }
        _ => LogonError::Pam { user: owned, error },
    }
}

/// What the shadow entry says against a logon today, if anything (pam_unix's rules, from
/// `check_shadow_expiry`).
pub(crate) fn shadow_refusal(user: &str) -> Option<LogonError> {
    let shadow = deputy_os::account::shadow_entry(user).ok().flatten()?;
    let today = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let user = user.to_owned();
    if shadow.locked {
        return Some(LogonError::AccountLocked { user });
    }
    if shadow.expire.is_some_and(|expire| today >= expire) {
        return Some(LogonError::AccountExpired { user });
    }
    match (shadow.last_change, shadow.max_days, shadow.inactive_days) {
        (Some(0), _, _) => Some(LogonError::PasswordExpired { user }),
        (Some(changed), Some(max), Some(inactive)) if today - changed > max + inactive => {
            Some(LogonError::AccountExpired { user })
        }
        (Some(changed), Some(max), _) if today - changed > max => {
            Some(LogonError::PasswordExpired { user })
        }
        _ => None,
    }
}
