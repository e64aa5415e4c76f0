//! Links `deputy` without libc and its start files: origin provides `_start`, compiler-builtins
//! the memory functions. A symbol that only libc would have is then a link error, not a call
//! into a libc that was never initialised.

fn main() {
    println!("cargo:rustc-link-arg-bins=-nostdlib");
}
