//! The classic client machine. Mode 0: a fresh client reads raw bytes as
//! the server's key-exchange replies. Mode 1/2: after an honest key
//! exchange (flag n / y), the input alternates requests (STAT, GET, OPENDIR,
//! MD5, VERSION, plain or encrypted) with server replies given as raw
//! bytes, plain transactions, or transactions sealed with the real session
//! key. The RNG is seeded from the input. Errors are fine; panics are not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::classic::{wire, ClassicClient, ClientConfig, ClientEvent};
use rcf_core::frame::Status;

#[path = "classic_common.rs"]
mod common;
use common::*;

fuzz_target!(|data: &[u8]| {
    let (mut rng, rest) = seeded(data);
    let Some((&mode, rest)) = rest.split_first() else { return };
    let mut c = match mode % 3 {
        0 => {
            let (skey, ckey) = keys().clone();
            let cfg = ClientConfig {
                local_ip: "127.0.0.1".into(),
                fqdn: "fuzz".into(),
                user: "root".into(),
                key: ckey,
                server_key: (mode & 8 != 0).then(|| skey.to_public_key()),
                trust_server: mode & 16 != 0,
                timeout_ms: 30_000,
            };
            ClassicClient::new(cfg, NOW, &mut rng).expect("client")
        }
        m => match handshake(rng.clone(), m == 2) {
            Some((c, _, w)) => {
                rng = w.rng;
                c
            }
            None => panic!("honest handshake failed"),
        },
    };
    let cipher = c.session_cipher().cloned();
    while c.poll_transmit().is_some() {}
    let mut i = 0;
    while i < rest.len() {
        let how = rest[i];
        let len = usize::from(rest.get(i + 1).copied().unwrap_or(0)) * 16 + usize::from(how >> 4);
        let chunk = &rest[(i + 2).min(rest.len())..(i + 2 + len).min(rest.len())];
        i += 2 + len;
        if c.is_idle() {
            let enc = how & 8 != 0;
            let path = b"/srv/file";
            let _ = match how % 5 {
                0 => c.stat(NOW, path, enc),
                1 => c.get(NOW, path, u64::from(how) * 300, enc),
                2 => c.opendir(NOW, path, enc),
                3 => c.md5(NOW, path, &[how; 16], enc),
                _ => c.version(NOW),
            };
            while c.poll_transmit().is_some() {}
        }
        let status = if how & 4 != 0 { Status::More } else { Status::Done };
        let bytes = match (how % 3, &cipher) {
            (0, _) => chunk.to_vec(),
            (1, Some(k)) => wire::framed(status, &k.encrypt(chunk)).unwrap_or_default(),
            _ => wire::framed(status, chunk).unwrap_or_default(),
        };
        c.handle_input(NOW, &bytes, &mut rng);
        if c.is_closed() {
            // Final: one Failed event, then the machine ignores input,
            // refuses requests and keeps no deadline, never panics.
            let failed = std::iter::from_fn(|| c.poll_event())
                .filter(|e| matches!(e, ClientEvent::Failed(_)))
                .count();
            assert_eq!(failed, 1);
            c.handle_input(NOW, b"t 1\0\0\0\0\0x", &mut rng);
            assert!(c.poll_event().is_none() && c.poll_timeout().is_none());
            assert!(c.version(NOW).is_err());
            return;
        }
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
        // Virtual time: the reply deadline may fire; it is final too.
        if how & 64 != 0 {
            if let Some(d) = c.poll_timeout() {
                c.handle_timeout(rcf_core::server::Now { mono_ms: d, ..NOW });
                if c.is_closed() {
                    return;
                }
            }
        }
    }
    c.handle_eof(NOW);
});
