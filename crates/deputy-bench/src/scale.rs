//! Scale: many live sessions, then the latency of one start (by the trusted path, by the peer
//! path, in an existing session) and of ListSessions (on the connection it used before, and on
//! a fresh one, as `deputy sessions` makes).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::client::{self, Method, Route};
use crate::stats::{Samples, Summary};

/// What [`fill`] did.
#[derive(Debug, Serialize)]
pub struct Fill {
    /// Sessions asked for.
    pub asked: usize,
    /// Sessions created.
    pub created: usize,
    /// How long it took, in seconds.
    pub seconds: f64,
    /// Latency of each creation, and the failures.
    pub latency: Summary,
}

/// Creates `count` kept sessions on `route`, each by starting `/bin/true` (which ends at
/// once; the session stays), over `clients` connections.
pub async fn fill(socket: &Path, route: &Route, count: usize, clients: usize) -> Fill {
    let begun = Instant::now();
    let request = client::create(route, &["/bin/true"], true);
    let local = tokio::task::LocalSet::new();
    let samples = local
        .run_until(async {
            let clients = clients.clamp(1, count.max(1));
            let mut tasks = Vec::new();
            for i in 0..clients {
                // Spread `count` over the clients.
                let share = count / clients + usize::from(i < count % clients);
                let (socket, request) = (socket.to_owned(), request.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let mut samples = Samples::default();
                    let mut conn = None;
                    for _ in 0..share {
                        let began = Instant::now();
                        let result = async {
                            let conn = match &mut conn {
                                Some(conn) => conn,
                                None => conn.insert(client::connect(&socket).await?),
                            };
                            client::start_and_wait(conn, &request).await
                        }
                        .await;
                        match result {
                            Ok(_) => samples.push(began.elapsed()),
                            Err(f) => {
                                samples.fail(f.kind(), f.to_string());
                                conn = None;
                            }
                        }
                    }
                    samples
                }));
            }
            let mut all = Samples::default();
            for task in tasks {
                if let Ok(samples) = task.await {
                    all.merge(samples);
                }
            }
            all
        })
        .await;
    Fill {
        asked: count,
        created: samples.len(),
        seconds: begun.elapsed().as_secs_f64(),
        latency: samples.summary(),
    }
}

/// Latency of `samples` sequential starts of `/bin/true` on `route`, each on a new connection
/// when `fresh` (as the CLI does), else on one connection.
pub async fn starts(socket: &Path, route: &Route, samples: usize, fresh: bool) -> Summary {
    let request = client::create(route, &["/bin/true"], false);
    let mut out = Samples::default();
    let mut conn = None;
    for _ in 0..samples {
        let began = Instant::now();
        let result = async {
            let conn = match &mut conn {
                Some(conn) => conn,
                None => conn.insert(client::connect(socket).await?),
            };
            client::start_and_wait(conn, &request).await
        }
        .await;
        match result {
            Ok(_) => out.push(began.elapsed()),
            Err(f) => {
                out.fail(f.kind(), f.to_string());
                conn = None;
            }
        }
        if fresh {
            conn = None;
        }
    }
    out.summary()
}

/// What [`lists`] measured.
#[derive(Debug, Serialize)]
pub struct Lists {
    /// How many sessions the last reply listed.
    pub listed: usize,
    /// The first ListSessions on the connection that is then reused: it pays for growing the
    /// connection's buffers, as a fresh one does.
    pub first_ms: f64,
    /// ListSessions on that connection afterwards.
    pub reused: Summary,
    /// ListSessions on a new connection each time (connect included), as `deputy sessions`.
    pub fresh: Summary,
}

/// One ListSessions on `conn` (every piece of it): its latency and how many sessions it listed.
async fn list_once(
    conn: &mut Option<client::Connection>,
    socket: &Path,
) -> Result<(std::time::Duration, usize), client::Failure> {
    let began = Instant::now();
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(client::connect(socket).await?),
    };
    // With "more", as `deputy sessions` calls it: a daemon that streams the list sends it in
    // pieces; one that does not sends one reply that does not continue.
    client::send(conn, &Method::ListSessions, true, Vec::new()).await?;
    let mut listed = 0;
    loop {
        let (piece, continues): (deputy_proto::ListSessionsReply, bool) =
            client::receive(conn).await?;
        listed += piece.sessions.len();
        if !continues {
            break;
        }
    }
    Ok((began.elapsed(), listed))
}

/// Latency of `fresh` ListSessions calls on new connections, then of `reused` ones on one
/// connection (after a first call on it, reported apart).
pub async fn lists(socket: &Path, fresh: usize, reused: usize) -> Lists {
    let mut listed = 0;
    let (mut on_fresh, mut on_reused) = (Samples::default(), Samples::default());
    for _ in 0..fresh {
        match list_once(&mut None, socket).await {
            Ok((took, n)) => {
                on_fresh.push(took);
                listed = n;
            }
            Err(f) => on_fresh.fail(f.kind(), f.to_string()),
        }
    }
    let mut kept = None;
    let mut first_ms = 0.0;
    for i in 0..=reused {
        match list_once(&mut kept, socket).await {
            Ok((took, n)) if i == 0 => {
                first_ms = took.as_secs_f64() * 1e3;
                listed = n;
            }
            Ok((took, n)) => {
                on_reused.push(took);
                listed = n;
            }
            Err(f) => {
                on_reused.fail(f.kind(), f.to_string());
                kept = None;
            }
        }
    }
    Lists {
        listed,
        first_ms,
        reused: on_reused.summary(),
        fresh: on_fresh.summary(),
    }
}
