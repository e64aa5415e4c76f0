//! The connection's socket, bounded: no message over [`MAX_MESSAGE`] bytes and no more than
//! [`MAX_FDS`] descriptors at once. zlink itself lets a message grow to 100 MB; a daemon that
//! serves every local user cannot let one of them make it allocate that much per connection.
//!
//! The socket is a local Unix stream (descriptors pass) or a remote client's TLS stream
//! (descriptors cannot: a call or reply with any is an error). Once a remote connection is
//! upgraded to carry a process's streams (see [`deputy_proto::stream`]), its bytes are frames,
//! not NUL-terminated messages: [`Lift::lift`] turns the message bound off for them.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deputy_proto::{MAX_FDS, MAX_MESSAGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zlink::connection::socket::{self, ReadResult, Socket};

type Unix = zlink::tokio::unix::Stream;
type UnixRead = <Unix as Socket>::ReadHalf;
type UnixWrite = <Unix as Socket>::WriteHalf;
/// A remote client's connection, once its TLS handshake is done.
pub type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

#[derive(Debug)]
enum Transport {
    Unix(Unix),
    Tls(Box<TlsStream>),
}

/// A stream socket whose messages are bounded in size and descriptors.
#[derive(Debug)]
pub struct Bounded {
    transport: Transport,
    lifted: Arc<AtomicBool>,
}

/// Turns a connection's message bound off, for the frames of an upgraded connection.
#[derive(Clone, Debug)]
pub struct Lift(Arc<AtomicBool>);

impl Lift {
    /// From now on, the connection's bytes are not counted as messages.
    pub fn lift(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Bounded {
    /// Wraps an accepted local connection.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered with the runtime.
    pub fn new(stream: tokio::net::UnixStream) -> zlink::Result<Self> {
        Ok(Bounded {
            transport: Transport::Unix(Unix::try_from(stream)?),
            lifted: Arc::default(),
        })
    }

    /// Wraps a remote client's TLS connection.
    pub fn tls(stream: TlsStream) -> Self {
        Bounded {
            transport: Transport::Tls(Box::new(stream)),
            lifted: Arc::default(),
        }
    }

    /// What lifts this connection's message bound.
    pub fn lift(&self) -> Lift {
        Lift(self.lifted.clone())
    }
}

impl Socket for Bounded {
    type ReadHalf = BoundedRead;
    type WriteHalf = BoundedWrite;
    const CAN_TRANSFER_FDS: bool = true;

    fn split(self) -> (Self::ReadHalf, Self::WriteHalf) {
        let (read, write) = match self.transport {
            Transport::Unix(unix) => {
                let (read, write) = unix.split();
                (ReadTransport::Unix(read), BoundedWrite::Unix(write))
            }
            Transport::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (ReadTransport::Tls(read), BoundedWrite::Tls(write))
            }
        };
        (
            BoundedRead {
                inner: read,
                pending: 0,
                lifted: self.lifted,
            },
            write,
        )
    }
}

#[derive(Debug)]
enum ReadTransport {
    Unix(UnixRead),
    Tls(tokio::io::ReadHalf<TlsStream>),
}

/// The read half: counts the bytes of the message being received.
#[derive(Debug)]
pub struct BoundedRead {
    inner: ReadTransport,
    /// Bytes received since the last message's terminating NUL.
    pending: usize,
    lifted: Arc<AtomicBool>,
}

/// The write half.
#[derive(Debug)]
pub enum BoundedWrite {
    /// A local client's.
    Unix(UnixWrite),
    /// A remote client's.
    Tls(tokio::io::WriteHalf<TlsStream>),
}

impl BoundedWrite {
    /// Ends a remote connection cleanly (TLS close_notify); nothing for a local one, whose
    /// socket closes when dropped.
    pub async fn close(&mut self) {
        if let BoundedWrite::Tls(tls) = self {
            let _ = tls.shutdown().await;
        }
    }
}

impl socket::WriteHalf for BoundedWrite {
    async fn write(
        &mut self,
        buf: &[u8],
        fds: &[impl std::os::fd::AsFd],
        credentials: Option<&zlink::connection::PassedCredentials>,
    ) -> zlink::Result<()> {
        match self {
            BoundedWrite::Unix(unix) => unix.write(buf, fds, credentials).await,
            BoundedWrite::Tls(tls) => {
                if !fds.is_empty() {
                    return Err(refuse("descriptors cannot travel over TLS".to_owned()));
                }
                tls.write_all(buf).await?;
                tls.flush().await?;
                Ok(())
            }
        }
    }
}

fn refuse(message: String) -> zlink::Error {
    zlink::Error::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

impl socket::ReadHalf for BoundedRead {
    async fn read(&mut self, buf: &mut [u8]) -> zlink::Result<ReadResult> {
        let result = match &mut self.inner {
            ReadTransport::Unix(unix) => unix.read(buf).await?,
            // zlink's own sockets build their results this way; a TLS stream carries no
            // descriptors.
            ReadTransport::Tls(tls) => ReadResult::new(tls.read(buf).await?),
        };
        if self.lifted.load(Ordering::Relaxed) {
            return Ok(result);
        }
        if result.fds().len() > MAX_FDS {
            return Err(refuse(format!(
                "{} descriptors in one message; at most {MAX_FDS}",
                result.fds().len()
            )));
        }
        let data = &buf[..result.bytes_read()];
        self.pending = match data.iter().rposition(|b| *b == 0) {
            Some(nul) => data.len() - nul - 1,
            None => self.pending + data.len(),
        };
        if self.pending > MAX_MESSAGE {
            return Err(refuse(format!("a message over {MAX_MESSAGE} bytes")));
        }
        Ok(result)
    }
}
