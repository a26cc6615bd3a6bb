//! The request parser in both dialects; the client encoders must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::request::{encode_get, parse_request, Dialect, Request};

fuzz_target!(|data: &[u8]| {
    for d in [Dialect::Tls, Dialect::Classic] {
        if let Ok(Request::Get { bufsize, path }) = parse_request(data, d) {
            assert!((1..=4096).contains(&bufsize));
            // Whatever path scanned must scan again from our own encoding.
            if let Ok(Request::Get { path: p2, .. }) = parse_request(&encode_get(bufsize, &path), d) {
                assert_eq!(p2, path);
            } else {
                panic!("encode_get output did not parse");
            }
        }
    }
});
