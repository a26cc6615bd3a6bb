//! Classic request layouts (PROTOCOL.md §7.3, §7.4): `CAUTH`, the padded
//! `SAUTH` header, and the `S*` envelope (`<WORD> <clen>` NUL-padded to 16
//! bytes, then the ciphertext).

use crate::frame::{self, Status};
use crate::request::{PROTO_OFFSET, RSA_PROTO_OFFSET};

use super::crypto::SessionCipher;

/// The block size cf-agent states in `SGET` (it is not used by the server).
pub const SGET_BLOCKSIZE: u16 = 2048;
/// Plaintext bytes per encrypted `SGET` chunk (`CF_BUFSIZE - 4*CF_INBAND_OFFSET`).
pub const SGET_CHUNK: usize = 4064;

/// `CAUTH <ip> <fqdn> <user> 0` (C0).
pub fn encode_cauth(local_ip: &str, fqdn: &str, user: &str) -> Vec<u8> {
    format!("CAUTH {local_ip} {fqdn} {user} 0").into_bytes()
}

/// `SAUTH <flag> <clen> <nlen> c`, NUL-padded to 24 bytes, then the challenge (C1).
pub fn encode_sauth(known_server_key: bool, challenge: &[u8], nonce_len: usize) -> Vec<u8> {
    let flag = if known_server_key { 'y' } else { 'n' };
    let mut v = format!("SAUTH {flag} {} {nonce_len} c", challenge.len()).into_bytes();
    v.resize(RSA_PROTO_OFFSET, 0);
    v.extend_from_slice(challenge);
    v
}

/// An `S*` command: `word` and the ciphertext length, NUL-padded to 16
/// bytes, then the ciphertext. `SGET` carries `%4d %4d` (length, blocksize).
pub fn encode_encrypted(word: &str, ciphertext: &[u8]) -> Vec<u8> {
    let mut v = if word == "SGET" {
        format!("SGET {:4} {:4}", ciphertext.len(), SGET_BLOCKSIZE).into_bytes()
    } else {
        format!("{word} {}", ciphertext.len()).into_bytes()
    };
    v.resize(PROTO_OFFSET, 0);
    v.extend_from_slice(ciphertext);
    v
}

/// Encrypt `plain` (which must already carry its C terminator) and wrap it
/// as the `word` command.
pub fn seal(word: &str, cipher: &SessionCipher, plain: &[u8]) -> Vec<u8> {
    encode_encrypted(word, &cipher.encrypt(plain))
}

/// One transaction on the wire; `None` for an empty or oversized payload.
pub fn framed(status: Status, payload: &[u8]) -> Option<Vec<u8>> {
    let mut v = Vec::with_capacity(frame::HEADER_LEN + payload.len());
    frame::encode(status, payload, &mut v).ok()?;
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_vectors() {
        assert_eq!(
            encode_cauth("127.0.0.1", "localhost", "root"),
            b"CAUTH 127.0.0.1 localhost root 0"
        );
        let s = encode_sauth(false, &[9; 37], 37);
        assert_eq!(&s[..24], b"SAUTH n 37 37 c\0\0\0\0\0\0\0\0\0");
        assert_eq!(s.len(), 61);
        let g = encode_encrypted("SGET", &[1; 48]);
        assert_eq!(&g[..16], b"SGET   48 2048\0\0");
        assert_eq!(g.len(), 64);
        let y = encode_encrypted("SSYNCH", &[1; 64]);
        assert_eq!(&y[..16], b"SSYNCH 64\0\0\0\0\0\0\0");
        assert_eq!(y.len(), 80);
    }
}
