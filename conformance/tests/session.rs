//! Behaviour of the core server session beyond what the vectors recorded:
//! trust decisions, the ownership rule, files changing under a GET,
//! deadlines, and hostile requests. All pure: an in-memory world answers.

use std::sync::Arc;

use rcf_conformance::world::{file_stat, session, Node, TablePolicy, World};
use rcf_core::frame::{Decoder, Transaction};
use rcf_core::reply;
use rcf_core::request::{encode_get, encode_stat};
use rcf_core::server::{KeyStatus, Now, Session};

const NOW: Now = Now {
    mono_ms: 1_000,
    unix_s: 1_700_000_000,
};

fn world_with(files: &[(&str, &[u8], u32, u32)]) -> World {
    let mut w = World::default();
    for (p, data, mode, uid) in files {
        w.nodes.insert(
            p.as_bytes().to_vec(),
            Node {
                data: data.to_vec(),
                stat: file_stat(data.len() as u64, *mode, *uid),
                listing: None,
                digest: None,
            },
        );
    }
    w.users.insert("alice".into(), 1000);
    w
}

fn policy() -> TablePolicy {
    TablePolicy {
        paths: vec![(b"/srv/".to_vec(), vec!["127.0.0.1".into()])],
        denied: vec![b"/srv/private/".to_vec()],
        shortcuts: vec![(b"masterfiles".to_vec(), b"/srv".to_vec())],
        trust_from: vec![],
        deny_bad_clocks: true,
        ..Default::default()
    }
}

/// Run the identification dialog; returns everything sent so far.
fn identify(s: &mut Session, w: &mut World, user: &str) -> Vec<u8> {
    let mut out: Vec<u8> = w.drive(s, NOW).concat();
    s.handle_plaintext(NOW, b"CFE_v3 cf-agent 3.21.0\n");
    s.handle_plaintext(NOW, format!("IDENTITY USERNAME={user}\n").as_bytes());
    out.extend(w.drive(s, NOW).concat());
    out
}

fn txn(payload: &[u8]) -> Vec<u8> {
    Transaction::done(payload.to_vec()).to_bytes().unwrap()
}

/// Send one request; return the records the session produced for it.
fn ask(s: &mut Session, w: &mut World, payload: &[u8]) -> Vec<Vec<u8>> {
    s.handle_plaintext(NOW, &txn(payload));
    w.drive(s, NOW)
}

fn payloads(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut d = Decoder::new();
    d.push(&records.concat()).unwrap();
    let mut v = Vec::new();
    while let Some(t) = d.poll().unwrap() {
        v.push(t.payload.to_vec());
    }
    v
}

#[test]
fn welcome_after_banner_for_a_trusted_key() {
    let mut w = world_with(&[]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    let out = identify(&mut s, &mut w, "root");
    assert_eq!(out, b"CFE_v3 cf-serverd 3.21.0\nOK WELCOME USERNAME=root\n");
    assert!(s.is_established());
    assert!(w.logged("Client is TRUSTED, public key MATCHES stored one."));
}

#[test]
fn untrusted_key_is_dropped_without_a_word_and_nothing_is_saved() {
    let mut w = world_with(&[]);
    w.key = Some(KeyStatus::Missing);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    let out = identify(&mut s, &mut w, "root");
    assert_eq!(out, b"CFE_v3 cf-serverd 3.21.0\n");
    assert!(s.is_closing());
    assert!(w.logged("TRUST FAILED, peer presented an untrusted key, dropping connection!"));
    assert!(w.saved_keys.is_empty());
}

#[test]
fn trustkeysfrom_saves_the_key_under_the_identity_username() {
    let mut w = world_with(&[]);
    w.key = Some(KeyStatus::Different);
    let mut p = policy();
    p.trust_from = vec!["127.0.0.1".into()];
    let mut s = session(Arc::new(p), "127.0.0.1", NOW);
    let out = identify(&mut s, &mut w, "root");
    assert!(out.ends_with(b"OK WELCOME USERNAME=root\n"));
    let id = rcf_conformance::world::test_peer_key().id;
    assert_eq!(
        id,
        include_str!("../../core/src/keys/testdata/cfkey.id").trim()
    );
    assert_eq!(w.saved_keys, vec![("root".to_string(), id)]);
    assert!(w.logged("Trusting new key: MD5="));
}

#[test]
fn stat_get_round_trip_in_2048_byte_records() {
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut w = world_with(&[("/srv/f", &data, 0o644, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    let st = payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/f")));
    assert!(
        st[0].starts_with(b"OK: 0 420 0 0 0 5000 "),
        "{:?}",
        String::from_utf8_lossy(&st[0])
    );
    assert_eq!(st[1], b"OK:");
    let recs = ask(&mut s, &mut w, &encode_get(2048, b"/srv/f"));
    assert_eq!(
        recs.iter().map(|r| r.len()).collect::<Vec<_>>(),
        vec![2048, 2048, 904]
    );
    assert_eq!(recs.concat(), data);
    assert!(w.open.is_empty(), "file handle leaked");
}

#[test]
fn shortcut_and_relative_paths() {
    let mut w = world_with(&[("/srv/promises.cf", b"body", 0o600, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    let st = payloads(&ask(
        &mut s,
        &mut w,
        &encode_stat(NOW.unix_s, b"masterfiles/promises.cf"),
    ));
    assert!(st[0].starts_with(b"OK: 0 384 "));
    let st = payloads(&ask(
        &mut s,
        &mut w,
        &encode_stat(NOW.unix_s, b"nosuch/promises.cf"),
    ));
    assert_eq!(st, vec![reply::FAILED.to_vec()]);
    assert!(w.logged("Relative paths are not allowed: nosuch/promises.cf"));
}

#[test]
fn longest_rule_decides_and_missing_looks_like_denied() {
    let mut w = world_with(&[
        ("/srv/private/k", b"secret", 0o644, 0),
        ("/srv/ok", b"x", 0o644, 0),
    ]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    let denied = payloads(&ask(
        &mut s,
        &mut w,
        &encode_stat(NOW.unix_s, b"/srv/private/k"),
    ));
    let missing = payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/nope")));
    assert_eq!(denied, missing);
    assert_eq!(denied, vec![reply::FAILED.to_vec()]);
    assert!(w.logged("access denied to STAT: /srv/private/k"));
    // The refusals kept the session: the next request is served.
    let ok = payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/ok")));
    assert!(ok[0].starts_with(b"OK: 0"));
}

/// Metrics count refusals by the session's typed `Denied` events, not by log text:
/// an ACL denial counts, a missing file (refused alike on the wire) does not.
#[test]
fn access_denials_are_counted_where_they_are_decided() {
    let mut w = world_with(&[
        ("/srv/private/k", b"secret", 0o644, 0),
        ("/srv/ok", b"x", 0o644, 0),
    ]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    assert!(w.denials.is_empty());
    ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/private/k"));
    assert_eq!(w.denials, [("STAT", "/srv/private/k".to_string())]);
    ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/nope"));
    ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/ok"));
    assert_eq!(w.denials.len(), 1);
    ask(&mut s, &mut w, &encode_get(2048, b"/srv/private/k"));
    assert_eq!(w.denials[1], ("GET", "/srv/private/k".to_string()));
    assert!(w.logged("access denied to GET: /srv/private/k"));
}

#[test]
fn ownership_rule_for_non_root_users_sends_a_zero_padded_block() {
    let mut w = world_with(&[
        ("/srv/root-only", b"topsecret", 0o600, 0),
        ("/srv/mine", b"mine", 0o600, 1000),
    ]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "alice");
    let recs = ask(&mut s, &mut w, &encode_get(1000, b"/srv/root-only"));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0], txn(reply::FAILED));
    assert_eq!(recs[1].len(), 1000);
    assert!(recs[1].starts_with(reply::FAILED));
    assert!(
        recs[1][reply::FAILED.len()..].iter().all(|&b| b == 0),
        "padding must be zeros, never memory"
    );
    assert!(w.logged("Remote user 'alice' is not owner of the file"));
    assert_eq!(
        ask(&mut s, &mut w, &encode_get(2048, b"/srv/mine")).concat(),
        b"mine"
    );
}

#[test]
fn a_file_that_changes_after_stat_never_desynchronises_the_stream() {
    let mut w = world_with(&[("/srv/grow", &[7u8; 3000], 0o644, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/grow"));
    // The file grows between STAT and GET: the client expects 3000 bytes.
    w.nodes.get_mut(b"/srv/grow".as_slice()).unwrap().data = vec![8u8; 9000];
    let recs = ask(&mut s, &mut w, &encode_get(2048, b"/srv/grow"));
    let total: usize = recs.iter().map(|r| r.len()).sum();
    assert_eq!(recs.len(), 1);
    assert_eq!(total, 2048, "one block the client reads whole");
    assert!(recs[0].starts_with(b"BAD: File changed while copying: /srv/grow"));
    // The stream is in sync: the next request gets its own answer.
    assert_eq!(
        payloads(&ask(&mut s, &mut w, b"VERSION")),
        vec![reply::version()]
    );
}

#[test]
fn a_file_that_shrinks_mid_transfer_ends_with_a_change_block() {
    let mut w = world_with(&[("/srv/big", &vec![1u8; 100_000], 0o644, 0)]);
    w.change_after_open
        .insert(b"/srv/big".to_vec(), vec![1u8; 70_000]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/big"));
    let recs = ask(&mut s, &mut w, &encode_get(2048, b"/srv/big"));
    let last = recs.last().unwrap();
    assert!(last.starts_with(b"BAD: File changed while copying"));
    let total: usize = recs.iter().map(|r| r.len()).sum();
    assert!(total <= 100_000, "never more than the client expects");
    assert!(w.open.is_empty());
}

#[test]
fn clock_skew_is_refused_after_the_acl() {
    let mut w = world_with(&[("/srv/f", b"x", 0o644, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    let r = payloads(&ask(
        &mut s,
        &mut w,
        &encode_stat(NOW.unix_s - 4000, b"/srv/f"),
    ));
    assert_eq!(
        r,
        vec![format!(
            "BAD: Clocks are too far unsynchronized {}/{}",
            NOW.unix_s,
            NOW.unix_s - 4000
        )
        .into_bytes()]
    );
    // Denied paths get the refusal, not the clock message (ACL first).
    let r = payloads(&ask(
        &mut s,
        &mut w,
        &encode_stat(NOW.unix_s - 4000, b"/etc/passwd"),
    ));
    assert_eq!(r, vec![reply::FAILED.to_vec()]);
}

#[test]
fn protocol_errors_close_and_refusals_do_not() {
    let mut w = world_with(&[]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    assert_eq!(
        payloads(&ask(&mut s, &mut w, b"VAR x")),
        vec![reply::FAILED.to_vec()]
    );
    assert!(!s.is_closing());
    assert_eq!(
        payloads(&ask(&mut s, &mut w, b"GET 0 /srv/f")),
        vec![reply::REQUEST_DENIED.to_vec()]
    );
    assert!(s.is_closing());
    // Nothing more is answered once closing.
    assert!(ask(&mut s, &mut w, b"VERSION").is_empty());
}

#[test]
fn hostile_paths_are_refused_like_missing_files() {
    let mut w = world_with(&[("/srv/f", b"x", 0o644, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    for p in [
        &b"/srv/../etc/passwd"[..],
        b"relative",
        b"/srv/\xff\xfe",
        b"//etc/passwd",
    ] {
        let r = payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, p)));
        assert_eq!(
            r,
            vec![reply::FAILED.to_vec()],
            "{}",
            String::from_utf8_lossy(p)
        );
    }
    assert!(!s.is_closing());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut w = world_with(&[("/srv/a", b"aaa", 0o644, 0), ("/srv/b", b"bb", 0o644, 0)]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    s.handle_plaintext(NOW, b"CFE_v3 cf-agent 3.21.0\nIDENTITY USERNAME=root\n");
    let mut pipe = Vec::new();
    for p in [&b"/srv/a"[..], b"/srv/b"] {
        pipe.extend(txn(&encode_stat(NOW.unix_s, p)));
        pipe.extend(txn(&encode_get(2048, p)));
    }
    s.handle_plaintext(NOW, &pipe);
    let all = w.drive(&mut s, NOW).concat();
    let mut want = b"CFE_v3 cf-serverd 3.21.0\nOK WELCOME USERNAME=root\n".to_vec();
    for (p, data) in [(&b"/srv/a"[..], &b"aaa"[..]), (b"/srv/b", b"bb")] {
        for t in file_stat(data.len() as u64, 0o644, 0).encode() {
            want.extend(t.to_bytes().unwrap());
        }
        let _ = p;
        want.extend_from_slice(data);
    }
    assert_eq!(all, want);
}

#[test]
fn deadlines_drop_silent_and_idle_peers() {
    let mut w = world_with(&[]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    w.drive(&mut s, NOW);
    let d = s.poll_timeout().expect("handshake deadline");
    assert_eq!(d, NOW.mono_ms + 30_000);
    s.handle_timeout(Now {
        mono_ms: d - 1,
        ..NOW
    });
    assert!(!s.is_closing());
    s.handle_timeout(Now { mono_ms: d, ..NOW });
    assert!(s.is_closing());
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    let idle = s.poll_timeout().unwrap();
    assert_eq!(idle, NOW.mono_ms + 600_000);
}

#[test]
fn commands_before_identity_and_bad_usernames_close() {
    let mut w = world_with(&[]);
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    w.drive(&mut s, NOW);
    s.handle_plaintext(NOW, &txn(b"VERSION"));
    s.handle_plaintext(NOW, b"\n");
    w.drive(&mut s, NOW);
    assert!(s.is_closing());
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    let out = identify(&mut s, &mut w, "../../etc");
    assert_eq!(out, b"CFE_v3 cf-serverd 3.21.0\n");
    assert!(s.is_closing());
}

#[test]
fn answers_that_do_not_fit_are_caller_errors() {
    let mut s = session(Arc::new(policy()), "127.0.0.1", NOW);
    let e = s.handle_answer(NOW, rcf_core::server::Answer::Digest(None));
    assert!(e.is_err());
}

/// A policy file held in memory, for loading a real `ServerPolicy` here.
struct OneFile(String);

impl rcf_core::policy::PolicySource for OneFile {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == "/mem/promises.cf" {
            Ok(self.0.clone().into_bytes())
        } else {
            Err("No such file or directory".into())
        }
    }
    fn canonicalize(&self, path: &str) -> rcf_core::policy::Canon {
        rcf_core::policy::Canon::Resolved {
            path: path.trim_end_matches('/').to_string(),
            is_dir: path.ends_with('/'),
        }
    }
    fn exists(&self, _path: &str) -> bool {
        true
    }
}

fn load(text: &str) -> rcf_core::policy::ServerPolicy {
    let opts = rcf_core::policy::LoadOptions {
        file: "/mem/promises.cf".into(),
        ..Default::default()
    };
    rcf_core::policy::load(&OneFile(text.into()), &opts).expect("policy loads")
}

/// Issue 12: with host-name rules and a failed reverse lookup, the rule
/// does not match (deny wins) and nothing crashes.
#[test]
fn hostname_rules_with_failed_reverse_lookup_deny_and_keep_serving() {
    let policy = load(
        r#"
bundle server access
{
  access:
    "/srv/"
      admit_ips => { "127.0.0.1" },
      deny_hostnames => { ".evil.example" };
    "/pub/"
      admit_hostnames => { "trusted.example" };
}
"#,
    );
    assert!(policy.reverse_dns);
    let mut w = world_with(&[("/srv/f", b"x", 0o644, 0), ("/pub/g", b"y", 0o644, 0)]);
    let mut s = session(Arc::new(policy), "127.0.0.1", NOW);
    identify(&mut s, &mut w, "root");
    // The world's reverse lookup fails (answers None).
    assert!(w.logged("Reverse lookup failed"));
    assert_eq!(
        payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/srv/f"))),
        vec![reply::FAILED.to_vec()]
    );
    assert_eq!(
        payloads(&ask(&mut s, &mut w, &encode_stat(NOW.unix_s, b"/pub/g"))),
        vec![reply::FAILED.to_vec()]
    );
    assert_eq!(
        payloads(&ask(&mut s, &mut w, b"VERSION")),
        vec![reply::version()]
    );
}
