//! The frames of an upgraded connection: a remote client's process streams.
//!
//! A remote client has no descriptors to pass, so once deputyd has replied to a CreateProcess
//! called with "upgrade", the connection carries frames instead of Varlink messages, both
//! ways, until the exit frame:
//!
//! ```text
//!  frame = kind (1 byte) | length (4 bytes, big-endian) | payload (length bytes, ≤ MAX_PAYLOAD)
//!
//!  client → deputyd                          deputyd → client
//!  0x01 Input   bytes for stdin (or the pty) 0x11 Output  stdout bytes (or the pty's)
//!  0x02 InputEnd  stdin is closed            0x12 Errors  stderr bytes
//!  0x03 Resize  rows u16, cols u16           0x13 OutputEnd  stdout reached EOF
//!  0x04 Signal  signal number i32            0x14 ErrorsEnd  stderr reached EOF
//!                                            0x15 Credit  n u32: n more Input bytes welcome
//!                                            0x16 Stopped signal i32 (Ctrl-Z)
//!                                            0x17 Continued
//!                                            0x18 Exit    how u8 (0 code, 1 signal, 2 unknown: value ignored), value i32
//! ```
//!
//! Flow control: a client sends Input only against credit — [`INPUT_WINDOW`] bytes at first,
//! and each Credit frame's more as deputyd hands bytes to the process — so deputyd never holds
//! more than the window of a process's input. Output needs no credit: deputyd reads a pipe only
//! when its previous frame has gone out, so a reader who stalls stalls the process (as a full
//! pipe would), and deputyd's buffers stay what they are. Unknown kinds are an error: both
//! sides speak this one version.
//!
//! No I/O here: [`Frame::encode`] and [`Frame::decode`] work on byte buffers.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// The largest payload of one frame.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Bytes of a frame's header: kind and length.
pub const HEADER: usize = 5;
/// Input bytes a client may send before its first Credit frame.
pub const INPUT_WINDOW: u32 = 256 * 1024;

/// One frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Bytes for the process's stdin, or its terminal.
    Input(&'a [u8]),
    /// The client's stdin is at its end: the process's stdin is closed (on a terminal,
    /// nothing happens: a terminal has no end).
    InputEnd,
    /// The terminal's new size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// A signal for the process.
    Signal(i32),
    /// Bytes the process wrote to stdout (or its terminal).
    Output(&'a [u8]),
    /// Bytes the process wrote to stderr.
    Errors(&'a [u8]),
    /// The process's stdout is at its end.
    OutputEnd,
    /// The process's stderr is at its end.
    ErrorsEnd,
    /// The client may send this many more Input bytes.
    Credit(u32),
    /// The process was stopped by this signal.
    Stopped(i32),
    /// The process was continued.
    Continued,
    /// The process ended: the last frame.
    Exit(ExitFrame),
}

/// How the process ended, in an Exit frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitFrame {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// deputyd could not learn how (the wait failed).
    Unknown,
}

/// A malformed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A kind this version does not know.
    UnknownKind(u8),
    /// A payload longer than [`MAX_PAYLOAD`].
    TooLong(u32),
    /// A payload whose length does not fit its kind.
    BadLength {
        /// The kind.
        kind: u8,
        /// The length it came with.
        length: u32,
    },
    /// An Exit frame whose `how` byte is not 0, 1 or 2.
    BadExit(u8),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnknownKind(kind) => write!(f, "a frame of unknown kind {kind:#04x}"),
            FrameError::TooLong(length) => {
                write!(f, "a frame of {length} bytes; at most {MAX_PAYLOAD}")
            }
            FrameError::BadLength { kind, length } => {
                write!(
                    f,
                    "a frame of kind {kind:#04x} cannot be {length} bytes long"
                )
            }
            FrameError::BadExit(how) => write!(f, "an exit frame of unknown form {how}"),
        }
    }
}

impl core::error::Error for FrameError {}

impl Frame<'_> {
    fn kind(&self) -> u8 {
        match self {
            Frame::Input(_) => 0x01,
            Frame::InputEnd => 0x02,
            Frame::Resize { .. } => 0x03,
            Frame::Signal(_) => 0x04,
            Frame::Output(_) => 0x11,
            Frame::Errors(_) => 0x12,
            Frame::OutputEnd => 0x13,
            Frame::ErrorsEnd => 0x14,
            Frame::Credit(_) => 0x15,
            Frame::Stopped(_) => 0x16,
            Frame::Continued => 0x17,
            Frame::Exit(_) => 0x18,
        }
    }

    /// The frame's kind, by name, for messages: never its data, which is the user's.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Input(_) => "Input",
            Frame::InputEnd => "InputEnd",
            Frame::Resize { .. } => "Resize",
            Frame::Signal(_) => "Signal",
            Frame::Output(_) => "Output",
            Frame::Errors(_) => "Errors",
            Frame::OutputEnd => "OutputEnd",
            Frame::ErrorsEnd => "ErrorsEnd",
            Frame::Credit(_) => "Credit",
            Frame::Stopped(_) => "Stopped",
            Frame::Continued => "Continued",
            Frame::Exit(_) => "Exit",
        }
    }

    /// Appends the frame to `out`.
    ///
    /// # Panics
    /// When a data frame's payload is longer than [`MAX_PAYLOAD`]: split data first.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut fixed = [0u8; 5];
        let payload: &[u8] = match self {
            Frame::Input(data) | Frame::Output(data) | Frame::Errors(data) => data,
            Frame::InputEnd | Frame::OutputEnd | Frame::ErrorsEnd | Frame::Continued => &[],
            Frame::Resize { rows, cols } => {
                fixed[..2].copy_from_slice(&rows.to_be_bytes());
                fixed[2..4].copy_from_slice(&cols.to_be_bytes());
                &fixed[..4]
            }
            Frame::Signal(n) | Frame::Stopped(n) => {
                fixed[..4].copy_from_slice(&n.to_be_bytes());
                &fixed[..4]
            }
            Frame::Credit(n) => {
                fixed[..4].copy_from_slice(&n.to_be_bytes());
                &fixed[..4]
            }
            Frame::Exit(exit) => {
                let (how, value) = match exit {
                    ExitFrame::Code(code) => (0, *code),
                    ExitFrame::Signal(signal) => (1, *signal),
                    ExitFrame::Unknown => (2, 0),
                };
                fixed[0] = how;
                fixed[1..].copy_from_slice(&value.to_be_bytes());
                &fixed
            }
        };
        assert!(payload.len() <= MAX_PAYLOAD, "a frame over MAX_PAYLOAD");
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// The first frame in `buf`, and the bytes it took; `None` while `buf` holds only part
    /// of it.
    ///
    /// # Errors
    /// A frame this version cannot read: the connection is then unusable.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
        let Some((&kind, rest)) = buf.split_first() else {
            return Ok(None);
        };
        if !matches!(kind, 0x01..=0x04 | 0x11..=0x18) {
            return Err(FrameError::UnknownKind(kind));
        }
        let Some(length) = rest.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
            return Ok(None);
        };
        if length as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLong(length));
        }
        let Some(payload) = buf.get(HEADER..HEADER + length as usize) else {
            return Ok(None);
        };
        let bad = FrameError::BadLength { kind, length };
        let int = || {
            payload
                .first_chunk::<4>()
                .filter(|_| payload.len() == 4)
                .map(|b| i32::from_be_bytes(*b))
                .ok_or(bad.clone())
        };
        let empty = |frame: Frame<'static>| {
            if payload.is_empty() {
                Ok(frame)
            } else {
                Err(bad.clone())
            }
        };
        let frame = match kind {
            0x01 => Frame::Input(payload),
            0x02 => empty(Frame::InputEnd)?,
            0x03 => match payload {
                [r0, r1, c0, c1] => Frame::Resize {
                    rows: u16::from_be_bytes([*r0, *r1]),
                    cols: u16::from_be_bytes([*c0, *c1]),
                },
                _ => return Err(bad),
            },
            0x04 => Frame::Signal(int()?),
            0x11 => Frame::Output(payload),
            0x12 => Frame::Errors(payload),
            0x13 => empty(Frame::OutputEnd)?,
            0x14 => empty(Frame::ErrorsEnd)?,
            0x15 => Frame::Credit(int()?.cast_unsigned()),
            0x16 => Frame::Stopped(int()?),
            0x17 => empty(Frame::Continued)?,
            _ => match payload {
                [how, v0, v1, v2, v3] => {
                    let value = i32::from_be_bytes([*v0, *v1, *v2, *v3]);
                    Frame::Exit(match how {
                        0 => ExitFrame::Code(value),
                        1 => ExitFrame::Signal(value),
                        2 => ExitFrame::Unknown,
                        other => return Err(FrameError::BadExit(*other)),
                    })
                }
                _ => return Err(bad),
            },
        };
        Ok(Some((frame, HEADER + length as usize)))
    }
}

/// Received bytes, cut into frames without copying them: read into [`FrameBuffer::spare`],
/// tell [`FrameBuffer::filled`], take frames with [`FrameBuffer::next_frame`] until it says `None`.
#[derive(Debug)]
pub struct FrameBuffer {
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The bytes of the frame last returned, consumed at the next call.
    taken: usize,
}

impl Default for FrameBuffer {
    fn default() -> Self {
        FrameBuffer {
            buf: vec![0; 2 * (HEADER + MAX_PAYLOAD)],
            start: 0,
            end: 0,
            taken: 0,
        }
    }
}

impl FrameBuffer {
    /// The next complete frame, if the buffer holds one.
    ///
    /// # Errors
    /// A malformed frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        self.start += core::mem::take(&mut self.taken);
        let (buf, taken) = (&self.buf, &mut self.taken);
        match Frame::decode(&buf[self.start..self.end])? {
            Some((frame, used)) => {
                *taken = used;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Room to read into: never empty, and enough for a whole frame after what is there.
    pub fn spare(&mut self) -> &mut [u8] {
        self.start += core::mem::take(&mut self.taken);
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`FrameBuffer::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Whether bytes of an incomplete frame are waiting (at the end of the stream: a
    /// truncated frame).
    pub fn is_partial(&self) -> bool {
        self.end > self.start + self.taken
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn every_kind() -> Vec<Frame<'static>> {
        vec![
            Frame::Input(b"abc"),
            Frame::InputEnd,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Signal(2),
            Frame::Output(&[0, 1, 2, 255]),
            Frame::Errors(b""),
            Frame::OutputEnd,
            Frame::ErrorsEnd,
            Frame::Credit(u32::MAX),
            Frame::Stopped(19),
            Frame::Continued,
            Frame::Exit(ExitFrame::Code(-1)),
            Frame::Exit(ExitFrame::Signal(9)),
            Frame::Exit(ExitFrame::Unknown),
        ]
    }

    #[test]
    fn every_frame_decodes_to_itself_from_any_split() {
        let mut bytes = Vec::new();
        for frame in every_kind() {
            frame.encode(&mut bytes);
        }
        let mut decoded = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            // Every prefix of a frame short of its end is "not yet".
            let (frame, used) = Frame::decode(&bytes[at..]).unwrap().unwrap();
            for short in 0..used {
                assert_eq!(Frame::decode(&bytes[at..at + short]).unwrap(), None);
            }
            decoded.push(frame);
            at += used;
        }
        assert_eq!(decoded, every_kind());
    }

    #[test]
    fn a_buffer_cuts_a_byte_stream_into_frames() {
        let mut bytes = Vec::new();
        let big = vec![7u8; MAX_PAYLOAD];
        for _ in 0..3 {
            Frame::Output(&big).encode(&mut bytes);
            Frame::Credit(5).encode(&mut bytes);
        }
        let mut buffer = FrameBuffer::default();
        let mut input = &bytes[..];
        let mut seen = Vec::new();
        loop {
            while let Some(frame) = buffer.next_frame().unwrap() {
                seen.push(match frame {
                    Frame::Output(data) => data.len(),
                    other => {
                        assert_eq!(other, Frame::Credit(5));
                        0
                    }
                });
            }
            if input.is_empty() {
                break;
            }
            // Odd-sized reads, as a socket gives them.
            let spare = buffer.spare();
            let n = spare.len().min(input.len()).min(1000);
            spare[..n].copy_from_slice(&input[..n]);
            buffer.filled(n);
            input = &input[n..];
        }
        assert_eq!(seen, [MAX_PAYLOAD, 0, MAX_PAYLOAD, 0, MAX_PAYLOAD, 0]);
        assert!(!buffer.is_partial());
    }

    #[test]
    fn malformed_frames_are_named() {
        assert_eq!(
            Frame::decode(&[0x7f, 0, 0, 0, 0]),
            Err(FrameError::UnknownKind(0x7f))
        );
        assert_eq!(
            Frame::decode(&[0x01, 0, 1, 0, 1]),
            Err(FrameError::TooLong(65537))
        );
        assert_eq!(
            Frame::decode(&[0x04, 0, 0, 0, 2, 1, 2]),
            Err(FrameError::BadLength { kind: 4, length: 2 })
        );
        assert_eq!(
            Frame::decode(&[0x02, 0, 0, 0, 1, 0]),
            Err(FrameError::BadLength { kind: 2, length: 1 })
        );
        assert_eq!(
            Frame::decode(&[0x18, 0, 0, 0, 5, 3, 0, 0, 0, 0]),
            Err(FrameError::BadExit(3))
        );
        // An unknown kind is refused before its length arrives.
        assert_eq!(Frame::decode(&[0x00]), Err(FrameError::UnknownKind(0)));
    }
}
