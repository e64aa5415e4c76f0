//! Remote clients: a TLS listener (`[remote]`), off unless configured, speaking the same
//! Varlink API as the Unix socket. There is no plaintext mode.
//!
//! ```text
//!  accept ──▶ limits (total, per address, not yet logged on) ──▶ TLS handshake (timeout)
//!         ──▶ client certificate name (mutual TLS), allowed_clients
//!         ──▶ server::serve_calls: first request within the handshake timeout
//!         ──▶ at the end: every session of the connection is ended
//! ```
//!
//! A remote peer has no kernel identity: only Logon (password) and CreateProcess in that
//! session exist for it; everything that acts as a local caller is refused by name
//! (`NoPeerIdentity`). Its failed logons count against its address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::Remote;
use crate::server::{Caller, Client, Daemon, RemotePeer, serve_calls};
use crate::socket::Bounded;

/// The listener, ready to accept.
pub struct Listener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    config: Remote,
    counts: Arc<Counts>,
}

/// Open connections: in total, per address, and those not yet logged on.
#[derive(Default)]
struct Counts {
    inner: Mutex<CountsInner>,
    next_id: AtomicU64,
}

#[derive(Default)]
struct CountsInner {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    unauthenticated: usize,
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, CountsInner> {
    counts
        .inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection counted in the totals, given back on drop.
struct Admitted {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut inner = lock(&self.counts);
        inner.total -= 1;
        if let Some(held) = inner.per_address.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                inner.per_address.remove(&self.ip);
            }
        }
    }
}

/// A connection that has not logged a user on yet, counted against
/// `remote.max_unauthenticated` until it is dropped (at its first logon, or its end).
pub struct Unauthenticated(Arc<Counts>);

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        lock(&self.0).unauthenticated -= 1;
    }
}

impl Counts {
    /// Counts a new connection from `ip`, or names the limit it is over.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        config: &Remote,
    ) -> Result<(Admitted, Unauthenticated), &'static str> {
        let mut inner = lock(self);
        if inner.total >= config.max_connections {
            return Err("remote.max_connections");
        }
        if inner.per_address.get(&ip).copied().unwrap_or(0) >= config.max_connections_per_address {
            return Err("remote.max_connections_per_address");
        }
        if inner.unauthenticated >= config.max_unauthenticated {
            return Err("remote.max_unauthenticated");
        }
        inner.total += 1;
        *inner.per_address.entry(ip).or_default() += 1;
        inner.unauthenticated += 1;
        Ok((
            Admitted {
                counts: self.clone(),
                ip,
            },
            Unauthenticated(self.clone()),
        ))
    }
}

/// Builds the TLS configuration and binds the listener: before the Unix socket exists, so
/// that a client who sees the socket finds the port ready too.
///
/// # Errors
/// A certificate, key or CA that cannot be read or used, or an address that cannot be bound,
/// named.
pub async fn bind(config: &Remote) -> Result<Option<Listener>, String> {
    let Some(listen) = &config.listen else {
        return Ok(None);
    };
    let tls = server_config(config)?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("remote.listen: cannot listen on {listen}: {e}"))?;
    Ok(Some(Listener {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        config: config.clone(),
        counts: Arc::default(),
    }))
}

impl Listener {
    /// The address it listens on.
    pub fn address(&self) -> String {
        self.tcp
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    }
}

/// Every PEM block of type `T` in `path`, at least one: `what` names it in the error, which
/// names the setting `remote.{key}`.
fn read_pem<T: PemObject>(key: &str, what: &str, path: &Path) -> Result<Vec<T>, String> {
    let blocks = T::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("remote.{key}: cannot read {}: {e}", path.display()))?;
    if blocks.is_empty() {
        return Err(format!(
            "remote.{key}: {} holds no PEM {what}",
            path.display()
        ));
    }
    Ok(blocks)
}

fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    read_pem(key, "certificate", path)
}

/// The revocation lists in `paths` (PEM; a file may hold several).
fn read_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut crls = Vec::new();
    for path in paths {
        crls.extend(read_pem("client_crl", "revocation list (X509 CRL)", path)?);
    }
    Ok(crls)
}

/// The server's TLS configuration: TLS 1.3 (and 1.2 if configured), its certificate, and
/// client certificates verified against `client_ca` when set, and against the revocation
/// lists in `client_crl`.
fn server_config(config: &Remote) -> Result<rustls::ServerConfig, String> {
    let (Some(certificate), Some(key)) = (&config.certificate, &config.key) else {
        return Err("remote.listen needs remote.certificate and remote.key".into());
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if config.tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("remote: {e}"))?;
    let builder = match &config.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in read_certificates("client_ca", path)? {
                roots
                    .add(ca)
                    .map_err(|e| format!("remote.client_ca: {}: {e}", path.display()))?;
            }
            // With revocation lists, rustls checks every certificate of the chain and refuses
            // one whose status it cannot know (no CRL of its issuer): the strict defaults.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .with_crls(read_crls(&config.client_crl)?)
            .build()
            .map_err(|e| format!("remote.client_ca and remote.client_crl: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = read_certificates("certificate", certificate)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "remote.key: cannot read a private key from {}: {e}",
            key.display()
        )
    })?;
    builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("remote.certificate and remote.key: {e}"))
}

/// The names a client certificate gives its holder: its DNS subjectAltNames, then its
/// subject's common name.
fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    names.extend(
        certificate
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
    );
    names
}

/// Accepts connections until the daemon stops.
pub async fn serve(daemon: Arc<Daemon>, listener: Listener) {
    let listener = Arc::new(listener);
    loop {
        match listener.tcp.accept().await {
            Ok((tcp, address)) => {
                tokio::spawn(connection(daemon.clone(), listener.clone(), tcp, address));
            }
            Err(err) => {
                // EMFILE and the like: back off instead of spinning.
                tracing::warn!("remote accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One remote connection: limits, handshake, calls, and its sessions ended at its end.
async fn connection(
    daemon: Arc<Daemon>,
    listener: Arc<Listener>,
    tcp: TcpStream,
    address: SocketAddr,
) {
    let refused = |reason: String| {
        let request = daemon.audit.request_id();
        daemon.audit.record(
            "connection_refused",
            &request,
            json!({"remote": address.to_string(), "reason": reason}),
        );
    };
    let config = &listener.config;
    let (admitted, unauthenticated) = match listener.counts.admit(address.ip(), config) {
        Ok(admitted) => admitted,
        // Closed at once: a client over a limit gets no handshake to spend time on.
        Err(limit) => return refused(format!("over {limit}")),
    };
    let _ = tcp.set_nodelay(true);
    let timeout = config.handshake_timeout();
    // A connection refused from here on is no longer counted once its refusal is audited.
    let tls = match tokio::time::timeout(timeout, listener.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            drop((admitted, unauthenticated));
            return refused(format!("TLS handshake failed: {err}"));
        }
        Err(_) => {
            drop((admitted, unauthenticated));
            return refused(format!(
                "no TLS handshake within {} s",
                config.handshake_timeout_secs
            ));
        }
    };
    let names = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|leaf| certificate_names(leaf))
        .unwrap_or_default();
    let client_cert = names.first().cloned();
    if !config.allowed_clients.is_empty()
        && !names
            .iter()
            .any(|name| config.allowed_clients.contains(name))
    {
        drop((admitted, unauthenticated));
        return refused(format!(
            "client certificate {} is not in remote.allowed_clients",
            client_cert.as_deref().unwrap_or("(no name)")
        ));
    }
    let peer = Arc::new(RemotePeer {
        connection: listener.counts.next_id.fetch_add(1, Ordering::Relaxed),
        address,
        client_cert,
    });
    let socket = Bounded::tls(tls);
    let client = Client {
        lift: socket.lift(),
        conn: zlink::Connection::new(socket),
        caller: Caller::Remote(peer.clone()),
        pending: None,
        in_flight: None,
        starting: None,
        unauthenticated: Some(unauthenticated),
    };
    serve_calls(&daemon, client, timeout).await;
    drop(admitted);
    // The connection's sessions are its own: they end with it.
    for session in daemon.sessions.all() {
        if session
            .remote
            .as_ref()
            .is_some_and(|origin| origin.connection == peer.connection)
            && let Some(ended) =
                crate::sessions::end(&daemon.sessions, &session.id, daemon.grace()).await
        {
            crate::methods::audit_ended(
                &daemon,
                &daemon.audit.request_id(),
                &ended,
                "its remote connection closed",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_and_given_back() {
        let counts = Arc::new(Counts::default());
        let config = Remote {
            max_connections: 3,
            max_connections_per_address: 2,
            max_unauthenticated: 2,
            ..Remote::default()
        };
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = counts.admit(a, &config).expect("first");
        let second = counts.admit(a, &config).expect("second");
        assert_eq!(
            counts.admit(a, &config).err(),
            Some("remote.max_connections_per_address")
        );
        assert_eq!(
            counts.admit(b, &config).err(),
            Some("remote.max_unauthenticated")
        );
        // Logged on: no longer unauthenticated.
        drop(first.1);
        let third = counts.admit(b, &config).expect("third");
        drop(second.1);
        assert_eq!(
            counts.admit(b, &config).err(),
            Some("remote.max_connections")
        );
        drop((first.0, second.0, third));
        let inner = lock(&counts);
        assert_eq!((inner.total, inner.unauthenticated), (0, 0));
        assert!(inner.per_address.is_empty());
    }
}
