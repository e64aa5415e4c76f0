//! Start-up, the accept loop, and shutdown.
//!
//! Start-up refuses to run without the capabilities logon and spawn need (naming each one), and
//! refuses a socket directory that others may write to (they could replace the socket). Under
//! systemd the socket may come from socket activation (`LISTEN_FDS`); READY and STOPPING are
//! reported with sd_notify. SIGTERM or SIGINT: stop accepting, log every session off cleanly,
//! exit 0.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use deputy::{LockoutPolicy, LogonConfig, Logons};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::Args;
use crate::audit::Audit;
use crate::config::{Config, OnRestart};
use crate::policy::{Policy, Target};
use crate::server::{Daemon, serve_connection};
use crate::sessions;

/// `deputyd --explain --caller UID --user NAME`.
pub fn explain(args: &Args) -> ExitCode {
    let config = match Config::load(&args.config, false) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let (Some(caller), Some(user)) = (args.caller, args.user.as_deref()) else {
        return ExitCode::from(2);
    };
    let Ok(token) = deputy::Token::for_user(user) else {
        println!(
            "{user}: no such user: a logon would fail in PAM, and no process can be started as it"
        );
        return ExitCode::SUCCESS;
    };
    let policy = Policy::new(config);
    let target = Target {
        user,
        uid: token.uid().as_raw(),
    };
    println!("caller uid {caller}, target {user} (uid {}):", target.uid);
    println!(
        "  log on with a password:      {}",
        policy.may_log_on(caller, target)
    );
    println!(
        "  start without a password:    {}",
        policy.may_act_without_password(caller, target)
    );
    println!(
        "  start as itself (peer):      {}",
        if caller == target.uid {
            "allowed: a caller may always act as itself"
        } else {
            "not applicable: the peer path runs as the caller"
        }
    );
    ExitCode::SUCCESS
}

/// Runs the daemon until SIGTERM.
pub fn run(args: Args) -> ExitCode {
    // zlink logs whole messages at trace level, and a message may carry a secret (an inline
    // password, an X cookie): its level is capped whatever the filter asks.
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive("zlink=info".parse().expect("a valid directive"))
        .add_directive("zlink_core=info".parse().expect("a valid directive"));
    // Colours only for a person at a terminal: in a file or the journal, escape codes are noise.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("deputyd: {err}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> Result<(), String> {
    // deputyd holds passwords and tickets in passing: no core dump of it, no ptrace by anyone
    // without CAP_SYS_PTRACE.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("cannot mark the daemon non-dumpable: {e}"))?;
    let mut config = Config::load(
        &args.config,
        args.config != Path::new(crate::config::DEFAULT_PATH),
    )
    .map_err(|e| e.to_string())?;
    if let Some(socket) = args.socket {
        config.daemon.socket = socket;
    }
    let report = deputy::check_privileges()
        .map_err(|e| format!("cannot read this process's capabilities: {e}"))?;
    if !report.is_sufficient() {
        return Err(format!("missing privileges, refusing to start:\n{report}"));
    }
    for missing in &report.missing_optional {
        tracing::warn!(
            "{} is missing: deputyd cannot {}",
            missing.name,
            missing.purpose
        );
    }
    // An empty path, as documented, means no file: audit lines go to the log only.
    let audit_log = (config.daemon.audit_log.as_deref()).filter(|p| !p.as_os_str().is_empty());
    let audit = Audit::open(audit_log, config.daemon.on_audit_failure).map_err(|e| {
        format!(
            "cannot open the audit log {:?}: {e}",
            config.daemon.audit_log
        )
    })?;
    deputy::accounts::set_ttl(Duration::from_secs(config.daemon.account_cache_secs));
    let worker = match &config.daemon.session_worker {
        Some(path) => path.clone(),
        None => LogonConfig::default().worker,
    };
    let logon = &config.logon;
    let logons = Logons::new(LogonConfig {
        service: config.daemon.pam_service.clone(),
        worker,
        fail_delay: Duration::from_millis(logon.fail_delay_ms),
        lockout: LockoutPolicy {
            max_failures: logon.max_failures,
            max_failures_per_caller: logon.max_failures_per_caller,
            window: Duration::from_secs(logon.failure_window_secs),
            lockout: Duration::from_secs(logon.lockout_secs),
        },
        prestart_worker: true,
        timeout: Duration::from_secs(logon.pam_timeout_secs.max(1)),
    });
    let socket_path = config.daemon.socket.clone();
    let state_dir = config.daemon.state_dir(&socket_path);
    let on_restart = config.daemon.on_restart;
    // Descriptors: a daemon with thousands of clients needs more than the customary soft
    // limit of 1,024, so it raises its own to the hard limit. Its processes get the limit
    // deputyd was started with (programs that use select(2) expect at most 1,024), unless
    // [rlimits] says otherwise.
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: nofile.maximum,
        maximum: nofile.maximum,
    };
    if let Err(err) = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised) {
        tracing::warn!("cannot raise the descriptor limit to the hard limit: {err}");
    }
    let mut daemon = Daemon::new(Policy::new(config), logons, audit);
    daemon.child_nofile = nofile;
    let daemon = Arc::new(daemon);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        // The TLS port first: once the Unix socket exists, both are ready.
        let remote = crate::remote::bind(&daemon.policy.config().remote).await?;
        let listener = listen(&socket_path)?;
        // After listen(), which makes the socket's directory (0755) if it is missing.
        let store = crate::state::Store::open(&state_dir)
            .map_err(|e| format!("cannot use the state directory {}: {e}", state_dir.display()))?;
        let (records, unreadable) = store.load_all();
        daemon.sessions.keep_records(store);
        for reason in unreadable {
            tracing::error!("a session record that does not parse was dropped: {reason}");
        }
        recover(&daemon, records, on_restart);
        let request = daemon.audit.request_id();
        daemon.audit.record("start", &request, json!({"socket": socket_path, "pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")}));
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!("listening on {}", socket_path.display());
        if let Some(remote) = remote {
            tracing::info!("listening for remote clients over TLS on {}", remote.address());
            tokio::spawn(crate::remote::serve(daemon.clone(), remote));
        }
        serve(daemon.clone(), listener).await?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        shutdown(&daemon).await;
        daemon.audit.record("stop", &request, json!({"pid": std::process::id()}));
        Ok(())
    })
}

/// The listening socket: from socket activation, or bound at `path` (mode 0666: every local
/// user may connect; identity comes from the kernel).
fn listen(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if sd_notify::listen_fds().map(|fds| fds.count()).unwrap_or(0) > 0 {
        let fd =
            deputy_os::take_inherited_fd(3).map_err(|e| format!("socket activation: fd 3: {e}"))?;
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        return tokio::net::UnixListener::from_std(std_listener)
            .map_err(|e| format!("socket activation: {e}"));
    }
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no directory", path.display()))?;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != euid) {
        return Err(format!(
            "refusing to listen in {}: the directory is writable by others or owned by another user (mode {:o}, owner uid {}), so the socket could be replaced",
            dir.display(),
            meta.mode() & 0o7777,
            meta.uid()
        ));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            return Err(format!(
                "cannot remove the old socket {}: {err}",
                path.display()
            ));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

async fn serve(daemon: Arc<Daemon>, listener: tokio::net::UnixListener) -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut child = signal(SignalKind::child()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let idle = daemon.policy.config().sessions.idle_timeout();
    let mut sweep =
        tokio::time::interval(Duration::from_secs(5).min(idle.max(Duration::from_secs(1))));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => { tokio::spawn(serve_connection(daemon.clone(), stream)); }
                Err(err) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("accept: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = sweep.tick() => {
                for id in daemon.sessions.idle(idle) {
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        if let Some(ended) = sessions::end_unused(&daemon.sessions, &id, daemon.grace()).await {
                            crate::methods::audit_ended(&daemon, &daemon.audit.request_id(), &ended, "idle timeout");
                        }
                    });
                }
            }
            _ = child.recv() => daemon.child_changes.send_modify(|n| *n = n.wrapping_add(1)),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping: logging every session off");
    Ok(())
}

/// The sessions a deputyd that died left behind (`records`): each running process is found by
/// pid and start time (a pid reused since is not it) and watched through a pidfd; then, as
/// `[daemon] on_restart` says, each session goes on until its last process ends (adopt), or is
/// ended now: SIGTERM, SIGKILL after the grace time, grants revoked, tickets destroyed. A PAM
/// session is held by the dead daemon's session worker, which closes it (credentials deleted)
/// once the processes it started have ended. An audit line says what became of each.
fn recover(daemon: &Arc<Daemon>, records: Vec<crate::state::Record>, mode: OnRestart) {
    for record in records {
        let request = daemon.audit.request_id();
        // Its user's token, for ListSessions; a user deleted meanwhile leaves only the ids.
        let token = deputy::Token::for_user(&record.user)
            .or_else(|_| deputy::Token::for_uid(deputy::Uid::from_raw(record.uid)))
            .or_else(|_| deputy::Token::current());
        let Ok(token) = token else {
            tracing::error!(session = %record.id, "cannot make a token to adopt the session with");
            continue;
        };
        let grants = recorded_grants(daemon, &record);
        let session = Arc::new(sessions::Session::adopted(&record, token, grants));
        let (mut running, mut gone) = (Vec::new(), Vec::new());
        for process in &record.processes {
            let found = deputy::Pid::from_raw(process.pid).map(|pid| {
                deputy_os::pidfd::adopt(pid, process.started_after, process.started_before)
            });
            match found {
                Some(Ok(Some(pidfd))) => {
                    running.push(process.pid);
                    let pidfd = session.adopt(*process, pidfd);
                    watch_adopted(daemon, &session, &request, process.pid, pidfd);
                }
                Some(Err(err)) => {
                    // Not ours to watch, then: counted as gone, and said why.
                    tracing::warn!(session = %record.id, pid = process.pid, "cannot adopt the process: {err}");
                    gone.push(process.pid);
                }
                _ => gone.push(process.pid),
            }
        }
        daemon.sessions.insert(session.clone());
        let reason = match mode {
            OnRestart::Adopt if !running.is_empty() => None,
            OnRestart::Adopt => Some("deputyd restarted: no process of the session was left"),
            OnRestart::End => Some("deputyd restarted: on_restart = \"end\""),
        };
        daemon.audit.record(
            "session_recovered",
            &request,
            json!({"session": session.id, "user": session.user, "owner": session.owner, "kind": session.kind, "running": running, "gone": gone, "grants": session.grant_names(), "action": if reason.is_none() { "adopt" } else { "end" }}),
        );
        if let Some(reason) = reason {
            let daemon = daemon.clone();
            tokio::spawn(async move {
                if let Some(ended) =
                    sessions::end(&daemon.sessions, &session.id, daemon.grace()).await
                {
                    crate::methods::audit_ended(&daemon, &request, &ended, reason);
                }
            });
        }
    }
}

/// A recovered session's grants, from its record. An X11 grant is shared, as a live one is, by
/// every session of the same user on the same display (it is removed when the last one ends).
fn recorded_grants(daemon: &Daemon, record: &crate::state::Record) -> Vec<sessions::Grant> {
    record
        .grants
        .iter()
        .cloned()
        .map(|grant| match grant {
            crate::state::GrantRecord::X11(x11) => {
                let key = (x11.display.clone(), x11.user.clone());
                let mut shared = daemon.x11.lock().unwrap_or_else(|p| p.into_inner());
                let held = shared.get(&key).and_then(std::sync::Weak::upgrade);
                let held = held.unwrap_or_else(|| {
                    let held = Arc::new(sessions::SharedX11::recorded(x11));
                    shared.insert(key, Arc::downgrade(&held));
                    held
                });
                sessions::Grant::X11(held)
            }
            other => sessions::Grant::Recorded(other),
        })
        .collect()
}

/// Follows adopted process `pid` of `session` until it ends: its exit is audited (with no
/// status: it is not our child), and the session ends if it was its last process.
fn watch_adopted(
    daemon: &Arc<Daemon>,
    session: &Arc<sessions::Session>,
    request: &str,
    pid: i32,
    pidfd: Arc<std::os::fd::OwnedFd>,
) {
    let (daemon, session, request) = (daemon.clone(), session.clone(), request.to_owned());
    tokio::spawn(async move {
        let over = sessions::wait_adopted(&session, pid, pidfd).await;
        daemon.audit.record(
            "process_exit",
            &request,
            json!({"session": session.id, "pid": pid, "exit": null, "adopted": true}),
        );
        if over
            && let Some(ended) = sessions::end(&daemon.sessions, &session.id, daemon.grace()).await
        {
            crate::methods::audit_ended(&daemon, &request, &ended, "last process ended");
        }
    });
}

async fn shutdown(daemon: &Arc<Daemon>) {
    let ends = daemon.sessions.all().into_iter().map(|session| {
        let daemon = daemon.clone();
        async move {
            if let Some(ended) = sessions::end(&daemon.sessions, &session.id, daemon.grace()).await
            {
                crate::methods::audit_ended(
                    &daemon,
                    &daemon.audit.request_id(),
                    &ended,
                    "daemon shutdown",
                );
            }
        }
    });
    for end in ends.collect::<Vec<_>>() {
        end.await;
    }
}
