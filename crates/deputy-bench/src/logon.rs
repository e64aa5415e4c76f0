//! A fresh password logon through deputyd against the PAM stack's own cost, alternated in one
//! run: `daemon` is connect, `Logon` (password in a pipe), `CreateProcess` of `/bin/true` in
//! the new session and its exit (the session then ends, off the caller's path); `bare` is the
//! same PAM calls in this process (`pam_start` … `open_session`, `close_session`, `pam_end`,
//! as `crates/deputy/benches/logon.rs` makes them) and a plain start of `/bin/true` as the
//! user. The password is read from a file and never printed.

use std::path::Path;
use std::time::{Duration, Instant};

use deputy::{Conversation, Echo, Secret, SpawnRequest, Token};
use deputy_os::pam::{CredAction, Pam};
use serde::Serialize;

use crate::client::{self, Method};
use crate::stats::{Samples, Summary};

/// Answers every hidden prompt with the password.
struct Password(Secret);

impl Conversation for Password {
    fn prompt(&mut self, _text: &str, echo: Echo) -> Option<Secret> {
        (echo == Echo::Off).then(|| self.0.clone())
    }
    fn info(&mut self, _text: &str) {}
    fn error(&mut self, _text: &str) {}
}

/// What [`compare`] measured.
#[derive(Debug, Serialize)]
pub struct Logon {
    /// The PAM service.
    pub service: String,
    /// Milliseconds left untimed between two logons.
    pub pace_ms: u64,
    /// In-process PAM calls and a plain start.
    pub bare: Summary,
    /// Through deputyd.
    pub daemon: Summary,
    /// daemon median ÷ bare median.
    pub ratio: f64,
}

fn bare(service: &str, user: &Token, password: &Secret) -> Result<(), String> {
    let step = |e: deputy_os::pam::PamError| e.to_string();
    let conversation = Box::new(Password(password.clone()));
    let mut pam = Pam::start(service, Some(user.user()), conversation).map_err(step)?;
    pam.take_over_fail_delay().map_err(step)?;
    pam.authenticate().map_err(step)?;
    pam.acct_mgmt().map_err(step)?;
    pam.setcred(CredAction::Establish).map_err(step)?;
    pam.open_session().map_err(step)?;
    let _env = pam.env_list();
    let child = deputy::spawn(user, SpawnRequest::new("/bin/true")).map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("/bin/true: {status:?}"));
    }
    pam.close_session().map_err(step)?;
    pam.setcred(CredAction::Delete).map_err(step)?;
    Ok(())
}

async fn through_daemon(
    socket: &Path,
    user: &str,
    password: &Secret,
) -> Result<(), client::Failure> {
    let mut conn = client::connect(socket).await?;
    let (reader, mut writer) =
        std::io::pipe().map_err(|e| client::Failure::Transport(e.to_string()))?;
    std::io::Write::write_all(&mut writer, password.expose())
        .map_err(|e| client::Failure::Transport(e.to_string()))?;
    drop(writer);
    let logon = deputy_proto::Logon {
        user: user.to_owned(),
        password_fd: Some(0),
        ..deputy_proto::Logon::default()
    };
    let reply: deputy_proto::LogonReply =
        client::call(&mut conn, &Method::Logon(&logon), vec![reader.into()]).await?;
    let request = client::create(
        &client::Route::Session(reply.session),
        &["/bin/true"],
        false,
    );
    client::start_and_wait(&mut conn, &request).await?;
    Ok(())
}

/// Alternates `runs` bare logons and `runs` through deputyd (after `warmup` of each), with
/// `pace` untimed between any two.
///
/// # Errors
/// When the account is unknown or a warm-up logon fails (a wrong password must not be tried
/// again and again: deputyd would lock the caller out).
pub async fn compare(
    socket: &Path,
    service: &str,
    user: &str,
    password: Secret,
    runs: usize,
    warmup: usize,
    pace: Duration,
) -> Result<Logon, String> {
    let token = Token::for_user(user).map_err(|e| format!("{user}: {e}"))?;
    for _ in 0..warmup.max(1) {
        bare(service, &token, &password).map_err(|e| format!("bare logon: {e}"))?;
        through_daemon(socket, user, &password)
            .await
            .map_err(|e| format!("logon through deputyd: {e}"))?;
    }
    let (mut b, mut d) = (Samples::default(), Samples::default());
    for _ in 0..runs {
        tokio::time::sleep(pace).await;
        let began = Instant::now();
        match bare(service, &token, &password) {
            Ok(()) => b.push(began.elapsed()),
            Err(e) => b.fail("pam".into(), e),
        }
        tokio::time::sleep(pace).await;
        let began = Instant::now();
        match through_daemon(socket, user, &password).await {
            Ok(()) => d.push(began.elapsed()),
            Err(f) => d.fail(f.kind(), f.to_string()),
        }
    }
    let (bare, daemon) = (b.summary(), d.summary());
    Ok(Logon {
        service: service.to_owned(),
        pace_ms: pace.as_millis() as u64,
        ratio: daemon.median_ms / bare.median_ms.max(1e-9),
        bare,
        daemon,
    })
}
