//! The whole server session above TLS, driven by an attacker's byte stream
//! against a small, fixed, deterministic in-memory world.
//!
//! The world and its checks are `rcf_core::testing::World`'s.
//!
//! Input: one flag byte (peer IP, key status in ppkeys, file-change quirks),
//! then operations: a length byte `n` followed by `n` bytes of plaintext
//! (`n <= 0xFC`), `0xFD` = the peer half-closes (EOF), `0xFE` = time jumps to
//! the session's deadline, `0xFF` = time advances by one second.
//!
//! Invariants checked after every step:
//! * no panic, and the session never asks a question out of turn (every
//!   answer the world gives is accepted);
//! * every record is a well-formed framed transaction (header length equal
//!   to the payload, payload <= 4088 bytes) or a raw/line record of at most
//!   4096 bytes;
//! * a GET never sends more bytes than the size the client was promised
//!   (its STAT, else the size at open);
//! * the content of the canary file outside the admitted tree never appears
//!   in any record;
//! * every opened file is closed exactly once, by the end of the session.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rcf_core::policy::{self, Canon, LoadOptions, PolicySource, ServerPolicy};
use rcf_core::server::{Config, KeyStatus, Now, PeerKey, PolicyView, Session};
use rcf_core::testing::{Node, World};

const D: &str = "/tmp/cfe-lab/data";
const CANARY: &[u8] = b"CANARY-9f1c2e-must-never-be-sent";
const PUB_PEM: &str = include_str!("../../core/src/keys/testdata/cfkey.pub");

const POLICY: &str = r#"
body common control { bundlesequence => { }; }
body server control {
  allowconnects => { "127.0.0.1", "10.0.0.0/8", "192.0.2.1" };
  allowallconnects => { "127.0.0.1", "10.0.0.0/8", "192.0.2.1" };
  trustkeysfrom => { "10.0.0.1" };
  allowusers => { "root", "alice", "" };
}
bundle server access_rules {
  access:
    "/tmp/cfe-lab/data/share"
      admit_ips => { "127.0.0.1", "10.0.0.0/8" },
      shortcut => "myshare";
    "/tmp/cfe-lab/data/share/tree/sub"
      deny_ips => { "10.0.0.2" };
    "/tmp/cfe-lab/data/share/named"
      admit_hostnames => { ".example.com" };
    "sys.fqhost"
      resource_type => "literal",
      admit_ips => { "127.0.0.1" };
    "delta"
      resource_type => "query",
      admit_ips => { "127.0.0.1" };
}
"#;

struct Src;

impl PolicySource for Src {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == "/fuzz/promises.cf" {
            Ok(POLICY.as_bytes().to_vec())
        } else {
            Err("not found".into())
        }
    }
    fn canonicalize(&self, path: &str) -> Canon {
        let p = path.trim_end_matches('/');
        if p.starts_with(D) {
            Canon::Resolved { path: p.to_string(), is_dir: !p.ends_with(".txt") }
        } else {
            Canon::Missing
        }
    }
    fn exists(&self, path: &str) -> bool {
        path.starts_with(D)
    }
}

fn statics() -> &'static (Arc<ServerPolicy>, PeerKey) {
    static S: OnceLock<(Arc<ServerPolicy>, PeerKey)> = OnceLock::new();
    S.get_or_init(|| {
        let opts = LoadOptions { file: "/fuzz/promises.cf".into(), ..Default::default() };
        let p = policy::load(&Src, &opts).expect("the fuzz policy loads");
        let k = rcf_core::keys::parse_public_pem(PUB_PEM.as_bytes()).expect("test key");
        (Arc::new(p), PeerKey::new(k))
    })
}

fn p(s: &str) -> Vec<u8> {
    format!("{D}{s}").into_bytes()
}

/// The fixed world: a shared tree, a secret tree holding the canary that
/// nothing may touch or send, links into both, users, a host name, and a
/// one-line program for EXEC.
fn template() -> &'static World {
    static T: OnceLock<World> = OnceLock::new();
    T.get_or_init(|| {
        let file = Node::file;
        let dir = |names: &[&str]| Node::dir(&[&[".", ".."][..], names].concat());
        let many: Vec<String> = (0..300).map(|i| format!("entry-{i:04}-{}", "x".repeat(20))).collect();
        let many_refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        let seq: Vec<u8> = (0..9000u32).flat_map(|i| format!("{i}\n").into_bytes()).take(20_000).collect();
        let mut w = World::default();
        w.insert(p(""), dir(&["share", "secret"]))
            .insert(p("/share"), dir(&["hello.txt", "seq.txt", "empty.txt", "tree", "many", "link.txt", "escape.txt", "grow.txt", "private.txt", "named"]))
            .insert(p("/share/hello.txt"), file(b"hello from cf-serverd lab\n", 0o644, 0))
            .insert(p("/share/seq.txt"), file(&seq, 0o644, 0))
            .insert(p("/share/empty.txt"), file(b"", 0o644, 0))
            .insert(p("/share/grow.txt"), file(b"grows by one byte per open", 0o644, 0))
            .insert(p("/share/private.txt"), file(b"root only", 0o600, 0))
            .insert(p("/share/tree"), dir(&["a.txt", "sub"]))
            .insert(p("/share/tree/a.txt"), file(b"a\n", 0o644, 1000))
            .insert(p("/share/tree/sub"), dir(&["b.txt", "deeper"]))
            .insert(p("/share/tree/sub/b.txt"), file(b"b\n", 0o644, 0))
            .insert(p("/share/tree/sub/deeper"), dir(&["c.txt"]))
            .insert(p("/share/tree/sub/deeper/c.txt"), file(b"c\n", 0o644, 0))
            .insert(p("/share/many"), dir(&many_refs))
            .insert(p("/share/named"), file(b"named\n", 0o644, 0))
            .insert(p("/secret"), dir(&["secret.txt"]))
            .insert(p("/secret/secret.txt"), file(CANARY, 0o644, 0))
            .link(p("/share/link.txt"), p("/share/hello.txt"))
            .link(p("/share/escape.txt"), p("/secret/secret.txt"))
            .link(p("/share/up"), p("/secret"));
        w.grow_on_open.insert(p("/share/grow.txt"));
        w.users.insert("alice".into(), 1000);
        w.users.insert("bob".into(), 1001);
        w.hostnames.insert("10.0.0.1".into(), "a.example.com".into());
        w.exec_output = vec![b"ran".to_vec()];
        w.exec_exit = Some(0);
        w.forbidden.push(p("/secret"));
        w.canary = Some(CANARY.to_vec());
        w.check_records = true;
        w
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let (policy, key) = statics();
    let ip = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "192.0.2.1"][usize::from(flags >> 2 & 3)];
    let mut world = template().clone();
    world.key = Some(match flags & 3 {
        1 => KeyStatus::Missing,
        2 => KeyStatus::Different,
        _ => KeyStatus::Trusted,
    });
    world.grow_every_open = flags & 0x10 != 0;
    world.halve_after_open = flags & 0x20 != 0;
    let mut now = Now { mono_ms: 1_000, unix_s: 1_795_415_949 };
    let cfg = Config { handshake_timeout_ms: 30_000, idle_timeout_ms: 600_000, ..Config::default() };
    let pv: Arc<dyn PolicyView> = policy.clone();
    let mut s = Session::new(cfg, pv, ip.to_string(), key.clone(), now);
    world.drive(&mut s, now);
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        steps += 1;
        if steps > 10_000 {
            break;
        }
        rest = tail;
        match op {
            0xFD => s.handle_eof(now),
            0xFE => {
                if let Some(d) = s.poll_timeout() {
                    assert!(d >= now.mono_ms || s.is_closing() || d + 600_000 >= now.mono_ms);
                    now.mono_ms = now.mono_ms.max(d);
                    now.unix_s += 600;
                }
                s.handle_timeout(now);
            }
            0xFF => {
                now.mono_ms += 1_000;
                now.unix_s += 1;
                s.handle_timeout(now);
            }
            n => {
                let n = usize::from(n).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                world.peer_sent.extend_from_slice(chunk);
                s.handle_plaintext(now, chunk);
            }
        }
        world.drive(&mut s, now);
    }
    s.handle_eof(now);
    world.drive(&mut s, now);
    assert!(s.is_closing(), "EOF closes the session");
    assert!(world.open.is_empty(), "files left open after the session ended: {:?}", world.open.len());
});
