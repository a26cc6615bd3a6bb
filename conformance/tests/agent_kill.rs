//! No lost data on the agent (issue 10): rcf-agent killed at many points of
//! `update` and `copy` leaves `inputs/` and every destination file either
//! the old or the new version, never a mix or a partial file. A bounded
//! loop, loopback only, processes stopped by PID.

use rcf_conformance::lab::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A masterfiles-like tree: `n` files, contents depending on `version`.
fn write_tree(root: &Path, version: u8, n: usize) {
    let _ = std::fs::remove_dir_all(root);
    for i in 0..n {
        let dir = root.join(format!("d{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let len = 2_000 + (i * 7919) % 40_000;
        let body: Vec<u8> = (0..len)
            .map(|j| {
                (j as u8)
                    .wrapping_mul(31)
                    .wrapping_add(version)
                    .wrapping_add(i as u8)
            })
            .collect();
        std::fs::write(dir.join(format!("f{i}.cf")), body).unwrap();
    }
    std::fs::write(root.join("promises.cf"), format!("# version {version}\n")).unwrap();
}

/// Every regular file under `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(root, root, &mut m);
    m
}

struct Setup {
    cli: Workdir,
    mf: PathBuf,
    srv: RcfServer,
    _srv_wd: Workdir,
}

fn setup(name: &str) -> Setup {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new(&format!("{name}-srv")).unwrap();
    let cli = Workdir::new(&format!("{name}-cli")).unwrap();
    if name.contains("copy") {
        cli.cf_key().unwrap();
    }
    let mf = srv_wd.scratch().join("masterfiles");
    write_tree(&mf, 1, 120);
    let mut rule = AccessRule::admit_loopback(mf.to_string_lossy().into_owned());
    rule.shortcut = Some("masterfiles".into());
    let mut p = ServerPolicy::new(0);
    p.access.push(rule);
    let srv = RcfServer::start(&srv_wd, &p).unwrap();
    Setup {
        cli,
        mf,
        srv,
        _srv_wd: srv_wd,
    }
}

/// Run `rcf-agent args`, killing it after `delay`.
fn run_and_kill(cli: &Workdir, args: &[&str], delay: Duration) {
    let mut d = spawn_rcf_agent(cli, args).unwrap();
    std::thread::sleep(delay);
    d.stop();
}

/// `rcf-agent copy` of the `masterfiles` shortcut into `dest`, by digest
/// (no `.cfsaved` backups: every file is the old or the new version).
fn copy_args<'a>(hp: &'a str, dest: &'a str) -> [&'a str; 11] {
    [
        "copy",
        "--copy-backup",
        "false",
        "-H",
        hp,
        "--trustkey",
        "--recurse",
        "--compare",
        "digest",
        "masterfiles",
        dest,
    ]
}

#[test]
fn update_killed_anywhere_leaves_old_or_new_inputs() {
    let s = setup("kill-update");
    let hp = s.srv.host_port();
    let boot = rcf_agent(&s.cli, &["bootstrap", "--no-failsafe", &hp]).unwrap();
    assert!(boot.success(), "{}", boot.describe());
    // Spread the kills over 1.5 times a full pull, so some land after the swap.
    let span = (boot.elapsed.as_millis() as u64 * 3 / 2).max(50);
    let inputs = s.cli.path().join("inputs");
    let old = snapshot(&inputs);
    assert_eq!(old, snapshot(&s.mf));
    write_tree(&s.mf, 2, 120);
    let new = snapshot(&s.mf);
    assert_ne!(old, new);
    let (mut saw_old, mut saw_new) = (0, 0);
    // Deterministic kill points across the whole pull; on a slow box, later
    // rounds reach further (bounded) until a kill lands after the swap.
    for i in 0..24u64 {
        if i >= 14 && saw_new > 0 {
            break;
        }
        let delay = if i < 14 {
            i * span / 13
        } else {
            span * (i - 12)
        };
        run_and_kill(
            &s.cli,
            &["update", "--mirror"],
            Duration::from_millis(delay),
        );
        let now = snapshot(&inputs);
        if now == old {
            saw_old += 1;
        } else if now == new {
            saw_new += 1;
            // Go back to the old state for the next round.
            write_tree(&s.mf, 1, 120);
            let back = rcf_agent(&s.cli, &["update", "--mirror"]).unwrap();
            assert!(back.success(), "{}", back.describe());
            assert_eq!(snapshot(&inputs), old);
            write_tree(&s.mf, 2, 120);
        } else {
            panic!(
                "round {i}: inputs/ is neither the old nor the new version ({} files)",
                now.len()
            );
        }
    }
    eprintln!("[agent_kill] update (pull ~{span} ms): {saw_old} rounds left the old inputs, {saw_new} the new");
    assert!(
        saw_old > 0 && saw_new > 0,
        "the kill points did not cover both sides of the swap"
    );
    let done = rcf_agent(&s.cli, &["update", "--mirror"]).unwrap();
    assert!(done.success(), "{}", done.describe());
    assert_eq!(snapshot(&inputs), new);
}

#[test]
fn copy_killed_anywhere_leaves_each_destination_old_or_new() {
    let s = setup("kill-copy");
    let hp = s.srv.host_port();
    let dest = s.cli.scratch().join("dest");
    let dest_s = dest.to_string_lossy().into_owned();
    let args = copy_args(&hp, &dest_s);
    let first = rcf_agent(&s.cli, &args).unwrap();
    assert!(first.success(), "{}", first.describe());
    let old = snapshot(&s.mf);
    write_tree(&s.mf, 2, 120);
    let new = snapshot(&s.mf);
    for i in 0..14u64 {
        run_and_kill(&s.cli, &args, Duration::from_millis((i * 31) % 420));
        for (rel, body) in snapshot(&dest) {
            if rel.extension().is_some_and(|e| e == "cfnew") {
                continue; // a temp file of the killed run; never the destination
            }
            let ok = old.get(&rel) == Some(&body) || new.get(&rel) == Some(&body);
            assert!(
                ok,
                "round {i}: {} is neither the old nor the new version",
                rel.display()
            );
        }
        // Alternate versions so later rounds kill copies in both directions.
        write_tree(&s.mf, if i % 2 == 0 { 1 } else { 2 }, 120);
    }
    write_tree(&s.mf, 2, 120);
    let done = rcf_agent(&s.cli, &args).unwrap();
    assert!(done.success(), "{}", done.describe());
    let now = snapshot(&dest);
    let leftovers: Vec<_> = now
        .keys()
        .filter(|k| k.extension().is_some_and(|e| e == "cfnew"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temp files left after a complete run: {leftovers:?}"
    );
    assert_eq!(now, new);
}

/// The leftover a kill can produce, made on purpose: a `.cfnew` next to a
/// destination that is already up to date (so never rewritten) is removed
/// by the next run, recursive or single-file; a `.cfnew` the server lists
/// itself is a real file and is copied, not swept.
#[test]
fn stale_temporaries_of_up_to_date_files_are_removed() {
    let s = setup("kill-copy-stale");
    let hp = s.srv.host_port();
    std::fs::write(s.mf.join("d1").join("real.cfnew"), b"a real file\n").unwrap();
    let dest = s.cli.scratch().join("dest");
    let dest_s = dest.to_string_lossy().into_owned();
    let args = copy_args(&hp, &dest_s);
    let first = rcf_agent(&s.cli, &args).unwrap();
    assert!(first.success(), "{}", first.describe());
    let stale = dest.join("d5").join("f75.cf.cfnew");
    std::fs::write(&stale, b"half a file").unwrap();
    let orphan = dest.join("d5").join("gone.cf.cfnew"); // no listed base name: not ours to judge
    std::fs::write(&orphan, b"x").unwrap();
    let again = rcf_agent(&s.cli, &args).unwrap();
    assert!(again.success(), "{}", again.describe());
    assert!(
        !stale.exists(),
        "stale temporary of an up-to-date file survived a complete run"
    );
    assert!(
        orphan.exists(),
        "a .cfnew without a listed base name was removed without --purge"
    );
    assert_eq!(
        std::fs::read(dest.join("d1").join("real.cfnew")).unwrap(),
        b"a real file\n"
    );
    let mut want = snapshot(&s.mf);
    want.insert(PathBuf::from("d5/gone.cf.cfnew"), b"x".to_vec());
    assert_eq!(snapshot(&dest), want);

    // Single file, already up to date.
    let one = s.cli.scratch().join("one.cf");
    let one_s = one.to_string_lossy().into_owned();
    let src = format!("{}/promises.cf", s.mf.display());
    let single = [
        "copy",
        "-H",
        hp.as_str(),
        "--compare",
        "digest",
        src.as_str(),
        one_s.as_str(),
    ];
    let r = rcf_agent(&s.cli, &single).unwrap();
    assert!(r.success(), "{}", r.describe());
    let one_tmp = s.cli.scratch().join("one.cf.cfnew");
    std::fs::write(&one_tmp, b"half").unwrap();
    let r = rcf_agent(&s.cli, &single).unwrap();
    assert!(r.success(), "{}", r.describe());
    assert!(
        !one_tmp.exists(),
        "single-file copy left the stale temporary"
    );
}
