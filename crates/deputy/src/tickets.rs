//! Kerberos ticket caches that deputy makes for a session, beside the ones PAM makes.
//!
//! A logon through pam_krb5 leaves the user a ticket cache named by `KRB5CCNAME` in PAM's
//! environment; deputy does nothing more than keep that environment and close the PAM session
//! (which destroys the cache) at logoff. Two cases need a cache of deputy's own:
//!
//! - **delegation** — a client at the Delegation impersonation level hands its own tickets to
//!   the processes it starts: it passes a descriptor of its cache (it opens the file; deputy
//!   never opens a path it is given with root's rights), and deputy copies the tickets into a
//!   new cache owned by the client, for that session only;
//! - **new_credentials** (`runas /netonly`) — the processes run as the caller with the tickets of
//!   the user who logged on: that user's cache (opened as that user) is copied into a new cache
//!   owned by the caller.
//!
//! Only `FILE:` caches are read. A new cache is created as its owner (the thread's file-system
//! ids are the owner's while it is made, so the file is the owner's and made with the owner's
//! rights), exclusively, mode 0600, under a random name in [`DEFAULT_DIR`]. [`TicketCache`]
//! destroys it — zeroed, then unlinked, as `kdestroy` does — when dropped.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use deputy_os::secret::Secret;

use crate::{Impersonation, Token};

/// Where new caches go: where pam_krb5 and kinit put theirs.
pub const DEFAULT_DIR: &str = "/tmp";

/// The largest cache accepted: a cache holds a handful of tickets of a few KiB each.
pub const MAX_SIZE: u64 = 1 << 20;

/// Why tickets could not be taken or stored.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The given cache is not one deputy can read.
    #[error("invalid ticket cache: {0}")]
    Invalid(String),
    /// Reading or writing a cache failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Acting as the cache's owner failed.
    #[error(transparent)]
    Impersonation(#[from] crate::ImpersonationError),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> TicketError {
    let what = what.into();
    move |source| TicketError::Io { what, source }
}

/// Reads a ticket cache from `file`, a descriptor a client passed: it must be a regular file
/// of at most [`MAX_SIZE`] bytes in the ccache file format (versions 1 to 4). The contents are
/// secret and wiped when dropped.
///
/// # Errors
/// [`TicketError::Invalid`] for anything else (a pipe, a directory, another format).
pub fn read_passed(file: OwnedFd) -> Result<Secret, TicketError> {
    read_cache(File::from(file), "the passed ticket cache")
}

/// Reads the `FILE:` cache `name` (a `KRB5CCNAME` value) as `owner`: opened with the owner's
/// file-system rights and without following a symbolic link, so a name under the owner's
/// control reads nothing the owner could not.
///
/// # Errors
/// [`TicketError::Invalid`] for a cache type other than `FILE:`, or a file that is not a cache.
pub fn read_as(owner: &Token, name: &str) -> Result<Secret, TicketError> {
    let path = file_path(name)?;
    let file = {
        let _as_owner = Impersonation::begin(owner)?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
            .open(path)
            .map_err(io_error(format!("cannot open the ticket cache {name}")))?
    };
    read_cache(file, name)
}

/// `FILE:/path` or a bare path: the path. Other cache types (KEYRING:, KCM:, DIR:, MEMORY:)
/// are refused by name.
fn file_path(name: &str) -> Result<&Path, TicketError> {
    let path = match name.split_once(':') {
        Some(("FILE", path)) => path,
        Some((kind, _)) if !kind.contains('/') => {
            return Err(TicketError::Invalid(format!(
                "{kind}: caches cannot be copied, only FILE: caches"
            )));
        }
        _ => name,
    };
    if !path.starts_with('/') {
        return Err(TicketError::Invalid(format!(
            "{name:?} is not an absolute path"
        )));
    }
    Ok(Path::new(path))
}

fn read_cache(mut file: File, what: &str) -> Result<Secret, TicketError> {
    let meta = file
        .metadata()
        .map_err(io_error(format!("cannot inspect {what}")))?;
    if !meta.is_file() {
        return Err(TicketError::Invalid(format!(
            "{what} is not a regular file"
        )));
    }
    if meta.len() > MAX_SIZE {
        return Err(TicketError::Invalid(format!(
            "{what} is larger than {MAX_SIZE} bytes"
        )));
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    let read = (&mut file)
        .take(MAX_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(io_error(format!("cannot read {what}")));
    let data = Secret::new(data);
    read?;
    // A ccache file starts with 0x05 and its format version (1 to 4).
    match data.expose() {
        [5, 1..=4, ..] if data.len() as u64 <= MAX_SIZE => Ok(data),
        _ => Err(TicketError::Invalid(format!(
            "{what} is not a Kerberos ticket cache (ccache file format)"
        ))),
    }
}

/// A ticket cache deputy made; destroyed when dropped.
#[derive(Debug)]
pub struct TicketCache {
    path: PathBuf,
    owner: Token,
}

impl TicketCache {
    /// Writes `tickets` into a new cache in `dir` that belongs to `owner`.
    ///
    /// # Errors
    /// When the owner cannot create or write the file there.
    pub fn create(dir: &Path, owner: &Token, tickets: &Secret) -> Result<TicketCache, TicketError> {
        let mut random = [0u8; 8];
        deputy_os::random::fill(&mut random).map_err(io_error("cannot name the ticket cache"))?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let path = dir.join(format!("krb5cc_{}_deputy_{suffix}", owner.uid().as_raw()));
        {
            let _as_owner = Impersonation::begin(owner)?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_flags::NOFOLLOW)
                .open(&path)
                .map_err(io_error(format!(
                    "cannot create the ticket cache {}",
                    path.display()
                )))?;
            // The mode is exact whatever the umask.
            let written = file
                .set_permissions(std::fs::Permissions::from_mode(0o600))
                .and_then(|()| file.write_all(tickets.expose()));
            if let Err(err) = written {
                let _ = std::fs::remove_file(&path);
                return Err(io_error(format!(
                    "cannot write the ticket cache {}",
                    path.display()
                ))(err));
            }
        }
        Ok(TicketCache {
            path,
            owner: owner.clone(),
        })
    }

    /// Takes charge of the cache at `path` that `owner` holds, made by an earlier
    /// [`TicketCache::create`] whose holder is gone (a daemon that restarted): it is destroyed
    /// when this one is dropped, as the owner.
    pub fn adopt(path: PathBuf, owner: Token) -> TicketCache {
        TicketCache { path, owner }
    }

    /// The cache's `KRB5CCNAME`.
    pub fn name(&self) -> String {
        format!("FILE:{}", self.path.display())
    }

    /// The cache's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The user the cache belongs to.
    pub fn owner(&self) -> &str {
        self.owner.user()
    }

    fn destroy(&self) -> io::Result<()> {
        let _as_owner = Impersonation::begin(&self.owner).map_err(io::Error::other)?;
        // Zero what is there, as kdestroy does, then remove the name. The owner may have
        // removed or replaced it already: whatever the name holds now is the owner's.
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc_flags::NOFOLLOW | libc_flags::NONBLOCK)
            .open(&self.path)
            && let Ok(meta) = file.metadata()
            && meta.is_file()
        {
            let zeros = vec![0u8; usize::try_from(meta.len().min(MAX_SIZE)).unwrap_or(0)];
            let _ = file.write_all(&zeros).and_then(|()| file.sync_data());
        }
        match std::fs::remove_file(&self.path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

impl Drop for TicketCache {
    fn drop(&mut self) {
        if let Err(err) = self.destroy() {
            tracing::warn!(cache = %self.path.display(), "cannot destroy the ticket cache: {err}");
        }
    }
}

/// The open(2) flags std has no names for.
mod libc_flags {
    pub const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    pub const NONBLOCK: i32 = rustix::fs::OFlags::NONBLOCK.bits() as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_caches_by_absolute_path() {
        assert_eq!(file_path("FILE:/tmp/x").unwrap(), Path::new("/tmp/x"));
        assert_eq!(file_path("/tmp/x").unwrap(), Path::new("/tmp/x"));
        for name in [
            "KEYRING:persistent:1000",
            "KCM:1000",
            "DIR:/tmp/d",
            "FILE:rel",
            "rel",
        ] {
            assert!(file_path(name).is_err(), "{name}");
        }
        assert!(
            file_path("KCM:1000")
                .unwrap_err()
                .to_string()
                .contains("KCM: caches cannot be copied")
        );
    }

    #[test]
    fn a_passed_file_must_be_a_cache() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, [5, 4, 0, 12, 1, 2, 3]).unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, b"#!/bin/sh\n").unwrap();
        let open = |p: &Path| OwnedFd::from(File::open(p).unwrap());
        assert_eq!(read_passed(open(&good)).unwrap().expose()[..2], [5, 4]);
        let err = read_passed(open(&bad)).unwrap_err().to_string();
        assert!(err.contains("not a Kerberos ticket cache"), "{err}");
        let err = read_passed(open(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let (reader, _writer) = std::io::pipe().unwrap();
        let err = read_passed(OwnedFd::from(reader)).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}
