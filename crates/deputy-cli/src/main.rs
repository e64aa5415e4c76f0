//! `deputy`, the command line for deputyd. Its commands arrive with the daemon's issue; until
//! then the binary only says what it is.

#![forbid(unsafe_code)]

fn main() {
    println!(
        "deputy {}: run a command in a client's security context through deputyd (no commands yet)",
        env!("CARGO_PKG_VERSION")
    );
}
