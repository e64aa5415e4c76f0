//! Printing a failure. deputy's exit codes are in [`deputy_quick::exit`], shared with the
//! launcher.

pub use deputy_quick::exit::ERROR;

/// Prints `message` and returns `code`.
pub fn fail(message: &str, code: u8) -> u8 {
    eprintln!("deputy: {message}");
    code
}
