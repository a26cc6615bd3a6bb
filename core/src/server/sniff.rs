//! Classic or TLS, from a connection's first bytes (cf-serverd peeks the
//! same way before it picks a protocol loop).
//!
//! A TLS client speaks first with a handshake record (`0x16`); a classic
//! client's first transaction is `CAUTH`, whose 8-byte header puts the word
//! at offset 8. Anything else of full length is handed to TLS, which
//! refuses it in its own way, as 3.21 does.

/// Bytes to peek before [`sniff`] can always decide.
pub const SNIFF_LEN: usize = 14;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protocol v1, `CAUTH`/`SAUTH` (PROTOCOL.md §7).
    Classic,
    /// TLS (protocol v2 and later).
    Tls,
}

/// The protocol of a connection whose first bytes are `first` (at most
/// [`SNIFF_LEN`] are looked at), or `None` when too few arrived to tell:
/// peek again. A peer that stays short for good is classic: see
/// [`SHORT_FIRST_SEGMENT`].
#[must_use]
pub fn sniff(first: &[u8]) -> Option<Protocol> {
    match first {
        [0x16, ..] => Some(Protocol::Tls),
        f if f.len() >= SNIFF_LEN => Some(if &f[8..13] == b"CAUTH" {
            Protocol::Classic
        } else {
            Protocol::Tls
        }),
        _ => None,
    }
}

/// What a first segment shorter than [`SNIFF_LEN`] that is not a TLS
/// record is taken for, once the peer has had its grace period to send
/// more: an old client that sent a short transaction.
pub const SHORT_FIRST_SEGMENT: Protocol = Protocol::Classic;

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn tls_record_classic_cauth_and_the_rest() {
        assert_eq!(sniff(&[0x16, 3, 1]), Some(Protocol::Tls));
        assert_eq!(sniff(b"t 12    CAUTH 127.0.0.1"), Some(Protocol::Classic));
        assert_eq!(sniff(b"t 12    SAUTH 127.0.0.1"), Some(Protocol::Tls));
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Some(Protocol::Tls));
        assert_eq!(sniff(b"t 12    CAUT"), None);
        assert_eq!(sniff(b""), None);
    }

    /// Whatever the bytes, sniffing never panics, decides at full length,
    /// and only ever looks at the first SNIFF_LEN bytes.
    #[quickcheck]
    fn decides_at_full_length_on_the_prefix_only(bytes: Vec<u8>) -> bool {
        let r = sniff(&bytes);
        let full = bytes.len() >= SNIFF_LEN;
        if !full {
            return true;
        }
        r.is_some() && r == sniff(&bytes[..SNIFF_LEN])
    }
}
