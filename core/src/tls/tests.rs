//! In-memory client ↔ server tests of the whole TLS layer.

use std::sync::Arc;

use super::test_keys::{test_key, TEST_NOW, V1_CERT_DER};
use super::*;

fn clock() -> TlsClock {
    TlsClock::new(TEST_NOW)
}

fn server(ciphers: Option<&str>, min: Option<&str>) -> ServerTls {
    let (s, _) = TlsSettings::from_cfengine(Role::Server, ciphers, min);
    ServerTls::new(test_key(0), &s, &clock()).unwrap()
}

fn client(ciphers: Option<&str>, min: Option<&str>) -> TlsLayer {
    let (s, _) = TlsSettings::from_cfengine(Role::Client, ciphers, min);
    TlsLayer::client(client_config(test_key(1), &s, &clock()).unwrap()).unwrap()
}

/// Moves bytes both ways until neither side has anything to send. Returns
/// the first error of each side.
fn run(c: &mut TlsLayer, s: &mut TlsLayer) -> (Option<TlsError>, Option<TlsError>) {
    let (mut ce, mut se) = (None, None);
    for _ in 0..20 {
        let mut moved = false;
        while let Some(b) = c.poll_transmit() {
            moved = true;
            if se.is_none() {
                if let Err(e) = s.handle_input(&b) {
                    se = Some(e);
                }
            }
        }
        while let Some(b) = s.poll_transmit() {
            moved = true;
            if ce.is_none() {
                if let Err(e) = c.handle_input(&b) {
                    ce = Some(e);
                }
            }
        }
        if !moved {
            break;
        }
    }
    (ce, se)
}

fn established(ciphers: Option<&str>, client_ciphers: Option<&str>) -> (TlsLayer, TlsLayer) {
    let mut s = server(ciphers, None).accept().unwrap();
    let mut c = client(client_ciphers, None);
    let (ce, se) = run(&mut c, &mut s);
    assert!(ce.is_none() && se.is_none(), "client {ce:?} server {se:?}");
    assert!(!c.is_handshaking() && !s.is_handshaking());
    (c, s)
}

/// Splits a byte stream into TLS records: (content type, total length).
fn records(mut b: &[u8]) -> Vec<(u8, usize)> {
    let mut v = Vec::new();
    while b.len() >= 5 {
        let len = u16::from_be_bytes([b[3], b[4]]) as usize;
        v.push((b[0], len));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing partial record");
    v
}

fn drain(l: &mut TlsLayer) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = l.poll_transmit() {
        out.extend(b);
    }
    out
}

#[test]
fn tls13_default_handshake_both_ways_with_keys_and_names() {
    let (mut c, mut s) = established(None, None);
    let want = Negotiated {
        version: "TLSv1.3",
        cipher: "TLS_AES_256_GCM_SHA384",
    };
    assert_eq!(c.negotiated(), Some(want));
    assert_eq!(s.negotiated(), Some(want));
    assert_eq!(
        want.to_string(),
        "TLS version negotiated:  TLSv1.3; Cipher: TLS_AES_256_GCM_SHA384,TLSv1.3"
    );
    assert_eq!(s.peer_public_key(), Some(&test_key(1).to_public_key()));
    assert_eq!(c.peer_public_key(), Some(&test_key(0).to_public_key()));

    s.send_plaintext(b"CFE_v3 cf-serverd 3.21.0\n").unwrap();
    let (ce, se) = run(&mut c, &mut s);
    assert!(ce.is_none() && se.is_none());
    let mut got = Vec::new();
    assert_eq!(c.read_plaintext(&mut got).unwrap(), ReadStatus::Data(25));
    assert_eq!(got, b"CFE_v3 cf-serverd 3.21.0\n");
    assert_eq!(c.read_plaintext(&mut got).unwrap(), ReadStatus::NoData);
}

#[test]
fn server_sends_no_session_tickets() {
    let mut s = server(None, None).accept().unwrap();
    let mut c = client(None, None);
    run(&mut c, &mut s);
    // Nothing at all is pending after the handshake: no NewSessionTicket.
    assert!(s.poll_transmit().is_none());
    assert!(c.poll_transmit().is_none());
}

#[test]
fn tls12_ecdhe_when_allowed() {
    let (c, s) = established(Some("ECDHE-RSA-AES256-GCM-SHA384"), None);
    let want = Negotiated {
        version: "TLSv1.2",
        cipher: "ECDHE-RSA-AES256-GCM-SHA384",
    };
    assert_eq!(c.negotiated(), Some(want));
    assert_eq!(s.negotiated(), Some(want));
    assert_eq!(s.peer_public_key(), Some(&test_key(1).to_public_key()));
    // TLS 1.2 client (no TLS_ names) against a TLS 1.2+1.3 server
    let (c, _) = established(
        Some("ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384"),
        Some("ECDHE-RSA-AES128-GCM-SHA256"),
    );
    assert_eq!(
        c.negotiated().unwrap().cipher,
        "ECDHE-RSA-AES128-GCM-SHA256"
    );
}

#[test]
fn one_record_per_send_up_to_16k() {
    let (mut c, mut s) = established(None, None);
    for size in [1usize, 8, 4096, 16384] {
        let data = vec![b'x'; size];
        c.send_plaintext(&data).unwrap();
        let wire = drain(&mut c);
        assert_eq!(records(&wire).len(), 1, "size {size}");
        assert_eq!(records(&wire)[0].0, 0x17, "application_data");
        s.handle_input(&wire).unwrap();
        let mut got = Vec::new();
        assert_eq!(s.read_record(&mut got).unwrap(), ReadStatus::Data(size));
    }
    // two successive writes: two records, read back one by one
    c.send_plaintext(b"t 7\0\0\0\0\0").unwrap();
    c.send_plaintext(b"VERSION").unwrap();
    let wire = drain(&mut c);
    assert_eq!(records(&wire).len(), 2);
    s.handle_input(&wire).unwrap();
    let mut a = Vec::new();
    assert_eq!(s.read_record(&mut a).unwrap(), ReadStatus::Data(8));
    let mut b = Vec::new();
    assert_eq!(s.read_record(&mut b).unwrap(), ReadStatus::Data(7));
    assert_eq!(
        (a.as_slice(), b.as_slice()),
        (&b"t 7\0\0\0\0\0"[..], &b"VERSION"[..])
    );
    // more than 16 KiB: consecutive full records
    c.send_plaintext(&vec![0u8; 16385]).unwrap();
    assert_eq!(records(&drain(&mut c)).len(), 2);
    // many 4096-byte transactions in a row: never split or merged
    for _ in 0..2000 {
        c.send_plaintext(&[7u8; 4096]).unwrap();
    }
    let wire = drain(&mut c);
    let recs = records(&wire);
    assert_eq!(recs.len(), 2000);
    assert!(recs.iter().all(|(t, l)| *t == 0x17 && *l == recs[0].1));
}

#[test]
fn writes_before_handshake_end_stay_separate_records() {
    let mut s = server(None, None).accept().unwrap();
    let mut c = client(None, None);
    c.send_plaintext(b"CFE_v3 cf-agent 3.21.0\n").unwrap();
    c.send_plaintext(b"IDENTITY USERNAME=root\n").unwrap();
    let (ce, se) = run(&mut c, &mut s);
    assert!(ce.is_none() && se.is_none());
    let mut a = Vec::new();
    assert_eq!(s.read_record(&mut a).unwrap(), ReadStatus::Data(23));
    let mut b = Vec::new();
    assert_eq!(s.read_record(&mut b).unwrap(), ReadStatus::Data(23));
    assert_eq!(b, b"IDENTITY USERNAME=root\n");
}

#[test]
fn unusable_settings_refuse_with_alert_and_say_why() {
    let tls = server(Some("AES256-GCM-SHA384:AES256-SHA"), None);
    assert!(matches!(tls, ServerTls::Refusing(_)));
    let mut s = tls.accept().unwrap();
    let mut c = client(None, None);
    let (ce, se) = run(&mut c, &mut s);
    match se {
        Some(TlsError::Unusable(why)) => assert!(why.contains("allowciphers"), "{why}"),
        other => panic!("server: {other:?}"),
    }
    match ce {
        Some(TlsError::Peer(PeerError::AlertReceived(a))) => assert_eq!(a, "handshake_failure"),
        other => panic!("client: {other:?}"),
    }
    // server_config itself reports the problem as an error
    let (set, _) = TlsSettings::from_cfengine(Role::Server, Some("AES256-SHA"), None);
    assert!(matches!(
        server_config(test_key(0), &set, &clock()),
        Err(TlsError::Unusable(_))
    ));
}

#[test]
fn no_shared_cipher_fails_on_both_sides() {
    let mut s = server(None, None).accept().unwrap(); // TLS 1.3 AES-256 only
    let mut c = client(
        Some("TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256"),
        None,
    );
    let (ce, se) = run(&mut c, &mut s);
    assert!(
        matches!(se, Some(TlsError::Peer(PeerError::Incompatible(_)))),
        "{se:?}"
    );
    assert!(
        matches!(ce, Some(TlsError::Peer(PeerError::AlertReceived(ref a))) if a == "handshake_failure"),
        "{ce:?}"
    );
}

#[test]
fn client_without_certificate_is_refused() {
    let (set, _) = TlsSettings::from_cfengine(Role::Client, None, None);
    let _ = set;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(CfeServerCertVerifier::new()))
    .with_no_client_auth();
    let mut c = TlsLayer::client(Arc::new(cfg)).unwrap();
    let mut s = server(None, None).accept().unwrap();
    let (_, se) = run(&mut c, &mut s);
    assert!(
        matches!(se, Some(TlsError::Peer(PeerError::NoCertificate))),
        "{se:?}"
    );
}

#[test]
fn client_presenting_x509_v1_certificate_is_accepted() {
    // A client presenting a CFEngine-shaped v1 certificate (serial 0, CN=a).
    let key = test_key(2);
    let hc = HostCertificate {
        cert: rustls::pki_types::CertificateDer::from(V1_CERT_DER.to_vec()),
        key: make_certificate(key, TEST_NOW).unwrap().key,
    };
    let (set, _) = TlsSettings::from_cfengine(Role::Client, None, None);
    let mut c = TlsLayer::client(client_config_with_cert(&hc, &set, &clock()).unwrap()).unwrap();
    let mut s = server(None, None).accept().unwrap();
    let (ce, se) = run(&mut c, &mut s);
    assert!(ce.is_none() && se.is_none(), "{ce:?} {se:?}");
    assert_eq!(s.peer_public_key(), Some(&key.to_public_key()));
    assert_eq!(s.peer_certificate(), Some(V1_CERT_DER));
    // and a server presenting one, over TLS 1.2 too (PKCS#1 or PSS signatures)
    for ciphers in [None, Some("ECDHE-RSA-AES256-GCM-SHA384")] {
        let (sset, _) = TlsSettings::from_cfengine(Role::Server, ciphers, None);
        let scfg = server_config_with_cert(&hc, &sset, &clock()).unwrap();
        let mut s = TlsLayer::server(scfg).unwrap();
        let mut c = client(None, None);
        let (ce, se) = run(&mut c, &mut s);
        assert!(ce.is_none() && se.is_none(), "{ciphers:?}: {ce:?} {se:?}");
        assert_eq!(c.peer_public_key(), Some(&key.to_public_key()));
    }
}

#[test]
fn ecdsa_server_cannot_handshake_with_our_client() {
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a".into()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ec.serialize_der().into());
    let scfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_client_cert_verifier(Arc::new(CfeClientCertVerifier::new()))
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let mut s = TlsLayer::server(Arc::new(scfg)).unwrap();
    let mut c = client(None, None);
    let (ce, se) = run(&mut c, &mut s);
    // We advertise RSA signature schemes only, so an ECDSA server cannot even
    // sign: it fails first and tells us (the verifier's own NonRsaKey check
    // is covered in verify.rs).
    assert!(
        matches!(se, Some(TlsError::Peer(PeerError::Incompatible(_)))),
        "server: {se:?}"
    );
    assert!(
        matches!(ce, Some(TlsError::Peer(PeerError::AlertReceived(ref a))) if a == "handshake_failure"),
        "client: {ce:?}"
    );
}

#[test]
fn eof_without_close_notify_is_ordinary_eof() {
    let (mut c, mut s) = established(None, None);
    s.send_plaintext(b"OK WELCOME\n").unwrap();
    let wire = drain(&mut s);
    c.handle_input(&wire).unwrap();
    c.handle_eof().unwrap(); // cf-serverd: TCP close, no close_notify
    let mut got = Vec::new();
    assert_eq!(c.read_plaintext(&mut got).unwrap(), ReadStatus::Data(11));
    assert_eq!(
        c.read_plaintext(&mut got).unwrap(),
        ReadStatus::Eof(EofKind::WithoutCloseNotify)
    );
    assert!(!c.wants_input());
}

#[test]
fn eof_with_close_notify() {
    let (mut c, mut s) = established(None, None);
    c.send_close_notify();
    let wire = drain(&mut c);
    s.handle_input(&wire).unwrap();
    let mut got = Vec::new();
    assert_eq!(
        s.read_plaintext(&mut got).unwrap(),
        ReadStatus::Eof(EofKind::CloseNotify)
    );
}

#[test]
fn eof_during_handshake_is_a_peer_error() {
    let mut s = server(None, None).accept().unwrap();
    let mut c = client(None, None);
    let hello = c.poll_transmit().unwrap();
    s.handle_input(&hello[..10]).unwrap();
    assert!(matches!(
        s.handle_eof(),
        Err(TlsError::Peer(PeerError::EofDuringHandshake))
    ));
    let mut c = client(None, None);
    let _ = c.poll_transmit();
    assert!(matches!(
        c.handle_eof(),
        Err(TlsError::Peer(PeerError::EofDuringHandshake))
    ));
}

#[test]
fn garbage_instead_of_tls_is_a_protocol_error() {
    let mut s = server(None, None).accept().unwrap();
    let err = s
        .handle_input(b"t 7\0\0\0\0CAUTH 127.0.0.1 localhost root 0")
        .unwrap_err();
    assert!(err.is_peer_error(), "{err:?}");
    // after a failure only poll_transmit works
    assert!(matches!(s.handle_input(b"x"), Err(TlsError::Closed)));
}

#[test]
fn buffered_plaintext_is_bounded_and_nothing_is_lost() {
    let (mut c, mut s) = established(None, None);
    // The server sends 200 KiB in 4 KiB transactions; the client gets all
    // the ciphertext at once but may only feed what the layer wants.
    let mut sent = Vec::new();
    for i in 0..50u8 {
        let chunk = vec![i; 4096];
        s.send_plaintext(&chunk).unwrap();
        sent.extend(chunk);
    }
    let wire = drain(&mut s);
    // feeding everything at once is refused (driver ignored back-pressure)
    {
        let (mut c2, mut s2) = established(None, None);
        s2.send_plaintext(&vec![1u8; 100_000]).unwrap();
        let w2 = drain(&mut s2);
        assert!(matches!(
            c2.handle_input(&w2),
            Err(TlsError::InputOverflow(_))
        ));
    }
    let mut got = Vec::new();
    let mut off = 0;
    let mut max_buffered = 0;
    while got.len() < sent.len() {
        if c.wants_input() && off < wire.len() {
            let end = (off + 5000).min(wire.len());
            c.handle_input(&wire[off..end]).unwrap();
            off = end;
        }
        let before = got.len();
        c.read_plaintext(&mut got).unwrap();
        max_buffered = max_buffered.max(got.len() - before);
    }
    assert_eq!(got, sent);
    assert!(
        max_buffered <= 16 * 1024 + 16 * 1024,
        "buffered {max_buffered}"
    );
}

#[test]
fn clock_reads_what_it_was_given_and_rustls_sees_it() {
    // The clock is a plain value now (no shared atomic in rcf-core): what
    // a driver passes when it builds its configurations is what rustls sees.
    let clk = TlsClock::new(TEST_NOW);
    let copy = clk;
    assert_eq!(copy.get(), TEST_NOW);
    use rustls::time_provider::TimeProvider;
    assert_eq!(clk.current_time().unwrap().as_secs(), TEST_NOW);
}

mod hostile_input {
    use super::*;
    use quickcheck_macros::quickcheck;

    /// Whatever bytes arrive, in whatever chunks, the server layer neither
    /// panics nor completes a handshake, and ends in a clean error or waits.
    #[quickcheck]
    fn random_bytes_never_panic_or_handshake(chunks: Vec<Vec<u8>>, eof: bool) -> bool {
        let mut s = server(None, None).accept().unwrap();
        for c in &chunks {
            if s.handle_input(c).is_err() {
                break;
            }
            while s.poll_transmit().is_some() {}
        }
        if eof {
            let _ = s.handle_eof();
        }
        let mut out = Vec::new();
        let _ = s.read_plaintext(&mut out);
        s.is_handshaking() && out.is_empty() && s.peer_public_key().is_none()
    }

    /// A real ClientHello with bytes flipped is refused, never accepted.
    #[quickcheck]
    fn mutated_client_hello_is_handled(flips: Vec<(u16, u8)>) -> bool {
        let mut c = client(None, None);
        let mut hello = c.poll_transmit().unwrap();
        for (pos, x) in flips {
            let i = usize::from(pos) % hello.len();
            hello[i] ^= x;
        }
        let mut s = server(None, None).accept().unwrap();
        let _ = s.handle_input(&hello);
        while s.poll_transmit().is_some() {}
        s.is_handshaking()
    }

    /// Any policy string parses; unusable exactly when no version is left.
    #[quickcheck]
    fn any_setting_strings_parse(
        ciphers: Option<String>,
        min: Option<String>,
        client_role: bool,
    ) -> bool {
        let role = if client_role {
            Role::Client
        } else {
            Role::Server
        };
        let (s, w) = TlsSettings::from_cfengine(role, ciphers.as_deref(), min.as_deref());
        let unusable_warnings = w
            .iter()
            .filter(|w| matches!(w.kind, TlsWarningKind::Unusable(_)))
            .count();
        // every message names its setting
        let named = w
            .iter()
            .all(|w| w.to_string().starts_with(&format!("{}: ", w.setting)));
        named
            && if s.is_unusable() {
                unusable_warnings == 1
            } else {
                unusable_warnings == 0 && !s.versions().is_empty() && !s.suites().is_empty()
            }
    }
}
