//! Key ids (`MD5=<hex>`, `SHA=<hex>`), computed as CFEngine's `HashPubKey`.

use core::fmt;
use core::str::FromStr;

use md5::{Digest as _, Md5};
use rsa::traits::PublicKeyParts;
use rsa::RsaPublicKey;
use sha2::Sha256;
use thiserror::Error;

/// Which digest names a host. Community CFEngine uses [`DigestKind::Md5`];
/// Enterprise (FIPS mode) uses SHA-256, printed with the prefix `SHA=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestKind {
    /// MD5, printed `MD5=` + 32 hex digits. The Community default.
    Md5,
    /// SHA-256, printed `SHA=` + 64 hex digits.
    Sha256,
}

impl DigestKind {
    /// The printable prefix including `=`, as in key file names.
    pub fn prefix(self) -> &'static str {
        match self {
            DigestKind::Md5 => "MD5=",
            DigestKind::Sha256 => "SHA=",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            DigestKind::Md5 => 16,
            DigestKind::Sha256 => 32,
        }
    }
}

/// The identity of a host key, e.g. `MD5=77f261c7dc7b706e4450efa7ad1ec700`.
///
/// Displayed exactly as CFEngine prints it (lowercase hex); parsed from the
/// same form (hex digits in either case are accepted and normalised).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    kind: DigestKind,
    digest: Vec<u8>,
}

impl KeyId {
    /// Which digest this id uses.
    pub fn kind(&self) -> DigestKind {
        self.kind
    }

    /// The raw digest bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.prefix())?;
        for b in &self.digest {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a string is not a key id.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyIdParseError {
    /// The string does not start with `MD5=` or `SHA=`.
    #[error("key id must start with 'MD5=' or 'SHA='")]
    BadPrefix,
    /// The hex part has the wrong number of digits for its digest.
    #[error("key id '{prefix}' needs {expected} hex digits, got {got}")]
    BadLength {
        /// The prefix that was found.
        prefix: &'static str,
        /// Hex digits required.
        expected: usize,
        /// Characters found after the prefix.
        got: usize,
    },
    /// A character after the prefix is not a hex digit.
    #[error("key id contains a non-hex character")]
    BadHex,
}

impl FromStr for KeyId {
    type Err = KeyIdParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, hex) = if let Some(h) = s.strip_prefix("MD5=") {
            (DigestKind::Md5, h)
        } else if let Some(h) = s.strip_prefix("SHA=") {
            (DigestKind::Sha256, h)
        } else {
            return Err(KeyIdParseError::BadPrefix);
        };
        if hex.len() != kind.digest_len() * 2 {
            return Err(KeyIdParseError::BadLength {
                prefix: kind.prefix(),
                expected: kind.digest_len() * 2,
                got: hex.chars().count(),
            });
        }
        let bytes = hex.as_bytes();
        let mut digest = Vec::with_capacity(kind.digest_len());
        for pair in bytes.chunks(2) {
            let hi = hex_val(pair[0]).ok_or(KeyIdParseError::BadHex)?;
            let lo = hex_val(pair[1]).ok_or(KeyIdParseError::BadHex)?;
            digest.push(hi << 4 | lo);
        }
        Ok(KeyId { kind, digest })
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The id CFEngine gives `key`: H(BN_bn2bin(n) ‖ BN_bn2bin(e)).
///
/// Both numbers are unsigned, big-endian, minimal length (no sign byte, no
/// length prefix). This is the string used in ppkeys file names, `admit_keys`,
/// `$(connection.key)` and `cf-key -p`, so it must match bit for bit.
pub fn key_id(key: &RsaPublicKey, kind: DigestKind) -> KeyId {
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    let digest = match kind {
        DigestKind::Md5 => {
            let mut h = Md5::new();
            h.update(&n);
            h.update(&e);
            h.finalize().to_vec()
        }
        DigestKind::Sha256 => {
            let mut h = Sha256::new();
            h.update(&n);
            h.update(&e);
            h.finalize().to_vec()
        }
    };
    KeyId { kind, digest }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn parse_and_display_round_trip() {
        let s = "MD5=77f261c7dc7b706e4450efa7ad1ec700";
        let id: KeyId = s.parse().unwrap();
        assert_eq!(id.kind(), DigestKind::Md5);
        assert_eq!(id.to_string(), s);
        let up: KeyId = "MD5=77F261C7DC7B706E4450EFA7AD1EC700".parse().unwrap();
        assert_eq!(up, id);
        let sha = format!("SHA={}", "ab".repeat(32));
        assert_eq!(sha.parse::<KeyId>().unwrap().to_string(), sha);
    }

    #[test]
    fn parse_errors() {
        assert_eq!("77f2".parse::<KeyId>(), Err(KeyIdParseError::BadPrefix));
        assert!(matches!(
            "MD5=77f2".parse::<KeyId>(),
            Err(KeyIdParseError::BadLength {
                expected: 32,
                got: 4,
                ..
            })
        ));
        assert_eq!(
            format!("MD5={}", "g".repeat(32)).parse::<KeyId>(),
            Err(KeyIdParseError::BadHex)
        );
        // Multi-byte characters must not panic the slicing.
        assert!(format!("MD5={}", "é".repeat(16)).parse::<KeyId>().is_err());
    }

    #[quickcheck]
    fn any_digest_round_trips(bytes: Vec<u8>, sha: bool) -> bool {
        let kind = if sha {
            DigestKind::Sha256
        } else {
            DigestKind::Md5
        };
        let mut digest = bytes;
        digest.resize(kind.digest_len(), 7);
        let id = KeyId { kind, digest };
        id.to_string().parse::<KeyId>() == Ok(id)
    }

    #[quickcheck]
    fn parsing_never_panics(s: String) -> bool {
        let _ = s.parse::<KeyId>();
        let _ = format!("MD5={s}").parse::<KeyId>();
        true
    }
}
