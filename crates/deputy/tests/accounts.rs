//! The account cache answers as NSS does, and sees a change to the group database at once.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::process::Command;

use common::BOB;
use deputy::Token;

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}: {status}");
}

/// Deletes the group when the test ends, passed or not.
struct TempGroup(String);

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).status();
    }
}

#[test]
fn a_group_change_is_seen_at_once() {
    require_root!();
    let name = format!("dpt-cache-{}", std::process::id());
    let before = Token::for_user(BOB).unwrap();
    // A second lookup is served from the cache, and agrees with the first.
    assert_eq!(Token::for_user(BOB).unwrap().groups(), before.groups());

    run("groupadd", &[&name]);
    let group = TempGroup(name.clone());
    run("gpasswd", &["--add", BOB, &name]);
    let gid = deputy_os::account::group_id(&name).unwrap();
    let during = Token::for_user(BOB).unwrap();
    assert!(during.groups().contains(&gid), "{:?}", during.groups());

    drop(group);
    let after = Token::for_user(BOB).unwrap();
    assert!(!after.groups().contains(&gid), "{:?}", after.groups());
    assert_eq!(after.groups(), before.groups());
}
