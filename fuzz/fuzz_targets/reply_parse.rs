//! Client-side reply parsers: STAT pairs and OPENDIR packets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::reply::{parse_opendir_packet, StatReply};

fuzz_target!(|data: &[u8]| {
    let mid = data.len() / 2;
    if let Ok(s) = StatReply::parse(&data[..mid], &data[mid..]) {
        let [a, _] = s.encode();
        // Our own encoding of what we parsed parses back to the same numbers.
        let again = StatReply::parse(&a.payload, b"OK:").expect("own encoding parses");
        assert_eq!(again.size, s.size);
    }
    let _ = parse_opendir_packet(data);
});
