//! deputyd and deputy end to end: a real daemon process, the CLI run as the test users, the
//! real PAM stack.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::{ALICE, BOB, Daemon, text};

fn id_line(user: &str) -> String {
    let out = std::process::Command::new("id").arg(user).output().unwrap();
    text(&out.stdout)
}

#[test]
fn alice_runs_as_herself_and_with_a_password_as_bob() {
    require_root!();
    let daemon = Daemon::start("");
    let out = daemon.run(Some(ALICE), &["run", "--", "id"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));

    let out = daemon.run(
        Some(ALICE),
        &["run", "-u", BOB, "--password-stdin", "--", "id"],
        "dpt-bob-pw\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(BOB));

    let out = daemon.run(
        Some(ALICE),
        &["run", "-u", BOB, "--password-stdin", "--", "id"],
        "wrong\n",
    );
    assert_eq!(
        out.status.code(),
        Some(124),
        "a refused logon has its documented code"
    );
    assert_eq!(
        text(&out.stderr),
        format!("deputy: authentication failed for {BOB}\n")
    );
    assert!(out.stdout.is_empty());

    let out = daemon.run(Some(ALICE), &["whoami", "--json"], "");
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (token["user"].as_str(), token["level"].as_str()),
        (Some(ALICE), Some("identification"))
    );
}

#[test]
fn sessions_are_visible_only_to_their_owner_and_root() {
    require_root!();
    let daemon = Daemon::start("");
    let out = daemon.run(
        Some(BOB),
        &[
            "run",
            "-u",
            BOB,
            "--password-stdin",
            "--keep-session",
            "--",
            "true",
        ],
        "dpt-bob-pw\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bobs = daemon.sessions(Some(BOB));
    assert_eq!(bobs.len(), 1, "{bobs:?}");
    let id = bobs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(bobs[0]["keep"], true);
    assert!(
        daemon.sessions(Some(ALICE)).is_empty(),
        "alice must not see bob's session"
    );
    assert_eq!(daemon.sessions(None).len(), 1, "root sees every session");
    let out = daemon.run(Some(ALICE), &["logoff", &id], "");
    assert_eq!(out.status.code(), Some(123));
    assert_eq!(
        text(&out.stderr),
        format!("deputy: no such session: {id}\n")
    );
    let out = daemon.run(Some(ALICE), &["run", "--session", &id, "--", "id"], "");
    assert_eq!(
        out.status.code(),
        Some(123),
        "alice cannot use bob's session"
    );
    let out = daemon.run(Some(BOB), &["run", "--session", &id, "--", "id", "-un"], "");
    assert_eq!(text(&out.stdout), format!("{BOB}\n"));
    assert!(daemon.run(Some(BOB), &["logoff", &id], "").status.success());
    assert!(daemon.sessions(None).is_empty());
}

#[test]
fn exit_codes_and_signals_come_through() {
    require_root!();
    let daemon = Daemon::start("");
    assert_eq!(
        daemon
            .run(Some(ALICE), &["run", "--", "sh", "-c", "exit 3"], "")
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        daemon
            .run(Some(ALICE), &["run", "--", "sh", "-c", "kill -9 $$"], "")
            .status
            .code(),
        Some(137)
    );
    let out = daemon.run(Some(ALICE), &["run", "--", "dpt-no-such-program"], "");
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let out = daemon.run(Some(ALICE), &["run", "--", "/etc/shadow"], "");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    // Ctrl-C: SIGINT to the CLI reaches the command, whose own exit code comes back.
    let script = "trap 'echo got-int; exit 42' INT; echo ready; while :; do sleep 0.05; done";
    let mut cli = daemon
        .deputy(Some(ALICE), &["run", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // setpriv execs the CLI, so the child's pid is the CLI's.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(cli.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "got-int");
    assert_eq!(cli.wait().unwrap().code(), Some(42));
}

fn marks(user: &str) -> String {
    std::fs::read_to_string(format!("/run/deputy-test-marks/user-{user}")).unwrap_or_default()
}

#[test]
fn logoff_kills_what_ignores_sigterm_and_closes_the_pam_session() {
    require_root!();
    let daemon = Daemon::start("");
    let _ = std::fs::remove_file(format!("/run/deputy-test-marks/user-{BOB}"));
    let script = "trap '' TERM; echo started; while :; do sleep 0.05; done";
    let mut cli = daemon
        .deputy(
            None,
            &[
                "run",
                "-u",
                BOB,
                "--logon-type",
                "batch",
                "--keep-session",
                "--",
                "sh",
                "-c",
                script,
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(cli.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    assert_eq!(marks(BOB), format!("open_session {BOB}\n"));
    let sessions = daemon.sessions(None);
    let session = sessions
        .iter()
        .find(|s| s["user"] == BOB && s["kind"] == "batch")
        .expect("bob's batch session");
    let id = session["id"].as_str().unwrap();
    let started = Instant::now();
    let out = daemon.run(None, &["logoff", id], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "SIGKILL came before the grace time"
    );
    assert_eq!(
        cli.wait().unwrap().code(),
        Some(137),
        "the process was killed"
    );
    assert_eq!(
        marks(BOB),
        format!("open_session {BOB}\nclose_session {BOB}\n")
    );
    let audit = daemon.audit_lines();
    let logoff = audit
        .iter()
        .find(|l| l["event"] == "logoff" && l["session"] == id)
        .expect("a logoff audit line");
    assert_eq!(logoff["killed"], 1);
    assert!(
        audit.iter().any(|l| l["event"] == "process_exit"
            && l["session"] == id
            && l["exit"]["signal"] == 9)
    );
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

fn start_and_kill_client(daemon: &Daemon, keep: bool) -> i32 {
    let mut args = vec!["run"];
    if keep {
        args.push("--keep-session");
    }
    args.extend(["--", "sh", "-c", "echo $$; exec sleep 60"]);
    let mut cli = daemon
        .deputy(Some(ALICE), &args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(cli.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    cli.kill().unwrap();
    cli.wait().unwrap();
    line.trim().parse().unwrap()
}

#[test]
fn a_killed_client_takes_its_process_along_unless_the_session_is_kept() {
    require_root!();
    let daemon = Daemon::start("");
    let pid = start_and_kill_client(&daemon, false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the process outlived its client");

    let pid = start_and_kill_client(&daemon, true);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        alive(pid),
        "a kept session's process must outlive its client"
    );
    let sessions = daemon.sessions(Some(ALICE));
    let session = sessions
        .iter()
        .find(|s| s["processes"].as_array().unwrap().contains(&pid.into()))
        .unwrap();
    assert!(
        daemon
            .run(
                Some(ALICE),
                &["logoff", session["id"].as_str().unwrap()],
                ""
            )
            .status
            .success()
    );
    assert!(!alive(pid));
}

/// Sends raw bytes (and descriptors) on a new connection; returns the reply, or None if the
/// daemon closed the connection without one.
fn raw(daemon: &Daemon, bytes: &[u8], fds: &[OwnedFd]) -> Option<serde_json::Value> {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if fds.is_empty() {
        stream.write_all(bytes).unwrap();
    } else {
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(64))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&borrowed)));
        rustix::net::sendmsg(
            &stream,
            &[std::io::IoSlice::new(bytes)],
            &mut control,
            rustix::net::SendFlags::empty(),
        )
        .unwrap();
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == 0 => return Some(serde_json::from_slice(&reply).unwrap()),
            Ok(_) => reply.push(byte[0]),
        }
    }
}

#[test]
fn bad_input_gets_an_error_or_a_closed_connection_and_others_carry_on() {
    require_root!();
    let daemon = Daemon::start("\n[limits]\nrequest_timeout_secs = 1\n");
    // A well-behaved client, running throughout.
    let mut good = daemon
        .deputy(
            Some(ALICE),
            &["run", "--", "sh", "-c", "sleep 2; echo done"],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    assert_eq!(
        raw(&daemon, b"{not json\0", &[]),
        None,
        "malformed JSON: connection closed"
    );
    let reply = raw(
        &daemon,
        b"{\"method\":\"io.deputy.CreateProcess\",\"parameters\":{\"argv\":42}}\0",
        &[],
    )
    .unwrap();
    assert_eq!(reply["error"], "org.varlink.service.InvalidParameter");
    let reply = raw(&daemon, b"{\"method\":\"io.deputy.Bogus\"}\0", &[]).unwrap();
    assert_eq!(reply["error"], "org.varlink.service.MethodNotFound");
    let reply = raw(&daemon, b"{\"method\":\"com.example.X\"}\0", &[]).unwrap();
    assert_eq!(reply["error"], "org.varlink.service.InterfaceNotFound");
    let reply = raw(
        &daemon,
        b"{\"method\":\"io.deputy.CreateProcess\",\"parameters\":{\"argv\":[]}}\0",
        &[],
    )
    .unwrap();
    assert_eq!(reply["error"], "io.deputy.InvalidArgument");
    let reply = raw(&daemon, b"{\"method\":\"io.deputy.CreateProcess\",\"parameters\":{\"argv\":[\"id\"],\"stdout\":7}}\0", &[]).unwrap();
    assert_eq!(
        (
            reply["error"].as_str(),
            reply["parameters"]["parameter"].as_str()
        ),
        (Some("io.deputy.InvalidArgument"), Some("stdout"))
    );

    let mut huge = b"{\"method\":\"io.deputy.GetToken\",\"parameters\":{\"x\":\"".to_vec();
    huge.resize(huge.len() + 1_100_000, b'a');
    huge.extend_from_slice(b"\"}}\0");
    let started = Instant::now();
    assert_eq!(
        raw(&daemon, &huge, &[]),
        None,
        "a message over 1 MiB: connection closed"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = Instant::now();
    assert_eq!(
        raw(&daemon, b"{\"method\":\"io.deputy.GetTo", &[]),
        None,
        "an unfinished message times out"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout"
    );

    let fds: Vec<OwnedFd> = (0..20)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    assert_eq!(
        raw(&daemon, b"{\"method\":\"io.deputy.GetToken\"}\0", &fds),
        None,
        "20 descriptors: over the limit of 16"
    );

    // A client that vanishes mid-call: the daemon ends its process and carries on.
    {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        stream.write_all(b"{\"method\":\"io.deputy.CreateProcess\",\"more\":true,\"parameters\":{\"argv\":[\"sleep\",\"30\"]}}\0").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut out = String::new();
    good.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, "done\n");
    assert!(
        good.wait().unwrap().success(),
        "the well-behaved client was disturbed"
    );
    let bad = daemon
        .audit_lines()
        .iter()
        .filter(|l| l["event"] == "bad_input")
        .count();
    assert!(bad >= 4, "bad input is audited ({bad} lines)");
    let out = daemon.run(Some(ALICE), &["run", "--", "true"], "");
    assert!(
        out.status.success(),
        "the daemon still serves: {}",
        text(&out.stderr)
    );
}

#[test]
fn an_independent_varlink_client_speaks_to_deputyd() {
    require_root!();
    let daemon = Daemon::start("");
    let python = "/var/lib/deputy-test/venv/bin/python";
    let script = r#"
import sys, varlink
with varlink.Client(address="unix:" + sys.argv[1]) as client:
    with client.open("io.deputy") as deputy:
        token = deputy.GetToken()["token"]
        print(token["user"], token["uid"], token["level"])
        print(len(deputy.ListSessions()["sessions"]))
"#;
    let out = common::as_user(ALICE, python)
        .args(["-c", script])
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python varlink: {}",
        text(&out.stderr)
    );
    let uid = text(
        &std::process::Command::new("id")
            .args(["-u", ALICE])
            .output()
            .unwrap()
            .stdout,
    );
    assert_eq!(
        text(&out.stdout),
        format!("{ALICE} {} identification\n0\n", uid.trim())
    );
}

#[test]
fn deputyd_accepts_a_socket_from_socket_activation() {
    require_root!();
    // systemd-socket-activate listens, then starts deputyd with the socket as fd 3
    // (LISTEN_FDS=1), as systemd does with systemd/deputyd.socket.
    let daemon_dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(daemon_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = daemon_dir.path().join("io.deputy");
    let config = daemon_dir.path().join("deputyd.toml");
    // The socket named too, though deputyd takes the one it is given: its state directory is
    // beside the configured socket, and must not be the system's /run/deputy/sessions.
    std::fs::write(
        &config,
        format!(
            "[daemon]\nsocket = \"{}\"\naudit_log = \"{}\"\n",
            socket.display(),
            daemon_dir.path().join("audit.jsonl").display()
        ),
    )
    .unwrap();
    let mut activator = std::process::Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(common::deputyd_bin())
        .arg("--config")
        .arg(&config)
        .args(["--log", "error"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for_socket(&socket, "systemd-socket-activate did not listen");
    let out = std::process::Command::new(common::deputy_bin())
        .arg("--socket")
        .arg(&socket)
        .args(["run", "--", "id", "-un"])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "root\n", "{}", text(&out.stderr));
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(activator.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    activator.wait().unwrap();
}

#[test]
fn check_config_and_explain_report_what_decides() {
    // No root needed: nothing is started.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[logon]\nuid_min = 1000\nfail_delay_ms = \"soon\"\n").unwrap();
    let out = std::process::Command::new(common::deputyd_bin())
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(&format!("{}:3:17: ", bad.display())),
        "{}",
        text(&out.stderr)
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[logon]\ntrusted_callers = [0]\n").unwrap();
    let out = std::process::Command::new(common::deputyd_bin())
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("{}: ok\n", good.display()));

    let out = std::process::Command::new(common::deputyd_bin())
        .args(["--config"])
        .arg(&good)
        .args(["--explain", "--caller", "1002", "--user", "root"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let explained = text(&out.stdout);
    assert!(
        explained.contains(
            "log on with a password:      denied by logon.deny_users: root is in logon.deny_users"
        ),
        "{explained}"
    );
    assert!(
        explained
            .contains("start without a password:    denied by logon.trusted_callers: uid 1002"),
        "{explained}"
    );
}

#[test]
fn running_processes_do_not_count_as_requests_in_flight_but_connections_are_capped() {
    require_root!();
    let daemon =
        Daemon::start("\n[limits]\nrequests_in_flight_per_uid = 2\nconnections_per_uid = 4\n");
    let sleepers: Vec<_> = (0..3)
        .map(|_| {
            daemon
                .deputy(Some(ALICE), &["run", "--", "sleep", "1"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = daemon.run(Some(ALICE), &["whoami", "--json"], "");
    assert!(
        out.status.success(),
        "three running processes, yet a fourth call works: {}",
        text(&out.stderr)
    );
    // A fifth connection of the same uid (3 runs + this one + one more) is refused by name.
    let _held = UnixStream::connect(&daemon.socket).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let out = daemon.run(Some(ALICE), &["whoami"], "");
    // Connections are counted per uid of the peer; `_held` is root's, so alice still has room.
    assert!(out.status.success(), "{}", text(&out.stderr));
    for mut sleeper in sleepers {
        assert!(sleeper.wait().unwrap().success());
    }
    let held: Vec<_> = (0..4)
        .map(|_| {
            let cli = daemon
                .deputy(Some(ALICE), &["run", "--", "sleep", "1"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            cli
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let out = daemon.run(Some(ALICE), &["whoami"], "");
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr),
        "deputy: too many requests: limits.connections_per_uid = 4\n"
    );
    for mut cli in held {
        assert!(cli.wait().unwrap().success());
    }
}

#[test]
fn a_terminal_session_behaves_like_a_login() {
    require_root!();
    let daemon = Daemon::start("");
    let tmux = Tmux::start("pty");
    let dir = daemon.dir.path().display().to_string();
    let command = format!(
        "stty -g > {dir}/stty.before; {} --socket {} run -u {ALICE} -- bash --norc --noprofile; echo \"outer exit=$?\"; stty -g > {dir}/stty.after",
        common::deputy_bin().display(),
        daemon.socket.display()
    );
    tmux.keys(&[&command, "Enter"]);
    tmux.wait_for("$\n", 1); // alice's prompt, inside deputy (root's ends in #)
    tmux.keys(&["PS1='in$ '; echo ready", "Enter"]);
    tmux.wait_for("ready", 2);
    tmux.keys(&["tty; stat -c %U $(tty); stty size", "Enter"]);
    let screen = tmux.wait_for("30 100", 1);
    assert!(
        screen.contains("/dev/pts/") && screen.contains(&format!("\n{ALICE}\n")),
        "{screen}"
    );

    // The window size follows the outer terminal (SIGWINCH → ResizePty); Ctrl-C interrupts
    // the foreground job, not the shell.
    tmux.check_resize_and_interrupt();

    // Ctrl-Z stops it, fg brings it back.
    tmux.keys(&["sleep 101", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys(&["C-z"]);
    tmux.wait_for("Stopped", 1);
    tmux.keys(&["fg", "Enter"]);
    // "sleep 101" thrice: typed, listed as Stopped, and printed by fg as it resumes the job.
    tmux.wait_for("sleep 101\n", 3);
    tmux.keys(&["C-c"]);
    tmux.keys(&["echo back-$((6*7))", "Enter"]);
    tmux.wait_for("back-42", 1);

    // exit 7: the CLI exits with 7 and the outer terminal is as it was.
    tmux.keys(&["exit 7", "Enter"]);
    tmux.wait_for("outer exit=7", 1);
    std::thread::sleep(Duration::from_millis(200));
    let before = std::fs::read_to_string(daemon.dir.path().join("stty.before")).unwrap();
    let after = std::fs::read_to_string(daemon.dir.path().join("stty.after")).unwrap();
    assert_eq!(before, after, "the outer terminal was not restored");
}

#[test]
fn without_a_terminal_pipes_still_work() {
    require_root!();
    let daemon = Daemon::start("");
    let out = daemon.run(Some(ALICE), &["run", "--", "cat"], "x\ny\n");
    assert_eq!(text(&out.stdout), "x\ny\n");
    // --pty with piped stdio: the command sees a terminal, and our EOF reaches it.
    let out = daemon.run(
        Some(ALICE),
        &[
            "run",
            "--pty",
            "--",
            "sh",
            "-c",
            "test -t 0 && echo on-a-tty; cat",
        ],
        "z\n",
    );
    let shown = text(&out.stdout).replace("\r\n", "\n");
    assert!(
        shown.contains("on-a-tty") && shown.contains("z\n"),
        "{shown:?}"
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// An Xvfb with access control on (a cookie in an -auth file, no -ac), stopped on drop.
struct Xvfb {
    process: std::process::Child,
    display: String,
    auth: PathBuf,
    _dir: tempfile::TempDir,
}

use std::path::PathBuf;

impl Xvfb {
    fn start() -> Xvfb {
        let dir = tempfile::tempdir().unwrap();
        let auth = dir.path().join("Xauthority");
        let cookie = text(
            &std::process::Command::new("mcookie")
                .output()
                .unwrap()
                .stdout,
        );
        let xauth = |display: &str| {
            let status = std::process::Command::new("xauth")
                .arg("-f")
                .arg(&auth)
                .args(["add", display, ".", cookie.trim()])
                .status()
                .unwrap();
            assert!(status.success());
        };
        // The server accepts the cookie whatever display the entry names; the client looks it
        // up by display number, added once the server has chosen one.
        xauth(":0");
        let mut process = std::process::Command::new("Xvfb")
            // -displayfd: Xvfb picks a free display itself (no race between parallel tests,
            // no stale lock files) and prints its number. -noreset: Xvfb would otherwise reset
            // (and forget its host list) whenever its last client leaves, as a desktop's X
            // server, with clients running, does not.
            .args(["-displayfd", "1", "-nolisten", "tcp", "-noreset", "-auth"])
            .arg(&auth)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut number = String::new();
        BufReader::new(process.stdout.take().unwrap())
            .read_line(&mut number)
            .unwrap();
        let display = format!(":{}", number.trim());
        assert_ne!(display, ":", "Xvfb did not start");
        xauth(&display);
        Xvfb {
            process,
            display,
            auth,
            _dir: dir,
        }
    }

    /// Runs `argv` as root with the cookie.
    fn as_root(&self, argv: &[&str]) -> std::process::Output {
        std::process::Command::new(argv[0])
            .args(&argv[1..])
            .env("DISPLAY", &self.display)
            .env("XAUTHORITY", &self.auth)
            .output()
            .unwrap()
    }

    /// Whether `user` can open the display without a cookie of its own.
    fn reachable_by(&self, user: &str) -> bool {
        common::as_user(user, "env")
            .arg("-i")
            .arg(format!("DISPLAY={}", self.display))
            .arg("XAUTHORITY=/nonexistent")
            .arg("xdpyinfo")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// `deputy` as root with this display and its cookie in the environment.
    fn deputy(&self, daemon: &Daemon, args: &[&str]) -> std::process::Command {
        let mut command = daemon.deputy(None, args);
        command
            .env("DISPLAY", &self.display)
            .env("XAUTHORITY", &self.auth);
        command
    }

    fn hosts(&self) -> String {
        text(&self.as_root(&["xhost"]).stdout)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM, so that Xvfb removes its lock file and socket.
        let pid = rustix::process::Pid::from_raw(self.process.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.process.wait();
    }
}

#[test]
fn an_x11_grant_lasts_as_long_as_the_session() {
    require_root!();
    let daemon = Daemon::start("");
    let x = Xvfb::start();
    assert!(!x.reachable_by(ALICE), "access control must be on");
    let out = x
        .deputy(
            &daemon,
            &[
                "run",
                "-u",
                ALICE,
                "--x11",
                "--",
                "sh",
                "-c",
                "echo \"$DISPLAY\"; xdpyinfo | head -1",
            ],
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\nname of display:    {}\n", x.display, x.display)
    );
    assert!(
        !x.reachable_by(ALICE),
        "the entry must be gone with the session"
    );
    assert!(!x.hosts().contains("SI:localuser:dpt-alice"));

    // An entry that was there before the session is left in place after it.
    assert!(
        x.as_root(&["xhost", "+SI:localuser:dpt-bob"])
            .status
            .success()
    );
    let out = x
        .deputy(&daemon, &["run", "-u", BOB, "--x11", "--", "xdpyinfo"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        x.hosts().contains("SI:localuser:dpt-bob"),
        "a pre-existing entry was removed"
    );
    let audit = daemon.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["event"] == "grant_added"
                && l["grant"].as_str().unwrap().contains("dpt-alice"))
    );
    assert!(audit.iter().any(
        |l| l["event"] == "grant_removed" && l["grant"].as_str().unwrap().contains("dpt-alice")
    ));
}

#[test]
fn a_daemon_shutdown_revokes_the_grants_of_live_sessions() {
    require_root!();
    let mut daemon = Daemon::start("");
    let x = Xvfb::start();
    let mut cli = x
        .deputy(
            &daemon,
            &[
                "run",
                "-u",
                ALICE,
                "--x11",
                "--keep-session",
                "--",
                "sleep",
                "60",
            ],
        )
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !x.reachable_by(ALICE) {
        assert!(Instant::now() < deadline, "the grant never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let grants = &daemon.sessions(None)[0]["grants"];
    assert_eq!(
        grants[0],
        format!("x11 {}.0 SI:localuser:{ALICE}", x.display)
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.process.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(
        daemon.process.wait().unwrap().success(),
        "deputyd exits 0 after a clean shutdown"
    );
    assert!(
        !x.reachable_by(ALICE),
        "the shutdown left the grant in place"
    );
    let _ = cli.wait();
}

#[test]
fn an_x11_grant_survives_a_killed_daemon_as_long_as_its_session() {
    require_root!();
    let mut daemon = Daemon::start("");
    let x = Xvfb::start();
    let mut cli = x
        .deputy(&daemon, &["run", "-u", ALICE, "--x11", "--", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !x.reachable_by(ALICE) {
        if Instant::now() > deadline {
            let _ = (cli.kill(), cli.wait());
            panic!("the grant never arrived");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // deputyd dies; the next one adopts the session, and with it the grant.
    daemon.wait_for_recorded_processes(1);
    daemon.kill_and_restart();
    let _ = cli.wait();
    let sessions = daemon.sessions(None);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(
        sessions[0]["grants"][0],
        format!("x11 {}.0 SI:localuser:{ALICE}", x.display)
    );
    assert!(
        x.reachable_by(ALICE),
        "the grant stays while its session lives"
    );
    // The session ends with its process: the new daemon removes the entry, with the cookie
    // the session's record kept.
    let pid = sessions[0]["processes"][0].as_i64().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while x.reachable_by(ALICE) || !daemon.sessions(None).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the grant outlived its session: {}",
            x.hosts()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!x.hosts().contains(ALICE), "{}", x.hosts());
}

#[test]
fn an_acl_grant_opens_the_callers_socket_for_the_session_only() {
    require_root!();
    let daemon = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("bob-only");
    std::fs::create_dir(&private).unwrap();
    let socket = private.join("display-0");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let bob = std::process::Command::new("id")
        .args(["-u", BOB])
        .output()
        .unwrap();
    let bob_uid: u32 = text(&bob.stdout).trim().parse().unwrap();
    std::os::unix::fs::chown(&private, Some(bob_uid), None).unwrap();
    std::os::unix::fs::chown(&socket, Some(bob_uid), None).unwrap();
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Another entry, which must survive the grant untouched.
    assert!(
        std::process::Command::new("setfacl")
            .args(["-m", "u:dpt-mustchange:r"])
            .arg(&socket)
            .status()
            .unwrap()
            .success()
    );
    let getfacl = || {
        text(
            &std::process::Command::new("getfacl")
                .arg("-p")
                .arg(&private)
                .arg(&socket)
                .output()
                .unwrap()
                .stdout,
        )
    };
    let before = getfacl();
    let probe = format!(
        "use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0); exit(connect($s, pack_sockaddr_un('{}')) ? 0 : 1)",
        socket.display()
    );
    let alice_connects = || {
        common::as_user(ALICE, "perl")
            .args(["-e", &probe])
            .status()
            .unwrap()
            .success()
    };
    assert!(!alice_connects());
    let socket_arg = socket.display().to_string();
    let out = daemon.run(
        Some(BOB),
        &[
            "run",
            "-u",
            ALICE,
            "--password-stdin",
            "--grant",
            &socket_arg,
            "--",
            "perl",
            "-e",
            &probe,
        ],
        "dpt-alice-pw\n",
    );
    assert!(
        out.status.success(),
        "alice could not connect during the session: {}",
        text(&out.stderr)
    );
    assert!(!alice_connects(), "the grant outlived its session");
    assert_eq!(getfacl(), before, "other ACL entries changed");
    // Only the caller's own sockets: alice cannot grant bob's.
    let out = daemon.run(
        Some(ALICE),
        &["run", "--grant", &socket_arg, "--", "true"],
        "",
    );
    assert_eq!(out.status.code(), Some(123), "{}", text(&out.stderr));
    drop(listener);
}

#[test]
fn sessions_of_one_user_share_an_x11_grant() {
    require_root!();
    let daemon = Daemon::start("");
    let x = Xvfb::start();
    let start = || {
        let out = x
            .deputy(
                &daemon,
                &["run", "-u", ALICE, "--x11", "--keep-session", "--", "true"],
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    start();
    start();
    let sessions = daemon.sessions(None);
    assert_eq!(sessions.len(), 2);
    assert!(x.reachable_by(ALICE));
    assert!(
        daemon
            .run(None, &["logoff", sessions[0]["id"].as_str().unwrap()], "")
            .status
            .success()
    );
    assert!(
        x.reachable_by(ALICE),
        "the other session still holds the grant"
    );
    assert!(
        daemon
            .run(None, &["logoff", sessions[1]["id"].as_str().unwrap()], "")
            .status
            .success()
    );
    assert!(
        !x.reachable_by(ALICE),
        "the last session took the grant along"
    );
}

#[test]
fn ctrl_z_stops_deputy_run_and_fg_resumes_it() {
    require_root!();
    let daemon = Daemon::start("");
    for mode in ["--pty", "--no-pty"] {
        let tmux = Tmux::start(&format!("ctrl-z{mode}"));
        let command = format!(
            "{} --socket {} run {mode} -u {ALICE} -- sleep 100",
            common::deputy_bin().display(),
            daemon.socket.display()
        );
        tmux.keys(&[&command, "Enter"]);
        // The command leads a session whose parent is deputyd: the kernel would discard a
        // SIGTSTP to it (an orphaned process group); deputy must stop it, and itself, anyway.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text(
            &std::process::Command::new("ps")
                .args(["-o", "stat=", "-u", ALICE])
                .output()
                .unwrap()
                .stdout,
        )
        .contains('S')
        {
            assert!(Instant::now() < deadline, "sleep never started");
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        tmux.keys(&["C-z"]);
        tmux.wait_for("Stopped", 1);
        let state = text(
            &std::process::Command::new("ps")
                .args(["-o", "stat=", "-C", "sleep", "-u", ALICE])
                .output()
                .unwrap()
                .stdout,
        );
        assert!(
            state.contains('T'),
            "{mode}: the command is not stopped: {state:?}"
        );
        tmux.keys(&["fg", "Enter"]);
        std::thread::sleep(Duration::from_millis(300));
        tmux.keys(&["C-c"]);
        // Type the next line only once deputy has exited: until then its relay owns the keys.
        // The daemon's command line names the socket too: look for the CLI's "SOCKET run".
        let socket = format!("{} run", daemon.socket.display());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::process::Command::new("pgrep")
            .args(["-f", &socket])
            .status()
            .unwrap()
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "{mode}: deputy run did not end after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        tmux.keys(&["echo after=$?", "Enter"]);
        tmux.wait_for("after=130", 1);
    }
}

#[test]
fn a_long_session_list_arrives_whole_in_pieces() {
    require_root!();
    let daemon = Daemon::start("\n[limits]\nsessions_per_user = 200\n");
    // More sessions than one piece of the streamed reply holds (64).
    for _ in 0..150 {
        let out = daemon.run(
            None,
            &["run", "-u", ALICE, "--keep-session", "--", "true"],
            "",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let sessions = daemon.sessions(None);
    assert_eq!(sessions.len(), 150);
    let mut ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 150, "each session once");
    // Without "more", one reply with all of them, as before.
    let out = std::process::Command::new("/var/lib/deputy-test/venv/bin/python3")
        .arg("-c")
        .arg(format!(
            "import varlink\nwith varlink.Client(address='unix:{}') as c, c.open('io.deputy') as d:\n    print(len(d.ListSessions()['sessions']))",
            daemon.socket.display()
        ))
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout).trim(), "150", "{}", text(&out.stderr));
}

#[test]
fn kept_peer_sessions_are_their_runs_own_and_count_against_the_limit() {
    require_root!();
    let daemon = Daemon::start("\n[limits]\nsessions_per_user = 2\n");
    let keep = |cmd: &[&str]| {
        daemon.run(
            Some(ALICE),
            &[&["run", "--keep-session", "--"][..], cmd].concat(),
            "",
        )
    };
    assert!(keep(&["true"]).status.success());
    // A plain run does not join the kept session: it has a session of its own to end with it.
    let mut plain = daemon
        .deputy(Some(ALICE), &["run", "--", "sleep", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sessions = daemon.sessions(Some(ALICE));
    let kept: Vec<_> = sessions.iter().filter(|s| s["keep"] == true).collect();
    assert_eq!(kept.len(), 1, "{sessions:?}");
    assert!(
        kept[0]["processes"].as_array().unwrap().is_empty(),
        "a plain run landed in the kept session: {sessions:?}"
    );
    assert!(plain.wait().unwrap().success());
    // sessions_per_user = 2: the second kept session fits, a third does not.
    assert!(keep(&["true"]).status.success());
    let out = keep(&["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("limits.sessions_per_user = 2"),
        "{}",
        text(&out.stderr)
    );
}
