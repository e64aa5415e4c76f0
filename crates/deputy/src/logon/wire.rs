//! The messages between a logon session and its worker process.
//!
//! ```text
//!   session (in the daemon)                         worker (deputy-session-worker, root)
//!   ───────────────────────                         ─────────────────────────────────────
//!   Start{service,user,mode,tty,rhost} ───────────▶ pam_start, authenticate, acct_mgmt, ...
//!                          ◀─────────────────────── Prompt / Info / Error    (the conversation)
//!   Answer{secret} ───────────────────────────────▶
//!                          ◀─────────────────────── LoggedOn{user, env} | Failed | UserChanged
//!   Spawn{plan} + fds ─────────────────────────────▶ clone(CLONE_PARENT): the daemon's child
//!                          ◀─────────────────────── Spawned{pid} + pidfd | SpawnFailed
//!   Close (or the socket closes) ─────────────────▶ close_session, setcred(DELETE), pam_end
//!                          ◀─────────────────────── Closed{errors}; the worker exits
//! ```
//!
//! One `SOCK_SEQPACKET` socket pair: each message is one record, so no framing is needed, and
//! descriptors ride along as `SCM_RIGHTS`. Every buffer that may hold a secret is wiped.

use std::ffi::OsString;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use deputy_os::Resource;
use deputy_os::pam::{PamCode, PamError};
use deputy_os::secret::Secret;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use zeroize::Zeroizing;

/// The largest record: the argv and environment of a start must fit (the socket's default
/// send buffer bounds it).
pub(crate) const MAX_MESSAGE: usize = 192 * 1024;
/// The most descriptors one start may pass: program, working directory and 64 more.
pub(crate) const MAX_FDS: usize = 66;

/// A connected pair: (session end, worker end).
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// What the worker is to do after authenticating (or instead of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// authenticate, acct_mgmt, setcred, open_session.
    Full = 1,
    /// authenticate and acct_mgmt only (a network logon).
    AuthenticateOnly = 2,
    /// acct_mgmt, setcred, open_session: a trusted caller, no password.
    Trusted = 3,
}

#[derive(Debug)]
pub(crate) struct Start {
    pub service: String,
    pub user: String,
    pub mode: Mode,
    pub tty: Option<String>,
    pub remote_host: Option<String>,
}

/// A start, as the worker needs it; the descriptors travel beside it.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    pub targets: Vec<i32>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Option<Vec<u32>>,
    pub rlimits: Vec<(u32, Option<u64>, Option<u64>)>,
    pub umask: Option<u32>,
    pub program_is_script: bool,
    pub controlling_tty: bool,
}

#[derive(Debug)]
pub(crate) enum ToWorker {
    Start(Start),
    Answer(Option<Secret>),
    Spawn(Plan),
    Close,
}

#[derive(Debug)]
pub(crate) enum FromWorker {
    Prompt {
        echo_off: bool,
        text: String,
    },
    Info(String),
    Error(String),
    LoggedOn {
        user: String,
        env: Vec<(OsString, OsString)>,
    },
    Failed(PamError),
    UserChanged(String),
    Spawned {
        pid: i32,
    },
    SpawnFailed {
        stage: u32,
        errno: i32,
        rlimit_index: Option<u32>,
    },
    Closed(Vec<PamError>),
}

/// A malformed or unexpected message.
pub(crate) fn protocol_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("session worker protocol: {what}"),
    )
}

/// Sends one record with `fds` attached.
pub(crate) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large for the session worker",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors for one start",
        ));
    }
    loop {
        match rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// A received record (wiped on drop) and the descriptors that came with it.
pub(crate) type Record = (Zeroizing<Vec<u8>>, Vec<OwnedFd>);

/// Receives one record and the descriptors attached to it; `None` at end of stream.
pub(crate) fn recv(socket: BorrowedFd<'_>) -> io::Result<Option<Record>> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_MESSAGE]);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = loop {
        match rustix::net::recvmsg(
            socket,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(received) => break received,
            Err(rustix::io::Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    if received
        .flags
        .intersects(rustix::net::ReturnFlags::TRUNC | rustix::net::ReturnFlags::CTRUNC)
    {
        return Err(protocol_error("truncated record"));
    }
    if received.bytes == 0 {
        return Ok(None);
    }
    buf.truncate(received.bytes);
    Ok(Some((buf, fds)))
}

/// Writes fields in order: integers little-endian, byte strings with a u32 length.
#[derive(Default)]
pub(crate) struct Out(Zeroizing<Vec<u8>>);

impl Out {
    pub fn tag(tag: u8) -> Self {
        let mut out = Out::default();
        out.0.push(tag);
        out
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => {
                self.0.push(1);
                self.0.extend_from_slice(&v.to_le_bytes());
            }
            None => self.0.push(0),
        }
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.u8(1).bytes(v),
            None => self.u8(0),
        }
    }
    pub fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) -> &mut Self {
        self.u32(items.len() as u32);
        for item in items {
            each(self, item);
        }
        self
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

/// Reads what [`Out`] wrote; every read checks the bounds.
pub(crate) struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        In(data)
    }
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(protocol_error("short record"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn opt_u64(&mut self) -> io::Result<Option<u64>> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            ))),
        }
    }
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    pub fn opt_bytes(&mut self) -> io::Result<Option<&'a [u8]>> {
        match self.u8()? {
            0 => Ok(None),
            _ => Ok(Some(self.bytes()?)),
        }
    }
    pub fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| protocol_error("text is not UTF-8"))
    }
    pub fn opt_string(&mut self) -> io::Result<Option<String>> {
        self.opt_bytes()?
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| protocol_error("text is not UTF-8")))
            .transpose()
    }
    pub fn list<T>(
        &mut self,
        mut each: impl FnMut(&mut Self) -> io::Result<T>,
    ) -> io::Result<Vec<T>> {
        let count = self.u32()? as usize;
        // Each item takes at least one byte: a count beyond the record is a lie.
        if count > self.0.len() {
            return Err(protocol_error("list longer than its record"));
        }
        (0..count).map(|_| each(self)).collect()
    }
}

const START: u8 = 1;
const ANSWER: u8 = 2;
const SPAWN: u8 = 3;
const CLOSE: u8 = 4;
const PROMPT: u8 = 10;
const INFO: u8 = 11;
const ERROR: u8 = 12;
const LOGGED_ON: u8 = 13;
const FAILED: u8 = 14;
const USER_CHANGED: u8 = 15;
const SPAWNED: u8 = 16;
const SPAWN_FAILED: u8 = 17;
const CLOSED: u8 = 18;

/// The PAM calls a worker makes, so that a `PamError` can cross as an index.
const CALLS: [&str; 8] = [
    "pam_start",
    "pam_authenticate",
    "pam_acct_mgmt",
    "pam_setcred",
    "pam_open_session",
    "pam_close_session",
    "pam_set_item(PAM_FAIL_DELAY)",
    "pam_get_item(PAM_USER)",
];

fn put_pam_error(out: &mut Out, err: &PamError) {
    let index = CALLS.iter().position(|c| *c == err.call).unwrap_or(0);
    out.u8(index as u8).i32(err.code.0);
}

fn get_pam_error(input: &mut In<'_>) -> io::Result<PamError> {
    let call = CALLS.get(input.u8()? as usize).copied().unwrap_or("pam");
    Ok(PamError {
        call,
        code: PamCode(input.i32()?),
    })
}

impl ToWorker {
    pub fn encode(&self) -> Out {
        match self {
            ToWorker::Start(start) => {
                let mut out = Out::tag(START);
                out.bytes(start.service.as_bytes())
                    .bytes(start.user.as_bytes())
                    .u8(start.mode as u8)
                    .opt_bytes(start.tty.as_deref().map(str::as_bytes))
                    .opt_bytes(start.remote_host.as_deref().map(str::as_bytes));
                out
            }
            ToWorker::Answer(answer) => {
                let mut out = Out::tag(ANSWER);
                out.opt_bytes(answer.as_ref().map(Secret::expose));
                out
            }
            ToWorker::Spawn(plan) => {
                let mut out = Out::tag(SPAWN);
                out.list(&plan.argv, |o, a| {
                    o.bytes(a);
                })
                .list(&plan.envp, |o, e| {
                    o.bytes(e);
                })
                .list(&plan.targets, |o, t| {
                    o.i32(*t);
                })
                .u32(plan.uid)
                .u32(plan.gid);
                match &plan.groups {
                    Some(groups) => out.u8(1).list(groups, |o, g| {
                        o.u32(*g);
                    }),
                    None => out.u8(0),
                };
                out.list(&plan.rlimits, |o, (resource, soft, hard)| {
                    o.u32(*resource).opt_u64(*soft).opt_u64(*hard);
                })
                .opt_u64(plan.umask.map(u64::from))
                .u8(plan.program_is_script.into())
                .u8(plan.controlling_tty.into());
                out
            }
            ToWorker::Close => Out::tag(CLOSE),
        }
    }

    pub fn decode(data: &[u8]) -> io::Result<ToWorker> {
        let mut input = In::new(data);
        let message = match input.u8()? {
            START => ToWorker::Start(Start {
                service: input.string()?,
                user: input.string()?,
                mode: match input.u8()? {
                    1 => Mode::Full,
                    2 => Mode::AuthenticateOnly,
                    3 => Mode::Trusted,
                    _ => return Err(protocol_error("unknown mode")),
                },
                tty: input.opt_string()?,
                remote_host: input.opt_string()?,
            }),
            ANSWER => ToWorker::Answer(input.opt_bytes()?.map(Secret::copy_from)),
            SPAWN => {
                let mut plan = Plan {
                    argv: input.list(|i| Ok(i.bytes()?.to_vec()))?,
                    envp: input.list(|i| Ok(i.bytes()?.to_vec()))?,
                    targets: input.list(In::i32)?,
                    uid: input.u32()?,
                    gid: input.u32()?,
                    ..Plan::default()
                };
                plan.groups = match input.u8()? {
                    0 => None,
                    _ => Some(input.list(In::u32)?),
                };
                plan.rlimits = input.list(|i| Ok((i.u32()?, i.opt_u64()?, i.opt_u64()?)))?;
                plan.umask = input.opt_u64()?.map(|m| m as u32);
                plan.program_is_script = input.u8()? != 0;
                plan.controlling_tty = input.u8()? != 0;
                ToWorker::Spawn(plan)
            }
            CLOSE => ToWorker::Close,
            _ => return Err(protocol_error("unknown request")),
        };
        Ok(message)
    }
}

impl FromWorker {
    pub fn encode(&self) -> Out {
        match self {
            FromWorker::Prompt { echo_off, text } => {
                let mut out = Out::tag(PROMPT);
                out.u8((*echo_off).into()).bytes(text.as_bytes());
                out
            }
            FromWorker::Info(text) | FromWorker::Error(text) => {
                let mut out = Out::tag(if matches!(self, FromWorker::Info(_)) {
                    INFO
                } else {
                    ERROR
                });
                out.bytes(text.as_bytes());
                out
            }
            FromWorker::LoggedOn { user, env } => {
                let mut out = Out::tag(LOGGED_ON);
                out.bytes(user.as_bytes()).list(env, |o, (name, value)| {
                    o.bytes(name.as_bytes()).bytes(value.as_bytes());
                });
                out
            }
            FromWorker::Failed(err) => {
                let mut out = Out::tag(FAILED);
                put_pam_error(&mut out, err);
                out
            }
            FromWorker::UserChanged(user) => {
                let mut out = Out::tag(USER_CHANGED);
                out.bytes(user.as_bytes());
                out
            }
            FromWorker::Spawned { pid } => {
                let mut out = Out::tag(SPAWNED);
                out.i32(*pid);
                out
            }
            FromWorker::SpawnFailed {
                stage,
                errno,
                rlimit_index,
            } => {
                let mut out = Out::tag(SPAWN_FAILED);
                out.u32(*stage)
                    .i32(*errno)
                    .opt_u64(rlimit_index.map(u64::from));
                out
            }
            FromWorker::Closed(errors) => {
                let mut out = Out::tag(CLOSED);
                out.list(errors, put_pam_error);
                out
            }
        }
    }

    pub fn decode(data: &[u8]) -> io::Result<FromWorker> {
        let mut input = In::new(data);
        let message = match input.u8()? {
            PROMPT => FromWorker::Prompt {
                echo_off: input.u8()? != 0,
                text: input.string()?,
            },
            INFO => FromWorker::Info(input.string()?),
            ERROR => FromWorker::Error(input.string()?),
            LOGGED_ON => FromWorker::LoggedOn {
                user: input.string()?,
                env: input.list(|i| {
                    Ok((
                        OsString::from_vec(i.bytes()?.to_vec()),
                        OsString::from_vec(i.bytes()?.to_vec()),
                    ))
                })?,
            },
            FAILED => FromWorker::Failed(get_pam_error(&mut input)?),
            USER_CHANGED => FromWorker::UserChanged(input.string()?),
            SPAWNED => FromWorker::Spawned { pid: input.i32()? },
            SPAWN_FAILED => FromWorker::SpawnFailed {
                stage: input.u32()?,
                errno: input.i32()?,
                rlimit_index: input.opt_u64()?.map(|i| i as u32),
            },
            CLOSED => FromWorker::Closed(input.list(get_pam_error)?),
            _ => return Err(protocol_error("unknown reply")),
        };
        Ok(message)
    }
}

/// Resource numbers on the wire, in rustix's order.
const RESOURCES: [Resource; 16] = [
    Resource::Cpu,
    Resource::Fsize,
    Resource::Data,
    Resource::Stack,
    Resource::Core,
    Resource::Rss,
    Resource::Nproc,
    Resource::Nofile,
    Resource::Memlock,
    Resource::As,
    Resource::Locks,
    Resource::Sigpending,
    Resource::Msgqueue,
    Resource::Nice,
    Resource::Rtprio,
    Resource::Rttime,
];

pub(crate) fn resource_index(resource: Resource) -> u32 {
    RESOURCES.iter().position(|r| *r == resource).unwrap_or(0) as u32
}

pub(crate) fn resource_from_index(index: u32) -> io::Result<Resource> {
    RESOURCES
        .get(index as usize)
        .copied()
        .ok_or_else(|| protocol_error("unknown resource"))
}

/// Sends a message without descriptors.
pub(crate) fn send_message(socket: impl AsFd, out: &Out) -> io::Result<()> {
    send(socket.as_fd(), out.as_slice(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_trip() {
        let plan = Plan {
            argv: vec![b"/bin/true".to_vec(), b"\xff".to_vec()],
            envp: vec![b"A=B".to_vec()],
            targets: vec![0, 1, 2, 9],
            uid: 1001,
            gid: 1002,
            groups: Some(vec![1002, 1001]),
            rlimits: vec![(7, Some(64), None)],
            umask: Some(0o077),
            program_is_script: true,
            controlling_tty: true,
        };
        let out = ToWorker::Spawn(plan).encode();
        let ToWorker::Spawn(back) = ToWorker::decode(out.as_slice()).unwrap() else {
            panic!()
        };
        assert_eq!(back.argv[1], b"\xff");
        assert_eq!(back.targets, [0, 1, 2, 9]);
        assert_eq!(back.groups, Some(vec![1002, 1001]));
        assert_eq!(back.rlimits, [(7, Some(64), None)]);
        assert_eq!(back.umask, Some(0o077));
        assert!(back.program_is_script && back.controlling_tty);
    }

    #[test]
    fn truncated_and_lying_records_are_errors() {
        let out = FromWorker::LoggedOn {
            user: "a".into(),
            env: vec![("X".into(), "1".into())],
        }
        .encode();
        let bytes = out.as_slice();
        for cut in 0..bytes.len() {
            assert!(FromWorker::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(FromWorker::decode(&[LOGGED_ON, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(ToWorker::decode(&[99]).is_err());
    }

    #[test]
    fn every_resource_has_an_index() {
        for resource in RESOURCES {
            assert_eq!(
                resource_from_index(resource_index(resource)).unwrap(),
                resource
            );
        }
    }
}
