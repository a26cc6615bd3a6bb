//! Certificate verifiers that do what CFEngine's `TLSVerifyCallback` does on
//! an initial handshake: accept any certificate (v1 included, any chain,
//! no date/name/CA checks) as long as it carries an RSA key, and check that
//! the peer really holds that key by verifying its handshake signature.
//!
//! Whether the key is *trusted* is decided after the handshake against
//! `ppkeys` (PROTOCOL.md §6.5); [`super::TlsLayer::peer_public_key`]
//! exposes it for that.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};

use super::cert::{peer_key_from_cert, PeerKey};
use super::error::{PeerError, VerifierError};

/// Handshake signature schemes we accept from peers, in our order of
/// preference (the order rustls advertises them). CFEngine host keys are
/// RSA, so only RSA schemes are offered; PKCS#1 v1.5 is TLS 1.2 only.
pub const RSA_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

fn reject(e: PeerError) -> rustls::Error {
    match e {
        PeerError::BadCertificate(_) => {
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
        }
        other => rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            VerifierError(other),
        )))),
    }
}

/// Shared logic of both verifiers.
#[derive(Debug, Clone)]
struct RsaKeyChecker {
    algs: WebPkiSupportedAlgorithms,
}

impl RsaKeyChecker {
    fn new() -> Self {
        RsaKeyChecker {
            algs: rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms,
        }
    }

    fn check_cert(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        peer_key_from_cert(end_entity.as_ref())
            .map(|_| ())
            .map_err(reject)
    }

    fn peer_key(&self, cert: &CertificateDer<'_>) -> Result<PeerKey, rustls::Error> {
        peer_key_from_cert(cert.as_ref()).map_err(reject)
    }

    fn check_scheme(&self, scheme: SignatureScheme) -> Result<(), rustls::Error> {
        if RSA_SCHEMES.contains(&scheme) {
            Ok(())
        } else {
            Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))
        }
    }

    /// TLS 1.2: rustls' own `verify_tls12_signature` needs a webpki
    /// end-entity certificate, which refuses v1; we verify against the raw
    /// RSA key with the same algorithm table instead.
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_scheme(dss.scheme)?;
        let key = self.peer_key(cert)?;
        let algs = self
            .algs
            .mapping
            .iter()
            .find(|(s, _)| *s == dss.scheme)
            .map(|(_, a)| *a)
            .ok_or(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ))?;
        for alg in algs {
            if alg
                .verify_signature(&key.rsa_pkcs1, message, dss.signature())
                .is_ok()
            {
                return Ok(HandshakeSignatureValid::assertion());
            }
        }
        Err(reject(PeerError::BadSignature(format!(
            "{:?} over TLS 1.2 handshake",
            dss.scheme
        ))))
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check_scheme(dss.scheme)?;
        let key = self.peer_key(cert)?;
        let spki = SubjectPublicKeyInfoDer::from(key.spki.as_slice());
        rustls::crypto::verify_tls13_signature_with_raw_key(message, &spki, dss, &self.algs)
            .map_err(|e| match e {
                rustls::Error::PeerMisbehaved(_) => e,
                other => reject(PeerError::BadSignature(format!(
                    "{:?}: {other}",
                    dss.scheme
                ))),
            })
    }
}

/// Server side: requires a client certificate, names no CAs, accepts any
/// parsable certificate with an RSA key.
#[derive(Debug, Clone)]
pub struct CfeClientCertVerifier {
    inner: RsaKeyChecker,
}

impl CfeClientCertVerifier {
    /// A verifier using the aws-lc-rs signature algorithms.
    pub fn new() -> Self {
        CfeClientCertVerifier {
            inner: RsaKeyChecker::new(),
        }
    }
}

impl Default for CfeClientCertVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientCertVerifier for CfeClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// cf-serverd refuses clients without a certificate
    /// (`SSL_VERIFY_FAIL_IF_NO_PEER_CERT`).
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// cf-serverd's CertificateRequest carries no CA names.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.check_cert(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        RSA_SCHEMES.to_vec()
    }
}

/// Client side: accepts any server name and any parsable certificate with an
/// RSA key (cf-agent trusts or refuses the key itself after the handshake).
#[derive(Debug, Clone)]
pub struct CfeServerCertVerifier {
    inner: RsaKeyChecker,
}

impl CfeServerCertVerifier {
    /// A verifier using the aws-lc-rs signature algorithms.
    pub fn new() -> Self {
        CfeServerCertVerifier {
            inner: RsaKeyChecker::new(),
        }
    }
}

impl Default for CfeServerCertVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for CfeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.check_cert(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        RSA_SCHEMES.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_keys::V1_CERT_DER;
    use rand_chacha::rand_core::SeedableRng;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pss::BlindedSigningKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};

    fn dss(scheme: SignatureScheme, sig: Vec<u8>) -> DigitallySignedStruct {
        // DigitallySignedStruct has no public constructor; decode it from its
        // wire form (u16 scheme, u16 length, signature).
        let mut wire = Vec::new();
        wire.extend_from_slice(&u16::from(scheme).to_be_bytes());
        wire.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        wire.extend_from_slice(&sig);
        decode_dss(&wire).unwrap()
    }

    #[test]
    fn v1_certificate_accepted_by_both_verifiers() {
        let cert = CertificateDer::from(V1_CERT_DER);
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(0));
        CfeClientCertVerifier::new()
            .verify_client_cert(&cert, &[], now)
            .unwrap();
        CfeServerCertVerifier::new()
            .verify_server_cert(&cert, &[], &ServerName::try_from("x").unwrap(), &[], now)
            .unwrap();
    }

    #[test]
    fn v1_certificate_signatures_verify_tls12_and_tls13() {
        let key = crate::tls::test_keys::test_key(2).clone();
        let cert = CertificateDer::from(V1_CERT_DER);
        let msg = b"handshake transcript stand-in";
        let v = CfeClientCertVerifier::new();
        // TLS 1.2, RSA PKCS#1 v1.5 SHA-256
        let sig = SigningKey::<sha2::Sha256>::new(key.clone())
            .sign(msg)
            .to_vec();
        v.verify_tls12_signature(
            msg,
            &cert,
            &dss(SignatureScheme::RSA_PKCS1_SHA256, sig.clone()),
        )
        .unwrap();
        // wrong message fails
        let err = v
            .verify_tls12_signature(
                b"other",
                &cert,
                &dss(SignatureScheme::RSA_PKCS1_SHA256, sig.clone()),
            )
            .unwrap_err();
        assert!(matches!(
            crate::tls::error::from_rustls(err),
            crate::tls::TlsError::Peer(PeerError::BadSignature(_))
        ));
        // PKCS#1 is not allowed in TLS 1.3
        assert!(v
            .verify_tls13_signature(msg, &cert, &dss(SignatureScheme::RSA_PKCS1_SHA256, sig))
            .is_err());
        // TLS 1.3, RSA-PSS SHA-512 (deterministic test RNG)
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let pss = BlindedSigningKey::<sha2::Sha512>::new(key)
            .sign_with_rng(&mut rng, msg)
            .to_vec();
        v.verify_tls13_signature(
            msg,
            &cert,
            &dss(SignatureScheme::RSA_PSS_SHA512, pss.clone()),
        )
        .unwrap();
        CfeServerCertVerifier::new()
            .verify_tls13_signature(
                msg,
                &cert,
                &dss(SignatureScheme::RSA_PSS_SHA512, pss.clone()),
            )
            .unwrap();
        // a scheme we did not advertise is refused
        assert!(v
            .verify_tls13_signature(
                msg,
                &cert,
                &dss(SignatureScheme::ECDSA_NISTP256_SHA256, pss)
            )
            .is_err());
    }

    #[test]
    fn verifier_contract() {
        let v = CfeClientCertVerifier::new();
        assert!(v.offer_client_auth());
        assert!(v.client_auth_mandatory());
        assert!(v.root_hint_subjects().is_empty());
        assert_eq!(v.supported_verify_schemes(), RSA_SCHEMES.to_vec());
    }

    #[test]
    fn non_rsa_certificate_rejected_with_clear_error() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&ec)
            .unwrap();
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(0));
        let err = CfeClientCertVerifier::new()
            .verify_client_cert(cert.der(), &[], now)
            .unwrap_err();
        let mapped = crate::tls::error::from_rustls(err);
        assert!(
            matches!(mapped, crate::tls::TlsError::Peer(PeerError::NonRsaKey(_))),
            "{mapped:?}"
        );
        assert!(mapped.to_string().contains("not RSA"));
    }

    /// Decodes a wire-format `DigitallySignedStruct` (tests only need this;
    /// rustls offers no public constructor).
    fn decode_dss(wire: &[u8]) -> Option<DigitallySignedStruct> {
        use rustls::internal::msgs::codec::{Codec, Reader};
        let mut r = Reader::init(wire);
        DigitallySignedStruct::read(&mut r).ok()
    }
}
