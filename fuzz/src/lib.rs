//! The daemon's own parsing code, for the fuzz targets.
//!
//! deputyd is a binary crate, so its modules cannot be imported. The files that parse untrusted
//! input and depend on nothing else of the daemon are compiled here from their place in the
//! tree (not copied): the targets fuzz exactly what deputyd runs.
//!
//! ```text
//!  socket.rs   Bounded: the connection's socket (size and descriptor bounds)  ─▶ varlink_call
//!  config.rs   Config::parse (TOML)                                            ─▶ config
//!  policy.rs   resource names (config.rs needs them), may_pass_env             ─▶ config, environment
//!  audit.rs    OnFailure (a field of [daemon] in config.rs)
//! ```
//!
//! If one of these files comes to use another module of the daemon, include that one here too,
//! or fuzz it through the daemon's public behaviour instead.

#![forbid(unsafe_code)]

#[path = "../../crates/deputyd/src/audit.rs"]
pub mod audit;
#[path = "../../crates/deputyd/src/config.rs"]
pub mod config;
#[path = "../../crates/deputyd/src/policy.rs"]
pub mod policy;
#[path = "../../crates/deputyd/src/socket.rs"]
pub mod socket;

pub mod call;
