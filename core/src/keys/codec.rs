//! PEM reading and writing of CFEngine host keys, legacy decryption, checks
//! and generation.

use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use md5::{Digest as _, Md5};
use rand_core::{CryptoRng, RngCore};
use rsa::pkcs1::der::Decode;
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};

use super::KeyError;

/// The passphrase every pre-3.14 `cf-key` encrypted private keys with
/// (`crypto.c priv_passphrase`). It protects nothing, but old key files
/// need it to be read.
pub const LEGACY_PASSPHRASE: &[u8] = b"Cfengine passphrase";

/// Smallest modulus accepted. The Debian build of cf-serverd refuses to
/// start with less (`ee key too small`), so a smaller key cannot interoperate.
pub const MIN_BITS: usize = 2048;

/// Largest modulus accepted: bounds the work a hostile key can cause.
pub const MAX_BITS: usize = 16384;

/// Key size `cf-key` uses when `-T` is not given.
pub const DEFAULT_BITS: usize = 2048;

/// Largest PEM input accepted. A 16384-bit private key in PEM is about
/// 12.5 kB; anything much bigger is not a key file.
pub const MAX_PEM_LEN: usize = 64 * 1024;

const RSA_PRIVATE: &str = "RSA PRIVATE KEY";
const PKCS8_PRIVATE: &str = "PRIVATE KEY";
const RSA_PUBLIC: &str = "RSA PUBLIC KEY";

type TdesCbcDec = cbc::Decryptor<des::TdesEde3>;

/// Split `input` into PEM blocks, with OpenSSL-like complaints when it is
/// not PEM at all or the armour is broken.
fn pem_blocks(input: &[u8]) -> Result<Vec<pem::Pem>, KeyError> {
    if input.len() > MAX_PEM_LEN {
        return Err(KeyError::InputTooLarge {
            len: input.len(),
            max: MAX_PEM_LEN,
        });
    }
    let blocks = pem::parse_many(input).map_err(|e| KeyError::BadPem(e.to_string()))?;
    if blocks.is_empty() {
        if contains(input, b"-----BEGIN ") {
            return Err(KeyError::BadPem("bad end line".into()));
        }
        return Err(KeyError::NoPem);
    }
    Ok(blocks)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn found_labels(blocks: &[pem::Pem]) -> String {
    blocks
        .iter()
        .map(|b| format!("'{}'", b.tag()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reject keys CFEngine 3.21 could not use, or that would cost unbounded
/// work: size outside [`MIN_BITS`]..=[`MAX_BITS`], exponent even or under 2
/// bits (CFEngine's own loader check), exponent not below the modulus.
///
/// Apply this to every key that arrives from outside, e.g. a peer's
/// certificate, before trusting or using it.
pub fn check_public_key(key: &RsaPublicKey) -> Result<(), KeyError> {
    check_components(key.n(), key.e())
}

fn is_odd(x: &BigUint) -> bool {
    x.to_bytes_le().first().is_some_and(|b| b & 1 == 1)
}

fn check_components(n: &BigUint, e: &BigUint) -> Result<(), KeyError> {
    let bits = n.bits();
    if bits > MAX_BITS {
        return Err(KeyError::TooLarge {
            bits,
            max: MAX_BITS,
        });
    }
    if bits < MIN_BITS {
        return Err(KeyError::TooSmall {
            bits,
            min: MIN_BITS,
        });
    }
    if e.bits() < 2 || !is_odd(e) {
        return Err(KeyError::BadExponent);
    }
    if !is_odd(n) {
        return Err(KeyError::InvalidKey("modulus is even".into()));
    }
    if e >= n {
        return Err(KeyError::InvalidKey(
            "exponent is not below the modulus".into(),
        ));
    }
    Ok(())
}

/// Size of the key's modulus in bits (what `-T` asked for), for logs and
/// checks outside this module.
pub fn modulus_bits(key: &RsaPublicKey) -> usize {
    key.n().bits()
}

/// Read a public key the way `PEM_read_RSAPublicKey` does: the first
/// `-----BEGIN RSA PUBLIC KEY-----` block (PKCS#1 RSAPublicKey) wins, other
/// blocks are skipped. A `PUBLIC KEY` (SubjectPublicKeyInfo) block is *not*
/// accepted, because CFEngine does not accept it either. The key is then
/// checked with [`check_public_key`].
pub fn parse_public_pem(input: &[u8]) -> Result<RsaPublicKey, KeyError> {
    let blocks = pem_blocks(input)?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == RSA_PUBLIC)
        .ok_or_else(|| KeyError::WrongType {
            expected: RSA_PUBLIC,
            found: found_labels(&blocks),
        })?;
    public_from_pkcs1_der(block.contents())
}

fn bad_der(what: &'static str, e: impl core::fmt::Display) -> KeyError {
    KeyError::BadDer {
        what,
        detail: e.to_string(),
    }
}

fn public_from_pkcs1_der(der: &[u8]) -> Result<RsaPublicKey, KeyError> {
    let k = rsa::pkcs1::RsaPublicKey::from_der(der).map_err(|e| bad_der("RSA public key", e))?;
    let n = BigUint::from_bytes_be(k.modulus.as_bytes());
    let e = BigUint::from_bytes_be(k.public_exponent.as_bytes());
    check_components(&n, &e)?;
    RsaPublicKey::new_with_max_size(n, e, MAX_BITS).map_err(|e| KeyError::InvalidKey(e.to_string()))
}

/// Read a host private key as CFEngine 3.21's `LoadSecretKeys` does.
///
/// Accepted: `RSA PRIVATE KEY` (PKCS#1), plain or encrypted the legacy way
/// (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: DES-EDE3-CBC,<iv>`, passphrase
/// [`LEGACY_PASSPHRASE`]), and an unencrypted PKCS#8 `PRIVATE KEY` holding an
/// RSA key (OpenSSL's reader takes that too). The key is checked with
/// [`check_public_key`] and for internal consistency, so a returned key is
/// always usable for signing.
pub fn parse_private_pem(input: &[u8]) -> Result<RsaPrivateKey, KeyError> {
    let blocks = pem_blocks(input)?;
    let block = blocks
        .iter()
        .find(|b| b.tag() == RSA_PRIVATE || b.tag() == PKCS8_PRIVATE)
        .ok_or_else(|| KeyError::WrongType {
            expected: RSA_PRIVATE,
            found: found_labels(&blocks),
        })?;
    if block.tag() == PKCS8_PRIVATE {
        let info = rsa::pkcs8::PrivateKeyInfo::from_der(block.contents())
            .map_err(|e| bad_der("PKCS#8 private key", e))?;
        if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
            return Err(KeyError::WrongType {
                expected: RSA_PRIVATE,
                found: format!("a non-RSA PKCS#8 key (algorithm {})", info.algorithm.oid),
            });
        }
        return private_from_pkcs1_der(info.private_key);
    }
    let headers = block.headers();
    match headers.get("Proc-Type") {
        None => {
            if headers.get("DEK-Info").is_some() {
                return Err(KeyError::BadPem("DEK-Info without Proc-Type".into()));
            }
            private_from_pkcs1_der(block.contents())
        }
        Some(pt) if pt.trim() == "4,ENCRYPTED" => {
            let dek = headers
                .get("DEK-Info")
                .ok_or_else(|| KeyError::BadPem("encrypted key without DEK-Info".into()))?;
            let plain = legacy_decrypt(dek, block.contents(), LEGACY_PASSPHRASE)?;
            private_from_pkcs1_der(&plain)
        }
        Some(other) => Err(KeyError::BadPem(format!("unsupported Proc-Type '{other}'"))),
    }
}

/// OpenSSL's `EVP_BytesToKey(cipher, MD5, salt, pass, count = 1)`, cut to
/// `len` bytes: D_i = MD5(D_{i-1} ‖ pass ‖ salt).
fn bytes_to_key(pass: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < len {
        let mut h = Md5::new();
        h.update(&prev);
        h.update(pass);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    out.truncate(len);
    out
}

#[allow(clippy::manual_is_multiple_of)] // is_multiple_of is newer than the MSRV
fn legacy_decrypt(dek_info: &str, data: &[u8], pass: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (cipher, iv_hex) = dek_info
        .split_once(',')
        .ok_or_else(|| KeyError::BadPem(format!("malformed DEK-Info '{dek_info}'")))?;
    if !cipher.trim().eq_ignore_ascii_case("DES-EDE3-CBC") {
        return Err(KeyError::UnsupportedEncryption(cipher.trim().to_string()));
    }
    let iv_hex = iv_hex.trim();
    if iv_hex.len() != 16 || !iv_hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyError::BadPem(format!(
            "malformed DEK-Info IV '{iv_hex}'"
        )));
    }
    let mut iv = [0u8; 8];
    for (i, b) in iv.iter_mut().enumerate() {
        *b = u8::from_str_radix(&iv_hex[2 * i..2 * i + 2], 16)
            .map_err(|_| KeyError::BadPem("malformed DEK-Info IV".into()))?;
    }
    if data.is_empty() || data.len() % 8 != 0 {
        return Err(KeyError::BadDecrypt);
    }
    let key = bytes_to_key(pass, &iv, 24);
    let dec =
        TdesCbcDec::new_from_slices(&key, &iv).map_err(|e| KeyError::Crypto(e.to_string()))?;
    dec.decrypt_padded_vec_mut::<Pkcs7>(data)
        .map_err(|_| KeyError::BadDecrypt)
}

fn private_from_pkcs1_der(der: &[u8]) -> Result<RsaPrivateKey, KeyError> {
    let k = rsa::pkcs1::RsaPrivateKey::from_der(der).map_err(|e| bad_der("RSA private key", e))?;
    if k.version() != rsa::pkcs1::Version::TwoPrime {
        return Err(KeyError::InvalidKey(
            "multi-prime RSA keys are not supported".into(),
        ));
    }
    let n = BigUint::from_bytes_be(k.modulus.as_bytes());
    let e = BigUint::from_bytes_be(k.public_exponent.as_bytes());
    check_components(&n, &e)?;
    let d = BigUint::from_bytes_be(k.private_exponent.as_bytes());
    let p = BigUint::from_bytes_be(k.prime1.as_bytes());
    let q = BigUint::from_bytes_be(k.prime2.as_bytes());
    // Bound the primes before the library multiplies them.
    if p.bits() > MAX_BITS || q.bits() > MAX_BITS || d.bits() > MAX_BITS {
        return Err(KeyError::InvalidKey(
            "private components larger than the modulus".into(),
        ));
    }
    RsaPrivateKey::from_components(n, e, d, vec![p, q])
        .map_err(|e| KeyError::InvalidKey(e.to_string()))
}

/// PEM `RSA PRIVATE KEY` (PKCS#1, unencrypted, LF line endings, 64-column
/// base64): byte-identical to what OpenSSL's `PEM_write_RSAPrivateKey`
/// writes for the same key, i.e. what `cf-key` puts in `localhost.priv`.
pub fn encode_private_pem(key: &RsaPrivateKey) -> Result<String, KeyError> {
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| KeyError::Crypto(e.to_string()))
}

/// PEM `RSA PUBLIC KEY` (PKCS#1 RSAPublicKey): the format of `localhost.pub`
/// and of every trusted key in ppkeys.
pub fn encode_public_pem(key: &RsaPublicKey) -> Result<String, KeyError> {
    key.to_pkcs1_pem(LineEnding::LF)
        .map_err(|e| KeyError::Crypto(e.to_string()))
}

/// Generate a host key pair like `cf-key`: `bits` bits, e = 65537, from the
/// caller's randomness (which must be a CSPRNG). `bits` must lie within
/// [`MIN_BITS`]..=[`MAX_BITS`]; this is a caller error otherwise.
pub fn generate<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    bits: usize,
) -> Result<RsaPrivateKey, KeyError> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(KeyError::BadKeySize {
            bits,
            min: MIN_BITS,
            max: MAX_BITS,
        });
    }
    let key =
        RsaPrivateKey::new(&mut Adapter(rng), bits).map_err(|e| KeyError::Crypto(e.to_string()))?;
    check_public_key(&key.to_public_key())?;
    Ok(key)
}

/// Lets an unsized `RngCore + CryptoRng` be handed to the rsa crate, which
/// wants a sized `CryptoRngCore`.
struct Adapter<'a, R: ?Sized>(&'a mut R);

impl<R: RngCore + ?Sized> RngCore for Adapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl<R: CryptoRng + ?Sized> CryptoRng for Adapter<'_, R> {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::{key_id, DigestKind};
    use quickcheck::{Arbitrary, Gen};
    use quickcheck_macros::quickcheck;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::sync::OnceLock;

    /// A 2048-bit key generated by the real `cf-key` 3.21 (Debian 12).
    pub(crate) const CFKEY_PRIV: &str = include_str!("testdata/cfkey.priv");
    /// Its public half as `cf-key` wrote it.
    pub(crate) const CFKEY_PUB: &str = include_str!("testdata/cfkey.pub");
    /// What `cf-key -p` printed for it.
    pub(crate) const CFKEY_ID: &str = include_str!("testdata/cfkey.id");
    /// The same key, encrypted with `openssl rsa -des3 -traditional` and
    /// the CFEngine passphrase.
    const CFKEY_LEGACY: &str = include_str!("testdata/cfkey-legacy.priv");
    /// The same key, encrypted with another passphrase.
    const CFKEY_OTHERPASS: &str = include_str!("testdata/cfkey-otherpass.priv");
    /// A 1024-bit key made by `cf-key -T 1024`.
    const SMALL_PUB: &str = include_str!("testdata/small1024.pub");

    /// A handful of deterministic 2048-bit keys, generated once (debug-mode
    /// key generation is slow, so the properties share them).
    pub(crate) fn keys() -> &'static [RsaPrivateKey] {
        static KEYS: OnceLock<Vec<RsaPrivateKey>> = OnceLock::new();
        KEYS.get_or_init(|| {
            (0..3u64)
                .map(|seed| generate(&mut ChaCha20Rng::seed_from_u64(seed), 2048).unwrap())
                .collect()
        })
    }

    #[derive(Clone, Debug)]
    struct AnyKey(usize);
    impl Arbitrary for AnyKey {
        fn arbitrary(g: &mut Gen) -> Self {
            AnyKey(usize::arbitrary(g) % 4)
        }
    }
    fn pick(k: &AnyKey) -> RsaPrivateKey {
        if k.0 == 3 {
            parse_private_pem(CFKEY_PRIV.as_bytes()).unwrap()
        } else {
            keys()[k.0].clone()
        }
    }

    #[test]
    fn reads_cf_key_output_and_gives_its_id() {
        let pubk = parse_public_pem(CFKEY_PUB.as_bytes()).unwrap();
        assert_eq!(key_id(&pubk, DigestKind::Md5).to_string(), CFKEY_ID.trim());
        let privk = parse_private_pem(CFKEY_PRIV.as_bytes()).unwrap();
        assert_eq!(privk.to_public_key(), pubk);
    }

    #[test]
    fn re_encoding_cf_key_output_is_byte_identical() {
        let privk = parse_private_pem(CFKEY_PRIV.as_bytes()).unwrap();
        assert_eq!(encode_private_pem(&privk).unwrap(), CFKEY_PRIV);
        let pubk = parse_public_pem(CFKEY_PUB.as_bytes()).unwrap();
        assert_eq!(encode_public_pem(&pubk).unwrap(), CFKEY_PUB);
    }

    #[test]
    fn legacy_encrypted_key_loads() {
        let legacy = parse_private_pem(CFKEY_LEGACY.as_bytes()).unwrap();
        let plain = parse_private_pem(CFKEY_PRIV.as_bytes()).unwrap();
        assert_eq!(legacy, plain);
        assert_eq!(
            key_id(&legacy.to_public_key(), DigestKind::Md5).to_string(),
            CFKEY_ID.trim()
        );
    }

    #[test]
    fn other_passphrase_is_bad_decrypt() {
        assert_eq!(
            parse_private_pem(CFKEY_OTHERPASS.as_bytes()),
            Err(KeyError::BadDecrypt)
        );
    }

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -des-ede3-cbc -P -md md5 -S 0102030405060708 -pass pass:'Cfengine passphrase'`
        let k = bytes_to_key(LEGACY_PASSPHRASE, &[1, 2, 3, 4, 5, 6, 7, 8], 24);
        let hex: String = k.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, include_str!("testdata/evp_bytestokey.hex").trim());
    }

    #[test]
    fn tolerates_what_openssl_tolerates() {
        let want = parse_public_pem(CFKEY_PUB.as_bytes()).unwrap();
        // CRLF line endings.
        let crlf = CFKEY_PUB.replace('\n', "\r\n");
        assert_eq!(parse_public_pem(crlf.as_bytes()).unwrap(), want);
        let crlf_legacy = CFKEY_LEGACY.replace('\n', "\r\n");
        assert_eq!(
            parse_private_pem(crlf_legacy.as_bytes())
                .unwrap()
                .to_public_key(),
            want
        );
        // Text before the block, and other blocks before the wanted one.
        let noisy = format!("a comment\n{CFKEY_PRIV}{CFKEY_PUB}");
        assert_eq!(parse_public_pem(noisy.as_bytes()).unwrap(), want);
        assert_eq!(
            parse_private_pem(noisy.as_bytes()).unwrap().to_public_key(),
            want
        );
    }

    #[test]
    fn small_key_refused() {
        assert_eq!(
            parse_public_pem(SMALL_PUB.as_bytes()),
            Err(KeyError::TooSmall {
                bits: 1024,
                min: MIN_BITS
            })
        );
    }

    #[test]
    fn wrong_types_refused() {
        assert!(matches!(
            parse_public_pem(CFKEY_PRIV.as_bytes()),
            Err(KeyError::WrongType {
                expected: "RSA PUBLIC KEY",
                ..
            })
        ));
        assert!(matches!(
            parse_private_pem(CFKEY_PUB.as_bytes()),
            Err(KeyError::WrongType {
                expected: "RSA PRIVATE KEY",
                ..
            })
        ));
        // SubjectPublicKeyInfo is not what CFEngine reads.
        use rsa::pkcs8::EncodePublicKey;
        let spki = keys()[0]
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert!(matches!(
            parse_public_pem(spki.as_bytes()),
            Err(KeyError::WrongType { .. })
        ));
        assert_eq!(parse_public_pem(b"garbage\n"), Err(KeyError::NoPem));
        assert_eq!(parse_public_pem(b""), Err(KeyError::NoPem));
    }

    #[test]
    fn truncated_and_corrupt_refused() {
        let half = &CFKEY_PUB.as_bytes()[..200];
        assert!(matches!(parse_public_pem(half), Err(KeyError::BadPem(_))));
        let mut corrupt = CFKEY_PUB.to_string().into_bytes();
        corrupt[40] = b'!';
        assert!(parse_public_pem(&corrupt).is_err());
        // Valid base64, wrong DER.
        let fake = "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n";
        assert!(matches!(
            parse_public_pem(fake.as_bytes()),
            Err(KeyError::BadDer { .. })
        ));
        let big = vec![b'A'; MAX_PEM_LEN + 1];
        assert!(matches!(
            parse_public_pem(&big),
            Err(KeyError::InputTooLarge { .. })
        ));
    }

    #[test]
    fn bad_exponents_refused() {
        let n = keys()[0].n().clone();
        for e in [1u32, 2, 4, 65536] {
            let (nb, eb) = (n.to_bytes_be(), BigUint::from(e).to_bytes_be());
            let der = rsa::pkcs1::RsaPublicKey {
                modulus: rsa::pkcs1::UintRef::new(&nb).unwrap(),
                public_exponent: rsa::pkcs1::UintRef::new(&eb).unwrap(),
            };
            use rsa::pkcs1::der::Encode;
            let bytes = der.to_der().unwrap();
            let pem = pem::encode(&pem::Pem::new("RSA PUBLIC KEY", bytes));
            assert_eq!(
                parse_public_pem(pem.as_bytes()),
                Err(KeyError::BadExponent),
                "e={e}"
            );
        }
    }

    #[test]
    fn generate_checks_size() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        assert!(matches!(
            generate(&mut rng, 1024),
            Err(KeyError::BadKeySize { .. })
        ));
        assert!(matches!(
            generate(&mut rng, MAX_BITS + 1),
            Err(KeyError::BadKeySize { .. })
        ));
        let k = &keys()[0];
        assert_eq!(k.n().bits(), 2048);
        assert_eq!(k.e(), &BigUint::from(65537u32));
    }

    #[test]
    fn generation_is_a_function_of_the_rng() {
        let again = generate(&mut ChaCha20Rng::seed_from_u64(0), 2048).unwrap();
        assert_eq!(&again, &keys()[0]);
    }

    #[quickcheck]
    fn private_pem_round_trips(k: AnyKey) -> bool {
        let key = pick(&k);
        let pem = encode_private_pem(&key).unwrap();
        parse_private_pem(pem.as_bytes()).unwrap() == key
    }

    #[quickcheck]
    fn public_pem_round_trips_and_id_is_stable(k: AnyKey, sha: bool) -> bool {
        let kind = if sha {
            DigestKind::Sha256
        } else {
            DigestKind::Md5
        };
        let key = pick(&k).to_public_key();
        let pem = encode_public_pem(&key).unwrap();
        let back = parse_public_pem(pem.as_bytes()).unwrap();
        let id = key_id(&key, kind);
        back == key
            && key_id(&back, kind) == id
            && id == key_id(&pick(&k).to_public_key(), kind)
            && id.to_string().parse() == Ok(id.clone())
    }

    #[quickcheck]
    fn garbage_never_panics(data: Vec<u8>, prefix: bool) -> bool {
        let mut input = Vec::new();
        if prefix {
            input.extend_from_slice(b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: DES-EDE3-CBC,0102030405060708\n\n");
        }
        input.extend_from_slice(&data);
        let _ = parse_private_pem(&input);
        let _ = parse_public_pem(&input);
        true
    }

    #[quickcheck]
    fn mutated_key_files_never_panic(k: AnyKey, pos: usize, byte: u8) -> bool {
        let pem = encode_public_pem(&pick(&k).to_public_key())
            .unwrap()
            .into_bytes();
        let mut m = pem.clone();
        let i = pos % m.len();
        m[i] = byte;
        let _ = parse_public_pem(&m);
        let mut l = CFKEY_LEGACY.as_bytes().to_vec();
        let j = pos % l.len();
        l[j] = byte;
        let _ = parse_private_pem(&l);
        true
    }
}
