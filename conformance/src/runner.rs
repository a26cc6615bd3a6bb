//! Replays transcripts through rcf-core and checks that the core would
//! produce (and accept) exactly what the real peers did.
//!
//! This level covers framing, the version banner and negotiation,
//! IDENTITY/WELCOME, request parsing, and the fixed replies (VERSION,
//! refusals, protocol errors, STAT pairs, OPENDIR packets, MD5 answers).
//! Whole-session replay (files, ACLs, trust) builds on it.

use rcf_core::{banner, frame, identity, reply, request};
use regex::Regex;

use crate::transcript::{escape, Dir, Kind, Record, Transcript};

/// The outcome of replaying one transcript.
#[derive(Debug, Default)]
pub struct Report {
    /// Transcript name.
    pub name: String,
    /// How many individual checks ran.
    pub checks: usize,
    /// Which kinds of checks ran (for coverage assertions).
    pub covered: Vec<&'static str>,
    /// Every mismatch, with the record's line.
    pub failures: Vec<String>,
    /// Things this level cannot judge, with the reason.
    pub notes: Vec<String>,
}

impl Report {
    fn ok(&mut self, what: &'static str) {
        self.checks += 1;
        if !self.covered.contains(&what) {
            self.covered.push(what);
        }
    }

    fn check(
        &mut self,
        what: &'static str,
        cond: bool,
        rec: &Record,
        msg: impl FnOnce() -> String,
    ) {
        if cond {
            self.ok(what);
        } else {
            self.checks += 1;
            self.failures
                .push(format!("line {}: {what}: {}", rec.line, msg()));
        }
    }

    /// Whether a kind of check ran at least once.
    pub fn covers(&self, what: &str) -> bool {
        self.covered.contains(&what)
    }
}

/// What the last client request was, to judge the server's answer.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Nothing,
    Version,
    ProtocolError,
    Stat,
    Opendir,
    Md5,
    Get,
    Var,
    Context,
    ExecClasses,
    ExecOutput,
}

/// Replay `t` through the core's codecs.
pub fn check_codec(t: &Transcript) -> Report {
    let mut r = Report {
        name: t.name.clone(),
        ..Default::default()
    };
    let auth = t.server_is_authoritative();
    let dialect = if t.is_tls() {
        request::Dialect::Tls
    } else {
        request::Dialect::Classic
    };
    let recs = &t.records;

    // 1. Framing: every transaction header parses, matches its payload, and is canonical.
    for rec in recs {
        if let Kind::Txn { header, payload } = &rec.kind {
            match frame::parse_header(header) {
                Ok((status, len)) => {
                    r.check("framing", len == payload.len(), rec, || {
                        format!("header says {len}, payload has {}", payload.len())
                    });
                    let canon = frame::encode_header(status, len).ok();
                    r.check("framing", canon.as_ref() == Some(header), rec, || {
                        format!("non-canonical header {}", escape(header))
                    });
                }
                Err(e) => r.check("framing", false, rec, || {
                    format!("header does not parse: {e}")
                }),
            }
            if let Some(rx) = &rec.regex {
                match Regex::new(rx) {
                    Ok(re) => r.check("annotation", re.is_match(&escape(payload)), rec, || {
                        format!("payload does not match its own annotation {rx}")
                    }),
                    Err(e) => r.check("annotation", false, rec, || format!("bad regex: {e}")),
                }
            }
        }
    }

    // 2. Identification dialog (TLS only).
    let mut client_lines = 0;
    let mut version_ok = None;
    let mut identity: Option<Result<identity::Identity, identity::IdentityError>> = None;
    let mut i = 0;
    if t.is_tls() {
        while i < recs.len() {
            let rec = &recs[i];
            match (&rec.dir, &rec.kind) {
                (Dir::Server, Kind::Line(l)) if client_lines == 0 => {
                    if auth {
                        r.check("banner", *l == banner::server_banner(), rec, || {
                            format!("banner {}", escape(l))
                        });
                    }
                    r.check(
                        "banner",
                        banner::client_choose(None, l).is_ok(),
                        rec,
                        || "client would refuse this banner".into(),
                    );
                }
                (Dir::Client, Kind::Line(l)) if client_lines == 0 => {
                    client_lines += 1;
                    version_ok = Some(banner::server_accept(l).is_ok());
                    r.ok("version-line");
                }
                (Dir::Client, Kind::Line(l)) if client_lines == 1 => {
                    client_lines += 1;
                    identity = Some(identity::parse_identity(l));
                    r.ok("identity-line");
                }
                (Dir::Server, Kind::Line(l)) => {
                    // The welcome: what the core would send must match byte for byte.
                    let ours = match (&version_ok, &identity) {
                        (Some(true), Some(Ok(id))) => {
                            Some(identity::encode_welcome(id.username_or_empty()))
                        }
                        _ => None,
                    };
                    r.check(
                        "welcome",
                        ours.as_deref() == Some(l.as_slice()),
                        rec,
                        || {
                            format!(
                                "server sent {}, core would send {:?}",
                                escape(l),
                                ours.as_deref().map(escape)
                            )
                        },
                    );
                    r.check("welcome", identity::is_welcome(l), rec, || {
                        "client would not accept it".into()
                    });
                    i += 1;
                    break;
                }
                (Dir::Server, Kind::Eof) => {
                    // The server hung up during identification: the core must refuse too,
                    // unless the cause is trust, which the session (not the codec) decides.
                    let refused = version_ok == Some(false) || matches!(identity, Some(Err(_)));
                    let trust = t.name.contains("untrusted");
                    if trust && !refused {
                        r.notes.push(
                            "hang-up caused by key trust: judged by the session, not the codec"
                                .into(),
                        );
                        r.ok("identity-trust-note");
                    } else if auth {
                        r.check("refusal", refused, rec, || {
                            format!("server hung up but the core would accept (version ok: {version_ok:?}, identity: {identity:?})")
                        });
                    }
                    return r;
                }
                _ => {}
            }
            i += 1;
        }
    }

    // 3. Requests and the fixed replies that answer them.
    let mut expect = Expect::Nothing;
    let mut classic_handshake_txns = if t.is_tls() { 0 } else { 6 };
    let mut stat_first: Option<Vec<u8>> = None;
    let mut opendir: Vec<(frame::Status, Vec<u8>)> = Vec::new();
    while i < recs.len() {
        let rec = &recs[i];
        i += 1;
        match (&rec.dir, &rec.kind) {
            (Dir::Client, Kind::Txn { header, payload }) => {
                if classic_handshake_txns > 0 {
                    classic_handshake_txns -= 1;
                    let want = match 6 - classic_handshake_txns {
                        1 => Some("CAUTH"),
                        2 => Some("SAUTH"),
                        _ => None,
                    };
                    if let Some(word) = want {
                        let ok = matches!(
                            (word, request::parse_request(payload, dialect)),
                            ("CAUTH", Ok(request::Request::Cauth { .. }))
                                | ("SAUTH", Ok(request::Request::Sauth { .. }))
                        );
                        r.check("classic-handshake", ok, rec, || {
                            format!("{word} does not parse")
                        });
                    }
                    continue;
                }
                if expect == Expect::ExecClasses {
                    if payload.starts_with(reply::TERMINATOR) {
                        expect = Expect::ExecOutput;
                    }
                    r.ok("exec-classes");
                    continue;
                }
                let (status, _) = frame::parse_header(header).unwrap_or((frame::Status::Done, 0));
                let _ = status;
                let parsed = request::parse_request(payload, dialect);
                // Protocol error if the server's next records are BAD: Request denied then EOF.
                let next_server: Vec<&Record> = recs[i..]
                    .iter()
                    .filter(|x| x.dir == Dir::Server)
                    .take(2)
                    .collect();
                let server_denied = matches!(next_server.first().map(|x| &x.kind),
                    Some(Kind::Txn { payload: p, .. }) if p.as_slice() == reply::REQUEST_DENIED)
                    && matches!(next_server.get(1).map(|x| &x.kind), Some(Kind::Eof) | None);
                if auth && server_denied {
                    r.check(
                        "request-parse",
                        matches!(parsed, Err(ref e) if *e != request::RequestError::Empty),
                        rec,
                        || {
                            format!(
                                "server called {} a protocol error, core parsed {parsed:?}",
                                escape(payload)
                            )
                        },
                    );
                    expect = Expect::ProtocolError;
                    continue;
                }
                r.check("request-parse", parsed.is_ok(), rec, || {
                    format!("{}: {parsed:?}", escape(payload))
                });
                expect = match parsed {
                    Ok(request::Request::Version) => Expect::Version,
                    Ok(request::Request::Stat { .. }) => Expect::Stat,
                    Ok(request::Request::Opendir { .. }) => Expect::Opendir,
                    Ok(request::Request::Md5 { .. }) => Expect::Md5,
                    Ok(request::Request::Get { .. }) => Expect::Get,
                    Ok(request::Request::Var { .. }) => Expect::Var,
                    Ok(request::Request::Context { .. }) => Expect::Context,
                    Ok(request::Request::Exec { .. }) => Expect::ExecClasses,
                    _ => Expect::Nothing,
                };
                stat_first = None;
                opendir.clear();
            }
            (Dir::Server, Kind::Txn { header, payload }) if auth => {
                let status = frame::parse_header(header)
                    .map(|h| h.0)
                    .unwrap_or(frame::Status::Done);
                let refusal = payload.as_slice() == reply::FAILED;
                match expect {
                    Expect::Version => {
                        r.check("reply-version", *payload == reply::version(), rec, || {
                            escape(payload)
                        });
                        expect = Expect::Nothing;
                    }
                    Expect::ProtocolError => {
                        r.check(
                            "reply-request-denied",
                            payload.as_slice() == reply::REQUEST_DENIED,
                            rec,
                            || escape(payload),
                        );
                    }
                    Expect::Md5 => {
                        let ok = payload.as_slice() == reply::CFD_TRUE
                            || payload.as_slice() == reply::CFD_FALSE
                            || refusal;
                        r.check("reply-md5", ok, rec, || escape(payload));
                        expect = Expect::Nothing;
                    }
                    Expect::Var | Expect::Context => {
                        let ok = refusal || payload.as_slice() == reply::NOT_FOUND;
                        r.check("reply-refusal", ok, rec, || escape(payload));
                        expect = Expect::Nothing;
                    }
                    Expect::Stat if refusal => {
                        r.ok("reply-refusal");
                        expect = Expect::Nothing;
                    }
                    Expect::Stat => match stat_first.take() {
                        None => stat_first = Some(payload.clone()),
                        Some(first) => {
                            match reply::StatReply::parse(&first, payload) {
                                Ok(s) => {
                                    let [a, b] = s.encode();
                                    r.check(
                                        "reply-stat",
                                        a.payload.as_ref() == first.as_slice(),
                                        rec,
                                        || {
                                            format!(
                                                "re-encoded {} vs {}",
                                                escape(&a.payload),
                                                escape(&first)
                                            )
                                        },
                                    );
                                    // A 1-byte link text reads as "no link" (libcfnet quirk), so only
                                    // compare the second reply when the parser kept it.
                                    if payload.len() > 4 || payload.as_slice() == b"OK:" {
                                        r.check(
                                            "reply-stat",
                                            b.payload.as_ref() == payload.as_slice(),
                                            rec,
                                            || {
                                                format!(
                                                    "re-encoded {} vs {}",
                                                    escape(&b.payload),
                                                    escape(payload)
                                                )
                                            },
                                        );
                                    }
                                }
                                Err(e) => r.check("reply-stat", false, rec, || format!("{e}")),
                            }
                            expect = Expect::Nothing;
                        }
                    },
                    Expect::Opendir if refusal => {
                        r.ok("reply-refusal");
                        expect = Expect::Nothing;
                    }
                    Expect::Opendir => {
                        opendir.push((status, payload.clone()));
                        if status == frame::Status::Done {
                            // Re-pack the names in the order seen: the core must cut identically.
                            let mut names = Vec::new();
                            let mut parse_ok = true;
                            for (_, p) in &opendir {
                                match reply::parse_opendir_packet(p) {
                                    Ok(reply::OpendirChunk::Names(n))
                                    | Ok(reply::OpendirChunk::Last(n)) => names.extend(n),
                                    Err(_) => parse_ok = false,
                                }
                            }
                            r.check("reply-opendir", parse_ok, rec, || {
                                "a packet does not parse".into()
                            });
                            let ours = reply::opendir_packets(names.iter().map(|n| n.as_slice()));
                            let same = ours.len() == opendir.len()
                                && ours.iter().zip(&opendir).all(|(a, (s, p))| {
                                    a.status == *s && a.payload.as_ref() == p.as_slice()
                                });
                            r.check("reply-opendir", same, rec, || {
                                "core packs the listing differently".into()
                            });
                            opendir.clear();
                            expect = Expect::Nothing;
                        }
                    }
                    Expect::ExecOutput | Expect::ExecClasses => {
                        if payload.starts_with(reply::TERMINATOR) {
                            r.check(
                                "reply-exec",
                                *payload == reply::exec_terminator(),
                                rec,
                                || escape(payload),
                            );
                            expect = Expect::Nothing;
                        } else {
                            r.ok("reply-exec");
                        }
                    }
                    _ => {}
                }
            }
            (Dir::Server, Kind::Raw(bytes)) if expect == Expect::Get => {
                // A refused GET arrives as a framed transaction inside the raw stream.
                if bytes.starts_with(b"t 59\0\0\0\0") {
                    let mut d = frame::Decoder::new();
                    let framed = d.push(bytes).ok().and_then(|_| d.poll().ok().flatten());
                    r.check(
                        "get-refusal",
                        framed
                            .map(|t| t.payload.as_ref() == reply::FAILED)
                            .unwrap_or(false),
                        rec,
                        || escape(bytes),
                    );
                } else {
                    r.ok("get-data");
                }
                expect = Expect::Nothing;
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::parse;

    #[test]
    fn a_wrong_banner_is_caught() {
        let t = parse(
            "x",
            "# cfe-transcript 1\n# name: fake\n# roles: C = x, S = cf-serverd 3.21.0\n# tls: TLSv1_3\nS> LINE \"CFE_v3 cf-serverd 3.20.0\\n\"\nC> LINE \"CFE_v3 cf-agent 3.21.0\\n\"\nC> LINE \"IDENTITY USERNAME=root\\n\"\nS> LINE \"OK WELCOME USERNAME=bob\\n\"\n",
        )
        .unwrap();
        let rep = check_codec(&t);
        assert_eq!(rep.failures.len(), 2, "{:?}", rep.failures);
    }
}
