//! Path escapes against rcf-serverd over a real socket, with the raw TLS
//! client: `..`, `//`, `/.`, symlinks to files and directories outside the
//! admitted tree, symlink loops, NUL and non-UTF-8 bytes, very long paths,
//! relative paths, and files or directories swapped for symlinks while
//! being served. Each attempt must get exactly the reply a missing file
//! gets, no reply may carry a canary's content, and inotify on the
//! directories outside the tree must see nothing opened or read there.
//!
//! Loopback only, temp dirs, the server stopped by PID; every loop bounded.

mod support;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use md5::Digest as _;
use rcf_conformance::lab::*;
use support::*;

const CANARY: &[u8] = b"CANARY-outside-3b9d1e7f0a2c-never-send-me\n";

/// The VERSION reply, used as an end marker after each request.
fn version_marker() -> Vec<u8> {
    let mut v = Vec::new();
    rcf_core::frame::encode(rcf_core::frame::Status::Done, b"OK: 3.21.0", &mut v).unwrap();
    v
}

/// inotify on some directories: any open or read inside them is reported.
struct Watch {
    fd: i32,
    names: Vec<(i32, String)>,
}

impl Watch {
    fn new(dirs: &[&Path]) -> Watch {
        // SAFETY: inotify calls on a descriptor we own, closed on drop.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(fd >= 0, "inotify_init1");
        let mut names = Vec::new();
        for d in dirs {
            let c = std::ffi::CString::new(d.as_os_str().as_bytes()).unwrap();
            let wd =
                unsafe { libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_OPEN | libc::IN_ACCESS) };
            assert!(wd >= 0, "inotify_add_watch {}", d.display());
            names.push((wd, d.display().to_string()));
        }
        Watch { fd, names }
    }

    /// Events since the last call, as "<dir>/<name> OPEN|ACCESS".
    fn events(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return out;
            }
            let mut i = 0usize;
            while i + 16 <= n as usize {
                let wd = i32::from_ne_bytes(buf[i..i + 4].try_into().unwrap());
                let mask = u32::from_ne_bytes(buf[i + 4..i + 8].try_into().unwrap());
                let len = u32::from_ne_bytes(buf[i + 12..i + 16].try_into().unwrap()) as usize;
                let name = String::from_utf8_lossy(&buf[i + 16..i + 16 + len])
                    .trim_end_matches('\0')
                    .to_string();
                let dir = self
                    .names
                    .iter()
                    .find(|(w, _)| *w == wd)
                    .map(|(_, d)| d.as_str())
                    .unwrap_or("?");
                let what = if mask & libc::IN_ACCESS != 0 {
                    "ACCESS (read)"
                } else {
                    "OPEN"
                };
                out.push(format!("{dir}/{name} {what}"));
                i += 16 + len;
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        unsafe { libc::close(self.fd) };
    }
}

struct Lab {
    srv: RcfServer,
    key: rcf_core::keys::RsaPrivateKey,
    share: String,
    outside: String,
    secret: String,
    /// The share and outside directories' paths as bytes (not UTF-8 in
    /// the rerun with non-UTF-8 names).
    share_b: Vec<u8>,
    outside_b: Vec<u8>,
    _srv_wd: Workdir,
    _cli_wd: Workdir,
}

fn lab(name: &str) -> Lab {
    lab_named(name, b"share", b"outside")
}

/// The lab with the admitted tree renamed to `share_name` and the outside
/// tree made as `outside_name` (bytes, need not be UTF-8); the policy
/// promiser holds the share's raw bytes.
fn lab_named(name: &str, share_name: &[u8], outside_name: &[u8]) -> Lab {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new(&format!("{name}-srv")).unwrap();
    let cli_wd = Workdir::new(&format!("{name}-cli")).unwrap();
    cli_wd.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let root = std::fs::canonicalize(&data.root).unwrap();
    let share = root.join(OsStr::from_bytes(share_name));
    let outside = root.join(OsStr::from_bytes(outside_name));
    if share_name != b"share" {
        std::fs::rename(root.join("share"), &share).unwrap();
    }
    let up_out = |rest: &[u8]| OsStr::from_bytes(&[b"../", outside_name, rest].concat()).to_owned();
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("canary.txt"), CANARY).unwrap();
    std::fs::write(outside.join("dir/canary.txt"), CANARY).unwrap();
    std::fs::write(outside.join("outside-only-marker"), CANARY).unwrap();
    std::fs::write(outside.join(OsStr::from_bytes(b"caf\xe9.txt")), CANARY).unwrap();
    use std::os::unix::fs::symlink;
    symlink(up_out(b"/canary.txt"), share.join("esc-file")).unwrap();
    symlink(outside.join("canary.txt"), share.join("esc-abs")).unwrap();
    symlink(up_out(b""), share.join("esc-dir")).unwrap();
    symlink("esc-file", share.join("chain")).unwrap();
    symlink("loop2", share.join("loop1")).unwrap();
    symlink("loop1", share.join("loop2")).unwrap();
    symlink("self", share.join("self")).unwrap();
    symlink(up_out(b"/nonexistent"), share.join("dangling-out")).unwrap();
    let share_b = share.as_os_str().as_bytes().to_vec();
    let outside_b = outside.as_os_str().as_bytes().to_vec();
    let pol = ServerPolicy::new(0).admit(rcf_core::bytestr::encode(&share_b).into_owned());
    let srv = RcfServer::start(&srv_wd, &pol).unwrap();
    let key =
        rcf_core::keys::parse_private_pem(&std::fs::read(cli_wd.privkey_path()).unwrap()).unwrap();
    Lab {
        srv,
        key,
        share: share.to_string_lossy().into_owned(),
        outside: outside.to_string_lossy().into_owned(),
        secret: root.join("secret").to_string_lossy().into_owned(),
        share_b,
        outside_b,
        _srv_wd: srv_wd,
        _cli_wd: cli_wd,
    }
}

/// One connection, re-opened when the server closes it.
struct Conn<'a> {
    lab: &'a Lab,
    c: Option<RawClient>,
    marker: Vec<u8>,
}

impl<'a> Conn<'a> {
    fn new(lab: &'a Lab) -> Self {
        Conn {
            lab,
            c: None,
            marker: version_marker(),
        }
    }

    /// Send `payload` then VERSION; everything received before the VERSION
    /// reply is this request's reply. `None` = the server closed instead.
    fn exchange(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.c.as_ref().map(|c| c.closed).unwrap_or(true) {
            let (c, w) = RawClient::identify(
                Ipv4Addr::LOCALHOST,
                self.lab.srv.port(),
                &self.lab.key,
                "root",
            );
            assert!(
                w.unwrap_or_default().starts_with(b"OK WELCOME"),
                "not welcomed"
            );
            self.c = Some(c);
        }
        let c = self.c.as_mut().unwrap();
        c.txn(payload);
        c.txn(b"VERSION");
        let mut got = Vec::new();
        let deadline = Instant::now() + IO;
        while Instant::now() < deadline {
            if let Some(i) = got
                .windows(self.marker.len())
                .position(|w| w == self.marker.as_slice())
            {
                got.truncate(i);
                return Some(got);
            }
            match c.raw(1, Duration::from_millis(200)) {
                Some(b) => got.extend_from_slice(&b),
                None if c.closed => {
                    assert!(
                        !contains(&got, CANARY),
                        "canary content in a reply before a close"
                    );
                    return None;
                }
                None => {}
            }
        }
        panic!(
            "no reply within {IO:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

fn ops(path: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let digest: [u8; 16] = md5::Md5::digest(CANARY).into();
    vec![
        (
            "STAT",
            rcf_core::request::encode_stat(unix_now() as i64, path),
        ),
        ("GET", rcf_core::request::encode_get(2048, path)),
        ("OPENDIR", rcf_core::request::encode_opendir(path)),
        ("MD5", rcf_core::request::encode_md5(path, &digest)),
    ]
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(200).collect()
}

#[test]
fn escape_attempts_get_the_missing_file_reply_and_nothing_outside_is_read() {
    escape_matrix(lab("p1"));
}

/// The same matrix with the admitted tree, the outside tree and so every
/// escape path named with bytes that are not UTF-8 (issue 18: paths are
/// bytes end to end; the policy promiser holds the raw bytes too).
#[test]
fn escape_matrix_with_non_utf8_tree_names() {
    escape_matrix(lab_named("p5", b"sh\xffare", b"out\xfe\xc0side"));
}

fn escape_matrix(l: Lab) {
    let t0 = Instant::now();
    let (p, o) = (l.share_b.clone(), l.outside_b.clone());
    let out_name = Path::new(OsStr::from_bytes(&o))
        .file_name()
        .unwrap()
        .as_bytes()
        .to_vec();
    let outside = Path::new(OsStr::from_bytes(&o)).to_path_buf();
    let cat = |parts: &[&[u8]]| parts.concat();
    let mut conn = Conn::new(&l);

    // Positive control: the admitted tree is served, so refusals below are
    // not just a broken server.
    let hello = conn
        .exchange(&rcf_core::request::encode_get(
            2048,
            &cat(&[&p, b"/hello.txt"]),
        ))
        .unwrap();
    assert_eq!(hello, b"hello from cf-serverd lab\n");

    let missing_path = cat(&[&p, b"/no-such-file.txt"]);
    let baseline: Vec<(&str, Vec<u8>)> = ops(&missing_path)
        .into_iter()
        .map(|(op, req)| {
            (
                op,
                conn.exchange(&req)
                    .expect("a missing file does not close the connection"),
            )
        })
        .collect();
    for (op, b) in &baseline {
        assert!(
            b.len() > 8 && contains(b, b"BAD: "),
            "{op} of a missing file: {}",
            show(b)
        );
    }

    let long_dots = cat(&[&p, &b"/.".repeat(1900), b"/../outside/canary.txt"]);
    let long_ups = cat(&[&p, b"/tree", &b"/..".repeat(1150), &o, b"/canary.txt"]);
    let long_missing = cat(&[&p, b"/", &b"a/".repeat(1900)]);
    let attempts: Vec<Vec<u8>> = vec![
        cat(&[&p, b"/../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"//../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"/tree/../../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"/./../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"/tree/sub/../../../", &out_name, b"/dir/canary.txt"]),
        cat(&[&o, b"/canary.txt"]),
        cat(&[&o, b"//canary.txt"]),
        cat(&[&o, b"/canary.txt/."]),
        cat(&[&o, b"/."]),
        cat(&[&o, b"/"]),
        o.clone(),
        cat(&[l.secret.as_bytes(), b"/secret.txt"]),
        cat(&[&p, b"/../secret/secret.txt"]),
        cat(&[&p, b"/esc-file"]),
        cat(&[&p, b"/esc-file/."]),
        cat(&[&p, b"/esc-abs"]),
        cat(&[&p, b"/chain"]),
        cat(&[&p, b"/esc-dir"]),
        cat(&[&p, b"/esc-dir/"]),
        cat(&[&p, b"/esc-dir/."]),
        cat(&[&p, b"/esc-dir/canary.txt"]),
        cat(&[&p, b"/esc-dir/dir/canary.txt"]),
        cat(&[&p, b"/esc-dir/../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"/loop1"]),
        cat(&[&p, b"/loop1/x"]),
        cat(&[&p, b"/self"]),
        cat(&[&p, b"/self/"]),
        cat(&[&p, b"/dangling-out/"]),
        // A NUL ends the path (C string, as in 3.21): what precedes it decides.
        cat(&[&o, b"/canary.txt\0", &p, b"/hello.txt"]),
        cat(&[&p, b"/nope\0/../hello.txt"]),
        // Non-UTF-8 bytes.
        cat(&[&p, b"/\xff\xfe/../../", &out_name, b"/canary.txt"]),
        cat(&[&p, b"/../", &out_name, b"/caf\xe9.txt"]),
        cat(&[&o, b"/caf\xe9.txt"]),
        cat(&[&p, b"/\xc0\xae\xc0\xae/outside/canary.txt"]),
        // Very long paths.
        long_dots,
        long_ups,
        long_missing,
        // Relative paths (no shortcut matches).
        b"outside/canary.txt".to_vec(),
        b"../outside/canary.txt".to_vec(),
        b"./".to_vec(),
    ];

    let watch = Watch::new(&[&outside, &outside.join("dir"), Path::new(&l.secret)]);
    let mut checked = 0;
    for a in &attempts {
        assert!(
            a.len() < 4000,
            "attempt too long for one transaction: {}",
            a.len()
        );
        // A symlink loop inside the tree is, as in 3.21, a "dangling" link:
        // STAT describes the link itself (type 1, its own text), which is
        // inside the admitted tree, and GET fails at the open (O_NOFOLLOW)
        // with 3.21's raw refusal block. Nothing outside is involved.
        let own_link: Option<&[u8]> = [&b"/loop1"[..], &b"/self"[..]]
            .into_iter()
            .find(|s| *a == cat(&[&p, s]));
        for ((op, req), (_, base)) in ops(a).into_iter().zip(&baseline) {
            let r = conn.exchange(&req);
            let r = r.unwrap_or_else(|| panic!("{op} {} closed the connection", show(a)));
            assert!(
                !contains(&r, CANARY),
                "{op} {}: canary content in the reply",
                show(a)
            );
            if let (Some(name), "STAT") = (own_link, op) {
                let text = if name == b"/loop1" {
                    &b"OK:loop2"[..]
                } else {
                    b"OK:self"
                };
                assert!(
                    contains(&r, b"OK: 1 ") && r.ends_with(text),
                    "STAT {}: {}",
                    show(a),
                    show(&r)
                );
                checked += 1;
                continue;
            }
            if own_link.is_some() {
                // GET: the open error's raw refusal block; OPENDIR: "couldn't
                // open dir"; MD5: CFD_TRUE ("differs", unreadable). All 3.21's.
                let block = r.len() == 2048
                    && r.starts_with(rcf_core::reply::FAILED)
                    && r[rcf_core::reply::FAILED.len()..].iter().all(|&b| b == 0);
                let refused = &r == base
                    || block
                    || contains(&r, b"BAD: ")
                    || r.ends_with(rcf_core::reply::CFD_TRUE);
                assert!(
                    refused && !contains(&r, b"CFD_FALSE") && !contains(&r, b"OK:"),
                    "{op} {}: {}",
                    show(a),
                    show(&r)
                );
                checked += 1;
                continue;
            }
            assert_eq!(
                &r,
                base,
                "{op} {}: reply differs from a missing file's: {}",
                show(a),
                show(&r)
            );
            checked += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let touched = watch.events();
    assert!(
        touched.is_empty(),
        "the server opened or read outside the admitted tree: {touched:?}"
    );
    // Control: the watch does see a read there.
    let _ = std::fs::read(outside.join("canary.txt")).unwrap();
    assert!(
        watch
            .events()
            .iter()
            .any(|e| e.contains("canary.txt ACCESS")),
        "inotify watch is not live"
    );

    // The server's log never shows it serving (or even statting) those files.
    let log = l.srv.log();
    for line in log.lines() {
        let mentions = line.contains(&*String::from_utf8_lossy(&o)) || line.contains(&l.secret);
        let served = [
            "Sending",
            "sent",
            "opened",
            "Open error",
            "Aborting transfer",
            "unable to stat",
            "Couldn't open directory",
        ]
        .iter()
        .any(|w| line.contains(w));
        assert!(!(mentions && served), "log line: {line}");
    }
    assert!(
        log.contains("access denied to"),
        "expected denials in the log"
    );
    assert!(l.srv.is_running());
    eprintln!("[paths] {} attempts x 4 commands = {checked} requests, all refused like a missing file (in-tree symlink loops: as 3.21); inotify saw nothing outside; wall {:?}", attempts.len(), t0.elapsed());
}

/// A NUL ends the path as in 3.21 (`sscanf`/C strings): `<inside>\0<junk>`
/// is the inside file. Documented here so the behaviour is deliberate.
#[test]
fn a_nul_ends_the_request_path_like_a_c_string() {
    let l = lab("p2");
    let mut conn = Conn::new(&l);
    let path = [l.share.as_bytes(), b"/hello.txt\0/../../outside/canary.txt"].concat();
    let r = conn
        .exchange(&rcf_core::request::encode_get(2048, &path))
        .unwrap();
    assert_eq!(r, b"hello from cf-serverd lab\n");
}

/// Exchange two names atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> bool {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: two valid C strings.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

#[test]
fn files_and_directories_swapped_for_symlinks_while_served_never_leak() {
    let t0 = Instant::now();
    let l = lab("p3");
    let share = Path::new(&l.share).to_path_buf();
    // swap.txt: a regular file <-> a symlink to the canary, exchanged atomically.
    let innocent = b"innocent content, and a different size from the canary\n";
    std::fs::write(share.join("swap.txt"), innocent).unwrap();
    std::os::unix::fs::symlink(
        Path::new(&l.outside).join("canary.txt"),
        share.join("swap.lnk"),
    )
    .unwrap();
    // real/: a directory <-> a symlink to the outside directory.
    std::fs::create_dir(share.join("real")).unwrap();
    std::fs::write(share.join("real/canary.txt"), innocent).unwrap();
    std::fs::write(share.join("real/inside-marker"), b"").unwrap();
    std::os::unix::fs::symlink(&l.outside, share.join("real.lnk")).unwrap();
    let watch = Watch::new(&[Path::new(&l.outside), Path::new(&l.secret)]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let share = share.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut flips = 0u64;
            // Bounded: 20 s at most, or until told.
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && t.elapsed() < Duration::from_secs(20)
            {
                assert!(exchange(&share.join("swap.txt"), &share.join("swap.lnk")));
                assert!(exchange(&share.join("real"), &share.join("real.lnk")));
                flips += 1;
                std::thread::yield_now();
            }
            flips
        })
    };

    let digest: [u8; 16] = md5::Md5::digest(CANARY).into();
    let sw = share.join("swap.txt");
    let rc = share.join("real/canary.txt");
    let rd = share.join("real");
    let b = |p: &Path| p.as_os_str().as_bytes().to_vec();
    let mut conn = Conn::new(&l);
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let t = Instant::now();
    let mut rounds = 0;
    // Bounded: 300 rounds or 12 s.
    while rounds < 300 && t.elapsed() < Duration::from_secs(12) {
        rounds += 1;
        for (what, req) in [
            (
                "STAT swap.txt",
                rcf_core::request::encode_stat(unix_now() as i64, &b(&sw)),
            ),
            ("GET swap.txt", rcf_core::request::encode_get(2048, &b(&sw))),
            (
                "STAT real/canary.txt",
                rcf_core::request::encode_stat(unix_now() as i64, &b(&rc)),
            ),
            (
                "GET real/canary.txt",
                rcf_core::request::encode_get(2048, &b(&rc)),
            ),
            (
                "MD5 real/canary.txt",
                rcf_core::request::encode_md5(&b(&rc), &digest),
            ),
            (
                "MD5 swap.txt",
                rcf_core::request::encode_md5(&b(&sw), &digest),
            ),
            ("OPENDIR real", rcf_core::request::encode_opendir(&b(&rd))),
        ] {
            let Some(r) = conn.exchange(&req) else {
                *counts.entry("closed").or_default() += 1;
                continue;
            };
            assert!(!contains(&r, CANARY), "{what}: canary content in the reply");
            assert!(
                !contains(&r, b"outside-only-marker"),
                "{what}: the outside directory was listed: {}",
                show(&r)
            );
            if what.starts_with("MD5") {
                // CFD_FALSE = "your digest equals the file's": an oracle on the canary.
                assert!(
                    !contains(&r, b"CFD_FALSE"),
                    "{what}: the server compared against the canary's digest"
                );
            }
            if what.starts_with("STAT") && contains(&r, b"OK: ") {
                let size = String::from_utf8_lossy(&r[8..])
                    .split_whitespace()
                    .nth(6)
                    .unwrap_or("")
                    .to_string();
                assert_eq!(
                    size,
                    innocent.len().to_string(),
                    "{what}: STAT gave the size of something outside: {}",
                    show(&r)
                );
            }
            if what.starts_with("GET") && !contains(&r, b"BAD: ") {
                assert_eq!(&r[..], &innocent[..], "{what}: GET served something else");
                *counts.entry("GET served").or_default() += 1;
            } else if contains(&r, b"BAD: ") {
                *counts.entry("refused").or_default() += 1;
            } else {
                *counts.entry("other ok").or_default() += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    let touched: Vec<String> = watch
        .events()
        .into_iter()
        .filter(|e| e.contains("ACCESS"))
        .collect();
    assert!(
        touched.is_empty(),
        "the server read outside the admitted tree: {touched:?}"
    );
    assert!(
        counts.get("GET served").copied().unwrap_or(0) > 0
            && counts.get("refused").copied().unwrap_or(0) > 0,
        "the race never went both ways: {counts:?}"
    );
    eprintln!("[paths] swap race: {rounds} rounds x 7 requests against {flips} flips: {counts:?}; no canary, no outside listing, no digest oracle, no outside STAT, no read; wall {:?}", t0.elapsed());
}

/// The deterministic form of the race: STAT sees a regular file, then it is
/// replaced by a symlink to the canary, then GET and MD5 ask for it.
#[test]
fn a_file_replaced_by_a_symlink_between_stat_and_get_is_refused() {
    let l = lab("p4");
    let share = Path::new(&l.share);
    let f = share.join("later-a-link.txt");
    std::fs::write(&f, b"regular for now\n").unwrap();
    let fb = f.as_os_str().as_bytes().to_vec();
    let mut conn = Conn::new(&l);
    let st = conn
        .exchange(&rcf_core::request::encode_stat(unix_now() as i64, &fb))
        .unwrap();
    assert!(
        contains(&st, b"OK: 0 "),
        "STAT of the regular file: {}",
        show(&st)
    );
    let tmp = share.join("later-a-link.tmp");
    std::os::unix::fs::symlink(Path::new(&l.outside).join("canary.txt"), &tmp).unwrap();
    std::fs::rename(&tmp, &f).unwrap();
    let watch = Watch::new(&[Path::new(&l.outside)]);
    let missing = conn
        .exchange(&rcf_core::request::encode_get(
            2048,
            [l.share.as_bytes(), b"/nope"].concat().as_slice(),
        ))
        .unwrap();
    let get = conn
        .exchange(&rcf_core::request::encode_get(2048, &fb))
        .unwrap();
    assert!(!contains(&get, CANARY));
    assert_eq!(get, missing, "GET after the swap: {}", show(&get));
    let digest: [u8; 16] = md5::Md5::digest(CANARY).into();
    let md5 = conn
        .exchange(&rcf_core::request::encode_md5(&fb, &digest))
        .unwrap();
    assert!(
        !contains(&md5, b"CFD_FALSE"),
        "MD5 compared against the canary"
    );
    let st = conn
        .exchange(&rcf_core::request::encode_stat(unix_now() as i64, &fb))
        .unwrap();
    assert!(
        contains(&st, b"BAD: ") && !contains(&st, format!(" {} ", CANARY.len()).as_bytes()),
        "STAT after the swap: {}",
        show(&st)
    );
    let touched: Vec<String> = watch
        .events()
        .into_iter()
        .filter(|e| e.contains("ACCESS"))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
}
