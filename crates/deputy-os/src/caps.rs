//! The calling thread's capability sets (`capget(2)`, `capset(2)`).

use std::io;

pub use rustix::thread::{CapabilitySet, CapabilitySets};

/// `capget(2)` for the calling thread.
///
/// # Errors
/// Only when the kernel refuses the call, which it does not for the calling thread.
pub fn thread_capabilities() -> io::Result<CapabilitySets> {
    Ok(rustix::thread::capabilities(None)?)
}

/// `capset(2)` for the calling thread. Lowering is always allowed; raising needs the
/// capability in the permitted set (or `CAP_SETPCAP` for the inheritable set).
///
/// # Errors
/// `EPERM` when a set would grow beyond what the thread may hold.
pub fn set_thread_capabilities(sets: CapabilitySets) -> io::Result<()> {
    Ok(rustix::thread::set_capabilities(None, sets)?)
}
