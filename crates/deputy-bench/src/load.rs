//! Throughput, floods and probes: clients starting `/bin/true` through deputyd in a loop, and
//! the machine's raw spawn rate (std's `Command` doing the same in as many threads) to compare
//! them with.
//!
//! ```text
//!  deputy-load ── N connections (one task each, one runtime thread) ──▶ deputyd ──▶ /bin/true
//!  deputy-load raw ── N threads: Command::new("/bin/true").status() in a loop
//! ```
//!
//! Every client connects first; the clock starts when all are connected, so that connecting
//! is not counted as load. A request that fails is counted by kind (the daemon's error name,
//! or `transport`) and the client goes on: after a transport failure it connects again, after
//! `TooManyRequests` it backs off a little, as a well-behaved client would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::{self, Connection, Failure, Route};
use crate::stats::{Samples, Summary};

/// How long a client waits after `TooManyRequests` before it tries again.
const BACKOFF: Duration = Duration::from_millis(5);

/// What a load run measured.
#[derive(Debug, Serialize)]
pub struct Throughput {
    /// `deputy` or `raw`.
    pub kind: &'static str,
    /// For deputy: `peer`, `trusted` or `session`.
    pub route: String,
    /// Concurrent clients (connections, or threads for raw).
    pub clients: usize,
    /// From the common start to the last completed request, in seconds.
    pub seconds: f64,
    /// Completed starts per second.
    pub per_sec: f64,
    /// Latency of each completed start, and the failures.
    pub latency: Summary,
    /// This tool's own CPU time (user + system, all threads) per completed start, in
    /// milliseconds, while it ran: what the load generator takes from the CPUs it shares with
    /// deputyd and the commands. (For `raw` it includes the forks made by its threads, not the
    /// commands, which are other processes.)
    pub own_cpu_ms_per_start: Option<f64>,
}

/// This process's CPU time so far (user + system, every thread), from `/proc/self/stat`, in
/// clock ticks' resolution (10 ms): enough over a run of seconds.
fn own_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends at the last ')': state is field 3, utime 14
    // and stime 15 (proc(5)).
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

/// CPU per completed start between `before` and now, in milliseconds.
fn cpu_per_start(before: Option<Duration>, completed: usize) -> Option<f64> {
    let used = own_cpu()?.checked_sub(before?)?;
    (completed > 0).then(|| used.as_secs_f64() * 1e3 / completed as f64)
}

/// Options of a deputy load run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// deputyd's socket.
    pub socket: PathBuf,
    /// How starts are asked for.
    pub route: Route,
    /// Concurrent connections.
    pub clients: usize,
    /// How long to keep starting.
    pub duration: Duration,
    /// Stop after this many requests in all (a bound for floods).
    pub max_requests: u64,
    /// A new connection for every start (as the CLI does), instead of one per client.
    pub fresh_connection: bool,
    /// Pause between two starts of one client.
    pub interval: Duration,
}

fn route_name(route: &Route) -> String {
    match route {
        Route::Peer => "peer".into(),
        Route::Trusted(_) => "trusted".into(),
        Route::Session(_) => "session".into(),
    }
}

/// Runs `options.clients` clients, each starting `/bin/true` in a loop, for
/// `options.duration` (or until `max_requests` were sent).
pub async fn deputy(options: LoadOptions) -> Throughput {
    let options = Rc::new(options);
    let sent = Rc::new(AtomicU64::new(0));
    let local = tokio::task::LocalSet::new();
    let results = local
        .run_until(async {
            // Connect everyone first.
            let mut conns = Vec::with_capacity(options.clients);
            for _ in 0..options.clients {
                conns.push(if options.fresh_connection {
                    None
                } else {
                    client::connect(&options.socket).await.ok()
                });
            }
            let cpu_before = own_cpu();
            let start = Instant::now();
            let deadline = start + options.duration;
            let mut tasks = Vec::with_capacity(conns.len());
            for conn in conns {
                let (options, sent) = (options.clone(), sent.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    one_client(&options, conn, &sent, deadline).await
                }));
            }
            let mut all = Samples::default();
            let mut last = start;
            for task in tasks {
                if let Ok((samples, finished)) = task.await {
                    all.merge(samples);
                    last = last.max(finished);
                }
            }
            let cpu = cpu_per_start(cpu_before, all.len());
            (all, last.duration_since(start), cpu)
        })
        .await;
    let (samples, took, own_cpu_ms_per_start) = results;
    let seconds = took.as_secs_f64().max(1e-9);
    Throughput {
        kind: "deputy",
        route: route_name(&options.route),
        clients: options.clients,
        seconds,
        per_sec: samples.len() as f64 / seconds,
        latency: samples.summary(),
        own_cpu_ms_per_start,
    }
}

async fn one_client(
    options: &LoadOptions,
    mut conn: Option<Connection>,
    sent: &AtomicU64,
    deadline: Instant,
) -> (Samples, Instant) {
    let mut samples = Samples::default();
    let request = client::create(&options.route, &["/bin/true"], false);
    let mut finished = Instant::now();
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < options.max_requests {
        let began = Instant::now();
        let result = async {
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(client::connect(&options.socket).await?),
            };
            client::start_and_wait(conn, &request).await
        }
        .await;
        finished = Instant::now();
        match result {
            Ok(_) => samples.push(finished - began),
            Err(failure) => {
                samples.fail(failure.kind(), failure.to_string());
                if !client::is_limit_keeping_connection(&failure) {
                    // The connection may be gone (a refused connection is closed after its
                    // error): start over with a new one.
                    conn = None;
                }
                tokio::time::sleep(BACKOFF).await;
            }
        }
        if options.fresh_connection {
            conn = None;
        }
        if !options.interval.is_zero() {
            tokio::time::sleep(options.interval).await;
        }
    }
    (samples, finished)
}

/// The machine's raw spawn rate: `threads` threads, each running `/bin/true` with std's
/// `Command` (fork or vfork + exec, then wait) in a loop for `duration`.
pub fn raw(threads: usize, duration: Duration) -> Throughput {
    let barrier = Arc::new(std::sync::Barrier::new(threads + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (barrier, start) = (barrier.clone(), start.clone());
            std::thread::spawn(move || {
                let mut samples = Samples::default();
                barrier.wait();
                let begun = *start.get_or_init(Instant::now);
                let deadline = begun + duration;
                let mut finished = Instant::now();
                while Instant::now() < deadline {
                    let began = Instant::now();
                    let status = Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    finished = Instant::now();
                    match status {
                        Ok(s) if s.success() => samples.push(finished - began),
                        Ok(s) => samples.fail("exit".into(), format!("/bin/true: {s}")),
                        Err(e) => samples.fail("spawn".into(), format!("/bin/true: {e}")),
                    }
                }
                (samples, finished)
            })
        })
        .collect();
    let cpu_before = own_cpu();
    let begun = *start.get_or_init(Instant::now);
    barrier.wait();
    let mut all = Samples::default();
    let mut last = begun;
    for handle in handles {
        if let Ok((samples, finished)) = handle.join() {
            all.merge(samples);
            last = last.max(finished);
        }
    }
    let seconds = last.duration_since(begun).as_secs_f64().max(1e-9);
    Throughput {
        kind: "raw",
        route: "std::process::Command".into(),
        clients: threads,
        seconds,
        per_sec: all.len() as f64 / seconds,
        own_cpu_ms_per_start: cpu_per_start(cpu_before, all.len()),
        latency: all.summary(),
    }
}

/// Starts one process on `route` and returns its session (for probes in a session).
///
/// # Errors
/// The daemon's refusal or a transport failure.
pub async fn kept_session(socket: &Path, route: &Route) -> Result<String, Failure> {
    let mut conn = client::connect(socket).await?;
    let request = client::create(route, &["/bin/true"], true);
    let event = client::start_and_wait(&mut conn, &request).await?;
    Ok(event.session)
}
