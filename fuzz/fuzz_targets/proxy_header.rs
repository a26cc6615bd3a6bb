//! PROXY v1/v2 header reader: never panic on any bytes from a listed proxy or
//! anyone else; the answer does not depend on how the bytes were split; the
//! bytes handed on as protocol are exactly what followed the header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::proxy::{decide, ProxyPolicy, V2_MAX_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, bytes)) = data.split_first() else {
        return;
    };
    let policy = ProxyPolicy::parse("127.0.0.0/8").expect("static list");
    let peer = if ctl & 1 == 0 {
        "127.0.0.9:4000"
    } else {
        "192.0.2.1:4000"
    };
    let peer = peer.parse().expect("static address");
    let whole = decide(peer, &policy, bytes, 0);
    let split = decide(peer, &policy, bytes, usize::from(ctl >> 1).max(1));
    assert_eq!(whole, split);
    if let Ok(p) = whole {
        assert!(bytes.ends_with(&p.rest));
        assert!(bytes.len() - p.rest.len() <= V2_MAX_LEN);
    }
});
