//! Replay a recorded transcript against the core server session.
//!
//! The transcript's own server replies tell what the filesystem held (STAT
//! fields, file bytes, listings, which paths were refused, whether the
//! key was trusted); a [`World`] is built from them, the client's records
//! are fed to a fresh [`Session`], and every byte the session sends is
//! compared with the recorded server stream, record by record (fields a
//! vector marks as varying are compared through its `~` regex).

use std::sync::Arc;

use rcf_core::frame;
use rcf_core::reply::{self, StatReply};
use rcf_core::request::{self, Dialect, Request};
use rcf_core::server::{KeyStatus, Now};
use regex::Regex;

use crate::transcript::{escape, Dir, Kind, Record, Transcript};
use crate::world::{Node, TablePolicy, World};

/// Why a replay did not match.
#[derive(Debug)]
pub struct Mismatch {
    /// Transcript name.
    pub name: String,
    /// What differed.
    pub what: String,
}

fn recorded_time(t: &Transcript) -> i64 {
    t.meta("recorded")
        .and_then(|r| r.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_795_415_949)
}

fn strip(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    while v.len() > 1 && v.last() == Some(&b'/') {
        v.pop();
    }
    v
}

/// Build the world a transcript implies.
fn world_of(t: &Transcript) -> (World, TablePolicy) {
    let mut w = World::default();
    let mut pol = TablePolicy {
        deny_bad_clocks: true,
        ..Default::default()
    };
    let recs = &t.records;
    let server_after = |i: usize| -> Vec<&Record> {
        recs[i + 1..]
            .iter()
            .take_while(|r| r.dir == Dir::Server)
            .collect()
    };
    for (i, rec) in recs.iter().enumerate() {
        let (Dir::Client, Kind::Txn { payload, .. }) = (&rec.dir, &rec.kind) else {
            continue;
        };
        let Ok(req) = request::parse_request(payload, Dialect::Tls) else {
            continue;
        };
        let replies = server_after(i);
        let txn = |k: usize| match replies.get(k).map(|r| &r.kind) {
            Some(Kind::Txn { payload, .. }) => Some(payload.clone()),
            _ => None,
        };
        let refused = txn(0).as_deref() == Some(reply::FAILED);
        match req {
            Request::Stat { path, .. } => {
                let p = strip(&path);
                if refused {
                    pol.denied.push(p);
                } else if let (Some(a), Some(b)) = (txn(0), txn(1)) {
                    if let Ok(st) = StatReply::parse(&a, &b) {
                        let is_dir = st.file_type == reply::FileType::Dir;
                        let node = w.nodes.entry(p.clone()).or_insert(Node {
                            data: vec![],
                            stat: st.clone(),
                            listing: if is_dir { Some(vec![]) } else { None },
                            digest: None,
                        });
                        node.stat = st;
                        pol.paths.push((p, vec!["*".into()]));
                    }
                }
            }
            Request::Get { path, .. } => {
                let p = strip(&path);
                match replies.first().map(|r| &r.kind) {
                    Some(Kind::Raw(bytes)) if bytes.starts_with(b"t 59\0") => pol.denied.push(p),
                    Some(Kind::Raw(_)) => {
                        let data: Vec<u8> = replies
                            .iter()
                            .filter_map(|r| {
                                if let Kind::Raw(b) = &r.kind {
                                    Some(b.clone())
                                } else {
                                    None
                                }
                            })
                            .flatten()
                            .collect();
                        let n = w.nodes.entry(p.clone()).or_insert(Node {
                            data: vec![],
                            stat: crate::world::file_stat(data.len() as u64, 0o644, 0),
                            listing: None,
                            digest: None,
                        });
                        n.data = data;
                        pol.paths.push((p, vec!["*".into()]));
                    }
                    // Nothing recorded: an empty file (the server sends no bytes).
                    _ => {
                        w.nodes.entry(p.clone()).or_insert(Node {
                            data: vec![],
                            stat: crate::world::file_stat(0, 0o644, 0),
                            listing: None,
                            digest: None,
                        });
                        pol.paths.push((p, vec!["*".into()]));
                    }
                }
            }
            Request::Opendir { path } => {
                let p = strip(&path);
                if refused {
                    pol.denied.push(p);
                    continue;
                }
                let mut names = Vec::new();
                for r in &replies {
                    if let Kind::Txn { payload, .. } = &r.kind {
                        match reply::parse_opendir_packet(payload) {
                            Ok(reply::OpendirChunk::Names(n)) => names.extend(n),
                            Ok(reply::OpendirChunk::Last(n)) => {
                                names.extend(n);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                let n = w.nodes.entry(p.clone()).or_insert(Node {
                    data: vec![],
                    stat: crate::world::file_stat(4096, 0o755, 0),
                    listing: None,
                    digest: None,
                });
                n.listing = Some(names);
                n.stat.file_type = reply::FileType::Dir;
                pol.paths.push((p, vec!["*".into()]));
            }
            Request::Md5 { path, digest } => {
                let p = strip(&path);
                if refused {
                    pol.denied.push(p);
                    continue;
                }
                let same = txn(0).as_deref() == Some(reply::CFD_FALSE);
                let mut other = digest;
                other[0] ^= 0xff;
                let n = w.nodes.entry(p.clone()).or_insert(Node {
                    data: vec![],
                    stat: crate::world::file_stat(0, 0o644, 0),
                    listing: None,
                    digest: None,
                });
                n.digest = Some(if same { digest } else { other });
                pol.paths.push((p, vec!["*".into()]));
            }
            Request::Var { name } if !refused => pol.literals.push(name),
            _ => {}
        }
    }
    // EXEC: the lab's cfruncommand, admitted, run for root; its output and
    // exit code as recorded.
    let cmd = "/tmp/cfe-lab/cfrun.sh";
    pol.cfruncommand = cmd.into();
    pol.allowusers = vec!["root".into()];
    pol.paths.push((cmd.as_bytes().to_vec(), vec!["*".into()]));
    w.nodes.entry(cmd.as_bytes().to_vec()).or_insert(Node {
        data: vec![],
        stat: crate::world::file_stat(0, 0o755, 0),
        listing: None,
        digest: None,
    });
    for r in &t.records {
        if let (Dir::Server, Kind::Txn { payload, .. }) = (&r.dir, &r.kind) {
            if let Some(line) = payload.strip_prefix(b"> ") {
                w.exec_output
                    .push(line.strip_suffix(b"\n").unwrap_or(line).to_vec());
            }
            if let Some(code) = payload.strip_prefix(b"(exit code: ") {
                w.exec_exit = String::from_utf8_lossy(code)
                    .trim_end_matches(")\n")
                    .parse()
                    .ok();
            }
        }
    }
    w.key = Some(if t.name.contains("untrusted") {
        KeyStatus::Missing
    } else {
        KeyStatus::Trusted
    });
    (w, pol)
}

/// Feed the client side of `t` to a core session and compare its output
/// with the recorded server side. Only meaningful for vectors whose server
/// was the real cf-serverd over TLS.
pub fn replay(t: &Transcript) -> Result<usize, Mismatch> {
    let fail = |what: String| Mismatch {
        name: t.name.clone(),
        what,
    };
    let (mut world, policy) = world_of(t);
    let now = Now {
        mono_ms: 0,
        unix_s: recorded_time(t),
    };
    let key = crate::world::test_peer_key();
    let mut s = rcf_core::server::Session::new(
        Default::default(),
        Arc::new(policy),
        "127.0.0.1".into(),
        key,
        now,
    );
    let mut out: Vec<u8> = Vec::new();
    for r in world.drive(&mut s, now) {
        out.extend(r);
    }
    for rec in &t.records {
        if rec.dir != Dir::Client {
            continue;
        }
        let bytes = match &rec.kind {
            Kind::Line(l) => l.clone(),
            Kind::Txn { header, payload } => [header.as_slice(), payload].concat(),
            Kind::Raw(b) | Kind::Partial(b) => b.clone(),
            Kind::Eof | Kind::CloseNotify => {
                s.handle_eof(now);
                continue;
            }
        };
        s.handle_plaintext(now, &bytes);
        for r in world.drive(&mut s, now) {
            out.extend(r);
        }
    }
    // Compare the output stream with the recorded server records.
    let mut pos = 0usize;
    let mut checks = 0usize;
    for rec in t.records.iter().filter(|r| r.dir == Dir::Server) {
        match &rec.kind {
            Kind::Line(l) | Kind::Raw(l) => {
                let got = out.get(pos..pos + l.len()).ok_or_else(|| {
                    fail(format!(
                        "line {}: expected {}, stream ended: {}",
                        rec.line,
                        escape(l),
                        escape(&out[pos.min(out.len())..])
                    ))
                })?;
                if got != l.as_slice() {
                    return Err(fail(format!(
                        "line {}: expected {}, got {}",
                        rec.line,
                        escape(l),
                        escape(got)
                    )));
                }
                pos += l.len();
            }
            Kind::Txn { header, payload } => {
                let end = pos + frame::HEADER_LEN + payload.len();
                let got = out.get(pos..end).ok_or_else(|| {
                    fail(format!(
                        "line {}: expected {}, got {}",
                        rec.line,
                        escape(payload),
                        escape(&out[pos.min(out.len())..])
                    ))
                })?;
                let (gh, gp) = got.split_at(frame::HEADER_LEN);
                let ok_payload = match &rec.regex {
                    Some(rx) => Regex::new(rx)
                        .map(|re| re.is_match(&escape(gp)))
                        .unwrap_or(false),
                    None => gp == payload.as_slice(),
                };
                if gh != header.as_slice() || !ok_payload {
                    return Err(fail(format!(
                        "line {}: expected {}{}, got {}{}",
                        rec.line,
                        escape(header),
                        escape(payload),
                        escape(gh),
                        escape(gp)
                    )));
                }
                pos = end;
            }
            Kind::Eof => {
                if !s.is_closing() {
                    return Err(fail(format!(
                        "line {}: server hung up, session is still open",
                        rec.line
                    )));
                }
            }
            Kind::Partial(_) | Kind::CloseNotify => {}
        }
        checks += 1;
    }
    if pos != out.len() {
        return Err(fail(format!(
            "session sent {} extra bytes: {}",
            out.len() - pos,
            escape(&out[pos..])
        )));
    }
    Ok(checks)
}
