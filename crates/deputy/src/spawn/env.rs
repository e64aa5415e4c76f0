//! The environment of a started command.
//!
//! Built from the token, never from the daemon's own environment: `HOME`, `USER`, `LOGNAME` and
//! `SHELL` from the account, a safe `PATH`, then the request's additions. An addition is dropped
//! (and reported, so the daemon can audit it) when its name is on the denylist below: variables
//! that make the dynamic loader, glibc or a shell run code or read files of someone else's
//! choosing. The list follows glibc's `UNSECURE_ENVVARS` (what glibc itself ignores in setuid
//! programs) and sudo's `env_reset` defaults for shells.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::SpawnError;
use crate::Token;

/// `PATH` for an ordinary user (Debian's `ENV_PATH` without the games directories).
pub const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `PATH` for uid 0 (Debian's `ENV_SUPATH`).
pub const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Names a request may not set. The identity variables are deputy's to set from the token.
pub const DENIED_NAMES: &[&str] = &[
    // Set from the token.
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    // glibc's UNSECURE_ENVVARS: loader, iconv, resolver, locale and malloc hooks.
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_TRACE",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    // Shell start-up hooks (sudo's env_reset list).
    "BASH_ENV",
    "ENV",
    "IFS",
    "PS4",
    "SHELLOPTS",
];

/// Name prefixes a request may not use: every dynamic-loader variable (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`, `LD_AUDIT`, ...) and bash's exported functions.
pub const DENIED_PREFIXES: &[&str] = &["LD_", "BASH_FUNC_"];

/// Whether a request may set the variable `name`.
pub fn is_denied(name: &OsStr) -> bool {
    let name = name.as_bytes();
    DENIED_NAMES.iter().any(|denied| name == denied.as_bytes())
        || DENIED_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix.as_bytes()))
}

/// A finished environment.
#[derive(Debug)]
pub(crate) struct Environment {
    /// `NAME=value` entries, in a stable order.
    pub entries: Vec<CString>,
    /// The `PATH` the command gets, which is also where its program is looked up.
    pub path: OsString,
    /// Names from the request that were dropped.
    pub removed: Vec<String>,
}

/// Builds the command's environment for `token`: the account's variables, then `session`
/// (from PAM: configured by the administrator, so not filtered, except that it cannot replace
/// the identity variables), then the request's `additions`.
pub(crate) fn build(
    token: &Token,
    session: &[(OsString, OsString)],
    additions: &[(OsString, OsString)],
) -> Result<Environment, SpawnError> {
    let default_path = if token.uid().is_root() {
        ROOT_PATH
    } else {
        USER_PATH
    };
    let mut vars: Vec<(OsString, OsString)> = vec![
        ("HOME".into(), token.home().as_os_str().to_owned()),
        ("USER".into(), token.user().into()),
        ("LOGNAME".into(), token.user().into()),
        ("SHELL".into(), token.shell().as_os_str().to_owned()),
        ("PATH".into(), default_path.into()),
    ];
    for (name, value) in session {
        if IDENTITY.iter().any(|identity| name == *identity)
            || check_name(name).is_err()
            || value.as_bytes().contains(&0)
        {
            continue;
        }
        set(&mut vars, name, value);
    }
    let mut removed = Vec::new();
    for (name, value) in additions {
        check_name(name)?;
        if value.as_bytes().contains(&0) {
            return Err(invalid_env(name, "its value contains a NUL byte"));
        }
        if is_denied(name) {
            removed.push(name.to_string_lossy().into_owned());
            continue;
        }
        set(&mut vars, name, value);
    }
    let path = vars
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let entries = vars
        .into_iter()
        .map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).expect("names and values were checked for NUL bytes")
        })
        .collect();
    Ok(Environment {
        entries,
        path,
        removed,
    })
}

/// The variables deputy sets from the token, which nothing may replace.
const IDENTITY: [&str; 4] = ["HOME", "USER", "LOGNAME", "SHELL"];

fn set(vars: &mut Vec<(OsString, OsString)>, name: &OsStr, value: &OsStr) {
    match vars.iter_mut().find(|(existing, _)| existing == name) {
        Some(slot) => slot.1 = value.to_owned(),
        None => vars.push((name.to_owned(), value.to_owned())),
    }
}

fn check_name(name: &OsStr) -> Result<(), SpawnError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(invalid_env(name, "the name is empty"));
    }
    if bytes.contains(&b'=') {
        return Err(invalid_env(name, "the name contains '='"));
    }
    if bytes.contains(&0) {
        return Err(invalid_env(name, "the name contains a NUL byte"));
    }
    Ok(())
}

fn invalid_env(name: &OsStr, reason: &str) -> SpawnError {
    SpawnError::InvalidRequest {
        what: format!("environment variable {:?}", name.to_string_lossy()),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(additions: &[(&str, &str)]) -> Result<Environment, SpawnError> {
        let token = Token::for_user("root").unwrap();
        let additions: Vec<(OsString, OsString)> = additions
            .iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        build(&token, &[], &additions)
    }

    fn entries(env: &Environment) -> Vec<String> {
        env.entries
            .iter()
            .map(|e| e.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn identity_comes_from_the_token() {
        let env = env_of(&[("HOME", "/tmp"), ("USER", "someone"), ("TERM", "xterm")]).unwrap();
        let entries = entries(&env);
        assert!(entries.contains(&"HOME=/root".to_owned()));
        assert!(entries.contains(&"USER=root".to_owned()));
        assert!(entries.contains(&"LOGNAME=root".to_owned()));
        assert!(entries.contains(&"TERM=xterm".to_owned()));
        assert_eq!(env.removed, ["HOME", "USER"]);
    }

    #[test]
    fn loader_and_shell_hooks_are_dropped() {
        let env = env_of(&[
            ("LD_PRELOAD", "/x.so"),
            ("LD_LIBRARY_PATH", "/x"),
            ("BASH_FUNC_f%%", "() { :; }"),
            ("GCONV_PATH", "/x"),
            ("LANG", "C.UTF-8"),
        ])
        .unwrap();
        assert!(entries(&env).iter().all(|e| !e.starts_with("LD_")
            && !e.starts_with("BASH_FUNC")
            && !e.starts_with("GCONV")));
        assert!(entries(&env).contains(&"LANG=C.UTF-8".to_owned()));
        assert_eq!(env.removed.len(), 4);
    }

    #[test]
    fn path_may_be_replaced_and_is_reported() {
        assert_eq!(env_of(&[]).unwrap().path, ROOT_PATH);
        let env = env_of(&[("PATH", "/opt/bin")]).unwrap();
        assert_eq!(env.path, "/opt/bin");
        assert_eq!(
            entries(&env)
                .iter()
                .filter(|e| e.starts_with("PATH="))
                .count(),
            1
        );
    }

    #[test]
    fn the_session_environment_joins_but_cannot_change_identity() {
        let token = Token::for_user("root").unwrap();
        let session: Vec<(OsString, OsString)> = [
            ("KRB5CCNAME", "FILE:/tmp/krb5cc_0_x"),
            ("HOME", "/elsewhere"),
            ("LANG", "de_DE.UTF-8"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        let env = build(&token, &session, &[("LANG".into(), "C.UTF-8".into())]).unwrap();
        let entries = entries(&env);
        assert!(entries.contains(&"KRB5CCNAME=FILE:/tmp/krb5cc_0_x".to_owned()));
        assert!(entries.contains(&"HOME=/root".to_owned()));
        assert!(
            entries.contains(&"LANG=C.UTF-8".to_owned()),
            "the request still has the last word"
        );
    }

    #[test]
    fn malformed_names_and_values_are_refused_by_name() {
        for (name, value) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("GOOD", "a\0b")] {
            let err = env_of(&[(name, value)]).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid environment variable"),
                "{err}"
            );
        }
    }
}
