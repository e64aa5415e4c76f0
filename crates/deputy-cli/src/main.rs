//! `deputy-cli`, the full command line for deputyd: run a command as yourself or another user,
//! see who the daemon takes you for, list and end sessions. People run `deputy`, the launcher
//! without libc (`launch/`), which serves the plain non-interactive `deputy run` lines itself
//! and hands every other line, unchanged, to this program beside it; it calls itself `deputy`.
//!
//! Exit codes: the command's own (128+N when a signal N ended it), or, for deputy's own
//! failures, [`deputy_quick::exit`]'s codes: 123 refused by policy, 124 logon refused, 125 any
//! other deputy error, 126 the command cannot be executed, 127 the command was not found.

#![forbid(unsafe_code)]

mod client;
mod exit;
mod quick;
mod remote;
mod run;
mod terminal;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Run processes in a client's security context, through deputyd.
#[derive(Debug, Parser)]
#[command(name = "deputy", bin_name = "deputy", version, about, long_about = None)]
pub struct Cli {
    /// deputyd's socket.
    #[arg(long, global = true, value_name = "PATH", env = "DEPUTY_SOCKET", default_value = deputy_proto::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    // --remote and its options come before the subcommand (`deputy --remote H run ...`): not
    // global, because clap copies every global option into every subcommand when it parses,
    // and that copying is on the path of every `deputy run` (~40 µs for these four).
    /// Use the deputyd at HOST:PORT, over TLS (run only): log on with a password, and the
    /// command's streams travel on the connection.
    #[arg(long, value_name = "HOST:PORT")]
    pub remote: Option<String>,
    /// With --remote: the CA certificates (PEM) the server's certificate must chain to.
    /// Default: the system's ($SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub ca: Option<PathBuf>,
    /// With --remote: our certificate (PEM chain), for a server that asks for one (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["remote", "key"])]
    pub cert: Option<PathBuf>,
    /// With --cert: its private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// With --remote: certificate revocation lists (PEM) the server's certificate chain is
    /// checked against; each certificate of the chain then needs a list from its issuer.
    /// Repeatable.
    #[arg(long = "crl", value_name = "FILE", requires = "remote")]
    pub crls: Vec<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command: as yourself, or with -u as another user (logged on with a password, or
    /// without one where the policy trusts you).
    Run(run::RunArgs),
    /// Show who deputyd sees you as (your peer token): user, groups, level.
    Whoami,
    /// List your sessions (root: all).
    Sessions,
    /// End a session: its processes get SIGTERM, then SIGKILL after the grace time.
    Logoff {
        /// The session's id.
        id: String,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = quick::parse(&args, std::env::var_os("DEPUTY_SOCKET").as_ref())
        .unwrap_or_else(|| Cli::parse_from(args));
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "deputy",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => ExitCode::from(exit::fail(
                    &format!("cannot write the man page: {err}"),
                    exit::ERROR,
                )),
            };
        }
        _ => {}
    }
    // One thread, and only the IO driver (the CLI sets no timers): start-up is part of every
    // `deputy run`'s latency.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return ExitCode::from(exit::fail(&format!("cannot start: {err}"), exit::ERROR));
        }
    };
    let code = runtime.block_on(client::main(cli));
    // Exit here, with the runtime, its signal tasks and the connection still standing: taking
    // them down would only add system calls to every `deputy run`, and the kernel closes what
    // is left. (The terminal, if raw, was restored on the way out of `run`; `exit` flushes
    // stdout.)
    std::process::exit(i32::from(code))
}
