//! Committed test keys and certificates (see `testdata/README.md`).
//!
//! RSA key generation is slow in debug builds, so tests use fixed keys.

use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::{RsaPrivateKey, RsaPublicKey};
use std::sync::OnceLock;

/// A fixed "current time" for tests: 2026-01-01T00:00:00Z.
pub const TEST_NOW: u64 = 1_767_225_600;

const KEY_PEMS: [&str; 3] = [
    include_str!("testdata/key-a.pem"),
    include_str!("testdata/key-b.pem"),
    include_str!("testdata/key-v1.pem"),
];

/// DER of a CFEngine-shaped X.509 v1 certificate (serial 0, CN=a) for key 2.
pub const V1_CERT_DER: &[u8] = include_bytes!("testdata/cert-v1.der");

/// Test key `i` (0, 1 or 2; key 2 belongs to [`V1_CERT_DER`]).
pub fn test_key(i: usize) -> &'static RsaPrivateKey {
    static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
    &KEYS.get_or_init(|| {
        KEY_PEMS
            .iter()
            .map(|pem| RsaPrivateKey::from_pkcs1_pem(pem).expect("test key fixture parses"))
            .collect()
    })[i]
}

/// The public key inside [`V1_CERT_DER`].
pub fn v1_cert_public_key() -> RsaPublicKey {
    test_key(2).to_public_key()
}
