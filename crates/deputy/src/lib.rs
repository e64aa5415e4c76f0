//! deputy: run processes in a client's security context on Linux.
//!
//! The model is Windows' (`LogonUser`, `ImpersonateNamedPipeClient`, `DuplicateTokenEx`,
//! `ImpersonateLoggedOnUser`, `CreateProcessAsUser`), mapped onto Linux:
//!
//! | Windows | deputy |
//! |---|---|
//! | access token, primary or impersonation | [`Token`], [`TokenKind`], [`ImpersonationLevel`] |
//! | `ImpersonateNamedPipeClient` + `OpenThreadToken` | [`Token::from_peer`] (kernel peer credentials) |
//! | `DuplicateTokenEx(TokenPrimary)` | [`Token::to_primary`] |
//! | `ImpersonateLoggedOnUser` / `RevertToSelf` | [`Impersonation::begin`] / drop |
//! | `CreateProcessAsUser` | [`spawn`] with a [`SpawnRequest`] |
//! | `SE_TCB_NAME`, `SE_ASSIGNPRIMARYTOKEN_NAME`, `SE_INCREASE_QUOTA_NAME` | [`check_privileges`] |
//!
//! The seed's second procedure — serve a client, take its token, start a process as it:
//!
//! ```no_run
//! use deputy::{ImpersonationLevel, SpawnRequest, Token};
//! use std::os::unix::net::UnixListener;
//!
//! let listener = UnixListener::bind("/run/example.sock")?;
//! let (client, _) = listener.accept()?;
//! // The client allowed Impersonation (how it says so is the protocol's business).
//! let token = Token::from_peer(&client, ImpersonationLevel::Impersonation)?;
//! let primary = token.to_primary()?;
//! let child = deputy::spawn(&primary, SpawnRequest::new("id").stdout(client.try_clone()?))?;
//! println!("{} ran id: {}", primary.user(), child.wait()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The library is synchronous; every function may block on NSS or the kernel. All `unsafe`
//! code lives in the `deputy-os` crate.

#![forbid(unsafe_code)]

pub mod accounts;
pub mod grant;
mod impersonate;
pub mod logon;
mod privilege;
pub mod pty;
mod spawn;
pub mod tickets;
mod token;

pub use deputy_os::pidfd::{ChildEvent, ExitStatus};
pub use deputy_os::{Gid, Pid, Resource, Signal, Uid};
pub use impersonate::{Impersonation, ImpersonationError};
pub use logon::{
    Caller, LockoutPolicy, LogonConfig, LogonError, LogonRequest, LogonSession, LogonType, Logons,
    PasswordConversation,
};
pub use privilege::{PRIVILEGES, Privilege, PrivilegeReport, check_capabilities, check_privileges};
pub use spawn::{
    Child, DENIED_NAMES, DENIED_PREFIXES, ROOT_PATH, SpawnError, SpawnRequest, USER_PATH,
    is_denied, spawn,
};
pub use token::{
    ImpersonationLevel, InvalidSessionId, PeerProcess, SessionId, Token, TokenError, TokenKind,
    UnknownLevel,
};

/// A capability set, for [`check_capabilities`].
pub use deputy_os::caps::CapabilitySet;
/// The stage at which a start failed, carried by [`SpawnError::Start`].
pub use deputy_os::exec::ChildStage;
/// PAM's conversation, for logons that ask more than a password.
pub use deputy_os::pam::{Conversation, Echo};
/// Bytes wiped on drop: passwords and conversation answers.
pub use deputy_os::secret::Secret;
