//! Paths are bytes (issue 18): file names that are not UTF-8
//! (`bin\xff\xfe.txt`, a directory `d\xff`), and a policy promiser holding
//! such bytes, against the real cf-serverd 3.21 and rcf-serverd with the
//! same policy and the same tree.
//!
//! * over TLS, every STAT, GET, MD5 and OPENDIR reply of rcf-serverd is
//!   byte for byte the real server's (STAT's atime aside: the other
//!   server's read may have moved it), including OPENDIR's directory
//!   order and the refusals the non-UTF-8 deny promiser causes;
//! * the real cf-agent copies such a file, and a tree holding such names,
//!   from each server over TLS and over the classic protocol, with the
//!   same results; the denied directory is refused by both;
//!
//! These tests FAIL when the CFEngine binaries are missing. Loopback only;
//! servers are stopped by PID on drop.

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use md5::Digest as _;
use rcf_conformance::lab::*;
use rcf_core::bytestr;
use support::*;

struct Setup {
    real_wd: Workdir,
    rcf_wd: Workdir,
    cli_wd: Workdir,
    share: PathBuf,
    policy: ServerPolicy,
}

/// `share` bytes + `rel` bytes.
fn at(share: &Path, rel: &[u8]) -> Vec<u8> {
    [share.as_os_str().as_bytes(), b"/", rel].concat()
}

const FILE: &[u8] = b"bin\xff\xfe.txt";
const DENIED_DIR: &[u8] = b"d\xff";
const OPEN_DIR: &[u8] = b"e\xfe";

/// The lab tree plus `bin\xff\xfe.txt`, `d\xff/s.txt` (denied by a promiser
/// written with the raw byte) and `e\xfe/{p.txt, n\xe9.txt}`; the policy
/// admits loopback to the share, classic included.
fn setup(name: &str) -> Setup {
    require_cfengine().unwrap();
    let real_wd = Workdir::new(&format!("{name}-real")).unwrap();
    let rcf_wd = Workdir::new(&format!("{name}-rcf")).unwrap();
    let cli_wd = Workdir::new(&format!("{name}-cli")).unwrap();
    cli_wd.cf_key().unwrap();
    let data = make_data_tree(&real_wd.scratch().join("data")).unwrap();
    let share = std::fs::canonicalize(&data.share).unwrap();
    let p = |rel: &[u8]| PathBuf::from(OsStr::from_bytes(&at(&share, rel)));
    std::fs::write(p(FILE), b"non-UTF-8 name, served as bytes\n").unwrap();
    std::fs::create_dir_all(p(DENIED_DIR)).unwrap();
    std::fs::write(p(b"d\xff/s.txt"), b"denied by a byte promiser\n").unwrap();
    std::fs::create_dir_all(p(OPEN_DIR)).unwrap();
    std::fs::write(p(b"e\xfe/p.txt"), b"public\n").unwrap();
    std::fs::write(p(b"e\xfe/n\xe9.txt"), b"latin-1 name\n").unwrap();
    let mut policy = ServerPolicy::new(0).admit(share.to_string_lossy().into_owned());
    policy.access.push(AccessRule::deny_loopback(
        bytestr::encode(&at(&share, DENIED_DIR)).into_owned(),
    ));
    policy.allowlegacyconnects = vec!["127.0.0.1".into()];
    Setup {
        real_wd,
        rcf_wd,
        cli_wd,
        share,
        policy,
    }
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(300).collect()
}

#[test]
fn tls_replies_for_non_utf8_names_equal_the_real_servers() {
    let s = setup("bp1");
    let real = RealServer::start(&s.real_wd, &s.policy).unwrap();
    let rcf = RcfServer::start(&s.rcf_wd, &s.policy).unwrap();
    let key = rcf_core::keys::parse_private_pem(&std::fs::read(s.cli_wd.privkey_path()).unwrap())
        .unwrap();
    let content = std::fs::read(OsStr::from_bytes(&at(&s.share, FILE))).unwrap();
    let good: [u8; 16] = md5::Md5::digest(&content).into();
    let mut reqs: Vec<(String, Vec<u8>)> = Vec::new();
    for rel in [
        FILE,
        b"d\xff/s.txt",
        DENIED_DIR,
        b"d\xff/",
        OPEN_DIR,
        b"e\xfe/",
        b"e\xfe/p.txt",
        b"e\xfe/n\xe9.txt",
        b"e\xfe/../bin\xff\xfe.txt",
        b"bin\xff\xfe.txt\xff",
        b"d\xef\xbf\xbd/s.txt",
        b"",
    ] {
        let path = at(&s.share, rel);
        let now = unix_now() as i64;
        for (op, req) in [
            ("STAT", rcf_core::request::encode_stat(now, &path)),
            ("GET", rcf_core::request::encode_get(4096, &path)),
            ("MD5 good", rcf_core::request::encode_md5(&path, &good)),
            ("MD5 zeros", rcf_core::request::encode_md5(&path, &[0; 16])),
            (
                "MD5 empty",
                rcf_core::request::encode_md5(&path, &md5::Md5::digest(b"").into()),
            ),
            ("OPENDIR", rcf_core::request::encode_opendir(&path)),
        ] {
            reqs.push((format!("{op} {}", show(rel)), req));
        }
    }
    let raw: Vec<Vec<u8>> = reqs.iter().map(|(_, r)| r.clone()).collect();
    let replies: Vec<Vec<Option<Vec<u8>>>> = [real.port(), rcf.port()]
        .into_iter()
        .map(|port| replies_from(port, &key, "root", &raw))
        .collect();
    let mut served = 0;
    let mut refused = 0;
    for (i, (what, _)) in reqs.iter().enumerate() {
        let (a, b) = (&replies[0][i], &replies[1][i]);
        assert_eq!(
            a,
            b,
            "{what}: real {:?} vs rcf {:?}",
            a.as_deref().map(show),
            b.as_deref().map(show)
        );
        match a {
            Some(r) if contains(r, b"BAD:") || contains(r, b"CFD_TRUE") => refused += 1,
            _ => served += 1,
        }
    }
    // The byte promiser denies; the non-UTF-8 file is served (controls).
    let get_file = reqs
        .iter()
        .position(|(w, _)| w == &format!("GET {}", show(FILE)))
        .unwrap();
    assert_eq!(replies[1][get_file].as_deref(), Some(&content[..]));
    let denied = reqs
        .iter()
        .position(|(w, _)| w == &format!("GET {}", show(b"d\xff/s.txt")))
        .unwrap();
    assert!(!contains(
        replies[1][denied].as_deref().unwrap_or_default(),
        b"denied by"
    ));
    let listing = reqs
        .iter()
        .position(|(w, _)| w == &format!("OPENDIR {}", show(b"")))
        .unwrap();
    let l = replies[1][listing].as_deref().unwrap();
    assert!(contains(l, FILE) && contains(l, DENIED_DIR), "{}", show(l));
    assert!(rcf.log().contains("access denied"), "rcf logged no denial");
    eprintln!(
        "[byte_paths] {} TLS requests, rcf == real cf-serverd for each ({served} served, {refused} refused or differing digests)",
        reqs.len()
    );
}

#[test]
fn real_agent_copies_non_utf8_names_from_both_servers_tls_and_classic() {
    let s = setup("bp2");
    let real = RealServer::start(&s.real_wd, &s.policy).unwrap();
    let rcf = RcfServer::start(&s.rcf_wd, &s.policy).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let src = |rel: &[u8]| bytestr::encode(&at(&s.share, rel)).into_owned();
    let mut specs = Vec::new();
    let mut names = Vec::new();
    for (server, port) in [("real", real.port()), ("rcf", rcf.port())] {
        for proto in ["latest", "classic"] {
            let d = out.join(format!("{server}-{proto}"));
            specs.push(CopySpec::new(port, src(FILE), d.join("file")).protocol(proto));
            specs.push(
                CopySpec::new(port, src(OPEN_DIR), d.join("tree"))
                    .protocol(proto)
                    .recursive(true),
            );
            specs.push(CopySpec::new(port, src(b"d\xff/s.txt"), d.join("denied")).protocol(proto));
            names.push(format!("{server}-{proto}"));
        }
    }
    let run = cf_agent_copies(&s.cli_wd, &specs).unwrap();
    let want = std::fs::read(OsStr::from_bytes(&at(&s.share, FILE))).unwrap();
    let tree = PathBuf::from(OsStr::from_bytes(&at(&s.share, OPEN_DIR)));
    for (i, name) in names.iter().enumerate() {
        let d = out.join(name);
        let (file, rec, denied) = (
            &run.outcomes[3 * i],
            &run.outcomes[3 * i + 1],
            &run.outcomes[3 * i + 2],
        );
        assert!(file.ok(), "{name}: file copy {file:?}\n{}", run.describe());
        assert_eq!(std::fs::read(d.join("file")).unwrap(), want, "{name}");
        assert!(rec.ok(), "{name}: tree copy {rec:?}\n{}", run.describe());
        trees_equal(&tree, &d.join("tree")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            !denied.ok() && !d.join("denied").exists(),
            "{name}: the byte promiser's deny was not applied: {denied:?}"
        );
    }
    eprintln!("[byte_paths] real cf-agent: file, tree and denied dir with non-UTF-8 names, TLS and classic, real cf-serverd and rcf-serverd alike");
}
