//! Floods, bounded in time: 10,000 connections held open, 1,000 clients sending a byte a
//! second, 1,000 wrong-password logons at once, 100 clients each passing the most descriptors
//! a message may carry. During each, another user's `deputy run` still works; afterwards the
//! daemon holds the descriptors it held before, no session or process is left, and its memory
//! is within a bound of what it was; each flood runs twice, and a second flood may not leave
//! more memory behind than the first. (How fast the other user's start stays during a flood is a
//! benchmark's business: bench/run, docs/BENCHMARKS.md.)
//!
//! The flooding clients are small Python programs run as dpt-bob; the well-behaved client is
//! the CLI as dpt-alice.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ALICE, BOB, Daemon, text};

/// Opens `n` connections and holds them for `seconds`.
const HOLD: &str = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
print("ready", flush=True)
time.sleep(seconds)
"#;

/// `n` connections, each sending a valid message one byte a second for `seconds`.
const SLOW: &str = r#"
import socket, sys, time
path, n, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
message = b'{"method":"io.deputy.GetToken"}\0'
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setblocking(False)
    conns.append(s)
print("ready", flush=True)
end = time.time() + seconds
i = 0
while time.time() < end and i < len(message):
    for s in conns:
        try:
            s.send(message[i:i + 1])
        except OSError:
            pass
    i += 1
    time.sleep(1)
"#;

/// `n` connections, each sending one Logon of dpt-alice with a wrong password, all at once;
/// prints how many got an error reply.
const WRONG: &str = r#"
import socket, sys, select
path, n = sys.argv[1], int(sys.argv[2])
call = b'{"method":"io.deputy.Logon","parameters":{"user":"dpt-alice","password":"wrong-password"}}\0'
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)
print("ready", flush=True)
for s in conns:
    s.sendall(call)
errors = 0
for s in conns:
    s.settimeout(60)
    try:
        if b'"error"' in s.recv(65536):
            errors += 1
    except OSError:
        pass
print("errors", errors, flush=True)
"#;

/// `n` connections, each passing 16 descriptors with a GetToken call.
const FDS: &str = r#"
import socket, sys, array, os
path, n = sys.argv[1], int(sys.argv[2])
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(16)]
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)
print("ready", flush=True)
for s in conns:
    s.sendmsg([b'{"method":"io.deputy.GetToken"}\0'],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
replies = 0
for s in conns:
    s.settimeout(30)
    try:
        if s.recv(65536):
            replies += 1
    except OSError:
        pass
print("replies", replies, flush=True)
"#;

/// Starts `script` as dpt-bob and waits for its "ready" line.
fn flood(daemon: &Daemon, script: &str, args: &[&str]) -> Child {
    let mut child = common::as_user(BOB, "/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&daemon.socket)
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
            let child = flood(&daemon, HOLD, &["10000", "6"]);
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
        let child = flood(&daemon, SLOW, &["1000", "4"]);
        alice_runs(&daemon, "1,000 slow clients");
        finish(child);
    });
}

#[test]
fn a_thousand_wrong_passwords_at_once() {
    require_root!();
    let (daemon, before) = daemon();
    twice(&daemon, before, 32 * 1024, "1,000 wrong passwords", || {
        let child = flood(&daemon, WRONG, &["1000"]);
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
            let child = flood(&daemon, FDS, &["100"]);
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
