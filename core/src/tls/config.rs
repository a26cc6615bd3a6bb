//! rustls configurations for cf-serverd-like servers and cf-agent-like clients.

use std::sync::Arc;
use std::time::Duration;

use rsa::RsaPrivateKey;
use rustls::client::Resumption;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::server::NoServerSessionStorage;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, ServerConfig};

use super::cert::{make_certificate, HostCertificate};
use super::error::TlsError;
use super::settings::TlsSettings;
use super::verify::{CfeClientCertVerifier, CfeServerCertVerifier};

/// The wall-clock time rustls sees, fixed when the driver builds its
/// configurations (rcf-core has no clock, and keeps no shared mutable time).
///
/// It dates our self-signed certificates. rustls only consults it otherwise
/// for certificate-validity arguments our verifiers ignore and for
/// session-ticket ages (resumption is off on both sides), so a value that
/// goes stale while a configuration lives is harmless.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsClock(u64);

impl TlsClock {
    /// A clock reading `unix_secs`.
    pub fn new(unix_secs: u64) -> Self {
        TlsClock(unix_secs)
    }

    /// Its value, seconds since the epoch.
    pub fn get(&self) -> u64 {
        self.0
    }
}

impl TimeProvider for TlsClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(Duration::from_secs(self.get())))
    }
}

/// The aws-lc-rs provider restricted to `settings`' suites, with the key
/// exchange groups OpenSSL 3.0 offers by default (X25519 first, as cf-serverd
/// negotiates). The post-quantum hybrid groups are left out so a ClientHello
/// stays small and the choice does not depend on cargo feature unification.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut p = aws_lc_rs::default_provider();
    p.cipher_suites = settings.suites();
    p.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    p
}

/// What both configurations start from: the restricted provider and our
/// certificate with its rustls signing key. Refuses unusable settings.
fn provider_and_key(
    cert: &HostCertificate,
    settings: &TlsSettings,
) -> Result<(Arc<CryptoProvider>, Arc<rustls::sign::CertifiedKey>), TlsError> {
    if let Some(why) = settings.unusable_reason() {
        return Err(TlsError::Unusable(why.to_string()));
    }
    let provider = Arc::new(provider(settings));
    let signing_key = provider
        .key_provider
        .load_private_key(cert.key.clone_key())
        .map_err(|e| TlsError::HostKey(format!("rustls cannot load RSA key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(vec![cert.cert.clone()], signing_key);
    Ok((provider, Arc::new(certified)))
}

/// Server configuration: mandatory RSA client certificate (any, v1
/// included), no session resumption (cf-serverd never resumes), no
/// tickets, no early data. The certificate is made from `key`, valid from
/// `clock`'s current time.
///
/// Unusable settings are an error here ([`TlsError::Unusable`]); a server
/// that must keep listening uses [`super::ServerTls`], which turns them
/// into per-connection refusals.
pub fn server_config(
    key: &RsaPrivateKey,
    settings: &TlsSettings,
    clock: &TlsClock,
) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = make_certificate(key, clock.get())?;
    server_config_with_cert(&cert, settings, clock)
}

/// [`server_config`] with a certificate made beforehand (lets a process make
/// one certificate for both its server and client roles, or tests present
/// unusual certificates).
pub fn server_config_with_cert(
    cert: &HostCertificate,
    settings: &TlsSettings,
    clock: &TlsClock,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (provider, certified) = provider_and_key(cert, settings)?;
    let mut cfg = ServerConfig::builder_with_details(provider, Arc::new(*clock))
        .with_protocol_versions(&settings.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(CfeClientCertVerifier::new()))
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    cfg.send_tls13_tickets = 0;
    cfg.max_early_data_size = 0;
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// Client configuration: presents our certificate, accepts any server
/// certificate with an RSA key (trust is checked after the handshake), no
/// SNI, no resumption. Unusable settings are an error: a client has no
/// reason to connect at all.
pub fn client_config(
    key: &RsaPrivateKey,
    settings: &TlsSettings,
    clock: &TlsClock,
) -> Result<Arc<ClientConfig>, TlsError> {
    let cert = make_certificate(key, clock.get())?;
    client_config_with_cert(&cert, settings, clock)
}

/// [`client_config`] with a certificate made beforehand.
pub fn client_config_with_cert(
    cert: &HostCertificate,
    settings: &TlsSettings,
    clock: &TlsClock,
) -> Result<Arc<ClientConfig>, TlsError> {
    let (provider, certified) = provider_and_key(cert, settings)?;
    let mut cfg = ClientConfig::builder_with_details(provider, Arc::new(*clock))
        .with_protocol_versions(&settings.versions())
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CfeServerCertVerifier::new()))
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    cfg.enable_sni = false;
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}
