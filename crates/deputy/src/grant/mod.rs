//! Desktop grants: giving a logon session access to the user's display, as Windows adds the
//! logon SID to the DACLs of `winsta0\default`. A grant belongs to its session and is revoked
//! when the session ends.
//!
//! | grant | what it changes | revoked by |
//! |---|---|---|
//! | [`X11Access`] | `SI:localuser:<user>` in the X server's host access list | [`X11Access::revoke`] |
//! | [`AclGrant`] | a POSIX ACL entry for the user on a socket, `x` on the directories above | [`AclGrant::revoke`] |

mod acl;
mod x11;

pub use acl::{AclGrant, AclRecord, ChangeRecord, grant_acl};
pub use x11::{X11Access, X11Cookie, X11Display, X11Record};

/// Why a grant could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The display name is not a local display (`:N` or `:N.S`).
    #[error("invalid display {0:?}: only local displays (:N or :N.S) can be granted")]
    InvalidDisplay(String),
    /// The X server could not be reached or refused the credentials.
    #[error("cannot connect to display {display}: {reason}")]
    Connect {
        /// The display.
        display: String,
        /// Why.
        reason: String,
    },
    /// The X server refused the change.
    #[error("display {display} refused to change its host access list: {reason}")]
    X11 {
        /// The display.
        display: String,
        /// Why.
        reason: String,
    },
    /// The path is not the caller's, or not a socket.
    #[error("cannot grant {path}: {reason}")]
    NotGrantable {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing an ACL failed.
    #[error("ACL of {path}: {source}")]
    Acl {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Acting as the caller failed.
    #[error(transparent)]
    Impersonation(#[from] crate::ImpersonationError),
}
