//! Starting a command as another user: the Linux half of `CreateProcessAsUser`.
//!
//! ```text
//!  caller thread                         child (shares memory until exec)
//!  ─────────────                         ─────────────────────────────────
//!  ExecPlan ready: argv, envp, fds,
//!  ids, groups, rlimits — all allocated
//!  block every signal
//!  clone(CLONE_VM|CLONE_VFORK|CLONE_PIDFD) ──▶ signal handlers to default
//!     (suspended until the child             setsid, rlimits
//!      execs or exits)                       fds: only the ones asked for survive exec
//!                                            setgroups → setresgid → setresuid
//!                                            capability sets emptied, drop verified
//!                                            fchdir, umask, unblock signals
//!                                            execveat(program fd, AT_EMPTY_PATH)
//!                                            on error: stage + errno into ChildArgs, _exit(127)
//!  restore signal mask ◀─────────────────────
//!  read the child's report; on failure reap it
//! ```
//!
//! The child shares the caller's memory (like `vfork`), which makes a start cheaper than `fork`:
//! no page tables are copied. The price is discipline in the child: it runs on a stack of its
//! own, allocates nothing, takes no lock, never unwinds, and makes raw system calls only (rustix's
//! `linux_raw` backend, or `libc::syscall`). glibc's `setresuid` and `setgroups` wrappers would
//! try to signal the caller's other threads (the setxid broadcast) and must not be called here.
//!
//! std's `Command` cannot do this job: `Command::uid()` changes ids before `pre_exec` runs, so a
//! `setgroups` there fails with `EPERM`, and it cannot exec a file descriptor.

use std::convert::Infallible;
use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use rustix::io::Errno;
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use rustix::process::{Resource, Rlimit};
use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::{Gid, Mode, Pid, Uid};

/// Everything the child needs, prepared before it exists.
#[derive(Debug)]
pub struct ExecPlan {
    /// The executable, opened by the caller (while impersonating the target user). The child
    /// executes this file, whatever its path names by then.
    pub program: OwnedFd,
    /// The program starts with `#!`: the interpreter reads it through `/dev/fd/N`, so the fd
    /// must stay open across exec (execveat(2) NOTES).
    pub program_is_script: bool,
    /// `argv`, `argv[0]` included.
    pub argv: Vec<CString>,
    /// The whole environment, each entry `NAME=value`.
    pub envp: Vec<CString>,
    /// Descriptors for the child: `(number in the child, fd of ours)`. No other fd survives the
    /// exec.
    pub fds: Vec<(RawFd, OwnedFd)>,
    /// The working directory, opened by the caller (an `O_PATH` fd is enough).
    pub cwd: OwnedFd,
    /// The ids the command runs with.
    pub uid: Uid,
    /// The primary group.
    pub gid: Gid,
    /// Supplementary groups; `None` leaves the caller's (for an unprivileged caller starting a
    /// command as itself, which may not call setgroups).
    pub groups: Option<Vec<Gid>>,
    /// Resource limits to set before the ids change.
    pub rlimits: Vec<(Resource, Rlimit)>,
    /// The file mode creation mask, if it should differ from the caller's.
    pub umask: Option<Mode>,
    /// Make descriptor 0 the command's controlling terminal (`TIOCSCTTY`, right after `setsid`),
    /// so that job control and terminal signals work in it.
    pub controlling_tty: bool,
    /// Make the command a child of the caller's parent (`CLONE_PARENT`) rather than of the
    /// caller. A logon session's worker uses it: the command inherits what PAM set up in the
    /// worker (limits, for one), while the daemon that started the worker is the one that
    /// waits for it and gets its exit status.
    pub clone_parent: bool,
}

/// The step at which starting the command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ChildStage {
    /// The plan itself is unusable (a duplicate or negative target fd, too many fds).
    Plan = 1,
    /// Mapping the child's stack.
    Stack,
    /// `clone(2)`.
    Clone,
    /// Resetting signal dispositions.
    Signals,
    /// `setsid(2)`.
    Session,
    /// `setrlimit(2)`.
    Rlimit,
    /// Moving the requested fds into place.
    Fds,
    /// Taking descriptor 0 as the controlling terminal (`TIOCSCTTY`).
    ControllingTty,
    /// `setgroups(2)`.
    Groups,
    /// `setresgid(2)`.
    Gid,
    /// `setresuid(2)`.
    Uid,
    /// Emptying the capability sets.
    Capabilities,
    /// Checking the drop: the ids are not the target's, or uid 0 could be regained.
    Verify,
    /// `fchdir(2)` into the working directory.
    Workdir,
    /// `execveat(2)`.
    Exec,
}

impl ChildStage {
    /// The stage with this [`code`](Self::code), for a failure reported by another process.
    pub fn from_raw(raw: u32) -> Option<Self> {
        use ChildStage::*;
        [
            ControllingTty,
            Plan,
            Stack,
            Clone,
            Signals,
            Session,
            Rlimit,
            Fds,
            Groups,
            Gid,
            Uid,
            Capabilities,
            Verify,
            Workdir,
            Exec,
        ]
        .into_iter()
        .find(|stage| *stage as u32 == raw)
    }

    /// The stage's number, stable for the life of a build.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// What the step does, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            ChildStage::Plan => "check the spawn plan",
            ChildStage::Stack => "map a stack for the child",
            ChildStage::Clone => "create the process",
            ChildStage::Signals => "reset signal dispositions",
            ChildStage::Session => "start a new session (setsid)",
            ChildStage::Rlimit => "set a resource limit",
            ChildStage::Fds => "set up file descriptors",
            ChildStage::ControllingTty => "make the terminal the controlling terminal",
            ChildStage::Groups => "set supplementary groups",
            ChildStage::Gid => "set group ids",
            ChildStage::Uid => "set user ids",
            ChildStage::Capabilities => "drop capabilities",
            ChildStage::Verify => "verify the privilege drop",
            ChildStage::Workdir => "enter the working directory",
            ChildStage::Exec => "execute",
        }
    }
}

/// Starting the command failed at `stage` with `error`; no process is left behind.
#[derive(Debug)]
pub struct SpawnFailure {
    /// Where it failed.
    pub stage: ChildStage,
    /// The errno.
    pub error: io::Error,
    /// For [`ChildStage::Rlimit`]: the limit that was refused.
    pub rlimit: Option<Resource>,
}

impl SpawnFailure {
    fn new(stage: ChildStage, error: io::Error) -> Self {
        SpawnFailure {
            stage,
            error,
            rlimit: None,
        }
    }
}

/// A started command.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group and session id: it called setsid).
    pub pid: Pid,
    /// A pidfd for it, from `CLONE_PIDFD`: no window in which the pid could be reused.
    pub pidfd: OwnedFd,
}

/// The child's stack: private anonymous memory with a guard page below it. Each thread keeps
/// one for all its starts ([`Stack::with`]).
struct Stack {
    base: *mut c_void,
    len: usize,
}

impl Stack {
    /// Big enough for the child's few frames, debug builds included. Pages are only touched
    /// as used, so the size costs address space, not memory.
    const LEN: usize = 256 * 1024;
    const GUARD: usize = 4096;

    fn new() -> io::Result<Self> {
        let len = Self::LEN;
        // SAFETY: a fresh private anonymous mapping at an address the kernel picks aliases
        // nothing of ours.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::STACK,
            )
        }?;
        let stack = Stack { base, len };
        // SAFETY: the first page lies inside the mapping just made, which nothing uses yet.
        unsafe { rustix::mm::mprotect(base, Self::GUARD, MprotectFlags::empty()) }?;
        Ok(stack)
    }

    /// Runs `f` with this thread's stack, mapped at its first use. One per thread is enough: a
    /// thread that clones with CLONE_VFORK is suspended until its child has exec'd or exited,
    /// so the stack is free again whenever `f` returns. Keeping it saves an mmap, an mprotect
    /// and an munmap per start, and the munmap's TLB shootdown, an interrupt to every other CPU
    /// running one of our threads (costly in a VM). A `f` that starts another child from inside
    /// (it does not) would get a fresh stack of its own.
    fn with<T>(f: impl FnOnce(&Stack) -> T) -> io::Result<T> {
        thread_local! {
            static STACK: std::cell::Cell<Option<Stack>> = const { std::cell::Cell::new(None) };
        }
        let stack = match STACK.with(std::cell::Cell::take) {
            Some(stack) => stack,
            None => Stack::new()?,
        };
        let result = f(&stack);
        // A thread being torn down keeps nothing: the stack is unmapped on drop.
        let _ = STACK.try_with(|cell| cell.set(Some(stack)));
        Ok(result)
    }

    /// The highest address: stacks grow down on every architecture Linux runs Rust on.
    fn top(&self) -> *mut c_void {
        // The mapping is page aligned and LEN a multiple of 16, so the top is 16-byte aligned.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` is the mapping made in `new`; the child that used it has
        // exec'd or exited (CLONE_VFORK returned), so nothing refers to it any more.
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// What the child reads (shared memory) and where it reports failure.
struct ChildArgs<'a> {
    plan: &'a ExecPlan,
    argv: *const *const c_char,
    envp: *const *const c_char,
    /// First fd number above every target: copies are made at or above it.
    floor: RawFd,
    /// Scratch for the copies of `plan.fds`, then program, then cwd.
    copies: &'a [AtomicI32],
    stage: AtomicU32,
    errno: AtomicI32,
    /// Index into `plan.rlimits` of the limit being set.
    rlimit_index: AtomicU32,
}

/// `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` and run `plan` in the child.
///
/// Returns once the child has executed the program (or failed to). A failure reports the stage
/// and errno, and the child has been reaped.
///
/// # Errors
/// A [`SpawnFailure`] naming the step that failed.
pub fn spawn(plan: &ExecPlan) -> Result<Spawned, SpawnFailure> {
    let plan_error =
        |errno| SpawnFailure::new(ChildStage::Plan, io::Error::from_raw_os_error(errno));
    let mut targets: Vec<RawFd> = plan.fds.iter().map(|(target, _)| *target).collect();
    targets.sort_unstable();
    if targets.windows(2).any(|pair| pair[0] == pair[1]) || targets.first().is_some_and(|t| *t < 0)
    {
        return Err(plan_error(libc::EINVAL));
    }
    // Every fd number below the floor that is not a target is closed in the child; keep the
    // floor sane so that loop stays short.
    let floor = targets.last().map_or(3, |t| (t + 1).max(3));
    if floor > 1024 {
        return Err(plan_error(libc::EMFILE));
    }

    let mut argv: Vec<*const c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let mut envp: Vec<*const c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(ptr::null());
    let copies: Vec<AtomicI32> = (0..plan.fds.len() + 2)
        .map(|_| AtomicI32::new(-1))
        .collect();
    let args = ChildArgs {
        plan,
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        floor,
        copies: &copies,
        stage: AtomicU32::new(0),
        errno: AtomicI32::new(0),
        rlimit_index: AtomicU32::new(0),
    };
    let mut pidfd: c_int = -1;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    if plan.clone_parent {
        flags |= libc::CLONE_PARENT;
    }
    let (pid, clone_error) = Stack::with(|stack| {
        let old_mask = block_all_signals();
        // SAFETY: `child_entry` only reads `args` (alive on this frame, and this thread is
        // suspended until the child execs or exits, CLONE_VFORK) and writes its atomics; it
        // runs on `stack`, a mapping no one else uses while this thread is suspended, makes
        // raw syscalls only and never returns into our code. With CLONE_PIDFD the kernel
        // stores the pidfd through the parent_tid pointer.
        let pid = unsafe {
            libc::clone(
                child_entry,
                stack.top(),
                flags,
                (&raw const args).cast_mut().cast(),
                &raw mut pidfd,
            )
        };
        let clone_error = io::Error::last_os_error();
        restore_signal_mask(old_mask);
        (pid, clone_error)
    })
    .map_err(|error| SpawnFailure::new(ChildStage::Stack, error))?;

    if pid < 0 {
        return Err(SpawnFailure::new(ChildStage::Clone, clone_error));
    }
    // SAFETY: clone succeeded with CLONE_PIDFD, so `pidfd` is a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = Pid::from_raw(pid).expect("clone returned a positive pid");

    let stage = args.stage.load(Ordering::Acquire);
    if stage != 0 {
        let errno = args.errno.load(Ordering::Acquire);
        // The child has already called _exit: reap it so that no zombie stays.
        let _ = crate::pidfd::wait(&pidfd);
        let stage = ChildStage::from_raw(stage).unwrap_or(ChildStage::Exec);
        let mut failure = SpawnFailure::new(stage, io::Error::from_raw_os_error(errno));
        if stage == ChildStage::Rlimit {
            let index = args.rlimit_index.load(Ordering::Acquire) as usize;
            failure.rlimit = plan.rlimits.get(index).map(|(resource, _)| *resource);
        }
        return Err(failure);
    }
    Ok(Spawned { pid, pidfd })
}

/// `faccessat2(fd, "", mode, AT_EACCESS | AT_EMPTY_PATH)`: may the calling thread's
/// *filesystem* ids use `fd` this way? (rustix's `accessat` refuses `AT_EMPTY_PATH`.)
///
/// With `AT_EACCESS` the kernel checks the thread's current credentials, so under
/// impersonation this answers for the client, not for the daemon.
///
/// # Errors
/// `EACCES` when access is denied; `ENOSYS` before Linux 5.8.
pub fn access_fd(fd: BorrowedFd<'_>, mode: rustix::fs::Access) -> io::Result<()> {
    let flags = libc::AT_EACCESS | libc::AT_EMPTY_PATH;
    // SAFETY: the path is a static empty C string and `fd` is a live descriptor; the call
    // reads both and writes nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            mode.bits(),
            flags,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `sigset_t` is 64 bits on every 64-bit Linux architecture.
const KERNEL_SIGSET_SIZE: usize = 8;

fn block_all_signals() -> u64 {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: both pointers are to live u64s, the size the kernel expects. The raw call (not
    // pthread_sigmask) also blocks glibc's internal signals, so nothing runs a handler in the
    // child before it has reset them.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const all,
            &raw mut old,
            KERNEL_SIGSET_SIZE,
        )
    };
    old
}

fn restore_signal_mask(old: u64) {
    // SAFETY: as in `block_all_signals`.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const old,
            ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        )
    };
}

extern "C" fn child_entry(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` that `spawn` passed; the thread that owns it is suspended
    // until this child execs or exits, so the reference stays valid throughout.
    let args = unsafe { &*arg.cast::<ChildArgs<'_>>() };
    let Err((stage, errno)) = child_main(args);
    args.errno.store(errno.raw_os_error(), Ordering::Release);
    args.stage.store(stage as u32, Ordering::Release);
    // SAFETY: _exit(2) ends this process at once; it runs no atexit handler and no destructor,
    // which would touch the caller's memory.
    unsafe { libc::_exit(127) }
}

type ChildResult = Result<Infallible, (ChildStage, Errno)>;

/// Raw `syscall(2)` result to Errno. Runs in the child: the errno it reads is the one glibc's
/// `syscall` stored in the (shared) thread-local slot, read right after the call.
fn check(rc: libc::c_long) -> Result<libc::c_long, Errno> {
    if rc < 0 {
        Err(Errno::from_raw_os_error(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ))
    } else {
        Ok(rc)
    }
}

/// The child's whole life. Async-signal-safe only: no allocation, no locks, no panics.
fn child_main(args: &ChildArgs<'_>) -> ChildResult {
    let plan = args.plan;
    let stage = |stage| move |errno| (stage, errno);

    // 1. Signal handlers are the caller's code: reset every disposition before anything can be
    // delivered, and so that ignored signals (std ignores SIGPIPE) are not inherited.
    reset_signal_dispositions().map_err(stage(ChildStage::Signals))?;
    // 2. A session and process group of its own: a signal to the daemon's group never reaches
    // the command, and the command can take a controlling terminal.
    rustix::process::setsid().map_err(stage(ChildStage::Session))?;
    // 3. Limits first, while still privileged enough to set them.
    for (index, (resource, limit)) in (0u32..).zip(&plan.rlimits) {
        args.rlimit_index.store(index, Ordering::Relaxed);
        rustix::process::setrlimit(*resource, *limit).map_err(stage(ChildStage::Rlimit))?;
    }
    // 4. File descriptors.
    let (program, cwd) = arrange_fds(args).map_err(stage(ChildStage::Fds))?;
    if plan.controlling_tty {
        // SAFETY: descriptor 0 was just put in place by arrange_fds and stays open until exec.
        let terminal = unsafe { BorrowedFd::borrow_raw(0) };
        rustix::process::ioctl_tiocsctty(terminal).map_err(stage(ChildStage::ControllingTty))?;
    }
    // 5. Credentials, in the only order that works: groups and gid need CAP_SETGID, which
    // setresuid to a non-root uid takes away.
    if let Some(groups) = &plan.groups {
        rustix::thread::set_thread_groups(groups).map_err(stage(ChildStage::Groups))?;
    }
    rustix::thread::set_thread_res_gid(plan.gid, plan.gid, plan.gid)
        .map_err(stage(ChildStage::Gid))?;
    rustix::thread::set_thread_res_uid(plan.uid, plan.uid, plan.uid)
        .map_err(stage(ChildStage::Uid))?;
    if !plan.uid.is_root() {
        // setresuid to non-zero ids already cleared the permitted and effective sets; the
        // inheritable and ambient sets survive it, so empty them too.
        rustix::thread::clear_ambient_capability_set().map_err(stage(ChildStage::Capabilities))?;
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        rustix::thread::set_capabilities(None, none).map_err(stage(ChildStage::Capabilities))?;
    }
    verify_drop(plan).map_err(stage(ChildStage::Verify))?;
    // 6. The working directory, entered as the target user.
    // SAFETY: `cwd` is the copy arrange_fds made; it stays open until exec.
    let cwd = unsafe { BorrowedFd::borrow_raw(cwd) };
    rustix::process::fchdir(cwd).map_err(stage(ChildStage::Workdir))?;
    if let Some(mask) = plan.umask {
        rustix::process::umask(mask);
    }
    // 7. Unblock signals and execute the file that was opened, not a path.
    let empty: u64 = 0;
    // SAFETY: a pointer to a live u64, the kernel's sigset size.
    check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const empty,
            ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        )
    })
    .map_err(stage(ChildStage::Signals))?;
    // SAFETY: `argv` and `envp` are NUL-terminated arrays of pointers to C strings owned by the
    // plan, which outlives this call; `program` is an open fd and the path a static "".
    let rc = unsafe {
        libc::syscall(
            libc::SYS_execveat,
            program,
            c"".as_ptr(),
            args.argv,
            args.envp,
            libc::AT_EMPTY_PATH,
        )
    };
    Err((ChildStage::Exec, check(rc).err().unwrap_or(Errno::INVAL)))
}

fn reset_signal_dispositions() -> Result<(), Errno> {
    // The kernel's struct sigaction with SIG_DFL (0), no flags, no restorer and an empty mask is
    // all zeros, whatever the architecture's field order.
    let default_action = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default_action` is a live, zeroed kernel sigaction; no old action is asked for.
        check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                &raw const default_action,
                ptr::null_mut::<c_void>(),
                KERNEL_SIGSET_SIZE,
            )
        })?;
    }
    Ok(())
}

/// Puts each requested fd at its number and marks every other fd close-on-exec. Returns the
/// numbers of the copies of the program and the working directory.
fn arrange_fds(args: &ChildArgs<'_>) -> Result<(RawFd, RawFd), Errno> {
    let plan = args.plan;
    let floor = args.floor;
    // Copy each source above every target first, so that no dup2 below overwrites a source
    // that is still needed.
    let sources = plan
        .fds
        .iter()
        .map(|(_, fd)| fd.as_raw_fd())
        .chain([plan.program.as_raw_fd(), plan.cwd.as_raw_fd()]);
    for (slot, source) in args.copies.iter().zip(sources) {
        // SAFETY: every source is an OwnedFd of the plan, open for the duration of the call.
        let copy =
            check(unsafe { libc::syscall(libc::SYS_fcntl, source, libc::F_DUPFD_CLOEXEC, floor) })?;
        slot.store(copy as RawFd, Ordering::Relaxed);
    }
    for ((target, _), slot) in plan.fds.iter().zip(args.copies) {
        // SAFETY: dup3 on two integers; the copy is open and differs from the target (it is at
        // or above the floor). dup3 without O_CLOEXEC leaves the target inheritable.
        check(unsafe { libc::syscall(libc::SYS_dup3, slot.load(Ordering::Relaxed), *target, 0) })?;
    }
    for fd in 0..floor {
        if !plan.fds.iter().any(|(target, _)| *target == fd) {
            // SAFETY: closing an fd number in this child only; EBADF (not open) is fine.
            unsafe { libc::syscall(libc::SYS_close, fd) };
        }
    }
    // Everything at or above the floor — our copies, and whatever the caller left inheritable —
    // closes at exec.
    // SAFETY: close_range on integers, this process only.
    check(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            floor as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    })?;
    let n = plan.fds.len();
    let program = args
        .copies
        .get(n)
        .map_or(-1, |slot| slot.load(Ordering::Relaxed));
    let cwd = args
        .copies
        .get(n + 1)
        .map_or(-1, |slot| slot.load(Ordering::Relaxed));
    if plan.program_is_script {
        // The interpreter opens /dev/fd/N: that fd must survive the exec.
        // SAFETY: fcntl on an integer fd of this process.
        check(unsafe { libc::syscall(libc::SYS_fcntl, program, libc::F_SETFD, 0) })?;
    }
    Ok((program, cwd))
}

/// setresuid(2) NOTES and the sudo/OpenSSH practice: never trust a drop, look at it.
fn verify_drop(plan: &ExecPlan) -> Result<(), Errno> {
    let (mut r, mut e, mut s) = (0u32, 0u32, 0u32);
    // SAFETY: three pointers to live u32s (uid_t), as getresuid(2) expects.
    check(unsafe { libc::syscall(libc::SYS_getresuid, &raw mut r, &raw mut e, &raw mut s) })?;
    if [r, e, s] != [plan.uid.as_raw(); 3] {
        return Err(Errno::PERM);
    }
    // SAFETY: as above, for gid_t.
    check(unsafe { libc::syscall(libc::SYS_getresgid, &raw mut r, &raw mut e, &raw mut s) })?;
    if [r, e, s] != [plan.gid.as_raw(); 3] {
        return Err(Errno::PERM);
    }
    if !plan.uid.is_root() {
        if rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok() {
            return Err(Errno::PERM);
        }
        let caps = rustix::thread::capabilities(None)?;
        if !(caps.effective.is_empty() && caps.permitted.is_empty() && caps.inheritable.is_empty())
        {
            return Err(Errno::PERM);
        }
    }
    Ok(())
}
