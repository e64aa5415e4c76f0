//! Floods, bounded in time: 10,000 connections held open, 1,000 clients sending a byte a
//! second, 1,000 wrong-password logons at once, 100 clients each passing the most descriptors
//! a message may carry. During each, another user's `deputy run` still works; afterwards the
//! daemon holds the descriptors it held before, no session or process is left, and its memory
//! is within a bound of what it was; each flood runs twice, and a second flood may not leave
//! more memory behind than the first. (How fast the other user's start stays during a flood is a
//! benchmark's business: bench/run, docs/BENCHMARKS.md.)
//!
//! The flooding clients are small Python programs (floods.py, shared with bench/run) run as
//! dpt-bob; the well-behaved client is the CLI as dpt-alice.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ALICE, BOB, Daemon, text};

/// The flood programs (shared with bench/run): `floods.py SOCKET KIND N [SECONDS]`.
const FLOODS: &str = include_str!("floods.py");

/// Starts the flood `kind` (see floods.py) as dpt-bob and waits for its "ready" line.
fn flood(daemon: &Daemon, kind: &str, args: &[&str]) -> Child {
    let mut child = common::as_user(BOB, "/usr/bin/python3")
        .arg("-c")
        .arg(FLOODS)
        .arg(&daemon.socket)
        .arg(kind)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the flood did not start");
    child
}

fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// What the daemon holds: open descriptors and resident memory (KiB).
fn held(daemon: &Daemon) -> (usize, u64) {
    let pid = daemon.process.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap();
    (fds, rss)
}

/// Alice's start works (five times).
fn alice_runs(daemon: &Daemon, during: &str) {
    for _ in 0..5 {
        let out = daemon.run(Some(ALICE), &["run", "--", "true"], "");
        assert!(out.status.success(), "{during}: {}", text(&out.stderr));
    }
}

/// Afterwards: the descriptors the daemon held before, memory within `margin_kib` of it, no
/// session. Returns the resident memory then (KiB).
fn settled(daemon: &Daemon, before: (usize, u64), margin_kib: u64, after: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = held(daemon);
        if now.0 <= before.0 && daemon.sessions(None).is_empty() {
            assert!(
                now.1 <= before.1 + margin_kib,
                "{after}: RSS {} KiB, {} KiB before",
                now.1,
                before.1
            );
            return now.1;
        }
        assert!(
            Instant::now() < deadline,
            "{after}: {} descriptors held, {} before; sessions {:?}",
            now.0,
            before.0,
            daemon.sessions(None)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `flood` twice, each time checking that the daemon settles back within `margin_kib`.
/// The allocator keeps freed memory for reuse and the blocking pool keeps idle threads (with
/// their stacks and arenas) for a while, so what the first flood leaves can be megabytes above
/// `before`; a leak shows as growth from the first flood to the second.
fn twice(daemon: &Daemon, before: (usize, u64), margin_kib: u64, what: &str, flood: impl Fn()) {
    let mut after = Vec::new();
    for round in ["first", "second"] {
        flood();
        let rss = settled(
            daemon,
            before,
            margin_kib,
            &format!("after the {round} {what}"),
        );
        eprintln!(
            "after the {round} {what}: RSS {rss} KiB ({} KiB before)",
            before.1
        );
        after.push(rss);
    }
    assert!(
        after[1] <= after[0] + 4 * 1024,
        "RSS grew from {} KiB after the first {what} to {} KiB after the second",
        after[0],
        after[1]
    );
}

fn daemon() -> (Daemon, (usize, u64)) {
    // Connections that never finish a message are closed after 5 s; bob's calls run 64 at a
    // time, so that 1,000 refused logons (each costs the fail delay) take seconds, not minutes.
    let daemon =
        Daemon::start("\n[limits]\nrequest_timeout_secs = 5\nrequests_in_flight_per_uid = 64\n");
    alice_runs(&daemon, "warm-up");
    // A logon leaves a spare session worker ready (its socket and pidfd stay the daemon's).
    let logon = daemon.run(
        Some(ALICE),
        &["run", "-u", ALICE, "--password-stdin", "--", "true"],
        "dpt-alice-pw\n",
    );
    assert!(logon.status.success(), "{}", text(&logon.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let before = held(&daemon);
    (daemon, before)
}

#[test]
fn ten_thousand_held_connections() {
    require_root!();
    let (daemon, before) = daemon();
    twice(
        &daemon,
        before,
        64 * 1024,
        "10,000 held connections",
        || {
            let child = flood(&daemon, "hold", &["10000", "6"]);
            alice_runs(&daemon, "10,000 held connections");
            let (_, rss) = held(&daemon);
            assert!(rss < before.1 + 64 * 1024, "RSS {rss} KiB during the flood");
            finish(child);
        },
    );
}

#[test]
fn a_thousand_slow_clients() {
    require_root!();
    let (daemon, before) = daemon();
    twice(&daemon, before, 32 * 1024, "1,000 slow clients", || {
        let child = flood(&daemon, "slow", &["1000", "4"]);
        alice_runs(&daemon, "1,000 slow clients");
        finish(child);
    });
}

#[test]
fn a_thousand_wrong_passwords_at_once() {
    require_root!();
    let (daemon, before) = daemon();
    twice(&daemon, before, 32 * 1024, "1,000 wrong passwords", || {
        let child = flood(&daemon, "wrong", &["1000"]);
        alice_runs(&daemon, "1,000 wrong passwords");
        let out = finish(child);
        assert_eq!(
            count(&out, "errors"),
            1000,
            "every wrong password got an error: {out}"
        );
    });
}

#[test]
fn a_hundred_clients_passing_the_most_descriptors() {
    require_root!();
    let (daemon, before) = daemon();
    twice(
        &daemon,
        before,
        16 * 1024,
        "100 clients passing descriptors",
        || {
            let child = flood(&daemon, "fds", &["100"]);
            alice_runs(&daemon, "100 clients passing 16 descriptors");
            let out = finish(child);
            assert_eq!(
                count(&out, "replies"),
                100,
                "every client got a reply: {out}"
            );
        },
    );
}

/// The number after `word` in a flood script's output.
fn count(out: &str, word: &str) -> usize {
    out.split_whitespace()
        .skip_while(|w| *w != word)
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of {word} in: {out}"))
}
