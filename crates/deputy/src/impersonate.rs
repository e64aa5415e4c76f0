//! Acting as a client on one thread: `ImpersonateLoggedOnUser` and `RevertToSelf`.
//!
//! [`Impersonation::begin`] sets the calling thread's supplementary groups, filesystem gid and
//! filesystem uid to the token's; dropping the guard sets them back. Only the calling thread
//! changes (the calls are raw syscalls, see `deputy_os::creds`), so a daemon can serve other
//! clients on other threads meanwhile. While the fsuid is not 0 the kernel also withholds the
//! file capabilities (`CAP_DAC_OVERRIDE` and the like), so files are opened with exactly the
//! client's rights.
//!
//! The guard cannot be sent to another thread: it must be dropped on the thread whose
//! credentials it changed. It is also no good across an `.await`, which may resume elsewhere.

use std::marker::PhantomData;

use deputy_os::creds;
use deputy_os::{Gid, Uid};

use crate::token::{Token, TokenKind};

/// Why impersonation could not begin.
#[derive(Debug, thiserror::Error)]
pub enum ImpersonationError {
    /// The token is at Anonymous or Identification level.
    #[error(
        "cannot impersonate {user}: the token is at {level} level, which does not allow acting as the client"
    )]
    IdentificationOnly {
        /// The client.
        user: String,
        /// Its level.
        level: crate::ImpersonationLevel,
    },
    /// The kernel refused a credential change (the process lacks CAP_SETUID/CAP_SETGID).
    #[error("cannot impersonate {user}: {call} failed: {source}")]
    Sys {
        /// The client.
        user: String,
        /// The call that failed.
        call: &'static str,
        /// The errno.
        source: std::io::Error,
    },
}

/// The thread's credentials before impersonation began.
#[derive(Debug)]
struct Saved {
    fsuid: Uid,
    fsgid: Gid,
    /// `None` when the groups were left as they were.
    groups: Option<Vec<Gid>>,
}

/// While this guard lives, the calling thread acts as a client for file access. Dropping it
/// reverts (also during a panic's unwinding); if reverting fails the process aborts rather than
/// run on as the wrong user.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<deputy::Impersonation>(); // must stay on its thread
/// ```
#[derive(Debug)]
#[must_use = "impersonation ends when the guard is dropped"]
pub struct Impersonation {
    saved: Saved,
    /// A raw pointer is neither Send nor Sync: the guard belongs to one thread.
    _thread_bound: PhantomData<*const ()>,
}

impl Impersonation {
    /// Begins acting as `token` on the calling thread.
    ///
    /// # Errors
    /// [`ImpersonationError::IdentificationOnly`] for a token at Anonymous or Identification
    /// level; [`ImpersonationError::Sys`] when the kernel refuses a change (then nothing was
    /// changed).
    ///
    /// # Example
    /// ```
    /// use deputy::{Impersonation, Token};
    ///
    /// // Impersonating yourself needs no privilege.
    /// let me = Token::current()?;
    /// let guard = Impersonation::begin(&me)?;
    /// let _ = std::fs::metadata("/")?; // checked with `me`'s permissions
    /// drop(guard);                     // back to the thread's own identity
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn begin(token: &Token) -> Result<Impersonation, ImpersonationError> {
        if let TokenKind::Impersonation(level) = token.kind()
            && !level.may_act()
        {
            return Err(ImpersonationError::IdentificationOnly {
                user: token.user().to_owned(),
                level,
            });
        }
        let sys = |call: &'static str| {
            let user = token.user().to_owned();
            move |source| ImpersonationError::Sys { user, call, source }
        };
        let current_groups = creds::thread_groups().map_err(sys("getgroups"))?;
        let mut saved = Saved {
            fsuid: creds::thread_fsuid(),
            fsgid: creds::thread_fsgid(),
            groups: None,
        };
        // setgroups needs CAP_SETGID even when nothing changes; skip it then, so that an
        // unprivileged process can impersonate itself.
        if !same_set(&current_groups, token.groups()) {
            creds::set_thread_groups(token.groups()).map_err(sys("setgroups"))?;
            saved.groups = Some(current_groups);
        }
        // From here on the guard exists, so an early return below reverts what was done.
        let guard = Impersonation {
            saved,
            _thread_bound: PhantomData,
        };
        creds::set_thread_fsgid(token.gid()).map_err(sys("setfsgid"))?;
        creds::set_thread_fsuid(token.uid()).map_err(sys("setfsuid"))?;
        Ok(guard)
    }
}

impl Drop for Impersonation {
    fn drop(&mut self) {
        // fsuid first: returning to 0 gives back the capabilities the other two steps may need.
        let reverted = creds::set_thread_fsuid(self.saved.fsuid)
            .and_then(|_| creds::set_thread_fsgid(self.saved.fsgid))
            .and_then(|_| match &self.saved.groups {
                Some(groups) => creds::set_thread_groups(groups),
                None => Ok(()),
            });
        if let Err(err) = reverted {
            // Running on as the client (or half of it) would be a privilege bug; stop here.
            eprintln!("deputy: cannot revert impersonation ({err}); aborting");
            std::process::abort();
        }
    }
}

fn same_set(a: &[Gid], b: &[Gid]) -> bool {
    a.len() == b.len() && a.iter().all(|g| b.contains(g))
}
