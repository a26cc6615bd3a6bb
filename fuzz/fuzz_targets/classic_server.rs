//! The classic server machine. Mode 0: raw bytes straight into a fresh
//! server (pre-authentication parsing and the key exchange). Mode 1/2: an
//! honest client authenticates first (flag n / y), then the input becomes
//! commands: each chunk is framed plain, sealed as an `S*` command with the
//! real session key, or sent as raw bytes. The RNG is seeded from the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::classic::{wire, ClassicServer};
use rcf_core::frame::Status;
use std::sync::Arc;

#[path = "classic_common.rs"]
mod common;
use common::*;

const WORDS: [&str; 8] = ["SSYNCH", "SGET", "SOPENDIR", "SMD5", "SVAR", "SCONTEXT", "SQUERY", "SCALLBACK"];

fuzz_target!(|data: &[u8]| {
    let (rng, rest) = seeded(data);
    let Some((&mode, rest)) = rest.split_first() else { return };
    let Some((&salt, rest)) = rest.split_first() else { return };
    let (mut s, rng) = match mode % 3 {
        0 => (ClassicServer::new(Default::default(), Arc::new(Pol), keys().0.clone(), "127.0.0.1".into(), NOW), rng),
        m => match handshake(rng, m == 2) {
            Some((_, s, w)) => (s, w.rng),
            None => panic!("honest handshake failed"),
        },
    };
    let mut w = world(salt, rng);
    let cipher = s.session_cipher().cloned();
    let mut i = 0;
    while i < rest.len() && !s.is_closing() {
        let how = rest[i];
        let len = usize::from(rest.get(i + 1).copied().unwrap_or(0)) * 16 + usize::from(how >> 4);
        let chunk = &rest[(i + 2).min(rest.len())..(i + 2 + len).min(rest.len())];
        i += 2 + len;
        let bytes = match (how % 4, &cipher) {
            (0, _) => chunk.to_vec(),
            (1, Some(c)) => {
                let w = WORDS[usize::from(how >> 2) % WORDS.len()];
                wire::framed(Status::Done, &wire::seal(w, c, chunk)).unwrap_or_default()
            }
            _ => wire::framed(Status::Done, chunk).unwrap_or_default(),
        };
        s.handle_input(NOW, &bytes);
        let out: usize = w.drive(&mut s, NOW).iter().map(Vec::len).sum();
        assert!(out < 64 * 1024 * 1024, "unbounded output");
    }
    s.handle_eof(NOW);
    w.drive(&mut s, NOW);
    assert!(w.open.is_empty(), "files left open after the connection ended");
});
