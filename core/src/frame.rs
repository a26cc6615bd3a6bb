//! Transaction framing: CFEngine's 8-byte header plus a 1..4088-byte payload.
//!
//! Every protocol version frames its commands and most replies this way
//! (PROTOCOL.md §3). The header is the C string `"%c %d"` (status, length)
//! padded with NULs to 8 bytes. `t` marks the last transaction of a reply,
//! `m` says more follow.
//!
//! The [`Decoder`] is incremental: feed it bytes cut at any point and it
//! yields whole transactions. It also hands out raw, unframed bytes on
//! request, because a TLS `GET` reply is a bare byte stream whose length the
//! client learned from the preceding `STAT`.

use bytes::{Buf, Bytes, BytesMut};

/// Length of the transaction header (`CF_INBAND_OFFSET`).
pub const HEADER_LEN: usize = 8;
/// Largest payload a transaction may carry (`CF_MSGSIZE` = 4096 - 8).
pub const MAX_PAYLOAD: usize = 4088;
/// Bytes a [`Decoder`] buffers by default before it calls the peer a flooder.
///
/// Generous enough for a client that pipelines hundreds of small requests,
/// small enough that a hostile peer cannot grow a session without bound.
pub const DEFAULT_MAX_BUFFERED: usize = 256 * 1024;

/// The status byte of a transaction header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `t` (`CF_DONE`): the last (or only) transaction of a reply.
    Done,
    /// `m` (`CF_MORE`): more transactions of the same reply follow.
    More,
}

impl Status {
    /// The wire byte for this status.
    pub fn byte(self) -> u8 {
        match self {
            Status::Done => b't',
            Status::More => b'm',
        }
    }
}

/// One framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Whether more transactions of the same reply follow.
    pub status: Status,
    /// The payload, exactly as many bytes as the header declared.
    pub payload: Bytes,
}

impl Transaction {
    /// A `t` transaction; `payload` must be 1..=4088 bytes for [`encode`] to accept it.
    pub fn done(payload: impl Into<Bytes>) -> Self {
        Transaction {
            status: Status::Done,
            payload: payload.into(),
        }
    }

    /// An `m` transaction.
    pub fn more(payload: impl Into<Bytes>) -> Self {
        Transaction {
            status: Status::More,
            payload: payload.into(),
        }
    }

    /// The payload up to its first NUL, as the C server reads commands.
    ///
    /// CFEngine handles requests as C strings, so everything after the first
    /// NUL is invisible to it except for the commands with binary tails
    /// (`MD5`, `SAUTH`, the `S*` family), which read the raw payload instead.
    pub fn c_str(&self) -> &[u8] {
        c_str(&self.payload)
    }

    /// The full wire form: header then payload.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        encode(self.status, &self.payload, &mut out)?;
        Ok(out)
    }
}

/// The bytes of `buf` before its first NUL (all of it when there is none).
pub fn c_str(buf: &[u8]) -> &[u8] {
    // memchr rather than a byte loop: every reply payload goes through here.
    match memchr::memchr(0, buf) {
        Some(i) => &buf[..i],
        None => buf,
    }
}

/// What the peer sent that is not a valid transaction. Every variant means
/// the stream is unusable: CFEngine closes the connection without a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first header byte is neither `t` nor `m`.
    #[error("bad transaction status byte 0x{0:02x} (expected 't' or 'm')")]
    BadStatus(u8),
    /// The header holds no decimal length where `sscanf("%c %d")` expects one.
    #[error("transaction header has no length: {0:?}")]
    Garbage(String),
    /// The declared payload length is zero or negative, which CFEngine treats as fatal.
    #[error("transaction length {0} is not positive")]
    ZeroLength(i64),
    /// The declared payload length exceeds 4088 bytes.
    #[error("transaction length {0} exceeds the maximum of {MAX_PAYLOAD}")]
    Oversized(i64),
    /// The stream ended inside a header or payload.
    #[error("stream ended inside a transaction ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the current transaction that arrived.
        have: usize,
        /// Bytes the transaction needed (header and payload).
        need: usize,
    },
    /// The peer sent more unconsumed data than the decoder may buffer.
    #[error("peer sent {0} bytes without them being consumed; refusing to buffer more")]
    Flood(usize),
}

/// What the caller asked to send that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An empty payload would be rejected by every CFEngine receiver.
    #[error("refusing to send an empty transaction")]
    Empty,
    /// The payload is longer than one transaction can carry.
    #[error("payload of {0} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    TooLong(usize),
}

/// Encode the 8-byte header for a payload of `len` bytes.
///
/// Emits the canonical form the C sender writes (`"t 10"` + NUL padding),
/// so byte-for-byte comparisons with recorded transcripts hold.
pub fn encode_header(status: Status, len: usize) -> Result<[u8; HEADER_LEN], EncodeError> {
    if len == 0 {
        return Err(EncodeError::Empty);
    }
    if len > MAX_PAYLOAD {
        return Err(EncodeError::TooLong(len));
    }
    let mut h = [0u8; HEADER_LEN];
    h[0] = status.byte();
    h[1] = b' ';
    // len <= MAX_PAYLOAD (4088): at most 4 digits, written in place (a
    // `to_string` here was an allocation per reply transaction).
    let mut n = len;
    let width = if n >= 1000 {
        4
    } else if n >= 100 {
        3
    } else if n >= 10 {
        2
    } else {
        1
    };
    for i in (0..width).rev() {
        h[2 + i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    Ok(h)
}

/// Append one framed transaction to `out`; nothing is appended on error.
pub fn encode(status: Status, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let h = encode_header(status, payload.len())?;
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    Ok(())
}

/// Scan a leading C `%d`: whitespace, an optional sign, at least one digit.
///
/// Saturates instead of overflowing, so absurd numbers fail the callers'
/// range checks rather than wrapping into range. `None` when no digit
/// follows, which is `sscanf`'s scan failure.
pub(crate) fn scan_c_int(s: &[u8]) -> Option<i64> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = v.saturating_mul(10).saturating_add(i64::from(s[i] - b'0'));
        i += 1;
    }
    (i > start).then_some(if negative { -v } else { v })
}

/// Parse an 8-byte header the way CFEngine's `sscanf("%c %d")` does.
///
/// Accepts the same language as the C receiver (whitespace and an optional
/// sign before the digits, anything after them ignored) so that every peer
/// the real server accepts, we accept too; then enforces 1..=4088.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Status, usize), FrameError> {
    let status = match h[0] {
        b't' => Status::Done,
        b'm' => Status::More,
        other => return Err(FrameError::BadStatus(other)),
    };
    // sscanf sees a C string: stop at the first NUL.
    let Some(value) = scan_c_int(c_str(&h[1..])) else {
        return Err(FrameError::Garbage(String::from_utf8_lossy(h).into_owned()));
    };
    if value <= 0 {
        return Err(FrameError::ZeroLength(value));
    }
    if value > MAX_PAYLOAD as i64 {
        return Err(FrameError::Oversized(value));
    }
    Ok((status, value as usize))
}

/// Incremental transaction decoder.
///
/// Contract: [`push`](Decoder::push) bytes as they arrive, then call
/// [`poll`](Decoder::poll) until it returns `Ok(None)`. An `Err` is final:
/// the stream is desynchronised and the connection must be closed. Memory
/// use is bounded by `max_buffered` plus one maximal transaction.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Header of the transaction whose payload we are waiting for.
    pending: Option<(Status, usize)>,
    max_buffered: usize,
    failed: Option<FrameError>,
    /// Bytes at the front of `buf` already handed out by
    /// [`poll_payload`](Decoder::poll_payload), dropped at the next call.
    consumed: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder that buffers at most [`DEFAULT_MAX_BUFFERED`] unconsumed bytes.
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_BUFFERED)
    }

    /// A decoder with a custom buffering bound (at least one full transaction).
    pub fn with_limit(max_buffered: usize) -> Self {
        Decoder {
            buf: BytesMut::new(),
            pending: None,
            max_buffered: max_buffered.max(HEADER_LEN + MAX_PAYLOAD),
            failed: None,
            consumed: 0,
        }
    }

    /// Drop the payload the last [`poll_payload`](Decoder::poll_payload) lent out.
    fn release(&mut self) {
        if self.consumed > 0 {
            self.buf.advance(self.consumed);
            self.consumed = 0;
        }
    }

    /// Append received bytes.
    ///
    /// Fails with [`FrameError::Flood`] when the unconsumed backlog would pass
    /// the bound; the caller should stop reading from a peer long before that
    /// (see [`buffered`](Decoder::buffered)).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.release();
        let total = self.buf.len() + bytes.len();
        if total > self.max_buffered {
            let e = FrameError::Flood(total);
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Unconsumed bytes currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next whole transaction, if one has arrived.
    pub fn poll(&mut self) -> Result<Option<Transaction>, FrameError> {
        let Some((status, len)) = self.next_ready()? else {
            return Ok(None);
        };
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Transaction { status, payload }))
    }

    /// As [`poll`](Decoder::poll), lending the payload out of the buffer
    /// instead of splitting it off (no reference-counted handle per
    /// transaction); it is dropped at the next call on the decoder.
    pub fn poll_payload(&mut self) -> Result<Option<(Status, &[u8])>, FrameError> {
        let Some((status, len)) = self.next_ready()? else {
            return Ok(None);
        };
        self.consumed = len;
        Ok(Some((status, &self.buf[..len])))
    }

    /// Status and length of the next transaction once its payload is
    /// buffered (header consumed, payload still at the front of `buf`).
    fn next_ready(&mut self) -> Result<Option<(Status, usize)>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.release();
        if self.pending.is_none() {
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let mut h = [0u8; HEADER_LEN];
            h.copy_from_slice(&self.buf[..HEADER_LEN]);
            match parse_header(&h) {
                Ok(p) => {
                    self.buf.advance(HEADER_LEN);
                    self.pending = Some(p);
                }
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        let (status, len) = self.pending.expect("set above");
        if self.buf.len() < len {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some((status, len)))
    }

    /// Take up to `max` raw (unframed) bytes from the front of the buffer.
    ///
    /// Used for the TLS `GET` data stream. Only valid between transactions:
    /// returns an empty buffer while a transaction header has been consumed
    /// but its payload has not, so framing state is never corrupted.
    pub fn take_raw(&mut self, max: usize) -> Bytes {
        if self.pending.is_some() || self.failed.is_some() {
            return Bytes::new();
        }
        self.release();
        let n = max.min(self.buf.len());
        self.buf.split_to(n).freeze()
    }

    /// Bytes buffered but not yet consumed, without consuming them.
    ///
    /// Lets a client sniff whether a `GET` reply starts with a framed
    /// refusal (`t 59\0\0\0\0BAD: ...`) before treating it as file data.
    pub fn peek_raw(&self) -> &[u8] {
        if self.pending.is_some() {
            &[]
        } else {
            &self.buf[self.consumed..]
        }
    }

    /// Check that the stream ended on a transaction boundary.
    ///
    /// Call at EOF: an end in the middle of a header or payload is reported
    /// as [`FrameError::Truncated`] so the caller can log it precisely.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.pending {
            Some((_, len)) => Err(FrameError::Truncated {
                have: HEADER_LEN + self.buf.len(),
                need: HEADER_LEN + len,
            }),
            None if self.buffered() != 0 && self.buffered() < HEADER_LEN => {
                Err(FrameError::Truncated {
                    have: self.buffered(),
                    need: HEADER_LEN,
                })
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_lengths_are_written_like_sprintf() {
        for len in [1usize, 9, 10, 99, 100, 999, 1000, 4087, MAX_PAYLOAD] {
            let h = encode_header(Status::More, len).unwrap();
            let mut want = format!("m {len}").into_bytes();
            want.resize(HEADER_LEN, 0);
            assert_eq!(h[..], want[..], "{len}");
        }
    }

    use super::*;
    use quickcheck::{Arbitrary, Gen};
    use quickcheck_macros::quickcheck;

    #[test]
    fn canonical_headers_match_the_c_sender() {
        assert_eq!(&encode_header(Status::Done, 10).unwrap(), b"t 10\0\0\0\0");
        assert_eq!(&encode_header(Status::Done, 7).unwrap(), b"t 7\0\0\0\0\0");
        assert_eq!(&encode_header(Status::More, 4088).unwrap(), b"m 4088\0\0");
        assert_eq!(encode_header(Status::Done, 0), Err(EncodeError::Empty));
        assert_eq!(
            encode_header(Status::Done, 4089),
            Err(EncodeError::TooLong(4089))
        );
    }

    #[test]
    fn header_parser_accepts_what_sscanf_accepts() {
        assert_eq!(parse_header(b"t 10\0\0\0\0"), Ok((Status::Done, 10)));
        assert_eq!(parse_header(b"t10\0\0\0\0\0"), Ok((Status::Done, 10)));
        assert_eq!(parse_header(b"m  +42\0\0"), Ok((Status::More, 42)));
        assert_eq!(parse_header(b"t 12xyz\0"), Ok((Status::Done, 12)));
        assert_eq!(parse_header(b"t 4088\0\0"), Ok((Status::Done, 4088)));
    }

    #[test]
    fn header_parser_rejects_what_cfengine_rejects() {
        assert_eq!(
            parse_header(b"x 10\0\0\0\0"),
            Err(FrameError::BadStatus(b'x'))
        );
        assert_eq!(
            parse_header(b"t 0\0\0\0\0\0"),
            Err(FrameError::ZeroLength(0))
        );
        assert_eq!(
            parse_header(b"t -5\0\0\0\0"),
            Err(FrameError::ZeroLength(-5))
        );
        assert_eq!(
            parse_header(b"t 4089\0\0"),
            Err(FrameError::Oversized(4089))
        );
        assert_eq!(
            parse_header(b"t 999999"),
            Err(FrameError::Oversized(999999))
        );
        assert!(matches!(
            parse_header(b"t abc\0\0\0"),
            Err(FrameError::Garbage(_))
        ));
        assert!(matches!(
            parse_header(b"t \0 12\0\0"),
            Err(FrameError::Garbage(_))
        ));
    }

    #[test]
    fn decoder_yields_whole_transactions_and_raw_bytes() {
        let mut d = Decoder::new();
        d.push(b"t 7\0\0\0\0\0VERSIONhello").unwrap();
        let t = d.poll().unwrap().unwrap();
        assert_eq!(t.payload.as_ref(), b"VERSION");
        assert_eq!(d.poll().unwrap(), None);
        assert_eq!(d.take_raw(3).as_ref(), b"hel");
        assert_eq!(d.peek_raw(), b"lo");
    }

    #[test]
    fn decoder_reports_truncation_at_eof() {
        let mut d = Decoder::new();
        d.push(b"t 10\0\0\0\0OK").unwrap();
        assert_eq!(d.poll().unwrap(), None);
        assert_eq!(
            d.finish(),
            Err(FrameError::Truncated { have: 10, need: 18 })
        );
        let mut d = Decoder::new();
        d.push(b"t 1").unwrap();
        assert_eq!(d.finish(), Err(FrameError::Truncated { have: 3, need: 8 }));
    }

    #[test]
    fn decoder_errors_are_sticky_and_flood_is_bounded() {
        let mut d = Decoder::new();
        d.push(b"q 10\0\0\0\0").unwrap();
        assert!(d.poll().is_err());
        assert!(d.poll().is_err());
        assert!(d.push(b"x").is_err());
        let mut d = Decoder::with_limit(0);
        let big = vec![b'a'; HEADER_LEN + MAX_PAYLOAD + 1];
        assert!(matches!(d.push(&big), Err(FrameError::Flood(_))));
    }

    #[derive(Debug, Clone)]
    struct Txns(Vec<(bool, Vec<u8>)>);

    impl Arbitrary for Txns {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = usize::arbitrary(g) % 6;
            let v = (0..n)
                .map(|_| {
                    let len = 1 + usize::arbitrary(g) % MAX_PAYLOAD;
                    let payload = (0..len).map(|_| u8::arbitrary(g)).collect();
                    (bool::arbitrary(g), payload)
                })
                .collect();
            Txns(v)
        }
    }

    fn wire(t: &Txns) -> Vec<u8> {
        let mut out = Vec::new();
        for (more, p) in &t.0 {
            let s = if *more { Status::More } else { Status::Done };
            encode(s, p, &mut out).unwrap();
        }
        out
    }

    fn decode_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Transaction> {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for c in cuts {
            d.push(&bytes[pos..c.max(pos)]).unwrap();
            pos = c.max(pos);
            while let Some(t) = d.poll().unwrap() {
                got.push(t);
            }
        }
        d.finish().unwrap();
        got
    }

    #[quickcheck]
    fn round_trip(t: Txns) -> bool {
        let got = decode_in_pieces(&wire(&t), &[]);
        got.len() == t.0.len()
            && got.iter().zip(&t.0).all(|(g, (more, p))| {
                g.payload.as_ref() == p.as_slice()
                    && g.status == if *more { Status::More } else { Status::Done }
            })
    }

    #[quickcheck]
    fn any_split_gives_the_same_transactions(t: Txns, cuts: Vec<usize>) -> bool {
        let bytes = wire(&t);
        decode_in_pieces(&bytes, &cuts) == decode_in_pieces(&bytes, &[])
    }

    #[quickcheck]
    fn arbitrary_headers_never_panic(h: Vec<u8>) -> bool {
        let mut hdr = [0u8; HEADER_LEN];
        for (i, b) in h.iter().take(HEADER_LEN).enumerate() {
            hdr[i] = *b;
        }
        match parse_header(&hdr) {
            Ok((_, len)) => (1..=MAX_PAYLOAD).contains(&len),
            Err(_) => true,
        }
    }

    #[quickcheck]
    fn lent_payloads_match_split_ones(t: Txns, cuts: Vec<usize>) -> bool {
        let bytes = wire(&t);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut pos = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(bytes.len());
        for c in cuts {
            d.push(&bytes[pos..c.max(pos)]).unwrap();
            pos = c.max(pos);
            while let Some((status, p)) = d.poll_payload().unwrap() {
                got.push(Transaction {
                    status,
                    payload: Bytes::copy_from_slice(p),
                });
            }
        }
        d.finish().is_ok() && d.buffered() == 0 && got == decode_in_pieces(&bytes, &[])
    }

    #[test]
    fn lent_payload_is_released_before_raw_reads() {
        let mut d = Decoder::new();
        d.push(b"t 2\0\0\0\0\0OKraw").unwrap();
        assert_eq!(d.poll_payload().unwrap(), Some((Status::Done, &b"OK"[..])));
        assert_eq!(d.buffered(), 3);
        assert_eq!(d.peek_raw(), b"raw");
        assert_eq!(d.take_raw(2).as_ref(), b"ra");
        assert_eq!(d.poll_payload().unwrap(), None);
        assert_eq!(d.peek_raw(), b"w");
    }
}
