//! CreateProcessAsUser: a command started for a user runs as exactly that user, and nothing of
//! the caller leaks into it.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::{ALICE, BOB, pipe, read_all, run_sh};
use deputy::{ExitStatus, ImpersonationLevel, Signal, SpawnError, SpawnRequest, Token};

fn status_field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
        .trim()
}

#[test]
fn child_has_the_users_ids_groups_and_no_capabilities() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let (status, exit) = run_sh(ALICE, "cat /proc/self/status");
    assert!(exit.success());
    let uid = alice.uid().as_raw();
    let gid = alice.gid().as_raw();
    assert_eq!(
        status_field(&status, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_field(&status, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let groups: BTreeSet<u32> = status_field(&status, "Groups")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    let expected: BTreeSet<u32> = alice.groups().iter().map(|g| g.as_raw()).collect();
    assert_eq!(groups, expected);
    assert!(
        expected.len() >= 2,
        "dpt-alice should be in dpt-shared as well as her own group"
    );
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(&status, cap), "0000000000000000", "{cap}");
    }
}

#[test]
fn child_runs_in_its_own_session_in_the_users_home() {
    require_root!();
    let (out, exit) = run_sh(ALICE, "pwd; ps -o sid= -p $$; echo $$");
    assert!(exit.success());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        Token::for_user(ALICE).unwrap().home().to_str().unwrap()
    );
    assert_eq!(
        lines[1].trim(),
        lines[2].trim(),
        "the shell leads its own session"
    );
}

#[test]
fn only_the_requested_fds_are_open() {
    require_root!();
    // Fds the caller left inheritable (no O_CLOEXEC) must still not reach the command.
    let leaked: Vec<OwnedFd> = (0..3)
        .map(|_| OwnedFd::from(fs::File::open("/etc/hostname").unwrap()))
        .collect();
    leaked.iter().for_each(common::make_inheritable);
    let extra = OwnedFd::from(fs::File::open("/etc/hostname").unwrap());
    let token = Token::for_user(ALICE).unwrap();
    let (reader, writer) = pipe();
    let request = SpawnRequest::new("/bin/sh")
        .arg("-c")
        // ls is a child of the shell, so its own directory fd is not in the shell's list.
        .arg("ls -1 /proc/$$/fd")
        .stdout(writer)
        .fd(7, extra);
    let child = deputy::spawn(&token, request).unwrap();
    let listed: BTreeSet<i32> = read_all(reader)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        listed,
        BTreeSet::from([0, 1, 2, 7]),
        "leaked fds were {:?}",
        leaked.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>()
    );
}

#[test]
fn loader_variables_and_the_callers_environment_do_not_reach_the_child() {
    require_root!();
    let marker = std::env::var("DEPUTY_TEST_MARKER")
        .expect("DEPUTY_TEST_MARKER comes from .cargo/config.toml");
    assert!(!marker.is_empty());
    let token = Token::for_user(ALICE).unwrap();
    let (reader, writer) = pipe();
    let request = SpawnRequest::new("/usr/bin/env")
        .env("LD_PRELOAD", "/tmp/evil.so")
        .env("LD_LIBRARY_PATH", "/tmp")
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .stdout(writer);
    let child = deputy::spawn(&token, request).unwrap();
    assert_eq!(
        child.removed_environment(),
        ["LD_PRELOAD", "LD_LIBRARY_PATH", "HOME"]
    );
    let env: BTreeSet<String> = read_all(reader).lines().map(str::to_owned).collect();
    assert!(child.wait().unwrap().success());
    let expected: BTreeSet<String> = [
        "HOME=/home/dpt-alice".to_owned(),
        format!("USER={ALICE}"),
        format!("LOGNAME={ALICE}"),
        "SHELL=/bin/bash".to_owned(),
        format!("PATH={}", deputy::USER_PATH),
        "LANG=C.UTF-8".to_owned(),
    ]
    .into();
    assert_eq!(env, expected);
    assert!(env.iter().all(|e| !e.starts_with("DEPUTY_TEST_MARKER")));
}

#[test]
fn root_only_executable_is_refused_and_nothing_runs() {
    require_root!();
    let dir = common::open_tempdir();
    let marker = dir.path().join("ran");
    let program = dir.path().join("root-only");
    fs::write(&program, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = deputy::spawn(
        &Token::for_user(ALICE).unwrap(),
        SpawnRequest::new(&program),
    )
    .unwrap_err();
    match &err {
        SpawnError::ProgramNotAccessible { path, user, source } => {
            assert_eq!(path, &program);
            assert_eq!(user, ALICE);
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
        other => panic!("expected ProgramNotAccessible, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "cannot execute {} as {ALICE}: ",
            program.display()
        )),
        "{err}"
    );
    // Root itself may run it: the refusal is alice's permissions, not a broken file.
    assert!(
        deputy::spawn(
            &Token::for_user("root").unwrap(),
            SpawnRequest::new(&program)
        )
        .unwrap()
        .wait()
        .unwrap()
        .success()
    );
    fs::remove_file(&marker).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(!marker.exists());
}

#[test]
fn workdir_the_user_cannot_enter_is_refused() {
    require_root!();
    let dir = common::open_tempdir();
    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let marker = dir.path().join("ran");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let request = SpawnRequest::new("/usr/bin/touch")
        .arg(&marker)
        .current_dir(&private);
    let err = deputy::spawn(&Token::for_user(ALICE).unwrap(), request).unwrap_err();
    assert!(
        matches!(&err, SpawnError::WorkdirNotAccessible { path, user, .. } if *path == private && user == ALICE),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("cannot enter {} as {ALICE}: ", private.display())),
        "{err}"
    );
    assert!(!marker.exists());
}

#[test]
fn a_path_swapped_after_the_check_is_not_executed() {
    require_root!();
    let dir = common::open_tempdir();
    let program = dir.path().join("program");
    // Copied by cp, not here: a file this process has open for writing can be inherited by a
    // process another test thread starts at that moment, and executing it then fails with
    // ETXTBSY.
    assert!(
        std::process::Command::new("cp")
            .arg("/bin/echo")
            .arg(&program)
            .status()
            .unwrap()
            .success()
    );
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let impostor = dir.path().join("impostor");
    let marker = dir.path().join("impostor-ran");
    fs::write(
        &impostor,
        format!("#!/bin/sh\necho impostor\ntouch {}\n", marker.display()),
    )
    .unwrap();
    fs::set_permissions(&impostor, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();

    let (reader, writer) = pipe();
    let swap_to = impostor.clone();
    let request = SpawnRequest::new(&program)
        .arg("original")
        .stdout(writer)
        .after_open_hook(move |path: &Path| {
            fs::remove_file(path).unwrap();
            symlink(&swap_to, path).unwrap();
        });
    let child = deputy::spawn(&Token::for_user(ALICE).unwrap(), request).unwrap();
    assert_eq!(read_all(reader), "original\n");
    assert!(child.wait().unwrap().success());
    assert!(
        fs::symlink_metadata(&program)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the hook did swap the path"
    );
    assert!(!marker.exists(), "the swapped-in program ran");
}

#[test]
fn scripts_run_through_their_interpreter() {
    require_root!();
    let dir = common::open_tempdir();
    let script = dir.path().join("hello");
    fs::write(&script, "#!/bin/sh\necho \"hello from $(id -un)\"\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let (reader, writer) = pipe();
    let child = deputy::spawn(
        &Token::for_user(BOB).unwrap(),
        SpawnRequest::new(&script).stdout(writer),
    )
    .unwrap();
    assert_eq!(read_all(reader), format!("hello from {BOB}\n"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn programs_are_looked_up_in_the_users_path_and_missing_ones_named() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let child = deputy::spawn(&alice, SpawnRequest::new("true")).unwrap();
    assert_eq!(child.program(), Path::new("/usr/bin/true"));
    assert!(child.wait().unwrap().success());
    let err = deputy::spawn(&alice, SpawnRequest::new("dpt-no-such-program")).unwrap_err();
    assert!(matches!(err, SpawnError::ProgramNotFound { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "cannot find \"dpt-no-such-program\" in PATH \"{}\" as {ALICE}",
            deputy::USER_PATH
        )
    );
}

#[test]
fn exit_status_and_signals_go_through_the_pidfd() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let child =
        deputy::spawn(&alice, SpawnRequest::new("/bin/sh").arg("-c").arg("exit 7")).unwrap();
    assert_eq!(child.wait().unwrap(), ExitStatus::Exited(7));
    let sleeper = deputy::spawn(&alice, SpawnRequest::new("sleep").arg("30")).unwrap();
    assert_eq!(sleeper.try_wait().unwrap(), None);
    sleeper.signal(Signal::KILL).unwrap();
    assert_eq!(sleeper.wait().unwrap(), ExitStatus::Signaled(9));
    assert_eq!(ExitStatus::Signaled(9).code(), 137);
}

#[test]
fn rlimits_and_umask_are_applied() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let (reader, writer) = pipe();
    let request = SpawnRequest::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -n; ulimit -Hn; umask")
        .rlimit(deputy::Resource::Nofile, Some(64), Some(128))
        .umask(0o077)
        .stdout(writer);
    let child = deputy::spawn(&alice, request).unwrap();
    assert_eq!(read_all(reader), "64\n128\n0077\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_limit_above_the_hard_limit_needs_cap_sys_resource() {
    require_root!();
    // With CAP_SYS_RESOURCE the limit is raised; without it (root on these machines) the start
    // is refused with an error naming the step and the user.
    let hard = rustix::process::getrlimit(deputy::Resource::Nofile)
        .maximum
        .expect("a finite hard limit");
    let request =
        SpawnRequest::new("true").rlimit(deputy::Resource::Nofile, Some(hard + 1), Some(hard + 1));
    let result = deputy::spawn(&Token::for_user(ALICE).unwrap(), request);
    let may_raise = deputy::check_privileges()
        .unwrap()
        .missing_optional
        .is_empty();
    match result {
        Ok(child) => {
            assert!(may_raise, "raised a limit without CAP_SYS_RESOURCE");
            assert!(child.wait().unwrap().success());
        }
        Err(err) => {
            assert!(!may_raise, "{err}");
            assert!(
                matches!(
                    err,
                    SpawnError::LimitRefused {
                        resource: deputy::Resource::Nofile,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("cannot set the Nofile limit for {ALICE}: ")),
                "{err}"
            );
        }
    }
}

#[test]
fn only_a_primary_token_starts_processes() {
    let (server, _client) = std::os::unix::net::UnixStream::pair().unwrap();
    let peer = Token::from_peer(&server, ImpersonationLevel::Impersonation).unwrap();
    let err = deputy::spawn(&peer, SpawnRequest::new("true")).unwrap_err();
    assert!(matches!(err, SpawnError::NotPrimary { .. }), "{err:?}");
}

#[test]
fn malformed_requests_are_refused_by_name() {
    let me = Token::current().unwrap();
    let err = deputy::spawn(&me, SpawnRequest::new("")).unwrap_err();
    assert_eq!(err.to_string(), "invalid program: it is empty");
    let err = deputy::spawn(&me, SpawnRequest::new("true").arg("a\0b")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid argv[1] \"a\\0b\": it contains a NUL byte"
    );
}

#[test]
fn anyone_may_start_a_command_as_themselves() {
    // No root needed: the credential change is to the ids the process already has.
    let me = Token::current().unwrap();
    let (reader, writer) = pipe();
    let child = deputy::spawn(&me, SpawnRequest::new("id").arg("-u").stdout(writer)).unwrap();
    assert_eq!(read_all(reader).trim(), me.uid().as_raw().to_string());
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_terminal_is_the_users_and_the_commands_controlling_terminal() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let pty = deputy::pty::open_pty(&alice, Some((33, 101))).unwrap();
    let script = "tty; stat -c '%U %G %a' \"$(tty)\"; ps -o tty= -p $$; stty size";
    let request = SpawnRequest::new("/bin/sh")
        .args(["-c", script])
        .terminal(pty.follower);
    let child = deputy::spawn(&alice, request).unwrap();
    // Read until the last follower closes (EIO on Linux).
    let mut out = Vec::new();
    let mut leader = fs::File::from(pty.leader);
    let mut buf = [0u8; 1024];
    loop {
        match std::io::Read::read(&mut leader, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(child.wait().unwrap().success());
    let out = String::from_utf8(out).unwrap().replace("\r\n", "\n");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], pty.path.to_str().unwrap());
    assert_eq!(lines[1], format!("{ALICE} tty 620"));
    assert_eq!(
        format!("/dev/{}", lines[2].trim()),
        lines[0],
        "the pty is the controlling terminal"
    );
    assert_eq!(lines[3], "33 101");
}
