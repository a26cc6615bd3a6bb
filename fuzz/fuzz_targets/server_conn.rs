//! A server connection from its first ciphertext byte: TLS (mostly the
//! handshake's error paths) with the session behind it.
//!
//! Input: one flag byte (bit 0: start with a genuine rustls ClientHello so
//! the fuzzer explores what follows it; bit 1: a server that also allows
//! TLS 1.2 ECDHE; bit 2: complete a real handshake with an in-process
//! client first, then treat chunks as *plaintext* the client encrypts, so
//! the session runs behind real TLS), then operations as in
//! `server_session`: a length byte `n <= 0xFC` and `n` bytes, `0xFD` EOF,
//! `0xFE` the deadline passes, `0xFF` one second passes.
//!
//! Invariants: no panic; before a completed handshake the connection asks
//! no questions; once closing it stays closed and has no deadline; the
//! server's output stays bounded by what the peer sent.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rcf_core::policy::{self, Canon, LoadOptions, PolicySource, ServerPolicy};
use rcf_core::server::{Config, Connection, Event, Now, PolicyView};
use rcf_core::testing::World;
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
    client: Box<dyn Fn() -> TlsLayer + Send + Sync>,
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
        let mut client = TlsLayer::client(ccfg.clone()).expect("client layer");
        let mut hello = Vec::new();
        while let Some(b) = client.poll_transmit() {
            hello.extend_from_slice(&b);
        }
        let opts = LoadOptions { file: "/fuzz/promises.cf".into(), ..Default::default() };
        let policy = Arc::new(policy::load(&Src, &opts).expect("fuzz policy"));
        let client = Box::new(move || TlsLayer::client(ccfg.clone()).expect("client layer"));
        Statics { tls13, tls12, hello, policy, client }
    })
}

/// The world behind the connection: no files at all (every path is
/// missing), every key trusted, every user uid 1000.
fn world() -> World {
    let mut w = World::default();
    w.any_user_uid = Some(1000);
    w
}

fn drain(c: &mut Connection, w: &mut World, out: &mut usize, client: Option<&mut TlsLayer>, now: Now) {
    let mut client = client;
    for _ in 0..10_000 {
        let mut moved = false;
        while let Some(b) = c.poll_transmit() {
            *out += b.len();
            if let Some(cl) = client.as_deref_mut() {
                let _ = cl.handle_input(&b);
                let mut sink = Vec::new();
                let _ = cl.read_plaintext(&mut sink);
            }
            moved = true;
        }
        if let Some(cl) = client.as_deref_mut() {
            while let Some(b) = cl.poll_transmit() {
                c.handle_input(now, &b);
                moved = true;
            }
        }
        while let Some(ev) = c.poll_event() {
            moved = true;
            if !matches!(ev, Event::Log { .. } | Event::Denied { .. } | Event::SaveKey { .. } | Event::Close { .. }) {
                assert!(c.session().is_some(), "a question before any session: {ev:?}");
                assert!(
                    matches!(ev, Event::LookupKey { .. } | Event::LookupUser { .. } | Event::ReverseLookup { .. } | Event::Canonicalize { .. }),
                    "unexpected question without any file: {ev:?}"
                );
            }
            let answer = w.answer(&ev);
            if let Some(a) = answer {
                c.handle_answer(now, a).expect("answer accepted");
            }
        }
        if !moved {
            return;
        }
    }
    panic!("connection and client kept talking for 10 000 rounds");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let st = statics();
    let tls = if flags & 2 != 0 { &st.tls12 } else { &st.tls13 };
    let layer = tls.accept().expect("accept");
    let mut now = Now { mono_ms: 0, unix_s: NOW as i64 };
    let cfg = Config { handshake_timeout_ms: 10_000, idle_timeout_ms: 600_000, ..Config::default() };
    let pv: Arc<dyn PolicyView> = st.policy.clone();
    let mut c = Connection::new(layer, cfg, pv, "192.0.2.7".into(), now);
    let mut out = 0usize;
    let mut w = world();
    let mut client = if flags & 4 != 0 {
        let mut cl = (st.client)();
        drain(&mut c, &mut w, &mut out, Some(&mut cl), now);
        assert!(c.session().is_some(), "in-process handshake did not complete");
        Some(cl)
    } else {
        if flags & 1 != 0 {
            c.handle_input(now, &st.hello);
            drain(&mut c, &mut w, &mut out, None, now);
        }
        None
    };
    let base = out;
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
                assert!(c.is_closing() || c.session().map(|s| s.is_established()).unwrap_or(false), "a deadline that passed closes an unidentified connection");
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
                match client.as_mut() {
                    Some(cl) => {
                        let _ = cl.send_plaintext(chunk);
                    }
                    None => c.handle_input(now, chunk),
                }
            }
        }
        drain(&mut c, &mut w, &mut out, client.as_mut(), now);
        assert!(!was_closing || c.is_closing(), "a closing connection came back to life");
        if c.is_closing() {
            assert_eq!(c.poll_timeout(), None, "a closing connection has no deadline");
        }
        // The server flight plus replies and alerts: never an amplification
        // of what the peer sent (replies to VERSION-sized requests included).
        assert!(out - base <= 16 * 1024 + 64 * fed, "{} bytes out for {fed} in", out - base);
    }
});
