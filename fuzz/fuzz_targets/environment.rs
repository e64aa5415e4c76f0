//! Environment and argv validation: what a caller's `argv` and `env` go through before a
//! command starts — deputyd's allowlist (`methods.rs` `environment`, `Policy::may_pass_env`),
//! then the library's checks in `deputy::spawn` (argv and names without NUL or '=', the
//! denylist `deputy::is_denied`).
//!
//! `deputy::spawn` is driven only as far as its validation: the request's working directory
//! is a path with a NUL byte, which no open accepts (rustix refuses it before any system call),
//! and its program is `/dev/null/...`, which cannot exist. Before those it only impersonates
//! the current user on this thread (the ids it already has). So nothing is ever started; a
//! start that succeeded anyway is a failure of this target.
//!
//! Input: records separated by '\n'.
//!   `A` bytes             an argument
//!   `E` name `=` value    an environment variable for the library (raw bytes, NUL allowed);
//!                         with a 0x1F byte, the name ends there instead, so it may hold '='
//!   `D` NAME=value        an `env` entry as a client sends it to deputyd (UTF-8)

#![no_main]

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

use deputy::{SpawnError, SpawnRequest, Token, is_denied};
use deputy_fuzz::call;
use deputy_fuzz::config::Config;
use deputy_fuzz::policy::Policy;
use libfuzzer_sys::fuzz_target;

/// No path through here reaches an exec, and this one could not anyway.
const PROGRAM: &str = "/dev/null/deputy-fuzz-never-runs";

fn token() -> &'static Token {
    static TOKEN: OnceLock<Token> = OnceLock::new();
    TOKEN.get_or_init(|| Token::current().expect("the current user's token"))
}

/// The embedded defaults' allowlist, and one that lets every name through to the library.
fn policies() -> &'static (Policy, Policy) {
    static POLICIES: OnceLock<(Policy, Policy)> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let mut open = Config::default();
        open.environment.allow = vec!["*".into()];
        (Policy::new(Config::default()), Policy::new(open))
    })
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'=') && !name.contains(&0)
}

fuzz_target!(|data: &[u8]| {
    let mut args: Vec<Vec<u8>> = Vec::new();
    let mut env: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut entries: Vec<String> = Vec::new();
    for record in data.split(|b| *b == b'\n') {
        match record {
            [b'A', arg @ ..] => args.push(arg.to_vec()),
            [b'E', pair @ ..] => {
                let at = pair
                    .iter()
                    .position(|b| *b == 0x1f)
                    .or_else(|| pair.iter().position(|b| *b == b'='));
                let (name, value) = match at {
                    Some(at) => (&pair[..at], &pair[at + 1..]),
                    None => (pair, &[][..]),
                };
                env.push((name.to_vec(), value.to_vec()));
            }
            [b'D', entry @ ..] => {
                if let Ok(entry) = std::str::from_utf8(entry) {
                    entries.push(entry.to_owned());
                }
            }
            _ => {}
        }
    }

    // deputyd's allowlist: the defaults keep a subset of what an open list keeps.
    let (defaults, open) = policies();
    let kept = match (
        call::environment(defaults, &entries),
        call::environment(open, &entries),
    ) {
        (Ok((strict, dropped)), Ok((all, none))) => {
            assert!(none.is_empty(), "an allow-all list dropped {none:?}");
            assert_eq!(strict.len() + dropped.len(), all.len());
            all
        }
        (Err(_), Err(_)) => Vec::new(), // an entry without '=': refused either way
        (a, b) => panic!("the allowlists disagree on the form of {entries:?}: {a:?} / {b:?}"),
    };
    for (name, value) in kept {
        env.push((name.into_vec(), value.into_vec()));
    }

    // The library's denylist: the loader's variables and bash's functions, whatever follows.
    for (name, _) in &env {
        let name = OsString::from_vec(name.clone());
        let bytes = name.as_encoded_bytes();
        if bytes.starts_with(b"LD_") || bytes.starts_with(b"BASH_FUNC_") {
            assert!(is_denied(&name), "{name:?} is not denied");
        }
    }

    // What spawn must refuse as an invalid request, from its documentation: a NUL in an
    // argument, and a variable whose name is empty or holds '=' or NUL, or whose value holds
    // NUL — denied names included.
    let invalid = args.iter().any(|arg| arg.contains(&0))
        || env
            .iter()
            .any(|(name, value)| !valid_name(name) || value.contains(&0));

    let mut request = SpawnRequest::new(PROGRAM)
        .args(args.into_iter().map(OsString::from_vec))
        .current_dir("/\0deputy-fuzz");
    for (name, value) in env {
        request = request.env(OsString::from_vec(name), OsString::from_vec(value));
    }
    let _ = format!("{request:?}");
    match deputy::spawn(token(), request) {
        Err(SpawnError::InvalidRequest { .. }) => {
            assert!(invalid, "a valid request was refused as invalid")
        }
        Err(SpawnError::WorkdirNotAccessible { .. }) => {
            assert!(!invalid, "an invalid request got past validation")
        }
        Err(err) => panic!("unexpected error: {err}"),
        Ok(child) => {
            let _ = child.signal(deputy::Signal::KILL);
            panic!("a fuzz input started {}", child.program().display());
        }
    }
});
