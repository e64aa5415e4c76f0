//! What the kernel recorded about the peer of a connected Unix stream socket.
//!
//! The kernel captures the peer's credentials when it calls `connect(2)` (or `socketpair(2)`):
//! later `setuid` calls or an `exec` in the peer do not change them, and neither does anything
//! the peer writes. That is the Linux form of `ImpersonateNamedPipeClient`: identity comes from
//! the kernel, never from a field of the request.
//!
//! ```text
//!   client process ──connect()──▶ listening socket ──accept()──▶ daemon
//!        │                                                       │
//!        └── kernel records pid, euid, egid, groups, pidfd ──────┘ getsockopt(SO_PEER*)
//! ```

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::{Gid, Pid, Uid};

/// `getsockopt(SO_PEERCRED)`: the peer's pid, effective uid and effective gid at connect time.
///
/// # Errors
/// `ENOTCONN` when the socket is not connected; `ENOTSOCK`/`EOPNOTSUPP` for other fd kinds.
pub fn peer_credentials(socket: BorrowedFd<'_>) -> io::Result<(Pid, Uid, Gid)> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    Ok((cred.pid, cred.uid, cred.gid))
}

/// `getsockopt(SO_PEERGROUPS)` (Linux 4.13): the peer's supplementary groups at connect time.
///
/// # Errors
/// `ENOPROTOOPT` on a kernel without the option; `ENODATA` when the socket has no peer record.
pub fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<Gid>> {
    // Start with room for 64 groups; the kernel says how much it needs when that is too little.
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let capacity = groups.len() * size_of::<libc::gid_t>();
        let mut len = libc::socklen_t::try_from(capacity)
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes, and `len` is a
        // valid socklen_t the kernel may update.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = len as usize;
        if rc == 0 {
            groups.truncate(len / size_of::<libc::gid_t>());
            return Ok(groups.into_iter().map(Gid::from_raw).collect());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && len > capacity {
            groups.resize(len.div_ceil(size_of::<libc::gid_t>()), 0);
            continue;
        }
        return Err(err);
    }
}

/// `getsockopt(SO_PEERPIDFD)` (Linux 6.5): a pidfd for the peer process as it was at connect
/// time. Unlike the pid from `SO_PEERCRED` it cannot come to mean another process once the peer
/// exits and its pid is reused.
///
/// # Errors
/// `ENOPROTOOPT` on a kernel older than 6.5, which lacks the option; `ESRCH` when the peer has
/// already been reaped.
pub fn peer_pidfd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is a live c_int and `len` holds its size, as SO_PEERPIDFD expects.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: on success the kernel installed a new pidfd at `fd` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// True when `err` says the kernel does not know the socket option (`ENOPROTOOPT`), as
/// [`peer_pidfd`] fails before Linux 6.5.
pub fn is_unsupported_option(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOPROTOOPT)
}

/// The pid a pidfd refers to, read from `/proc/self/fdinfo` (the `Pid:` line); `None` once the
/// process has been reaped (the kernel then shows -1).
///
/// # Errors
/// When `/proc` cannot be read.
pub fn pidfd_pid(pidfd: impl AsFd) -> io::Result<Option<Pid>> {
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_fd().as_raw_fd());
    let info = std::fs::read_to_string(path)?;
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|value| value.trim().parse::<i32>().ok())
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no Pid: line in pidfd fdinfo")
        })?;
    Ok(Pid::from_raw(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socketpair_peer_is_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let (pid, uid, gid) = peer_credentials(a.as_fd()).unwrap();
        assert_eq!(pid, rustix::process::getpid());
        assert_eq!(uid, rustix::process::geteuid());
        assert_eq!(gid, rustix::process::getegid());
        let mut groups = peer_groups(a.as_fd()).unwrap();
        let mut ours = rustix::process::getgroups().unwrap();
        groups.sort_by_key(|g| g.as_raw());
        ours.sort_by_key(|g| g.as_raw());
        assert_eq!(groups, ours);
        let pidfd = peer_pidfd(a.as_fd()).unwrap();
        assert_eq!(pidfd_pid(&pidfd).unwrap(), Some(pid));
    }
}
