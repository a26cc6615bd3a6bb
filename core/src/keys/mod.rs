//! Host keys, key ids and the ppkeys trust store, as CFEngine 3.21 has them.
//!
//! * [`parse_private_pem`] / [`parse_public_pem`] read the files `cf-key`
//!   writes (PKCS#1 PEM, `RSA PRIVATE KEY` / `RSA PUBLIC KEY`), including the
//!   legacy private keys encrypted with DES-EDE3-CBC under the fixed
//!   passphrase [`LEGACY_PASSPHRASE`]. [`encode_private_pem`] /
//!   [`encode_public_pem`] write them back byte-for-byte as OpenSSL does.
//! * [`key_id`] computes the host identity (`MD5=<hex>` in Community) exactly
//!   as CFEngine's `HashPubKey`: a digest over the minimal big-endian bytes of
//!   the modulus followed by those of the exponent.
//! * [`ppkeys`] names the files of the trust directory and [`trust`] holds
//!   the lookup / trust-on-first-use logic over a small storage trait
//!   ([`trust::PpkeysDir`]) that adapters implement over a real directory.
//!
//! Every key that comes out of this module has been checked: modulus of at
//! least [`MIN_BITS`] bits (the Debian build of cf-serverd cannot use less:
//! `ee key too small`), at most [`MAX_BITS`] bits (a bound on work and
//! memory), odd exponent of at least 2 bits (CFEngine's own loader check).

pub mod backend;
mod codec;
mod id;
pub mod ppkeys;
pub mod trust;

pub use codec::{
    check_public_key, encode_private_pem, encode_public_pem, generate, modulus_bits,
    parse_private_pem, parse_public_pem, DEFAULT_BITS, LEGACY_PASSPHRASE, MAX_BITS, MAX_PEM_LEN,
    MIN_BITS,
};
pub use id::{key_id, DigestKind, KeyId, KeyIdParseError};

/// Re-exported so that users of this module need no direct `rsa` dependency.
pub use rsa::{RsaPrivateKey, RsaPublicKey};

use thiserror::Error;

/// Why a key could not be read, checked, generated or written.
///
/// The first group of variants means the key material (a file, a peer's
/// certificate) is bad; the last group means the caller asked for something
/// impossible.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The input is larger than any key file CFEngine could have written.
    #[error("input is {len} bytes, more than the {max} bytes a key file can have")]
    InputTooLarge {
        /// Size of the input.
        len: usize,
        /// The limit, [`MAX_PEM_LEN`].
        max: usize,
    },
    /// No PEM block at all (OpenSSL says "no start line").
    #[error("no PEM data found: no start line")]
    NoPem,
    /// The PEM armour is broken: bad base64, bad headers, missing end line.
    #[error("malformed PEM: {0}")]
    BadPem(String),
    /// PEM blocks were found, but none of the kind that was asked for.
    #[error("expected a PEM block '{expected}', found {found}")]
    WrongType {
        /// The block label that would have been accepted.
        expected: &'static str,
        /// The labels actually present, quoted and comma separated.
        found: String,
    },
    /// The DER inside the PEM block is not a valid PKCS#1 RSA key.
    #[error("malformed {what}: {detail}")]
    BadDer {
        /// Which structure was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        detail: String,
    },
    /// The private key is encrypted in a way CFEngine never wrote.
    #[error("unsupported private key encryption: {0}")]
    UnsupportedEncryption(String),
    /// The legacy encrypted key did not decrypt with the CFEngine passphrase
    /// (wrong passphrase or corrupted ciphertext).
    #[error("cannot decrypt the private key with the CFEngine passphrase (bad decrypt)")]
    BadDecrypt,
    /// The modulus is too short to be used with CFEngine 3.21 on OpenSSL 3.
    #[error("RSA key is {bits} bits, at least {min} are required")]
    TooSmall {
        /// Size of the modulus.
        bits: usize,
        /// [`MIN_BITS`].
        min: usize,
    },
    /// The modulus is longer than this implementation accepts.
    #[error("RSA key is {bits} bits, at most {max} are supported")]
    TooLarge {
        /// Size of the modulus.
        bits: usize,
        /// [`MAX_BITS`].
        max: usize,
    },
    /// CFEngine's loader check: exponent even or shorter than 2 bits.
    #[error("RSA exponent too small or not odd")]
    BadExponent,
    /// The components do not form a usable RSA key (e.g. even modulus,
    /// exponent not below the modulus, private parts inconsistent).
    #[error("invalid RSA key: {0}")]
    InvalidKey(String),
    /// Caller error: asked to generate a key of an unsupported size.
    #[error("cannot generate a {bits}-bit key: size must be between {min} and {max} bits")]
    BadKeySize {
        /// Requested size.
        bits: usize,
        /// [`MIN_BITS`].
        min: usize,
        /// [`MAX_BITS`].
        max: usize,
    },
    /// Key generation or encoding failed inside the RSA library.
    #[error("RSA library failure: {0}")]
    Crypto(String),
}
