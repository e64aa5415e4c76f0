//! What `deputy` reads and says on its quick path, shared by the launcher and the full CLI.
//!
//! `deputy` is two programs. The one people run, the launcher (`launch/`), is built without
//! libc or std: a process that links glibc pays about 0.3 ms of start-up on every run (its
//! CPU feature and cache probes, each a trapped CPUID on a virtual machine, and its
//! relocations), a fifth of a whole `deputy run -- /bin/true`. The launcher serves the plain
//! `deputy run` lines itself and hands every other line to the full CLI, `deputy-cli`, built
//! with clap and tokio, installed next to it.
//!
//! This crate is what the two must agree on, so it exists once: the plain line's grammar
//! ([`mod@line`]), the calls and replies as bytes ([`wire`]), and the exit codes and failures
//! ([`exit`]). No I/O, and no std: `alloc` is enough.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod exit;
pub mod line;
pub mod wire;
