//! Errors of the TLS layer, split by whose fault they are.
//!
//! [`PeerError`] is what the remote end did (or failed to do); a server
//! logs it and drops the connection, nothing more. [`TlsError`] adds the
//! failures that come from our own side: a host key rustls cannot use, a
//! configuration that leaves nothing to negotiate, a driver that broke the
//! run-loop contract. Those are bugs or operator mistakes and deserve a
//! louder log line.

use std::fmt;

/// Something the peer did wrong, or a handshake the peer and we could not
/// agree on.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// The peer sent a fatal TLS alert (for example `handshake_failure`).
    #[error("peer sent TLS alert {0}")]
    AlertReceived(String),
    /// The peer's certificate is not X.509 we can parse.
    #[error("peer certificate is not parsable X.509: {0}")]
    BadCertificate(String),
    /// The peer's certificate carries a key that is not RSA; CFEngine peers
    /// always use RSA host keys, so the peer cannot be authenticated.
    #[error("peer certificate key is not RSA (algorithm {0}); CFEngine host keys must be RSA")]
    NonRsaKey(String),
    /// The peer presented no certificate; CFEngine requires mutual authentication.
    #[error("peer did not present a certificate (CFEngine requires one in both directions)")]
    NoCertificate,
    /// A handshake signature did not verify against the key in the peer's certificate.
    #[error("peer handshake signature is invalid: {0}")]
    BadSignature(String),
    /// The peer offered nothing we accept (versions, cipher suites, groups, signature schemes).
    #[error("no common TLS parameters with peer: {0}")]
    Incompatible(String),
    /// The peer violated the TLS protocol (malformed or unexpected messages, bad MAC, ...).
    #[error("TLS protocol violation by peer: {0}")]
    Protocol(String),
    /// The TCP stream ended before the TLS handshake completed.
    #[error("connection closed by peer during the TLS handshake")]
    EofDuringHandshake,
}

/// Any failure of the TLS layer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The peer is at fault; see [`PeerError`].
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The host RSA key could not be turned into a certificate or a rustls signing key.
    #[error("host key unusable for TLS: {0}")]
    HostKey(String),
    /// Our TLS settings leave nothing to negotiate; every handshake is refused.
    /// The string names the offending setting (e.g. `allowciphers`).
    #[error("TLS handshake refused: {0}")]
    Unusable(String),
    /// rustls rejected a configuration we built (a bug in this module).
    #[error("internal TLS configuration error: {0}")]
    Config(String),
    /// The driver fed more ciphertext than the layer may buffer without first
    /// draining plaintext (it ignored [`super::TlsLayer::wants_input`]).
    #[error("TLS input buffer overflow: {0} bytes pending; drain plaintext before feeding more")]
    InputOverflow(usize),
    /// The connection already failed or was closed; no further use is possible.
    #[error("TLS connection is closed")]
    Closed,
}

impl TlsError {
    /// True when the remote end is to blame (log at verbose/info, drop the
    /// connection); false for local mistakes (log as an error).
    pub fn is_peer_error(&self) -> bool {
        matches!(self, TlsError::Peer(_))
    }
}

/// Our verifier errors travel through rustls as
/// `CertificateError::Other`; this wrapper lets us recognise them again.
#[derive(Debug)]
pub(crate) struct VerifierError(pub PeerError);

impl fmt::Display for VerifierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for VerifierError {}

/// Classifies a rustls error from `process_new_packets` or a connection
/// constructor. Everything rustls reports while processing peer bytes is the
/// peer's doing, except `General`/`Other`, which rustls uses for local
/// misconfiguration too; those are still surfaced as peer errors because
/// they only happen in reaction to a specific peer's messages.
pub(crate) fn from_rustls(err: rustls::Error) -> TlsError {
    use rustls::{CertificateError, Error as E};
    let peer = match err {
        E::AlertReceived(a) => PeerError::AlertReceived(alert_name(a)),
        E::NoCertificatesPresented => PeerError::NoCertificate,
        E::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<VerifierError>() {
                Some(v) => v.0.clone(),
                None => PeerError::BadCertificate(other.to_string()),
            }
        }
        E::InvalidCertificate(CertificateError::BadSignature) => {
            PeerError::BadSignature("signature does not verify".into())
        }
        E::InvalidCertificate(c) => PeerError::BadCertificate(format!("{c:?}")),
        E::PeerIncompatible(p) => PeerError::Incompatible(format!("{p:?}")),
        E::PeerMisbehaved(p) => PeerError::Protocol(format!("{p:?}")),
        E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::InvalidMessage(_)
        | E::DecryptError
        | E::InvalidEncryptedClientHello(_) => PeerError::Protocol(err.to_string()),
        other => PeerError::Protocol(other.to_string()),
    };
    TlsError::Peer(peer)
}

/// The alert name as OpenSSL prints it (`handshake_failure`, ...).
pub(crate) fn alert_name(a: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    let s = match a {
        A::CloseNotify => "close_notify",
        A::UnexpectedMessage => "unexpected_message",
        A::BadRecordMac => "bad_record_mac",
        A::RecordOverflow => "record_overflow",
        A::HandshakeFailure => "handshake_failure",
        A::BadCertificate => "bad_certificate",
        A::UnsupportedCertificate => "unsupported_certificate",
        A::CertificateRevoked => "certificate_revoked",
        A::CertificateExpired => "certificate_expired",
        A::CertificateUnknown => "certificate_unknown",
        A::IllegalParameter => "illegal_parameter",
        A::UnknownCA => "unknown_ca",
        A::AccessDenied => "access_denied",
        A::DecodeError => "decode_error",
        A::DecryptError => "decrypt_error",
        A::ProtocolVersion => "protocol_version",
        A::InsufficientSecurity => "insufficient_security",
        A::InternalError => "internal_error",
        A::InappropriateFallback => "inappropriate_fallback",
        A::UserCanceled => "user_canceled",
        A::NoRenegotiation => "no_renegotiation",
        A::MissingExtension => "missing_extension",
        A::UnsupportedExtension => "unsupported_extension",
        A::UnrecognisedName => "unrecognized_name",
        A::CertificateRequired => "certificate_required",
        A::NoApplicationProtocol => "no_application_protocol",
        other => return format!("{other:?}"),
    };
    s.to_string()
}
