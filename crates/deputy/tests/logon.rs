//! LogonUser over PAM: the real PAM stack (/etc/pam.d/deputy-test), real accounts, real
//! session workers.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ALICE, BOB, pipe, read_all};
use deputy::{
    Caller, Conversation, Echo, LockoutPolicy, LogonConfig, LogonError, LogonRequest, LogonType,
    Logons, Secret, SpawnRequest, Token,
};

const ALICE_PW: &str = "dpt-alice-pw";
const BOB_PW: &str = "dpt-bob-pw";
const FAIL_DELAY: Duration = Duration::from_millis(300);

fn logons() -> Logons {
    logons_with(FAIL_DELAY, LockoutPolicy::default())
}

fn logons_with(fail_delay: Duration, lockout: LockoutPolicy) -> Logons {
    Logons::new(LogonConfig {
        service: "deputy-test".to_owned(),
        worker: env!("CARGO_BIN_EXE_deputy-session-worker").into(),
        fail_delay,
        lockout,
        prestart_worker: true,
        timeout: Duration::from_secs(120),
    })
}

/// A caller of its own per test, so lockout counts of one test never touch another.
fn caller(n: u32) -> Caller {
    Caller::Uid(60_000 + n)
}

fn run(session: &deputy::LogonSession, script: &str) -> String {
    let (reader, writer) = pipe();
    let child = session
        .spawn(
            SpawnRequest::new("/bin/sh")
                .args(["-c", script])
                .stdout(writer),
        )
        .unwrap();
    let out = read_all(reader);
    assert!(child.wait().unwrap().success());
    out
}

#[test]
fn the_right_password_gives_a_session_with_the_users_identity_and_pam_environment() {
    require_root!();
    let request = LogonRequest::password(ALICE, LogonType::Interactive, ALICE_PW).caller(caller(1));
    let session = logons().logon(request).unwrap();
    assert_eq!(session.user(), ALICE);
    assert_eq!(session.token().session(), Some(session.id()));
    assert!(session.token().is_primary());
    let out = run(
        &session,
        "id -un; echo \"$DEPUTY_PAM_MARKER\"; echo \"$DEPUTY_PAM_HOME\"",
    );
    assert_eq!(out, format!("{ALICE}\nfrom-pam-env\n/home/{ALICE}\n"));
    assert!(
        session
            .environment()
            .iter()
            .any(|(k, v)| k == "DEPUTY_PAM_MARKER" && v == "from-pam-env")
    );
    session.logoff().unwrap();
}

#[test]
fn a_wrong_password_fails_after_deputys_delay_not_pams() {
    require_root!();
    let started = Instant::now();
    let err = logons()
        .logon(LogonRequest::password(ALICE, LogonType::Interactive, "wrong").caller(caller(2)))
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, LogonError::AuthenticationFailed { ref user } if user == ALICE),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("authentication failed for {ALICE}")
    );
    assert!(took >= FAIL_DELAY, "took {took:?}");
    // The stack's pam_faildelay asks for 4 s and pam_unix for 2 s: neither applies.
    assert!(
        took < Duration::from_millis(1900),
        "took {took:?}: PAM's delay was not taken over"
    );
}

#[test]
fn wrong_passwords_in_progress_do_not_stall_a_right_one() {
    require_root!();
    let logons = Arc::new(logons_with(
        Duration::from_secs(4),
        LockoutPolicy::default(),
    ));
    let wrong: Vec<_> = (0..3)
        .map(|i| {
            let logons = logons.clone();
            std::thread::spawn(move || {
                logons
                    .logon(
                        LogonRequest::password(BOB, LogonType::Batch, "wrong")
                            .caller(caller(10 + i)),
                    )
                    .unwrap_err()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // the three are now in their delay
    let started = Instant::now();
    let session = logons
        .logon(LogonRequest::password(ALICE, LogonType::Batch, ALICE_PW).caller(caller(3)))
        .unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a right password waited {took:?} behind wrong ones"
    );
    drop(session);
    for handle in wrong {
        assert!(matches!(
            handle.join().unwrap(),
            LogonError::AuthenticationFailed { .. }
        ));
    }
}

#[test]
fn locked_expired_and_must_change_accounts_have_distinct_errors() {
    require_root!();
    let logons = logons();
    let attempt = |user: &str, n| {
        logons
            .logon(
                LogonRequest::password(user, LogonType::Interactive, format!("{user}-pw"))
                    .caller(caller(n)),
            )
            .unwrap_err()
    };
    let locked = attempt("dpt-locked", 20);
    assert!(
        matches!(locked, LogonError::AccountLocked { .. }),
        "{locked:?}"
    );
    assert_eq!(locked.to_string(), "the account dpt-locked is locked");
    let expired = attempt("dpt-expired", 21);
    assert!(
        matches!(expired, LogonError::AccountExpired { .. }),
        "{expired:?}"
    );
    assert_eq!(expired.to_string(), "the account dpt-expired has expired");
    let must_change = attempt("dpt-mustchange", 22);
    assert!(
        matches!(must_change, LogonError::PasswordExpired { .. }),
        "{must_change:?}"
    );
    assert!(
        must_change.to_string().contains("must be changed"),
        "{must_change}"
    );
}

#[test]
fn failures_lock_a_caller_out_for_a_while_and_only_that_caller() {
    require_root!();
    let lockout = LockoutPolicy {
        max_failures: 3,
        max_failures_per_caller: 10,
        window: Duration::from_secs(60),
        lockout: Duration::from_secs(2),
    };
    let logons = logons_with(Duration::from_millis(10), lockout);
    let (mallory, carol) = (caller(30), caller(31));
    for _ in 0..3 {
        let err = logons
            .logon(LogonRequest::password(ALICE, LogonType::Batch, "guess").caller(mallory.clone()))
            .unwrap_err();
        assert!(
            matches!(err, LogonError::AuthenticationFailed { .. }),
            "{err:?}"
        );
    }
    let err = logons
        .logon(LogonRequest::password(ALICE, LogonType::Batch, ALICE_PW).caller(mallory.clone()))
        .unwrap_err();
    assert!(
        matches!(err, LogonError::LockedOut { .. }),
        "the right password is refused too: {err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "too many failed logons for {ALICE} from uid 60030: refused until 20"
        )),
        "{err}"
    );
    // Another caller is not locked out of the same account.
    logons
        .logon(LogonRequest::password(ALICE, LogonType::Batch, ALICE_PW).caller(carol))
        .unwrap()
        .logoff()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    logons
        .logon(LogonRequest::password(ALICE, LogonType::Batch, ALICE_PW).caller(mallory))
        .unwrap()
        .logoff()
        .unwrap();
}

#[test]
fn a_network_logon_authenticates_but_cannot_start_processes() {
    require_root!();
    let session = logons()
        .logon(LogonRequest::password(BOB, LogonType::Network, BOB_PW).caller(caller(40)))
        .unwrap();
    assert_eq!(session.logon_type(), Some(LogonType::Network));
    assert!(
        session.environment().is_empty(),
        "no PAM session, no PAM environment"
    );
    let err = session.spawn(SpawnRequest::new("true")).unwrap_err();
    assert!(matches!(err, LogonError::NoCredentials { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("a network logon of {BOB} has no credentials to start processes with")
    );
    let err = logons()
        .logon(LogonRequest::password(BOB, LogonType::Network, "wrong").caller(caller(41)))
        .unwrap_err();
    assert!(matches!(err, LogonError::AuthenticationFailed { .. }));
}

#[test]
fn new_credentials_runs_as_the_caller_with_the_named_users_pam_environment() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let request = LogonRequest::password(BOB, LogonType::NewCredentials, BOB_PW)
        .caller(caller(50))
        .on_behalf_of(alice);
    let session = logons().logon(request).unwrap();
    assert_eq!(session.user(), BOB);
    assert_eq!(session.token().user(), ALICE);
    assert_eq!(
        run(&session, "id -un; echo \"$DEPUTY_PAM_HOME\""),
        format!("{ALICE}\n/home/{BOB}\n")
    );
    // new_credentials without the caller's token is a malformed request.
    let err = logons()
        .logon(LogonRequest::password(
            BOB,
            LogonType::NewCredentials,
            BOB_PW,
        ))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LogonError::InvalidArgument {
                what: "logon type",
                ..
            }
        ),
        "{err:?}"
    );
}

fn marks(host: &str) -> String {
    fs::read_to_string(format!("/run/deputy-test-marks/{host}")).unwrap_or_default()
}

fn unique_host(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        deputy::SessionId::generate().unwrap()
    )
}

#[test]
fn teardown_runs_at_logoff_and_when_a_session_is_dropped_on_an_error_path() {
    require_root!();
    let host = unique_host("logoff");
    let session = logons()
        .logon(
            LogonRequest::password(ALICE, LogonType::Interactive, ALICE_PW)
                .caller(caller(60))
                .remote_host(&host),
        )
        .unwrap();
    assert_eq!(marks(&host), format!("open_session {ALICE}\n"));
    session.logoff().unwrap();
    assert_eq!(
        marks(&host),
        format!("open_session {ALICE}\nclose_session {ALICE}\n")
    );

    let host = unique_host("dropped");
    let failing = || -> Result<(), LogonError> {
        let session = logons().logon(
            LogonRequest::password(ALICE, LogonType::Service, ALICE_PW)
                .caller(caller(61))
                .remote_host(&host),
        )?;
        session.spawn(SpawnRequest::new("/no/such/program"))?;
        Ok(())
    };
    assert!(matches!(failing(), Err(LogonError::Spawn(_))));
    assert_eq!(
        marks(&host),
        format!("open_session {ALICE}\nclose_session {ALICE}\n")
    );
}

#[test]
fn a_trusted_logon_needs_no_password_but_still_checks_the_account() {
    require_root!();
    let logons = logons();
    let session = logons.trusted_logon(ALICE, None).unwrap();
    assert_eq!(session.logon_type(), None);
    assert_eq!(run(&session, "id -un"), format!("{ALICE}\n"));
    let with_session = logons.trusted_logon(BOB, Some(LogonType::Batch)).unwrap();
    assert_eq!(
        run(&with_session, "id -un; echo \"$DEPUTY_PAM_MARKER\""),
        format!("{BOB}\nfrom-pam-env\n")
    );
    assert!(matches!(
        logons.trusted_logon("dpt-locked", None).unwrap_err(),
        LogonError::AccountLocked { .. }
    ));
    assert!(matches!(
        logons.trusted_logon("dpt-expired", None).unwrap_err(),
        LogonError::AccountExpired { .. }
    ));
    assert!(matches!(
        logons
            .trusted_logon("dpt-expired", Some(LogonType::Batch))
            .unwrap_err(),
        LogonError::AccountExpired { .. }
    ));
}

/// The account check's PAM handle serves 32 checks; its successor is started ahead, on another
/// thread. Across several handovers every check still answers, and answers rightly.
#[test]
fn trusted_account_checks_go_on_across_handle_handovers() {
    require_root!();
    let logons = logons();
    for check in 0..100 {
        let session = logons
            .trusted_logon(ALICE, None)
            .unwrap_or_else(|err| panic!("check {check}: {err}"));
        assert_eq!(session.user(), ALICE);
        if check % 10 == 0 {
            assert!(matches!(
                logons.trusted_logon("dpt-expired", None).unwrap_err(),
                LogonError::AccountExpired { .. }
            ));
        }
    }
}

#[test]
fn bad_input_is_refused_before_pam() {
    // No root needed: nothing reaches PAM.
    let logons = logons();
    let long_password = "x".repeat(4097);
    let cases = [
        (
            LogonRequest::password("", LogonType::Batch, "pw"),
            "invalid user name: it is empty",
        ),
        (
            LogonRequest::password("a/b", LogonType::Batch, "pw"),
            "invalid user name: it contains '/'",
        ),
        (
            LogonRequest::password("a:b", LogonType::Batch, "pw"),
            "invalid user name: it contains ':'",
        ),
        (
            LogonRequest::password("a\nb", LogonType::Batch, "pw"),
            "invalid user name: it contains '\\n'",
        ),
        (
            LogonRequest::password("a\0b", LogonType::Batch, "pw"),
            "invalid user name: it contains '\\0'",
        ),
        (
            LogonRequest::password("a".repeat(257), LogonType::Batch, "pw"),
            "invalid user name: longer than 256 bytes",
        ),
        (
            LogonRequest::password(ALICE, LogonType::Batch, long_password.as_str()),
            "invalid password: longer than 4096 bytes",
        ),
    ];
    for (request, message) in cases {
        let started = Instant::now();
        let err = logons.logon(request).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert!(
            started.elapsed() < FAIL_DELAY,
            "no delay for malformed input"
        );
    }
}

/// Answers like a person would, and records every prompt.
struct Recording {
    password: Secret,
    prompts: Arc<Mutex<Vec<String>>>,
}

impl Conversation for Recording {
    fn prompt(&mut self, text: &str, echo: Echo) -> Option<Secret> {
        self.prompts
            .lock()
            .unwrap()
            .push(format!("{text} ({echo:?})"));
        (echo == Echo::Off).then(|| self.password.clone())
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

#[test]
fn the_stacks_prompts_reach_the_callers_conversation() {
    require_root!();
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let conversation = Recording {
        password: Secret::from(ALICE_PW),
        prompts: prompts.clone(),
    };
    let request =
        LogonRequest::with_conversation(ALICE, LogonType::Interactive, Box::new(conversation))
            .caller(caller(70));
    logons().logon(request).unwrap().logoff().unwrap();
    assert_eq!(*prompts.lock().unwrap(), ["Password:  (Off)"]);
}

/// Collects everything a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn no_password_reaches_a_log_an_error_or_debug_output() {
    require_root!();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let secret_right = ALICE_PW;
    let secret_wrong = "Wr0ng-But-Secret-9731";
    let mut shown = String::new();
    tracing::subscriber::with_default(subscriber, || {
        let logons = logons();
        let request =
            LogonRequest::password(ALICE, LogonType::Interactive, secret_right).caller(caller(80));
        shown += &format!("{request:?}");
        let session = logons.logon(request).unwrap();
        shown += &format!("{session:?}");
        session.logoff().unwrap();
        let err = logons
            .logon(
                LogonRequest::password(ALICE, LogonType::Interactive, secret_wrong)
                    .caller(caller(81)),
            )
            .unwrap_err();
        shown += &format!("{err} {err:?}");
    });
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("logon succeeded") && log.contains("logon failed"),
        "tracing captured nothing: {log}"
    );
    for secret in [secret_right, secret_wrong] {
        assert!(!log.contains(secret), "a password reached the log:\n{log}");
        assert!(
            !shown.contains(secret),
            "a password reached Debug or Display output:\n{shown}"
        );
    }
}

/// Runs only when re-executed by `a_session_closes_when_its_daemon_dies_and_its_processes_end`: logs on, starts a
/// process, says "ready", then waits to be killed.
#[test]
fn helper_hold_a_session_until_killed() {
    let Ok(host) = std::env::var("DEPUTY_TEST_HOLD_SESSION") else {
        return;
    };
    let session = logons()
        .logon(
            LogonRequest::password(ALICE, LogonType::Interactive, ALICE_PW)
                .caller(caller(90))
                .remote_host(host),
        )
        .unwrap();
    let child = session.spawn(SpawnRequest::new("sleep").arg("30")).unwrap();
    println!("ready {}", child.pid().as_raw_nonzero());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_session_closes_when_its_daemon_dies_and_its_processes_end() {
    require_root!();
    use std::io::BufRead;
    let host = unique_host("killed");
    let mut daemon = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_hold_a_session_until_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DEPUTY_TEST_HOLD_SESSION", &host)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(daemon.stdout.take().unwrap()).lines();
    let ready = lines
        .find_map(|line| line.unwrap().split("ready ").nth(1).map(str::to_owned))
        .expect("the helper logged on");
    assert_eq!(marks(&host), format!("open_session {ALICE}\n"));
    daemon.kill().unwrap(); // SIGKILL: no destructor runs in the "daemon"
    daemon.wait().unwrap();
    // While the session's command runs, the worker holds the PAM session open (a restarted
    // daemon adopts the command, or ends it)...
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        marks(&host),
        format!("open_session {ALICE}\n"),
        "the worker closed the session under a running process"
    );
    // ...and closes it on its own once the command has ended.
    let pid: i32 = ready.parse().unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marks(&host).contains("close_session") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        marks(&host),
        format!("open_session {ALICE}\nclose_session {ALICE}\n"),
        "the worker closed the session on its own"
    );
}

#[test]
fn a_hanging_pam_module_ends_in_a_timeout_and_stalls_no_one_else() {
    require_root!();
    let hanging = Logons::new(LogonConfig {
        service: "deputy-test-hang".to_owned(),
        timeout: Duration::from_secs(1),
        ..logons().config().clone()
    });
    let waiting = std::thread::spawn(move || {
        let started = Instant::now();
        let err = hanging
            .logon(LogonRequest::password(ALICE, LogonType::Batch, ALICE_PW).caller(caller(95)))
            .unwrap_err();
        (err, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    logons()
        .logon(LogonRequest::password(BOB, LogonType::Batch, BOB_PW).caller(caller(96)))
        .unwrap()
        .logoff()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "another logon waited for the hanging one"
    );
    let (err, took) = waiting.join().unwrap();
    assert!(
        matches!(err, LogonError::TimedOut { ref user, .. } if user == ALICE),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("PAM did not answer the logon of {ALICE} within 1 s; the logon was abandoned")
    );
    assert!(
        took < Duration::from_secs(10),
        "the hung worker was not killed in time: {took:?}"
    );
}
