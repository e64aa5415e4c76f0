//! POSIX ACL grants on a display socket (Wayland, PipeWire and the like): `rw` for the user on
//! the socket, `x` on the directories above it that the caller owns. Revoking removes exactly
//! those entries (and the mask, if the grant created it), leaving the rest of each ACL as it was.
//!
//! The ACL is read and written as the `system.posix_acl_access` extended attribute, through
//! `/proc/self/fd/N` of an `O_PATH` descriptor opened once: the grant and its revocation act on
//! the same inodes even if a path is replaced meanwhile, and no symlink is followed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags, XattrFlags};

use super::GrantError;
use crate::{Token, Uid};

const XATTR: &str = "system.posix_acl_access";
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// One changed inode: what the ACL had before, to undo exactly our change.
#[derive(Debug)]
struct Change {
    fd: OwnedFd,
    path: PathBuf,
    /// The user's entry before (None: there was none).
    user_before: Option<u16>,
    /// The mask before (None: there was none).
    mask_before: Option<u16>,
}

/// A held ACL grant.
#[derive(Debug)]
pub struct AclGrant {
    uid: Uid,
    path: PathBuf,
    changes: Vec<Change>,
}

fn proc_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn read_acl(fd: &OwnedFd) -> io::Result<Vec<Entry>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::getxattr(proc_path(fd).as_str(), XATTR, &mut buf[..]) {
        Ok(len) => parse(&buf[..len]),
        // No extended ACL: the minimal one the mode bits stand for.
        Err(rustix::io::Errno::NODATA) => {
            let mode = rustix::fs::fstat(fd)?.st_mode;
            let bits = |shift: u32| ((mode >> shift) & 7) as u16;
            Ok(vec![
                Entry {
                    tag: USER_OBJ,
                    perm: bits(6),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: GROUP_OBJ,
                    perm: bits(3),
                    id: UNDEFINED_ID,
                },
                Entry {
                    tag: OTHER,
                    perm: bits(0),
                    id: UNDEFINED_ID,
                },
            ])
        }
        Err(err) => Err(err.into()),
    }
}

fn parse(bytes: &[u8]) -> io::Result<Vec<Entry>> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed ACL attribute");
    let (header, body) = bytes.split_at_checked(4).ok_or_else(invalid)?;
    if u32::from_le_bytes(header.try_into().map_err(|_| invalid())?) != VERSION
        || body.len() % 8 != 0
    {
        return Err(invalid());
    }
    Ok(body
        .chunks_exact(8)
        .map(|e| Entry {
            tag: u16::from_le_bytes([e[0], e[1]]),
            perm: u16::from_le_bytes([e[2], e[3]]),
            id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
        })
        .collect())
}

fn write_acl(fd: &OwnedFd, entries: &mut [Entry]) -> io::Result<()> {
    // The kernel wants the entries ordered by tag, then id.
    entries.sort_by_key(|e| (e.tag, e.id));
    let mut bytes = VERSION.to_le_bytes().to_vec();
    for e in entries.iter() {
        bytes.extend_from_slice(&e.tag.to_le_bytes());
        bytes.extend_from_slice(&e.perm.to_le_bytes());
        bytes.extend_from_slice(&e.id.to_le_bytes());
    }
    Ok(rustix::fs::setxattr(
        proc_path(fd).as_str(),
        XATTR,
        &bytes,
        XattrFlags::empty(),
    )?)
}

/// Adds `perm` for `uid` to the ACL of `fd`, widening (or creating) the mask.
fn add(fd: OwnedFd, path: &Path, uid: u32, perm: u16) -> Result<Change, GrantError> {
    let acl_error = |source| GrantError::Acl {
        path: path.to_owned(),
        source,
    };
    let mut entries = read_acl(&fd).map_err(acl_error)?;
    let user_before = entries
        .iter()
        .find(|e| e.tag == USER && e.id == uid)
        .map(|e| e.perm);
    let mask_before = entries.iter().find(|e| e.tag == MASK).map(|e| e.perm);
    match entries.iter_mut().find(|e| e.tag == USER && e.id == uid) {
        Some(entry) => entry.perm |= perm,
        None => entries.push(Entry {
            tag: USER,
            perm,
            id: uid,
        }),
    }
    // The mask bounds every named entry: it must let the new one through. A new mask starts
    // from the group class's permissions, so nothing else changes meaning.
    let group_class = entries
        .iter()
        .filter(|e| matches!(e.tag, GROUP_OBJ | GROUP | USER))
        .fold(0, |acc, e| acc | e.perm);
    match entries.iter_mut().find(|e| e.tag == MASK) {
        Some(mask) => mask.perm |= perm,
        None => entries.push(Entry {
            tag: MASK,
            perm: group_class,
            id: UNDEFINED_ID,
        }),
    }
    write_acl(&fd, &mut entries).map_err(acl_error)?;
    Ok(Change {
        fd,
        path: path.to_owned(),
        user_before,
        mask_before,
    })
}

fn undo(change: &Change, uid: u32) -> io::Result<()> {
    let mut entries = read_acl(&change.fd)?;
    match change.user_before {
        Some(perm) => entries
            .iter_mut()
            .filter(|e| e.tag == USER && e.id == uid)
            .for_each(|e| e.perm = perm),
        None => entries.retain(|e| !(e.tag == USER && e.id == uid)),
    }
    match change.mask_before {
        Some(perm) => entries
            .iter_mut()
            .filter(|e| e.tag == MASK)
            .for_each(|e| e.perm = perm),
        None if !entries.iter().any(|e| matches!(e.tag, USER | GROUP)) => {
            entries.retain(|e| e.tag != MASK)
        }
        None => {}
    }
    write_acl(&change.fd, &mut entries)
}

/// Grants `user` access to the socket at `path`, which `caller` must own: `rw` on it and `x`
/// on each directory above it that `caller` owns (stopping at the first it does not).
///
/// # Errors
/// [`GrantError::NotGrantable`] when the path is not a socket owned by the caller;
/// [`GrantError::Acl`] when an ACL cannot be read or written (a file system without ACLs).
pub fn grant_acl(path: &Path, user: &Token, caller: &Token) -> Result<AclGrant, GrantError> {
    let refuse = |reason: &str| GrantError::NotGrantable {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if !path.is_absolute() {
        return Err(refuse("the path must be absolute"));
    }
    let open = |p: &Path| {
        rustix::fs::open(
            p,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let socket = {
        // Opened as the caller: a path the caller cannot reach cannot be granted.
        let _as_caller = crate::Impersonation::begin(caller)?;
        open(path).map_err(|e| refuse(&io::Error::from(e).to_string()))?
    };
    let stat = rustix::fs::fstat(&socket).map_err(|e| refuse(&io::Error::from(e).to_string()))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Socket {
        return Err(refuse("it is not a socket"));
    }
    if stat.st_uid != caller.uid().as_raw() {
        return Err(refuse("it does not belong to the caller"));
    }
    let uid = user.uid().as_raw();
    let mut changes = vec![add(socket, path, uid, 6)?];
    let mut dir = path.parent();
    while let Some(current) = dir {
        let Ok(fd) = open(current) else { break };
        let owned = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_uid == caller.uid().as_raw());
        if !owned || current == Path::new("/") {
            break;
        }
        match add(fd, current, uid, 1) {
            Ok(change) => changes.push(change),
            Err(err) => {
                let grant = AclGrant {
                    uid: user.uid(),
                    path: path.to_owned(),
                    changes,
                };
                let _ = grant.revoke();
                return Err(err);
            }
        }
        dir = current.parent();
    }
    Ok(AclGrant {
        uid: user.uid(),
        path: path.to_owned(),
        changes,
    })
}

/// What an [`AclGrant`] changed, kept (by a daemon, on disk) so that the grant can be undone
/// after the process that made it is gone: see [`AclGrant::record`] and [`AclRecord::revoke`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AclRecord {
    /// The user granted.
    pub uid: u32,
    /// The socket granted.
    pub path: PathBuf,
    /// Each changed inode, the socket first.
    pub changes: Vec<ChangeRecord>,
}

/// One changed inode of an [`AclRecord`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChangeRecord {
    /// Its path then.
    pub path: PathBuf,
    /// Its device and inode then: the path must still name it to be changed back.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The user's entry before (None: there was none).
    pub user_before: Option<u16>,
    /// The mask before (None: there was none).
    pub mask_before: Option<u16>,
}

impl AclRecord {
    /// Undoes the recorded grant, deepest first, on each path that still names the inode it
    /// named (a path now leading elsewhere is left alone: its owner may have moved things, and
    /// the daemon must not change a file the grant never touched).
    ///
    /// # Errors
    /// The first inode that could not be restored or was replaced (the others are restored
    /// all the same).
    pub fn revoke(&self) -> Result<(), GrantError> {
        let mut first = None;
        for record in self.changes.iter().rev() {
            let reopened = rustix::fs::open(
                &record.path,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .and_then(|fd| {
                let stat = rustix::fs::fstat(&fd)?;
                if (stat.st_dev, stat.st_ino) == (record.dev, record.ino) {
                    Ok(fd)
                } else {
                    Err(io::Error::other("the path names another file now"))
                }
            });
            let result = reopened.and_then(|fd| {
                let change = Change {
                    fd,
                    path: record.path.clone(),
                    user_before: record.user_before,
                    mask_before: record.mask_before,
                };
                undo(&change, self.uid)
            });
            match result {
                // Gone with the file: nothing left to undo.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first.get_or_insert(GrantError::Acl {
                        path: record.path.clone(),
                        source,
                    });
                }
                Ok(()) => {}
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl AclGrant {
    /// What the grant changed, for undoing it later with [`AclRecord::revoke`] (when this
    /// grant's holder is gone).
    pub fn record(&self) -> AclRecord {
        AclRecord {
            uid: self.uid.as_raw(),
            path: self.path.clone(),
            changes: self
                .changes
                .iter()
                .map(|change| {
                    let stat = rustix::fs::fstat(&change.fd);
                    ChangeRecord {
                        path: change.path.clone(),
                        dev: stat.as_ref().map_or(0, |st| st.st_dev),
                        ino: stat.as_ref().map_or(0, |st| st.st_ino),
                        user_before: change.user_before,
                        mask_before: change.mask_before,
                    }
                })
                .collect(),
        }
    }

    /// The socket granted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes exactly the entries the grant added (restoring widened ones), deepest first.
    ///
    /// # Errors
    /// The first ACL that could not be restored (the others are restored all the same).
    pub fn revoke(self) -> Result<(), GrantError> {
        let mut first = None;
        for change in self.changes.iter().rev() {
            if let Err(source) = undo(change, self.uid.as_raw()) {
                first.get_or_insert(GrantError::Acl {
                    path: change.path.clone(),
                    source,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_round_trip() {
        let entries = [
            Entry {
                tag: USER_OBJ,
                perm: 7,
                id: UNDEFINED_ID,
            },
            Entry {
                tag: USER,
                perm: 6,
                id: 1001,
            },
            Entry {
                tag: GROUP_OBJ,
                perm: 5,
                id: UNDEFINED_ID,
            },
            Entry {
                tag: MASK,
                perm: 7,
                id: UNDEFINED_ID,
            },
            Entry {
                tag: OTHER,
                perm: 0,
                id: UNDEFINED_ID,
            },
        ];
        let mut bytes = VERSION.to_le_bytes().to_vec();
        for e in &entries {
            bytes.extend_from_slice(&e.tag.to_le_bytes());
            bytes.extend_from_slice(&e.perm.to_le_bytes());
            bytes.extend_from_slice(&e.id.to_le_bytes());
        }
        assert_eq!(parse(&bytes).unwrap(), entries);
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(&[1, 0, 0, 0]).is_err());
    }
}
