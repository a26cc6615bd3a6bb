//! The classic protocol's cryptographic building blocks (PROTOCOL.md §7.1,
//! §7.4): OpenSSL MPI encoding, the 256-bit nonces, MD5 challenge digests,
//! RSA PKCS#1 v1.5, and the per-message Blowfish-CBC session cipher with
//! the fixed IV `01..08`.
//!
//! # Marvin
//! Every RSA *decryption* in the classic code goes through the one function
//! [`rsa_decrypt`]. The `rsa` crate's PKCS#1 v1.5 decryption is not
//! constant-time (RUSTSEC-2023-0071, the "Marvin" timing attack), so this
//! single point is where a constant-time implementation can be swapped in.

use md5::{Digest as _, Md5};
use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};

/// Bits of a classic nonce (`CF_NONCELEN`).
pub const NONCE_BITS: usize = 256;
/// Length of a nonce's MPI encoding: 4-byte length, a sign byte, 32 bytes.
pub const NONCE_MPI_LEN: usize = 37;
/// Length of the Community session key (`CF_BLOWFISHSIZE`).
pub const SESSION_KEY_LEN: usize = 16;
/// Length of an MD5 digest, the classic challenge digest.
pub const DIGEST_LEN: usize = 16;
/// The Blowfish block size; ciphertexts are multiples of it.
pub const BLOCK: usize = 8;
/// The fixed IV of every classic message (first 8 bytes of a 32-byte constant).
pub const IV: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
/// Largest MPI body accepted from a peer (a 4096-bit number plus sign byte).
pub const MAX_MPI_BODY: usize = 513;

/// What can go wrong in the classic crypto layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// An MPI shorter than its 4-byte length prefix, or whose prefix disagrees with its size.
    #[error("malformed MPI ({0} bytes)")]
    MpiLength(usize),
    /// An MPI with the sign bit set (a negative number where a key part was expected).
    #[error("negative MPI")]
    MpiNegative,
    /// An MPI larger than any key part this implementation accepts.
    #[error("MPI too large ({0} bytes)")]
    MpiTooLarge(usize),
    /// The modulus and exponent do not make a usable RSA public key.
    #[error("unusable RSA public key: {0}")]
    BadKey(String),
    /// RSA encryption failed (message too long for the key).
    #[error("RSA encryption failed: {0}")]
    Encrypt(String),
    /// RSA decryption failed (wrong key or bad padding).
    #[error("RSA decryption failed")]
    Decrypt,
    /// A ciphertext that is empty or not a whole number of Blowfish blocks.
    #[error("ciphertext length {0} is not a positive multiple of 8")]
    CipherLength(usize),
    /// Blowfish-CBC decryption produced invalid PKCS#7 padding (wrong session key).
    #[error("bad padding after Blowfish decryption")]
    Padding,
}

/// OpenSSL `BN_bn2mpi` of a big-endian magnitude: 4-byte big-endian length,
/// then the magnitude without leading zeros, with one `0x00` prepended when
/// its top bit is set.
pub fn mpi_encode(magnitude_be: &[u8]) -> Vec<u8> {
    let start = magnitude_be
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(magnitude_be.len());
    let m = &magnitude_be[start..];
    let pad = usize::from(m.first().is_some_and(|&b| b & 0x80 != 0));
    let len = m.len() + pad;
    let mut v = Vec::with_capacity(4 + len);
    v.extend_from_slice(&(len as u32).to_be_bytes());
    if pad == 1 {
        v.push(0);
    }
    v.extend_from_slice(m);
    v
}

/// `BN_mpi2bn` restricted to what a key part can be: the whole buffer must
/// be one MPI, non-negative, with a body of at most [`MAX_MPI_BODY`] bytes.
pub fn mpi_decode(mpi: &[u8]) -> Result<BigUint, CryptoError> {
    if mpi.len() < 4 {
        return Err(CryptoError::MpiLength(mpi.len()));
    }
    let len = u32::from_be_bytes([mpi[0], mpi[1], mpi[2], mpi[3]]) as usize;
    if len != mpi.len() - 4 {
        return Err(CryptoError::MpiLength(mpi.len()));
    }
    if len > MAX_MPI_BODY {
        return Err(CryptoError::MpiTooLarge(len));
    }
    let body = &mpi[4..];
    if body.first().is_some_and(|&b| b & 0x80 != 0) {
        return Err(CryptoError::MpiNegative);
    }
    Ok(BigUint::from_bytes_be(body))
}

/// The MPI of a number.
pub fn mpi_of(n: &BigUint) -> Vec<u8> {
    if n.bits() == 0 {
        return vec![0, 0, 0, 0];
    }
    mpi_encode(&n.to_bytes_be())
}

/// A fresh nonce as `BN_rand(256, 0, 0)` + `BN_bn2mpi` make it: 32 random
/// bytes with the top bit set, so always [`NONCE_MPI_LEN`] bytes long.
pub fn nonce_mpi(rng: &mut (impl RngCore + CryptoRng)) -> [u8; NONCE_MPI_LEN] {
    let mut n = [0u8; NONCE_MPI_LEN];
    n[..5].copy_from_slice(&[0, 0, 0, 0x21, 0]);
    rng.fill_bytes(&mut n[5..]);
    n[5] |= 0x80;
    n
}

/// MD5 of `data` (the classic challenge digest).
pub fn digest(data: &[u8]) -> [u8; DIGEST_LEN] {
    Md5::digest(data).into()
}

/// A public key from its two MPIs (the C2/C3 or S4/S5 transactions).
pub fn public_key_from_mpis(n: &[u8], e: &[u8]) -> Result<RsaPublicKey, CryptoError> {
    let n = mpi_decode(n)?;
    let e = mpi_decode(e)?;
    RsaPublicKey::new(n, e).map_err(|e| CryptoError::BadKey(e.to_string()))
}

/// The (n, e) MPIs of a public key.
pub fn public_key_mpis(key: &RsaPublicKey) -> (Vec<u8>, Vec<u8>) {
    (mpi_of(key.n()), mpi_of(key.e()))
}

/// RSA PKCS#1 v1.5 encryption (`RSA_public_encrypt`, `RSA_PKCS1_PADDING`).
/// The output is always `RSA_size(key)` bytes.
pub fn rsa_encrypt(
    rng: &mut (impl RngCore + CryptoRng),
    key: &RsaPublicKey,
    msg: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    key.encrypt(rng, Pkcs1v15Encrypt, msg)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))
}

/// RSA PKCS#1 v1.5 decryption (`RSA_private_decrypt`, `RSA_PKCS1_PADDING`).
///
/// THE single RSA decryption point of the classic protocol, in both roles.
/// It is exposed to the Marvin timing attack (see the module docs); swap
/// this body for a constant-time implementation when one is available.
/// Errors carry no detail on purpose: padding failures must look alike.
pub fn rsa_decrypt(key: &RsaPrivateKey, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if ciphertext.len() != key.size() {
        return Err(CryptoError::Decrypt);
    }
    key.decrypt(Pkcs1v15Encrypt, ciphertext)
        .map_err(|_| CryptoError::Decrypt)
}

/// The classic session cipher: Blowfish-CBC with a 16-byte key, PKCS#7
/// padding and the fixed IV [`IV`], every message encrypted on its own
/// (`EncryptString` / `DecryptString` with the Community cipher).
#[derive(Clone)]
pub struct SessionCipher {
    key: [u8; SESSION_KEY_LEN],
}

impl std::fmt::Debug for SessionCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCipher(..)")
    }
}

type BfEnc = cbc::Encryptor<blowfish::Blowfish>;
type BfDec = cbc::Decryptor<blowfish::Blowfish>;

impl SessionCipher {
    /// A cipher for this session key.
    pub fn new(key: [u8; SESSION_KEY_LEN]) -> Self {
        SessionCipher { key }
    }

    /// The session key (for tests and key-log tooling).
    pub fn key(&self) -> &[u8; SESSION_KEY_LEN] {
        &self.key
    }

    /// Encrypt one message; the result is 1..=8 bytes longer than `plain`.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        use cbc::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
        // 16-byte key and 8-byte IV are always valid lengths for Blowfish-CBC.
        let c = BfEnc::new_from_slices(&self.key, &IV).expect("Blowfish accepts 16-byte keys");
        c.encrypt_padded_vec_mut::<Pkcs7>(plain)
    }

    /// Decrypt one message.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, CryptoError> {
        use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
        if cipher.is_empty() || cipher.len() & (BLOCK - 1) != 0 {
            return Err(CryptoError::CipherLength(cipher.len()));
        }
        let c = BfDec::new_from_slices(&self.key, &IV).expect("Blowfish accepts 16-byte keys");
        c.decrypt_padded_vec_mut::<Pkcs7>(cipher)
            .map_err(|_| CryptoError::Padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn mpi_examples_from_protocol_md() {
        assert_eq!(mpi_encode(&[0x01, 0x00, 0x01]), vec![0, 0, 0, 3, 1, 0, 1]);
        assert_eq!(mpi_encode(&[0, 0, 0x80]), vec![0, 0, 0, 2, 0, 0x80]);
        assert_eq!(mpi_of(&BigUint::from(65537u32)), vec![0, 0, 0, 3, 1, 0, 1]);
        assert_eq!(
            mpi_decode(&[0, 0, 0, 3, 1, 0, 1]).unwrap(),
            BigUint::from(65537u32)
        );
        assert_eq!(
            mpi_decode(&[0, 0, 0, 1, 0x80]),
            Err(CryptoError::MpiNegative)
        );
        assert_eq!(mpi_decode(&[0, 0, 0, 2, 1]), Err(CryptoError::MpiLength(5)));
        assert_eq!(mpi_decode(&[0, 0]), Err(CryptoError::MpiLength(2)));
    }

    #[test]
    fn nonce_is_37_bytes_top_bit_set() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let n = nonce_mpi(&mut rng);
            assert_eq!(&n[..5], &[0, 0, 0, 0x21, 0]);
            assert!(n[5] & 0x80 != 0);
            assert_eq!(mpi_of(&mpi_decode(&n).unwrap()), n.to_vec());
        }
    }

    #[test]
    fn blowfish_known_lengths_and_roundtrip() {
        let c = SessionCipher::new([7; 16]);
        // SGET of a 5000-byte file: a 4064-byte chunk becomes 4072 bytes.
        assert_eq!(c.encrypt(&[0u8; 4064]).len(), 4072);
        assert_eq!(c.encrypt(&[0u8; 936]).len(), 944);
        assert_eq!(c.encrypt(b"").len(), 8);
        // Deterministic: the same message under the same key is the same bytes.
        assert_eq!(
            c.encrypt(b"SYNCH 1 STAT /x\0"),
            c.encrypt(b"SYNCH 1 STAT /x\0")
        );
        assert_eq!(c.decrypt(&[0; 7]), Err(CryptoError::CipherLength(7)));
        assert_eq!(c.decrypt(&[]), Err(CryptoError::CipherLength(0)));
    }

    #[quickcheck]
    fn blowfish_roundtrip(key: Vec<u8>, msg: Vec<u8>) -> bool {
        let mut k = [0u8; 16];
        for (i, b) in key.iter().take(16).enumerate() {
            k[i] = *b;
        }
        let c = SessionCipher::new(k);
        c.decrypt(&c.encrypt(&msg)).as_deref() == Ok(&msg[..])
    }

    #[quickcheck]
    fn mpi_decode_never_panics(b: Vec<u8>) -> bool {
        let _ = mpi_decode(&b);
        true
    }

    #[test]
    fn rsa_roundtrip_and_wrong_length() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let k = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let n = nonce_mpi(&mut rng);
        let c = rsa_encrypt(&mut rng, &k.to_public_key(), &n).unwrap();
        assert_eq!(c.len(), 128);
        assert_eq!(rsa_decrypt(&k, &c).unwrap(), n.to_vec());
        assert_eq!(rsa_decrypt(&k, &c[1..]), Err(CryptoError::Decrypt));
        let (mn, me) = public_key_mpis(&k.to_public_key());
        assert_eq!(public_key_from_mpis(&mn, &me).unwrap(), k.to_public_key());
        assert_eq!(mn.len(), 4 + 129);
    }
}
