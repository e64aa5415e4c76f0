//! `deputyd`, the deputy service. Its Varlink API and session registry arrive with their own
//! issue; until then the binary only says what it is.

#![forbid(unsafe_code)]

fn main() {
    println!(
        "deputyd {}: the service that starts processes in its clients' security context (not yet serving: see the library demo)",
        env!("CARGO_PKG_VERSION")
    );
}
