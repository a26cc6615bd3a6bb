//! Version lines, both roles: never panic, never accept outside 2..=3.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::banner::{client_choose, server_accept, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = server_accept(data) {
        assert!(v == ProtocolVersion::Tls || v == ProtocolVersion::Cookie);
    }
    if let Ok(v) = client_choose(None, data) {
        assert!(v != ProtocolVersion::Classic);
    }
});
