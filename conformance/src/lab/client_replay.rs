//! Replay a recorded transcript against rcf-core's client session: feed
//! the recorded server bytes in, and check that the session sends the
//! recorded client bytes (byte for byte, and matching the `~` regex where
//! one is given) and parses every reply as the recording says it should.
//!
//! The requests are taken from the recording's `C>` transactions (the
//! replay asks the session for the same STAT/GET/OPENDIR/MD5 with the same
//! arguments); the expected replies are derived from the `S>` records by a
//! deliberately simple reading, independent of the session's parser.

use std::collections::BTreeSet;

use rcf_core::client::{ClientRequest as Request, Config, Event, GetFailure, Now, Reply, Session};
use rcf_core::request::{self, Dialect};

use crate::transcript::{escape, Dir, Kind, Transcript};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Stat { ok: bool, size: Option<u64> },
    Get(Result<Vec<u8>, ()>),
    Listing(Result<BTreeSet<Vec<u8>>, ()>),
    Md5(Result<bool, ()>),
}

/// What one replay checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Client records compared byte for byte.
    pub client_records: usize,
    /// Replies checked against the recording.
    pub replies: usize,
    /// File bytes received through GET.
    pub file_bytes: usize,
}

fn wire(header: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut v = header.to_vec();
    v.extend_from_slice(payload);
    v
}

fn opendir_names(payload: &[u8]) -> Vec<Vec<u8>> {
    payload
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && *n != rcf_core::reply::TERMINATOR)
        .map(|n| n.to_vec())
        .collect()
}

/// Replay `t` against a fresh [`Session`]; `Err` names the first mismatch.
pub fn client_replay(t: &Transcript) -> Result<ReplayReport, String> {
    let now = Now {
        mono_ms: 0,
        unix_s: 1_795_415_949,
    };
    let mut s = Session::new(
        Config {
            version: None,
            username: "root".into(),
            timeout_ms: 30_000,
        },
        now,
    );
    let mut report = ReplayReport::default();
    let mut expects: Vec<(u64, Expect)> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut last_size: std::collections::HashMap<Vec<u8>, u64> = Default::default();
    let mut next_id = 1u64;
    let recs = &t.records;
    let mut i = 0;
    let drain = |s: &mut Session, events: &mut Vec<Event>| {
        events.extend(std::iter::from_fn(|| s.poll_event()))
    };
    while i < recs.len() {
        let r = &recs[i];
        let at = format!("{}:{}", t.name, r.line);
        match (r.dir, &r.kind) {
            (Dir::Server, Kind::Line(b)) | (Dir::Server, Kind::Raw(b)) => {
                s.handle_plaintext(now, b)
            }
            (Dir::Server, Kind::Txn { header, payload }) => {
                s.handle_plaintext(now, &wire(header, payload))
            }
            (Dir::Server, Kind::Eof) => s.handle_eof(now),
            (Dir::Client, Kind::Line(b)) => {
                let got = s.poll_record().ok_or(format!(
                    "{at}: session sent nothing, recording has {}",
                    escape(b)
                ))?;
                if &got != b {
                    return Err(format!(
                        "{at}: sent {} instead of {}",
                        escape(&got),
                        escape(b)
                    ));
                }
                report.client_records += 1;
            }
            (Dir::Client, Kind::Txn { header, payload }) => {
                let id = next_id;
                next_id += 1;
                let parsed = request::parse_request(payload, Dialect::Tls)
                    .map_err(|e| format!("{at}: recorded request does not parse: {e}"))?;
                // What the server says next (up to the next client record).
                let replies: Vec<&Kind> = recs[i + 1..]
                    .iter()
                    .take_while(|x| x.dir == Dir::Server)
                    .map(|x| &x.kind)
                    .collect();
                let txns: Vec<&[u8]> = replies
                    .iter()
                    .filter_map(|k| {
                        if let Kind::Txn { payload, .. } = k {
                            Some(payload.as_slice())
                        } else {
                            None
                        }
                    })
                    .collect();
                let raw: Vec<u8> = replies
                    .iter()
                    .filter_map(|k| {
                        if let Kind::Raw(b) = k {
                            Some(b.clone())
                        } else {
                            None
                        }
                    })
                    .flatten()
                    .collect();
                let (req, exp) = match parsed {
                    request::Request::Stat { client_time, path } => {
                        let first = txns.first().copied().unwrap_or(b"");
                        let ok = first.starts_with(b"OK:");
                        let size = ok
                            .then(|| {
                                String::from_utf8_lossy(first)
                                    .split_whitespace()
                                    .nth(6)
                                    .and_then(|n| n.parse().ok())
                            })
                            .flatten();
                        if let Some(sz) = size {
                            last_size.insert(path.clone(), sz);
                        }
                        (
                            Request::Stat { path, client_time },
                            Expect::Stat { ok, size },
                        )
                    }
                    request::Request::Get { path, .. } => {
                        let framed_refusal =
                            raw.len() > 13 && raw.starts_with(b"t ") && &raw[8..13] == b"BAD: ";
                        let size = if framed_refusal {
                            last_size.get(&path).copied().unwrap_or(4096)
                        } else {
                            raw.len() as u64
                        };
                        let size = last_size.get(&path).copied().unwrap_or(size);
                        (
                            Request::Get { path, size },
                            Expect::Get(if framed_refusal {
                                Err(())
                            } else {
                                Ok(raw.clone())
                            }),
                        )
                    }
                    request::Request::Opendir { path } => {
                        let bad = txns.first().is_some_and(|p| p.starts_with(b"BAD"));
                        let names: BTreeSet<Vec<u8>> =
                            txns.iter().flat_map(|p| opendir_names(p)).collect();
                        (
                            Request::Opendir { path },
                            Expect::Listing(if bad { Err(()) } else { Ok(names) }),
                        )
                    }
                    request::Request::Md5 { path, digest } => {
                        let p = txns.first().copied().unwrap_or(b"");
                        let e = if p == b"CFD_TRUE" {
                            Ok(true)
                        } else if p == b"CFD_FALSE" {
                            Ok(false)
                        } else {
                            Err(())
                        };
                        (Request::Md5 { path, digest }, Expect::Md5(e))
                    }
                    other => return Err(format!("{at}: replay does not drive {other:?}")),
                };
                s.request(now, id, req);
                let got = s.poll_record().ok_or(format!(
                    "{at}: session sent nothing for {}",
                    escape(payload)
                ))?;
                let want = wire(header, payload);
                if got != want {
                    return Err(format!(
                        "{at}: sent {} instead of {}",
                        escape(&got),
                        escape(&want)
                    ));
                }
                if let Some(re) = &r.regex {
                    let re = regex::Regex::new(re).map_err(|e| format!("{at}: bad regex: {e}"))?;
                    if !re.is_match(&escape(&got[8..])) {
                        return Err(format!("{at}: {} does not match {re}", escape(&got[8..])));
                    }
                }
                report.client_records += 1;
                expects.push((id, exp));
            }
            (Dir::Client, _) | (Dir::Server, _) => {}
        }
        drain(&mut s, &mut events);
        i += 1;
    }
    if let Some(extra) = s.poll_record() {
        return Err(format!(
            "{}: session sent {} that the recording does not have",
            t.name,
            escape(&extra)
        ));
    }
    // Check every reply, in order.
    let mut data: std::collections::HashMap<u64, Vec<u8>> = Default::default();
    let mut replies: Vec<(u64, Reply)> = Vec::new();
    for e in events {
        match e {
            Event::Data { id, bytes } => data.entry(id).or_default().extend_from_slice(&bytes),
            Event::Reply { id, reply } => replies.push((id, reply)),
            Event::Failed(err) if !matches!(err, rcf_core::client::ClientError::HungUp(0)) => {
                return Err(format!("{}: session failed: {err}", t.name));
            }
            _ => {}
        }
    }
    if replies.len() != expects.len() {
        return Err(format!(
            "{}: {} replies for {} requests: {replies:?}",
            t.name,
            replies.len(),
            expects.len()
        ));
    }
    for ((id, reply), (eid, exp)) in replies.iter().zip(&expects) {
        if id != eid {
            return Err(format!(
                "{}: reply to request {id} came where {eid} was due",
                t.name
            ));
        }
        let ok = match (exp, reply) {
            (Expect::Stat { ok: true, size }, Reply::Stat(Ok(st))) => {
                size.is_none() || *size == Some(st.size)
            }
            (Expect::Stat { ok: false, .. }, Reply::Stat(Err(_))) => true,
            (Expect::Get(Ok(bytes)), Reply::Get(Ok(()))) => {
                let got = data.get(id).cloned().unwrap_or_default();
                report.file_bytes += got.len();
                &got == bytes
            }
            (Expect::Get(Err(())), Reply::Get(Err(GetFailure::Refused(_)))) => {
                !data.contains_key(id)
            }
            (Expect::Listing(Ok(names)), Reply::Listing(Ok(got))) => {
                &got.iter().cloned().collect::<BTreeSet<_>>() == names
            }
            (Expect::Listing(Err(())), Reply::Listing(Err(_))) => true,
            (Expect::Md5(e), Reply::Md5(r)) => e.as_ref().ok() == r.as_ref().ok(),
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{}: request {id}: expected {exp:?}, session said {reply:?}",
                t.name
            ));
        }
        report.replies += 1;
    }
    Ok(report)
}
