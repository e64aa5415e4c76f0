//! The Varlink message layer, as deputyd runs it: the fuzz input arrives on a real Unix stream
//! socket, read by a zlink `Connection` over deputyd's own `Bounded` socket (its size and
//! descriptor bounds), call after call until the peer closes, exactly as `server.rs`'s
//! connection loop does; each call received is then taken apart per method (`call.rs`).
//!
//! Input: the bytes a client writes (NUL-terminated JSON messages). An input that starts with
//! 0xFD carries a header instead: `0xFD, fds, chunk` — the first write passes `fds % 32`
//! descriptors (of /dev/null) with SCM_RIGHTS, and the rest is written in pieces of
//! `chunk + 1` bytes, each after the daemon had a chance to read the one before.

#![no_main]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use deputy_fuzz::call::{self, RawCall};
use deputy_fuzz::config::Config;
use deputy_fuzz::policy::Policy;
use deputy_fuzz::socket::Bounded;
use deputy_proto::MAX_FDS;
use libfuzzer_sys::fuzz_target;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// deputyd's runtime is current_thread; one serves every input.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("a runtime")
    })
}

/// The embedded defaults' policy (the environment allowlist applies to CreateProcess).
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| Policy::new(Config::default()))
}

/// What a client may pass: descriptors of /dev/null.
fn dev_null() -> &'static OwnedFd {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    NULL.get_or_init(|| std::fs::File::open("/dev/null").expect("/dev/null").into())
}

struct Input<'a> {
    fds: usize,
    chunk: usize,
    bytes: &'a [u8],
}

fn input(data: &[u8]) -> Input<'_> {
    match data {
        [0xFD, fds, chunk, bytes @ ..] => Input {
            fds: usize::from(*fds % 32),
            chunk: usize::from(*chunk) + 1,
            bytes,
        },
        _ => Input {
            fds: 0,
            chunk: data.len().max(1),
            bytes: data,
        },
    }
}

/// The client: writes the input, passing the descriptors with its first byte as zlink does,
/// then closes its end.
async fn client(mut peer: UnixStream, input: &Input<'_>) {
    let mut rest = input.bytes;
    if input.fds > 0 && !rest.is_empty() {
        let fds: Vec<_> = (0..input.fds).map(|_| dev_null().as_fd()).collect();
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(32))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let first = [std::io::IoSlice::new(&rest[..1])];
        let sent = peer
            .async_io(Interest::WRITABLE, || {
                rustix::net::sendmsg(&peer, &first, &mut control, SendFlags::NOSIGNAL)
                    .map_err(std::io::Error::from)
            })
            .await;
        if sent.is_err() {
            return;
        }
        rest = &rest[1..];
    }
    for piece in rest.chunks(input.chunk) {
        if peer.write_all(piece).await.is_err() {
            return; // the daemon closed the connection
        }
        tokio::task::yield_now().await;
    }
    let _ = peer.shutdown().await;
}

/// The daemon's connection loop (`server.rs` `serve_connection`), minus the replies: receive
/// calls until the connection ends or a message is refused.
async fn daemon(stream: UnixStream) {
    let Ok(socket) = Bounded::new(stream) else {
        return;
    };
    let mut conn = zlink::Connection::new(socket);
    loop {
        match conn.receive_call::<RawCall>().await {
            Ok((call, fds)) => {
                assert!(
                    fds.len() <= MAX_FDS,
                    "{} descriptors got through",
                    fds.len()
                );
                let raw = call.method();
                let (method, parameters) = (raw.method.clone(), raw.parameters.clone());
                let _ = (call.more(), call.oneway());
                let _ = call::check(policy(), &method, parameters, fds);
            }
            Err(_) => return,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let input = input(data);
    runtime().block_on(async {
        let (ours, theirs) = UnixStream::pair().expect("a socket pair");
        tokio::join!(daemon(ours), client(theirs, &input));
    });
});
