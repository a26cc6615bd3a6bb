//! rcf-agent (and rcf-core's client role) against the real cf-serverd 3.21
//! and against rcf-serverd, loopback only. These tests FAIL when the
//! CFEngine binaries or our built binaries are missing:
//! `cargo build -p rcf-agent -p rcf-serverd` first (or `cargo test --workspace`).

use rcf_conformance::lab::*;
use rcf_conformance::transcript::{load, vectors_dir};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---- the client-side vectors against the core client ------------------

#[test]
fn client_vectors_replay_against_core_client() {
    let names = [
        "stat-get-ok",
        "stat-get-multichunk",
        "stat-get-empty",
        "get-denied",
        "opendir-ok",
        "opendir-multi",
        "md5-same",
        "md5-differs",
        // Real cf-agent's own client bytes: ours must be the same.
        "agent-copy-file",
        "agent-copy-tree",
        "agent-copy-md5",
        "agent-copy-denied",
    ];
    for n in names {
        let t = load(&vectors_dir().join(format!("{n}.txt"))).unwrap();
        let r = client_replay(&t).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("[interop_agent] vector {n}: {r:?}");
        assert!(r.client_records >= 3 && r.replies >= 1, "{n}: {r:?}");
    }
}

// ---- one server of either kind -----------------------------------------

use rcf_conformance::lab::{AnyServer as Srv, ServerKind as Kind};

struct Setup {
    srv_wd: Workdir,
    cli_wd: Workdir,
    data: DataTree,
}

fn setup(name: &str) -> Setup {
    let (srv_wd, cli_wd) = agent_workdirs(name).unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    Setup {
        srv_wd,
        cli_wd,
        data,
    }
}

fn policy(s: &Setup) -> ServerPolicy {
    let mut p = ServerPolicy::new(0).admit(s.data.share_path(""));
    let mut mf = AccessRule::admit_loopback(s.data.masterfiles.to_string_lossy().into_owned());
    mf.shortcut = Some("masterfiles".into());
    p.access.push(mf);
    p
}

fn agent(wd: &Workdir, args: &[&str]) -> ToolRun {
    rcf_agent(wd, args).unwrap()
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn done(name: &str, kind: Kind, t0: Instant) {
    eprintln!("[interop_agent] {name} ({kind:?}): {:?} wall", t0.elapsed());
}

// ---- net ---------------------------------------------------------------

fn net_commands(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("net{kind:?}"));
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s)).unwrap();
    let hp = srv.host_port();
    let hello = s.data.share_path("hello.txt");
    let tree = s.data.share_path("tree");
    let missing = s.data.share_path("nope.txt");
    // Our output next to the real cf-net's, same arguments, same strings.
    for args in [
        vec!["connect"],
        vec!["stat", hello.as_str()],
        vec!["stat", tree.as_str()],
        vec!["stat", missing.as_str()],
    ] {
        // First contact for both on `connect`: each trusts the key and says
        // so (`Trusting new key`, a notice cf-net prints too).
        if args[0] == "connect" {
            s.cli_wd.untrust_all();
        }
        let ours = agent(&s.cli_wd, &[&["net", "-H", &hp][..], &args[..]].concat());
        if args[0] == "connect" {
            s.cli_wd.untrust_all();
        }
        let real = cf_net(&s.cli_wd, &hp, &args).unwrap();
        let norm = |t: &str| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            norm(&ours.output),
            norm(&real.output),
            "rcf-agent net {args:?} vs cf-net\n{}\n{}",
            ours.describe(),
            real.describe()
        );
        let want_ok = args[0] == "connect" || args[1] != missing;
        assert_eq!(ours.success(), want_ok, "{}", ours.describe());
    }
    let ours = agent(&s.cli_wd, &["net", "-H", &hp, "stat", &hello]);
    ours.assert_contains(&format!("{hp}:'{hello}' is a regular file"));
    let ours = agent(&s.cli_wd, &["net", "-H", &hp, "stat", &missing]);
    ours.assert_contains(&format!("Could not stat: '{missing}'"));
    // get -o, and opendir (same set of names as cf-net, order is readdir's).
    let got = s.cli_wd.scratch().join("seq.got");
    let run = agent(
        &s.cli_wd,
        &[
            "net",
            "-H",
            &hp,
            "get",
            &s.data.share_path("seq.txt"),
            "-o",
            &p(&got),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    trees_equal(&s.data.share.join("seq.txt"), &got).unwrap();
    let ours = agent(&s.cli_wd, &["net", "-H", &hp, "opendir", &tree]);
    let real = cf_net(&s.cli_wd, &hp, &["opendir", &tree]).unwrap();
    let set = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    };
    assert_eq!(set(&ours.output), set(&real.output));
    assert_eq!(set(&ours.output), vec![".", "..", "a.txt", "sub"]);
    // --json
    let js = agent(&s.cli_wd, &["--json", "net", "-H", &hp, "connect"]);
    assert!(
        js.output.contains("\"ok\":true") && js.output.contains("\"server_key\":\"MD5="),
        "{}",
        js.describe()
    );
    srv.stop();
    done("net_commands", kind, t0);
}

#[test]
fn net_commands_real_server() {
    net_commands(Kind::Real);
}

#[test]
fn net_commands_rcf_server() {
    net_commands(Kind::Rcf);
}

// ---- copy --------------------------------------------------------------

fn copy_file_and_tree(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("cp{kind:?}"));
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s)).unwrap();
    let hp = srv.host_port();
    let out = s.cli_wd.scratch().join("out");
    std::fs::create_dir_all(out.join("tree/sub")).unwrap();
    std::fs::write(out.join("tree/sub/stray.txt"), b"purge me\n").unwrap();
    std::fs::create_dir_all(out.join("tree/gone/deep")).unwrap();
    // Failover: a dead server first, then ours.
    let dead = format!("127.0.0.1:{}", free_port());
    let run = agent(
        &s.cli_wd,
        &[
            "-I",
            "copy",
            "-H",
            &dead,
            "-H",
            &hp,
            "--trustkey",
            "--verify",
            &s.data.share_path("big.bin"),
            &p(&out.join("big.bin")),
        ],
    );
    assert!(run.success(), "{}\n{}", run.describe(), srv.log());
    run.assert_contains(&format!("Unable to establish connection to '{dead}'"));
    run.assert_contains("Updated file");
    trees_equal(&s.data.share.join("big.bin"), &out.join("big.bin")).unwrap();
    // A copied file is 0600 unless --preserve.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("big.bin"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--preserve",
            "--encrypt",
            &s.data.share_path("hello.txt"),
            &p(&out.join("hello.txt")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    assert_eq!(
        std::fs::metadata(out.join("hello.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    // Recursive, digest compare, purge.
    let tree_args = [
        "--json",
        "copy",
        "-H",
        &hp,
        "--recurse",
        "--purge",
        "--compare",
        "digest",
    ];
    let run = agent(
        &s.cli_wd,
        &[
            &tree_args[..],
            &[&s.data.share_path("tree"), &p(&out.join("tree"))],
        ]
        .concat(),
    );
    assert!(run.success(), "{}\n{}", run.describe(), srv.log());
    trees_equal(&s.data.share.join("tree"), &out.join("tree")).unwrap();
    assert!(!out.join("tree/sub/stray.txt").exists() && !out.join("tree/gone").exists());
    assert!(
        run.output.contains("\"purged\":[\"") && run.output.contains("stray.txt"),
        "{}",
        run.describe()
    );
    // Second run: everything kept, MD5 asked, nothing copied.
    let run = agent(
        &s.cli_wd,
        &[
            &tree_args[..],
            &[&s.data.share_path("tree"), &p(&out.join("tree"))],
        ]
        .concat(),
    );
    assert!(
        run.success() && run.output.contains("\"copied\":[]") && run.output.contains("\"kept\":3"),
        "{}",
        run.describe()
    );
    // Local change, same size: digest sees it, mtime compare does not.
    std::fs::write(out.join("tree/a.txt"), b"file A\n").unwrap();
    let run = agent(
        &s.cli_wd,
        &[
            "--json",
            "copy",
            "-H",
            &hp,
            "--compare",
            "mtime",
            &s.data.share_path("tree/a.txt"),
            &p(&out.join("tree/a.txt")),
        ],
    );
    assert!(run.output.contains("\"copied\":[]"), "{}", run.describe());
    let run = agent(
        &s.cli_wd,
        &[
            &tree_args[..],
            &[&s.data.share_path("tree"), &p(&out.join("tree"))],
        ]
        .concat(),
    );
    assert!(
        run.success() && run.output.contains("tree/a.txt\"]"),
        "{}",
        run.describe()
    );
    assert_eq!(std::fs::read(out.join("tree/a.txt")).unwrap(), b"file a\n");
    // A 300-entry directory (several OPENDIR packets) and --depth.
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--recurse",
            &s.data.share_path("many"),
            &p(&out.join("many")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    assert_eq!(std::fs::read_dir(out.join("many")).unwrap().count(), 300);
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--recurse",
            "--depth",
            "1",
            &s.data.share_path("tree"),
            &p(&out.join("shallow")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    assert!(out.join("shallow/a.txt").exists() && !out.join("shallow/sub").exists());
    // missing-ok, a missing source, a directory without --recurse, classic.
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--missing-ok",
            &s.data.share_path("nope"),
            &p(&out.join("nope")),
        ],
    );
    assert!(
        run.success() && !out.join("nope").exists(),
        "{}",
        run.describe()
    );
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            &s.data.share_path("nope"),
            &p(&out.join("nope")),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("Can't stat file");
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            &s.data.share_path("tree"),
            &p(&out.join("t2")),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    // Classic is refused by a server without allowlegacyconnects (as 3.21
    // refuses it): no suitable server, nothing written.
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--trustkey",
            &s.data.share_path("hello.txt"),
            &p(&out.join("c")),
        ],
    );
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    run.assert_contains("No suitable server found");
    assert!(!out.join("c").exists());
    // --protocol 2 still works (the server accepts the downgrade).
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "2",
            &s.data.share_path("seq.txt"),
            &p(&out.join("seq2")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    trees_equal(&s.data.share.join("seq.txt"), &out.join("seq2")).unwrap();
    // type-check: a directory where a file is promised.
    std::fs::create_dir_all(out.join("isdir")).unwrap();
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &hp,
            "--type-check",
            &s.data.share_path("hello.txt"),
            &p(&out.join("isdir")),
        ],
    );
    assert_eq!(run.code(), Some(1));
    run.assert_contains("exists but type mismatch with source");
    // No temp files left anywhere.
    let leftovers: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|f| f.to_string_lossy().ends_with(".cfnew"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    srv.stop();
    done("copy_file_and_tree", kind, t0);
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(walk(&p));
            }
            v.push(p);
        }
    }
    v
}

#[test]
fn copy_file_and_tree_real_server() {
    copy_file_and_tree(Kind::Real);
}

#[test]
fn copy_file_and_tree_rcf_server() {
    copy_file_and_tree(Kind::Rcf);
}

// ---- denied file on the same connection --------------------------------

/// `--compare digest` asks the MD5s of a directory's files in one
/// pipelined batch: exactly the files changed locally (same size, other
/// bytes) are copied again, in a batch of 20 and in a one-file directory;
/// a file only rewritten with the same bytes is kept.
fn digest_batch(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("md5b{kind:?}"));
    let src = s.data.share.join("digest");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..20 {
        std::fs::write(
            src.join(format!("f{i:02}.txt")),
            format!("file number {i:02}\n"),
        )
        .unwrap();
    }
    std::fs::write(src.join("sub/only.txt"), b"only one\n").unwrap();
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s)).unwrap();
    let hp = srv.host_port();
    let out = s.cli_wd.scratch().join("digest-out");
    let args = [
        "--json",
        "-v",
        "copy",
        "-H",
        &hp,
        "--trustkey",
        "--recurse",
        "--compare",
        "digest",
        // The replaced files' .cfsaved backups (cf-agent's default) are
        // not what this test looks at.
        "--copy-backup",
        "false",
    ];
    let run_once = || {
        agent(
            &s.cli_wd,
            &[&args[..], &[&s.data.share_path("digest"), &p(&out)]].concat(),
        )
    };
    let run = run_once();
    assert!(run.success(), "{}", run.describe());
    trees_equal(&src, &out).unwrap();
    let run = run_once();
    assert!(
        run.success() && run.output.contains("\"copied\":[]") && run.output.contains("\"kept\":21"),
        "{}",
        run.describe()
    );
    assert!(!run.contains("Pipelined MD5"), "{}", run.describe());
    // Three files changed locally with the same size, one only touched.
    for i in [3, 7, 19] {
        std::fs::write(
            out.join(format!("f{i:02}.txt")),
            format!("FILE NUMBER {i:02}\n"),
        )
        .unwrap();
    }
    std::fs::write(out.join("sub/only.txt"), b"ONLY ONE\n").unwrap();
    let touched = std::fs::read(out.join("f05.txt")).unwrap();
    std::fs::write(out.join("f05.txt"), touched).unwrap();
    let run = run_once();
    assert!(run.success(), "{}", run.describe());
    for i in [3, 7, 19] {
        assert!(
            run.output.contains(&format!("f{i:02}.txt\"")),
            "f{i:02} not copied: {}",
            run.describe()
        );
    }
    assert!(run.output.contains("sub/only.txt\""), "{}", run.describe());
    assert!(run.output.contains("\"kept\":17"), "{}", run.describe());
    trees_equal(&src, &out).unwrap();
    srv.stop();
    done("digest_batch", kind, t0);
}

#[test]
fn digest_batch_real_server() {
    digest_batch(Kind::Real);
}

#[test]
fn digest_batch_rcf_server() {
    digest_batch(Kind::Rcf);
}

fn denied_then_later_files(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("den{kind:?}"));
    let mut pol = policy(&s);
    let private = s.data.share.join("tree/private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("k.txt"), b"secret\n").unwrap();
    pol.access
        .push(AccessRule::deny_loopback(p(&private) + "/"));
    pol.access.push(AccessRule::deny_loopback(p(&private)));
    let srv = Srv::start(kind, &s.srv_wd, &pol).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let run = agent(
        &s.cli_wd,
        &[
            "--json",
            "copy",
            "-H",
            &srv.host_port(),
            "--trustkey",
            "--recurse",
            &s.data.share_path("tree"),
            &p(&out),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}\n{}", run.describe(), srv.log());
    assert!(
        run.output.contains("Can't stat file") && run.output.contains("private"),
        "{}",
        run.describe()
    );
    for f in ["a.txt", "sub/b.txt", "sub/deeper/c.txt"] {
        trees_equal(&s.data.share.join("tree").join(f), &out.join(f)).unwrap();
    }
    assert!(!out.join("private/k.txt").exists());
    let log = srv.log();
    if kind == Kind::Rcf {
        assert_eq!(
            log.matches("Accepting connection").count(),
            1,
            "one cached connection expected:\n{log}"
        );
    }
    // A single denied file: clear error, exit 1.
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            &p(&private.join("k.txt")),
            &p(&out.join("k.txt")),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains(
        "Server returned error: Unspecified server refusal (see verbose server output)",
    );
    srv.stop();
    done("denied_then_later_files", kind, t0);
}

#[test]
fn denied_file_then_later_files_real_server() {
    denied_then_later_files(Kind::Real);
}

#[test]
fn denied_file_then_later_files_rcf_server() {
    denied_then_later_files(Kind::Rcf);
}

// ---- bootstrap and update ----------------------------------------------

fn bootstrap_and_update(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("bs{kind:?}"));
    // A client that has nothing yet: no keys, empty inputs.
    let fresh = Workdir::new(&format!("bs{kind:?}-fresh")).unwrap();
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s)).unwrap();
    let hp = srv.host_port();
    std::fs::write(
        fresh.inputs().join("old-policy.cf"),
        b"# the previous policy\n",
    )
    .unwrap();
    let run = agent(&fresh, &["bootstrap", "--no-failsafe", &hp]);
    assert!(run.success(), "{}\n{}", run.describe(), srv.log());
    run.assert_contains(&format!("Bootstrap to '{hp}' completed successfully!"));
    assert!(fresh.privkey_path().exists(), "host key generated");
    assert_eq!(
        std::fs::read_to_string(fresh.path().join("policy_server.dat")).unwrap(),
        format!("{hp}\n")
    );
    assert_eq!(
        std::fs::read_to_string(fresh.path().join("bootstrap_id.dat"))
            .unwrap()
            .trim_end()
            .len(),
        40
    );
    trees_equal(&s.data.masterfiles, &fresh.inputs()).unwrap();
    let srv_id = s.srv_wd.key_id().unwrap();
    assert!(
        fresh.trusted_keys().contains(&format!("root-{srv_id}.pub")),
        "{:?}",
        fresh.trusted_keys()
    );
    // Update picks up additions, changes and removals.
    std::fs::write(s.data.masterfiles.join("services/new.cf"), b"# new\n").unwrap();
    std::fs::write(s.data.masterfiles.join("update.cf"), b"# changed\n").unwrap();
    std::fs::remove_file(s.data.masterfiles.join("lib/stdlib.cf")).unwrap();
    let run = agent(&fresh, &["-I", "update", "--mirror"]);
    assert!(run.success(), "{}\n{}", run.describe(), srv.log());
    run.assert_contains("Updated local policy from policy server");
    trees_equal(&s.data.masterfiles, &fresh.inputs()).unwrap();
    assert!(!fresh.path().join("inputs.rcf-staging").exists());
    // Hub down: last good inputs kept, distinct exit code.
    srv.stop();
    let before = walk(&fresh.inputs());
    let run = agent(&fresh, &["update", "--mirror"]);
    assert_eq!(run.code(), Some(5), "{}", run.describe());
    run.assert_contains("No suitable server found for 'masterfiles'");
    run.assert_contains("keeping the last good policy");
    trees_equal(&s.data.masterfiles, &fresh.inputs()).unwrap();
    assert_eq!(before, walk(&fresh.inputs()));
    done("bootstrap_and_update", kind, t0);
}

#[test]
fn bootstrap_and_update_real_server() {
    bootstrap_and_update(Kind::Real);
}

#[test]
fn bootstrap_and_update_rcf_server() {
    bootstrap_and_update(Kind::Rcf);
}

#[test]
fn bootstrap_hub_down_writes_nothing() {
    let t0 = Instant::now();
    rcf_binary("rcf-agent").unwrap();
    let fresh = Workdir::new("bsdown").unwrap();
    let hp = format!("127.0.0.1:{}", free_port());
    let run = agent(&fresh, &["-I", "bootstrap", &hp]);
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    run.assert_contains("No suitable server found for 'masterfiles'");
    run.assert_contains(&format!("Unable to establish connection to '{hp}'"));
    assert!(!fresh.path().join("policy_server.dat").exists());
    assert_eq!(std::fs::read_dir(fresh.inputs()).unwrap().count(), 0);
    assert!(!fresh.path().join("inputs.rcf-staging").exists());
    // Without --workdir, CFENGINE_TEST_OVERRIDE_WORKDIR (set by the lab) decides, as for rcf-key.
    let run = run_tool(
        &fresh,
        &rcf_binary("rcf-agent").unwrap(),
        &["update"],
        None,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains(&format!(
        "No policy server is set ('{}",
        fresh.path().join("policy_server.dat").display()
    ));
    // --trust-server=no against an unknown hub: refused, nothing written.
    let s = setup("bsnotrust");
    let srv = Srv::start(Kind::Rcf, &s.srv_wd, &policy(&s)).unwrap();
    let run = agent(
        &fresh,
        &["bootstrap", "--trust-server=no", &srv.host_port()],
    );
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    run.assert_contains(&format!(
        "TRUST FAILED, server presented untrusted key: {}",
        s.srv_wd.key_id().unwrap()
    ));
    assert!(!fresh.path().join("policy_server.dat").exists());
    srv.stop();
    done("bootstrap_hub_down_writes_nothing", Kind::Rcf, t0);
}

// ---- faults --------------------------------------------------------------

fn key_id_of(pubkey: &Path) -> String {
    let k = rcf_core::keys::parse_public_pem(&std::fs::read(pubkey).unwrap()).unwrap();
    rcf_core::keys::key_id(&k, rcf_core::keys::DigestKind::Md5).to_string()
}

fn changed_server_key_refused(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("key{kind:?}"));
    let pol = policy(&s);
    let srv = Srv::start(kind, &s.srv_wd, &pol).unwrap();
    let old_id = key_id_of(&s.srv_wd.pubkey_path());
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            "--trustkey",
            &s.data.share_path("hello.txt"),
            &p(&s.cli_wd.scratch().join("h1")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    run.assert_contains(&format!("Trusting new key: {old_id}"));
    // Without --trustkey the known key is fine.
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            &s.data.share_path("hello.txt"),
            &p(&s.cli_wd.scratch().join("h2")),
        ],
    );
    assert!(run.success(), "{}", run.describe());
    // The server gets a new key.
    let mut p2 = pol.clone();
    p2.port = srv.port();
    srv.stop();
    std::fs::remove_file(s.srv_wd.privkey_path()).unwrap();
    std::fs::remove_file(s.srv_wd.pubkey_path()).unwrap();
    let srv = Srv::start(kind, &s.srv_wd, &p2).unwrap();
    let new_id = key_id_of(&s.srv_wd.pubkey_path());
    assert_ne!(old_id, new_id);
    let dest = s.cli_wd.scratch().join("h3");
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            &s.data.share_path("hello.txt"),
            &p(&dest),
        ],
    );
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    run.assert_contains(&format!(
        "TRUST FAILED, server presented untrusted key: {new_id}"
    ));
    run.assert_contains(&format!(
        "Authentication dialogue with '{}' failed",
        srv.host_port()
    ));
    run.assert_contains(&format!(
        "No suitable server found for '{}'",
        s.data.share_path("hello.txt")
    ));
    assert!(!dest.exists());
    srv.stop();
    done("changed_server_key_refused", kind, t0);
}

#[test]
fn changed_server_key_refused_real_server() {
    changed_server_key_refused(Kind::Real);
}

#[test]
fn changed_server_key_refused_rcf_server() {
    changed_server_key_refused(Kind::Rcf);
}

#[test]
fn server_killed_mid_transfer_leaves_destination_unchanged() {
    let t0 = Instant::now();
    let s = setup("kill");
    // A large sparse file: cheap on the server's disk, slow enough to kill in flight.
    let huge = s.data.share.join("huge.bin");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let dest = s.cli_wd.scratch().join("huge.bin");
    std::fs::write(&dest, b"the previous good version\n").unwrap();
    let hp = srv.host_port();
    let mut bg = spawn_rcf_agent(
        &s.cli_wd,
        &[
            "-v",
            "copy",
            "-H",
            &hp,
            "--trustkey",
            "--compare",
            "digest",
            &p(&huge),
            &p(&dest),
        ],
    )
    .unwrap();
    let tmp = s.cli_wd.scratch().join("huge.bin.cfnew");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while Instant::now() < deadline {
        seen = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
        if seen > 4 << 20 || !bg.is_running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !(seen > 0 && bg.is_running()) {
        let log = bg.log();
        panic!(
            "transfer did not start or finished too fast ({seen} bytes), agent {:?}\n{log}\n{}",
            bg.stop(),
            srv.log()
        );
    }
    srv.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    while bg.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = bg.stop().expect("agent status");
    let log = bg.log();
    eprintln!("[interop_agent] killed after {seen} bytes; agent: {status:?}\n{log}");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("Connection error when copying") && log.contains("Lost connection"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"the previous good version\n"
    );
    assert!(!tmp.exists(), "temp file left behind");
    done("server_killed_mid_transfer", Kind::Rcf, t0);
}

/// The source grows while it is being fetched: the transfer is detected as
/// changed (server change marker, or the re-STAT after the GET), never
/// written, and fetched again; the final copy equals the final source.
fn source_changes_during_transfer(kind: Kind) {
    let t0 = Instant::now();
    let s = setup(&format!("chg{kind:?}"));
    let src = s.data.share.join("growing.bin");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(256 << 20).unwrap();
    drop(f);
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s)).unwrap();
    let dest = s.cli_wd.scratch().join("growing.bin");
    let mut bg = spawn_rcf_agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            "--trustkey",
            &p(&src),
            &p(&dest),
        ],
    )
    .unwrap();
    let tmp = s.cli_wd.scratch().join("growing.bin.cfnew");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && bg.is_running() {
        if std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0) > 1 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        bg.is_running(),
        "transfer finished before the change\n{}",
        bg.log()
    );
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&src).unwrap();
        f.write_all(b"appended while copying\n").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while bg.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = bg.stop().expect("agent status");
    let log = bg.log();
    eprintln!("[interop_agent] changed source ({kind:?}): agent {status:?}\n{log}");
    assert!(status.success(), "{log}\n{}", srv.log());
    assert!(log.contains("changed while copying"), "{log}");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), (256 << 20) + 23);
    trees_equal(&src, &dest).unwrap();
    srv.stop();
    done("source_changes_during_transfer", kind, t0);
}

#[test]
fn source_changes_during_transfer_real_server() {
    source_changes_during_transfer(Kind::Real);
}

#[test]
fn source_changes_during_transfer_rcf_server() {
    source_changes_during_transfer(Kind::Rcf);
}

// ---- a hostile server ------------------------------------------------------

/// A scripted TLS server in a thread (loopback, one connection): it speaks
/// the identification dialog properly, then answers each request payload
/// with whatever `script` returns (each element one TLS record).
fn hostile_server(
    wd: &Workdir,
    mut script: impl FnMut(&[u8]) -> Vec<Vec<u8>> + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    use rcf_core::tls::{server_config, ReadStatus, TlsClock, TlsLayer, TlsSettings};
    use std::io::{Read, Write};
    wd.cf_key().unwrap();
    let key =
        rcf_core::keys::parse_private_pem(&std::fs::read(wd.privkey_path()).unwrap()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (settings, _) = TlsSettings::server_default();
    let cfg = server_config(&key, &settings, &TlsClock::new(now)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        let Ok((mut sock, _)) = listener.accept() else {
            return;
        };
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut tls = TlsLayer::server(cfg).unwrap();
        let mut buf = vec![0u8; 65536];
        let (mut banner, mut lines, mut welcomed) = (false, 0, false);
        let mut dec = rcf_core::frame::Decoder::new();
        loop {
            while let Some(b) = tls.poll_transmit() {
                if sock.write_all(&b).is_err() {
                    return;
                }
            }
            let n = match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tls.handle_input(&buf[..n]).is_err() {
                return;
            }
            if !banner && !tls.is_handshaking() {
                tls.send_plaintext(b"CFE_v3 cf-serverd 3.21.0\n").unwrap();
                banner = true;
            }
            let mut pt = Vec::new();
            while let Ok(ReadStatus::Data(_)) = tls.read_plaintext(&mut pt) {}
            if !welcomed {
                lines += pt.iter().filter(|&&b| b == b'\n').count();
                if lines >= 2 {
                    tls.send_plaintext(b"OK WELCOME USERNAME=root\n").unwrap();
                    welcomed = true;
                }
                continue;
            }
            if dec.push(&pt).is_err() {
                return;
            }
            while let Ok(Some(t)) = dec.poll() {
                for rec in script(&t.payload) {
                    if rec.is_empty() {
                        return; // hang up
                    }
                    if tls.send_plaintext(&rec).is_err() {
                        return;
                    }
                    while let Some(b) = tls.poll_transmit() {
                        if sock.write_all(&b).is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    (port, h)
}

fn txn(status: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = format!("{} {}", status as char, payload.len()).into_bytes();
    v.resize(8, 0);
    v.extend_from_slice(payload);
    v
}

fn stat_reply(kind: u8, size: u64) -> Vec<Vec<u8>> {
    vec![
        txn(
            b't',
            format!("OK: {kind} 420 0 0 0 {size} 1 1 1 0 1 1 1").as_bytes(),
        ),
        txn(b't', b"OK:"),
    ]
}

#[test]
fn hostile_listing_names_never_leave_the_destination() {
    rcf_binary("rcf-agent").unwrap();
    let srv_wd = Workdir::new("hostile1-srv").unwrap();
    let cli = Workdir::new("hostile1-cli").unwrap();
    cli.cf_key().unwrap();
    let (port, h) = hostile_server(&srv_wd, |req| {
        let r = String::from_utf8_lossy(req).into_owned();
        if r.ends_with("STAT /src") {
            stat_reply(2, 4096)
        } else if r == "OPENDIR /src" {
            let mut p = Vec::new();
            for n in [
                &b"."[..],
                b"..",
                b"../escape.txt",
                b"a/b",
                b"ok.txt",
                b"...",
                b"lost+found",
                b"/etc/evil",
            ] {
                p.extend_from_slice(n);
                p.push(0);
            }
            p.extend_from_slice(b"---cfXen/gine/cfXen/gine---\0\0");
            vec![txn(b't', &p)]
        } else if r.ends_with("STAT /src/ok.txt") {
            stat_reply(0, 3)
        } else if r == "GET 2048 /src/ok.txt" {
            vec![b"ok\n".to_vec()]
        } else {
            vec![txn(
                b't',
                b"BAD: Unspecified server refusal (see verbose server output)",
            )]
        }
    });
    let dest = cli.scratch().join("deep/dest");
    let run = agent(
        &cli,
        &[
            "copy",
            "-H",
            &format!("127.0.0.1:{port}"),
            "--trustkey",
            "--recurse",
            "/src",
            &p(&dest),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("Refusing suspicious file name \"../escape.txt\"");
    run.assert_contains("Refusing suspicious file name \"a/b\"");
    run.assert_contains("Refusing suspicious file name \"/etc/evil\"");
    assert_eq!(std::fs::read(dest.join("ok.txt")).unwrap(), b"ok\n");
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["ok.txt"]);
    assert!(!cli.scratch().join("deep/escape.txt").exists() && !Path::new("/etc/evil").exists());
    h.join().unwrap();
}

#[test]
fn hostile_listing_flood_and_lying_size_are_bounded() {
    rcf_binary("rcf-agent").unwrap();
    let srv_wd = Workdir::new("hostile2-srv").unwrap();
    let cli = Workdir::new("hostile2-cli").unwrap();
    cli.cf_key().unwrap();
    // An OPENDIR reply that never ends (20 MB of names, all `m`).
    let (port, h) = hostile_server(&srv_wd, |req| {
        let r = String::from_utf8_lossy(req).into_owned();
        if r.ends_with("STAT /src") {
            stat_reply(2, 4096)
        } else if r == "OPENDIR /src" {
            let mut packet = Vec::new();
            while packet.len() < 3800 {
                packet.extend_from_slice(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0");
            }
            packet.push(0);
            (0..5200).map(|_| txn(b'm', &packet)).collect()
        } else {
            vec![Vec::new()]
        }
    });
    let t0 = Instant::now();
    let run = agent(
        &cli,
        &[
            "copy",
            "-H",
            &format!("127.0.0.1:{port}"),
            "--trustkey",
            "--recurse",
            "/src",
            &p(&cli.scratch().join("d")),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("directory listing larger than");
    assert!(t0.elapsed() < Duration::from_secs(50));
    h.join().unwrap();
    // A STAT promising 1 TB, then a few bytes and a hang-up: nothing written.
    let (port, h) = hostile_server(&srv_wd, |req| {
        let r = String::from_utf8_lossy(req).into_owned();
        if r.ends_with("STAT /big") {
            stat_reply(0, 1_000_000_000_000)
        } else if r == "GET 2048 /big" {
            vec![vec![7u8; 2048], vec![7u8; 2048], Vec::new()]
        } else {
            vec![Vec::new()]
        }
    });
    let dest = cli.scratch().join("big");
    std::fs::write(&dest, b"old\n").unwrap();
    let run = agent(
        &cli,
        &[
            "copy",
            "-H",
            &format!("127.0.0.1:{port}"),
            "--trustkey",
            "--compare",
            "digest",
            "/big",
            &p(&dest),
        ],
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("Connection error when copying");
    assert_eq!(std::fs::read(&dest).unwrap(), b"old\n");
    assert!(!cli.scratch().join("big.cfnew").exists());
    h.join().unwrap();
}

/// 300 small files from the real cf-serverd: rcf-agent (STATs pipelined per
/// directory) next to the real cf-agent, same tree; times are printed.
#[test]
fn many_files_from_real_server_next_to_cf_agent() {
    let s = setup("many");
    let srv = Srv::start(Kind::Real, &s.srv_wd, &policy(&s)).unwrap();
    let ours = s.cli_wd.scratch().join("ours");
    let theirs = s.cli_wd.scratch().join("theirs");
    let t0 = Instant::now();
    let run = agent(
        &s.cli_wd,
        &[
            "copy",
            "-H",
            &srv.host_port(),
            "--trustkey",
            "--recurse",
            &s.data.share_path("many"),
            &p(&ours),
        ],
    );
    let ours_t = t0.elapsed();
    assert!(run.success(), "{}", run.describe());
    let t0 = Instant::now();
    let spec =
        CopySpec::new(srv.port(), s.data.share_path("many"), theirs.clone()).recursive(false);
    let real = cf_agent_copies(&s.cli_wd, &[spec]).unwrap();
    let theirs_t = t0.elapsed();
    assert!(real.outcomes[0].ok(), "{}", real.describe());
    trees_equal(&ours, &theirs).unwrap();
    trees_equal(&s.data.share.join("many"), &ours).unwrap();
    eprintln!("[interop_agent] 300 files: rcf-agent {ours_t:?} (process, whole run), cf-agent {theirs_t:?} (process, whole run incl. policy evaluation)");
    srv.stop();
}

#[test]
fn silent_server_times_out() {
    rcf_binary("rcf-agent").unwrap();
    let srv_wd = Workdir::new("silent-srv").unwrap();
    let cli = Workdir::new("silent-cli").unwrap();
    cli.cf_key().unwrap();
    // Identifies us, then never answers a request.
    let (port, h) = hostile_server(&srv_wd, |_| Vec::new());
    let t0 = Instant::now();
    let run = agent(
        &cli,
        &[
            "copy",
            "-H",
            &format!("127.0.0.1:{port}"),
            "--trustkey",
            "--timeout",
            "2",
            "/x",
            &p(&cli.scratch().join("x")),
        ],
    );
    let took = t0.elapsed();
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("Timeout waiting for the server (2000 ms)");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(!cli.scratch().join("x").exists());
    h.join().unwrap();
}
