//! The part of deputy that talks to the kernel.
//!
//! Every `unsafe` block of the project lives in this crate, each with a `// SAFETY:` line. The
//! crates above it (`deputy`, `deputyd`, the CLI) are `#![forbid(unsafe_code)]` and reach the
//! operating system only through the safe functions here:
//!
//! | module | what it wraps |
//! |---|---|
//! | [`account`] | the account database through NSS: `getpwnam_r`, `getpwuid_r`, `getgrouplist` |
//! | [`creds`] | per-thread credentials: `setfsuid`, `setfsgid`, `setgroups` as raw syscalls |
//! | [`peer`] | the kernel's record of a Unix socket's peer: `SO_PEERCRED`, `SO_PEERGROUPS`, `SO_PEERPIDFD` |
//! | [`caps`] | the calling thread's capability sets |
//! | [`exec`] | starting a command as another user: `clone(CLONE_VM \| CLONE_VFORK \| CLONE_PIDFD)`, credential drop, `execveat` |
//! | [`pidfd`] | waiting for and signalling a process through its pidfd |
//! | [`pam`] | the application side of PAM: `pam_start` … `pam_end`, the conversation |
//! | [`secret`] | buffers wiped on drop |
//!
//! Identifiers are rustix's newtypes ([`Uid`], [`Gid`], [`Pid`]); file descriptors are
//! `OwnedFd`/`BorrowedFd`, never a bare `RawFd` in a safe signature.

pub mod account;
pub mod caps;
pub mod creds;
pub mod exec;
pub mod pam;
pub mod peer;
pub mod pidfd;
pub mod secret;

pub use rustix::fs::Mode;
pub use rustix::process::{Gid, Pid, Resource, Rlimit, Signal, Uid};

/// The running kernel's release (`uname -r`), for messages about missing kernel features.
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Takes ownership of descriptor `fd`, inherited from the process that started this one (a
/// worker gets its socket as fd 3).
///
/// # Errors
/// `EBADF` when `fd` is not open; `EINVAL` for a negative number or one of 0, 1, 2.
///
/// Call it once per descriptor: a second call would make two owners of one fd. It checks that
/// the fd is open, which is what `OwnedFd` needs; the caller answers for nothing else owning it.
pub fn take_inherited_fd(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: F_GETFD reads the flags of an integer descriptor and touches no memory.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above), and by this function's contract nothing
    // else in the process owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Registers an owned descriptor with the current tokio runtime, for readiness (a pidfd becomes
/// readable when its process ends; a pipe when it has data).
///
/// # Errors
/// When the runtime cannot register the descriptor.
///
/// # Panics
/// Outside a tokio runtime.
#[cfg(feature = "tokio")]
pub fn async_fd(
    fd: std::os::fd::OwnedFd,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd is open for as long as it lives and its as_raw_fd never changes, which
    // is all register_with_interest asks; the AsyncFd owns it from here on.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|err| err.into_parts().1)
}

/// Random bytes from the kernel's CSPRNG.
pub mod random {
    use std::io;

    /// `getrandom(2)`: fills `buf` completely (retrying short reads and EINTR).
    ///
    /// # Errors
    /// Only if the kernel's random source fails.
    pub fn fill(buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
            {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}
