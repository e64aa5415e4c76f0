//! A received call, taken apart the way deputyd's `server.rs` and `methods.rs` do before a
//! method acts: the method's name, its parameters into the method's `deputy_proto` type, then
//! the checks that need no session, no account and no system call.
//!
//! `server.rs` and `methods.rs` use the whole daemon (sessions, PAM, spawning), so they cannot
//! be compiled here. The few lines of them that only take a call apart are mirrored below,
//! each naming its original; everything they call is the real code: serde's derives of the
//! `deputy_proto` types, `deputy::grant::X11Display::parse`, `Signal::from_named_raw`,
//! `SessionId` and `ImpersonationLevel` parsing, and the policy's `may_pass_env`.

use std::ffi::OsString;
use std::os::fd::OwnedFd;

use deputy::grant::X11Display;
use deputy::{ImpersonationLevel, SessionId, Signal};
use deputy_proto as proto;
use serde::Deserialize;
use serde_json::Value;

use crate::policy::Policy;

/// `server.rs`'s `RawCall`: a method call, before its parameters are checked.
#[derive(Debug, Deserialize)]
pub struct RawCall {
    /// The method's full name.
    pub method: String,
    /// Its parameters, checked per method.
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// Why a call was refused, short of acting on it.
#[derive(Debug)]
pub enum Refused {
    /// `org.varlink.service.InvalidParameter`, naming the parameter.
    InvalidParameter(String),
    /// `io.deputy.InvalidArgument`.
    InvalidArgument(proto::Error),
    /// Method or interface not found.
    NotFound(String),
}

/// `server.rs`'s `params`: the parameters as `T`; absent or null is `{}`.
pub fn params<T: serde::de::DeserializeOwned + Default>(
    parameters: Option<Value>,
) -> Result<T, Refused> {
    match parameters {
        None | Some(Value::Null) => {
            serde_json::from_value(Value::Object(Default::default())).map_err(invalid)
        }
        Some(value) => serde_json::from_value(value).map_err(invalid),
    }
}

/// `server.rs`'s `invalid`: a parameter error, naming the parameter where serde says which.
fn invalid(err: serde_json::Error) -> Refused {
    let text = err.to_string();
    let parameter = text
        .split('`')
        .nth(1)
        .filter(|_| text.contains("field"))
        .unwrap_or("parameters")
        .to_owned();
    Refused::InvalidParameter(parameter)
}

fn invalid_argument(parameter: &str, reason: String) -> Refused {
    Refused::InvalidArgument(proto::Error::InvalidArgument {
        parameter: parameter.into(),
        reason,
    })
}

/// `server.rs`'s `dispatch`, up to the point where a method would act: the parameters of
/// `method` parsed into its type and checked, with the descriptors that came with the call.
///
/// # Errors
/// What deputyd would answer before acting.
pub fn check(
    policy: &Policy,
    method: &str,
    parameters: Option<Value>,
    fds: Vec<OwnedFd>,
) -> Result<(), Refused> {
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let fds = &mut fds;
    match method {
        "org.varlink.service.GetInfo" => Ok(()),
        "org.varlink.service.GetInterfaceDescription" => {
            let interface = parameters
                .as_ref()
                .and_then(|p| p.get("interface"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if interface == proto::INTERFACE || interface == "org.varlink.service" {
                Ok(())
            } else {
                Err(Refused::NotFound(interface.to_owned()))
            }
        }
        "io.deputy.GetToken" | "io.deputy.ListSessions" => {
            params::<proto::Empty>(parameters).map(drop)
        }
        "io.deputy.Logon" => {
            let call: proto::Logon = params(parameters)?;
            logon_type(call.logon_type.as_deref())?;
            session_name(&call.user);
            secret_param(
                fds,
                call.password.is_some(),
                call.password_fd,
                "password",
                "passwordFd",
            )
        }
        "io.deputy.BeginLogon" => {
            let call: proto::BeginLogon = params(parameters)?;
            logon_type(call.logon_type.as_deref()).map(drop)
        }
        "io.deputy.AnswerLogon" => {
            let call: proto::AnswerLogon = params(parameters)?;
            secret_param(
                fds,
                call.answer.is_some(),
                call.answer_fd,
                "answer",
                "answerFd",
            )
        }
        "io.deputy.CreateProcess" => create_process(policy, params(parameters)?, fds),
        "io.deputy.Signal" => {
            let call: proto::Signal = params(parameters)?;
            if let Some(session) = &call.session {
                session_name(session);
            }
            // `methods.rs` `signal`: a number the kernel knows, then a pid or a session.
            Signal::from_named_raw(call.signal).ok_or_else(|| {
                invalid_argument("signal", format!("{} is not a signal number", call.signal))
            })?;
            match (call.pid, call.session) {
                (None, None) => Err(invalid_argument("pid", "give a pid or a session".into())),
                _ => Ok(()),
            }
        }
        "io.deputy.ResizePty" => params::<proto::ResizePty>(parameters).map(drop),
        "io.deputy.Logoff" => {
            let call: proto::Logoff = params(parameters)?;
            session_name(&call.session);
            Ok(())
        }
        other => Err(Refused::NotFound(other.to_owned())),
    }
}

/// `methods.rs`'s `logon_type`.
fn logon_type(name: Option<&str>) -> Result<(), Refused> {
    match name.unwrap_or("interactive") {
        "interactive" | "batch" | "service" | "network" | "new_credentials" => Ok(()),
        other => Err(invalid_argument(
            "logonType",
            format!("{other:?} is none of interactive, batch, service, network, new_credentials"),
        )),
    }
}

/// `methods.rs`'s `take_fd`: the descriptor an index names, each at most once.
fn take_fd(
    fds: &mut [Option<OwnedFd>],
    index: Option<u32>,
    parameter: &str,
) -> Result<Option<OwnedFd>, Refused> {
    let Some(index) = index else { return Ok(None) };
    fds.get_mut(index as usize)
        .and_then(Option::take)
        .map(Some)
        .ok_or_else(|| {
            invalid_argument(
                parameter,
                format!("no descriptor {index} came with the call (or it was named twice)"),
            )
        })
}

/// `methods.rs`'s `secret_param`, short of reading the pipe: exactly one of the inline secret
/// and a passed descriptor.
fn secret_param(
    fds: &mut [Option<OwnedFd>],
    inline: bool,
    index: Option<u32>,
    name: &str,
    fd_name: &str,
) -> Result<(), Refused> {
    match (take_fd(fds, index, fd_name)?, inline) {
        (Some(_), false) | (None, true) => Ok(()),
        _ => Err(invalid_argument(
            name,
            format!("give exactly one of {name} and {fd_name}"),
        )),
    }
}

/// The library's parsers of the strings that name sessions and levels: deputyd keys sessions
/// by their text, but a library user may parse what a client sent.
fn session_name(text: &str) {
    if let Ok(id) = text.parse::<SessionId>() {
        // What parses is 32 hex digits, and prints back as the same id.
        assert_eq!(
            id.to_string().parse::<SessionId>().ok(),
            Some(id),
            "{text:?}"
        );
    }
    if let Ok(level) = text.parse::<ImpersonationLevel>() {
        assert!(level.to_string().eq_ignore_ascii_case(text), "{text:?}");
    }
}

/// `methods.rs`'s `create_process` and `grant_desktop`, the checks before a session is chosen.
fn create_process(
    policy: &Policy,
    call: proto::CreateProcess,
    fds: &mut [Option<OwnedFd>],
) -> Result<(), Refused> {
    if call.argv.is_empty() {
        return Err(invalid_argument("argv", "it is empty".into()));
    }
    environment(policy, call.env.as_deref().unwrap_or_default())?;
    take_fd(fds, call.stdin, "stdin")?;
    take_fd(fds, call.stdout, "stdout")?;
    take_fd(fds, call.stderr, "stderr")?;
    let delegated = take_fd(fds, call.delegate_fd, "delegateFd")?;
    if delegated.is_some() && (call.user.is_some() || call.session.is_some()) {
        return Err(invalid_argument(
            "delegateFd",
            "it goes with neither user nor session".into(),
        ));
    }
    logon_type(call.logon_type.as_deref())?;
    if let Some(session) = &call.session {
        session_name(session);
    }
    if let Some(x11) = &call.x11 {
        let display = X11Display::parse(&x11.display)
            .map_err(|e| invalid_argument("x11.display", e.to_string()))?;
        // A display that parsed prints as one that parses to the same display.
        let again = X11Display::parse(&display.to_string()).expect("a printed display parses");
        assert_eq!(again.to_string(), display.to_string());
        let _ = display.socket();
        hex(&x11.auth_data).ok_or_else(|| invalid_argument("x11.authData", "not hex".into()))?;
    }
    Ok(())
}

/// `methods.rs`'s `Filtered`: the kept pairs, and the names the allowlist dropped.
pub type Filtered = (Vec<(OsString, OsString)>, Vec<String>);

/// `methods.rs`'s `environment`: `NAME=value` entries, against the allowlist. The kept pairs
/// go to `SpawnRequest::env`.
///
/// # Errors
/// An entry without `=`.
pub fn environment(policy: &Policy, env: &[String]) -> Result<Filtered, Refused> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for entry in env {
        let Some((name, value)) = entry.split_once('=') else {
            return Err(invalid_argument(
                "env",
                format!("{entry:?} is not NAME=value"),
            ));
        };
        if policy.may_pass_env(name) {
            kept.push((name.into(), value.into()));
        } else {
            dropped.push(name.to_owned());
        }
    }
    Ok((kept, dropped))
}

/// `methods.rs`'s `hex`.
fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
