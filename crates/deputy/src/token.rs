//! Tokens: who a process runs as.
//!
//! A [`Token`] is deputy's access token: the account (name, uid, primary gid, supplementary
//! groups, home, shell), the logon session it belongs to, if any, and its kind. As on Windows,
//! a *primary* token can start processes; an *impersonation* token says how far the client lets
//! the server act as it:
//!
//! | level | the server may |
//! |---|---|
//! | [`Anonymous`](ImpersonationLevel::Anonymous) | nothing in the client's name |
//! | [`Identification`](ImpersonationLevel::Identification) | learn who the client is (the default) |
//! | [`Impersonation`](ImpersonationLevel::Impersonation) | act as the client on this machine |
//! | [`Delegation`](ImpersonationLevel::Delegation) | act as the client, with its network credentials |
//!
//! Tokens are built from the account database through NSS ([`Token::for_user`]) or from the
//! kernel's record of a socket peer ([`Token::from_peer`]); never from a name the client wrote.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use deputy_os::account::Account;
use deputy_os::peer;
use deputy_os::{Gid, Pid, Uid};

/// How far a client lets the server act as it (`SECURITY_IMPERSONATION_LEVEL`).
///
/// Ordered from least to most: `Anonymous < Identification < Impersonation < Delegation`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ImpersonationLevel {
    /// The server may not even learn who the client is.
    Anonymous,
    /// The server may learn who the client is, but not act as it.
    #[default]
    Identification,
    /// The server may act as the client on this machine.
    Impersonation,
    /// The server may act as the client, including with its network credentials.
    Delegation,
}

impl ImpersonationLevel {
    /// The level's name, as written in the API and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            ImpersonationLevel::Anonymous => "anonymous",
            ImpersonationLevel::Identification => "identification",
            ImpersonationLevel::Impersonation => "impersonation",
            ImpersonationLevel::Delegation => "delegation",
        }
    }

    /// Whether a token at this level may act as its client (impersonate, start processes).
    pub fn may_act(self) -> bool {
        self >= ImpersonationLevel::Impersonation
    }
}

impl fmt::Display for ImpersonationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImpersonationLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ImpersonationLevel::Anonymous,
            ImpersonationLevel::Identification,
            ImpersonationLevel::Impersonation,
            ImpersonationLevel::Delegation,
        ]
        .into_iter()
        .find(|level| level.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// A level name that is none of anonymous, identification, impersonation, delegation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown impersonation level {0:?}: expected anonymous, identification, impersonation or delegation"
)]
pub struct UnknownLevel(pub String);

/// Primary or impersonation token (`TOKEN_TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Can start processes.
    Primary,
    /// Stands for a client at the given level; [`Token::to_primary`] turns it into a primary
    /// token when the level allows.
    Impersonation(ImpersonationLevel),
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Primary => f.write_str("primary"),
            TokenKind::Impersonation(level) => write!(f, "impersonation ({level})"),
        }
    }
}

/// A logon session's id: 128 random bits, shown as 32 hex digits. Unguessable, so holding one
/// proves nothing on its own; the daemon also checks who owns the session.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// A new random id from the kernel's CSPRNG (`getrandom(2)`).
    ///
    /// # Errors
    /// Only if the kernel's random source fails.
    pub fn generate() -> io::Result<Self> {
        let mut bytes = [0u8; 16];
        deputy_os::random::fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = InvalidSessionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        // Hex digits only: from_str_radix alone would take "+a" as a pair.
        if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(InvalidSessionId);
        }
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| InvalidSessionId)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| InvalidSessionId)?;
        }
        Ok(SessionId(bytes))
    }
}

/// A session id that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session id: expected 32 hex digits")]
pub struct InvalidSessionId;

/// The process at the other end of a socket, pinned by a pidfd.
#[derive(Clone, Debug)]
pub struct PeerProcess {
    pid: Pid,
    pidfd: Arc<OwnedFd>,
}

impl PeerProcess {
    /// The pid the kernel recorded at connect time.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// A pidfd for that process: it refers to it even after its pid is reused.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

/// Why a token could not be made or converted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No account has this name.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// No account has this uid (a peer running under a uid with no passwd entry).
    #[error("uid {0} has no account")]
    UnknownUid(u32),
    /// The account database could not be read.
    #[error("cannot look up {what} in the account database: {source}")]
    AccountDatabase {
        /// The name or uid looked up.
        what: String,
        /// The NSS error.
        source: io::Error,
    },
    /// The peer's credentials could not be read from the socket.
    #[error("cannot read the peer's {what} from the socket: {source}")]
    PeerCredentials {
        /// `SO_PEERCRED`, `SO_PEERGROUPS` or `SO_PEERPIDFD`.
        what: &'static str,
        /// The errno.
        source: io::Error,
    },
    /// The kernel lacks `SO_PEERPIDFD` (Linux 6.5).
    #[error(
        "this kernel ({kernel}) has no SO_PEERPIDFD (added in Linux 6.5): deputy will not accept a \
         peer it can only name by pid, because a pid can be reused by another process; \
         run deputy on Linux 6.5 or later"
    )]
    PeerPidfdUnsupported {
        /// The running kernel's release.
        kernel: String,
    },
    /// The token's level does not let the server act as the client.
    #[error(
        "the token of {user} is at {level} level: it identifies the client but cannot act as it \
         (the client must allow the impersonation level)"
    )]
    IdentificationOnly {
        /// The client.
        user: String,
        /// Its level (anonymous or identification).
        level: ImpersonationLevel,
    },
}

/// An access token: an account, its groups, its logon session and its kind.
#[derive(Clone, Debug)]
pub struct Token {
    name: String,
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    home: PathBuf,
    shell: PathBuf,
    session: Option<SessionId>,
    kind: TokenKind,
    peer: Option<PeerProcess>,
}

impl Token {
    /// A primary token for the account called `name`, with its groups from `getgrouplist(3)`.
    ///
    /// This is what a trusted server (one allowed to act as any user) starts processes with; a
    /// server answering a client uses [`Token::from_peer`] or a logon instead.
    ///
    /// # Errors
    /// [`TokenError::UnknownUser`], or [`TokenError::AccountDatabase`] when NSS fails.
    ///
    /// # Example
    /// ```
    /// let root = deputy::Token::for_user("root")?;
    /// assert_eq!(root.uid().as_raw(), 0);
    /// assert!(root.is_primary());
    /// # Ok::<(), deputy::TokenError>(())
    /// ```
    pub fn for_user(name: &str) -> Result<Token, TokenError> {
        let account = crate::accounts::by_name(name)
            .map_err(|source| TokenError::AccountDatabase {
                what: format!("user {name:?}"),
                source,
            })?
            .ok_or_else(|| TokenError::UnknownUser(name.to_owned()))?;
        Self::from_account(account, TokenKind::Primary)
    }

    /// A primary token for the account with user id `uid`.
    ///
    /// # Errors
    /// [`TokenError::UnknownUid`], or [`TokenError::AccountDatabase`] when NSS fails.
    pub fn for_uid(uid: Uid) -> Result<Token, TokenError> {
        let account = lookup_uid(uid)?;
        Self::from_account(account, TokenKind::Primary)
    }

    /// A primary token for the calling process itself (`OpenProcessToken`): its effective uid
    /// and gid and its supplementary groups as the kernel holds them, with the name, home and
    /// shell of that uid's account.
    ///
    /// # Errors
    /// [`TokenError::UnknownUid`] when the process runs under a uid with no account.
    ///
    /// # Example
    /// ```
    /// let me = deputy::Token::current()?;
    /// assert!(me.is_primary());
    /// # Ok::<(), deputy::TokenError>(())
    /// ```
    pub fn current() -> Result<Token, TokenError> {
        let uid = rustix::process::geteuid();
        let account = lookup_uid(uid)?;
        let groups = rustix::process::getgroups().map_err(|err| TokenError::AccountDatabase {
            what: "the groups of this process".to_owned(),
            source: err.into(),
        })?;
        Ok(Token {
            name: account.name.clone(),
            uid,
            gid: rustix::process::getegid(),
            groups,
            home: account.home.clone(),
            shell: account.shell.clone(),
            session: None,
            kind: TokenKind::Primary,
            peer: None,
        })
    }

    fn from_account(account: Arc<Account>, kind: TokenKind) -> Result<Token, TokenError> {
        let groups =
            crate::accounts::groups(&account).map_err(|source| TokenError::AccountDatabase {
                what: format!("the groups of {:?}", account.name),
                source,
            })?;
        Ok(Token {
            name: account.name.clone(),
            uid: account.uid,
            gid: account.gid,
            groups: groups.to_vec(),
            home: account.home.clone(),
            shell: account.shell.clone(),
            session: None,
            kind,
            peer: None,
        })
    }

    /// The token of the process at the other end of a connected Unix stream socket
    /// (`ImpersonateNamedPipeClient` + `OpenThreadToken`).
    ///
    /// Identity comes from the kernel only: uid and gid from `SO_PEERCRED`, the supplementary
    /// groups from `SO_PEERGROUPS` — both as they were when the client connected, not looked up
    /// again — and a pidfd from `SO_PEERPIDFD`. Name, home and shell come from the account of
    /// that uid. `level` is the level the client allows; [`ImpersonationLevel::default`] is
    /// Identification.
    ///
    /// # Errors
    /// [`TokenError::PeerCredentials`] when the socket has no peer record,
    /// [`TokenError::PeerPidfdUnsupported`] on kernels before 6.5, [`TokenError::UnknownUid`]
    /// when the peer's uid has no account.
    ///
    /// # Example
    /// ```
    /// use deputy::{ImpersonationLevel, Token};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (server_end, _client_end) = UnixStream::pair()?;
    /// let token = Token::from_peer(&server_end, ImpersonationLevel::Identification)?;
    /// assert_eq!(token.peer().map(|p| p.pid().as_raw_nonzero().get() as u32), Some(std::process::id()));
    /// assert!(token.to_primary().is_err()); // Identification cannot act as the client
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_peer(socket: impl AsFd, level: ImpersonationLevel) -> Result<Token, TokenError> {
        let socket = socket.as_fd();
        let (pid, uid, gid) =
            peer::peer_credentials(socket).map_err(|source| TokenError::PeerCredentials {
                what: "credentials (SO_PEERCRED)",
                source,
            })?;
        let groups = peer::peer_groups(socket).map_err(|source| TokenError::PeerCredentials {
            what: "groups (SO_PEERGROUPS)",
            source,
        })?;
        let pidfd = peer::peer_pidfd(socket).map_err(|source| {
            if peer::is_unsupported_option(&source) {
                TokenError::PeerPidfdUnsupported {
                    kernel: deputy_os::kernel_release(),
                }
            } else {
                TokenError::PeerCredentials {
                    what: "pidfd (SO_PEERPIDFD)",
                    source,
                }
            }
        })?;
        let account = lookup_uid(uid)?;
        Ok(Token {
            name: account.name.clone(),
            uid,
            gid,
            groups,
            home: account.home.clone(),
            shell: account.shell.clone(),
            session: None,
            kind: TokenKind::Impersonation(level),
            peer: Some(PeerProcess {
                pid,
                pidfd: Arc::new(pidfd),
            }),
        })
    }

    /// A primary token for the same client (`DuplicateTokenEx(..., TokenPrimary)`).
    ///
    /// # Errors
    /// [`TokenError::IdentificationOnly`] when the token is at Anonymous or Identification
    /// level: the client did not allow the server to act as it.
    pub fn to_primary(&self) -> Result<Token, TokenError> {
        if let TokenKind::Impersonation(level) = self.kind
            && !level.may_act()
        {
            return Err(TokenError::IdentificationOnly {
                user: self.name.clone(),
                level,
            });
        }
        Ok(Token {
            kind: TokenKind::Primary,
            ..self.clone()
        })
    }

    /// The same client at another impersonation level. A server uses it when the protocol says
    /// what the client allows: a call that asks the server to start a process as its caller
    /// is that caller's consent to the Impersonation level. A primary token stays primary.
    pub fn with_level(&self, level: ImpersonationLevel) -> Token {
        match self.kind {
            TokenKind::Primary => self.clone(),
            TokenKind::Impersonation(_) => Token {
                kind: TokenKind::Impersonation(level),
                ..self.clone()
            },
        }
    }

    /// The same token, recorded as belonging to logon session `session`.
    pub fn with_session(self, session: SessionId) -> Token {
        Token {
            session: Some(session),
            ..self
        }
    }

    /// The account name.
    pub fn user(&self) -> &str {
        &self.name
    }

    /// The user id.
    pub fn uid(&self) -> Uid {
        self.uid
    }

    /// The primary group id.
    pub fn gid(&self) -> Gid {
        self.gid
    }

    /// The supplementary groups (from NSS for an account token, from the kernel for a peer).
    pub fn groups(&self) -> &[Gid] {
        &self.groups
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The login shell.
    pub fn shell(&self) -> &Path {
        &self.shell
    }

    /// The logon session the token belongs to, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Primary or impersonation, with the level.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// True for a primary token.
    pub fn is_primary(&self) -> bool {
        self.kind == TokenKind::Primary
    }

    /// The peer process, for a token made by [`Token::from_peer`].
    pub fn peer(&self) -> Option<&PeerProcess> {
        self.peer.as_ref()
    }
}

fn lookup_uid(uid: Uid) -> Result<Arc<Account>, TokenError> {
    crate::accounts::by_uid(uid)
        .map_err(|source| TokenError::AccountDatabase {
            what: format!("uid {}", uid.as_raw()),
            source,
        })?
        .ok_or(TokenError::UnknownUid(uid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_ordered_and_parse() {
        assert!(ImpersonationLevel::Anonymous < ImpersonationLevel::Identification);
        assert!(ImpersonationLevel::Impersonation < ImpersonationLevel::Delegation);
        assert_eq!(
            ImpersonationLevel::default(),
            ImpersonationLevel::Identification
        );
        assert_eq!(
            "Delegation".parse::<ImpersonationLevel>().unwrap(),
            ImpersonationLevel::Delegation
        );
        assert!("root".parse::<ImpersonationLevel>().is_err());
    }

    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert!("+a".repeat(16).parse::<SessionId>().is_err());
        assert!("0a".repeat(16).parse::<SessionId>().is_ok());
    }

    #[test]
    fn session_ids_round_trip_and_differ() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert_eq!(a.to_string().parse::<SessionId>().unwrap(), a);
        assert!("xyz".parse::<SessionId>().is_err());
        assert!("zz".repeat(16).parse::<SessionId>().is_err());
    }

    #[test]
    fn unknown_user_is_named() {
        let err = Token::for_user("dpt-no-such-user").unwrap_err();
        assert!(matches!(err, TokenError::UnknownUser(ref n) if n == "dpt-no-such-user"));
        assert_eq!(err.to_string(), "unknown user \"dpt-no-such-user\"");
    }

    #[test]
    fn to_primary_follows_the_level() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        for level in [
            ImpersonationLevel::Anonymous,
            ImpersonationLevel::Identification,
        ] {
            let token = Token::from_peer(&a, level).unwrap();
            let err = token.to_primary().unwrap_err();
            assert!(matches!(err, TokenError::IdentificationOnly { level: l, .. } if l == level));
        }
        for level in [
            ImpersonationLevel::Impersonation,
            ImpersonationLevel::Delegation,
        ] {
            let token = Token::from_peer(&a, level).unwrap();
            let primary = token.to_primary().unwrap();
            assert!(primary.is_primary());
            assert_eq!(primary.uid(), token.uid());
            assert_eq!(primary.groups(), token.groups());
        }
    }
}
