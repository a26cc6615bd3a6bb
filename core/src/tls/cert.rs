//! The throw-away certificate both sides present, and reading the peer's.
//!
//! CFEngine never validates certificates: only the RSA public key inside
//! matters, and trust in it is decided after the handshake against
//! `ppkeys` (PROTOCOL.md §6.2, §6.5). We therefore make an ordinary X.509 v3
//! self-signed certificate (OpenSSL peers accept any certificate) and, on
//! the receiving side, accept any certificate that parses, v1 included.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer};
use x509_parser::prelude::FromDer;

use super::error::{PeerError, TlsError};

/// Validity of our certificate, as CFEngine makes it: 10 years
/// (`60*60*24*365*10` seconds, tls_generic.c).
pub const CERT_VALIDITY_SECS: i64 = 60 * 60 * 24 * 365 * 10;

/// DER OID 1.2.840.113549.1.1.1 (rsaEncryption), as x509-parser prints it.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// Largest RSA modulus we accept from a peer. The `rsa` crate's default cap
/// (4096 bits) is lower than what `cf-key -T` can make.
const MAX_PEER_RSA_BITS: usize = 16384;

/// Our certificate plus the matching private key, in the forms rustls wants.
///
/// The private key stays PKCS#1, the format `localhost.priv` uses; the
/// aws-lc-rs provider loads PKCS#1 RSA keys directly.
#[derive(Debug)]
pub struct HostCertificate {
    /// Self-signed, `CN=a`, sha384WithRSAEncryption, 10 years from `not_before`.
    pub cert: CertificateDer<'static>,
    /// The host key as PKCS#1 DER.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for HostCertificate {
    fn clone(&self) -> Self {
        HostCertificate {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Makes the self-signed certificate for `key`, valid from `not_before_unix`
/// (seconds since the epoch, given by the caller since rcf-core has no clock)
/// for [`CERT_VALIDITY_SECS`].
///
/// Deterministic for a given key and time: rcgen derives the serial from
/// the public key hash and RSA PKCS#1 v1.5 signing involves no randomness.
pub fn make_certificate(
    key: &RsaPrivateKey,
    not_before_unix: u64,
) -> Result<HostCertificate, TlsError> {
    let pkcs1 = key
        .to_pkcs1_der()
        .map_err(|e| TlsError::HostKey(format!("cannot encode RSA key as PKCS#1: {e}")))?;
    let key_der = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(pkcs1.as_bytes().to_vec()));
    let key_pair = KeyPair::from_der_and_sign_algo(&key_der, &rcgen::PKCS_RSA_SHA384)
        .map_err(|e| TlsError::HostKey(format!("rcgen cannot use RSA key: {e}")))?;

    let start = i64::try_from(not_before_unix)
        .map_err(|_| TlsError::HostKey("certificate start time out of range".into()))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "a");
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(start)
        .map_err(|e| TlsError::HostKey(format!("certificate start time: {e}")))?;
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(start.saturating_add(CERT_VALIDITY_SECS))
            .map_err(|e| TlsError::HostKey(format!("certificate end time: {e}")))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| TlsError::HostKey(format!("cannot self-sign certificate: {e}")))?;
    Ok(HostCertificate {
        cert: cert.der().clone(),
        key: key_der,
    })
}

/// The parts of a peer certificate we care about.
#[derive(Debug, Clone)]
pub(crate) struct PeerKey {
    /// DER SubjectPublicKeyInfo, for rustls' raw-key signature checks.
    pub spki: Vec<u8>,
    /// The PKCS#1 `RSAPublicKey` DER inside the SPKI bit string.
    pub rsa_pkcs1: Vec<u8>,
    /// Decoded key, for trust checks and digests after the handshake.
    pub key: RsaPublicKey,
}

/// Parses any X.509 certificate (v1, v2 or v3; no date, name, serial,
/// extension or signature checks, as CFEngine) and extracts its RSA key.
/// Non-RSA keys are refused: CFEngine cannot authenticate them.
pub(crate) fn peer_key_from_cert(der: &[u8]) -> Result<PeerKey, PeerError> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| PeerError::BadCertificate(e.to_string()))?;
    let spki = &cert.tbs_certificate.subject_pki;
    let oid = spki.algorithm.algorithm.to_id_string();
    if oid != RSA_ENCRYPTION_OID {
        return Err(PeerError::NonRsaKey(oid));
    }
    let pkcs1 = spki.subject_public_key.data.as_ref();
    let key = rsa_from_pkcs1(pkcs1)?;
    Ok(PeerKey {
        spki: spki.raw.to_vec(),
        rsa_pkcs1: pkcs1.to_vec(),
        key,
    })
}

/// Public form of [`peer_key_from_cert`]: the RSA key of a DER certificate.
pub fn rsa_public_key_from_cert(der: &[u8]) -> Result<RsaPublicKey, PeerError> {
    peer_key_from_cert(der).map(|k| k.key)
}

fn rsa_from_pkcs1(der: &[u8]) -> Result<RsaPublicKey, PeerError> {
    use rsa::pkcs1::der::Decode;
    let parsed = rsa::pkcs1::RsaPublicKey::from_der(der)
        .map_err(|e| PeerError::BadCertificate(format!("RSA public key: {e}")))?;
    let n = BigUint::from_bytes_be(parsed.modulus.as_bytes());
    let e = BigUint::from_bytes_be(parsed.public_exponent.as_bytes());
    RsaPublicKey::new_with_max_size(n, e, MAX_PEER_RSA_BITS)
        .map_err(|e| PeerError::BadCertificate(format!("RSA public key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_keys::{test_key, TEST_NOW};
    use x509_parser::prelude::*;

    #[test]
    fn certificate_has_cn_a_ten_years_and_our_key() {
        let key = test_key(0);
        let hc = make_certificate(key, TEST_NOW).unwrap();
        let (_, cert) = X509Certificate::from_der(hc.cert.as_ref()).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=a");
        assert_eq!(cert.issuer().to_string(), "CN=a");
        assert_eq!(cert.validity().not_before.timestamp(), TEST_NOW as i64);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            TEST_NOW as i64 + CERT_VALIDITY_SECS
        );
        // sha384WithRSAEncryption, like CFEngine
        assert_eq!(
            cert.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.113549.1.1.12"
        );
        let pk = rsa_public_key_from_cert(hc.cert.as_ref()).unwrap();
        assert_eq!(pk, key.to_public_key());
        // self-signature is valid (sha384WithRSAEncryption over the TBS bytes)
        use rsa::signature::Verifier;
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(pk);
        let sig = rsa::pkcs1v15::Signature::try_from(cert.signature_value.data.as_ref()).unwrap();
        vk.verify(cert.tbs_certificate.as_ref(), &sig).unwrap();
    }

    #[test]
    fn certificate_is_deterministic() {
        let key = test_key(0);
        let a = make_certificate(key, TEST_NOW).unwrap();
        let b = make_certificate(key, TEST_NOW).unwrap();
        assert_eq!(a.cert, b.cert);
    }

    #[test]
    fn v1_certificate_fixture_parses_and_yields_rsa_key() {
        let der = crate::tls::test_keys::V1_CERT_DER;
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        assert_eq!(cert.version(), X509Version::V1);
        assert_eq!(cert.raw_serial(), &[0u8]);
        let pk = rsa_public_key_from_cert(der).unwrap();
        let expected = crate::tls::test_keys::v1_cert_public_key();
        assert_eq!(pk, expected);
    }

    #[test]
    fn non_rsa_and_garbage_are_refused() {
        assert!(matches!(
            rsa_public_key_from_cert(b"not a cert"),
            Err(PeerError::BadCertificate(_))
        ));
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&ec)
            .unwrap();
        match rsa_public_key_from_cert(cert.der().as_ref()) {
            Err(PeerError::NonRsaKey(oid)) => assert_eq!(oid, "1.2.840.10045.2.1"),
            other => panic!("expected NonRsaKey, got {other:?}"),
        }
    }
}
