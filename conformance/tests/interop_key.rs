//! rcf_core::keys (the library the TLS server and client use) against keys
//! made by Debian's real cf-key 3.21. FAILS when cf-key is missing
//! (`apt-get install cfengine3`).
//!
//! The rcf-key command-line cross-checks (cf-key -p both ways, cf-serverd
//! starting and authenticating with rcf-key keys, legacy encrypted keys, bad
//! files) live in bins/key/tests/interop_key.rs, where Cargo provides the
//! rcf-key binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcf_core::keys::{
    encode_private_pem, encode_public_pem, key_id, modulus_bits, parse_private_pem,
    parse_public_pem, DigestKind, KeyError,
};

fn cf_key() -> PathBuf {
    let p = PathBuf::from("/usr/bin/cf-key");
    assert!(
        p.is_file(),
        "cf-key not found at {}: apt-get install cfengine3",
        p.display()
    );
    p
}

/// Make a pair with cf-key -T bits -f base; return (priv, pub, printed id).
fn cf_key_pair(wd: &Path, base: &Path, bits: usize) -> (Vec<u8>, Vec<u8>, String) {
    let run = |args: &[&str]| {
        let o = Command::new(cf_key())
            .args(args)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cf-key {args:?}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["-T", &bits.to_string(), "-f", base.to_str().unwrap()]);
    let pubf = format!("{}.pub", base.display());
    let id = run(&["-p", &pubf]);
    (
        fs::read(format!("{}.priv", base.display())).unwrap(),
        fs::read(pubf).unwrap(),
        id,
    )
}

#[test]
fn library_reads_and_rewrites_cf_key_files_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("wd");
    // 2050 and 2054 bits give moduli whose top byte is small, 3000 a full
    // top byte: the id must use the minimal big-endian bytes in every case.
    for bits in [2048usize, 2050, 2054, 3000] {
        let base = tmp.path().join(format!("k{bits}"));
        let (privb, pubb, printed) = cf_key_pair(&wd, &base, bits);
        let pubk = parse_public_pem(&pubb).unwrap();
        let privk = parse_private_pem(&privb).unwrap();
        // (OpenSSL 3 may round odd sizes: -T 2049 gave a 2048-bit modulus.)
        assert!(
            modulus_bits(&pubk).abs_diff(bits) <= 8,
            "{bits}: {}",
            modulus_bits(&pubk)
        );
        assert_eq!(privk.to_public_key(), pubk);
        assert_eq!(
            format!("{}\n", key_id(&pubk, DigestKind::Md5)),
            printed,
            "{bits} bits"
        );
        // Written back byte for byte as OpenSSL wrote them.
        assert_eq!(
            encode_public_pem(&pubk).unwrap().as_bytes(),
            &pubb[..],
            "{bits} bits public"
        );
        assert_eq!(
            encode_private_pem(&privk).unwrap().as_bytes(),
            &privb[..],
            "{bits} bits private"
        );
    }
}

#[test]
fn library_refuses_what_cf_serverd_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let (privb, pubb, _) = cf_key_pair(&tmp.path().join("wd"), &tmp.path().join("small"), 1024);
    assert_eq!(
        parse_public_pem(&pubb),
        Err(KeyError::TooSmall {
            bits: 1024,
            min: 2048
        })
    );
    assert_eq!(
        parse_private_pem(&privb),
        Err(KeyError::TooSmall {
            bits: 1024,
            min: 2048
        })
    );
}

#[test]
fn exponent_bytes_are_minimal_too() {
    // e = 3 (one byte) instead of cf-key's 65537: made with openssl, id
    // printed by cf-key.
    let openssl = PathBuf::from("/usr/bin/openssl");
    assert!(
        openssl.is_file(),
        "openssl not found: apt-get install openssl"
    );
    let tmp = tempfile::tempdir().unwrap();
    let privf = tmp.path().join("e3.priv");
    let pubf = tmp.path().join("e3.pub");
    let ok = |args: &[&str]| {
        let o = Command::new(&openssl).args(args).output().unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(&[
        "genrsa",
        "-3",
        "-traditional",
        "-out",
        privf.to_str().unwrap(),
        "2048",
    ]);
    ok(&[
        "rsa",
        "-in",
        privf.to_str().unwrap(),
        "-RSAPublicKey_out",
        "-out",
        pubf.to_str().unwrap(),
    ]);
    let o = Command::new(cf_key())
        .args(["-p", pubf.to_str().unwrap()])
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", tmp.path().join("wd"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let pubk = parse_public_pem(&fs::read(&pubf).unwrap()).unwrap();
    assert_eq!(
        format!("{}\n", key_id(&pubk, DigestKind::Md5)),
        String::from_utf8(o.stdout).unwrap()
    );
    let privk = parse_private_pem(&fs::read(&privf).unwrap()).unwrap();
    assert_eq!(privk.to_public_key(), pubk);
}
