//! In-memory TLS 1.3 full handshakes per second (RSA-2048 on both sides,
//! mutual authentication, cf-serverd default settings: TLS_AES_256_GCM_SHA384,
//! X25519), plus a 4 KiB application-data round trip each, through
//! `rcf_core::tls::TlsLayer`. Not a timed test: prints a number.
//!
//! Run: `cargo bench -p rcf-core --bench tls_handshake` (env ITERS=n to change
//! the count).

use std::cell::Cell;
use std::time::{Duration, Instant};

use rcf_core::tls::{client_config, ReadStatus, Role, ServerTls, TlsClock, TlsLayer, TlsSettings};
use rsa::pkcs1::DecodeRsaPrivateKey;

fn main() {
    let server_key =
        rsa::RsaPrivateKey::from_pkcs1_pem(include_str!("../src/tls/testdata/key-a.pem")).unwrap();
    let client_key =
        rsa::RsaPrivateKey::from_pkcs1_pem(include_str!("../src/tls/testdata/key-b.pem")).unwrap();
    let clock = TlsClock::new(1_767_225_600);
    let (sset, _) = TlsSettings::server_default();
    let cset = TlsSettings::from_cfengine(Role::Client, None, None).0;
    let server = ServerTls::new(&server_key, &sset, &clock).unwrap();
    let client = client_config(&client_key, &cset, &clock).unwrap();
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(500);

    // time spent inside the server side's calls only
    let server_time = Cell::new(Duration::ZERO);
    let timed = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        server_time.set(server_time.get() + t.elapsed());
    };
    let one = || {
        let mut s = server.accept().unwrap();
        let mut c = TlsLayer::client(client.clone()).unwrap();
        loop {
            let mut moved = false;
            while let Some(b) = c.poll_transmit() {
                moved = true;
                timed(&mut || s.handle_input(&b).unwrap());
            }
            let mut out = Vec::new();
            timed(&mut || {
                while let Some(b) = s.poll_transmit() {
                    out.push(b);
                }
            });
            for b in out {
                moved = true;
                c.handle_input(&b).unwrap();
            }
            if !moved {
                break;
            }
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        c.send_plaintext(&[b'x'; 4096]).unwrap();
        while let Some(b) = c.poll_transmit() {
            s.handle_input(&b).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(s.read_record(&mut got).unwrap(), ReadStatus::Data(4096));
    };

    for _ in 0..10 {
        one(); // warm-up
    }
    server_time.set(Duration::ZERO);
    let t = Instant::now();
    for _ in 0..iters {
        one();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "tls_handshake: {iters} full TLS 1.3 handshakes (RSA-2048 mutual auth, TLS_AES_256_GCM_SHA384, X25519) in {secs:.3} s = {:.1} handshakes/s ({:.3} ms each)",
        iters as f64 / secs,
        secs * 1000.0 / iters as f64
    );
    let ssecs = server_time.get().as_secs_f64();
    println!(
        "tls_handshake: server side alone {:.3} ms per handshake = {:.1} handshakes/s per core",
        ssecs * 1000.0 / iters as f64,
        iters as f64 / ssecs
    );
}
