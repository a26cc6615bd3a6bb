//! TLS for CFEngine's protocol v2/v3 (PROTOCOL.md §6), on rustls 0.23 with
//! the aws-lc-rs provider, without any I/O.
//!
//! * [`settings`]: `allowciphers`/`allowtlsversion` (server) and
//!   `tls_ciphers`/`tls_min_version` (client) mapped onto rustls, with
//!   warnings for what rustls cannot do (static RSA, CBC, DHE, TLS < 1.2).
//! * [`cert`]: the self-signed `CN=a` certificate made from the host key,
//!   and reading the RSA key out of any peer certificate (X.509 v1 too).
//! * [`verify`]: certificate verifiers that accept any RSA certificate and
//!   check handshake signatures against its key; trust is decided after the
//!   handshake against ppkeys, by the caller.
//! * [`config`]: rustls `ServerConfig`/`ClientConfig` builders.
//! * [`layer`]: [`TlsLayer`], a byte-in/byte-out connection with record
//!   control, EOF semantics and back-pressure suited to CFEngine peers.
//!
//! Time is an input ([`TlsClock`]); the only randomness is what rustls and
//! aws-lc draw internally for handshake randoms, key shares, PSS salts and
//! RSA blinding (see [`layer`]).

//! # Differences from cf-serverd / cf-agent 3.21 (deliberate)
//! * TLS 1.2 static-RSA, CBC and DHE suites (cf-serverd's default TLS 1.2
//!   pair `AES256-GCM-SHA384:AES256-SHA` included) and TLS 1.0/1.1 are not
//!   implemented by rustls: reported as warnings, never negotiated.
//! * A cipher list 3.21 refuses (`No valid ciphers in the cipher list`)
//!   makes cf-serverd exit without listening; we listen and answer every
//!   ClientHello with `handshake_failure` ([`ServerTls::Refusing`]).
//! * Our certificate is X.509 v3 (rcgen), not v1; real cf-net and
//!   cf-serverd accept it (tested live in `conformance/tests/interop_tls.rs`).
//! * Our server sends no TLS 1.3 NewSessionTicket; cf-serverd sends two that
//!   can never be used.

pub mod cert;
pub mod config;
pub mod error;
pub mod layer;
pub mod settings;
pub mod verify;

#[cfg(test)]
pub(crate) mod test_keys;
#[cfg(test)]
mod tests;

pub use cert::{make_certificate, rsa_public_key_from_cert, HostCertificate};
pub use config::{
    client_config, client_config_with_cert, server_config, server_config_with_cert, TlsClock,
};
pub use error::{PeerError, TlsError};
pub use layer::{EofKind, Negotiated, ReadStatus, ServerTls, TlsLayer, MAX_RECORD_PLAINTEXT};
pub use settings::{Role, TlsSettings, TlsVersion, TlsWarning, TlsWarningKind};
pub use verify::{CfeClientCertVerifier, CfeServerCertVerifier};
