//! Per-thread credentials for impersonation.
//!
//! On Linux every thread has its own credentials in the kernel; POSIX wants a process to have
//! one set, so glibc's `setgroups`, `setresuid` and friends signal every thread to make the same
//! change (the "setxid broadcast"). Impersonation needs the opposite: one thread acts as the
//! client while the others stay the daemon. These wrappers therefore make the raw system calls,
//! which change the calling thread only.
//!
//! The filesystem ids (`fsuid`, `fsgid`) are what the kernel uses for permission checks on
//! files. Changing the fsuid from 0 to another value also clears the file-related capabilities
//! (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`, ...) from the thread's effective set,
//! and changing it back to 0 restores them (capabilities(7), "Effect of user ID changes on
//! capabilities"): a thread impersonating a client really is held to the client's permissions.

use std::io;

use crate::{Gid, Uid};

/// Raw `setfsuid(2)`; returns the previous fsuid whether or not the change took.
fn raw_setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes a plain integer and touches no memory of ours. The raw syscall
    // (not glibc's wrapper) guarantees the change applies to the calling thread only.
    let prev = unsafe { libc::syscall(libc::SYS_setfsuid, libc::c_long::from(uid)) };
    // The kernel returns the previous id, a value in 0..=u32::MAX.
    prev as u32
}

/// Raw `setfsgid(2)`; returns the previous fsgid whether or not the change took.
fn raw_setfsgid(gid: u32) -> u32 {
    // SAFETY: as in `raw_setfsuid`.
    let prev = unsafe { libc::syscall(libc::SYS_setfsgid, libc::c_long::from(gid)) };
    prev as u32
}

/// The calling thread's filesystem user id.
///
/// `setfsuid(-1)` is refused by the kernel and so only reports the current value.
pub fn thread_fsuid() -> Uid {
    Uid::from_raw(raw_setfsuid(u32::MAX))
}

/// The calling thread's filesystem group id.
pub fn thread_fsgid() -> Gid {
    Gid::from_raw(raw_setfsgid(u32::MAX))
}

/// `setfsuid(2)` on the calling thread only; returns the previous fsuid.
///
/// `setfsuid` reports no error, so the change is read back and a refusal becomes `EPERM`.
///
/// # Errors
/// `EPERM` when the thread lacks `CAP_SETUID` and `uid` is none of its real, effective, saved or
/// filesystem user ids.
pub fn set_thread_fsuid(uid: Uid) -> io::Result<Uid> {
    let prev = Uid::from_raw(raw_setfsuid(uid.as_raw()));
    if thread_fsuid() != uid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(prev)
}

/// `setfsgid(2)` on the calling thread only; returns the previous fsgid.
///
/// # Errors
/// `EPERM` when the thread lacks `CAP_SETGID` and `gid` is none of its group ids.
pub fn set_thread_fsgid(gid: Gid) -> io::Result<Gid> {
    let prev = Gid::from_raw(raw_setfsgid(gid.as_raw()));
    if thread_fsgid() != gid {
        return Err(io::Error::from_raw_os_error(libc::EPERM));
    }
    Ok(prev)
}

/// `setgroups(2)` on the calling thread only (not glibc's process-wide wrapper).
///
/// # Errors
/// `EPERM` without `CAP_SETGID`; `EINVAL` for more than `NGROUPS_MAX` groups.
pub fn set_thread_groups(groups: &[Gid]) -> io::Result<()> {
    Ok(rustix::thread::set_thread_groups(groups)?)
}

/// `getgroups(2)`: the calling thread's supplementary groups.
///
/// # Errors
/// Only on a kernel failure to copy the list.
pub fn thread_groups() -> io::Result<Vec<Gid>> {
    Ok(rustix::process::getgroups()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Switching to the ids the thread already has needs no privilege, so these run as anyone.
    #[test]
    fn switching_to_the_current_ids_succeeds() {
        let uid = thread_fsuid();
        let gid = thread_fsgid();
        assert_eq!(set_thread_fsuid(uid).unwrap(), uid);
        assert_eq!(set_thread_fsgid(gid).unwrap(), gid);
        let groups = thread_groups().unwrap();
        if rustix::process::geteuid().is_root() {
            set_thread_groups(&groups).unwrap();
            assert_eq!(thread_groups().unwrap(), groups);
        }
    }

    #[test]
    fn fsuid_starts_as_the_effective_uid() {
        assert_eq!(thread_fsuid(), rustix::process::geteuid());
        assert_eq!(thread_fsgid(), rustix::process::getegid());
    }
}
