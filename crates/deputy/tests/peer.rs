//! ImpersonateNamedPipeClient + OpenThreadToken: the token of a socket's peer comes from the
//! kernel, and DuplicateTokenEx follows the level the client allowed.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

use common::ALICE;
use deputy::{ImpersonationLevel, SpawnRequest, Token, TokenError, TokenKind};

/// A client written in perl (always on Debian): connect, then wait for the server to close.
const CONNECT: &str = "use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
                       connect($s, pack_sockaddr_un($ARGV[0])) or die \"connect: $!\"; \
                       sysread($s, my $b, 1);";

fn groups_of(pid: i32) -> BTreeSet<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .unwrap();
    line.split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect()
}

/// Starts `argv` as `runner` with the perl client, accepts its connection and returns the peer
/// token, the process and the connection (the client runs until the connection closes).
fn token_of_connecting(
    runner: &Token,
    argv: &[&str],
    level: ImpersonationLevel,
) -> (Token, deputy::Child, UnixStream) {
    let dir = common::open_tempdir();
    let path = dir.path().join("socket");
    let listener = UnixListener::bind(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o777)).unwrap();
    let request = SpawnRequest::new(argv[0])
        .args(&argv[1..])
        .arg(CONNECT_FLAG)
        .arg(CONNECT)
        .arg(&path);
    let child = deputy::spawn(runner, request).unwrap();
    let (stream, _) = listener.accept().unwrap();
    let token = Token::from_peer(&stream, level).unwrap();
    (token, child, stream)
}

const CONNECT_FLAG: &str = "-e";

#[test]
fn a_peer_token_matches_the_connecting_process() {
    require_root!();
    let alice = Token::for_user(ALICE).unwrap();
    let (token, child, _connection) =
        token_of_connecting(&alice, &["perl"], ImpersonationLevel::Impersonation);
    assert_eq!(token.user(), ALICE);
    assert_eq!(token.uid(), alice.uid());
    assert_eq!(token.gid(), alice.gid());
    let pid = child.pid().as_raw_nonzero().get();
    let peer = token.peer().expect("a peer token records its process");
    assert_eq!(peer.pid(), child.pid());
    let kernel_groups: BTreeSet<u32> = token.groups().iter().map(|g| g.as_raw()).collect();
    assert_eq!(kernel_groups, groups_of(pid));
    assert_eq!(
        token.kind(),
        TokenKind::Impersonation(ImpersonationLevel::Impersonation)
    );
    // The pidfd is the client's: signalling through it ends exactly that process.
    rustix::process::pidfd_send_signal(peer.pidfd(), deputy::Signal::TERM).unwrap();
    assert_eq!(child.wait().unwrap(), deputy::ExitStatus::Signaled(15));
    let primary = token.to_primary().unwrap();
    assert!(primary.is_primary());
    assert_eq!(
        (primary.uid(), primary.groups()),
        (token.uid(), token.groups())
    );
}

#[test]
fn peer_groups_are_the_kernels_not_the_account_databases() {
    require_root!();
    // setpriv starts the client as alice with no supplementary groups at all, unlike what
    // getgrouplist says of her: the token must show the kernel's view.
    let root = Token::for_user("root").unwrap();
    let argv = [
        "setpriv",
        "--reuid",
        ALICE,
        "--regid",
        ALICE,
        "--clear-groups",
        "perl",
    ];
    let (token, child, _connection) =
        token_of_connecting(&root, &argv, ImpersonationLevel::Identification);
    assert_eq!(token.user(), ALICE);
    assert!(token.groups().is_empty(), "groups: {:?}", token.groups());
    assert!(Token::for_user(ALICE).unwrap().groups().len() >= 2);
    drop(token);
    child.signal(deputy::Signal::KILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_identification_token_refuses_to_become_primary() {
    let (server, _client) = std::os::unix::net::UnixStream::pair().unwrap();
    let token = Token::from_peer(&server, ImpersonationLevel::default()).unwrap();
    assert_eq!(
        token.kind(),
        TokenKind::Impersonation(ImpersonationLevel::Identification)
    );
    let err = token.to_primary().unwrap_err();
    assert!(matches!(
        err,
        TokenError::IdentificationOnly {
            level: ImpersonationLevel::Identification,
            ..
        }
    ));
    assert!(err.to_string().contains("identification level"), "{err}");
}

#[test]
fn something_that_is_not_a_socket_has_no_peer() {
    let (reader, _writer) = std::io::pipe().unwrap();
    let err = Token::from_peer(&reader, ImpersonationLevel::Impersonation).unwrap_err();
    assert!(
        matches!(
            err,
            TokenError::PeerCredentials {
                what: "credentials (SO_PEERCRED)",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("cannot read the peer's credentials (SO_PEERCRED) from the socket: "),
        "{err}"
    );
}
