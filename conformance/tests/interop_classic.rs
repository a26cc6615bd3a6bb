//! The classic protocol (v1) in both roles, loopback only, against the
//! real CFEngine 3.21 binaries. These tests FAIL when the binaries are
//! missing.
//!
//! * the real cf-agent (`protocol_version => "classic"`) copying from
//!   rcf-serverd with `allowlegacyconnects`;
//! * rcf-serverd refusing classic when `allowlegacyconnects` is empty or absent;
//! * rcf-core's `ClassicClient`, driven over a plain `std::net::TcpStream`,
//!   against the real cf-serverd (plain and encrypted, key flag `n` and `y`);
//! * the recorded classic transcripts, replayed as far as the lab keys allow
//!   (see `recorded_classic_transcripts_replay`).

mod support;

use std::io::{Read, Write};

use std::sync::Arc;
use std::time::{Duration, Instant};

use rcf_conformance::lab::*;
use rcf_conformance::transcript::{self, Dir, Kind, Transcript};
use rcf_core::classic::{crypto, ClassicClientError, ClassicServer, ClientConfig, ClientEvent};
use rcf_core::frame::{Decoder, Status};
use rcf_core::reply::StatReply;
use rcf_core::request::{self, Dialect, Request};
use rcf_core::server::io::{Answer, Event, KeyStatus, Now};
use support::classic::{clock, Driver, OsRng};

struct Setup {
    srv_wd: Workdir,
    cli_wd: Workdir,
    data: DataTree,
}

fn setup(name: &str) -> Setup {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new(&format!("{name}-srv")).unwrap();
    let cli_wd = Workdir::new(&format!("{name}-cli")).unwrap();
    srv_wd.cf_key().unwrap();
    cli_wd.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    Setup {
        srv_wd,
        cli_wd,
        data,
    }
}

fn legacy_policy(s: &Setup) -> ServerPolicy {
    let mut p = ServerPolicy::new(0).admit(s.data.share_path(""));
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    p
}

fn classic(port: u16, src: String, dest: std::path::PathBuf) -> CopySpec {
    CopySpec::new(port, src, dest).protocol("classic")
}

fn done(name: &str, t0: Instant) {
    eprintln!("[interop_classic] {name}: {:?} wall", t0.elapsed());
}

// ---- real cf-agent -> rcf-serverd ------------------------------------------

#[test]
fn agent_classic_plain_encrypted_digest_verify_and_empty_file() {
    let t0 = Instant::now();
    let s = setup("cl1");
    let srv = RcfServer::start(&s.srv_wd, &legacy_policy(&s)).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let plain = classic(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let mut enc = classic(
        srv.port(),
        s.data.share_path("big.bin"),
        out.join("big.bin"),
    );
    enc.encrypt = true;
    let mut dig = classic(
        srv.port(),
        s.data.share_path("seq.txt"),
        out.join("seq.txt"),
    );
    dig.compare = Some("digest".into());
    dig.verify = true;
    let empty = classic(
        srv.port(),
        s.data.share_path("empty.txt"),
        out.join("empty.txt"),
    );
    let mut empty_enc = classic(
        srv.port(),
        s.data.share_path("empty.txt"),
        out.join("empty-enc.txt"),
    );
    empty_enc.encrypt = true;
    let run = cf_agent_copies(&s.cli_wd, &[plain, enc, dig.clone(), empty, empty_enc]).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.ok()),
        "{:?}\n{}\n{}",
        run.outcomes,
        run.describe(),
        srv.log()
    );
    for (src, dst) in [
        ("hello.txt", "hello.txt"),
        ("big.bin", "big.bin"),
        ("seq.txt", "seq.txt"),
        ("empty.txt", "empty.txt"),
        ("empty.txt", "empty-enc.txt"),
    ] {
        trees_equal(&s.data.share.join(src), &out.join(dst)).unwrap();
    }
    let log = srv.log();
    assert!(
        log.contains("Peeked CAUTH in TCP stream, considering the protocol as Classic"),
        "{log}"
    );
    assert!(log.contains("Authentication of client "), "{log}");
    assert!(log.contains("granted access to"), "{log}");
    for word in ["SYNCH", "GET", "SSYNCH", "SGET", "MD5"] {
        assert!(
            log.contains(&format!("Received: {word:>8} ")),
            "no {word} in\n{log}"
        );
    }
    assert_eq!(
        log.matches("Accepting connection").count(),
        1,
        "one cached classic connection expected:\n{log}"
    );
    assert!(
        s.srv_wd
            .trusted_keys()
            .contains(&format!("root-{}.pub", s.cli_wd.key_id().unwrap())),
        "{:?}",
        s.srv_wd.trusted_keys()
    );
    // Second run: the key is known ("OK: key accepted"), the digest compare
    // (encrypted SMD5 this time) finds the file unchanged.
    let mut dig2 = dig;
    dig2.encrypt = true;
    let run = cf_agent_copies(&s.cli_wd, &[dig2]).unwrap();
    assert!(
        run.outcomes[0].ok() && !run.outcomes[0].repaired,
        "{:?}\n{}\n{}",
        run.outcomes,
        run.describe(),
        srv.log()
    );
    assert!(
        srv.log().contains(&format!("Received: {:>8} ", "SMD5")),
        "{}",
        srv.log()
    );
    assert!(
        srv.log()
            .contains("A public key was already known from localhost/127.0.0.1"),
        "{}",
        srv.log()
    );
    done(
        "agent_classic_plain_encrypted_digest_verify_and_empty_file",
        t0,
    );
}

#[test]
fn agent_classic_denied_then_missing_then_good_on_one_connection() {
    let t0 = Instant::now();
    let s = setup("cl2");
    let mut p = legacy_policy(&s);
    let private = s.data.share.join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("k.txt"), b"secret\n").unwrap();
    p.access.push(AccessRule::deny_loopback(
        private.to_string_lossy().into_owned(),
    ));
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let denied = classic(
        srv.port(),
        private.join("k.txt").to_string_lossy().into_owned(),
        out.join("k.txt"),
    );
    let outside = classic(
        srv.port(),
        s.data
            .secret
            .join("secret.txt")
            .to_string_lossy()
            .into_owned(),
        out.join("secret.txt"),
    );
    let missing = classic(
        srv.port(),
        s.data.share_path("missing.txt"),
        out.join("missing.txt"),
    );
    let good = classic(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let run = cf_agent_copies(&s.cli_wd, &[denied, outside, missing, good]).unwrap();
    let o = &run.outcomes;
    assert!(
        !o[0].ok() && !o[1].ok() && !o[2].ok() && o[3].ok(),
        "{o:?}\n{}\n{}",
        run.describe(),
        srv.log()
    );
    assert!(!out.join("k.txt").exists() && !out.join("secret.txt").exists());
    trees_equal(&s.data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    let log = srv.log();
    assert_eq!(
        log.matches("Accepting connection").count(),
        1,
        "one cached connection expected:\n{log}"
    );
    assert!(
        log.contains("denied access to") && log.contains("Access control in sync"),
        "{log}"
    );
    assert!(
        log.contains("Couldn't resolve (realpath: No such file or directory) filename:"),
        "{log}"
    );
    done(
        "agent_classic_denied_then_missing_then_good_on_one_connection",
        t0,
    );
}

#[test]
fn classic_refused_when_allowlegacyconnects_is_absent_or_empty() {
    let t0 = Instant::now();
    let s = setup("cl3");
    let out = s.cli_wd.scratch().join("out");
    for variant in ["absent", "empty"] {
        let mut p = ServerPolicy::new(0).admit(s.data.share_path(""));
        if variant == "empty" {
            p.extra_control = "  allowlegacyconnects => { };\n".into();
        }
        let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
        let run = cf_agent_copy(
            &s.cli_wd,
            &classic(srv.port(), s.data.share_path("hello.txt"), out.join("h")),
        )
        .unwrap();
        assert!(!run.outcomes[0].ok(), "{variant}: {}", run.describe());
        assert!(!out.join("h").exists());
        assert!(
            srv.wait_for_log(
                "Connection is not using latest protocol, denying",
                Duration::from_secs(5)
            ),
            "{variant}: {}",
            srv.log()
        );
        run.assert_contains("Authentication dialogue with '127.0.0.1' failed");
        srv.stop();
    }
    done(
        "classic_refused_when_allowlegacyconnects_is_absent_or_empty",
        t0,
    );
}

/// Either server, started from the same lab policy.
enum AnyServer {
    Rcf(RcfServer),
    Real(RealServer),
}

impl AnyServer {
    fn start(real: bool, wd: &Workdir, p: &ServerPolicy) -> AnyServer {
        if real {
            AnyServer::Real(RealServer::start(wd, p).unwrap())
        } else {
            AnyServer::Rcf(RcfServer::start(wd, p).unwrap())
        }
    }
    fn port(&self) -> u16 {
        match self {
            AnyServer::Rcf(s) => s.port(),
            AnyServer::Real(s) => s.port(),
        }
    }
    fn log(&self) -> String {
        match self {
            AnyServer::Rcf(s) => s.log(),
            AnyServer::Real(s) => s.log(),
        }
    }
}

/// Recursive copies (OPENDIR / SOPENDIR), a symlink recreated as a link,
/// `ifencrypted` (plain GET and plain OPENDIR refused, SGET and SOPENDIR
/// served) and `maproot` — with the
/// same outcomes from the real cf-serverd and from rcf-serverd.
#[test]
fn agent_classic_tree_symlink_ifencrypted_same_as_real_server() {
    let t0 = Instant::now();
    for real in [true, false] {
        let s = setup(if real { "cl6r" } else { "cl6" });
        let mut p = ServerPolicy::new(0);
        p.allowlegacyconnects = vec!["127.0.0.1".into()];
        // A small file: cf-agent reads min(size, 2048) raw bytes, so a framed
        // refusal (67 bytes) inside a larger file's stream costs it its
        // 30 s receive timeout (the same with the real cf-serverd).
        std::fs::write(s.data.share.join("small.txt"), b"only when encrypted\n").unwrap();
        let mut only_enc = AccessRule::admit_loopback(s.data.share_path("small.txt"));
        only_enc.ifencrypted = Some(true);
        p.access.push(only_enc);
        // A directory only listed over an encrypted connection: 3.21.0
        // checks a plain OPENDIR with encrypt = false (issue 18 finding 1).
        std::fs::create_dir_all(s.data.share.join("etree/sub")).unwrap();
        std::fs::write(
            s.data.share.join("etree/sub/e.txt"),
            b"listed only encrypted\n",
        )
        .unwrap();
        let mut enc_dir = AccessRule::admit_loopback(s.data.share_path("etree"));
        enc_dir.ifencrypted = Some(true);
        p.access.push(enc_dir);
        p.access
            .push(AccessRule::admit_loopback(s.data.share_path("")));
        let srv = AnyServer::start(real, &s.srv_wd, &p);
        let out = s.cli_wd.scratch().join("out");
        let tree_plain =
            classic(srv.port(), s.data.share_path("tree"), out.join("tree")).recursive(false);
        let mut tree_enc =
            classic(srv.port(), s.data.share_path("tree"), out.join("tree-enc")).recursive(false);
        tree_enc.encrypt = true;
        let link = classic(
            srv.port(),
            s.data.share_path("link.txt"),
            out.join("link.txt"),
        );
        let seq_plain = classic(
            srv.port(),
            s.data.share_path("small.txt"),
            out.join("seq-plain.txt"),
        );
        let mut seq_enc = classic(
            srv.port(),
            s.data.share_path("small.txt"),
            out.join("seq-enc.txt"),
        );
        seq_enc.encrypt = true;
        let mut etree_enc = classic(
            srv.port(),
            s.data.share_path("etree"),
            out.join("etree-enc"),
        )
        .recursive(false);
        etree_enc.encrypt = true;
        // last: a refused OPENDIR closes the connection
        let etree_plain = classic(
            srv.port(),
            s.data.share_path("etree"),
            out.join("etree-plain"),
        )
        .recursive(false);
        let run =
            cf_agent_copies(&s.cli_wd, &[tree_plain, tree_enc, link, seq_enc, seq_plain]).unwrap();
        // a second agent run: the refused plain GET above leaves cf-agent's
        // connection out of step (it reads min(size, 2048) raw bytes)
        let erun = cf_agent_copies(&s.cli_wd, &[etree_enc, etree_plain]).unwrap();
        let e = &erun.outcomes;
        let o = &run.outcomes;
        let who = if real {
            "real cf-serverd"
        } else {
            "rcf-serverd"
        };
        assert!(
            o[0].ok() && o[1].ok() && o[2].ok() && o[3].ok(),
            "{who}: {o:?}\n{}\n{}",
            run.describe(),
            srv.log()
        );
        assert!(
            !o[4].ok(),
            "{who}: ifencrypted must refuse the plain GET: {o:?}\n{}",
            srv.log()
        );
        assert!(
            e[0].ok(),
            "{who}: SOPENDIR under ifencrypted is served: {e:?}\n{}",
            srv.log()
        );
        trees_equal(&s.data.share.join("etree"), &out.join("etree-enc")).unwrap();
        assert!(
            !e[1].ok() && !out.join("etree-plain/sub/e.txt").exists(),
            "{who}: ifencrypted must refuse the plain OPENDIR: {e:?}\n{}",
            srv.log()
        );
        // the listing itself is refused, not only the files in it
        assert!(
            srv.log().contains("DIR access error"),
            "{who}: the plain OPENDIR must be refused:\n{}",
            srv.log()
        );
        trees_equal(&s.data.share.join("tree"), &out.join("tree")).unwrap();
        trees_equal(&s.data.share.join("tree"), &out.join("tree-enc")).unwrap();
        trees_equal(&s.data.share.join("small.txt"), &out.join("seq-enc.txt")).unwrap();
        let l = std::fs::symlink_metadata(out.join("link.txt")).unwrap();
        assert!(
            l.file_type().is_symlink(),
            "{who}: classic reports links as links, cf-agent recreates them"
        );
        assert!(!out.join("seq-plain.txt").exists());
        if !real {
            let log = srv.log();
            assert!(
                log.contains("requires encrypt connection...will not serve"),
                "{log}"
            );
            assert!(
                log.contains(&format!("Received: {:>8} ", "SOPENDIR")),
                "{log}"
            );
            assert!(
                log.contains(&format!("Received: {:>8} ", "OPENDIR")),
                "{log}"
            );
        }
    }
    done(
        "agent_classic_tree_symlink_ifencrypted_same_as_real_server",
        t0,
    );
}

/// A user that owns nothing: a 0600 file is refused unless `maproot`
/// names the peer (the classic-only TransferRights escape), on both servers.
#[test]
fn core_client_maproot_same_as_real_server() {
    let t0 = Instant::now();
    for real in [true, false] {
        let s = setup(if real { "cl7r" } else { "cl7" });
        let private = s.data.share.join("p600.txt");
        std::fs::write(&private, b"private bytes\n").unwrap();
        std::fs::set_permissions(
            &private,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let other = s.srv_wd.scratch().join("other");
        std::fs::create_dir_all(&other).unwrap();
        let other_file = other.join("o600.txt");
        std::fs::write(&other_file, b"other bytes\n").unwrap();
        std::fs::set_permissions(
            &other_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut p = legacy_policy(&s);
        let mut mr = AccessRule::admit_loopback(other.to_string_lossy().into_owned());
        mr.maproot = vec!["127.0.0.1".into()];
        p.access.push(mr);
        let srv = AnyServer::start(real, &s.srv_wd, &p);
        let who = if real {
            "real cf-serverd"
        } else {
            "rcf-serverd"
        };
        let mut cfg = client_cfg(&s, None);
        cfg.user = "nobody".into();
        // The server trusts our key for user "nobody" (trustkeysfrom).
        for (path, want) in [
            (
                other_file.to_string_lossy().into_owned(),
                Some(b"other bytes\n".to_vec()),
            ),
            (private.to_string_lossy().into_owned(), None),
        ] {
            let (mut d, _) = Driver::connect(srv.port(), cfg.clone()).unwrap();
            let st = d.stat(&path, true).unwrap();
            d.client
                .get(clock(d.start), path.as_bytes(), st.size, true)
                .unwrap();
            let ev = d.until_event().unwrap();
            match &want {
                Some(w) => {
                    let got: Vec<u8> = ev
                        .iter()
                        .filter_map(|e| {
                            if let ClientEvent::Data(x) = e {
                                Some(x.clone())
                            } else {
                                None
                            }
                        })
                        .flatten()
                        .collect();
                    assert_eq!(
                        &got,
                        w,
                        "{who}: maproot must allow {path}: {ev:?}\n{}",
                        srv.log()
                    );
                }
                None => assert!(
                    matches!(&ev[..], [ClientEvent::Refused(_)]),
                    "{who}: {path} must be refused: {ev:?}"
                ),
            }
        }
    }
    done("core_client_maproot_same_as_real_server", t0);
}

// ---- rcf-core ClassicClient -> real cf-serverd -----------------------------

fn client_cfg(s: &Setup, server_key: Option<rsa::RsaPublicKey>) -> ClientConfig {
    let pem = std::fs::read(s.cli_wd.privkey_path()).unwrap();
    ClientConfig {
        local_ip: "127.0.0.1".into(),
        fqdn: "localhost".into(),
        user: "root".into(),
        key: Arc::new(rcf_core::keys::parse_private_pem(&pem).unwrap()),
        server_key,
        trust_server: true,
        timeout_ms: 20_000,
    }
}

#[test]
fn core_client_against_real_cf_serverd_plain_and_encrypted() {
    let t0 = Instant::now();
    let s = setup("cl4");
    let srv = RealServer::start(&s.srv_wd, &legacy_policy(&s)).unwrap();
    let hello = s.data.share_path("hello.txt");
    let want = std::fs::read(&hello).unwrap();

    // First contact: flag n, the server learns our key on trust.
    let (mut d, ev) = Driver::connect(srv.port(), client_cfg(&s, None)).unwrap();
    let ClientEvent::Authenticated {
        server_key,
        server_key_id,
        newly_trusted,
        s1,
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert!(newly_trusted);
    assert_eq!(s1, "OK: unknown key was accepted on trust");
    let real_id = rcf_core::keys::key_id(
        &rcf_core::keys::parse_public_pem(&std::fs::read(s.srv_wd.pubkey_path()).unwrap()).unwrap(),
        rcf_core::keys::DigestKind::Md5,
    )
    .to_string();
    assert_eq!(server_key_id, real_id);
    // SSYNCH + SGET (encrypted), then SYNCH + GET (plain), same connection.
    let st = d.stat(&hello, true).unwrap();
    assert_eq!(st.size, want.len() as u64);
    assert_eq!(d.get(&hello, st.size, true), want);
    let st = d.stat(&hello, false).unwrap();
    assert_eq!(d.get(&hello, st.size, false), want);
    // Multi-chunk both ways, a listing, digests, VERSION.
    let big = s.data.share_path("big.bin");
    let big_want = std::fs::read(&big).unwrap();
    for enc in [true, false] {
        let st = d.stat(&big, enc).unwrap();
        assert_eq!(d.get(&big, st.size, enc), big_want, "big.bin enc={enc}");
        d.client
            .opendir(clock(d.start), s.data.share_path("tree").as_bytes(), enc)
            .unwrap();
        let ev = d.until_event().unwrap();
        let ClientEvent::Listing(names) = &ev[0] else {
            panic!("{ev:?}")
        };
        assert!(
            names.contains(&b".".to_vec()) && names.contains(&b"..".to_vec()),
            "{names:?}"
        );
        d.client
            .md5(
                clock(d.start),
                hello.as_bytes(),
                &crypto::digest(&want),
                enc,
            )
            .unwrap();
        assert_eq!(
            d.until_event().unwrap(),
            vec![ClientEvent::Md5 { differs: false }]
        );
        d.client
            .md5(clock(d.start), hello.as_bytes(), &[0; 16], enc)
            .unwrap();
        assert_eq!(
            d.until_event().unwrap(),
            vec![ClientEvent::Md5 { differs: true }]
        );
    }
    // A symlink comes back as a link over classic.
    let link = d.stat(&s.data.share_path("link.txt"), false).unwrap();
    assert_ne!(link.lmode, 0, "{link:?}");
    assert_eq!(link.link_target, b"hello.txt");
    d.client.version(clock(d.start)).unwrap();
    assert_eq!(
        d.until_event().unwrap(),
        vec![ClientEvent::Version("OK: 3.21.0".into())]
    );
    // A refused STAT keeps the connection.
    let r = d.stat(&s.data.secret.join("secret.txt").to_string_lossy(), false);
    assert!(
        r.as_ref()
            .is_err_and(|e| e.contains("Unspecified server refusal")),
        "{r:?}"
    );
    let st = d.stat(&hello, false).unwrap();
    assert_eq!(st.size, want.len() as u64);
    drop(d);

    // Second contact: flag y with the server key we learnt, key now known.
    let (mut d, ev) = Driver::connect(srv.port(), client_cfg(&s, Some(server_key))).unwrap();
    let ClientEvent::Authenticated {
        newly_trusted, s1, ..
    } = ev
    else {
        panic!("{ev:?}")
    };
    assert!(!newly_trusted);
    assert_eq!(s1, "OK: key accepted");
    let st = d.stat(&hello, true).unwrap();
    assert_eq!(d.get(&hello, st.size, true), want);
    drop(d);

    // A wrong server key (flag y): the real server cannot decrypt the nonce.
    let mut other = client_cfg(&s, None);
    other.server_key = Some(other.key.to_public_key());
    let r = Driver::connect(srv.port(), other);
    assert!(
        matches!(r, Err(ClassicClientError::KeyRejected(_))),
        "{:?}",
        r.as_ref().err()
    );

    let log = srv.log();
    assert!(
        log.contains("Authentication of client localhost/127.0.0.1 achieved"),
        "{log}"
    );
    done(
        "core_client_against_real_cf_serverd_plain_and_encrypted",
        t0,
    );
}

impl Driver {
    /// After authentication: send one request `payload` as it is (sealed
    /// by the caller if it must be), then VERSION, and return every byte
    /// the server sent before the VERSION reply (framed or raw).
    fn raw_until_version(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        rcf_core::frame::encode(Status::Done, payload, &mut out).unwrap();
        rcf_core::frame::encode(Status::Done, b"VERSION", &mut out).unwrap();
        self.sock.write_all(&out).unwrap();
        let mut marker = Vec::new();
        rcf_core::frame::encode(Status::Done, b"OK: 3.21.0", &mut marker).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(&marker) {
            let n = self
                .sock
                .read(&mut buf)
                .expect("reply before the read timeout");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        got.truncate(got.len() - marker.len());
        got
    }
}

/// Issue 18's classic wire differences, against the real cf-serverd and
/// rcf-serverd in the same run: plain GET and SGET of a directory (3.21:
/// nothing at all, its read fails with EISDIR), plain GET of a dangling
/// link (the raw refusal block; 3.21 fills it with stack bytes, rcf with
/// zeros: compared up to the refusal text). SGET of an empty file stays
/// different (SECURITY.md): 3.21 sends one CF_DONE transaction of
/// `strlen` of an uninitialised buffer, rcf one holding the encryption of
/// nothing; both are a single `t` transaction, which is checked.
#[test]
fn classic_wire_replies_same_as_real_server() {
    let t0 = Instant::now();
    let mut seen: Vec<Vec<(String, Vec<u8>)>> = Vec::new();
    for real in [true, false] {
        let s = setup(if real { "cl9r" } else { "cl9" });
        std::os::unix::fs::symlink("nowhere", s.data.share.join("dangling")).unwrap();
        let srv = AnyServer::start(real, &s.srv_wd, &legacy_policy(&s));
        let (mut d, _) = Driver::connect(srv.port(), client_cfg(&s, None)).unwrap();
        let cipher = d.client.session_cipher().expect("authenticated").clone();
        let sget = |p: &str| {
            let mut plain = format!("GET dummykey {p}").into_bytes();
            plain.push(0);
            rcf_core::classic::wire::seal("SGET", &cipher, &plain)
        };
        let cases: Vec<(String, Vec<u8>)> = vec![
            (
                "SGET empty.txt".into(),
                sget(&s.data.share_path("empty.txt")),
            ),
            ("SGET tree".into(), sget(&s.data.share_path("tree"))),
            (
                "GET tree".into(),
                request::encode_get(2048, s.data.share_path("tree").as_bytes()),
            ),
            (
                "GET dangling".into(),
                request::encode_get(2048, s.data.share_path("dangling").as_bytes()),
            ),
        ];
        let mut got = Vec::new();
        for (what, payload) in cases {
            let mut r = d.raw_until_version(&payload);
            let failed = rcf_core::reply::FAILED;
            if r.len() == 2048 && r.starts_with(failed) {
                r[failed.len()..].fill(0);
            }
            got.push((what, r));
        }
        seen.push(got);
    }
    for ((what, a), (_, b)) in seen[0].iter().zip(&seen[1]) {
        if what == "SGET empty.txt" {
            // One CF_DONE transaction from each, its length the only frame.
            for r in [a, b] {
                let (st, n) = rcf_core::frame::parse_header(r[..8].try_into().unwrap()).unwrap();
                assert!(
                    st == Status::Done && r.len() == 8 + n,
                    "{:?}",
                    String::from_utf8_lossy(r)
                );
            }
            eprintln!(
                "[interop_classic] SGET empty.txt: real cf-serverd sends {} bytes {:?} (stack), rcf {} bytes (sealed nothing)",
                a.len(),
                String::from_utf8_lossy(&a[..8]),
                b.len()
            );
            continue;
        }
        assert!(
            a == b,
            "{what}: real {:?} vs rcf {:?}",
            String::from_utf8_lossy(a),
            String::from_utf8_lossy(b)
        );
        eprintln!(
            "[interop_classic] {what}: real cf-serverd and rcf send {} bytes {:?}",
            a.len(),
            String::from_utf8_lossy(&a[..a.len().min(70)])
        );
    }
    done("classic_wire_replies_same_as_real_server", t0);
}

#[test]
fn core_client_refused_by_real_server_without_trust() {
    let t0 = Instant::now();
    let s = setup("cl5");
    let mut p = legacy_policy(&s);
    p.trustkeysfrom = vec![];
    let srv = RealServer::start(&s.srv_wd, &p).unwrap();
    let r = Driver::connect(srv.port(), client_cfg(&s, None));
    assert_eq!(
        r.err(),
        Some(ClassicClientError::KeyRejected(
            "BAD: key could not be accepted on trust".into()
        ))
    );
    // And the core client refuses an unknown server key without trustkey.
    let mut c = client_cfg(&s, None);
    c.trust_server = false;
    let mut p = legacy_policy(&s);
    p.trustkeysfrom = vec!["127.0.0.1".into()];
    drop(srv);
    let srv = RealServer::start(&s.srv_wd, &p).unwrap();
    assert_eq!(
        Driver::connect(srv.port(), c).err(),
        Some(ClassicClientError::Untrusted)
    );
    done("core_client_refused_by_real_server_without_trust", t0);
}

// ---- recorded transcripts ----------------------------------------------------

/// A policy that admits nothing (the replay stops in the key exchange).
struct NoAcl;
impl rcf_core::classic::ClassicPolicy for NoAcl {
    fn legacy_allowed(&self, _: &str) -> bool {
        true
    }
    fn trusts_keys_from(&self, _: &str) -> bool {
        false
    }
    fn deny_bad_clocks(&self) -> bool {
        true
    }
    fn expand_shortcut(&self, _: &[u8], _: &rcf_core::classic::ClassicPeer) -> Option<Vec<u8>> {
        None
    }
    fn check_path(
        &self,
        _: &[u8],
        _: &rcf_core::classic::ClassicPeer,
        _: bool,
    ) -> rcf_core::classic::ClassicDecision {
        rcf_core::classic::ClassicDecision {
            allowed: false,
            maproot: false,
            needs_encryption: false,
            rule: String::new(),
        }
    }
    fn check_literal(&self, _: &[u8], _: &rcf_core::classic::ClassicPeer, _: bool) -> bool {
        false
    }
}

fn classic_vectors() -> Vec<Transcript> {
    let v: Vec<Transcript> = transcript::load_all(&transcript::vectors_dir())
        .unwrap()
        .into_iter()
        .filter(|t| t.name.starts_with("classic-"))
        .collect();
    assert_eq!(v.len(), 3, "expected the three classic-* vectors");
    v
}

fn txns(t: &Transcript, dir: Dir) -> Vec<([u8; 8], Vec<u8>)> {
    t.records
        .iter()
        .filter(|r| r.dir == dir)
        .filter_map(|r| match &r.kind {
            Kind::Txn { header, payload } => Some((*header, payload.clone())),
            _ => None,
        })
        .collect()
}

/// What is and is not replayed (the lab keys are not in the vectors):
///
/// * every recorded transaction: header bytes re-encode identically
///   (framing), and every client command parses under the classic table;
/// * C0 `CAUTH` and C1 `SAUTH` parse to the recorded fields; C2/C3 decode to
///   an RSA public key (the lab client key);
/// * the cleartext STAT replies parse and re-encode byte-for-byte;
/// * our `ClassicServer`, fed the recorded C0..C3 with the key answered as
///   trusted, sends S1 `OK: key accepted` and an S2 that is byte-identical
///   to the recorded one (S2 is the MD5 of the client's plaintext nonce,
///   which flag `n` puts on the wire), then S3 (256 bytes: RSA to the
///   recorded 2048-bit client key), S4 (a 261-byte MPI) and S5
///   (`00 00 00 03 01 00 01`): the recorded shapes, not the bytes (S3 is
///   random and S4 is our key, not the lab's);
/// * NOT replayed: the recorded C4 answers the real server's
///   counter-challenge, so our server rejects it (asserted); C5 and every
///   `S*` payload need the lab's private keys to decrypt.
#[test]
fn recorded_classic_transcripts_replay() {
    let mut rng = OsRng;
    let host_key = {
        let wd = Workdir::new("cl-replay").unwrap();
        wd.cf_key().unwrap();
        Arc::new(
            rcf_core::keys::parse_private_pem(&std::fs::read(wd.privkey_path()).unwrap()).unwrap(),
        )
    };
    for t in classic_vectors() {
        // Framing and parsing of every transaction.
        for (dir, list) in [
            (Dir::Client, txns(&t, Dir::Client)),
            (Dir::Server, txns(&t, Dir::Server)),
        ] {
            for (h, p) in &list {
                let status = if h[0] == b't' {
                    Status::Done
                } else {
                    Status::More
                };
                assert_eq!(
                    &rcf_core::frame::encode_header(status, p.len()).unwrap(),
                    h,
                    "{}",
                    t.name
                );
                if dir == Dir::Client {
                    // Never panics; binary key-exchange payloads simply do not parse.
                    let _ = request::parse_request(p, Dialect::Classic);
                }
            }
        }
        let c = txns(&t, Dir::Client);
        let s = txns(&t, Dir::Server);
        match request::parse_request(&c[0].1, Dialect::Classic).unwrap() {
            Request::Cauth { ip, fqdn, user } => {
                assert_eq!(
                    (ip.as_slice(), fqdn.as_slice(), user.as_slice()),
                    (&b"127.0.0.1"[..], &b"localhost"[..], &b"root"[..])
                )
            }
            r => panic!("{r:?}"),
        }
        let Request::Sauth {
            flag,
            clen,
            nlen,
            enterprise,
            challenge,
        } = request::parse_request(&c[1].1, Dialect::Classic).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (flag, clen, nlen, enterprise),
            (b'n', 37, 37, Some(b'c')),
            "{}",
            t.name
        );
        assert_eq!(&challenge[..5], &[0, 0, 0, 0x21, 0]);
        let client_key = crypto::public_key_from_mpis(&c[2].1, &c[3].1).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&client_key), 256);
        // The recorded S2 is the MD5 of the recorded nonce.
        assert_eq!(s[1].1, crypto::digest(&challenge).to_vec(), "{}", t.name);
        // Cleartext STAT replies: parse and re-encode byte-for-byte.
        for w in s.windows(2) {
            if w[0].1.starts_with(b"OK: ") && w[1].1.starts_with(b"OK:") {
                let r = StatReply::parse(&w[0].1, &w[1].1).unwrap();
                let e = r.encode();
                assert_eq!(
                    (e[0].payload.to_vec(), e[1].payload.to_vec()),
                    (w[0].1.clone(), w[1].1.clone()),
                    "{}",
                    t.name
                );
            }
        }
        // Our server fed the recorded client side.
        let now = Now {
            mono_ms: 0,
            unix_s: 1_795_415_973,
        };
        let mut srv = ClassicServer::new(
            Default::default(),
            Arc::new(NoAcl),
            host_key.clone(),
            "127.0.0.1".into(),
            now,
        );
        let mut out = Vec::new();
        for (h, p) in &c[..4] {
            let mut b = h.to_vec();
            b.extend_from_slice(p);
            srv.handle_input(now, &b);
        }
        let mut answered = false;
        while let Some(ev) = srv.poll_event() {
            if let Event::LookupKey { user, key_id, .. } = &ev {
                assert_eq!(user, "root");
                assert!(key_id.starts_with("MD5="));
                srv.handle_answer(now, Answer::Key(KeyStatus::Trusted), &mut rng)
                    .unwrap();
                answered = true;
            }
        }
        assert!(answered);
        while let Some(b) = srv.poll_transmit() {
            out.extend_from_slice(&b);
        }
        let mut dec = Decoder::new();
        dec.push(&out).unwrap();
        let ours: Vec<_> = std::iter::from_fn(|| dec.poll().unwrap()).collect();
        assert_eq!(ours.len(), 5, "{}", t.name);
        assert_eq!(&ours[0].payload[..], &s[0].1[..], "S1");
        assert_eq!(&ours[1].payload[..], &s[1].1[..], "S2 byte-exact");
        assert_eq!(ours[2].payload.len(), s[2].1.len(), "S3 shape");
        assert_eq!(ours[3].payload.len(), s[3].1.len(), "S4 shape");
        assert_eq!(&ours[4].payload[..], &s[4].1[..], "S5");
        // The recorded C4 answers the lab server's challenge, not ours.
        let (h, p) = &c[4];
        let mut b = h.to_vec();
        b.extend_from_slice(p);
        srv.handle_input(now, &b);
        assert!(
            srv.is_closing(),
            "{}: a foreign C4 must be rejected",
            t.name
        );
    }
}
