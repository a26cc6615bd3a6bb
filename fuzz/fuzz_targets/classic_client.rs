//! The classic client machine. Mode 0: a fresh client reads raw bytes as
//! the server's key-exchange replies. Mode 1/2: after an honest key
//! exchange (flag n / y), the input alternates requests (STAT, GET, OPENDIR,
//! MD5, VERSION, plain or encrypted) with server replies given as raw
//! bytes, plain transactions, or transactions sealed with the real session
//! key. The RNG is seeded from the input. Errors are fine; panics are not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::classic::{wire, ClassicClient, ClientConfig};
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
            };
            ClassicClient::new(cfg, &mut rng).expect("client")
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
                0 => c.stat(1_700_000_000, path, enc),
                1 => c.get(path, u64::from(how) * 300, enc),
                2 => c.opendir(path, enc),
                3 => c.md5(path, &[how; 16], enc),
                _ => c.version(),
            };
            while c.poll_transmit().is_some() {}
        }
        let status = if how & 4 != 0 { Status::More } else { Status::Done };
        let bytes = match (how % 3, &cipher) {
            (0, _) => chunk.to_vec(),
            (1, Some(k)) => wire::framed(status, &k.encrypt(chunk)).unwrap_or_default(),
            _ => wire::framed(status, chunk).unwrap_or_default(),
        };
        if c.handle_input(&bytes, &mut rng).is_err() {
            // Final: the machine must keep refusing, never panic.
            assert!(c.handle_input(b"t 1\0\0\0\0\0x", &mut rng).is_err());
            return;
        }
        while c.poll_transmit().is_some() {}
        while c.poll_event().is_some() {}
    }
    let _ = c.handle_eof();
});
