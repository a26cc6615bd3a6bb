//! Byte strings (Unix paths, policy text) carried losslessly in `str`.
//!
//! Paths are bytes on Unix and CFEngine 3.21 is C: a file named
//! `bin\xff\xfe.txt`, or a policy promiser holding such bytes, is served and
//! matched byte for byte. rcf's policy engine works on `str`, so bytes
//! cross into it through [`encode`] and back through [`decode`]:
//!
//! * valid UTF-8 stays as it is, character for character;
//! * every byte of an invalid sequence becomes one *escape character*
//!   `U+10FF00 + byte` (in Unicode's private use plane 16);
//! * a valid character that is itself in that escape range is written as
//!   the escapes of its own UTF-8 bytes, so nothing in the input can be
//!   mistaken for an escape.
//!
//! The mapping is injective (`decode(encode(b)) == b` for every `b`), so
//! two different byte strings never compare equal as `str`, and it works
//! unit by unit, so a byte prefix ending at an ASCII byte (`/`) is a string
//! prefix of the encoding: the ACL's longest-prefix rule decides on the
//! encoding exactly as 3.21 decides on the bytes.

use std::borrow::Cow;

/// First escape character: byte `b` is `char::from_u32(ESCAPE_BASE + b)`.
const ESCAPE_BASE: u32 = 0x10_FF00;

/// First byte of every escape character's UTF-8 (U+10xxxx): text without
/// it holds no escape, which a byte search tells (the per-request path
/// check; decoding every character showed as 5% of a steady run).
const ESCAPE_LEAD: u8 = 0xF4;

fn may_hold_escape(bytes: &[u8]) -> bool {
    // ASCII, the usual path, is told a word at a time before any search.
    !bytes.is_ascii() && bytes.contains(&ESCAPE_LEAD)
}

/// Whether `s` holds an escape character (only decoded when a byte search
/// says it may).
fn holds_escape(s: &str) -> bool {
    may_hold_escape(s.as_bytes()) && s.chars().any(is_escape)
}

fn is_escape(c: char) -> bool {
    (ESCAPE_BASE..=ESCAPE_BASE + 0xFF).contains(&u32::from(c))
}

fn push_escaped(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        // In range by construction: ESCAPE_BASE + 0xFF = U+10FFFF.
        out.push(char::from_u32(ESCAPE_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER));
    }
}

/// `bytes` as a `str`, losslessly (see the module text). Borrows when the
/// bytes are UTF-8 without escape-range characters, the common case.
pub fn encode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !holds_escape(s) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_escape(c) {
                push_escaped(&mut out, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                out.push(c);
            }
        }
        push_escaped(&mut out, chunk.invalid());
    }
    Cow::Owned(out)
}

/// The bytes an [`encode`]d string stands for: escape characters become
/// their byte, every other character its UTF-8. Borrows when `s` holds no
/// escape character.
pub fn decode(s: &str) -> Cow<'_, [u8]> {
    if !holds_escape(s) {
        return Cow::Borrowed(s.as_bytes());
    }
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        if is_escape(c) {
            out.push((u32::from(c) - ESCAPE_BASE) as u8);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
    }
    Cow::Owned(out)
}

/// Length in bytes of what `s` stands for (3.21's limits count bytes).
pub fn byte_len(s: &str) -> usize {
    if !may_hold_escape(s.as_bytes()) {
        return s.len();
    }
    s.chars()
        .map(|c| if is_escape(c) { 1 } else { c.len_utf8() })
        .sum()
}

/// Text to show in a log line: the bytes with invalid sequences replaced
/// by U+FFFD, as the rest of rcf logs request paths.
pub fn display(s: &str) -> Cow<'_, str> {
    match decode(s) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    #[test]
    fn utf8_is_borrowed_and_unchanged() {
        assert!(matches!(
            encode(b"/srv/caf\xc3\xa9"),
            Cow::Borrowed("/srv/café")
        ));
        assert!(matches!(
            decode("/srv/café"),
            Cow::Borrowed(b"/srv/caf\xc3\xa9")
        ));
    }

    #[test]
    fn invalid_bytes_and_escape_range_characters_round_trip() {
        for b in [
            &b"bin\xff\xfe.txt"[..],
            b"\xc0\xae\xc0\xae/x",
            "\u{10FF41}".as_bytes(),
            b"\xf4\x8f\xbd\x81",
            b"\xf4\x8f\xbd",
        ] {
            let e = encode(b);
            assert_eq!(&*decode(&e), b, "{e:?}");
            assert_eq!(byte_len(&e), b.len());
        }
        // The invalid byte 0x41-escape and a literal U+10FF41 differ.
        assert_ne!(encode(b"\xf4\x8f\xbd\x81"), encode(b"\x41"));
        assert_eq!(display(&encode(b"a\xffb")), "a\u{FFFD}b");
    }

    quickcheck! {
        fn round_trip(b: Vec<u8>) -> bool {
            decode(&encode(&b)) == b
        }

        fn injective(a: Vec<u8>, b: Vec<u8>) -> bool {
            (encode(&a) == encode(&b)) == (a == b)
        }

        /// A prefix ending at `/` stays a prefix, and only then: the ACL's
        /// longest-prefix rule sees what 3.21 sees.
        fn slash_prefixes_are_kept(a: Vec<u8>, b: Vec<u8>) -> bool {
            let mut p = a.clone();
            p.push(b'/');
            let mut full = p.clone();
            full.extend_from_slice(&b);
            let (ep, ef) = (encode(&p), encode(&full));
            ef.starts_with(&*ep)
                && encode(&b).starts_with(&*encode(&p)) == b.starts_with(&p)
        }
    }
}
