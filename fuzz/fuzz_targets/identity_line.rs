//! IDENTITY lines and the line buffer: usernames never hold a path separator.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::identity::{parse_identity, LineBuffer};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = parse_identity(data) {
        if let Some(u) = id.username {
            assert!(!u.contains('/') && !u.contains('\\') && u.len() <= 1023);
        }
    }
    let mut lb = LineBuffer::new();
    for piece in data.chunks(7) {
        lb.push(piece);
        while let Ok(Some(line)) = lb.next_line() {
            assert!(line.ends_with(b"\n") && line.len() <= 1023);
        }
    }
});
