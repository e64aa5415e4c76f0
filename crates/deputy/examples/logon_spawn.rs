//! The seed's first procedure, "create a client process by logging on the client", on the
//! library's public API only:
//!
//! 1. log the client on with its credentials (`LogonUser`): a logon session and its primary
//!    token;
//! 2. open the executable while impersonating the logged-on user (`ImpersonateLoggedOnUser`),
//!    so the check is the user's, not the server's;
//! 3. start the process with the session's primary token (`CreateProcessAsUser`);
//! 4. log off.
//!
//! ```text
//! logon_spawn [--service NAME] USER PROGRAM [ARGS...]      (as root; password on stdin)
//! printf 'dpt-alice-pw\n' | logon_spawn dpt-alice id
//! ```

use std::error::Error;
use std::io::BufRead;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use deputy::{Impersonation, LogonConfig, LogonRequest, LogonType, Logons, Secret, SpawnRequest};

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("logon_spawn: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<u8, Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = LogonConfig::default();
    if args.first().map(String::as_str) == Some("--service") && args.len() > 1 {
        config.service = args.remove(1);
        args.remove(0);
    }
    let [user, program, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: logon_spawn [--service NAME] USER PROGRAM [ARGS...] (password on stdin)".into(),
        );
    };
    // Examples live one directory below the binaries, where the session worker is.
    if !config.worker.exists()
        && let Some(beside_binaries) = config.worker.parent().and_then(|dir| dir.parent())
    {
        config.worker = beside_binaries.join("deputy-session-worker");
    }

    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = Secret::from(password.trim_end_matches('\n').to_owned());

    // 1. LogonUser.
    let logons = Logons::new(config);
    let session = logons.logon(LogonRequest::password(
        user.as_str(),
        LogonType::Interactive,
        password,
    ))?;
    eprintln!("logon_spawn: {user} logged on, session {}", session.id());

    // 2. ImpersonateLoggedOnUser: may the user reach the program? (spawn checks again, and
    // executes exactly the file it opened.)
    {
        let _as_user = Impersonation::begin(session.token())?;
        let path = PathBuf::from(program);
        if path.is_absolute() {
            std::fs::metadata(&path).map_err(|e| format!("{user} cannot reach {program}: {e}"))?;
        }
    }

    // 3. CreateProcessAsUser, with our stdout and stderr.
    let request = SpawnRequest::new(program)
        .args(rest)
        .stdout(std::io::stdout().as_fd().try_clone_to_owned()?)
        .stderr(std::io::stderr().as_fd().try_clone_to_owned()?);
    let child = session.spawn(request)?;
    let status = child.wait()?;

    // 4. Log off: pam_close_session, pam_setcred(DELETE_CRED), pam_end.
    session.logoff()?;
    eprintln!("logon_spawn: {program} ended with {status}; {user} logged off");
    Ok(u8::try_from(status.code()).unwrap_or(u8::MAX))
}
