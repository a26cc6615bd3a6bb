//! Reply encoders and the client-side parsers for them (PROTOCOL.md §8.4,
//! §8.5). Byte-exact with 3.21: most text replies carry no trailing NUL,
//! the terminators do.

use crate::frame::{c_str, Status, Transaction};

/// `CF_FAILEDSTR`: every access refusal, and a missing file looks the same.
pub const FAILED: &[u8] = b"BAD: Unspecified server refusal (see verbose server output)";
/// The protocol-error reply; the server closes right after sending it.
pub const REQUEST_DENIED: &[u8] = b"BAD: Request denied";
/// MD5 reply: the digests differ (copy needed).
pub const CFD_TRUE: &[u8] = b"CFD_TRUE";
/// MD5 reply: the digests are equal.
pub const CFD_FALSE: &[u8] = b"CFD_FALSE";
/// `CFD_TERMINATOR`, 27 bytes, ending OPENDIR listings and EXEC output.
pub const TERMINATOR: &[u8] = b"---cfXen/gine/cfXen/gine---";
/// `VAR` reply in Community after the ACL passed.
pub const NOT_FOUND: &[u8] = b"BAD: Not found";
/// Prefix of every error reply the client recognises (`BadProtoReply`).
pub const BAD_PREFIX: &[u8] = b"BAD: ";
/// OPENDIR packets are cut before they reach this many bytes (4096 - 256).
pub const OPENDIR_PACKET_LIMIT: usize = 4096 - 256;
/// Names in a listing are cut to this length (`strlcpy` into `CF_MAXLINKSIZE`).
pub const MAX_NAME: usize = 255;

/// `OK: 3.21.0`.
pub fn version() -> Vec<u8> {
    format!("OK: {}", crate::banner::SOFTWARE_VERSION).into_bytes()
}

/// The clock-skew refusal for `STAT`.
pub fn clocks_unsynchronized(server_now: i64, client_time: i64) -> Vec<u8> {
    format!("BAD: Clocks are too far unsynchronized {server_now}/{client_time}").into_bytes()
}

/// Whether `client_time` is too far from `server_now` for `denybadclocks`.
///
/// Uses 64-bit arithmetic: the C `int` overflow that lets some huge skews
/// through in 3.21 is a bug we do not copy.
pub fn clock_skew_too_large(server_now: i64, client_time: i64) -> bool {
    server_now.saturating_sub(client_time).unsigned_abs() > 3600
}

/// The `EXEC` terminator as the server sends it: 27 bytes plus a NUL.
pub fn exec_terminator() -> Vec<u8> {
    let mut v = TERMINATOR.to_vec();
    v.push(0);
    v
}

/// Whether a reply payload is a refusal or error (`BAD: ` prefix).
pub fn is_bad(payload: &[u8]) -> bool {
    payload.starts_with(BAD_PREFIX)
}

/// File types as `StatFile` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    /// 0: a regular file.
    Regular = 0,
    /// 1: a symbolic link (over TLS only a dangling one).
    Link = 1,
    /// 2: a directory.
    Dir = 2,
    /// 3: a FIFO.
    Fifo = 3,
    /// 4: a block device.
    Block = 4,
    /// 5: a character device.
    Char = 5,
    /// 6: a socket.
    Socket = 6,
}

impl FileType {
    /// The type for a wire number.
    pub fn from_number(n: u64) -> Option<Self> {
        Some(match n {
            0 => FileType::Regular,
            1 => FileType::Link,
            2 => FileType::Dir,
            3 => FileType::Fifo,
            4 => FileType::Block,
            5 => FileType::Char,
            6 => FileType::Socket,
            _ => return None,
        })
    }
}

/// Append `n` in decimal, as `%d`/`%ju` print it (digits pushed in place:
/// 64-bit arithmetic, no intermediate copy).
fn push_decimal(out: &mut Vec<u8>, negative: bool, mut m: u64) {
    if negative {
        out.push(b'-');
    }
    let start = out.len();
    loop {
        out.push(b'0' + (m % 10) as u8);
        m /= 10;
        if m == 0 {
            break;
        }
    }
    out[start..].reverse();
}

/// The 13 fields of a successful `STAT` reply plus the link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatReply {
    /// What kind of file.
    pub file_type: FileType,
    /// `st_mode & 07777`.
    pub mode: u32,
    /// The link's own permission bits, or 0.
    pub lmode: u32,
    /// Owner uid on the server.
    pub uid: u32,
    /// Group gid on the server.
    pub gid: u32,
    /// Size in bytes (for a dangling link: the length of its text).
    pub size: u64,
    /// Access time, seconds.
    pub atime: i64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Status change time, seconds.
    pub ctime: i64,
    /// Whether the file is sparse.
    pub makeholes: bool,
    /// Inode, truncated to a C `int` as 3.21 does.
    pub ino: i64,
    /// Link count, as a C `int`.
    pub nlink: i64,
    /// Device number.
    pub dev: u64,
    /// The link text for a link; empty otherwise.
    pub link_target: Vec<u8>,
}

impl StatReply {
    /// The two transactions `StatFile` sends: the fields, then `OK:<link>`.
    pub fn encode(&self) -> [Transaction; 2] {
        let [first, second] = self.encode_payloads();
        [Transaction::done(first), Transaction::done(second)]
    }

    fn encode_payloads(&self) -> [Vec<u8>; 2] {
        // Written digit by digit: `format!` of 13 numbers was a visible
        // share of the server's per-request CPU.
        let mut first = Vec::with_capacity(128);
        first.extend_from_slice(b"OK:");
        let signed = |n: i64| (n < 0, n.unsigned_abs());
        for (negative, n) in [
            (false, u64::from(self.file_type as u8)),
            (false, u64::from(self.mode & 0o7777)),
            (false, u64::from(self.lmode & 0o7777)),
            (false, u64::from(self.uid)),
            (false, u64::from(self.gid)),
            (false, self.size),
            signed(self.atime),
            signed(self.mtime),
            signed(self.ctime),
            (false, u64::from(self.makeholes)),
            signed(i64::from(self.ino as i32)),
            signed(i64::from(self.nlink as i32)),
            (false, self.dev),
        ] {
            first.push(b' ');
            push_decimal(&mut first, negative, n);
        }
        let mut second = b"OK:".to_vec();
        // A link text that would not fit in one transaction is cut, as a C
        // buffer would cut it; the protocol has no way to send more.
        let room = crate::frame::MAX_PAYLOAD - second.len();
        second.extend_from_slice(&self.link_target[..self.link_target.len().min(room)]);
        [first, second]
    }

    /// [`StatReply::encode`]'s two transactions, framed, appended to `out`
    /// (the server's reply record: no intermediate buffers per STAT).
    pub fn encode_framed(&self, out: &mut Vec<u8>) {
        let [first, second] = self.encode_payloads();
        for p in [&first, &second] {
            // Both payloads are non-empty ("OK:") and at most MAX_PAYLOAD.
            if let Ok(h) = crate::frame::encode_header(crate::frame::Status::Done, p.len()) {
                out.extend_from_slice(&h);
                out.extend_from_slice(p);
            }
        }
    }

    /// Parse the client side of a `STAT` reply, as `StatParseResponse` does.
    ///
    /// All 13 numbers are required. The link text is taken only when the
    /// second reply is longer than 4 bytes, reproducing libcfnet's quirk
    /// that a 1-character target reads as "not a link".
    pub fn parse(first: &[u8], second: &[u8]) -> Result<StatReply, StatParseError> {
        let first = c_str(first);
        let body = first.strip_prefix(b"OK:").ok_or(StatParseError::NotOk)?;
        // Byte by byte, with `str` parsing's rules (the fields must be UTF-8,
        // words split at ASCII whitespace, numbers as `str::parse` reads
        // them): the `str` route was a visible share of the client's CPU.
        if !body.is_ascii() && std::str::from_utf8(body).is_err() {
            return Err(StatParseError::Fields);
        }
        // The 13 fields (any more are ignored), without collecting them.
        let mut nums: [&[u8]; 13] = [b""; 13];
        let mut words = body
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty());
        for n in nums.iter_mut() {
            *n = words.next().ok_or(StatParseError::Fields)?;
        }
        StatReply::assemble(
            |i| parse_u64(nums[i]).ok_or(StatParseError::Fields),
            |i| parse_i64(nums[i]).ok_or(StatParseError::Fields),
            second,
        )
    }

    /// The reply from its 13 numbers (`u`/`s` read field *i* unsigned or
    /// signed, in the field order errors are reported in) and the second
    /// transaction.
    fn assemble(
        u: impl Fn(usize) -> Result<u64, StatParseError>,
        s: impl Fn(usize) -> Result<i64, StatParseError>,
        second: &[u8],
    ) -> Result<StatReply, StatParseError> {
        let file_type = FileType::from_number(u(0)?).ok_or(StatParseError::Fields)?;
        let second = c_str(second);
        if !second.starts_with(b"OK:") {
            return Err(StatParseError::NotOk);
        }
        let link_target = if second.len() > 4 {
            second[3..].to_vec()
        } else {
            Vec::new()
        };
        Ok(StatReply {
            file_type,
            mode: u(1)? as u32 & 0o7777,
            lmode: u(2)? as u32 & 0o7777,
            uid: u(3)? as u32,
            gid: u(4)? as u32,
            size: u(5)?,
            atime: s(6)?,
            mtime: s(7)?,
            ctime: s(8)?,
            makeholes: u(9)? != 0,
            ino: s(10)?,
            nlink: s(11)?,
            dev: u(12)?,
            link_target,
        })
    }
}

/// `str::parse::<u64>` on bytes: an optional `+`, then at least one digit,
/// no overflow.
fn parse_u64(w: &[u8]) -> Option<u64> {
    let digits = w.strip_prefix(b"+").unwrap_or(w);
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// `str::parse::<i64>` on bytes: an optional `+` or `-`, then at least one
/// digit, in range (down to `i64::MIN`).
fn parse_i64(w: &[u8]) -> Option<i64> {
    let (negative, digits) = match w.first() {
        Some(b'-') => (true, &w[1..]),
        Some(b'+') => (false, &w[1..]),
        _ => (false, w),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

#[cfg(test)]
impl StatReply {
    /// The parser as it was before it read bytes directly (through `str`):
    /// the reference for the property test.
    fn parse_reference(first: &[u8], second: &[u8]) -> Result<StatReply, StatParseError> {
        let first = c_str(first);
        let body = first.strip_prefix(b"OK:").ok_or(StatParseError::NotOk)?;
        let text = std::str::from_utf8(body).map_err(|_| StatParseError::Fields)?;
        // The 13 fields (any more are ignored), without collecting them.
        let mut nums = [""; 13];
        let mut words = text.split_ascii_whitespace();
        for n in nums.iter_mut() {
            *n = words.next().ok_or(StatParseError::Fields)?;
        }
        StatReply::assemble(
            |i| nums[i].parse::<u64>().map_err(|_| StatParseError::Fields),
            |i| nums[i].parse::<i64>().map_err(|_| StatParseError::Fields),
            second,
        )
    }
}

/// A `STAT` reply the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatParseError {
    /// The reply does not start with `OK:` (usually a `BAD:` refusal).
    #[error("STAT reply is not OK")]
    NotOk,
    /// Fewer than 13 numeric fields, or one does not parse.
    #[error("STAT reply has malformed fields")]
    Fields,
}

/// Pack directory entries into OPENDIR transactions as `CfOpenDirectory` does.
///
/// Before a name is added, if `offset + len + 1 >= 3840` the packet goes out
/// as `m` with an extra NUL; the last packet ends with the terminator, a
/// NUL and an extra NUL, as `t`. Names are cut to 255 bytes.
pub fn opendir_packets<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Vec<Transaction> {
    let mut out = Vec::new();
    let mut packet: Vec<u8> = Vec::with_capacity(OPENDIR_PACKET_LIMIT + 1);
    for name in names {
        let name = &name[..name.len().min(MAX_NAME)];
        if packet.len() + name.len() + 1 >= OPENDIR_PACKET_LIMIT {
            packet.push(0);
            out.push(Transaction {
                status: Status::More,
                payload: std::mem::take(&mut packet).into(),
            });
        }
        packet.extend_from_slice(name);
        packet.push(0);
    }
    // The C server appends the terminator without a size check; a packet
    // is at most 3839 + 28 + 1 bytes, which still fits one transaction.
    packet.extend_from_slice(TERMINATOR);
    packet.extend_from_slice(&[0, 0]);
    out.push(Transaction::done(packet));
    out
}

/// One OPENDIR packet, read by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpendirChunk {
    /// Names from a packet that did not end the listing.
    Names(Vec<Vec<u8>>),
    /// The final names; the listing is complete.
    Last(Vec<Vec<u8>>),
}

/// A listing reply the client cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpendirError {
    /// The server refused (`BAD: …`), with its text.
    #[error("server refused the listing: {0}")]
    Refused(String),
    /// A first packet starting with NUL, which libcfnet also rejects.
    #[error("empty directory listing packet")]
    Empty,
}

/// Read one OPENDIR packet as `RemoteDirList` does: NUL-separated names up
/// to an empty string (end of packet) or the terminator (end of listing).
/// The `t`/`m` flag is ignored, as libcfnet ignores it.
pub fn parse_opendir_packet(payload: &[u8]) -> Result<OpendirChunk, OpendirError> {
    if is_bad(payload) {
        return Err(OpendirError::Refused(
            String::from_utf8_lossy(c_str(payload)).into_owned(),
        ));
    }
    if payload.first() == Some(&0) || payload.is_empty() {
        return Err(OpendirError::Empty);
    }
    let mut names = Vec::new();
    for name in payload.split(|&b| b == 0) {
        if name.is_empty() {
            return Ok(OpendirChunk::Names(names));
        }
        if name == TERMINATOR {
            return Ok(OpendirChunk::Last(names));
        }
        names.push(name.to_vec());
    }
    Ok(OpendirChunk::Names(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn fixed_strings_have_live_lengths() {
        assert_eq!(FAILED.len(), 59);
        assert_eq!(REQUEST_DENIED.len(), 19);
        assert_eq!(CFD_TRUE.len(), 8);
        assert_eq!(CFD_FALSE.len(), 9);
        assert_eq!(exec_terminator().len(), 28);
        assert_eq!(version(), b"OK: 3.21.0");
    }

    #[test]
    fn stat_reply_matches_live_bytes() {
        let r = StatReply {
            file_type: FileType::Regular,
            mode: 0o644,
            lmode: 0,
            uid: 0,
            gid: 0,
            size: 12,
            atime: 1795415950,
            mtime: 1795415950,
            ctime: 1795415950,
            makeholes: false,
            ino: 10027301,
            nlink: 1,
            dev: 65024,
            link_target: vec![],
        };
        let [a, b] = r.encode();
        assert_eq!(
            a.payload.as_ref(),
            b"OK: 0 420 0 0 0 12 1795415950 1795415950 1795415950 0 10027301 1 65024"
        );
        assert_eq!(b.payload.as_ref(), b"OK:");
        assert_eq!(StatReply::parse(&a.payload, &b.payload).unwrap(), r);
        let quirk = StatReply::parse(&a.payload, b"OK:x").unwrap();
        assert!(quirk.link_target.is_empty());
        assert_eq!(StatReply::parse(FAILED, b"OK:"), Err(StatParseError::NotOk));
        assert_eq!(
            StatReply::parse(b"OK: 0 1 2", b"OK:"),
            Err(StatParseError::Fields)
        );
    }

    #[test]
    fn opendir_single_packet_is_byte_exact() {
        let names: Vec<&[u8]> = vec![b".", b"sub", b"..", b"a.txt"];
        let p = opendir_packets(names);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].payload.as_ref(),
            b".\0sub\0..\0a.txt\0---cfXen/gine/cfXen/gine---\0\0"
        );
        assert_eq!(p[0].payload.len(), 44);
    }

    #[test]
    fn opendir_cut_at_3840_like_live_server() {
        // 1,000 four-character names (plus `.` and `..`) gave `m 3836`
        // then `t 1199` live.
        let mut names: Vec<Vec<u8>> = vec![b".".to_vec(), b"..".to_vec()];
        names.extend((0..1000).map(|i| format!("{i:04}").into_bytes()));
        let p = opendir_packets(names.iter().map(|n| n.as_slice()));
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].status, p[0].payload.len()), (Status::More, 3836));
        assert_eq!((p[1].status, p[1].payload.len()), (Status::Done, 1199));
    }

    #[quickcheck]
    fn opendir_round_trip(names: Vec<Vec<u8>>) -> bool {
        let names: Vec<Vec<u8>> = names
            .into_iter()
            .map(|n| {
                n.into_iter()
                    .filter(|&b| b != 0)
                    .take(MAX_NAME)
                    .collect::<Vec<u8>>()
            })
            .filter(|n| !n.is_empty() && n.as_slice() != TERMINATOR)
            .collect();
        let packets = opendir_packets(names.iter().map(|n| n.as_slice()));
        let mut got = Vec::new();
        let mut done = false;
        for p in &packets {
            if p.payload.len() > crate::frame::MAX_PAYLOAD {
                return false;
            }
            match parse_opendir_packet(&p.payload) {
                Ok(OpendirChunk::Names(n)) => got.extend(n),
                Ok(OpendirChunk::Last(n)) => {
                    got.extend(n);
                    done = true;
                }
                // A packet can begin with NUL only if no name fit before a cut.
                Err(_) => return false,
            }
        }
        done && got == names
    }

    /// The server's one-buffer STAT record is exactly the two transactions
    /// framed one after the other.
    #[quickcheck]
    fn stat_encode_framed_is_both_transactions(size: u64, mtime: i64, link: Vec<u8>) -> bool {
        let r = StatReply {
            file_type: FileType::Link,
            mode: 0o644,
            lmode: 0o777,
            uid: 0,
            gid: 0,
            size,
            atime: 0,
            mtime,
            ctime: 0,
            makeholes: false,
            ino: 1,
            nlink: 1,
            dev: 2,
            link_target: link,
        };
        let mut want = Vec::new();
        for t in r.encode() {
            crate::frame::encode(t.status, &t.payload, &mut want).unwrap();
        }
        let mut got = b"prefix".to_vec();
        r.encode_framed(&mut got);
        got[6..] == want[..]
    }

    /// The hand-written encoder prints exactly what `format!` (and so
    /// 3.21's `snprintf`) would, for any field values.
    #[quickcheck]
    fn stat_encode_matches_format(
        v: (u32, u32, u32, u32, u64, i64, i64, i64),
        w: (bool, i64, i64, u64),
    ) -> bool {
        let r = StatReply {
            file_type: FileType::Regular,
            mode: v.0,
            lmode: v.1,
            uid: v.2,
            gid: v.3,
            size: v.4,
            atime: v.5,
            mtime: v.6,
            ctime: v.7,
            makeholes: w.0,
            ino: w.1,
            nlink: w.2,
            dev: w.3,
            link_target: Vec::new(),
        };
        let want = format!(
            "OK: {} {} {} {} {} {} {} {} {} {} {} {} {}",
            r.file_type as u8,
            r.mode & 0o7777,
            r.lmode & 0o7777,
            r.uid,
            r.gid,
            r.size,
            r.atime,
            r.mtime,
            r.ctime,
            u8::from(r.makeholes),
            r.ino as i32,
            r.nlink as i32,
            r.dev,
        );
        let got = r.encode();
        got[0].payload == want.as_bytes()
            && StatReply::parse(&got[0].payload, &got[1].payload).is_ok()
    }

    #[quickcheck]
    fn stat_parse_never_panics(a: Vec<u8>, b: Vec<u8>) -> bool {
        let _ = StatReply::parse(&a, &b);
        let _ = parse_opendir_packet(&a);
        true
    }

    /// Words a STAT reply could hold, good and bad.
    fn stat_word(g: &mut quickcheck::Gen) -> Vec<u8> {
        use quickcheck::Arbitrary;
        let pick = |g: &mut quickcheck::Gen, xs: &[&str]| {
            xs[usize::arbitrary(g) % xs.len()].as_bytes().to_vec()
        };
        match u8::arbitrary(g) % 8 {
            0 => u64::arbitrary(g).to_string().into_bytes(),
            1 => i64::arbitrary(g).to_string().into_bytes(),
            2 => format!("+{}", u8::arbitrary(g) % 8).into_bytes(),
            3 => pick(
                g,
                &[
                    "18446744073709551615",
                    "18446744073709551616",
                    "9223372036854775807",
                    "9223372036854775808",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "+",
                    "-",
                    "+-1",
                    "--1",
                    "-0",
                    "00012",
                    "1e3",
                    "0x1",
                    "\u{e9}",
                    "1\u{a0}2",
                ],
            ),
            4 => pick(g, &[" ", "\t", "\n", "\x0b", "\x0c", "\r", "  ", "\0"]),
            5 => vec![u8::arbitrary(g)],
            6 => pick(g, &["0", "1", "2", "3", "4", "5", "6", "7"]),
            _ => Vec::<u8>::arbitrary(g),
        }
    }

    #[derive(Debug, Clone)]
    struct StatPayloads(Vec<u8>, Vec<u8>);

    impl quickcheck::Arbitrary for StatPayloads {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            let mut first = if u8::arbitrary(g) % 8 == 0 {
                Vec::new()
            } else {
                b"OK:".to_vec()
            };
            let n = usize::arbitrary(g) % 18;
            for _ in 0..n {
                if bool::arbitrary(g) {
                    first.push(b' ');
                }
                first.extend(stat_word(g));
                first.push(b' ');
            }
            let second = match u8::arbitrary(g) % 4 {
                0 => b"OK:".to_vec(),
                1 => [b"OK:".as_slice(), &Vec::<u8>::arbitrary(g)].concat(),
                2 => b"BAD: x".to_vec(),
                _ => Vec::<u8>::arbitrary(g),
            };
            StatPayloads(first, second)
        }
    }

    /// The byte-level STAT parser decides as the `str`-based one did.
    #[quickcheck]
    fn stat_parse_matches_the_str_parser(p: StatPayloads) -> bool {
        StatReply::parse(&p.0, &p.1) == StatReply::parse_reference(&p.0, &p.1)
    }

    #[quickcheck]
    fn stat_parse_matches_on_raw_bytes(first: Vec<u8>, second: Vec<u8>) -> bool {
        let first = [b"OK: ".as_slice(), &first].concat();
        StatReply::parse(&first, &second) == StatReply::parse_reference(&first, &second)
    }

    #[test]
    fn stat_parse_matches_on_encoded_replies() {
        let mut g = quickcheck::Gen::new(64);
        for i in 0..2000u64 {
            use quickcheck::Arbitrary;
            let r = StatReply {
                file_type: FileType::from_number(i % 7).unwrap_or(FileType::Regular),
                mode: u32::arbitrary(&mut g),
                lmode: u32::arbitrary(&mut g),
                uid: u32::arbitrary(&mut g),
                gid: u32::arbitrary(&mut g),
                size: u64::arbitrary(&mut g),
                atime: i64::arbitrary(&mut g),
                mtime: i64::arbitrary(&mut g),
                ctime: i64::arbitrary(&mut g),
                makeholes: bool::arbitrary(&mut g),
                ino: i64::arbitrary(&mut g),
                nlink: i64::arbitrary(&mut g),
                dev: u64::arbitrary(&mut g),
                link_target: Vec::arbitrary(&mut g),
            };
            let [a, b] = r.encode();
            let got = StatReply::parse(&a.payload, &b.payload);
            assert_eq!(got, StatReply::parse_reference(&a.payload, &b.payload));
            assert!(got.is_ok());
        }
    }
}
