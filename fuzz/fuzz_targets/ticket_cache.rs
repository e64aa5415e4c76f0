//! A Kerberos ticket cache a client passes for delegation (`CreateProcess`'s `delegateFd`):
//! `deputy::tickets::read_passed` on a descriptor of a file holding the fuzz input. The file is
//! a memfd: a regular file in memory, as a passed cache must be.
//!
//! It must take exactly the ccache files (0x05, then a version 1 to 4), whole.

#![no_main]

use deputy::tickets::{MAX_SIZE, TicketError, read_passed};
use libfuzzer_sys::fuzz_target;
use rustix::fs::{MemfdFlags, memfd_create};

fuzz_target!(|data: &[u8]| {
    let file = memfd_create("deputy-fuzz-ccache", MemfdFlags::CLOEXEC).expect("a memfd");
    let mut written = 0;
    while written < data.len() {
        written += rustix::io::write(&file, &data[written..]).expect("a memfd takes the input");
    }
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0)).expect("seek");
    let is_ccache =
        matches!(data, [5, 1..=4, ..]) && u64::try_from(data.len()).is_ok_and(|n| n <= MAX_SIZE);
    match read_passed(file) {
        Ok(tickets) => {
            assert!(is_ccache, "took what is not a ccache file");
            assert_eq!(tickets.expose(), data, "the cache was not read whole");
        }
        Err(TicketError::Invalid(_)) => assert!(!is_ccache, "refused a ccache file"),
        Err(err) => panic!("unexpected error: {err}"),
    }
});
