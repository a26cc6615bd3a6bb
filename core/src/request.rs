//! Request parsing: one transaction payload in, one typed [`Request`] out
//! (PROTOCOL.md §8.1, §8.4, §7.4).
//!
//! The real server finds the command word by prefix against a fixed table,
//! case-sensitively, and requires a space or the end of the C string right
//! after it; arguments are read with `sscanf`. This module accepts exactly
//! that language. Deciding what to *answer* (a refusal keeps the session, a
//! protocol error closes it) is the session's job; the parser only says
//! whether the request is well formed.

use bytes::Bytes;
use nom::{
    bytes::complete::{tag, take_while, take_while1},
    character::complete::digit1,
    combinator::{opt, recognize},
    sequence::pair,
    IResult,
};

use crate::frame::c_str;

/// Which command table applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Protocol v2/v3 inside TLS (`GetCommandNew`).
    Tls,
    /// Protocol v1 (`GetCommandClassic`).
    Classic,
}

/// The command words, in the order of 3.21's tables.
pub const TLS_COMMANDS: &[&str] = &[
    "EXEC",
    "GET",
    "OPENDIR",
    "SYNCH",
    "MD5",
    "VERSION",
    "VAR",
    "CONTEXT",
    "QUERY",
    "SCALLBACK",
    "COOKIE",
];

/// The classic table.
pub const CLASSIC_COMMANDS: &[&str] = &[
    "EXEC",
    "AUTH",
    "GET",
    "OPENDIR",
    "SYNCH",
    "CLASSES",
    "MD5",
    "SMD5",
    "CAUTH",
    "SAUTH",
    "SSYNCH",
    "SGET",
    "VERSION",
    "SOPENDIR",
    "VAR",
    "SVAR",
    "CONTEXT",
    "SCONTEXT",
    "SQUERY",
    "SCALLBACK",
];

/// Length of the digest carried by `MD5` (Community's `CF_DEFAULT_DIGEST`).
pub const MD5_LEN: usize = 16;
/// Offset of the ciphertext in an `S*` command payload (`CF_PROTO_OFFSET`).
pub const PROTO_OFFSET: usize = 16;
/// Offset of the challenge in an `SAUTH` payload (`CF_RSA_PROTO_OFFSET`).
pub const RSA_PROTO_OFFSET: usize = 24;

/// The classic encrypted command families (`S*`), whose plaintext is
/// another command that must be decrypted before it can be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encrypted {
    /// `SSYNCH`: an encrypted `SYNCH … STAT`.
    Synch,
    /// `SGET`: an encrypted `GET dummykey <path>`.
    Get,
    /// `SOPENDIR`: an encrypted `OPENDIR`.
    Opendir,
    /// `SMD5`: an encrypted `MD5` with its binary tail.
    Md5,
    /// `SVAR`: an encrypted `VAR`.
    Var,
    /// `SCONTEXT`: an encrypted `CONTEXT`.
    Context,
    /// `SQUERY`: an encrypted `QUERY` (Enterprise).
    Query,
}

/// A well-formed request. Paths and names are raw bytes: Unix paths need
/// not be UTF-8, and the server must look up exactly what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `EXEC[ args]`: a remote agent run; `args` is the text after the word.
    Exec {
        /// The text after the word (`-D`/`-b` options), unparsed.
        args: Vec<u8>,
    },
    /// `GET <bufsize> <path>`; `bufsize` already checked to be 1..=4096.
    Get {
        /// The client's block size (1..=4096).
        bufsize: u16,
        /// The file asked for, as sent.
        path: Vec<u8>,
    },
    /// `OPENDIR <dir>`.
    Opendir {
        /// The directory asked for, as sent.
        path: Vec<u8>,
    },
    /// `SYNCH <client time> STAT <path>`: a remote stat.
    Stat {
        /// The client's clock (for `denybadclocks`).
        client_time: i64,
        /// The path asked for, as sent.
        path: Vec<u8>,
    },
    /// `MD5 <path>\0\0<16-byte digest>`; a short tail is zero-padded as
    /// the C server's zeroed buffer does.
    Md5 {
        /// The file to compare.
        path: Vec<u8>,
        /// The client's digest of its copy.
        digest: [u8; MD5_LEN],
    },
    /// `VERSION`.
    Version,
    /// `VAR <name>`.
    Var {
        /// The literal handle asked for.
        name: Vec<u8>,
    },
    /// `CONTEXT <regex>`.
    Context {
        /// The class regex asked for.
        regex: Vec<u8>,
    },
    /// `QUERY <menu> …`: `args` is everything after the word.
    Query {
        /// Everything after the word.
        args: Vec<u8>,
    },
    /// `SCALLBACK …` (call-collect, Enterprise).
    CallMeBack,
    /// `COOKIE` (protocol v3).
    Cookie,
    /// Classic `AUTH` (obsolete; answered with a protocol error).
    Auth,
    /// Classic `CLASSES` (obsolete; answered with a protocol error).
    Classes,
    /// Classic `CAUTH <ip> <fqdn> <user> …`: the IP is ignored by the server.
    Cauth {
        /// The address the client claims (ignored, as by 3.21).
        ip: Vec<u8>,
        /// The client's host name as it sends it.
        fqdn: Vec<u8>,
        /// The user the client runs as.
        user: Vec<u8>,
    },
    /// Classic `SAUTH <flag> <clen> <nlen> [<enterprise>]` with its challenge.
    Sauth {
        /// `y`/`n`: whether the client knows the server's key already.
        flag: u8,
        /// Length of the encrypted challenge.
        clen: usize,
        /// Length of the challenge's plaintext nonce.
        nlen: usize,
        /// The Enterprise flag, when sent.
        enterprise: Option<u8>,
        /// The encrypted challenge bytes.
        challenge: Bytes,
    },
    /// A classic `S*` command: ciphertext still to be decrypted.
    Encrypted {
        /// Which `S*` command it is.
        kind: Encrypted,
        /// Ciphertext length the client announced.
        clen: usize,
        /// `SGET`'s block size, where the command carries one.
        blocksize: Option<i64>,
        /// The ciphertext, still encrypted with the session key.
        ciphertext: Bytes,
    },
}

/// What is wrong with a request. Every variant but [`RequestError::Empty`]
/// is a protocol error: 3.21 answers `BAD: Request denied` and closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The payload starts with NUL; 3.21 logs "Got NULL transmission" and ignores it.
    #[error("Got NULL transmission")]
    Empty,
    /// No command of this dialect's table matches.
    #[error("Unexpected protocol command: {0}")]
    Unknown(String),
    /// The command is known but its arguments do not scan.
    #[error("malformed {command} request: {why}")]
    Malformed {
        /// The command word.
        command: &'static str,
        /// What did not scan.
        why: &'static str,
    },
    /// `GET` with a buffer size outside 1..=4096.
    #[error("GET buffer size {0} out of bounds")]
    BadBufsize(i64),
    /// An encrypted command whose declared length disagrees with its payload.
    #[error("{command}: declared ciphertext length {declared} but {actual} bytes follow")]
    BadCipherLength {
        /// The command word.
        command: &'static str,
        /// The length in the request text.
        declared: i64,
        /// The bytes actually present after the offset.
        actual: usize,
    },
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The `" "` directive of `sscanf`: any amount of whitespace, none included.
fn ws(i: &[u8]) -> IResult<&[u8], &[u8]> {
    take_while(is_c_space)(i)
}

/// `%d` / `%ld`: whitespace, an optional sign, at least one digit.
/// Saturates instead of overflowing so huge values fail range checks.
fn int(i: &[u8]) -> IResult<&[u8], i64> {
    let (i, _) = ws(i)?;
    let (i, s) = recognize(pair(opt(nom::branch::alt((tag("+"), tag("-")))), digit1))(i)?;
    let neg = s[0] == b'-';
    let digits = s.iter().filter(|b| b.is_ascii_digit());
    let mut v: i64 = 0;
    for d in digits {
        v = v.saturating_mul(10).saturating_add(i64::from(d - b'0'));
    }
    Ok((i, if neg { -v } else { v }))
}

/// `" %[^\n]"`: skip whitespace, then a non-empty run up to a newline.
fn rest_of_line(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (i, _) = ws(i)?;
    take_while1(|b| b != b'\n')(i)
}

/// `%s`: skip whitespace, then a non-empty run of non-whitespace.
fn word(i: &[u8]) -> IResult<&[u8], &[u8]> {
    let (i, _) = ws(i)?;
    take_while1(|b| !is_c_space(b))(i)
}

/// Match `command` at the start of the C string, followed by a space or the end.
fn command_word(s: &[u8], table: &[&'static str]) -> Option<&'static str> {
    table
        .iter()
        .copied()
        .find(|w| s.starts_with(w.as_bytes()) && matches!(s.get(w.len()), None | Some(b' ')))
}

fn malformed(command: &'static str, why: &'static str) -> RequestError {
    RequestError::Malformed { command, why }
}

/// Parse one request payload under `dialect`'s command table.
///
/// Contract: never panics, allocates at most the payload's size, and
/// returns `Err` for anything the real server would reject as a protocol
/// error. Refusals (ACL, missing file) are not decided here.
pub fn parse_request(payload: &[u8], dialect: Dialect) -> Result<Request, RequestError> {
    let s = c_str(payload);
    if s.is_empty() {
        return Err(RequestError::Empty);
    }
    let table = match dialect {
        Dialect::Tls => TLS_COMMANDS,
        Dialect::Classic => CLASSIC_COMMANDS,
    };
    let Some(cmd) = command_word(s, table) else {
        let w = s.split(|&b| b == b' ').next().unwrap_or(s);
        return Err(RequestError::Unknown(
            String::from_utf8_lossy(&w[..w.len().min(64)]).into_owned(),
        ));
    };
    let args = &s[cmd.len()..];
    match cmd {
        "EXEC" => {
            // 3.21 hands DoExec2 the whole C string after the word, only
            // spaces and tabs skipped: a newline stays inside the class
            // list it ends up in, and that token is refused (issue 18
            // finding 4: `-D role1\n-D x` is denied, not run as `-D role1`)
            let start = args
                .iter()
                .position(|b| *b != b' ' && *b != b'\t')
                .unwrap_or(args.len());
            Ok(Request::Exec {
                args: args[start..].to_vec(),
            })
        }
        "GET" => {
            let (i, bufsize) = int(args).map_err(|_| malformed("GET", "no buffer size"))?;
            let (_, path) = rest_of_line(i).map_err(|_| malformed("GET", "no path"))?;
            if !(1..=4096).contains(&bufsize) {
                return Err(RequestError::BadBufsize(bufsize));
            }
            Ok(Request::Get {
                bufsize: bufsize as u16,
                path: path.to_vec(),
            })
        }
        "OPENDIR" => {
            let (_, path) = rest_of_line(args).map_err(|_| malformed("OPENDIR", "no directory"))?;
            Ok(Request::Opendir {
                path: path.to_vec(),
            })
        }
        "SYNCH" => {
            let p = |i| -> IResult<&[u8], (i64, &[u8])> {
                let (i, t) = int(i)?;
                let (i, _) = ws(i)?;
                let (i, _) = tag("STAT")(i)?;
                let (i, path) = rest_of_line(i)?;
                Ok((i, (t, path)))
            };
            let (_, (client_time, path)) =
                p(args).map_err(|_| malformed("SYNCH", "expected SYNCH <time> STAT <path>"))?;
            if client_time == 0 {
                return Err(malformed("SYNCH", "zero client time"));
            }
            Ok(Request::Stat {
                client_time,
                path: path.to_vec(),
            })
        }
        "MD5" => {
            let (_, path) = rest_of_line(args).map_err(|_| malformed("MD5", "no path"))?;
            let mut digest = [0u8; MD5_LEN];
            let tail = payload.get(s.len() + 2..).unwrap_or(&[]);
            let n = tail.len().min(MD5_LEN);
            digest[..n].copy_from_slice(&tail[..n]);
            Ok(Request::Md5 {
                path: path.to_vec(),
                digest,
            })
        }
        "VERSION" => Ok(Request::Version),
        "VAR" => {
            let (_, name) = rest_of_line(args).map_err(|_| malformed("VAR", "no name"))?;
            Ok(Request::Var {
                name: name.to_vec(),
            })
        }
        "CONTEXT" => {
            let (_, regex) = rest_of_line(args).map_err(|_| malformed("CONTEXT", "no regex"))?;
            Ok(Request::Context {
                regex: regex.to_vec(),
            })
        }
        "QUERY" => {
            let (_, a) = rest_of_line(args).map_err(|_| malformed("QUERY", "no query"))?;
            Ok(Request::Query { args: a.to_vec() })
        }
        "SCALLBACK" => Ok(Request::CallMeBack),
        "COOKIE" => Ok(Request::Cookie),
        "AUTH" => Ok(Request::Auth),
        "CLASSES" => Ok(Request::Classes),
        "CAUTH" => {
            let p = |i| -> IResult<&[u8], (&[u8], &[u8], &[u8])> {
                let (i, ip) = word(i)?;
                let (i, fqdn) = word(i)?;
                let (i, user) = word(i)?;
                Ok((i, (ip, fqdn, user)))
            };
            let (_, (ip, fqdn, user)) =
                p(args).map_err(|_| malformed("CAUTH", "expected CAUTH <ip> <fqdn> <user>"))?;
            let cap = |b: &[u8]| b[..b.len().min(255)].to_vec();
            Ok(Request::Cauth {
                ip: cap(ip),
                fqdn: cap(fqdn),
                user: cap(user),
            })
        }
        "SAUTH" => parse_sauth(args, payload),
        "SSYNCH" => encrypted(Encrypted::Synch, "SSYNCH", args, payload, false),
        "SGET" => encrypted(Encrypted::Get, "SGET", args, payload, true),
        "SOPENDIR" => encrypted(Encrypted::Opendir, "SOPENDIR", args, payload, false),
        "SMD5" => encrypted(Encrypted::Md5, "SMD5", args, payload, false),
        "SVAR" => encrypted(Encrypted::Var, "SVAR", args, payload, false),
        "SCONTEXT" => encrypted(Encrypted::Context, "SCONTEXT", args, payload, false),
        "SQUERY" => encrypted(Encrypted::Query, "SQUERY", args, payload, false),
        _ => Err(RequestError::Unknown(cmd.to_string())),
    }
}

fn parse_sauth(args: &[u8], payload: &[u8]) -> Result<Request, RequestError> {
    let p = |i| -> IResult<&[u8], (&[u8], i64, i64, Option<&[u8]>)> {
        let (i, flag) = word(i)?;
        let (i, clen) = int(i)?;
        let (i, nlen) = int(i)?;
        let (i, ent) = opt(word)(i)?;
        Ok((i, (flag, clen, nlen, ent)))
    };
    let (_, (flag, clen, nlen, ent)) =
        p(args).map_err(|_| malformed("SAUTH", "expected SAUTH <y|n> <clen> <nlen> [c]"))?;
    // 2 * CF_NONCELEN bounds both lengths.
    if !(1..=512).contains(&clen) || !(1..=512).contains(&nlen) {
        return Err(malformed("SAUTH", "challenge lengths outside 1..512"));
    }
    let clen = clen as usize;
    let actual = payload.len().saturating_sub(RSA_PROTO_OFFSET);
    if payload.len() < RSA_PROTO_OFFSET + clen {
        return Err(RequestError::BadCipherLength {
            command: "SAUTH",
            declared: clen as i64,
            actual,
        });
    }
    Ok(Request::Sauth {
        flag: flag[0],
        clen,
        nlen: nlen as usize,
        enterprise: ent.map(|e| e[0]),
        challenge: Bytes::copy_from_slice(&payload[RSA_PROTO_OFFSET..RSA_PROTO_OFFSET + clen]),
    })
}

fn encrypted(
    kind: Encrypted,
    command: &'static str,
    args: &[u8],
    payload: &[u8],
    with_blocksize: bool,
) -> Result<Request, RequestError> {
    let (i, clen) = int(args).map_err(|_| malformed(command, "no ciphertext length"))?;
    let blocksize = if with_blocksize {
        Some(int(i).map_err(|_| malformed(command, "no block size"))?.1)
    } else {
        None
    };
    let actual = payload.len().saturating_sub(PROTO_OFFSET);
    // The server requires received == 16 + clen exactly and clen < 4096.
    if clen <= 0 || clen >= 4096 || payload.len() != PROTO_OFFSET + clen as usize {
        return Err(RequestError::BadCipherLength {
            command,
            declared: clen,
            actual,
        });
    }
    Ok(Request::Encrypted {
        kind,
        clen: clen as usize,
        blocksize,
        ciphertext: Bytes::copy_from_slice(&payload[PROTO_OFFSET..]),
    })
}

impl Request {
    /// The request as 3.21's verbose log shows it (`Received:` lines and
    /// `REFUSAL to user='%s' of request: %s`), with any binary tail dropped.
    pub fn describe(payload: &[u8]) -> String {
        String::from_utf8_lossy(c_str(payload)).into_owned()
    }
}

/// Build a client request payload for `SYNCH <time> STAT <path>`.
pub fn encode_stat(client_time: i64, path: &[u8]) -> Vec<u8> {
    // Sized once: the request is built for every file of every run.
    let mut v = Vec::with_capacity(32 + path.len());
    v.extend_from_slice(b"SYNCH ");
    v.extend_from_slice(client_time.to_string().as_bytes());
    v.extend_from_slice(b" STAT ");
    v.extend_from_slice(path);
    v
}

/// Build `GET <bufsize> <path>`.
pub fn encode_get(bufsize: u16, path: &[u8]) -> Vec<u8> {
    let mut v = format!("GET {bufsize} ").into_bytes();
    v.extend_from_slice(path);
    v
}

/// Build `OPENDIR <dir>`.
pub fn encode_opendir(path: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + path.len());
    v.extend_from_slice(b"OPENDIR ");
    v.extend_from_slice(path);
    v
}

/// Build `MD5 <path>\0\0<digest>`, the layout `CompareHashNet` sends.
pub fn encode_md5(path: &[u8], digest: &[u8; MD5_LEN]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + path.len() + 2 + MD5_LEN);
    v.extend_from_slice(b"MD5 ");
    v.extend_from_slice(path);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(digest);
    v
}

/// Append the decimal form of `v` (what `v.to_string()` gives) to `out`.
fn push_decimal(out: &mut Vec<u8>, v: i64) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append `SYNCH <client_time> STAT <path>` to `out` (the bytes
/// [`encode_stat`] returns, without a buffer of its own).
pub fn write_stat(out: &mut Vec<u8>, client_time: i64, path: &[u8]) {
    out.extend_from_slice(b"SYNCH ");
    push_decimal(out, client_time);
    out.extend_from_slice(b" STAT ");
    out.extend_from_slice(path);
}

/// Append `GET <bufsize> <path>` to `out` (as [`encode_get`]).
pub fn write_get(out: &mut Vec<u8>, bufsize: u16, path: &[u8]) {
    out.extend_from_slice(b"GET ");
    push_decimal(out, i64::from(bufsize));
    out.push(b' ');
    out.extend_from_slice(path);
}

/// Append `OPENDIR <dir>` to `out` (as [`encode_opendir`]).
pub fn write_opendir(out: &mut Vec<u8>, path: &[u8]) {
    out.extend_from_slice(b"OPENDIR ");
    out.extend_from_slice(path);
}

/// Append `MD5 <path>\0\0<digest>` to `out` (as [`encode_md5`]).
pub fn write_md5(out: &mut Vec<u8>, path: &[u8], digest: &[u8; MD5_LEN]) {
    out.extend_from_slice(b"MD5 ");
    out.extend_from_slice(path);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(digest);
}

/// The bounded set of labels request metrics use: each command timed
/// separately, and `other` (last) for everything else.
pub const METRIC_LABELS: [&str; 12] = [
    "GET",
    "STAT",
    "OPENDIR",
    "MD5",
    "VERSION",
    "VAR",
    "CONTEXT",
    "QUERY",
    "COOKIE",
    "EXEC",
    "SCALLBACK",
    "other",
];

/// The metric label (one of [`METRIC_LABELS`]) for a request's text:
/// its first word, with `SYNCH … STAT` counted as `STAT`, and `other`
/// for anything not in the set, so a peer cannot grow the label set.
#[must_use]
pub fn metric_label(request: &[u8]) -> &'static str {
    let word = request.split(|&b| b == b' ').next().unwrap_or(b"");
    if word == b"SYNCH" {
        return "STAT";
    }
    METRIC_LABELS
        .iter()
        .copied()
        .find(|c| c.as_bytes() == word && *c != "other")
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {

    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(metric_label(b"SYNCH 123 STAT /x"), "STAT");
        assert_eq!(metric_label(b"GET 4096 /x"), "GET");
        assert_eq!(metric_label(b"VERSION"), "VERSION");
        assert_eq!(metric_label(b"other"), "other");
        assert_eq!(metric_label(b"\x01weird"), "other");
    }

    fn tls(p: &[u8]) -> Result<Request, RequestError> {
        parse_request(p, Dialect::Tls)
    }

    #[test]
    fn prefix_and_case_rules() {
        assert_eq!(tls(b"VERSION"), Ok(Request::Version));
        assert_eq!(tls(b"VERSION trailing"), Ok(Request::Version));
        assert!(matches!(tls(b"version"), Err(RequestError::Unknown(_))));
        assert!(matches!(tls(b"GETx 1 /a"), Err(RequestError::Unknown(_))));
        assert!(matches!(tls(b"GETPATCH 00"), Err(RequestError::Unknown(_))));
        assert!(matches!(tls(b"FROBNICATE"), Err(RequestError::Unknown(_))));
        assert!(matches!(tls(b"SGET 1 2"), Err(RequestError::Unknown(_))));
        assert!(matches!(
            tls(b"CAUTH 1 2 3 0"),
            Err(RequestError::Unknown(_))
        ));
        assert_eq!(tls(b"\0VERSION"), Err(RequestError::Empty));
        assert_eq!(tls(b"VERSION\0garbage"), Ok(Request::Version));
    }

    #[test]
    fn get_rules() {
        assert_eq!(
            tls(b"GET 2048 /tmp/a b"),
            Ok(Request::Get {
                bufsize: 2048,
                path: b"/tmp/a b".to_vec()
            })
        );
        assert_eq!(
            tls(b"GET 4096 /x"),
            Ok(Request::Get {
                bufsize: 4096,
                path: b"/x".to_vec()
            })
        );
        assert_eq!(tls(b"GET 0 /x"), Err(RequestError::BadBufsize(0)));
        assert_eq!(tls(b"GET 4097 /x"), Err(RequestError::BadBufsize(4097)));
        assert_eq!(tls(b"GET 5000 /x"), Err(RequestError::BadBufsize(5000)));
        assert!(matches!(
            tls(b"GET 2048"),
            Err(RequestError::Malformed { .. })
        ));
        assert!(matches!(
            tls(b"GET /x"),
            Err(RequestError::Malformed { .. })
        ));
        assert_eq!(
            tls(b"GET 12 rel/path\nignored"),
            Ok(Request::Get {
                bufsize: 12,
                path: b"rel/path".to_vec()
            })
        );
    }

    #[test]
    fn stat_opendir_md5() {
        assert_eq!(
            tls(b"SYNCH 1795415678 STAT /tmp/cfe-lab/data/share/hello.txt"),
            Ok(Request::Stat {
                client_time: 1795415678,
                path: b"/tmp/cfe-lab/data/share/hello.txt".to_vec()
            })
        );
        assert!(matches!(
            tls(b"SYNCH abc"),
            Err(RequestError::Malformed { .. })
        ));
        assert!(matches!(
            tls(b"SYNCH 12 STAT"),
            Err(RequestError::Malformed { .. })
        ));
        assert!(matches!(
            tls(b"OPENDIR"),
            Err(RequestError::Malformed { .. })
        ));
        assert_eq!(
            tls(b"OPENDIR /a"),
            Ok(Request::Opendir {
                path: b"/a".to_vec()
            })
        );
        let p = encode_md5(b"/p/f", &[7u8; 16]);
        assert_eq!(
            tls(&p),
            Ok(Request::Md5 {
                path: b"/p/f".to_vec(),
                digest: [7u8; 16]
            })
        );
        let mut short = b"MD5 /p/f\0\0\x01".to_vec();
        short.truncate(11);
        let mut want = [0u8; 16];
        want[0] = 1;
        assert_eq!(
            tls(&short),
            Ok(Request::Md5 {
                path: b"/p/f".to_vec(),
                digest: want
            })
        );
    }

    #[test]
    fn exec_var_context_query() {
        assert_eq!(tls(b"EXEC"), Ok(Request::Exec { args: vec![] }));
        assert_eq!(
            tls(b"EXEC -Dfoo,bar -b baz"),
            Ok(Request::Exec {
                args: b"-Dfoo,bar -b baz".to_vec()
            })
        );
        // issue 18 finding 4: the newline stays in the arguments, as 3.21
        // hands DoExec2 the whole C string
        assert_eq!(
            tls(b"EXEC \t-D role1\n-D x"),
            Ok(Request::Exec {
                args: b"-D role1\n-D x".to_vec()
            })
        );
        assert_eq!(
            tls(b"VAR myvar"),
            Ok(Request::Var {
                name: b"myvar".to_vec()
            })
        );
        assert_eq!(
            tls(b"CONTEXT .*"),
            Ok(Request::Context {
                regex: b".*".to_vec()
            })
        );
        assert_eq!(
            tls(b"QUERY delta 1 2"),
            Ok(Request::Query {
                args: b"delta 1 2".to_vec()
            })
        );
        assert_eq!(tls(b"COOKIE"), Ok(Request::Cookie));
        assert_eq!(tls(b"SCALLBACK 12"), Ok(Request::CallMeBack));
        assert!(matches!(tls(b"VAR"), Err(RequestError::Malformed { .. })));
    }

    #[test]
    fn classic_forms() {
        let c = |p: &[u8]| parse_request(p, Dialect::Classic);
        assert_eq!(
            c(b"CAUTH 127.0.0.1 localhost root 0"),
            Ok(Request::Cauth {
                ip: b"127.0.0.1".to_vec(),
                fqdn: b"localhost".to_vec(),
                user: b"root".to_vec()
            })
        );
        let mut sauth = b"SAUTH n 37 37 c".to_vec();
        sauth.resize(24, 0);
        sauth.extend_from_slice(&[9u8; 37]);
        match c(&sauth) {
            Ok(Request::Sauth {
                flag: b'n',
                clen: 37,
                nlen: 37,
                enterprise: Some(b'c'),
                challenge,
            }) => {
                assert_eq!(challenge.len(), 37)
            }
            other => panic!("{other:?}"),
        }
        let mut sget = b"SGET   48 2048".to_vec();
        sget.resize(16, 0);
        sget.extend_from_slice(&[1u8; 48]);
        assert!(matches!(
            c(&sget),
            Ok(Request::Encrypted {
                kind: Encrypted::Get,
                clen: 48,
                blocksize: Some(2048),
                ..
            })
        ));
        sget.push(0);
        assert!(matches!(
            c(&sget),
            Err(RequestError::BadCipherLength { .. })
        ));
        assert_eq!(c(b"AUTH x"), Ok(Request::Auth));
        assert!(matches!(c(b"COOKIE"), Err(RequestError::Unknown(_))));
    }

    #[quickcheck]
    fn never_panics(p: Vec<u8>, classic: bool) -> bool {
        let d = if classic {
            Dialect::Classic
        } else {
            Dialect::Tls
        };
        let _ = parse_request(&p, d);
        true
    }

    #[quickcheck]
    fn client_encoders_round_trip(t: u32, path: Vec<u8>, digest: Vec<u8>) -> bool {
        let path: Vec<u8> = std::iter::once(b'/')
            .chain(path.into_iter().filter(|&b| b != 0 && b != b'\n').take(200))
            .collect();
        let t = i64::from(t) + 1;
        let mut d = [0u8; 16];
        for (i, b) in digest.iter().take(16).enumerate() {
            d[i] = *b;
        }
        tls(&encode_stat(t, &path))
            == Ok(Request::Stat {
                client_time: t,
                path: path.clone(),
            })
            && tls(&encode_get(2048, &path))
                == Ok(Request::Get {
                    bufsize: 2048,
                    path: path.clone(),
                })
            && tls(&encode_opendir(&path)) == Ok(Request::Opendir { path: path.clone() })
            && tls(&encode_md5(&path, &d)) == Ok(Request::Md5 { path, digest: d })
    }

    #[quickcheck]
    fn writers_match_the_encoders(
        prefix: Vec<u8>,
        path: Vec<u8>,
        client_time: i64,
        bufsize: u16,
        d: Vec<u8>,
    ) -> bool {
        let mut digest = [0u8; MD5_LEN];
        for (i, b) in d.iter().take(MD5_LEN).enumerate() {
            digest[i] = *b;
        }
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = prefix.clone();
            f(&mut out);
            out
        };
        let after = |v: Vec<u8>| [prefix.as_slice(), &v].concat();
        let times = [client_time, 0, -1, i64::MIN, i64::MAX, client_time / 1000];
        times
            .iter()
            .all(|&t| with(&|o| write_stat(o, t, &path)) == after(encode_stat(t, &path)))
            && with(&|o| write_get(o, bufsize, &path)) == after(encode_get(bufsize, &path))
            && with(&|o| write_opendir(o, &path)) == after(encode_opendir(&path))
            && with(&|o| write_md5(o, &path, &digest)) == after(encode_md5(&path, &digest))
    }
}
