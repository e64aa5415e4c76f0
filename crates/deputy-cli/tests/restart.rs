//! deputyd killed with SIGKILL while sessions are live and their processes run: the next
//! deputyd finds every session in the records its predecessor kept, and either adopts the
//! running processes (the default) or ends them (`on_restart = "end"`), with an audit line
//! for each — and leaves no session, PAM session, process or grant behind once they are over.
//!
//! Two sessions are live when deputyd dies: alice's peer session (`deputy run -- sleep`), and
//! a PAM logon session of alice's that bob opened with her password, holding an ACL grant on a
//! socket of bob's.

#![allow(clippy::unwrap_used)]
// test helpers: a panic is the failure report
// The CLIs are waited for once deputyd dies; a test that panics first leaves them to exit when
// their daemon does (the test's Drop stops it).
#![allow(clippy::zombie_processes)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{ALICE, BOB, Daemon, text};

/// A socket of bob's in a directory only bob may enter, and how alice would reach it.
struct BobsSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    _listener: std::os::unix::net::UnixListener,
}

impl BobsSocket {
    fn new() -> BobsSocket {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("bob-only");
        std::fs::create_dir(&private).unwrap();
        let path = private.join("display-0");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let bob_uid: u32 = text(
            &common::as_user(BOB, "id")
                .arg("-u")
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .parse()
        .unwrap();
        std::os::unix::fs::chown(&private, Some(bob_uid), None).unwrap();
        std::os::unix::fs::chown(&path, Some(bob_uid), None).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        BobsSocket {
            _dir: dir,
            path,
            _listener: listener,
        }
    }

    fn alice_connects(&self) -> bool {
        let probe = format!(
            "use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0); exit(connect($s, pack_sockaddr_un('{}')) ? 0 : 1)",
            self.path.display()
        );
        common::as_user(ALICE, "perl")
            .args(["-e", &probe])
            .status()
            .unwrap()
            .success()
    }
}

/// The two sessions, each running `sleep 60`; returns the two CLIs.
fn live_sessions(daemon: &Daemon, socket: &Path) -> (Child, Child) {
    let peer = daemon
        .deputy(Some(ALICE), &["run", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut logon = daemon
        .deputy(
            Some(BOB),
            &[
                "run",
                "-u",
                ALICE,
                "--password-stdin",
                "--grant",
                socket.to_str().unwrap(),
                "--",
                "sleep",
                "60",
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    logon
        .stdin
        .take()
        .unwrap()
        .write_all(b"dpt-alice-pw\n")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sessions = daemon.sessions(None);
        let running = sessions
            .iter()
            .filter(|s| s["processes"].as_array().is_some_and(|p| p.len() == 1))
            .count();
        if running == 2 {
            daemon.wait_for_recorded_processes(2);
            return (peer, logon);
        }
        assert!(
            Instant::now() < deadline,
            "the sessions never started: {sessions:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The session workers deputyd (`daemon_pid`) has started: its children named so.
fn workers(daemon_pid: u32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let (name, rest) = stat.rsplit_once(')').unwrap_or_default();
                name.contains("(deputy-session")
                    && rest.split_whitespace().nth(1) == Some(&daemon_pid.to_string())
            })
        })
        .collect()
}

/// Whether `pid` still names a live (not zombie) process.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !state.is_some_and(|s| s.starts_with('Z'))
    })
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The audit lines once `count` logoff lines are in: a session's end writes that one last.
fn after_logoffs(daemon: &Daemon, count: usize) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    wait_until("the logoff lines never came", 15, || {
        lines = daemon.audit_lines();
        lines.iter().filter(|l| l["event"] == "logoff").count() >= count
    });
    lines
}

fn pids(sessions: &[serde_json::Value]) -> Vec<i64> {
    let mut pids: Vec<i64> = sessions
        .iter()
        .flat_map(|s| {
            s["processes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_i64().unwrap())
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn ids(sessions: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = sessions
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_killed_daemons_sessions_are_adopted_by_the_next_and_end_with_their_processes() {
    require_root!();
    let mut daemon = Daemon::start("");
    let socket = BobsSocket::new();
    let (mut peer, mut logon) = live_sessions(&daemon, &socket.path);
    let before = daemon.sessions(None);
    let workers_before = workers(daemon.process.id());
    assert!(!workers_before.is_empty(), "no session worker was found");
    assert!(socket.alice_connects(), "the grant is in place");

    daemon.kill_and_restart();
    // The clients lose their daemon; the processes they started run on.
    let _ = (peer.wait(), logon.wait());
    let after = daemon.sessions(None);
    assert_eq!(ids(&after), ids(&before), "the same sessions: {after:?}");
    assert_eq!(pids(&after), pids(&before), "with the same processes");
    assert!(pids(&after).iter().all(|&pid| alive(pid)));
    assert!(
        socket.alice_connects(),
        "the grant stays while its session lives"
    );
    let recovered: Vec<_> = daemon
        .audit_lines()
        .into_iter()
        .filter(|l| l["event"] == "session_recovered")
        .collect();
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    assert!(
        recovered.iter().all(|l| l["action"] == "adopt"),
        "{recovered:?}"
    );

    // An adopted logon session holds its processes to their end, but starts no new one.
    let logon_id = after.iter().find(|s| s["owner"] != s["uid"]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = daemon.run(
        Some(BOB),
        &["run", "--session", &logon_id, "--", "true"],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("adopted"),
        "{}",
        text(&refused.stderr)
    );
    // Alice logs her adopted peer session off through the new daemon (SIGTERM through the
    // adopted process's pidfd); the logon session's process ends by itself (killed here).
    let peer_session = after.iter().find(|s| s["owner"] == s["uid"]).unwrap();
    let peer_pid = peer_session["processes"][0].as_i64().unwrap();
    let logoff = daemon.run(
        Some(ALICE),
        &["logoff", peer_session["id"].as_str().unwrap()],
        "",
    );
    assert!(logoff.status.success(), "{}", text(&logoff.stderr));
    assert!(!alive(peer_pid), "the logoff ended the adopted process");
    let logon_pid = after.iter().find(|s| s["owner"] != s["uid"]).unwrap()["processes"][0]
        .as_i64()
        .unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(logon_pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    wait_until("the adopted sessions never ended", 15, || {
        daemon.sessions(None).is_empty()
    });
    assert!(
        !socket.alice_connects(),
        "the grant is revoked with its session"
    );
    wait_until("a session worker outlived its PAM session", 15, || {
        workers_before.iter().all(|&pid| !alive(i64::from(pid)))
    });
    let lines = after_logoffs(&daemon, 2);
    let exits = lines
        .iter()
        .filter(|l| l["event"] == "process_exit" && l["adopted"] == true)
        .count();
    assert_eq!(exits, 2, "an exit line for each adopted process");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "process_exit" && l["pid"] == peer_pid)
    );
    let logoffs = lines.iter().filter(|l| l["event"] == "logoff").count();
    assert_eq!(logoffs, 2, "a logoff line for each session");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "grant_removed" && l["session"] == logon_id.as_str()),
        "the grant's removal is audited"
    );
    let records = std::fs::read_dir(daemon.dir.path().join("sessions"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "no session record is left");
}

#[test]
fn with_on_restart_end_a_killed_daemons_sessions_are_ended_by_the_next() {
    require_root!();
    let mut daemon = Daemon::start("");
    let socket = BobsSocket::new();
    let (mut peer, mut logon) = live_sessions(&daemon, &socket.path);
    let running = pids(&daemon.sessions(None));
    let workers_before = workers(daemon.process.id());

    daemon.kill_and_restart_with("on_restart = \"end\"");
    let _ = (peer.wait(), logon.wait());
    wait_until("the sessions were not ended", 15, || {
        daemon.sessions(None).is_empty()
    });
    assert!(
        running.iter().all(|&pid| !alive(pid)),
        "their processes are gone"
    );
    assert!(!socket.alice_connects(), "the grant is revoked");
    wait_until("a session worker outlived its PAM session", 15, || {
        workers_before.iter().all(|&pid| !alive(i64::from(pid)))
    });
    let lines = after_logoffs(&daemon, 2);
    let recovered = lines
        .iter()
        .filter(|l| l["event"] == "session_recovered" && l["action"] == "end")
        .count();
    assert_eq!(recovered, 2);
    let logoffs = lines
        .iter()
        .filter(|l| {
            l["event"] == "logoff"
                && l["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("on_restart"))
        })
        .count();
    assert_eq!(logoffs, 2, "a logoff line for each session");
    assert!(lines.iter().any(|l| l["event"] == "grant_removed"));
    let records = std::fs::read_dir(daemon.dir.path().join("sessions"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "no session record is left");
}
