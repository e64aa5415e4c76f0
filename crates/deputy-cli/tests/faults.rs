//! Faults: an audit log on a full disk. What happens is what the configuration says — refuse
//! new work, or continue and report — and no line is lost silently.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ALICE, Daemon, text};

/// A 64 KiB tmpfs, unmounted when dropped: a disk that can be filled and emptied.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "deputy-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs (needs root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Fills the disk to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1k", "count=1024"])
            .arg(format!("of={}", self.filler().display()))
            .stderr(std::process::Stdio::null())
            .status();
        // Whatever dd left: byte by byte, as long as the disk takes them.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.filler())
            .unwrap();
        use std::io::Write;
        while file.write_all(&[0]).is_ok() {}
    }

    fn empty(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The events of the audit file's complete lines (a full disk may have taken part of the last).
fn events(audit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    complete
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn start(disk: &SmallDisk, policy: &str) -> (Daemon, PathBuf) {
    let audit = disk.path().join("audit.jsonl");
    let daemon = Daemon::start_audited(&audit, &format!("on_audit_failure = \"{policy}\"\n"));
    (daemon, audit)
}

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| *e == name).count()
}

#[test]
fn a_full_audit_disk_refuses_new_work_until_the_lines_are_written() {
    require_root!();
    let disk = SmallDisk::mount();
    let (daemon, audit) = start(&disk, "refuse");
    let run = || daemon.run(Some(ALICE), &["run", "--", "true"], "");
    assert!(run().status.success());
    disk.fill();
    // The audit file's last page still has room for a few lines; then a start is refused.
    let mut admitted = 1;
    let refused = loop {
        let out = run();
        if !out.status.success() {
            break out;
        }
        admitted += 1;
        assert!(admitted < 100, "the full disk was never noticed");
    };
    assert_eq!(
        refused.status.code(),
        Some(125),
        "{}",
        text(&refused.stderr)
    );
    assert!(
        text(&refused.stderr).contains("the audit log cannot be written"),
        "{}",
        text(&refused.stderr)
    );
    let logon = daemon.run(
        Some(ALICE),
        &["run", "-u", ALICE, "--password-stdin", "--", "true"],
        "dpt-alice-pw\n",
    );
    assert_eq!(logon.status.code(), Some(125), "{}", text(&logon.stderr));
    // Room again: the held-back lines are written, in order, and work goes on.
    disk.empty();
    assert!(run().status.success());
    let events = events(&audit);
    assert_eq!(count(&events, "process_start"), admitted + 1, "{events:?}");
    assert_eq!(count(&events, "process_exit"), admitted + 1, "{events:?}");
    assert_eq!(count(&events, "audit_lost"), 0, "{events:?}");
}

#[test]
fn a_full_audit_disk_with_continue_goes_on_and_writes_the_lines_later() {
    require_root!();
    let disk = SmallDisk::mount();
    let (daemon, audit) = start(&disk, "continue");
    disk.fill();
    for _ in 0..20 {
        let out = daemon.run(Some(ALICE), &["run", "--", "true"], "");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let written = count(&events(&audit), "process_start");
    assert!(
        written < 20,
        "the disk never filled ({written} starts written)"
    );
    disk.empty();
    let out = daemon.run(Some(ALICE), &["run", "--", "true"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events = events(&audit);
    assert_eq!(
        count(&events, "process_start"),
        21,
        "every start is in the log once the disk has room: {events:?}"
    );
}

/// Sends `calls` (one Varlink message each) as `user` on one connection, reads `replies`
/// replies, then vanishes: the process exits without closing anything cleanly.
fn vanish_after(daemon: &Daemon, user: &str, calls: &[&str], replies: usize) {
    let script = format!(
        "import socket,sys,os\ns=socket.socket(socket.AF_UNIX)\ns.connect({socket:?})\nfor c in sys.argv[1:]:\n    s.sendall(c.encode()+b'\\0')\nn=0\nb=b''\nwhile n<{replies}:\n    c=s.recv(4096)\n    if not c: break\n    b+=c\n    n=b.count(b'\\0')\nos._exit(0)",
        socket = daemon.socket.display().to_string()
    );
    let out = common::as_user(user, "/usr/bin/python3")
        .arg("-c")
        .arg(&script)
        .args(calls)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Processes of `user` whose command line is exactly `cmdline` (NUL-separated).
fn processes_of(user: &str, cmdline: &[u8]) -> usize {
    let uid = deputy::Token::for_user(user).unwrap().uid().as_raw();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            use std::os::unix::fs::MetadataExt;
            e.metadata().is_ok_and(|m| m.uid() == uid)
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == cmdline)
        })
        .count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_client_that_vanishes_at_any_stage_leaves_nothing_behind() {
    require_root!();
    let daemon = Daemon::start("");
    let pid = daemon.process.id();
    // Warm up (a logon leaves a spare session worker ready: its socket and pidfd are the
    // daemon's from then on), then count.
    assert!(
        daemon
            .run(Some(ALICE), &["run", "--", "true"], "")
            .status
            .success()
    );
    let logon = daemon.run(
        Some(ALICE),
        &["run", "-u", ALICE, "--password-stdin", "--", "true"],
        "dpt-alice-pw\n",
    );
    assert!(logon.status.success(), "{}", text(&logon.stderr));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let fds_before = open_fds(pid);

    // 1. In the middle of a logon conversation: the prompt came, no answer will.
    vanish_after(
        &daemon,
        ALICE,
        &[
            r#"{"method":"io.deputy.BeginLogon","parameters":{"user":"dpt-alice","logonType":"batch"}}"#,
        ],
        1,
    );
    // 2. Right after asking for a process, before reading the pid.
    let sleeper = b"sleep\x0030.5\x00";
    vanish_after(
        &daemon,
        ALICE,
        &[
            r#"{"method":"io.deputy.CreateProcess","parameters":{"argv":["sleep","30.5"]},"more":true}"#,
        ],
        0,
    );
    // 3. After the pid, while the process runs (mid-stream).
    vanish_after(
        &daemon,
        ALICE,
        &[
            r#"{"method":"io.deputy.CreateProcess","parameters":{"argv":["sleep","30.5"]},"more":true}"#,
        ],
        1,
    );
    wait_until("the vanished clients' processes were not ended", || {
        processes_of(ALICE, sleeper) == 0
    });
    wait_until("sessions were left behind", || {
        daemon.sessions(None).is_empty()
    });
    // Everyone else carries on, and the daemon holds what it held before.
    assert!(
        daemon
            .run(Some(ALICE), &["run", "--", "true"], "")
            .status
            .success()
    );
    let listing = || {
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| format!("{:?}", std::fs::read_link(e.path()).unwrap_or_default()))
            .collect();
        fds.sort();
        fds
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_fds(pid) > fds_before {
        assert!(
            std::time::Instant::now() < deadline,
            "deputyd holds more descriptors than before ({fds_before}): {:?}",
            listing()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let gone = daemon
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "client_gone")
        .count();
    assert!(gone >= 1, "the vanished clients are audited");
}
