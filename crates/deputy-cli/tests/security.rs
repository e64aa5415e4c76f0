//! Security properties, tested through a real deputyd: what a started process can see of the
//! daemon (descriptors, capabilities, environment) on every path; identity fields in requests;
//! checks made as the client.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{ALICE, Daemon, text};

/// Prints the descriptors (one number per line: ls lists the shell's from outside it, and no
/// pipeline, whose pipe the shell would hold), capabilities and environment of the started
/// shell itself.
const INSPECT: &str =
    "ls -1 /proc/$$/fd; grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/$$/status; echo ENV; env";

fn check_inspection(path: &str, out: &std::process::Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{path}: {stdout}{}",
        text(&out.stderr)
    );
    let (head, environment) = stdout.split_once("ENV\n").unwrap();
    let fds: Vec<&str> = head
        .lines()
        .filter(|l| l.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "{path}: descriptors beyond stdio: {stdout}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("Cap")) {
        let value = line.split_whitespace().nth(1).unwrap();
        assert_eq!(value, "0000000000000000", "{path}: {line}");
    }
    let names: Vec<&str> = environment
        .lines()
        .map(|l| l.split('=').next().unwrap())
        .collect();
    for leaked in [
        "DEPUTY_DAEMON_MARKER",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "DEPUTY_LOG",
        "KRB5CCNAME",
    ] {
        assert!(
            !names.contains(&leaked),
            "{path}: {leaked} reached the process: {names:?}"
        );
    }
    assert!(
        names.contains(&"HOME") && names.contains(&"PATH"),
        "{path}: {names:?}"
    );
}

#[test]
fn a_started_process_holds_no_daemon_descriptor_capability_or_environment() {
    require_root!();
    let marker = std::env::temp_dir().join("deputy-daemon-marker");
    let daemon = Daemon::start_with(
        "deputy-test",
        "",
        &[
            ("DEPUTY_DAEMON_MARKER", marker.as_path()),
            ("NOTIFY_SOCKET", std::path::Path::new("/nonexistent/notify")),
        ],
    );
    let inspect = ["--no-pty", "--", "sh", "-c", INSPECT];
    let peer = daemon.run(Some(ALICE), &[&["run"][..], &inspect].concat(), "");
    check_inspection("peer path", &peer);
    let trusted = daemon.run(None, &[&["run", "-u", ALICE][..], &inspect].concat(), "");
    check_inspection("trusted path", &trusted);
    let session = daemon.run(
        None,
        &[&["run", "-u", ALICE, "--logon-type", "batch"][..], &inspect].concat(),
        "",
    );
    check_inspection("PAM session (worker)", &session);
    let password = daemon.run(
        Some(ALICE),
        &[&["run", "-u", ALICE, "--password-stdin"][..], &inspect].concat(),
        "dpt-alice-pw\n",
    );
    check_inspection("password logon", &password);
}

/// One raw call on a new connection as `user` (through a helper process running as them),
/// returning the reply line.
fn raw_as(daemon: &Daemon, user: Option<&str>, message: &str) -> String {
    match user {
        None => {
            let mut stream = UnixStream::connect(&daemon.socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            stream.write_all(message.as_bytes()).unwrap();
            stream.write_all(b"\0").unwrap();
            let mut reply = Vec::new();
            let mut byte = [0u8; 1];
            while stream.read(&mut byte).unwrap() == 1 && byte[0] != 0 {
                reply.push(byte[0]);
            }
            String::from_utf8(reply).unwrap()
        }
        Some(user) => {
            // python3 as the user: the kernel, not the message, says who is calling.
            let script = format!(
                "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect({:?})\ns.sendall(sys.argv[1].encode()+b'\\0')\nb=b''\nwhile not b.endswith(b'\\0'):\n    c=s.recv(4096)\n    if not c: break\n    b+=c\nprint(b.rstrip(b'\\0').decode())",
                daemon.socket.display().to_string()
            );
            let out = common::as_user(user, "/usr/bin/python3")
                .args(["-c", &script, message])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout).trim().to_owned()
        }
    }
}

#[test]
fn identity_fields_in_a_request_are_refused_and_the_kernel_decides() {
    require_root!();
    let daemon = Daemon::start("");
    for (method, parameters) in [
        ("io.deputy.CreateProcess", r#"{"argv":["id"],"uid":0}"#),
        (
            "io.deputy.CreateProcess",
            r#"{"argv":["id"],"caller":"root"}"#,
        ),
        ("io.deputy.GetToken", r#"{"uid":0}"#),
        ("io.deputy.ListSessions", r#"{"owner":0}"#),
    ] {
        let reply = raw_as(
            &daemon,
            Some(ALICE),
            &format!(r#"{{"method":"{method}","parameters":{parameters}}}"#),
        );
        assert!(
            reply.contains("org.varlink.service.InvalidParameter"),
            "{method} {parameters}: {reply}"
        );
    }
    // Asking for another user without a password is a policy question, answered for alice: no.
    let reply = raw_as(
        &daemon,
        Some(ALICE),
        r#"{"method":"io.deputy.CreateProcess","parameters":{"argv":["id"],"user":"root"}}"#,
    );
    assert!(reply.contains("io.deputy.PermissionDenied"), "{reply}");
    // And who the caller is comes from the kernel.
    let reply = raw_as(&daemon, Some(ALICE), r#"{"method":"io.deputy.GetToken"}"#);
    assert!(reply.contains(r#""user":"dpt-alice""#), "{reply}");
    let reply = raw_as(&daemon, None, r#"{"method":"io.deputy.GetToken"}"#);
    assert!(reply.contains(r#""user":"root""#), "{reply}");
}

#[test]
fn the_program_and_the_directory_are_checked_as_the_client() {
    require_root!();
    let daemon = Daemon::start("");
    // Root may read /root; alice may not, and deputyd (root) does not lend her its rights.
    let out = daemon.run(Some(ALICE), &["run", "-C", "/root", "--", "true"], "");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/root"), "{}", text(&out.stderr));
    let secret = tempfile::Builder::new()
        .prefix("deputy-root-only")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let program = secret.path().join("prog");
    std::fs::copy("/bin/true", &program).unwrap();
    let out = daemon.run(Some(ALICE), &["run", "--", program.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let out = daemon.run(None, &["run", "--", program.to_str().unwrap()], "");
    assert_eq!(
        out.status.code(),
        Some(0),
        "root itself may: {}",
        text(&out.stderr)
    );
}
