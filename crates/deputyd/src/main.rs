//! `deputyd`, the deputy service: starts processes in its clients' security context, over the
//! Varlink interface `io.deputy` on a Unix socket.

#![forbid(unsafe_code)]

mod audit;
mod config;
mod daemon;
mod methods;
mod policy;
mod relay;
mod remote;
mod server;
mod sessions;
mod socket;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// deputyd: starts processes in its clients' security context.
#[derive(Debug, Parser)]
#[command(name = "deputyd", version, about)]
pub struct Args {
    /// The configuration file (TOML); absent means the embedded defaults.
    #[arg(long, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Listen here instead of the configured socket.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log filter (tracing's syntax, e.g. `info`, `deputyd=debug`).
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "DEPUTY_LOG"
    )]
    pub log: String,
    /// Check FILE and report its errors with line and column, then exit.
    #[arg(long, value_name = "FILE", conflicts_with = "explain")]
    pub check_config: Option<PathBuf>,
    /// Show which rule decides whether --caller may act as --user, then exit.
    #[arg(long, requires_all = ["caller", "user"])]
    pub explain: bool,
    /// With --explain: the calling uid.
    #[arg(long, value_name = "UID")]
    pub caller: Option<u32>,
    /// With --explain: the target user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = &args.check_config {
        return match config::Config::load(path, true) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    if args.explain {
        return daemon::explain(&args);
    }
    daemon::run(args)
}
