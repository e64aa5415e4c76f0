//! A real deputyd for the end-to-end tests: started on a socket of its own with the tests' PAM
//! stack (`deputy-test`), stopped with SIGTERM when dropped. The CLI runs as the test users
//! through setpriv.

#![allow(dead_code, clippy::unwrap_used)]

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

/// The CLI under test.
pub fn deputy_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deputy"))
}

/// deputyd, built beside the CLI by `cargo test --workspace`.
pub fn deputyd_bin() -> PathBuf {
    let path = deputy_bin().with_file_name("deputyd");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

pub struct Daemon {
    pub process: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
}

impl Daemon {
    /// Starts deputyd with `extra` appended to a small test configuration.
    pub fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("io.deputy");
        let audit = dir.path().join("audit.jsonl");
        let config = dir.path().join("deputyd.toml");
        let text = format!(
            "[daemon]\naudit_log = \"{}\"\npam_service = \"deputy-test\"\n\n[logon]\nfail_delay_ms = 100\n\n[sessions]\ngrace_ms = 400\n{extra}",
            audit.display()
        );
        std::fs::write(&config, text).unwrap();
        let process = Command::new(deputyd_bin())
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--log")
            .arg("warn")
            .spawn()
            .unwrap();
        wait_for_socket(&socket, "deputyd did not create its socket");
        Daemon {
            process,
            dir,
            socket,
            audit,
        }
    }

    /// The CLI as `user` (None: as root), with `args`.
    pub fn deputy(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut command = match user {
            Some(user) => {
                let mut command = Command::new("setpriv");
                command
                    .args(["--reuid", user, "--regid", user, "--init-groups"])
                    .arg(deputy_bin());
                command
            }
            None => Command::new(deputy_bin()),
        };
        command.arg("--socket").arg(&self.socket).args(args);
        command
    }

    /// Runs the CLI to completion with `stdin` as its input.
    pub fn run(&self, user: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .deputy(user, args)
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

    /// The audit lines so far.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
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
    }
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
