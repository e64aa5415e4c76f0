//! Network credentials, proved with a real KDC: a client logged on through pam_krb5 reaches a
//! Kerberos service as itself, and its tickets end with its session; a process started through
//! impersonation has no tickets, unless the client delegates its own; a network logon leaves
//! none; new_credentials runs as the caller with the other user's tickets.
//!
//! Each test starts its own realm (tests/common/kdc.rs) and a deputyd that authenticates through
//! the `deputy-krb5-test` stack (pam_krb5 only), with KRB5_CONFIG pointing at that realm.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::kdc::{ALICE_KRB, BOB_KRB, Kdc, REALM, SERVICE};
use common::{ALICE, BOB, Daemon, text};

/// The tests look at every ticket cache of dpt-alice and dpt-bob in /tmp: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A realm and a deputyd that logs on through it (and the right to look at the test users'
/// caches). Callers may pass KRB5_CONFIG, so that kvno in the started process finds the realm.
fn realm_and_daemon() -> (std::sync::MutexGuard<'static, ()>, Kdc, Daemon) {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let kdc = Kdc::start();
    let daemon = Daemon::start_with(
        "deputy-krb5-test",
        "\n[environment]\nallow = [\"PATH\", \"KRB5_CONFIG\"]\n",
        &[("KRB5_CONFIG", &kdc.config)],
    );
    (serial, kdc, daemon)
}

fn uid(user: &str) -> u32 {
    deputy::Token::for_user(user).unwrap().uid().as_raw()
}

/// Ticket caches in /tmp that belong to `user`: the pam_krb5 and deputy ones are all named
/// krb5cc_UID_*.
fn caches_of(user: &str) -> Vec<PathBuf> {
    let prefix = format!("krb5cc_{}_", uid(user));
    let mut found: Vec<PathBuf> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found
}

/// The value of `NAME=` in a line of `out`.
fn field(out: &str, name: &str) -> Option<String> {
    out.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .map(str::to_owned)
}

const SHOW: &str = "echo CC=${KRB5CCNAME-unset}; id -un; klist; kvno deputy/resource";

#[test]
fn a_logon_brings_tickets_that_reach_a_service_and_end_with_the_session() {
    require_root!();
    let (_serial, kdc, daemon) = realm_and_daemon();
    for logon_type in ["interactive", "batch", "service"] {
        let before = caches_of(ALICE);
        let out = daemon.run(
            Some(ALICE),
            &[
                "run",
                "-u",
                ALICE,
                "--password-stdin",
                "--logon-type",
                logon_type,
                "--keep-session",
                "--env",
                &kdc.env(),
                "--",
                "sh",
                "-c",
                SHOW,
            ],
            &format!("{ALICE_KRB}\n"),
        );
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{logon_type}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("Default principal: {ALICE}@{REALM}")),
            "{logon_type}: {stdout}"
        );
        assert!(
            stdout.contains(&format!("{SERVICE}@{REALM}: kvno")),
            "{logon_type}: the service was not reached: {stdout}{}",
            text(&out.stderr)
        );
        // The cache is the user's, named in KRB5CCNAME, and lives as long as the session.
        let name = field(&stdout, "CC").unwrap();
        let path = PathBuf::from(name.strip_prefix("FILE:").unwrap_or(&name));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.uid(),
            uid(ALICE),
            "{logon_type}: owner of {}",
            path.display()
        );
        assert_eq!(
            meta.mode() & 0o077,
            0,
            "{logon_type}: mode of {}",
            path.display()
        );
        let sessions = daemon.sessions(Some(ALICE));
        let session = sessions
            .iter()
            .find(|s| s["kind"] == logon_type)
            .unwrap_or_else(|| panic!("no {logon_type} session in {sessions:?}"));
        let id = session["id"].as_str().unwrap();
        let off = daemon.run(Some(ALICE), &["logoff", id], "");
        assert!(off.status.success(), "{}", text(&off.stderr));
        assert!(
            !path.exists(),
            "{logon_type}: {} outlived the session",
            path.display()
        );
        assert_eq!(
            caches_of(ALICE),
            before,
            "{logon_type}: a cache was left behind"
        );
    }
}

#[test]
fn a_wrong_kerberos_password_fails_even_where_the_local_one_would_match() {
    require_root!();
    let (_serial, kdc, daemon) = realm_and_daemon();
    // dpt-alice-pw is alice's local password: pam_unix would take it, pam_krb5 does not.
    let args = [
        "run",
        "-u",
        ALICE,
        "--password-stdin",
        "--env",
        &kdc.env(),
        "--",
        "true",
    ];
    let out = daemon.run(Some(ALICE), &args, "dpt-alice-pw\n");
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    let out = daemon.run(Some(ALICE), &args, &format!("{ALICE_KRB}\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_network_logon_leaves_no_tickets() {
    require_root!();
    let (_serial, kdc, daemon) = realm_and_daemon();
    let before = caches_of(ALICE);
    let out = daemon.run(
        Some(ALICE),
        &[
            "run",
            "-u",
            ALICE,
            "--password-stdin",
            "--logon-type",
            "network",
            "--env",
            &kdc.env(),
            "--",
            "true",
        ],
        &format!("{ALICE_KRB}\n"),
    );
    // The logon succeeds (the KDC said yes); a network logon has nothing to start with.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no credentials to start processes with"),
        "{stderr}"
    );
    let log = std::fs::read_to_string(kdc.dir.path().join("kdc.log")).unwrap_or_default();
    assert!(
        log.contains("ISSUE") && log.contains(ALICE),
        "the KDC was not asked: {log}"
    );
    assert_eq!(caches_of(ALICE), before, "a network logon left a cache");
    let pam_temp = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("krb5cc_pam_"))
        .count();
    assert_eq!(pam_temp, 0, "pam_krb5's temporary cache outlived the logon");
}

#[test]
fn an_impersonated_process_has_no_tickets_unless_the_caller_delegates_its_own() {
    require_root!();
    let (_serial, kdc, daemon) = realm_and_daemon();
    // Without delegation: no cache, no KRB5CCNAME — not the daemon's, not anyone's.
    let default_cache = format!("/tmp/krb5cc_{}", uid(ALICE));
    let _ = std::fs::remove_file(&default_cache);
    let out = daemon.run(
        Some(ALICE),
        &["run", "--env", &kdc.env(), "--", "sh", "-c", SHOW],
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(field(&stdout, "CC").as_deref(), Some("unset"), "{stdout}");
    assert!(
        stderr.contains("No credentials cache found"),
        "klist should find no cache: {stdout}{stderr}"
    );

    // With delegation: the caller's own tickets, in a cache of the run's session only.
    let private = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(private.path(), Some(uid(ALICE)), None).unwrap();
    let own = private.path().join("cc");
    kdc.kinit(ALICE, ALICE_KRB, &own);
    let out = daemon
        .deputy(
            Some(ALICE),
            &[
                "run",
                "--delegate",
                "--env",
                &kdc.env(),
                "--",
                "sh",
                "-c",
                SHOW,
            ],
        )
        .env("KRB5CCNAME", format!("FILE:{}", own.display()))
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Default principal: {ALICE}@{REALM}")),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("{SERVICE}@{REALM}: kvno")),
        "{stdout}{stderr}"
    );
    let delegated = field(&stdout, "CC").unwrap();
    let delegated = Path::new(delegated.strip_prefix("FILE:").unwrap());
    assert_ne!(
        delegated, own,
        "the process must get a copy, not the caller's file"
    );
    assert!(!delegated.exists(), "the delegated cache outlived the run");
    assert!(
        own.exists(),
        "the caller's own cache is the caller's business"
    );
    let audit = daemon.audit_lines();
    for event in ["grant_added", "grant_removed"] {
        assert!(
            audit.iter().any(|l| l["event"] == event
                && l["grant"].as_str().unwrap_or("").starts_with("krb5 FILE:")),
            "no {event} line for the delegated cache"
        );
    }

    // Something that is not a cache is refused by name, and nothing is started.
    let out = daemon
        .deputy(Some(ALICE), &["run", "--delegate", "--", "true"])
        .env("KRB5CCNAME", "FILE:/etc/passwd")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("delegateFd"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn netonly_runs_as_the_caller_with_the_other_users_tickets() {
    require_root!();
    let (_serial, kdc, daemon) = realm_and_daemon();
    let before = (caches_of(ALICE), caches_of(BOB));
    let out = daemon.run(
        Some(ALICE),
        &[
            "run",
            "--netonly",
            "-u",
            BOB,
            "--password-stdin",
            "--env",
            &kdc.env(),
            "--",
            "sh",
            "-c",
            SHOW,
        ],
        &format!("{BOB_KRB}\n"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.lines().any(|l| l == ALICE),
        "local identity: {stdout}"
    );
    assert!(
        stdout.contains(&format!("Default principal: {BOB}@{REALM}")),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("{SERVICE}@{REALM}: kvno")),
        "{stdout}{stderr}"
    );
    let copy = field(&stdout, "CC").unwrap();
    assert!(
        copy.starts_with(&format!("FILE:/tmp/krb5cc_{}_", uid(ALICE))),
        "the caller's copy: {copy}"
    );
    assert_eq!(
        (caches_of(ALICE), caches_of(BOB)),
        before,
        "a cache outlived the run"
    );
}

#[test]
fn a_restarted_daemon_destroys_the_tickets_of_the_sessions_it_ends() {
    require_root!();
    let (_serial, kdc, mut daemon) = realm_and_daemon();
    assert!(caches_of(ALICE).is_empty(), "{:?}", caches_of(ALICE));
    // Two sessions with tickets of alice's: a delegated copy of her own, and the cache
    // pam_krb5 made at a logon (bob's, with her Kerberos password).
    let private = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(private.path(), Some(uid(ALICE)), None).unwrap();
    let own = private.path().join("cc");
    kdc.kinit(ALICE, ALICE_KRB, &own);
    let mut delegated = daemon
        .deputy(Some(ALICE), &["run", "--delegate", "--", "sleep", "60"])
        .env("KRB5CCNAME", format!("FILE:{}", own.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut logon = daemon
        .deputy(
            Some(BOB),
            &["run", "-u", ALICE, "--password-stdin", "--", "sleep", "60"],
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut stdin = logon.stdin.take().unwrap();
    writeln!(stdin, "{ALICE_KRB}").unwrap();
    drop(stdin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while caches_of(ALICE).len() < 2
        || daemon
            .sessions(None)
            .iter()
            .filter(|s| !s["processes"].as_array().unwrap().is_empty())
            .count()
            < 2
    {
        if std::time::Instant::now() > deadline {
            let _ = (
                delegated.kill(),
                logon.kill(),
                delegated.wait(),
                logon.wait(),
            );
            panic!("the sessions never started: {:?}", caches_of(ALICE));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    daemon.wait_for_recorded_processes(2);
    daemon.kill_and_restart_with("on_restart = \"end\"");
    let _ = (delegated.wait(), logon.wait());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    // The logoff lines come last, once everything else of a session's end is done.
    let logoffs = |daemon: &Daemon| {
        daemon
            .audit_lines()
            .iter()
            .filter(|l| l["event"] == "logoff")
            .count()
    };
    while !daemon.sessions(None).is_empty() || !caches_of(ALICE).is_empty() || logoffs(&daemon) < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: sessions {:?}, caches {:?}",
            daemon.sessions(None),
            caches_of(ALICE)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        own.exists(),
        "the caller's own cache is the caller's business"
    );
    assert!(
        daemon
            .audit_lines()
            .iter()
            .any(|l| l["event"] == "grant_removed"
                && l["grant"].as_str().unwrap_or("").starts_with("krb5 FILE:")),
        "the delegated cache's destruction is audited"
    );
}
