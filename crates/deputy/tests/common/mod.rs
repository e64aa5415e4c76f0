//! Shared by the integration tests: the test accounts and the root requirement.
//!
//! Tests that act on other users need root and the accounts made by `scripts/setup`. In CI
//! (`CI` set) a missing requirement fails the test; elsewhere the test says it was skipped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

pub const ALICE: &str = "dpt-alice";
pub const BOB: &str = "dpt-bob";

/// True when the test can run; otherwise explains why not (panicking in CI).
pub fn privileged() -> bool {
    // libtest names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let why = if !rustix::process::geteuid().is_root() {
        "it needs root"
    } else if deputy::Token::for_user(ALICE).is_err() || deputy::Token::for_user(BOB).is_err() {
        "it needs the dpt- test accounts (run scripts/setup)"
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run: {why}; in CI this is a failure, not a skip");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
    false
}

/// Returns early from a test that cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::privileged() {
            return;
        }
    };
}

/// A pipe: (read end, write end).
pub fn pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    std::io::pipe().expect("pipe")
}

/// Everything readable from `reader` until EOF.
pub fn read_all(mut reader: impl Read) -> String {
    let mut out = String::new();
    reader.read_to_string(&mut out).expect("read");
    out
}

/// A directory in /tmp that every user may enter (tempfile makes 0700 ones).
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Runs `script` with /bin/sh as `user`, returning stdout and the exit status.
pub fn run_sh(user: &str, script: &str) -> (String, deputy::ExitStatus) {
    let token = deputy::Token::for_user(user).expect("token");
    let (reader, writer) = pipe();
    let child = deputy::spawn(
        &token,
        deputy::SpawnRequest::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdout(writer),
    )
    .expect("spawn");
    let out = read_all(reader);
    (out, child.wait().expect("wait"))
}

/// Clears FD_CLOEXEC, as a careless caller (or a C library) might leave an fd.
pub fn make_inheritable(fd: &OwnedFd) {
    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).expect("fcntl");
}
