//! The daemon's configuration and policy, in TOML (`/etc/deputy/deputyd.toml`). Every field
//! has a default, so an absent file — or an empty one — means the embedded defaults.
//!
//! ```toml
//! [daemon]
//! socket = "/run/deputy/io.deputy"
//! audit_log = "/var/log/deputy/audit.jsonl"
//!
//! [logon]
//! deny_users = ["root"]         # never logged on, whatever the password
//! uid_min = 1000                # system accounts below it are not logged on
//! trusted_callers = [0]         # may start processes as others without a password
//!
//! [limits]
//! sessions_per_user = 64
//!
//! [remote]                      # absent: no network listener at all
//! listen = "192.0.2.10:4433"
//! certificate = "/etc/deputy/tls/server.pem"
//! key = "/etc/deputy/tls/server.key"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the configuration is read from unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/deputy/deputyd.toml";

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where and how the daemon runs.
    pub daemon: Daemon,
    /// Who may be logged on, by whom.
    pub logon: Logon,
    /// Per-caller and per-session bounds.
    pub limits: Limits,
    /// What callers may pass in the environment.
    pub environment: Environment,
    /// Resource limits for every started process, by name (`nofile`, `nproc`, ...).
    pub rlimits: BTreeMap<String, Rlimit>,
    /// Session lifetimes.
    pub sessions: Sessions,
    /// Remote clients, over TLS.
    pub remote: Remote,
}

/// `[daemon]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Daemon {
    /// The Varlink socket (ignored under socket activation).
    pub socket: PathBuf,
    /// The audit log: one JSON line per event. Empty: audit lines go to the log only.
    pub audit_log: Option<PathBuf>,
    /// When the audit log cannot be written (a full disk): "refuse" new logons and starts
    /// until the lines held back are written, or "continue" and report.
    pub on_audit_failure: crate::audit::OnFailure,
    /// The PAM service.
    pub pam_service: String,
    /// The session worker binary; default: `deputy-session-worker` beside deputyd.
    pub session_worker: Option<PathBuf>,
    /// How long an account looked up through NSS is trusted, in seconds (it is dropped at
    /// once when /etc/passwd, /etc/group or /etc/nsswitch.conf change). 0: no cache.
    pub account_cache_secs: u64,
    /// Where a record of every live session is kept (one file each, written atomically), for
    /// a deputyd that restarts after dying to find them. Default: `sessions` beside the socket.
    pub state_dir: Option<PathBuf>,
    /// What a restarted deputyd does with the sessions it finds: "adopt" their running
    /// processes (they end as if nothing had happened), or "end" them (SIGTERM, SIGKILL after
    /// the grace time, grants revoked, tickets destroyed).
    pub on_restart: OnRestart,
}

/// `[daemon] on_restart`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Watch the processes found running; end each session when its last one ends.
    #[default]
    Adopt,
    /// End every session found.
    End,
}

impl Daemon {
    /// Where the session records are kept.
    pub fn state_dir(&self, socket: &Path) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| {
            socket
                .parent()
                .unwrap_or(Path::new("/run/deputy"))
                .join("sessions")
        })
    }
}

impl Default for Daemon {
    fn default() -> Self {
        Daemon {
            socket: deputy_proto::DEFAULT_SOCKET.into(),
            audit_log: Some("/var/log/deputy/audit.jsonl".into()),
            on_audit_failure: crate::audit::OnFailure::Refuse,
            pam_service: "deputy".into(),
            session_worker: None,
            account_cache_secs: deputy::accounts::DEFAULT_TTL.as_secs(),
            state_dir: None,
            on_restart: OnRestart::Adopt,
        }
    }
}

/// `[logon]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logon {
    /// If not empty, only these users may be logged on.
    pub allow_users: Vec<String>,
    /// These users are never logged on.
    pub deny_users: Vec<String>,
    /// Accounts with a uid below this are system accounts and are not logged on.
    pub uid_min: u32,
    /// Callers (uids) that may start processes as another user without a password.
    pub trusted_callers: Vec<u32>,
    /// If not empty, only these callers (uids) may log on a user other than themselves with
    /// a password. Empty: any caller, as `su` allows.
    pub logon_callers: Vec<u32>,
    /// What a failed logon costs, in milliseconds.
    pub fail_delay_ms: u64,
    /// Failures of one caller for one account that lock the caller out of it.
    pub max_failures: u32,
    /// Failures of one caller over all accounts that lock it out.
    pub max_failures_per_caller: u32,
    /// How far back failures count, in seconds.
    pub failure_window_secs: u64,
    /// How long a lockout lasts, in seconds.
    pub lockout_secs: u64,
    /// How long the PAM stack may take for one step of a logon (or a logoff) before it is
    /// abandoned, in seconds.
    pub pam_timeout_secs: u64,
}

impl Default for Logon {
    fn default() -> Self {
        Logon {
            allow_users: Vec::new(),
            deny_users: vec!["root".into()],
            uid_min: login_defs_uid_min().unwrap_or(1000),
            trusted_callers: vec![0],
            logon_callers: Vec::new(),
            fail_delay_ms: 2000,
            max_failures: 5,
            max_failures_per_caller: 20,
            failure_window_secs: 300,
            lockout_secs: 300,
            pam_timeout_secs: 120,
        }
    }
}

/// `UID_MIN` from /etc/login.defs, as useradd reads it.
fn login_defs_uid_min() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/login.defs").ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "UID_MIN")
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Live sessions one user may have.
    pub sessions_per_user: usize,
    /// Live processes in one session.
    pub processes_per_session: usize,
    /// Open connections of one caller uid.
    pub connections_per_uid: usize,
    /// Calls of one caller uid being handled at once; its further calls wait their turn
    /// (a running process does not count). Small, so that a caller who floods the daemon
    /// waits behind itself: starts are served one at a time anyway.
    pub requests_in_flight_per_uid: usize,
    /// Seconds a connection may take to deliver its next complete message.
    pub request_timeout_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sessions_per_user: 64,
            processes_per_session: 256,
            connections_per_uid: 64,
            requests_in_flight_per_uid: 2,
            request_timeout_secs: 300,
        }
    }
}

/// `[environment]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Environment {
    /// Names a caller may pass; a trailing `*` matches a prefix. The library's denylist
    /// (`LD_*` and the like) applies on top.
    pub allow: Vec<String>,
}

impl Default for Environment {
    fn default() -> Self {
        let names = [
            "LANG",
            "LANGUAGE",
            "LC_*",
            "TERM",
            "COLORTERM",
            "NO_COLOR",
            "TZ",
            "DISPLAY",
            "WAYLAND_DISPLAY",
            "EDITOR",
            "VISUAL",
            "PAGER",
            "PATH",
        ];
        Environment {
            allow: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }
}

/// One resource limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimit {
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// `[sessions]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sessions {
    /// A session with no process is ended after this many seconds.
    pub idle_timeout_secs: u64,
    /// At logoff, how long processes have between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            idle_timeout_secs: 900,
            grace_ms: 5000,
        }
    }
}

impl Sessions {
    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    /// The grace time.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
}

/// `[remote]`: a TLS listener for remote clients. There is no plaintext mode: a listener
/// without a certificate and key is refused at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Remote {
    /// `ADDRESS:PORT` to listen on (`[::1]:4433` for IPv6). Absent: no listener.
    pub listen: Option<String>,
    /// The certificate chain, PEM, the server's own first.
    pub certificate: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Mutual TLS: clients must present a certificate issued by one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: only clients whose certificate names one of these (a DNS
    /// subjectAltName, or the subject's common name). Empty: any client the CA vouches for.
    pub allowed_clients: Vec<String>,
    /// With `client_ca`: certificate revocation lists (PEM files, each may hold several). A
    /// client certificate they revoke is refused in the handshake. When set, every certificate
    /// of a client's chain must be covered by a CRL of its issuer (one per issuing CA), or it
    /// is refused too. Read at start.
    pub client_crl: Vec<PathBuf>,
    /// Accept TLS 1.2 as well as 1.3.
    pub tls12: bool,
    /// Open TLS connections, over all addresses.
    pub max_connections: usize,
    /// Open TLS connections from one source address.
    pub max_connections_per_address: usize,
    /// Connections that have not logged a user on yet, over all addresses.
    pub max_unauthenticated: usize,
    /// Seconds for the TLS handshake and the first request to arrive.
    pub handshake_timeout_secs: u64,
}

impl Default for Remote {
    fn default() -> Self {
        Remote {
            listen: None,
            certificate: None,
            key: None,
            client_ca: None,
            allowed_clients: Vec::new(),
            client_crl: Vec::new(),
            tls12: false,
            max_connections: 64,
            max_connections_per_address: 8,
            max_unauthenticated: 16,
            handshake_timeout_secs: 10,
        }
    }
}

impl Remote {
    /// The handshake (and first request) timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses `text` (the contents of `path`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with the line and column of the first problem.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| {
            let offset = err.span().map_or(0, |span| span.start);
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rfind('\n')
                .map_or(before.len(), |nl| before.len() - nl - 1)
                + 1;
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: err.message().to_owned(),
            }
        })?;
        config.validate(path, text)?;
        Ok(config)
    }

    /// Reads `path`; a missing file at the default path means the embedded defaults.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable or invalid file.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            // Point at the key's line if it is written in the file.
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1);
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column: 1,
                message,
            })
        };
        for name in self.rlimits.keys() {
            if crate::policy::resource(name).is_none() {
                return invalid(
                    name,
                    format!(
                        "unknown resource limit {name:?} (known: {})",
                        crate::policy::RESOURCE_NAMES.join(", ")
                    ),
                );
            }
        }
        for (name, limit) in &self.rlimits {
            if limit.soft > limit.hard {
                return invalid(
                    name,
                    format!(
                        "rlimit {name}: soft limit {} is above the hard limit {}",
                        limit.soft, limit.hard
                    ),
                );
            }
        }
        if self.limits.request_timeout_secs == 0 {
            return invalid(
                "request_timeout_secs",
                "request_timeout_secs must be at least 1".into(),
            );
        }
        if self.daemon.socket.as_os_str().is_empty() || !self.daemon.socket.is_absolute() {
            return invalid("socket", "socket must be an absolute path".into());
        }
        self.validate_remote(invalid)
    }

    /// `[remote]`: TLS or nothing.
    fn validate_remote(
        &self,
        invalid: impl Fn(&str, String) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let remote = &self.remote;
        let Some(listen) = &remote.listen else {
            if remote.certificate.is_some()
                || remote.key.is_some()
                || remote.client_ca.is_some()
                || !remote.client_crl.is_empty()
            {
                return invalid(
                    "certificate",
                    "remote: certificate, key, client_ca or client_crl is set but listen is not; set remote.listen to serve remote clients".into(),
                );
            }
            return Ok(());
        };
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "listen",
                format!(
                    "remote.listen = {listen:?} is not ADDRESS:PORT (e.g. 127.0.0.1:4433 or [::1]:4433)"
                ),
            );
        }
        for (key, value) in [("certificate", &remote.certificate), ("key", &remote.key)] {
            if value.is_none() {
                return invalid(
                    "listen",
                    format!(
                        "remote.listen is set but remote.{key} is not: deputyd speaks TLS only, it has no plaintext mode"
                    ),
                );
            }
        }
        if !remote.allowed_clients.is_empty() && remote.client_ca.is_none() {
            return invalid(
                "allowed_clients",
                "remote.allowed_clients needs remote.client_ca: without mutual TLS no client certificate names the client".into(),
            );
        }
        if !remote.client_crl.is_empty() && remote.client_ca.is_none() {
            return invalid(
                "client_crl",
                "remote.client_crl needs remote.client_ca: without mutual TLS there is no client certificate to revoke".into(),
            );
        }
        for (key, value) in [
            ("max_connections", remote.max_connections as u64),
            (
                "max_connections_per_address",
                remote.max_connections_per_address as u64,
            ),
            ("max_unauthenticated", remote.max_unauthenticated as u64),
            ("handshake_timeout_secs", remote.handshake_timeout_secs),
        ] {
            if value == 0 {
                return invalid(key, format!("remote.{key} must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            Config::parse(Path::new("x.toml"), "").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn a_listener_is_tls_or_nothing() {
        let parse = |text: &str| Config::parse(Path::new("d.toml"), text);
        let err = parse("[remote]\nlisten = \"127.0.0.1:4433\"\n").unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("d.toml:2:1: "), "{message}");
        assert!(
            message.contains("remote.certificate") && message.contains("no plaintext mode"),
            "{message}"
        );
        let err =
            parse("[remote]\nlisten = \"127.0.0.1:4433\"\ncertificate = \"/c\"\n").unwrap_err();
        assert!(err.to_string().contains("remote.key"), "{err}");
        let err = parse("[remote]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(err.to_string().contains("ADDRESS:PORT"), "{err}");
        let err = parse("[remote]\ncertificate = \"/c\"\nkey = \"/k\"\n").unwrap_err();
        assert!(err.to_string().contains("listen is not"), "{err}");
        let err = parse(
            "[remote]\nlisten = \"[::1]:1\"\ncertificate = \"/c\"\nkey = \"/k\"\nallowed_clients = [\"a\"]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("client_ca"), "{err}");
        let err = parse(
            "[remote]\nlisten = \"[::1]:1\"\ncertificate = \"/c\"\nkey = \"/k\"\nclient_crl = [\"/r\"]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("client_crl needs remote.client_ca"),
            "{err}"
        );
        // A key that would open a plaintext port does not exist.
        let err = parse("[remote]\nplaintext = true\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `plaintext`"),
            "{err}"
        );
        let ok =
            parse("[remote]\nlisten = \"[::1]:1\"\ncertificate = \"/c\"\nkey = \"/k\"\n").unwrap();
        assert_eq!(ok.remote.listen.as_deref(), Some("[::1]:1"));
    }

    #[test]
    fn errors_carry_line_and_column() {
        let text = "[logon]\nuid_min = 1000\nfail_delay_ms = \"soon\"\n";
        let err = Config::parse(Path::new("/etc/deputy/deputyd.toml"), text).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("/etc/deputy/deputyd.toml:3:17: "),
            "{message}"
        );
        let err = Config::parse(Path::new("c.toml"), "[logon]\nbogus = 1\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("c.toml:2:1: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_name_the_line() {
        let text = "[rlimits]\nnofile = { soft = 10, hard = 5 }\n";
        let err = Config::parse(Path::new("c.toml"), text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.toml:2:1: rlimit nofile: soft limit 10 is above the hard limit 5"
        );
        let err = Config::parse(
            Path::new("c.toml"),
            "[rlimits]\nbanana = { soft = 1, hard = 1 }\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown resource limit \"banana\""),
            "{err}"
        );
    }
}
