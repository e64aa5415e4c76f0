//! The connection's socket, bounded: no message over [`MAX_MESSAGE`] bytes and no more than
//! [`MAX_FDS`] descriptors at once. zlink itself lets a message grow to 100 MB; a daemon that
//! serves every local user cannot let one of them make it allocate that much per connection.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use deputy_proto::{MAX_FDS, MAX_MESSAGE};
use zlink::connection::socket::{self, ReadResult, Socket};

type Inner = zlink::tokio::unix::Stream;
type InnerRead = <Inner as Socket>::ReadHalf;
type InnerWrite = <Inner as Socket>::WriteHalf;

/// A Unix stream socket whose messages are bounded in size and descriptors.
#[derive(Debug)]
pub struct Bounded(Inner);

impl Bounded {
    /// Wraps an accepted connection.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered with the runtime.
    pub fn new(stream: tokio::net::UnixStream) -> zlink::Result<Self> {
        Ok(Bounded(Inner::try_from(stream)?))
    }
}

impl Socket for Bounded {
    type ReadHalf = BoundedRead;
    type WriteHalf = InnerWrite;
    const CAN_TRANSFER_FDS: bool = true;

    fn split(self) -> (Self::ReadHalf, Self::WriteHalf) {
        let (read, write) = self.0.split();
        (
            BoundedRead {
                inner: read,
                pending: 0,
            },
            write,
        )
    }
}

/// The read half: counts the bytes of the message being received.
#[derive(Debug)]
pub struct BoundedRead {
    inner: InnerRead,
    /// Bytes received since the last message's terminating NUL.
    pending: usize,
}

fn refuse(message: String) -> zlink::Error {
    zlink::Error::Io(io::Error::new(io::ErrorKind::InvalidData, message))
}

impl socket::ReadHalf for BoundedRead {
    async fn read(&mut self, buf: &mut [u8]) -> zlink::Result<ReadResult> {
        let result = self.inner.read(buf).await?;
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

impl AsFd for BoundedRead {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inner.as_fd()
    }
}
