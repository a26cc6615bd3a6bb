//! Key material from disk and from the ppkeys directory: private and public
//! PEM (PKCS#1, PKCS#8, the legacy 3DES-encrypted form), key ids and ppkeys
//! file names. No input may panic; every key that parses is usable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::keys::{self, ppkeys, DigestKind, KeyId};

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = keys::parse_public_pem(data) {
        // A key that parsed passed the size/exponent checks and has an id.
        keys::check_public_key(&k).expect("parsed public key passes its own check");
        let id = keys::key_id(&k, DigestKind::Md5);
        let again: KeyId = id.to_string().parse().expect("own key id parses back");
        assert_eq!(again, id);
        let pem = keys::encode_public_pem(&k).expect("re-encode");
        assert_eq!(keys::parse_public_pem(pem.as_bytes()).expect("own encoding parses"), k);
    }
    if let Ok(k) = keys::parse_private_pem(data) {
        let public = k.to_public_key();
        keys::check_public_key(&public).expect("parsed private key passes the public check");
        let _ = keys::key_id(&public, DigestKind::Sha256);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(id) = s.parse::<KeyId>() {
            assert_eq!(id.to_string().parse::<KeyId>().expect("round trip"), id);
        }
        let _ = ppkeys::classify(s);
        let _ = ppkeys::check_user(s);
    }
});
