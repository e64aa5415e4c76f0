//! The session worker: one process per logon session that holds its PAM handle.
//!
//! PAM session modules act on the process that calls them: pam_limits sets *its* resource
//! limits, pam_env and pam_krb5 shape what *it* hands on, some modules fork or change
//! credentials. Calling them in the daemon would change the daemon for every session at once,
//! and a crashing module would take every session down. So each session's PAM transaction
//! lives in a worker of its own (the shape of OpenSSH's and greetd's session processes):
//!
//! ```text
//!  daemon ──spawn as itself──▶ deputy-session-worker (root), socket on fd 3
//!     │  Start, Answer, Spawn, Close ▶                        ◀ Prompt, LoggedOn, Spawned, Closed
//!     │                                  worker ──clone(CLONE_PARENT)──▶ command (the daemon's child)
//!     └─ the socket closes (daemon gone) ─▶ worker: close_session, setcred(DELETE), pam_end, exit
//! ```
//!
//! The commands are started by the worker, so they inherit what PAM set up there, but with
//! `CLONE_PARENT` they are the daemon's children: the daemon waits for them through their
//! pidfds, exactly like commands it started itself.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::ExitCode;

use deputy_os::exec::{ExecPlan, SpawnFailure};
use deputy_os::pam::{CredAction, Echo, Item, Pam, PamError};
use deputy_os::secret::Secret;
use deputy_os::{Gid, Mode as FileMode, Rlimit, Uid};

use super::wire::{self, FromWorker, Mode, Plan, ToWorker, protocol_error};

/// The entry point of the `deputy-session-worker` binary. A server that embeds deputy ships
/// that binary beside its own and names it in [`super::LogonConfig::worker`].
///
/// It expects its socket to the daemon as descriptor 3 and exits when the session ends or the
/// daemon goes away.
pub fn run_session_worker() -> ExitCode {
    // The worker sees passwords: no core dumps, no ptrace by the user.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let socket = match deputy_os::take_inherited_fd(3) {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!(
                "deputy-session-worker: no session socket on fd 3 ({err}); it is started by deputy, not by hand"
            );
            return ExitCode::from(2);
        }
    };
    match serve(&socket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("deputy-session-worker: {err}");
            ExitCode::FAILURE
        }
    }
}

fn reply(socket: &OwnedFd, message: &FromWorker) -> io::Result<()> {
    wire::send_message(socket, &message.encode())
}

fn serve(socket: &OwnedFd) -> io::Result<()> {
    // A worker started ahead of need (`--service NAME`) loads the PAM stack while it waits, so
    // that a logon does not pay for reading the configuration and loading the modules.
    let mut args = std::env::args().skip(1);
    let preloaded = match (args.next().as_deref(), args.next()) {
        (Some("--service"), Some(service)) => {
            let relay = Relay {
                socket: socket.try_clone()?,
            };
            Pam::start(&service, None, Box::new(relay))
                .ok()
                .map(|pam| (service, pam))
        }
        _ => None,
    };
    let Some((record, _)) = wire::recv(socket.as_fd())? else {
        return Ok(());
    };
    let ToWorker::Start(start) = ToWorker::decode(&record)? else {
        return Err(protocol_error("the first request must be Start"));
    };
    let started = match preloaded {
        Some((service, mut pam)) if service == start.service => {
            pam.set_item(Item::User, &start.user).map(|()| pam)
        }
        _ => {
            let relay = Relay {
                socket: socket.try_clone()?,
            };
            Pam::start(&start.service, Some(&start.user), Box::new(relay))
        }
    };
    let mut pam = match started {
        Ok(pam) => pam,
        Err(err) => return reply(socket, &FromWorker::Failed(err)),
    };
    if let Some(failure) = log_on(&mut pam, &start).err() {
        return reply(socket, &failure);
    }
    if start.mode == Mode::AuthenticateOnly {
        return reply(
            socket,
            &FromWorker::LoggedOn {
                user: start.user,
                env: Vec::new(),
            },
        );
    }
    reply(
        socket,
        &FromWorker::LoggedOn {
            user: start.user,
            env: pam.env_list(),
        },
    )?;

    // The processes started in the session, as long as they run: if the daemon dies, the
    // session stays open until they end (a restarted daemon re-adopts them, or ends them).
    let mut running: Vec<OwnedFd> = Vec::new();
    loop {
        let request = match wire::recv(socket.as_fd()) {
            Ok(Some((record, fds))) => ToWorker::decode(&record).map(|request| (request, fds)),
            Ok(None) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Err(err) => Err(err),
        };
        match request {
            Ok((ToWorker::Spawn(plan), fds)) => {
                let (message, pidfd) = spawn(plan, fds);
                let attached: Vec<BorrowedFd<'_>> = pidfd.iter().map(AsFd::as_fd).collect();
                wire::send(socket.as_fd(), message.encode().as_slice(), &attached)?;
                running.retain(|pidfd| !deputy_os::pidfd::has_ended(pidfd).unwrap_or(false));
                running.extend(pidfd);
            }
            Ok((ToWorker::Close, _)) => {
                let errors = end_session(pam);
                return reply(socket, &FromWorker::Closed(errors));
            }
            Ok(_) => {
                end_session(pam);
                return Err(protocol_error("unexpected request in an open session"));
            }
            // The daemon is gone (or spoke nonsense): the session still ends properly, once
            // its processes have.
            Err(err) => {
                wait_all(running);
                end_session(pam);
                return if err.kind() == io::ErrorKind::UnexpectedEof {
                    Ok(())
                } else {
                    Err(err)
                };
            }
        }
    }
}

/// pam_authenticate … pam_open_session, as `start.mode` asks. On failure, the message to send.
fn log_on(pam: &mut Pam, start: &wire::Start) -> Result<(), FromWorker> {
    pam.take_over_fail_delay().map_err(FromWorker::Failed)?;
    if let Some(tty) = &start.tty {
        pam.set_item(Item::Tty, tty).map_err(FromWorker::Failed)?;
    }
    if let Some(host) = &start.remote_host {
        pam.set_item(Item::RemoteHost, host)
            .map_err(FromWorker::Failed)?;
    }
    if start.mode != Mode::Trusted {
        pam.authenticate().map_err(FromWorker::Failed)?;
        // A module may map the name to another account; deputy would then act for a user the
        // caller never named. Refuse instead.
        let now = pam.user().map_err(FromWorker::Failed)?;
        if now != start.user {
            return Err(FromWorker::UserChanged(now));
        }
    }
    pam.acct_mgmt().map_err(FromWorker::Failed)?;
    if start.mode == Mode::AuthenticateOnly {
        return Ok(());
    }
    pam.setcred(CredAction::Establish)
        .map_err(FromWorker::Failed)?;
    if let Err(err) = pam.open_session() {
        let _ = pam.setcred(CredAction::Delete);
        return Err(FromWorker::Failed(err));
    }
    Ok(())
}

/// Waits until every process of `running` has ended.
fn wait_all(mut running: Vec<OwnedFd>) {
    while !running.is_empty() {
        let mut polled: Vec<_> = running
            .iter()
            .map(|pidfd| rustix::event::PollFd::new(pidfd, rustix::event::PollFlags::IN))
            .collect();
        if rustix::event::poll(&mut polled, None).is_err() {
            // EINTR, or a failure that waiting cannot mend: check each one again.
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(polled);
        running.retain(|pidfd| !deputy_os::pidfd::has_ended(pidfd).unwrap_or(false));
    }
}

/// pam_close_session, pam_setcred(DELETE_CRED), pam_end — each once, in that order, whatever
/// the one before returned. Returns the errors.
fn end_session(mut pam: Pam) -> Vec<PamError> {
    let errors = [pam.close_session(), pam.setcred(CredAction::Delete)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    drop(pam);
    errors
}

fn spawn(plan: Plan, fds: Vec<OwnedFd>) -> (FromWorker, Option<OwnedFd>) {
    match build_plan(plan, fds) {
        Ok(plan) => match deputy_os::exec::spawn(&plan) {
            Ok(spawned) => (
                FromWorker::Spawned {
                    pid: spawned.pid.as_raw_nonzero().get(),
                },
                Some(spawned.pidfd),
            ),
            Err(SpawnFailure {
                stage,
                error,
                rlimit,
            }) => (
                FromWorker::SpawnFailed {
                    stage: stage.code(),
                    errno: error.raw_os_error().unwrap_or(libc_eio()),
                    rlimit_index: rlimit.map(wire::resource_index),
                },
                None,
            ),
        },
        Err(_) => (
            FromWorker::SpawnFailed {
                stage: deputy_os::exec::ChildStage::Plan.code(),
                errno: libc_einval(),
                rlimit_index: None,
            },
            None,
        ),
    }
}

fn libc_eio() -> i32 {
    rustix::io::Errno::IO.raw_os_error()
}

fn libc_einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

fn build_plan(plan: Plan, fds: Vec<OwnedFd>) -> io::Result<ExecPlan> {
    if fds.len() != plan.targets.len() + 2 {
        return Err(protocol_error("descriptor count does not match the plan"));
    }
    let mut fds = fds.into_iter();
    let (program, cwd) = (
        fds.next().expect("checked length"),
        fds.next().expect("checked length"),
    );
    let cstrings = |list: Vec<Vec<u8>>| {
        list.into_iter()
            .map(|bytes| {
                CString::new(bytes).map_err(|_| protocol_error("NUL in argv or environment"))
            })
            .collect::<io::Result<Vec<_>>>()
    };
    let rlimits = plan
        .rlimits
        .into_iter()
        .map(|(index, soft, hard)| {
            Ok((
                wire::resource_from_index(index)?,
                Rlimit {
                    current: soft,
                    maximum: hard,
                },
            ))
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(ExecPlan {
        program,
        program_is_script: plan.program_is_script,
        argv: cstrings(plan.argv)?,
        envp: cstrings(plan.envp)?,
        fds: plan.targets.into_iter().zip(fds).collect(),
        cwd,
        uid: Uid::from_raw(plan.uid),
        gid: Gid::from_raw(plan.gid),
        groups: plan
            .groups
            .map(|groups| groups.into_iter().map(Gid::from_raw).collect()),
        rlimits,
        umask: plan.umask.map(FileMode::from_raw_mode),
        controlling_tty: plan.controlling_tty,
        clone_parent: true,
    })
}

/// The worker's PAM conversation: every prompt goes to the daemon, which asks the caller's
/// conversation and sends the answer back.
struct Relay {
    socket: OwnedFd,
}

impl deputy_os::pam::Conversation for Relay {
    fn prompt(&mut self, text: &str, echo: Echo) -> Option<Secret> {
        let prompt = FromWorker::Prompt {
            echo_off: echo == Echo::Off,
            text: text.to_owned(),
        };
        reply(&self.socket, &prompt).ok()?;
        let (record, _) = wire::recv(self.socket.as_fd()).ok()??;
        match ToWorker::decode(&record).ok()? {
            ToWorker::Answer(answer) => answer,
            _ => None,
        }
    }

    fn info(&mut self, text: &str) {
        let _ = reply(&self.socket, &FromWorker::Info(text.to_owned()));
    }

    fn error(&mut self, text: &str) {
        let _ = reply(&self.socket, &FromWorker::Error(text.to_owned()));
    }
}
