//! deputyd's resident memory: idle, with many idle connections open, and with many live
//! sessions each running a command. Read from `/proc/PID/status` (`VmRSS`, `VmHWM`), the same
//! figure `ps -o rss` shows.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::client::{self, Connection, Method, Route};
use crate::stats::Samples;

/// One reading of a process's memory, in KiB.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Rss {
    /// Resident now.
    pub rss_kib: u64,
    /// The most it was ever resident (high-water mark).
    pub hwm_kib: u64,
}

/// Reads `pid`'s `VmRSS` and `VmHWM`.
///
/// # Errors
/// When `/proc/PID/status` cannot be read (the process is gone).
pub fn rss(pid: u32) -> std::io::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Rss {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// What [`measure`] found.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Before anything.
    pub idle: Rss,
    /// Idle connections asked for, and how many were served (answered a GetToken).
    pub connections: usize,
    /// Connections that got a GetToken answer.
    pub connections_served: usize,
    /// With those connections open.
    pub with_connections: Rss,
    /// After they closed.
    pub after_connections: Rss,
    /// Live sessions asked for, and how many started their command.
    pub sessions: usize,
    /// Sessions that started.
    pub sessions_started: usize,
    /// With those sessions (each running `sleep`).
    pub with_sessions: Rss,
    /// After every one was logged off.
    pub after_logoff: Rss,
    /// Failures, by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// An example failure.
    pub first_error: Option<String>,
}

/// Raises our own open-file limit to its hard limit: a thousand connections need a thousand
/// descriptors.
pub fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// Measures deputyd (`pid`) idle, with `connections` idle connections, and with `sessions`
/// kept sessions on `route`, each running `sleep sleep_secs`. Every session is logged off
/// before this returns.
pub async fn measure(
    socket: &Path,
    pid: u32,
    connections: usize,
    sessions: usize,
    route: &Route,
    sleep_secs: u64,
) -> std::io::Result<Memory> {
    let settle = Duration::from_millis(300);
    let mut failures = Samples::default();
    tokio::time::sleep(settle).await;
    let idle = rss(pid)?;

    // Idle connections: each one is served once (GetToken), so that the daemon has accepted it
    // and set up its task, then left open and silent.
    let mut open: Vec<Connection> = Vec::with_capacity(connections);
    for _ in 0..connections {
        match client::connect(socket).await {
            Ok(conn) => open.push(conn),
            Err(f) => failures.fail(f.kind(), f.to_string()),
        }
    }
    let mut served = 0;
    for conn in &mut open {
        match client::call::<serde_json::Value>(conn, &Method::GetToken, Vec::new()).await {
            Ok(_) => served += 1,
            Err(f) => failures.fail(f.kind(), f.to_string()),
        }
    }
    tokio::time::sleep(settle).await;
    let with_connections = rss(pid)?;
    drop(open);
    tokio::time::sleep(settle).await;
    let after_connections = rss(pid)?;

    // Live sessions: a kept session each, running `sleep`; the connection that started it is
    // closed once the pid is known (a kept session's command outlives its client).
    let sleep = sleep_secs.to_string();
    let request = client::create(route, &["/bin/sleep", &sleep], true);
    let mut ids = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let started = async {
            let mut conn = client::connect(socket).await?;
            client::send(
                &mut conn,
                &Method::CreateProcess(&request),
                true,
                Vec::new(),
            )
            .await?;
            let (event, _): (deputy_proto::ProcessEvent, bool) = client::receive(&mut conn).await?;
            Ok::<_, client::Failure>(event.session)
        }
        .await;
        match started {
            Ok(id) => ids.push(id),
            Err(f) => failures.fail(f.kind(), f.to_string()),
        }
    }
    tokio::time::sleep(settle).await;
    let with_sessions = rss(pid)?;
    let sessions_started = ids.len();
    logoff_all(socket, &ids, &mut failures).await;
    tokio::time::sleep(settle).await;
    let after_logoff = rss(pid)?;
    let summary = failures.summary();
    Ok(Memory {
        idle,
        connections,
        connections_served: served,
        with_connections,
        after_connections,
        sessions,
        sessions_started,
        with_sessions,
        after_logoff,
        errors: summary.errors_by_kind,
        first_error: summary.first_error,
    })
}

/// Logs off every session in `ids`, on one connection.
pub async fn logoff_all(socket: &Path, ids: &[String], failures: &mut Samples) {
    let mut conn = match client::connect(socket).await {
        Ok(conn) => conn,
        Err(f) => {
            failures.fail(f.kind(), f.to_string());
            return;
        }
    };
    for id in ids {
        let call = deputy_proto::Logoff {
            session: id.clone(),
        };
        if let Err(f) =
            client::call::<deputy_proto::Empty>(&mut conn, &Method::Logoff(&call), Vec::new()).await
        {
            failures.fail(f.kind(), f.to_string());
        }
    }
}
