//! `deputy-load`: the load tool of `bench/run`. It talks Varlink to a running deputyd directly
//! (as the CLI does, through zlink) so that a request costs no process start, and prints one
//! JSON object per run on stdout for the report. Who the caller is matters to deputyd: run it
//! as the uid whose path you measure (`setpriv --reuid …` for the peer path, root for the
//! trusted path).
//!
//! ```text
//! deputy-load throughput --route peer --clients 8 --duration-ms 5000
//! deputy-load raw --threads 8 --duration-ms 5000
//! deputy-load memory --pid PID --connections 1000 --sessions 100 --route trusted:dpt-alice
//! deputy-load fill --route trusted:dpt-alice --count 1000
//! deputy-load starts --route peer --samples 50      deputy-load lists --fresh 5 --reused 5
//! deputy-load logon --user dpt-alice --password-file F --runs 30
//! deputy-load exec --name NAME --stdin F -- deputy run -u dpt-alice --password-stdin -- /bin/true
//! ```

#![forbid(unsafe_code)]

mod client;
mod exec;
mod load;
mod logon;
mod memory;
mod scale;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::Route;

/// Load, memory, scale and logon figures for deputyd, as JSON on stdout.
#[derive(Debug, Parser)]
#[command(name = "deputy-load", version, about)]
struct Cli {
    /// deputyd's socket.
    #[arg(long, global = true, env = "DEPUTY_SOCKET", default_value = deputy_proto::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// What to measure.
    #[command(subcommand)]
    command: Measure,
}

/// What to measure.
#[derive(Debug, Subcommand)]
enum Measure {
    /// Clients starting /bin/true in a loop: starts per second, latency.
    Throughput {
        /// peer, trusted:USER or session:ID.
        #[arg(long, value_parser = parse_route, default_value = "peer")]
        route: Route,
        /// Concurrent connections.
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// How long, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Stop after this many requests in all.
        #[arg(long, default_value_t = u64::MAX)]
        max_requests: u64,
        /// Connect anew for every start, as the CLI does.
        #[arg(long)]
        fresh: bool,
        /// Milliseconds between two starts of one client.
        #[arg(long, default_value_t = 0)]
        interval_ms: u64,
    },
    /// The raw spawn rate: std's Command starting /bin/true in a loop in N threads.
    Raw {
        /// Threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How long, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
    },
    /// deputyd's RSS idle, with idle connections, with live sessions (logged off after).
    Memory {
        /// deputyd's pid.
        #[arg(long)]
        pid: u32,
        /// Idle connections to hold open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Kept sessions, each running sleep.
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// How the sessions are started.
        #[arg(long, value_parser = parse_route, default_value = "peer")]
        route: Route,
        /// How long each sleep would last if nobody logged it off.
        #[arg(long, default_value_t = 300)]
        sleep_secs: u64,
    },
    /// Creates kept sessions (each by starting /bin/true, which ends at once).
    Fill {
        /// How they are started.
        #[arg(long, value_parser = parse_route, default_value = "peer")]
        route: Route,
        /// How many.
        #[arg(long)]
        count: usize,
        /// Over this many connections.
        #[arg(long, default_value_t = 2)]
        clients: usize,
    },
    /// Latency of sequential starts of /bin/true.
    Starts {
        /// peer, trusted:USER, session:ID, or new-session:ROUTE (a kept session is made on
        /// ROUTE first, and the starts run in it).
        #[arg(long, default_value = "peer")]
        route: String,
        /// How many.
        #[arg(long, default_value_t = 50)]
        samples: usize,
        /// Connect anew for every start.
        #[arg(long)]
        fresh: bool,
    },
    /// Latency of ListSessions, on fresh connections and on a reused one.
    Lists {
        /// Calls, each on a new connection.
        #[arg(long, default_value_t = 5)]
        fresh: usize,
        /// Calls on one connection (after a first one, reported apart).
        #[arg(long, default_value_t = 5)]
        reused: usize,
    },
    /// A fresh password logon through deputyd against the bare PAM calls, alternated.
    Logon {
        /// The account.
        #[arg(long, default_value = "dpt-alice")]
        user: String,
        /// A file holding its password (first line).
        #[arg(long)]
        password_file: PathBuf,
        /// The PAM service (deputyd's `pam_service`).
        #[arg(long, default_value = "deputy")]
        service: String,
        /// Timed runs of each.
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Untimed runs of each first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Milliseconds untimed between two logons.
        #[arg(long, default_value_t = 20)]
        pace_ms: u64,
    },
    /// Times a command with stdin from a file; writes hyperfine's JSON shape.
    Exec {
        /// The name in the report.
        #[arg(long)]
        name: String,
        /// The file for stdin (default: /dev/null).
        #[arg(long)]
        stdin: Option<PathBuf>,
        /// Timed runs.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Untimed runs first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// The command.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

fn parse_route(text: &str) -> Result<Route, String> {
    match text.split_once(':') {
        None if text == "peer" => Ok(Route::Peer),
        Some(("trusted", user)) if !user.is_empty() => Ok(Route::Trusted(user.to_owned())),
        Some(("session", id)) if !id.is_empty() => Ok(Route::Session(id.to_owned())),
        _ => Err(format!(
            "{text:?}: expected peer, trusted:USER or session:ID"
        )),
    }
}

fn print(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&format!("cannot write the result: {err}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("deputy-load: {message}");
    ExitCode::FAILURE
}

async fn measure(cli: Cli) -> ExitCode {
    let socket = cli.socket;
    match cli.command {
        Measure::Throughput {
            route,
            clients,
            duration_ms,
            max_requests,
            fresh,
            interval_ms,
        } => {
            let options = load::LoadOptions {
                socket,
                route,
                clients,
                duration: Duration::from_millis(duration_ms),
                max_requests,
                fresh_connection: fresh,
                interval: Duration::from_millis(interval_ms),
            };
            print(&load::deputy(options).await)
        }
        Measure::Raw {
            threads,
            duration_ms,
        } => print(&load::raw(threads, Duration::from_millis(duration_ms))),
        Measure::Memory {
            pid,
            connections,
            sessions,
            route,
            sleep_secs,
        } => {
            memory::raise_nofile();
            match memory::measure(&socket, pid, connections, sessions, &route, sleep_secs).await {
                Ok(found) => print(&found),
                Err(err) => fail(&format!("cannot read deputyd's memory (pid {pid}): {err}")),
            }
        }
        Measure::Fill {
            route,
            count,
            clients,
        } => print(&scale::fill(&socket, &route, count, clients).await),
        Measure::Starts {
            route,
            samples,
            fresh,
        } => {
            let route = match route.strip_prefix("new-session:") {
                Some(inner) => {
                    let inner = match parse_route(inner) {
                        Ok(inner) => inner,
                        Err(err) => return fail(&err),
                    };
                    match load::kept_session(&socket, &inner).await {
                        Ok(id) => Route::Session(id),
                        Err(err) => return fail(&format!("cannot make a kept session: {err}")),
                    }
                }
                None => match parse_route(&route) {
                    Ok(route) => route,
                    Err(err) => return fail(&err),
                },
            };
            print(&scale::starts(&socket, &route, samples, fresh).await)
        }
        Measure::Lists { fresh, reused } => print(&scale::lists(&socket, fresh, reused).await),
        Measure::Logon {
            user,
            password_file,
            service,
            runs,
            warmup,
            pace_ms,
        } => {
            let password = match std::fs::read(&password_file) {
                Ok(mut bytes) => {
                    let line = bytes
                        .iter()
                        .position(|b| *b == b'\n')
                        .unwrap_or(bytes.len());
                    let secret = deputy::Secret::copy_from(&bytes[..line]);
                    bytes.fill(0);
                    secret
                }
                Err(err) => return fail(&format!("{}: {err}", password_file.display())),
            };
            let pace = Duration::from_millis(pace_ms);
            match logon::compare(&socket, &service, &user, password, runs, warmup, pace).await {
                Ok(found) => print(&found),
                Err(err) => fail(&err),
            }
        }
        Measure::Exec { .. } => ExitCode::SUCCESS,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // exec needs no runtime: it only starts processes.
    if let Measure::Exec {
        name,
        stdin,
        runs,
        warmup,
        command,
    } = &cli.command
    {
        return match exec::run(name, command, stdin.as_deref(), *runs, *warmup) {
            Ok(found) => print(&found),
            Err(err) => fail(&err),
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start a runtime: {err}")),
    };
    runtime.block_on(measure(cli))
}
