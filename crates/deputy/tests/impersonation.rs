//! ImpersonateLoggedOnUser / RevertToSelf: one thread acts as a client, the others do not.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{PermissionsExt, chown};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use common::{ALICE, BOB};
use deputy::{Impersonation, ImpersonationError, ImpersonationLevel, Token};

/// The thread's filesystem uid, the fourth field of the `Uid:` line.
fn thread_fsuid() -> u32 {
    let status = fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// A 0600 file owned by `user`, in a directory everyone may enter.
fn private_file_of(dir: &Path, user: &str) -> PathBuf {
    let token = Token::for_user(user).unwrap();
    let path = dir.join(format!("{user}-secret"));
    fs::write(&path, "secret").unwrap();
    chown(
        &path,
        Some(token.uid().as_raw()),
        Some(token.gid().as_raw()),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn impersonating_alice_on_one_thread_leaves_the_others_root() {
    require_root!();
    let dir = common::open_tempdir();
    let bobs = private_file_of(dir.path(), BOB);
    let alices = private_file_of(dir.path(), ALICE);
    let alice = Token::for_user(ALICE).unwrap();
    let impersonating = Arc::new(Barrier::new(2));
    let checked = Arc::new(Barrier::new(2));

    let other = {
        let (bobs, impersonating, checked) = (bobs.clone(), impersonating.clone(), checked.clone());
        std::thread::spawn(move || {
            impersonating.wait();
            // At this moment the first thread is alice; this one is still root.
            let result = (
                thread_fsuid(),
                fs::read_to_string(&bobs).map(|_| ()).map_err(|e| e.kind()),
            );
            checked.wait();
            result
        })
    };

    let guard = Impersonation::begin(&alice).unwrap();
    impersonating.wait();
    assert_eq!(thread_fsuid(), alice.uid().as_raw());
    assert_eq!(
        fs::read_to_string(&bobs).unwrap_err().kind(),
        ErrorKind::PermissionDenied
    );
    assert_eq!(fs::read_to_string(&alices).unwrap(), "secret");
    checked.wait();
    drop(guard);

    assert_eq!(other.join().unwrap(), (0, Ok(())));
    assert_eq!(thread_fsuid(), 0);
    assert_eq!(
        fs::read_to_string(&bobs).unwrap(),
        "secret",
        "root again after the guard dropped"
    );
}

#[test]
fn impersonation_takes_the_users_groups_and_gives_back_the_threads() {
    require_root!();
    let dir = common::open_tempdir();
    // A 0060 file of group dpt-shared: readable through the group only.
    let shared = dir.path().join("shared");
    fs::write(&shared, "for the group").unwrap();
    let alice = Token::for_user(ALICE).unwrap();
    let shared_gid = alice
        .groups()
        .iter()
        .copied()
        .find(|g| *g != alice.gid())
        .expect("dpt-shared");
    chown(&shared, Some(0), Some(shared_gid.as_raw())).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o060)).unwrap();
    let before = rustix::process::getgroups().unwrap();
    {
        let _as_alice = Impersonation::begin(&alice).unwrap();
        assert_eq!(fs::read_to_string(&shared).unwrap(), "for the group");
    }
    assert_eq!(rustix::process::getgroups().unwrap(), before);
}

#[test]
fn a_panic_inside_the_guard_reverts() {
    require_root!();
    let dir = common::open_tempdir();
    let bobs = private_file_of(dir.path(), BOB);
    let alice = Token::for_user(ALICE).unwrap();
    std::thread::spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let _as_alice = Impersonation::begin(&alice).unwrap();
            assert_eq!(thread_fsuid(), alice.uid().as_raw());
            panic!("a bug while impersonating");
        }));
        assert!(result.is_err());
        assert_eq!(thread_fsuid(), 0);
        assert_eq!(fs::read_to_string(&bobs).unwrap(), "secret");
    })
    .join()
    .unwrap();
}

#[test]
fn an_identification_token_cannot_impersonate() {
    let (server, _client) = std::os::unix::net::UnixStream::pair().unwrap();
    let token = Token::from_peer(&server, ImpersonationLevel::Identification).unwrap();
    let err = Impersonation::begin(&token).unwrap_err();
    assert!(matches!(
        err,
        ImpersonationError::IdentificationOnly {
            level: ImpersonationLevel::Identification,
            ..
        }
    ));
    let token = Token::from_peer(&server, ImpersonationLevel::Impersonation).unwrap();
    drop(Impersonation::begin(&token).unwrap());
}
