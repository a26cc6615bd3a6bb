//! The classic client and server machines against each other, in memory,
//! on the `crate::testing` harness: its classic pair, its world answering
//! the server's questions.

use std::sync::{Arc, OnceLock};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rsa::RsaPrivateKey;

use super::crypto::SessionCipher;
use super::*;
use crate::frame::{Decoder, Status};
use crate::machine::io::{KeyStatus, Now};
use crate::machine::Config;
use crate::testing::{ClassicPair, Node, World};

fn keys() -> &'static (Arc<RsaPrivateKey>, Arc<RsaPrivateKey>) {
    static K: OnceLock<(Arc<RsaPrivateKey>, Arc<RsaPrivateKey>)> = OnceLock::new();
    K.get_or_init(|| {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (
            Arc::new(RsaPrivateKey::new(&mut rng, 1024).unwrap()),
            Arc::new(RsaPrivateKey::new(&mut rng, 1024).unwrap()),
        )
    })
}

#[derive(Clone, Default)]
struct Pol {
    trust: bool,
    admit: Vec<(String, bool, bool)>, // path, ifencrypted, maproot
    deny: Vec<String>,
    /// The EXEC settings (none: EXEC is refused as by an empty cfruncommand).
    exec: Option<exec::ExecPol>,
}

impl ClassicPolicy for Pol {
    fn legacy_allowed(&self, _ip: &str) -> bool {
        true
    }
    fn trusts_keys_from(&self, _ip: &str) -> bool {
        self.trust
    }
    fn deny_bad_clocks(&self) -> bool {
        true
    }
    fn expand_shortcut(&self, path: &[u8], _peer: &ClassicPeer) -> Option<Vec<u8>> {
        let p = path.strip_prefix(b"share/")?;
        let mut v = b"/srv/".to_vec();
        v.extend_from_slice(p);
        Some(v)
    }
    fn check_path(&self, path: &[u8], _peer: &ClassicPeer, encrypted: bool) -> ClassicDecision {
        let p = String::from_utf8_lossy(path).into_owned();
        let covers = |r: &str| p == r || p.starts_with(&format!("{r}/"));
        let mut d = ClassicDecision {
            allowed: false,
            maproot: false,
            needs_encryption: false,
            rule: String::new(),
        };
        if let Some((r, enc, mr)) = self.admit.iter().find(|(r, _, _)| covers(r)) {
            d.rule = r.clone();
            d.maproot = *mr;
            if *enc && !encrypted {
                d.needs_encryption = true;
                return d;
            }
            d.allowed = !self.deny.iter().any(|r| covers(r));
        }
        d
    }
    fn check_literal(&self, _name: &[u8], _peer: &ClassicPeer, _encrypted: bool) -> bool {
        false
    }
    fn cfruncommand(&self) -> &str {
        self.exec.as_ref().map_or("", |e| e.command.as_str())
    }
    fn exec_path_allowed(&self, path: &[u8], _peer: &ClassicPeer) -> bool {
        self.exec
            .as_ref()
            .is_some_and(|e| e.programs.iter().any(|p| p.as_bytes() == path))
    }
    fn exec_token_allowed(
        &self,
        kind: crate::machine::exec::TokenKind,
        token: &str,
        peer: &ClassicPeer,
    ) -> bool {
        self.exec
            .as_ref()
            .is_some_and(|e| e.grants(kind, token, peer))
    }
    fn user_may_exec(&self, user: &str) -> bool {
        self.exec
            .as_ref()
            .is_some_and(|e| e.users.iter().any(|u| u == user))
    }
    fn class_defined(&self, name: &str) -> bool {
        self.exec
            .as_ref()
            .is_some_and(|e| e.classes.iter().any(|c| c == name))
    }
}

#[path = "tests_exec.rs"]
mod exec;

/// The file world of these tests.
fn world() -> World {
    let mut w = World::default();
    w.insert(
        "/srv/hello.txt",
        Node::file(b"hello from cf-serverd lab\n", 0o644, 0),
    )
    .insert("/srv/empty.txt", Node::file(b"", 0o644, 0))
    .insert(
        "/srv/big.bin",
        Node::file(
            &(0..10_000u32)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<_>>(),
            0o644,
            0,
        ),
    )
    .insert("/srv/private.txt", Node::file(b"mine\n", 0o600, 0))
    .insert("/secret/s.txt", Node::file(b"no\n", 0o644, 0))
    .insert("/srv", Node::dir(&[".", "..", "hello.txt", "big.bin"]))
    .link("/srv/link.txt", "hello.txt");
    w.any_user_uid = Some(1000);
    // Classic EXEC is refused before anything runs.
    w.exec_refuse = Some("no programs in this world".into());
    w.rng = ChaCha8Rng::seed_from_u64(42);
    w
}

const NOW: Now = Now {
    mono_ms: 0,
    unix_s: 1_700_000_000,
};

type Pair = ClassicPair;

fn new_pair(
    pol: Pol,
    world: World,
    user: &str,
    known_server_key: bool,
    trust_server: bool,
) -> Pair {
    let (skey, ckey) = keys().clone();
    let cfg = ClientConfig {
        local_ip: "127.0.0.1".into(),
        fqdn: "Client.Example".into(),
        user: user.into(),
        key: ckey,
        server_key: known_server_key.then(|| skey.to_public_key()),
        trust_server,
        timeout_ms: 30_000,
    };
    let mut p = Pair::classic(world, Arc::new(pol), Config::default(), skey, cfg);
    p.set_wall_clock(NOW.unix_s);
    // Feed in odd-sized pieces to exercise reassembly.
    p.chunk = 7;
    p
}

/// These tests' view of the harness pair.
trait Run {
    /// Shuttle bytes and answers until nothing moves. Returns the client error, if any.
    fn run(&mut self) -> Result<(), ClassicClientError>;
    /// The client's events so far.
    fn events(&mut self) -> Vec<ClientEvent>;
    /// The server's log messages.
    fn log(&self) -> Vec<String>;
}

impl Run for Pair {
    fn run(&mut self) -> Result<(), ClassicClientError> {
        self.drive();
        match self
            .client_events
            .iter()
            .position(|e| matches!(e, ClientEvent::Failed(_)))
        {
            Some(i) => match self.client_events.remove(i) {
                ClientEvent::Failed(e) => Err(e),
                _ => unreachable!("matched Failed above"),
            },
            None => Ok(()),
        }
    }

    fn events(&mut self) -> Vec<ClientEvent> {
        let ev = self.take_events();
        assert!(
            !ev.iter().any(|e| matches!(e, ClientEvent::Failed(_))),
            "a client error: {ev:?}"
        );
        ev
    }

    fn log(&self) -> Vec<String> {
        self.world.logs.iter().map(|(_, m)| m.clone()).collect()
    }
}

fn authed(pol: Pol) -> Pair {
    let mut p = new_pair(pol, world(), "root", false, true);
    p.run().unwrap();
    let ev = p.events();
    assert!(
        matches!(
            &ev[..],
            [ClientEvent::Authenticated {
                newly_trusted: true,
                ..
            }]
        ),
        "{ev:?}\n{:?}",
        p.log()
    );
    assert!(p.server.is_authenticated() && p.client.is_idle());
    assert_eq!(
        p.server.session_cipher().unwrap().key(),
        p.client.session_cipher().unwrap().key()
    );
    p
}

fn srv_pol() -> Pol {
    Pol {
        trust: true,
        admit: vec![("/srv".into(), false, false)],
        deny: vec![],
        exec: None,
    }
}

fn data_of(ev: &[ClientEvent]) -> Vec<u8> {
    ev.iter()
        .filter_map(|e| {
            if let ClientEvent::Data(d) = e {
                Some(d.clone())
            } else {
                None
            }
        })
        .flatten()
        .collect()
}

#[test]
fn handshake_flag_n_shapes_match_the_vectors() {
    let mut p = authed(srv_pol());
    // S1 "OK: key accepted", S2 16 bytes, S3 128 (1024-bit key), S4 MPI n, S5 MPI e.
    let mut d = Decoder::new();
    d.push(&p.server_bytes).unwrap();
    let mut lens = vec![];
    while let Some(t) = d.poll().unwrap() {
        lens.push((
            t.status,
            t.payload.len(),
            t.payload[..t.payload.len().min(16)].to_vec(),
        ));
    }
    assert_eq!(lens[0].2, b"OK: key accepted");
    assert_eq!(lens[1].1, 16);
    assert_eq!(lens[2].1, 128);
    assert_eq!(lens[3].1, 4 + 129);
    assert_eq!(lens[4].2, vec![0, 0, 0, 3, 1, 0, 1]);
    assert!(lens.iter().all(|l| l.0 == Status::Done));
    assert!(
        p.log()
            .iter()
            .any(|l| l == "Authentication of client client.example/127.0.0.1 achieved"),
        "{:?}",
        p.log()
    );
    p.client.version(p.now).unwrap();
    p.run().unwrap();
    assert_eq!(p.events(), vec![ClientEvent::Version("OK: 3.21.0".into())]);
}

#[test]
fn handshake_flag_y_sends_no_server_key() {
    let mut p = new_pair(srv_pol(), world(), "root", true, false);
    p.run().unwrap();
    assert!(matches!(
        &p.events()[..],
        [ClientEvent::Authenticated {
            newly_trusted: false,
            ..
        }]
    ));
    let mut d = Decoder::new();
    d.push(&p.server_bytes).unwrap();
    let mut n = 0;
    while d.poll().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 3, "S1, S2, S3 only");
}

#[test]
fn unknown_server_key_without_trust_is_refused_by_the_client() {
    let mut p = new_pair(srv_pol(), world(), "root", false, false);
    assert_eq!(p.run(), Err(ClassicClientError::Untrusted));
}

#[test]
fn unknown_client_key_trusted_or_refused() {
    let mut w = world();
    w.key = Some(KeyStatus::Missing);
    let mut p = new_pair(srv_pol(), w, "root", false, true);
    p.run().unwrap();
    assert!(p.client.is_authenticated());
    assert_eq!(p.world.saved_keys.len(), 1);
    assert!(
        p.world.saved_keys[0].0 == "root" && p.world.saved_keys[0].1.starts_with("MD5="),
        "{:?}",
        p.world.saved_keys
    );
    assert!(
        String::from_utf8_lossy(&p.server_bytes).contains("OK: unknown key was accepted on trust")
    );

    let mut w = world();
    w.key = Some(KeyStatus::Missing);
    let mut p = new_pair(
        Pol {
            trust: false,
            ..srv_pol()
        },
        w,
        "root",
        false,
        true,
    );
    let r = p.run();
    assert_eq!(
        r,
        Err(ClassicClientError::KeyRejected(
            "BAD: key could not be accepted on trust".into()
        ))
    );
    assert!(p.server.is_closing());
    while let Some(b) = p.server.poll_transmit() {
        p.server_bytes.extend_from_slice(&b);
    }
    let s = String::from_utf8_lossy(&p.server_bytes).into_owned();
    assert!(
        s.contains("BAD: key could not be accepted on trust")
            && s.contains("Unspecified server refusal"),
        "{s}"
    );
}

#[test]
fn stat_get_plain_and_encrypted() {
    for enc in [false, true] {
        let mut p = authed(srv_pol());
        for name in ["hello.txt", "big.bin"] {
            let path = format!("/srv/{name}");
            p.client.stat(p.now, path.as_bytes(), enc).unwrap();
            p.run().unwrap();
            let ev = p.events();
            let ClientEvent::Stat(st) = &ev[0] else {
                panic!("{ev:?}")
            };
            p.client.get(p.now, path.as_bytes(), st.size, enc).unwrap();
            p.run().unwrap();
            let ev = p.events();
            assert_eq!(ev.last(), Some(&ClientEvent::FileDone), "{ev:?}");
            assert_eq!(
                data_of(&ev),
                p.world.nodes[path.as_bytes()].data,
                "{name} enc={enc}"
            );
        }
        // Empty file: nothing sent, done at once.
        p.client.get(p.now, b"/srv/empty.txt", 0, enc).unwrap();
        p.run().unwrap();
        assert_eq!(p.events(), vec![ClientEvent::FileDone]);
        assert!(p.client.is_idle());
    }
}

#[test]
fn sget_chunks_are_4064_bytes_of_plaintext() {
    let mut p = authed(srv_pol());
    let before = p.server_bytes.len();
    p.client.get(p.now, b"/srv/big.bin", 10_000, true).unwrap();
    p.run().unwrap();
    let mut d = Decoder::new();
    d.push(&p.server_bytes[before..]).unwrap();
    let mut shapes = vec![];
    while let Some(t) = d.poll().unwrap() {
        shapes.push((t.status, t.payload.len()));
    }
    assert_eq!(
        shapes,
        vec![
            (Status::More, 4072),
            (Status::More, 4072),
            (Status::Done, 1880)
        ]
    );
}

#[test]
fn symlink_is_reported_as_a_link() {
    let mut p = authed(srv_pol());
    p.client.stat(p.now, b"/srv/link.txt", false).unwrap();
    p.run().unwrap();
    let ev = p.events();
    let ClientEvent::Stat(st) = &ev[0] else {
        panic!("{ev:?}")
    };
    assert_eq!(st.lmode, 0o777);
    assert_eq!(st.link_target, b"hello.txt");
}

#[test]
fn refusals_keep_or_close_per_command() {
    // Denied STAT: refused, kept.
    let mut p = authed(srv_pol());
    p.client.stat(p.now, b"/secret/s.txt", false).unwrap();
    p.run().unwrap();
    assert!(
        matches!(&p.events()[..], [ClientEvent::Refused(t)] if t.as_bytes() == crate::reply::FAILED)
    );
    assert!(!p.server.is_closing());
    assert!(
        p.log()
            .iter()
            .any(|l| l == "Host client.example denied access to /secret/s.txt"),
        "{:?}",
        p.log()
    );
    // Missing, then a good copy on the same connection.
    p.client.stat(p.now, b"/srv/missing", true).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    assert!(p.log().iter().any(|l| l.starts_with(
        "Couldn't resolve (realpath: No such file or directory) filename: /srv/missing"
    )));
    p.client.stat(p.now, b"/srv/hello.txt", false).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Stat(_)]));
    // Denied OPENDIR closes.
    p.client.opendir(p.now, b"/secret", false).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    assert!(p.server.is_closing());
    // The ACL denial was reported as a typed event; the missing file and
    // the unresolvable directory were not ACL decisions.
    assert_eq!(p.world.denials, [("STAT", "/secret/s.txt".to_string())]);
}

#[test]
fn denied_get_plain_is_a_framed_refusal_and_desynchronises_the_client() {
    let mut p = authed(srv_pol());
    p.client.get(p.now, b"/secret/s.txt", 3, false).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    assert!(p.client.is_desynchronised());
    assert_eq!(
        p.client.stat(p.now, b"/srv/hello.txt", false),
        Err(ClassicClientError::Desynchronised)
    );
    assert!(!p.server.is_closing(), "GET refusals keep the connection");
    assert_eq!(p.world.denials, [("GET", "/secret/s.txt".to_string())]);
}

#[test]
fn exec_refused_by_a_classic_server_ends_at_its_close() {
    // A policy without cfruncommand: BAD, the terminator and close.
    let mut p = authed(srv_pol());
    p.client
        .exec(p.now, b" -D role1", &[b"linux".to_vec(), Vec::new()])
        .unwrap();
    assert_eq!(
        p.client.exec(p.now, b"", &[]),
        Err(ClassicClientError::Busy)
    );
    p.run().unwrap();
    assert!(p.server.is_closing());
    p.client.handle_eof(p.now);
    p.run().unwrap();
    let ev = p.events();
    assert!(
        matches!(&ev[..], [ClientEvent::ExecLine(l), ClientEvent::ExecDone(None)] if l.starts_with(b"BAD:")),
        "{ev:?}"
    );
    assert!(
        p.log()
            .iter()
            .any(|l| l == "EXEC denied due to empty cfruncommand"),
        "{:?}",
        p.log()
    );
    assert!(
        p.client.is_idle(),
        "3.21 sends the terminator after a refusal too"
    );
}

#[test]
fn denied_sget_closes() {
    let mut p = authed(srv_pol());
    p.client.get(p.now, b"/secret/s.txt", 3, true).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    assert!(p.server.is_closing());
}

#[test]
fn ownership_rule_and_maproot() {
    // A non-root user cannot GET a 0600 root file...
    let mut p = new_pair(srv_pol(), world(), "alice", false, true);
    p.run().unwrap();
    p.events();
    p.client.get(p.now, b"/srv/private.txt", 5, true).unwrap();
    p.run().unwrap();
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    // ... unless maproot matches.
    let pol = Pol {
        trust: true,
        admit: vec![("/srv".into(), false, true)],
        deny: vec![],
        exec: None,
    };
    let mut p = new_pair(pol, world(), "alice", false, true);
    p.run().unwrap();
    p.events();
    p.client.get(p.now, b"/srv/private.txt", 5, false).unwrap();
    p.run().unwrap();
    assert_eq!(data_of(&p.events()), b"mine\n");
}

/// `/srv` admitted to everyone, but only over an encrypted connection.
fn only_encrypted() -> Pol {
    Pol {
        trust: true,
        admit: vec![("/srv".into(), true, false)],
        deny: vec![],
        exec: None,
    }
}

/// The last request was refused, with 3.21's `ifencrypted` log line.
fn assert_refused_for_want_of_encryption(p: &mut Pair) {
    assert!(matches!(&p.events()[..], [ClientEvent::Refused(_)]));
    assert!(
        p.log()
            .iter()
            .any(|l| l == "File /srv requires encrypt connection...will not serve"),
        "{:?}",
        p.log()
    );
}

#[test]
fn ifencrypted_refuses_plain_get_but_serves_sget() {
    let mut p = authed(only_encrypted());
    p.client.get(p.now, b"/srv/hello.txt", 26, false).unwrap();
    p.run().unwrap();
    assert_refused_for_want_of_encryption(&mut p);
    let mut p = authed(only_encrypted());
    p.client.get(p.now, b"/srv/hello.txt", 26, true).unwrap();
    p.run().unwrap();
    assert_eq!(data_of(&p.events()), b"hello from cf-serverd lab\n");
}

/// Issue 18 finding 1: 3.21.0 checks a plain OPENDIR with `encrypt =
/// false`, so `ifencrypted` refuses it (and the refusal closes, as every
/// OPENDIR refusal does); SOPENDIR is served.
#[test]
fn ifencrypted_refuses_plain_opendir_and_closes_but_serves_sopendir() {
    let mut p = authed(only_encrypted());
    p.client.opendir(p.now, b"/srv", false).unwrap();
    p.run().unwrap();
    assert_refused_for_want_of_encryption(&mut p);
    assert!(
        p.server.is_closing(),
        "a refused OPENDIR closes, as in 3.21"
    );
    let mut p = authed(only_encrypted());
    p.client.opendir(p.now, b"/srv", true).unwrap();
    p.run().unwrap();
    assert_eq!(
        p.events(),
        vec![ClientEvent::Listing(
            world().nodes[b"/srv".as_slice()].listing.clone().unwrap()
        )]
    );
}

#[test]
fn opendir_md5_and_shortcut_both_ways() {
    for enc in [false, true] {
        let mut p = authed(srv_pol());
        p.client.opendir(p.now, b"/srv", enc).unwrap();
        p.run().unwrap();
        let ev = p.events();
        assert_eq!(
            ev,
            vec![ClientEvent::Listing(
                world().nodes[b"/srv".as_slice()].listing.clone().unwrap()
            )]
        );
        let d = crypto::digest(b"hello from cf-serverd lab\n");
        p.client.md5(p.now, b"share/hello.txt", &d, enc).unwrap();
        p.run().unwrap();
        assert_eq!(p.events(), vec![ClientEvent::Md5 { differs: false }]);
        p.client
            .md5(p.now, b"/srv/hello.txt", &[0; 16], enc)
            .unwrap();
        p.run().unwrap();
        assert_eq!(p.events(), vec![ClientEvent::Md5 { differs: true }]);
    }
}

#[test]
fn commands_before_authentication_are_refused_and_close() {
    let mut s = ClassicServer::new(
        Config::default(),
        Arc::new(srv_pol()),
        keys().0.clone(),
        "127.0.0.1".into(),
        NOW,
    );
    s.handle_input(NOW, &wire::framed(Status::Done, b"VERSION").unwrap());
    let out: Vec<u8> = std::iter::from_fn(|| s.poll_transmit()).flatten().collect();
    assert_eq!(
        out,
        wire::framed(Status::Done, crate::reply::FAILED).unwrap()
    );
    assert!(s.is_closing());
    // SAUTH before CAUTH.
    let mut s = ClassicServer::new(
        Config::default(),
        Arc::new(srv_pol()),
        keys().0.clone(),
        "127.0.0.1".into(),
        NOW,
    );
    s.handle_input(
        NOW,
        &wire::framed(Status::Done, &wire::encode_sauth(false, &[0; 37], 37)).unwrap(),
    );
    assert!(s.is_closing());
}

#[test]
fn garbage_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for seed in 0..200u64 {
        let mut s = ClassicServer::new(
            Config::default(),
            Arc::new(srv_pol()),
            keys().0.clone(),
            "127.0.0.1".into(),
            NOW,
        );
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let mut w = world();
        let msgs: Vec<Vec<u8>> = vec![
            wire::encode_cauth("1", "h", "root"),
            wire::encode_sauth(false, &crypto::nonce_mpi(&mut r), 37),
            {
                let mut v = vec![0u8; (seed % 40) as usize + 1];
                rand_chacha::rand_core::RngCore::fill_bytes(&mut r, &mut v);
                v
            },
            vec![0, 0, 0, 1, 3],
        ];
        for m in msgs {
            if let Some(f) = wire::framed(Status::Done, &m) {
                s.handle_input(NOW, &f);
            }
            while let Some(ev) = s.poll_event() {
                if let Some(a) = w.answer(&ev) {
                    let _ = s.handle_answer(NOW, a, &mut rng);
                }
            }
            while s.poll_transmit().is_some() {}
        }
    }
}

#[test]
fn wrong_server_key_flag_y_is_refused() {
    let mut p = new_pair(srv_pol(), world(), "root", true, false);
    // Re-create the client with its own key posing as the server's.
    let (_, ckey) = keys().clone();
    let cfg = ClientConfig {
        local_ip: "127.0.0.1".into(),
        fqdn: "c".into(),
        user: "root".into(),
        key: ckey.clone(),
        server_key: Some(ckey.to_public_key()),
        trust_server: false,
        timeout_ms: 30_000,
    };
    p.client = ClassicClient::new(cfg, p.now, &mut p.world.rng).unwrap();
    assert!(
        matches!(p.run(), Err(ClassicClientError::KeyRejected(t)) if t.as_bytes() == crate::reply::FAILED)
    );
    assert!(p.server.is_closing());
    assert!(
        p.log()
            .iter()
            .any(|l| l.contains("private decrypt of received challenge failed")),
        "{:?}",
        p.log()
    );
}

#[test]
fn silent_peer_times_out_during_authentication_and_when_idle() {
    let cfg = Config {
        handshake_timeout_ms: 1000,
        idle_timeout_ms: 5000,
        ..Config::default()
    };
    let mut s = ClassicServer::new(
        cfg,
        Arc::new(srv_pol()),
        keys().0.clone(),
        "127.0.0.1".into(),
        NOW,
    );
    assert_eq!(s.poll_timeout(), Some(1000));
    s.handle_timeout(Now {
        mono_ms: 999,
        unix_s: 0,
    });
    assert!(!s.is_closing());
    s.handle_timeout(Now {
        mono_ms: 1000,
        unix_s: 0,
    });
    assert!(s.is_closing());
    assert!(
        s.poll_transmit().is_none(),
        "a timeout closes without a byte"
    );
}

#[test]
fn pipelined_requests_do_not_recurse() {
    // Thousands of refused requests in one read: served iteratively.
    let mut p = authed(srv_pol());
    let mut burst = Vec::new();
    for _ in 0..5000 {
        burst.extend(wire::framed(Status::Done, b"SYNCH 1700000000 STAT relative/path").unwrap());
    }
    p.server.handle_input(NOW, &burst);
    let mut refusals = 0;
    while let Some(b) = p.server.poll_transmit() {
        if b.ends_with(crate::reply::FAILED) {
            refusals += 1;
        }
    }
    assert_eq!(refusals, 5000);
    assert!(!p.server.is_closing());
}

/// PROTOCOL.md §8.10, classic column: which replies keep the connection.
#[test]
fn close_or_keep_table() {
    let cipher_of = |p: &Pair| p.client.session_cipher().unwrap().clone();
    // (request builder, expected first reply, connection kept)
    type Build = Box<dyn Fn(&SessionCipher) -> Vec<u8>>;
    let cases: Vec<(&str, Build, &[u8], bool)> = vec![
        (
            "VERSION",
            Box::new(|_| b"VERSION".to_vec()),
            b"OK: 3.21.0",
            true,
        ),
        (
            "unknown",
            Box::new(|_| b"FOO bar".to_vec()),
            crate::reply::REQUEST_DENIED,
            false,
        ),
        (
            "AUTH",
            Box::new(|_| b"AUTH x".to_vec()),
            crate::reply::REQUEST_DENIED,
            false,
        ),
        (
            "SYNCH time 0",
            Box::new(|_| b"SYNCH 0 STAT /srv/hello.txt".to_vec()),
            crate::reply::REQUEST_DENIED,
            false,
        ),
        (
            "GET 5000",
            Box::new(|_| b"GET 5000 /srv/hello.txt".to_vec()),
            crate::reply::FAILED,
            false,
        ),
        (
            "VAR denied",
            Box::new(|_| b"VAR x".to_vec()),
            crate::reply::FAILED,
            false,
        ),
        (
            "CONTEXT",
            Box::new(|_| b"CONTEXT .*".to_vec()),
            crate::reply::FAILED,
            false,
        ),
        (
            "EXEC",
            Box::new(|_| b"EXEC".to_vec()),
            crate::reply::FAILED,
            false,
        ),
        (
            "MD5 denied",
            Box::new(|_| {
                let mut v = b"MD5 /secret/s.txt".to_vec();
                v.extend([0u8; 18]);
                v
            }),
            crate::reply::FAILED,
            true,
        ),
        (
            "SMD5 bad length",
            Box::new(|_| {
                let mut v = b"SMD5 99".to_vec();
                v.resize(24, 0);
                v
            }),
            crate::reply::FAILED,
            true,
        ),
        (
            "SSYNCH bad length",
            Box::new(|_| {
                let mut v = b"SSYNCH 99".to_vec();
                v.resize(24, 0);
                v
            }),
            crate::reply::FAILED,
            false,
        ),
        (
            "SSYNCH not SYNCH",
            Box::new(|c| wire::seal("SSYNCH", c, b"HELLO\0")),
            crate::reply::FAILED,
            true,
        ),
        (
            "SSYNCH wrong key",
            Box::new(|_| {
                wire::seal(
                    "SSYNCH",
                    &SessionCipher::new([9; 16]),
                    b"SYNCH 1700000000 STAT /srv/hello.txt\0",
                )
            }),
            crate::reply::FAILED,
            true,
        ),
        (
            "SGET not GET",
            Box::new(|c| wire::seal("SGET", c, b"PUT dummykey /srv/hello.txt\0")),
            crate::reply::FAILED,
            true,
        ),
        (
            "SOPENDIR denied",
            Box::new(|c| wire::seal("SOPENDIR", c, b"OPENDIR /secret\0")),
            crate::reply::FAILED,
            false,
        ),
        (
            "SMD5 not MD5",
            Box::new(|c| wire::seal("SMD5", c, b"XYZ /srv/hello.txt\0")),
            crate::reply::FAILED,
            false,
        ),
        (
            "SVAR",
            Box::new(|c| wire::seal("SVAR", c, b"VAR x\0")),
            crate::reply::FAILED,
            false,
        ),
        (
            "CAUTH again",
            Box::new(|_| wire::encode_cauth("1", "h", "root")),
            crate::reply::REQUEST_DENIED,
            false,
        ),
    ];
    for (name, build, first, kept) in cases {
        let mut p = authed(srv_pol());
        let c = cipher_of(&p);
        p.server
            .handle_input(NOW, &wire::framed(Status::Done, &build(&c)).unwrap());
        while let Some(ev) = p.server.poll_event() {
            if let Some(a) = p.world.answer(&ev) {
                p.server.handle_answer(NOW, a, &mut p.world.rng).unwrap();
            }
        }
        let out: Vec<u8> = std::iter::from_fn(|| p.server.poll_transmit())
            .flatten()
            .collect();
        let mut d = Decoder::new();
        d.push(&out).unwrap();
        let t = d
            .poll()
            .unwrap()
            .unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(&t.payload[..], first, "{name}");
        assert_eq!(!p.server.is_closing(), kept, "{name}");
    }
}
