//! Logon + start of /bin/true + logoff through deputy, against the bare cost of the same PAM
//! calls on the same stack (in this process, no worker) plus a plain start, in the same run.
//! deputy's own overhead is the difference: the session worker's start and its messages.
//!
//! Two pacings: `paced` leaves 20 ms (untimed) between logons, as logons arriving at a
//! daemon that is not saturated; `back_to_back` starts the next logon at once, so the work
//! deputy does off the caller's path (starting the next spare worker) competes for the CPU.
//!
//! Also the trusted path's account check, kept handle against a fresh one.
//!
//! Run: `cargo bench -p deputy --bench logon` (as root, after `scripts/setup`; it uses the
//! `deputy` PAM service, Debian's common-auth/account/session, and pam_unix's yescrypt).

use deputy::{
    Conversation, Echo, LogonConfig, LogonRequest, LogonType, Logons, Secret, SpawnRequest, Token,
};
use deputy_os::pam::{CredAction, Pam};
use divan::Bencher;

const USER: &str = "dpt-alice";
const PASSWORD: &str = "dpt-alice-pw";
const SERVICE: &str = "deputy";

fn main() {
    if !rustix::process::geteuid().is_root() || Token::for_user(USER).is_err() {
        eprintln!("skipped logon benchmark: it needs root and the {USER} account (scripts/setup)");
        return;
    }
    divan::main();
}

struct Password;

impl Conversation for Password {
    fn prompt(&mut self, _text: &str, echo: Echo) -> Option<Secret> {
        (echo == Echo::Off).then(|| Secret::from(PASSWORD))
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

const PACINGS: [&str; 2] = ["paced", "back_to_back"];

fn pause(pacing: &str) {
    if pacing == "paced" {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn bare(alice: &Token) {
    let mut pam = Pam::start(SERVICE, Some(USER), Box::new(Password)).expect("pam_start");
    pam.take_over_fail_delay().expect("fail delay");
    pam.authenticate().expect("authenticate");
    pam.acct_mgmt().expect("acct_mgmt");
    pam.setcred(CredAction::Establish).expect("setcred");
    pam.open_session().expect("open_session");
    let _env = pam.env_list();
    let child = deputy::spawn(alice, SpawnRequest::new("/bin/true")).expect("spawn");
    assert!(child.wait().expect("wait").success());
    pam.close_session().expect("close_session");
    pam.setcred(CredAction::Delete).expect("setcred delete");
}

#[divan::bench(args = PACINGS, sample_count = 30)]
fn bare_pam_and_spawn(bencher: Bencher, pacing: &str) {
    let alice = Token::for_user(USER).expect("dpt-alice");
    bencher
        .with_inputs(|| pause(pacing))
        .bench_local_values(|()| bare(&alice));
}

#[divan::bench(args = PACINGS, sample_count = 30)]
fn deputy_logon_spawn_logoff(bencher: Bencher, pacing: &str) {
    let logons = Logons::new(LogonConfig {
        service: SERVICE.to_owned(),
        worker: env!("CARGO_BIN_EXE_deputy-session-worker").into(),
        ..LogonConfig::default()
    });
    bencher
        .with_inputs(|| pause(pacing))
        .bench_local_values(|()| {
            let session = logons
                .logon(LogonRequest::password(
                    USER,
                    LogonType::Interactive,
                    PASSWORD,
                ))
                .expect("logon");
            let child = session
                .spawn(SpawnRequest::new("/bin/true"))
                .expect("spawn");
            assert!(child.wait().expect("wait").success());
            session.logoff().expect("logoff");
        });
}

/// The trusted path's account check (`pam_acct_mgmt` on a kept handle), against a fresh PAM
/// handle per check. Many samples: a kept handle that grows with use (modules keep data on it
/// until `pam_end`) shows here as a median far above the fresh handle's.
#[divan::bench(sample_count = 3000)]
fn trusted_account_check(bencher: Bencher) {
    let logons = Logons::new(LogonConfig {
        service: SERVICE.to_owned(),
        worker: env!("CARGO_BIN_EXE_deputy-session-worker").into(),
        ..LogonConfig::default()
    });
    let alice = Token::for_user(USER).expect("dpt-alice");
    bencher.bench_local(|| {
        logons
            .trusted_logon_of(&alice, None)
            .expect("trusted logon")
    });
}

#[divan::bench(sample_count = 300)]
fn bare_account_check(bencher: Bencher) {
    bencher.bench_local(|| {
        let mut pam = Pam::start(SERVICE, Some(USER), Box::new(Password)).expect("pam_start");
        pam.acct_mgmt().expect("acct_mgmt");
    });
}
