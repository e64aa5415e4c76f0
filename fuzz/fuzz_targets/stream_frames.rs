//! The frames of an upgraded (remote) connection, as deputyd reads them from a client it
//! does not trust: `FrameBuffer` fed the input in pieces, every frame taken out until it
//! reports an error or wants more. Each frame it gives must encode back to the very bytes it
//! came from (an unknown exit's ignored value aside), and the buffer must never hand out more than it was given.
//!
//! Input: the first byte sets the size of the pieces (1 to 256 bytes), the rest is what the
//! client sends.

#![no_main]

use deputy_proto::stream::{ExitFrame, Frame, FrameBuffer, HEADER, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, mut input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece) + 1;
    let mut buffer = FrameBuffer::default();
    let mut taken = 0usize;
    let mut given = 0usize;
    let mut encoded = Vec::with_capacity(HEADER + MAX_PAYLOAD);
    loop {
        loop {
            match buffer.next_frame() {
                Ok(Some(frame)) => {
                    encoded.clear();
                    frame.encode(&mut encoded);
                    let (again, used) = Frame::decode(&encoded)
                        .expect("an encoded frame decodes")
                        .expect("an encoded frame is complete");
                    assert_eq!(again, frame);
                    assert_eq!(used, encoded.len());
                    taken += encoded.len();
                    assert!(taken <= given, "more frame bytes than bytes given");
                    // The bytes it came from are exactly its encoding (but for an unknown
                    // exit, whose value is ignored).
                    let start = taken - encoded.len();
                    if frame != Frame::Exit(ExitFrame::Unknown) {
                        assert_eq!(&data[1 + start..1 + taken], &encoded[..]);
                    }
                }
                Ok(None) => break,
                // deputyd cuts the client off here.
                Err(_) => return,
            }
        }
        if input.is_empty() {
            return;
        }
        let spare = buffer.spare();
        assert!(!spare.is_empty(), "no room after the frames were taken");
        let n = spare.len().min(piece).min(input.len());
        spare[..n].copy_from_slice(&input[..n]);
        buffer.filled(n);
        given += n;
        input = &input[n..];
    }
});
