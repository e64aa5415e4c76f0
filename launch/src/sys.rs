//! What the launcher needs from the system that a safe API cannot give it: its entry point,
//! its standard descriptors, a signal handler, and `execve`. Every `unsafe` block of the
//! launcher is here. (The rest of deputy keeps its `unsafe` in deputy-os, which needs std;
//! this program has none.)

use alloc::vec::Vec;
use core::ffi::{CStr, c_int};
use core::sync::atomic::{AtomicI32, Ordering};

use origin::signal::{Sigaction, SigactionFlags, Signal};
use rustix::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use rustix::io::Errno;

/// The allocator: dlmalloc over anonymous mappings (there is no libc malloc).
#[global_allocator]
static ALLOCATOR: rustix_dlmalloc::GlobalDlmalloc = rustix_dlmalloc::GlobalDlmalloc;

/// A panic is a bug: say so and exit with deputy's own failure code, never unwinding.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let message = alloc::format!("deputy: internal error: {info}\n");
    let _ = rustix::io::write(stderr(), message.as_bytes());
    rustix::runtime::exit_group(i32::from(deputy_quick::exit::ERROR))
}

// SAFETY: never called: with panic = "abort" nothing unwinds. The unoptimised alloc crate
// still names the symbol, and a no_std program on stable Rust cannot name it otherwise.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// The program's arguments and environment, as the kernel gave them.
pub struct Start {
    /// `argv`.
    pub args: Vec<&'static CStr>,
    /// `envp`.
    pub env: Vec<&'static CStr>,
    argv: *const *const u8,
    envp: *const *const u8,
}

/// Called by origin's `_start`, once the stack is set up.
///
/// # Safety
///
/// `argv` and `envp` are the NULL-terminated arrays of NUL-terminated strings the kernel put
/// on the initial stack, valid for the whole run; `argc` counts `argv`.
#[unsafe(no_mangle)]
unsafe fn origin_main(argc: usize, argv: *mut *mut u8, envp: *mut *mut u8) -> i32 {
    // SAFETY: as the function's contract says.
    let args = unsafe { strings(argv.cast(), Some(argc)) };
    // SAFETY: as the function's contract says.
    let env = unsafe { strings(envp.cast(), None) };
    sanitize_stdio();
    let start = Start {
        args,
        env,
        argv: argv.cast_const().cast(),
        envp: envp.cast_const().cast(),
    };
    i32::from(crate::main(&start))
}

/// The strings of a NULL-terminated array (the first `count`, if given).
///
/// # Safety
///
/// `array` is a NULL-terminated array of pointers to NUL-terminated strings that live as
/// long as the process.
unsafe fn strings(array: *const *const u8, count: Option<usize>) -> Vec<&'static CStr> {
    let mut strings = Vec::with_capacity(count.unwrap_or(0));
    for index in 0.. {
        if count == Some(index) {
            break;
        }
        // SAFETY: the array is NULL-terminated and we stop at the NULL (or before, at `count`):
        // `index` is within it.
        let entry = unsafe { array.add(index) };
        // SAFETY: `entry` points into the array, which is aligned and initialised.
        let pointer = unsafe { entry.read() };
        if pointer.is_null() {
            break;
        }
        // SAFETY: a non-NULL entry points at a NUL-terminated string that outlives us.
        strings.push(unsafe { CStr::from_ptr(pointer.cast()) });
    }
    strings
}

impl Start {
    /// Replaces this program with `path`, given the same arguments and environment. Returns
    /// only if `execve` failed.
    pub fn exec(&self, path: &CStr) -> Errno {
        // SAFETY: `argv` and `envp` are the kernel's NULL-terminated arrays, unchanged.
        unsafe { rustix::runtime::execve(path, self.argv, self.envp) }
    }
}

/// Descriptors 0, 1 and 2 that are not open are opened on /dev/null, as std does before
/// `main`: otherwise the first descriptor we open (the socket) would become one of them, and
/// be passed to the command as its stdin, stdout or stderr.
fn sanitize_stdio() {
    // SAFETY: only polled (one system call for the three, as std does), never used as open: a
    // closed descriptor comes back as POLLNVAL.
    let fds = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    let mut polled = fds
        .map(|fd| rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::empty()));
    if rustix::event::poll(&mut polled, Some(&rustix::time::Timespec::default())).is_err() {
        return;
    }
    for fd in &polled {
        if fd.revents().contains(rustix::event::PollFlags::NVAL) {
            // The lowest free descriptor: this one. Kept open for the whole run.
            match rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR,
                rustix::fs::Mode::empty(),
            ) {
                Ok(null) => core::mem::forget(null),
                Err(_) => rustix::runtime::exit_group(i32::from(deputy_quick::exit::ERROR)),
            }
        }
    }
}

/// Our standard input.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: descriptor 0 is open (see `sanitize_stdio`) and the launcher never closes it.
    unsafe { rustix::stdio::stdin() }
}

/// Our standard output.
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: descriptor 1 is open (see `sanitize_stdio`) and the launcher never closes it.
    unsafe { rustix::stdio::stdout() }
}

/// Our standard error.
pub fn stderr() -> BorrowedFd<'static> {
    // SAFETY: descriptor 2 is open (see `sanitize_stdio`) and the launcher never closes it.
    unsafe { rustix::stdio::stderr() }
}

/// The write end of the pipe `on_signal` writes to; -1 until `catch`.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

/// Catches `signals`: from now on each one that arrives is a byte (its number) in the pipe
/// whose read end this returns, and no longer ends the process.
pub fn catch(signals: &[Signal]) -> Result<OwnedFd, Errno> {
    let (reader, writer) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )?;
    // Open for the rest of the run: the handler may write to it at any time.
    SIGNAL_PIPE.store(writer.into_raw_fd(), Ordering::Release);
    for &signal in signals {
        let action = Sigaction {
            sa_handler_kernel: Some(on_signal),
            sa_flags: SigactionFlags::RESTART,
            sa_restorer: None,
            sa_mask: rustix::runtime::KernelSigSet::empty(),
        };
        // SAFETY: the handler only loads an atomic and writes to a pipe, both safe in a
        // signal handler; it touches no allocator, lock or errno.
        unsafe { origin::signal::sigaction(signal, Some(action)) }?;
    }
    Ok(reader)
}

/// Ignores `signal` (best effort).
pub fn ignore(signal: Signal) {
    let action = Sigaction {
        sa_handler_kernel: origin::signal::sig_ign(),
        sa_flags: SigactionFlags::empty(),
        sa_restorer: None,
        sa_mask: rustix::runtime::KernelSigSet::empty(),
    };
    // SAFETY: ignoring a signal installs no code of ours.
    let _ = unsafe { origin::signal::sigaction(signal, Some(action)) };
}

/// The handler of the caught signals: their number, into the pipe.
extern "C" fn on_signal(signal: c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Acquire);
    if fd >= 0 {
        // SAFETY: `catch` stored an open descriptor that is never closed.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        // A full pipe (64 KiB of signals not yet read) drops this one.
        let _ = rustix::io::write(fd, &[signal as u8]);
    }
}
