//! A server connection from its first ciphertext byte: TLS (mostly the
//! handshake's error paths) with the session behind it.
//!
//! Input: one flag byte (bit 0: start with a genuine rustls ClientHello so
//! the fuzzer explores what follows it; bit 1: a server that also allows
//! TLS 1.2 ECDHE), then operations as in `server_session`: a length byte
//! `n <= 0xFC` and `n` ciphertext bytes, `0xFD` EOF, `0xFE` the deadline
//! passes, `0xFF` one second passes.
//!
//! Invariants: no panic; a connection whose TLS failed says so
//! (`is_closing`) and never emits session questions; output stays bounded.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rcf_core::policy::{self, Canon, LoadOptions, PolicySource, ServerPolicy};
use rcf_core::server::{Config, Connection, Event, Now, PolicyView};
use rcf_core::tls::{client_config, Role, ServerTls, TlsClock, TlsLayer, TlsSettings};

const NOW: u64 = 1_767_225_600;
const SERVER_KEY: &str = include_str!("../../core/src/tls/testdata/key-a.pem");
const CLIENT_KEY: &str = include_str!("../../core/src/tls/testdata/key-b.pem");

struct Src;

impl PolicySource for Src {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == "/fuzz/promises.cf" {
            Ok(br#"body server control { allowconnects => { "0.0.0.0/0" }; }
bundle server access_rules { access: "/srv" admit_ips => { "0.0.0.0/0" }; }"#
                .to_vec())
        } else {
            Err("not found".into())
        }
    }
    fn canonicalize(&self, path: &str) -> Canon {
        if path.trim_end_matches('/') == "/srv" {
            Canon::Resolved { path: "/srv".into(), is_dir: true }
        } else {
            Canon::Missing
        }
    }
    fn exists(&self, path: &str) -> bool {
        path == "/srv"
    }
}

struct Statics {
    tls13: ServerTls,
    tls12: ServerTls,
    hello: Vec<u8>,
    policy: Arc<ServerPolicy>,
}

fn statics() -> &'static Statics {
    static S: OnceLock<Statics> = OnceLock::new();
    S.get_or_init(|| {
        let clock = TlsClock::new(NOW);
        let skey = rcf_core::keys::parse_private_pem(SERVER_KEY.as_bytes()).expect("server key");
        let ckey = rcf_core::keys::parse_private_pem(CLIENT_KEY.as_bytes()).expect("client key");
        let (s13, _) = TlsSettings::server_default();
        let (s12, _) = TlsSettings::from_cfengine(Role::Server, Some("ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384"), None);
        let tls13 = ServerTls::new(&skey, &s13, &clock).expect("server tls");
        let tls12 = ServerTls::new(&skey, &s12, &clock).expect("server tls 1.2");
        let ccfg = client_config(&ckey, &TlsSettings::client_default(), &clock).expect("client config");
        let mut client = TlsLayer::client(ccfg).expect("client layer");
        let mut hello = Vec::new();
        while let Some(b) = client.poll_transmit() {
            hello.extend_from_slice(&b);
        }
        let opts = LoadOptions { file: "/fuzz/promises.cf".into(), ..Default::default() };
        let policy = Arc::new(policy::load(&Src, &opts).expect("fuzz policy"));
        Statics { tls13, tls12, hello, policy }
    })
}

fn drain(c: &mut Connection, out: &mut usize) {
    while let Some(b) = c.poll_transmit() {
        *out += b.len();
    }
    while let Some(ev) = c.poll_event() {
        // Without a completed handshake (which needs a valid signature from
        // a client key) the session does not exist and asks nothing.
        assert!(matches!(ev, Event::Log { .. }), "a question before any session: {ev:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let st = statics();
    let tls = if flags & 2 != 0 { &st.tls12 } else { &st.tls13 };
    let layer = tls.accept().expect("accept");
    let mut now = Now { mono_ms: 0, unix_s: NOW as i64 };
    let cfg = Config { handshake_timeout_ms: 10_000, idle_timeout_ms: 600_000 };
    let pv: Arc<dyn PolicyView> = st.policy.clone();
    let mut c = Connection::new(layer, cfg, pv, "192.0.2.7".into(), now);
    let mut out = 0usize;
    if flags & 1 != 0 {
        c.handle_input(now, &st.hello);
        drain(&mut c, &mut out);
    }
    let mut fed = 0usize;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let was_closing = c.is_closing();
        match op {
            0xFD => c.handle_eof(now),
            0xFE => {
                if let Some(d) = c.poll_timeout() {
                    now.mono_ms = now.mono_ms.max(d);
                }
                c.handle_timeout(now);
                assert!(c.is_closing() || c.session().is_some(), "the handshake deadline closes a connection");
            }
            0xFF => {
                now.mono_ms += 1_000;
                c.handle_timeout(now);
            }
            n => {
                let n = usize::from(n).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                fed += n;
                c.handle_input(now, chunk);
            }
        }
        assert!(!was_closing || c.is_closing(), "a closing connection came back to life");
        drain(&mut c, &mut out);
        if c.is_closing() {
            assert_eq!(c.poll_timeout(), None, "a closing connection has no deadline");
        }
        // Server flight (certificate included) plus alerts: a few KiB, never
        // an amplification of what the peer sent.
        assert!(out <= 16 * 1024 + 4 * fed, "{out} bytes out for {fed} in");
    }
});
