//! Remote clients over TLS (deputyd's `[remote]` listener), end to end: a real deputyd with a
//! listener on a loopback port, certificates each test makes with rcgen (common/tls.rs), the
//! CLI with `--remote`, and a small standard-library Python client (remote_client.py) where a
//! test needs a source address of its choice or a raw Varlink call. Checked: a password logon
//! and run with its exit codes and a terminal; 100 MiB through intact; no memory growth behind
//! a stalled reader or writer; nothing but TLS on the port; no password for a server the client
//! does not trust; mutual TLS and its allowed names; lockout per source address; the peer token
//! and the trusted path refused by name; connection limits and the handshake timeout; no
//! listener without a certificate.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::tls::{self, CLIENT_NAME, Pki};
use common::{ALICE, Daemon, text};

/// The Python client: `remote_client.py --port P --ca CA [options] CALL...`.
const CLIENT: &str = include_str!("remote_client.py");

/// What `--password-stdin` reads first.
const PASSWORD: &str = "dpt-alice-pw\n";

/// How long one CLI run may take.
const LIMIT: Duration = Duration::from_secs(30);

/// The memory deputyd may gain behind one stalled stream.
const GROWTH_KIB: u64 = 24 * 1024;

fn id_line(user: &str) -> String {
    let out = Command::new("id").arg(user).output().unwrap();
    text(&out.stdout)
}

/// `run -u dpt-alice --password-stdin -- ARGV`.
fn as_alice<'a>(argv: &[&'a str]) -> Vec<&'a str> {
    [&["run", "-u", ALICE, "--password-stdin", "--"][..], argv].concat()
}

/// `deputy --remote 127.0.0.1:PORT --ca CA run -u dpt-alice --password-stdin -- ARGV` with
/// `stdin`, to completion.
fn remote_run(port: u16, ca: &std::path::Path, argv: &[&str], stdin: &str) -> Output {
    tls::output_within(
        tls::remote_cli(port, ca, &as_alice(argv)),
        stdin.as_bytes(),
        LIMIT,
    )
}

/// The audit's logon lines so far.
fn logons(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .audit_lines()
        .into_iter()
        .filter(|line| line["event"] == "logon")
        .collect()
}

/// Whether an audit line's `remote` is `address` with a port.
fn is_from(line: &serde_json::Value, address: &str) -> bool {
    line["remote"]
        .as_str()
        .and_then(|remote| remote.strip_prefix(address))
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|port| port.parse::<u16>().is_ok())
}

/// Waits (5 s at most) for an audit line that `wanted` accepts, and returns it.
fn wait_for_audit(
    daemon: &Daemon,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = daemon.audit_lines().into_iter().find(|line| wanted(line)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line {what}: {:#?}",
            daemon.audit_lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that no logon reached the daemon (after giving a late one time to be audited).
fn assert_no_logon(daemon: &Daemon, why: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let logons = logons(daemon);
    assert!(logons.is_empty(), "{why}, yet: {logons:#?}");
}

/// A Logon call of dpt-alice with `password`, as JSON.
fn logon_call(password: &str) -> String {
    format!(
        r#"{{"method":"io.deputy.Logon","parameters":{{"user":"{ALICE}","password":"{password}"}}}}"#
    )
}

/// Runs remote_client.py against 127.0.0.1:`port`, trusting `pki.ca`, with `options` and one
/// call per JSON message in `calls`: the replies, in order.
fn python(port: u16, pki: &Pki, options: &[&str], calls: &[&str]) -> Vec<serde_json::Value> {
    let out = python_output(port, pki, options, calls);
    assert!(
        out.status.success(),
        "remote_client.py {options:?} {calls:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Reads `stream` until the daemon closes it (EOF or a reset) or `limit` passes: the bytes
/// received, and whether it was closed.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (received, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return (received, true),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (received, false);
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (received, true),
        }
    }
}

/// deputyd's resident memory, KiB.
fn rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.process.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn remote_options_after_run_are_refused_not_run_as_a_command() {
    // No root needed: the CLI refuses before it connects anywhere. The options belong to
    // `deputy`, before `run`; after it clap would take them for the command's first words.
    for option in ["--remote", "--ca", "--cert", "--key", "--crl"] {
        let out = std::process::Command::new(common::deputy_bin())
            .args([
                "--socket",
                "/nonexistent/deputy.sock",
                "run",
                option,
                "x",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(125),
            "{option}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("{option} is an option of deputy, not of run")),
            "{option}: {stderr}"
        );
        assert!(
            !stderr.contains("cannot reach deputyd"),
            "{option}: {stderr}"
        );
    }
}

#[test]
fn remote_run_prints_alices_identity_and_passes_exit_codes() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let ca = pki.ca.as_path();

    let out = remote_run(port, ca, &["id"], PASSWORD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));

    let out = remote_run(port, ca, &["sh", "-c", "exit 7"], PASSWORD);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let out = remote_run(port, ca, &["sh", "-c", "kill -TERM $$"], PASSWORD);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let out = remote_run(port, ca, &["dpt-no-such-program"], PASSWORD);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));

    let out = remote_run(port, ca, &["id"], "not-her-password\n");
    assert_eq!(
        out.status.code(),
        Some(124),
        "a refused logon: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    let out = tls::output_within(
        tls::remote_cli(
            port,
            ca,
            &["run", "-u", ALICE, "--password-stdin", "--pty", "--", "tty"],
        ),
        PASSWORD.as_bytes(),
        LIMIT,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("/dev/pts/"),
        "--pty: {:?}",
        text(&out.stdout)
    );

    let ok = wait_for_audit(&daemon, "of a remote logon that worked", |line| {
        line["event"] == "logon" && line["ok"] == true
    });
    assert!(is_from(&ok, "127.0.0.1"), "{ok}");
    assert!(ok["client_cert"].is_null(), "no client certificate: {ok}");
    let failed = wait_for_audit(&daemon, "of the refused remote logon", |line| {
        line["event"] == "logon" && line["ok"] == false
    });
    assert!(is_from(&failed, "127.0.0.1"), "{failed}");
}

#[test]
fn a_hundred_mebibytes_through_remote_cat_arrive_intact() {
    require_root!();
    const SIZE: usize = 100 << 20;
    let pki = Pki::new();
    let (_daemon, port) = tls::start_remote(&pki, "", "");
    let dir = tempfile::tempdir().unwrap();

    // The CLI's stdin: the password line, then 100 MiB of xorshift64 output.
    let input = dir.path().join("stdin");
    let mut writer = BufWriter::new(File::create(&input).unwrap());
    writer.write_all(PASSWORD.as_bytes()).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 16];
    for _ in 0..SIZE / block.len() {
        for word in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        writer.write_all(&block).unwrap();
    }
    writer.into_inner().unwrap().sync_all().unwrap();

    let output = dir.path().join("stdout");
    let errors = dir.path().join("stderr");
    let started = Instant::now();
    let mut cli = tls::remote_cli(port, &pki.ca, &as_alice(&["cat"]))
        .stdin(File::open(&input).unwrap())
        .stdout(File::create(&output).unwrap())
        .stderr(File::create(&errors).unwrap())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(120);
    let status = loop {
        if let Some(status) = cli.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = cli.kill();
            let _ = cli.wait();
            panic!(
                "100 MiB through remote cat took more than {limit:?} ({} bytes arrived)",
                std::fs::metadata(&output).unwrap().len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let stderr = std::fs::read_to_string(&errors).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    let arrived = std::fs::metadata(&output).unwrap().len();
    assert_eq!(arrived, SIZE as u64, "bytes that arrived; {stderr}");
    println!(
        "100 MiB through remote cat in {elapsed:?} ({:.0} MiB/s)",
        100.0 / elapsed.as_secs_f64()
    );

    let sha256 = |file: File| {
        let out = Command::new("sha256sum").stdin(file).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let mut sent = File::open(&input).unwrap();
    sent.seek(SeekFrom::Start(PASSWORD.len() as u64)).unwrap();
    assert_eq!(sha256(sent), sha256(File::open(&output).unwrap()));
}

#[test]
fn a_stalled_reader_does_not_grow_the_daemon() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let warm_up = remote_run(port, &pki.ca, &["id"], PASSWORD);
    assert!(warm_up.status.success(), "{}", text(&warm_up.stderr));
    let before = rss_kib(&daemon);

    // A command that writes 2 GB to a reader that takes 64 KiB and then nothing more.
    let mut reading = tls::remote_cli(
        port,
        &pki.ca,
        &as_alice(&["head", "-c", "2000000000", "/dev/zero"]),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    reading
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let mut stdout = reading.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = vec![0u8; 1 << 16];
        let read = stdout.read_exact(&mut first).map(|()| stdout);
        let _ = sender.send(read);
    });
    // Held, never read again, until the end.
    let _stalled = match receiver.recv_timeout(LIMIT) {
        Ok(Ok(stdout)) => stdout,
        other => {
            let _ = reading.kill();
            let _ = reading.wait();
            panic!("no output from the remote head: {other:?}");
        }
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        reading.try_wait().unwrap().is_none(),
        "the CLI with the stalled reader ended"
    );
    let behind_reader = rss_kib(&daemon);
    println!(
        "deputyd VmRSS: {before} KiB after a warm-up run, {behind_reader} KiB behind a stalled reader"
    );

    // A command that never reads, fed as fast as the CLI takes its stdin.
    let mut writing = tls::remote_cli(port, &pki.ca, &as_alice(&["sleep", "30"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = writing.stdin.take().unwrap();
    let fed = Arc::new(AtomicU64::new(0));
    let feeder = {
        let fed = fed.clone();
        std::thread::spawn(move || {
            if stdin.write_all(PASSWORD.as_bytes()).is_err() {
                return;
            }
            let zeros = vec![0u8; 1 << 16];
            // Until the CLI is gone (EPIPE).
            while stdin.write_all(&zeros).is_ok() {
                fed.fetch_add(zeros.len() as u64, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        writing.try_wait().unwrap().is_none(),
        "the CLI feeding a command that does not read ended"
    );
    let behind_writer = rss_kib(&daemon);
    println!(
        "deputyd VmRSS: {behind_writer} KiB with {} KiB fed to a command that does not read",
        fed.load(Ordering::Relaxed) / 1024
    );

    for cli in [&mut reading, &mut writing] {
        cli.kill().unwrap();
        cli.wait().unwrap();
    }
    feeder.join().unwrap();
    assert!(
        behind_reader.saturating_sub(before) < GROWTH_KIB,
        "deputyd grew from {before} KiB to {behind_reader} KiB behind a stalled reader"
    );
    assert!(
        behind_writer.saturating_sub(behind_reader) < GROWTH_KIB,
        "deputyd grew from {behind_reader} KiB to {behind_writer} KiB feeding a command that does not read"
    );
    // A remote session lives as long as its connection: both commands are signalled away.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let signalled = daemon
            .audit_lines()
            .iter()
            .filter(|line| line["event"] == "process_exit" && line["exit"]["signal"].is_number())
            .count();
        if signalled >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled commands outlived their connections: {:#?}",
            daemon.audit_lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = remote_run(port, &pki.ca, &["id"], PASSWORD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));
}

#[test]
fn a_plaintext_client_gets_only_a_tls_error() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The daemon may hang up before all of it is written.
    let _ = stream.write_all(
        br#"{"method":"io.deputy.Logon","parameters":{"user":"dpt-alice","password":"dpt-alice-pw"}}"#,
    );
    let _ = stream.write_all(b"\0");
    let (received, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    assert!(
        closed,
        "the daemon neither refused nor hung up within 5 s; received {received:?}"
    );
    assert!(
        !received.contains(&b'{') && !text(&received).contains("io.deputy"),
        "a plaintext answer: {:?}",
        text(&received)
    );
    assert!(
        received.is_empty() || received[0] == 0x15,
        "neither nothing nor a TLS alert: {received:?}"
    );
    let refused = wait_for_audit(&daemon, "of the refused connection", |line| {
        line["event"] == "connection_refused"
    });
    assert!(is_from(&refused, "127.0.0.1"), "{refused}");
    assert!(
        refused["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{refused}"
    );
    assert_no_logon(&daemon, "a plaintext Logon was sent");
}

#[test]
fn a_client_that_trusts_another_ca_sends_no_password() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let out = remote_run(port, &pki.other_ca, &["id"], PASSWORD);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(!stderr.contains("dpt-alice-pw"), "{stderr}");
    assert_no_logon(&daemon, "the client did not trust the server");
}

/// `deputy --remote ... --cert --key run -u dpt-alice -- id` with the test PKI's client
/// certificate, the password on stdin.
fn id_with_client_certificate(port: u16, pki: &Pki) -> Output {
    let certificate = [
        "--cert",
        pki.client_cert.to_str().unwrap(),
        "--key",
        pki.client_key.to_str().unwrap(),
    ];
    tls::output_within(
        tls::remote_cli(
            port,
            &pki.ca,
            &[&certificate[..], &as_alice(&["id"])].concat(),
        ),
        PASSWORD.as_bytes(),
        LIMIT,
    )
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_before_any_logon() {
    require_root!();
    let pki = Pki::new();
    let client_ca = format!("client_ca = \"{}\"\n", pki.ca.display());
    let with_certificate = |port: u16| id_with_client_certificate(port, &pki);

    let (daemon, port) = tls::start_remote(&pki, &client_ca, "");
    let out = remote_run(port, &pki.ca, &["id"], PASSWORD);
    assert_eq!(
        out.status.code(),
        Some(125),
        "no client certificate: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_no_logon(&daemon, "the client had no certificate");

    let out = with_certificate(port);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));
    let logon = wait_for_audit(&daemon, "of the logon with a certificate", |line| {
        line["event"] == "logon" && line["ok"] == true
    });
    assert_eq!(logon["client_cert"], CLIENT_NAME, "{logon}");
    assert!(is_from(&logon, "127.0.0.1"), "{logon}");
    drop(daemon);

    // A certificate of the right CA whose name is not allowed.
    let (daemon, port) = tls::start_remote(
        &pki,
        &format!("{client_ca}allowed_clients = [\"someone-else\"]\n"),
        "",
    );
    let out = with_certificate(port);
    assert!(
        matches!(out.status.code(), Some(123 | 125)),
        "a client name not allowed: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_no_logon(&daemon, "the client's name was not allowed");
    drop(daemon);

    // And the same certificate where its name is allowed.
    let (daemon, port) = tls::start_remote(
        &pki,
        &format!("{client_ca}allowed_clients = [\"someone-else\", \"{CLIENT_NAME}\"]\n"),
        "",
    );
    let out = with_certificate(port);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));
    let logon = wait_for_audit(&daemon, "of the allowed client's logon", |line| {
        line["event"] == "logon" && line["ok"] == true
    });
    assert_eq!(logon["client_cert"], CLIENT_NAME, "{logon}");
}

#[test]
fn a_revoked_client_certificate_is_refused_before_any_logon() {
    require_root!();
    let pki = Pki::new();
    let remote = |crl: &std::path::Path| {
        format!(
            "client_ca = \"{}\"\nclient_crl = [\"{}\"]\n",
            pki.ca.display(),
            crl.display()
        )
    };
    let with_certificate = |port: u16| id_with_client_certificate(port, &pki);

    // The CA's list revokes the client's certificate: the handshake fails, no password is
    // taken, and the refusal says why.
    let (daemon, port) = tls::start_remote(&pki, &remote(&pki.crl_revoking_client), "");
    let out = with_certificate(port);
    assert_eq!(
        out.status.code(),
        Some(125),
        "a revoked certificate: {}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let refused = wait_for_audit(&daemon, "of the revoked certificate", |line| {
        line["event"] == "connection_refused"
    });
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.to_lowercase().contains("revoked")),
        "{refused}"
    );
    assert_no_logon(&daemon, "the client's certificate was revoked");
    drop(daemon);

    // A list of the same CA that revokes another certificate: this client gets in.
    let (daemon, port) = tls::start_remote(&pki, &remote(&pki.crl_revoking_another), "");
    let out = with_certificate(port);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));
    let logon = wait_for_audit(
        &daemon,
        "of the logon with an unrevoked certificate",
        |line| line["event"] == "logon" && line["ok"] == true,
    );
    assert_eq!(logon["client_cert"], CLIENT_NAME, "{logon}");
    drop(daemon);

    // A file that holds no revocation list (the CA's certificate, given by mistake) stops
    // deputyd at start, naming the key: no socket, nothing on the port.
    let dir = tempfile::tempdir().unwrap();
    let port = tls::free_port();
    let config = dir.path().join("deputyd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\naudit_log = \"{}\"\n\n[remote]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nkey = \"{}\"\n{}",
            dir.path().join("audit.jsonl").display(),
            pki.server_cert.display(),
            pki.server_key.display(),
            remote(&pki.ca)
        ),
    )
    .unwrap();
    let stderr = refused_at_start(&config, dir.path(), port);
    assert!(
        stderr.contains("remote.client_crl") && stderr.contains("no PEM revocation list"),
        "{stderr}"
    );
}

#[test]
fn the_cli_refuses_a_revoked_server_certificate_before_sending_a_password() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let run = |crl: &std::path::Path| {
        tls::output_within(
            tls::remote_cli(
                port,
                &pki.ca,
                &[&["--crl", crl.to_str().unwrap()][..], &as_alice(&["id"])].concat(),
            ),
            PASSWORD.as_bytes(),
            LIMIT,
        )
    };

    // The CA's list revokes the server's certificate: the CLI stops in the handshake.
    let out = run(&pki.crl_revoking_server);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.to_lowercase().contains("revoked"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_no_logon(&daemon, "the server's certificate was revoked");

    // A list of the same CA that revokes another certificate: the run goes through.
    let out = run(&pki.crl_revoking_another);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));

    // A file that holds no revocation list is named, and nothing is sent.
    let out = run(&pki.ca);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("--crl") && stderr.contains("no PEM revocation list"),
        "{stderr}"
    );
}

#[test]
fn lockout_is_per_source_address() {
    require_root!();
    let pki = Pki::new();
    let (mut daemon, port) = tls::start_remote(&pki, "", "");
    daemon.kill_and_restart_with_logon("max_failures = 3");
    let (wrong, right) = (logon_call("not-her-password"), logon_call("dpt-alice-pw"));

    // Each attempt on a connection of its own: the lockout follows the address, not the port.
    let replies = python(
        port,
        &pki,
        &["--source", "127.0.0.2", "--reconnect"],
        &[&wrong, &wrong, &wrong, &right],
    );
    assert_eq!(replies.len(), 4, "{replies:#?}");
    for reply in &replies[..3] {
        assert_eq!(
            reply["error"], "io.deputy.AuthenticationFailed",
            "{replies:#?}"
        );
    }
    assert_eq!(
        replies[3]["error"], "io.deputy.LockedOut",
        "the right password after 3 failures: {replies:#?}"
    );

    let replies = python(port, &pki, &["--source", "127.0.0.3"], &[&right]);
    assert!(
        replies[0]["parameters"]["session"].is_string(),
        "another address is not locked out: {replies:#?}"
    );
    let replies = python(port, &pki, &["--source", "127.0.0.2"], &[&right]);
    assert_eq!(
        replies[0]["error"], "io.deputy.LockedOut",
        "still locked out: {replies:#?}"
    );

    let logons = logons(&daemon);
    let failed: Vec<&str> = logons
        .iter()
        .filter(|line| line["ok"] == false && is_from(line, "127.0.0.2"))
        .map(|line| line["remote"].as_str().unwrap())
        .collect();
    assert!(failed.len() >= 3, "{logons:#?}");
    assert!(
        failed[1..].iter().any(|remote| *remote != failed[0]),
        "the failures came from several ports: {failed:?}"
    );
    assert!(
        logons
            .iter()
            .any(|line| line["ok"] == true && is_from(line, "127.0.0.3")),
        "{logons:#?}"
    );
}

#[test]
fn the_peer_token_path_over_tls_is_refused_by_name() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    let calls = [
        r#"{"method":"io.deputy.GetToken"}"#,
        r#"{"method":"io.deputy.CreateProcess","parameters":{"argv":["id"]}}"#,
        r#"{"method":"io.deputy.CreateProcess","parameters":{"argv":["id"],"user":"dpt-alice"}}"#,
    ];
    let check = |replies: &[serde_json::Value]| {
        assert_eq!(replies.len(), calls.len(), "{replies:#?}");
        for (call, reply) in calls.iter().zip(replies) {
            assert_eq!(
                reply["error"], "io.deputy.NoPeerIdentity",
                "{call}: {reply}"
            );
            assert!(reply["parameters"]["what"].is_string(), "{call}: {reply}");
        }
    };
    // Before any logon on the connection.
    check(&python(port, &pki, &[], &calls));
    // And after one: a logged-on remote client has no peer token nor the trusted path either.
    let right = logon_call("dpt-alice-pw");
    let replies = python(port, &pki, &[], &[&[right.as_str()][..], &calls].concat());
    assert!(
        replies[0]["parameters"]["session"].is_string(),
        "{replies:#?}"
    );
    check(&replies[1..]);

    let out = tls::output_within(
        tls::remote_cli(port, &pki.ca, &["run", "--", "id"]),
        b"",
        LIMIT,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(123), "{stderr}");
    assert!(stderr.contains("kernel"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));

    let started: Vec<_> = daemon
        .audit_lines()
        .into_iter()
        .filter(|line| line["event"] == "process_start")
        .collect();
    assert!(started.is_empty(), "{started:#?}");
}

#[test]
fn connection_limits_hold() {
    require_root!();
    let pki = Pki::new();
    let (_daemon, port) = tls::start_remote(
        &pki,
        "max_connections_per_address = 2\nhandshake_timeout_secs = 2\n",
        "",
    );
    let opened = Instant::now();
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // Time for the daemon to accept and count them.
    std::thread::sleep(Duration::from_millis(300));
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (_, closed) = read_until_closed(&mut third, Duration::from_secs(1));
    assert!(
        closed,
        "a third connection from the address was not closed at once"
    );
    for (index, stream) in held.iter_mut().enumerate() {
        let left = (opened + Duration::from_secs(6)).saturating_duration_since(Instant::now());
        let (_, closed) = read_until_closed(stream, left);
        let after = opened.elapsed();
        assert!(
            closed,
            "connection {index}, silent, was still open after {after:?} (handshake_timeout_secs = 2)"
        );
        assert!(
            after >= Duration::from_secs(1),
            "connection {index} was closed after {after:?}, before its handshake time was up"
        );
    }

    let out = remote_run(port, &pki.ca, &["id"], PASSWORD);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), id_line(ALICE));
}

#[test]
fn a_listener_without_certificate_is_refused_at_start() {
    require_root!();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let port = tls::free_port();
    let config = |name: &str, remote: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[daemon]\naudit_log = \"{}\"\n\n[remote]\nlisten = \"127.0.0.1:{port}\"\n{remote}",
                dir.path().join("audit.jsonl").display()
            ),
        )
        .unwrap();
        path
    };
    let check = |path: &std::path::Path| {
        let mut command = Command::new(common::deputyd_bin());
        command.arg("--check-config").arg(path);
        tls::output_within(command, b"", LIMIT)
    };

    let bare = config("bare.toml", "");
    let out = check(&bare);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        stderr.contains("remote.certificate") || stderr.contains("remote.key"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("plaintext"), "{stderr}");

    let certificate = format!("certificate = \"{}\"\n", pki.server_cert.display());
    let out = check(&config("no-key.toml", &certificate));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(stderr.contains("remote.key"), "{stderr}");

    let complete = format!("{certificate}key = \"{}\"\n", pki.server_key.display());
    let out = check(&config("complete.toml", &complete));
    assert!(
        out.status.success(),
        "a complete [remote] table: {}",
        text(&out.stderr)
    );

    // deputyd itself does not start with the bare table.
    let stderr = refused_at_start(&bare, dir.path(), port);
    assert!(
        stderr.contains("remote.certificate") || stderr.contains("remote.key"),
        "{stderr}"
    );
}

/// Starts deputyd with `config` and a socket in `dir`, and checks that it refused to start:
/// a failure exit, no socket, nothing listening on `port`. Returns what it printed.
fn refused_at_start(config: &std::path::Path, dir: &std::path::Path, port: u16) -> String {
    let socket = dir.join("io.deputy");
    let mut command = Command::new(common::deputyd_bin());
    command
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(&socket)
        .args(["--log", "warn"]);
    let out = tls::output_within(command, b"", Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "deputyd started: {stderr}");
    assert!(!socket.exists());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    stderr
}

/// The Python client's output, whatever its exit (2 when the connection failed).
fn python_output(port: u16, pki: &Pki, options: &[&str], calls: &[&str]) -> Output {
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(CLIENT)
        .arg("--port")
        .arg(port.to_string())
        .arg("--ca")
        .arg(&pki.ca)
        .args(options)
        .args(calls);
    tls::output_within(command, b"", Duration::from_secs(60))
}

#[test]
fn tls_1_2_only_when_configured() {
    require_root!();
    let pki = Pki::new();
    let info = r#"{"method":"org.varlink.service.GetInfo"}"#;
    let (_daemon, port) = tls::start_remote(&pki, "", "");
    let out = python_output(port, &pki, &["--tls12"], &[info]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("transport_error"));
    // TLS 1.3 on the same listener works.
    let replies = python(port, &pki, &[], &[info]);
    assert_eq!(replies[0]["parameters"]["product"], "deputyd");

    let (_daemon, port) = tls::start_remote(&pki, "tls12 = true", "");
    let out = python_output(port, &pki, &["--tls12"], &[info]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("deputyd"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn signals_reach_a_remote_command() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    for (signal, code) in [
        (rustix::process::Signal::TERM, 143),
        (rustix::process::Signal::INT, 130),
    ] {
        let mut cli = tls::remote_cli(port, &pki.ca, &as_alice(&["sleep", "30"]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        cli.stdin
            .take()
            .unwrap()
            .write_all(PASSWORD.as_bytes())
            .unwrap();
        // Started: its process_start is audited.
        let before = daemon
            .audit_lines()
            .iter()
            .filter(|l| l["event"] == "process_start")
            .count();
        let deadline = Instant::now() + Duration::from_secs(10);
        while daemon
            .audit_lines()
            .iter()
            .filter(|l| l["event"] == "process_start")
            .count()
            == before
        {
            assert!(Instant::now() < deadline, "the remote sleep never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = rustix::process::Pid::from_raw(cli.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
        let out = tls::output_within_child(cli, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(code), "{}", text(&out.stderr));
        wait_for_audit(&daemon, "of the remote sleep ended by the signal", |line| {
            line["event"] == "process_exit"
                && line["exit"]["signal"] == serde_json::json!(signal.as_raw())
        });
    }
}

#[test]
fn a_remote_terminal_follows_the_window_and_passes_keys() {
    require_root!();
    let pki = Pki::new();
    let (_daemon, port) = tls::start_remote(&pki, "", "");
    let tmux = common::tmux::Tmux::start("remote-pty");
    let command = format!(
        "{} --remote 127.0.0.1:{port} --ca {} run -u {ALICE} -- bash --norc --noprofile; echo \"outer exit=$?\"",
        common::deputy_bin().display(),
        pki.ca.display()
    );
    tmux.keys(&[&command, "Enter"]);
    // The password from the terminal, with echo off.
    tmux.wait_for(&format!("Password for {ALICE}:"), 1);
    tmux.keys(&["dpt-alice-pw", "Enter"]);
    tmux.wait_for("$\n", 1); // alice's prompt, on the remote terminal (root's ends in #)
    tmux.keys(&["PS1='in$ '; echo ready", "Enter"]);
    tmux.wait_for("ready", 2);
    tmux.keys(&["tty; id -un; stty size", "Enter"]);
    let screen = tmux.wait_for("30 100", 1);
    assert!(
        screen.contains("/dev/pts/") && screen.contains(&format!("\n{ALICE}\n")),
        "{screen}"
    );
    assert!(
        !screen.contains("dpt-alice-pw"),
        "the password was echoed: {screen}"
    );

    // The window size follows the outer terminal (SIGWINCH → a Resize frame); Ctrl-C is a
    // key on the remote terminal: it interrupts the job, not the shell.
    tmux.check_resize_and_interrupt();

    tmux.keys(&["exit 7", "Enter"]);
    tmux.wait_for("outer exit=7", 1);
}

#[test]
fn ctrl_z_stops_a_remote_command_and_fg_resumes_it() {
    require_root!();
    let pki = Pki::new();
    let (daemon, port) = tls::start_remote(&pki, "", "");
    for mode in ["--pty", "--no-pty"] {
        let tmux = common::tmux::Tmux::start(&format!("remote-ctrl-z{mode}"));
        let command = format!(
            "{} --remote 127.0.0.1:{port} --ca {} run {mode} -u {ALICE} -- sleep 100",
            common::deputy_bin().display(),
            pki.ca.display()
        );
        tmux.keys(&[&command, "Enter"]);
        tmux.wait_for(&format!("Password for {ALICE}:"), 1);
        tmux.keys(&["dpt-alice-pw", "Enter"]);
        let sleeping = |state: char| {
            text(
                &Command::new("ps")
                    .args(["-o", "stat=", "-C", "sleep", "-u", ALICE])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .contains(state)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sleeping('S') {
            assert!(Instant::now() < deadline, "{mode}: sleep never started");
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        // The command leads an orphaned process group: deputy stops it (and itself) anyway,
        // on a terminal through deputyd (the key), without one through a Signal frame.
        tmux.keys(&["C-z"]);
        tmux.wait_for("Stopped", 1);
        assert!(sleeping('T'), "{mode}: the remote command is not stopped");
        tmux.keys(&["fg", "Enter"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sleeping('S') {
            assert!(
                Instant::now() < deadline,
                "{mode}: fg did not resume the command"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        tmux.keys(&["C-c"]);
        // Type the next line only once deputy has exited: until then its relay owns the keys.
        let cli = format!("--remote 127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Command::new("pgrep")
            .args(["-f", "--", &cli])
            .status()
            .unwrap()
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "{mode}: deputy did not exit after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        tmux.keys(&["echo fg-exit=$?", "Enter"]);
        tmux.wait_for("fg-exit=130", 1);
    }
    drop(daemon);
}

/// A TCP connection to 127.0.0.1:`port` from `source` (a loopback address).
fn connect_from(source: [u8; 4], port: u16) -> TcpStream {
    let socket = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&socket, &std::net::SocketAddr::from((source, 0))).unwrap();
    rustix::net::connect(&socket, &std::net::SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    TcpStream::from(socket)
}

#[test]
fn the_caps_before_logon_and_in_total_hold_across_addresses() {
    require_root!();
    let pki = Pki::new();
    // Before logon: two connections at most, from any addresses.
    let (daemon, port) = tls::start_remote(
        &pki,
        "max_unauthenticated = 2\nhandshake_timeout_secs = 30\n",
        "",
    );
    let held = [
        connect_from([127, 0, 0, 2], port),
        connect_from([127, 0, 0, 3], port),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let mut third = connect_from([127, 0, 0, 4], port);
    let (_, closed) = read_until_closed(&mut third, Duration::from_secs(2));
    assert!(
        closed,
        "a third connection not yet logged on was not closed"
    );
    wait_for_audit(&daemon, "naming remote.max_unauthenticated", |line| {
        line["event"] == "connection_refused"
            && line["reason"]
                .as_str()
                .is_some_and(|r| r.contains("remote.max_unauthenticated"))
    });
    drop(held);
    drop(daemon);

    // In total: three, whoever they are.
    let (daemon, port) = tls::start_remote(
        &pki,
        "max_connections = 3\nhandshake_timeout_secs = 30\n",
        "",
    );
    let held: Vec<TcpStream> = (2..5).map(|n| connect_from([127, 0, 0, n], port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut fourth = connect_from([127, 0, 0, 5], port);
    let (_, closed) = read_until_closed(&mut fourth, Duration::from_secs(2));
    assert!(closed, "a fourth connection was not closed");
    wait_for_audit(&daemon, "naming remote.max_connections", |line| {
        line["event"] == "connection_refused" && line["reason"] == "over remote.max_connections"
    });
    // Once they go (each a handshake that failed, audited), a client is served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon
        .audit_lines()
        .iter()
        .filter(|line| {
            line["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("TLS handshake failed"))
        })
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "the closed connections were not all let go: {:#?}",
            daemon.audit_lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = remote_run(port, &pki.ca, &["id"], PASSWORD);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
