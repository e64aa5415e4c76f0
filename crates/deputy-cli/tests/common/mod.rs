//! A real deputyd for the end-to-end tests: started on a socket of its own with the tests' PAM
//! stack (`deputy-test`), stopped with SIGTERM when dropped. The CLI runs as the test users
//! through setpriv.

#![allow(dead_code, clippy::unwrap_used)]

pub mod kdc;
pub mod tls;
pub mod tmux;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ALICE: &str = "dpt-alice";
pub const BOB: &str = "dpt-bob";

/// True when the test can run (root and the accounts); otherwise says why (failing in CI).
pub fn privileged() -> bool {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let why = if !rustix::process::geteuid().is_root() {
        "it needs root"
    } else if !Path::new("/etc/pam.d/deputy-test").exists() {
        "it needs the test accounts and PAM stack (run scripts/setup)"
    } else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run: {why}; in CI this is a failure, not a skip");
    }
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
    false
}

/// Returns early from a test that cannot run here.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::privileged() {
            return;
        }
    };
}

/// `program` run as `user` (its uid, gid and groups), through setpriv.
pub fn as_user(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid", user, "--regid", user, "--init-groups"])
        .arg(program);
    command
}

/// Runs `command` to completion with `stdin` as its input, collecting its output.
pub fn run_to_end(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The CLI under test: `deputy`, the launcher, which serves the plain `deputy run` lines and
/// hands the others to the full CLI beside it.
pub fn deputy_bin() -> PathBuf {
    built(
        full_cli_bin().with_file_name("deputy"),
        "bash scripts/launcher",
    )
}

/// The full CLI, `deputy-cli`.
pub fn full_cli_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deputy-cli"))
}

/// deputyd, built beside the CLI by `cargo test --workspace`.
pub fn deputyd_bin() -> PathBuf {
    built(
        full_cli_bin().with_file_name("deputyd"),
        "cargo build --workspace --bins",
    )
}

/// `path`, which `how` builds, if it exists (else the test fails, saying how to build it).
fn built(path: PathBuf, how: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: build it first (`{how}`, as scripts/test does)",
        path.display()
    );
    path
}

pub struct Daemon {
    pub process: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
    /// Where its log and audit copy go (DEPUTY_TEST_LOGS), without extension.
    logs: Option<PathBuf>,
    /// Its configuration file (in `dir`).
    pub config: PathBuf,
    env: Vec<(String, PathBuf)>,
}

impl Daemon {
    /// Starts deputyd with `extra` appended to a small test configuration.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with("deputy-test", extra, &[])
    }

    /// As [`Daemon::start`], with the audit log at `audit` and `daemon_extra` in `[daemon]`.
    pub fn start_audited(audit: &Path, daemon_extra: &str) -> Daemon {
        Daemon::start_full("deputy-test", Some(audit), daemon_extra, "", &[])
    }

    /// As [`Daemon::start`], with the PAM service `service` and `env` added to deputyd's
    /// environment.
    pub fn start_with(service: &str, extra: &str, env: &[(&str, &Path)]) -> Daemon {
        Daemon::start_full(service, None, "", extra, env)
    }

    fn start_full(
        service: &str,
        audit: Option<&Path>,
        daemon_extra: &str,
        extra: &str,
        env: &[(&str, &Path)],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("io.deputy");
        let audit = audit.map_or_else(|| dir.path().join("audit.jsonl"), Path::to_owned);
        let config = dir.path().join("deputyd.toml");
        let text = format!(
            "[daemon]\naudit_log = \"{}\"\npam_service = \"{service}\"\n{daemon_extra}\n[logon]\nfail_delay_ms = 100\n\n[sessions]\ngrace_ms = 400\n{extra}",
            audit.display()
        );
        std::fs::write(&config, text).unwrap();
        // With DEPUTY_TEST_LOGS set (scripts/test sets it), every daemon logs at TRACE into that
        // directory and leaves its audit file there too: scripts/test then searches all of
        // them for the test passwords.
        let logs = std::env::var_os("DEPUTY_TEST_LOGS")
            .map(PathBuf::from)
            .map(|dir| dir.join(log_name()));
        let env: Vec<(String, PathBuf)> = env
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.to_path_buf()))
            .collect();
        let process = spawn_deputyd(&config, &socket, &env, logs.as_deref());
        Daemon {
            process,
            dir,
            socket,
            audit,
            logs,
            config,
            env,
        }
    }

    /// As [`Daemon::kill_and_restart`], with `setting` (a `key = value` line) added to the
    /// configuration's `[daemon]` table first.
    pub fn kill_and_restart_with(&mut self, setting: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let changed = config.replacen("[daemon]\n", &format!("[daemon]\n{setting}\n"), 1);
        std::fs::write(&self.config, changed).unwrap();
        self.kill_and_restart();
    }

    /// Kills deputyd with SIGKILL (no shutdown of any kind), then starts it again on the same
    /// socket and configuration.
    pub fn kill_and_restart(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        let _ = std::fs::remove_file(&self.socket);
        let logs = self.logs.as_ref().map(|base| {
            base.with_file_name(format!(
                "{}-restarted",
                base.file_name().unwrap().to_string_lossy()
            ))
        });
        self.process = spawn_deputyd(&self.config, &self.socket, &self.env, logs.as_deref());
    }

    /// The CLI as `user` (None: as root), with `args`.
    pub fn deputy(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut command = match user {
            Some(user) => as_user(user, deputy_bin()),
            None => Command::new(deputy_bin()),
        };
        command.arg("--socket").arg(&self.socket).args(args);
        command
    }

    /// Runs the CLI to completion with `stdin` as its input.
    pub fn run(&self, user: Option<&str>, args: &[&str], stdin: &str) -> Output {
        run_to_end(self.deputy(user, args), stdin)
    }

    /// The audit lines so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The session records deputyd keeps for a successor (state_dir: `sessions` beside the
    /// socket), as JSON.
    pub fn records(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("sessions")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect()
    }

    /// Waits until the records name `count` running processes (a process's pid goes into its
    /// session's record just after the client has it).
    pub fn wait_for_recorded_processes(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let recorded: usize = self
                .records()
                .iter()
                .map(|r| r["processes"].as_array().map_or(0, Vec::len))
                .sum();
            if recorded >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{recorded} processes recorded, not {count}: {:?}",
                self.records()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `deputy sessions --json` as `user`.
    pub fn sessions(&self, user: Option<&str>) -> Vec<serde_json::Value> {
        let out = self.run(user, &["sessions", "--json"], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_raw(self.process.id() as i32).unwrap();
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.process.wait();
        if let Some(base) = &self.logs {
            let _ = std::fs::copy(&self.audit, base.with_extension("audit"));
        }
    }
}

/// Starts deputyd and waits for its socket: logging at TRACE into `logs` (with an extension)
/// when given.
fn spawn_deputyd(
    config: &Path,
    socket: &Path,
    env: &[(String, PathBuf)],
    logs: Option<&Path>,
) -> Child {
    let mut command = Command::new(deputyd_bin());
    command
        .arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(socket)
        .envs(env.iter().map(|(name, value)| (name, value)));
    match logs {
        Some(base) => {
            let log = std::fs::File::create(base.with_extension("log")).unwrap();
            command.args(["--log", "trace"]).stderr(log);
        }
        None => {
            command.args(["--log", "warn"]);
        }
    }
    let process = command.spawn().unwrap();
    wait_for_socket(socket, "deputyd did not create its socket");
    process
}

/// A name for one test daemon's files in DEPUTY_TEST_LOGS: the test, the process, a counter.
fn log_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}",
        std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-"),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits (10 s at most) until `socket` exists.
pub fn wait_for_socket(socket: &Path, failure: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "{failure}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Daemon {
    /// As [`Daemon::kill_and_restart_with`], with `setting` (a `key = value` line) added to the
    /// configuration's `[logon]` table instead.
    pub fn kill_and_restart_with_logon(&mut self, setting: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let changed = config.replacen("[logon]\n", &format!("[logon]\n{setting}\n"), 1);
        std::fs::write(&self.config, changed).unwrap();
        self.kill_and_restart();
    }
}
