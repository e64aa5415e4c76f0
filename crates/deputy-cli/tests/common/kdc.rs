//! A throwaway MIT Kerberos realm on loopback for the Kerberos tests: a KDC database in a
//! temporary directory, principals for the test users (with passwords that differ from their
//! local ones) and a service principal standing for a network resource, and `krb5kdc` running
//! in the foreground on a free port of 127.0.0.1. Everything is found through `KRB5_CONFIG`
//! and `KRB5_KDC_PROFILE`: the host's /etc/krb5.conf is never read or written. Dropping it
//! stops the KDC and removes the realm.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REALM: &str = "DEPUTY.TEST";
/// The "network resource": a service principal with a keytab.
pub const SERVICE: &str = "deputy/resource";
/// Kerberos passwords: not the accounts' local ones (those end in -pw).
pub const ALICE_KRB: &str = "alice-kerberos-secret";
pub const BOB_KRB: &str = "bob-kerberos-secret";

pub struct Kdc {
    pub dir: tempfile::TempDir,
    /// The krb5.conf clients (and pam_krb5) use: KRB5_CONFIG.
    pub config: PathBuf,
    process: Child,
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port free on 127.0.0.1 (for TCP; UDP is not used: udp_preference_limit = 1).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Kdc {
    /// Creates the realm with principals dpt-alice and dpt-bob and the service, and starts the
    /// KDC.
    pub fn start() -> Kdc {
        let dir = tempfile::tempdir().unwrap();
        // Clients run as the test users and read krb5.conf here.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let config = dir.path().join("krb5.conf");
        std::fs::write(
            &config,
            format!(
                "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = false\n dns_lookup_realm = false\n rdns = false\n dns_canonicalize_hostname = false\n udp_preference_limit = 1\n\n[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{port}\n }}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        let profile = dir.path().join("kdc.conf");
        std::fs::write(
            &profile,
            format!(
                "[kdcdefaults]\n kdc_listen = 127.0.0.1:{port}\n kdc_tcp_listen = 127.0.0.1:{port}\n\n[realms]\n {REALM} = {{\n  database_name = {d}/principal\n  key_stash_file = {d}/stash\n  acl_file = {d}/kadm5.acl\n  max_life = 1h\n }}\n\n[logging]\n kdc = FILE:{d}/kdc.log\n"
            ),
        )
        .unwrap();
        let tool = |program: &str| {
            let mut command = Command::new(program);
            command
                .env("KRB5_CONFIG", &config)
                .env("KRB5_KDC_PROFILE", &profile);
            command
        };
        let master: String = format!("master-{}", std::process::id());
        run(tool("kdb5_util").args(["create", "-s", "-r", REALM, "-P", &master]));
        for (principal, password) in [("dpt-alice", ALICE_KRB), ("dpt-bob", BOB_KRB)] {
            let query = format!("addprinc -pw {password} {principal}");
            run(tool("kadmin.local").args(["-q", &query]));
        }
        run(tool("kadmin.local").args(["-q", &format!("addprinc -randkey {SERVICE}")]));
        let keytab = dir.path().join("resource.keytab");
        let query = format!("ktadd -k {} {SERVICE}", keytab.display());
        run(tool("kadmin.local").args(["-q", &query]));
        let process = tool("krb5kdc")
            .arg("-n")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kdc = Kdc {
            dir,
            config,
            process,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "krb5kdc did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        kdc
    }

    /// `KRB5_CONFIG=...` for a command's environment.
    pub fn env(&self) -> String {
        format!("KRB5_CONFIG={}", self.config.display())
    }

    /// kinit as `user` (running as that user) into the cache file `cache`.
    pub fn kinit(&self, user: &str, password: &str, cache: &Path) {
        let mut child = super::as_user(user, "kinit")
            .arg(user)
            .env("KRB5_CONFIG", &self.config)
            .env("KRB5CCNAME", format!("FILE:{}", cache.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success(), "kinit {user}");
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
