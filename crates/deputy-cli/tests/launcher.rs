//! `deputy`, the launcher without libc, beside the full CLI `deputy-cli`: for the lines it
//! serves itself it must say and do what the full CLI says and does; every other line it must
//! hand over unchanged; and it must stay free of libc, which is what it is for.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{ALICE, BOB, Daemon, text};

/// `program` with `args` as `user` (None: root), `stdin` as its input, to completion.
fn run(program: &Path, user: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut command = match user {
        Some(user) => common::as_user(user, program),
        None => Command::new(program),
    };
    command.args(args);
    common::run_to_end(command, stdin)
}

/// What a run shows: exit code, stdout, stderr.
fn shown(out: &Output) -> (Option<i32>, String, String) {
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn the_launcher_says_and_does_what_the_full_cli_does() {
    require_root!();
    let daemon = Daemon::start("");
    let socket = daemon.socket.display().to_string();
    let with_socket = |args: &[&str]| -> Vec<String> {
        ["--socket", socket.as_str()]
            .iter()
            .chain(args)
            .map(|word| word.to_string())
            .collect()
    };
    // (caller, arguments, stdin, expected exit code), a line each.
    #[rustfmt::skip]
    let cases: &[(Option<&str>, &[&str], &str, i32)] = &[
        (Some(ALICE), &["run", "--", "id"], "", 0),
        (Some(ALICE), &["run", "--", "sh", "-c", "exit 3"], "", 3),
        (Some(ALICE), &["run", "--", "sh", "-c", "kill -9 $$"], "", 137),
        (Some(ALICE), &["run", "--", "cat"], "through stdin\n", 0),
        (Some(ALICE), &["run", "--", "dpt-no-such-program"], "", 127),
        (Some(ALICE), &["run", "--", "/etc/shadow"], "", 126),
        (Some(ALICE), &["run", "-C", "/dpt-nowhere", "--", "id"], "", 126),
        (Some(ALICE), &["run", "--session", "dpt-none", "--", "id"], "", 123),
        (Some(ALICE), &["run", "-u", BOB, "--password-stdin", "--", "id", "-un"], "dpt-bob-pw\n", 0),
        (Some(ALICE), &["run", "-u", BOB, "--password-stdin", "--", "id"], "wrong\n", 124),
        (None, &["run", "-u", ALICE, "--", "id"], "", 0),
        (None, &["run", "-u", "root", "--", "id"], "", 123),
        (None, &["run", "-u", "dpt-no-such-user", "--", "id"], "", 125),
    ];
    for &(user, args, stdin, code) in cases {
        let args = with_socket(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let launcher = run(&common::deputy_bin(), user, &args, stdin);
        let full = run(&common::full_cli_bin(), user, &args, stdin);
        assert_eq!(
            launcher.status.code(),
            Some(code),
            "{user:?} {args:?}: {}",
            text(&launcher.stderr)
        );
        assert_eq!(shown(&launcher), shown(&full), "{user:?} {args:?}");
    }
    // Started with stdin closed: the command gets /dev/null, as from the full CLI (whose std
    // opens it before main), never the launcher's socket.
    for program in [common::deputy_bin(), common::full_cli_bin()] {
        let line = format!(
            "exec {} --socket {socket} run -- readlink /proc/self/fd/0 <&-",
            program.display()
        );
        let out = run(Path::new("/bin/sh"), Some(ALICE), &["-c", &line], "");
        assert_eq!(
            shown(&out),
            (Some(0), "/dev/null\n".into(), String::new()),
            "{line}"
        );
    }
    // No daemon there.
    let args = ["--socket", "/run/dpt-no-such-socket", "run", "--", "id"];
    let launcher = run(&common::deputy_bin(), Some(ALICE), &args, "");
    let full = run(&common::full_cli_bin(), Some(ALICE), &args, "");
    assert_eq!(launcher.status.code(), Some(125));
    assert_eq!(shown(&launcher), shown(&full));
    assert!(
        text(&launcher.stderr).contains("No such file or directory"),
        "{}",
        text(&launcher.stderr)
    );
}

#[test]
fn lines_the_launcher_does_not_serve_reach_the_full_cli_unchanged() {
    let deputy = common::deputy_bin();
    let full = common::full_cli_bin();
    for args in [
        &["--version"][..],
        &["--help"],
        &["run", "--help"],
        &["run"],
        &["run", "--x11", "--no-such-option", "id"],
        &["completions", "bash"],
        &["man"],
        &["--socket", "/run/dpt-no-such-socket", "whoami"],
        &[
            "--socket",
            "/run/dpt-no-such-socket",
            "run",
            "--",
            "--remote",
            "h:1",
        ],
    ] {
        let launcher = run(&deputy, None, args, "");
        let full = run(&full, None, args, "");
        assert_eq!(shown(&launcher), shown(&full), "{args:?}");
    }
    let version = run(&deputy, None, &["--version"], "");
    assert_eq!(text(&version.stdout).trim(), "deputy 0.1.0");
    // Generated from the clap definitions, under the name people type.
    let man = run(&deputy, None, &["man"], "");
    assert!(
        text(&man.stdout).contains("\n.TH deputy 1 "),
        "{}",
        text(&man.stdout)
    );
    let completions = run(&deputy, None, &["completions", "bash"], "");
    assert!(
        text(&completions.stdout).contains("complete -F _deputy"),
        "{}",
        text(&completions.stdout)
    );
}

#[test]
fn without_the_full_cli_beside_it_the_launcher_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("deputy");
    std::fs::copy(common::deputy_bin(), &alone).unwrap();
    let out = run(&alone, None, &["whoami"], "");
    assert_eq!(out.status.code(), Some(125));
    let stderr = text(&out.stderr);
    let missing = dir.path().join("deputy-cli");
    assert!(
        stderr.contains(&format!("cannot run {}", missing.display()))
            && stderr.contains("No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn the_launcher_is_static_and_links_no_libc() {
    let bytes = std::fs::read(common::deputy_bin()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let half = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let offset = usize::try_from(u64::from_le_bytes(bytes[32..40].try_into().unwrap())).unwrap();
    let (size, count) = (usize::from(half(54)), usize::from(half(56)));
    // Not a position-independent executable (ET_EXEC, not ET_DYN): nothing to relocate.
    assert_eq!(half(16), 2, "not ET_EXEC");
    for index in 0..count {
        let kind = word(offset + index * size);
        // PT_DYNAMIC (2), PT_INTERP (3): a loader, shared libraries.
        assert!(
            kind != 2 && kind != 3,
            "program header {index} is of type {kind}: the launcher would be loaded dynamically"
        );
    }
    for marker in [&b"GLIBC_"[..], b"__libc_start_main"] {
        assert!(
            !bytes.windows(marker.len()).any(|window| window == marker),
            "glibc is linked in: {}",
            String::from_utf8_lossy(marker)
        );
    }
}
