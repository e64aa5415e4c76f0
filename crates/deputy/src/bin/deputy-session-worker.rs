//! `deputy-session-worker`: holds one logon session's PAM handle. Started by deputy (the
//! library, in deputyd), never by hand; see `deputy::logon`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    deputy::logon::run_session_worker()
}
