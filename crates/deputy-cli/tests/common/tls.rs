//! What the remote (TLS) tests need besides a daemon: certificates made afresh by each test with
//! rcgen (a CA; a server certificate it signed for `localhost` and `127.0.0.1`; a client
//! certificate it signed for `ci-agent-1`; a second CA that signed nothing of ours), a free
//! loopback port, a deputyd with a `[remote]` listener on it, and the CLI pointed at it, run
//! to completion within a time limit.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber, date_time_ymd,
};

use super::Daemon;

/// The name in the client certificate (its DNS subjectAltName and its subject CN).
pub const CLIENT_NAME: &str = "ci-agent-1";

/// A test PKI in a directory of its own: every path is a PEM file.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's certificate: DNS `localhost`, IP `127.0.0.1`.
    pub server_cert: PathBuf,
    /// Its private key (PKCS#8).
    pub server_key: PathBuf,
    /// A client certificate: DNS `ci-agent-1`, CN `ci-agent-1`.
    pub client_cert: PathBuf,
    /// Its private key (PKCS#8).
    pub client_key: PathBuf,
    /// A CA unrelated to the others.
    pub other_ca: PathBuf,
    /// A revocation list of the CA that revokes the client certificate.
    pub crl_revoking_client: PathBuf,
    /// A revocation list of the CA that revokes another serial number only.
    pub crl_revoking_another: PathBuf,
    /// A revocation list of the CA that revokes the server certificate.
    pub crl_revoking_server: PathBuf,
}

/// The client certificate's serial number.
const CLIENT_SERIAL: u64 = 0x2a;
/// The server certificate's serial number.
const SERVER_SERIAL: u64 = 0x51;

/// A revocation list signed by `issuer` that revokes `serial`.
fn crl_revoking(issuer: &Issuer<'_, KeyPair>, serial: u64, number: u64) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2100, 1, 1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(serial),
            revocation_time: date_time_ymd(2025, 1, 1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .pem()
    .unwrap()
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = named(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(
    names: &[&str],
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name = named(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params
}

impl Pki {
    /// Makes the certificates and keys and writes them out.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };

        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("deputy test CA");
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server = leaf_params(
            &["localhost", "127.0.0.1"],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        server.serial_number = Some(SerialNumber::from(SERVER_SERIAL));
        let server = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = leaf_params(
            &[CLIENT_NAME],
            CLIENT_NAME,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        client.serial_number = Some(SerialNumber::from(CLIENT_SERIAL));
        let client = client.signed_by(&client_key, &issuer).unwrap();

        let other_key = KeyPair::generate().unwrap();
        let other = ca_params("another CA").self_signed(&other_key).unwrap();

        Pki {
            ca: write("ca.pem", ca_pem),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            other_ca: write("other-ca.pem", other.pem()),
            crl_revoking_client: write(
                "revokes-client.crl",
                crl_revoking(&issuer, CLIENT_SERIAL, 1),
            ),
            crl_revoking_another: write(
                "revokes-another.crl",
                crl_revoking(&issuer, CLIENT_SERIAL + 1, 2),
            ),
            crl_revoking_server: write(
                "revokes-server.crl",
                crl_revoking(&issuer, SERVER_SERIAL, 3),
            ),
            dir,
        }
    }
}

/// A loopback port nobody listens on (bound, read, released: free unless someone takes it in
/// the meantime).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts deputyd with a TLS listener on a free loopback port using `pki`'s server certificate:
/// `remote_extra` (`key = value` lines) goes into the `[remote]` table, `extra` (more tables)
/// after it. deputyd binds the port before it creates its socket, so the port is ready when
/// this returns. Returns the daemon and the port.
pub fn start_remote(pki: &Pki, remote_extra: &str, extra: &str) -> (Daemon, u16) {
    let port = free_port();
    let daemon = Daemon::start(&format!(
        "\n[remote]\nlisten = \"127.0.0.1:{port}\"\ncertificate = \"{}\"\nkey = \"{}\"\n{remote_extra}\n{extra}",
        pki.server_cert.display(),
        pki.server_key.display(),
    ));
    (daemon, port)
}

/// The CLI (as root: the daemon sees only a TLS client) talking to `127.0.0.1:port`, trusting
/// `ca` for the server's certificate, with `args` (more global options, then the command).
pub fn remote_cli(port: u16, ca: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(super::deputy_bin());
    command
        .arg("--remote")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--ca")
        .arg(ca)
        .args(args);
    command
}

/// Runs `command` with `stdin` as its input and its output collected; kills it and fails if it
/// has not finished within `limit`.
pub fn output_within(mut command: Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A command that stops reading early makes this write fail: that is its business.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = output_within_child(child, limit);
    writer.join().unwrap();
    output
}

/// Collects the output of `child` (spawned with piped stdout and stderr) and waits for it;
/// kills it and fails if it has not finished within `limit`.
pub fn output_within_child(mut child: Child, limit: Duration) -> Output {
    let collect = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
