//! rcf's lastseen writer against the real CFEngine 3.21: what rcf records
//! in `WORKDIR/state/cf_lastseen.lmdb` is listed by the real `cf-key -s`,
//! the real `cf-key -r` removes it, and rcf keeps writing the file after
//! cf-key has. Fails, never skips, when cf-key is missing.

use std::process::Command;

use rcf_core::keys::KeyId;
use rcf_core::lastseen::{Direction, LastseenStore, Seen};
use rcf_fs::lastseen::LmdbLastseen;

fn cf_key(wd: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("cf-key")
        .args(args)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
        .output()
        .expect("run cf-key (apt-get install cfengine3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// cf-key's `cf_strtimestamp_local` for `t` (ctime without the newline).
fn ctime(t: i64) -> String {
    let out = Command::new("date")
        .args(["-d", &format!("@{t}"), "+%a %b %e %H:%M:%S %Y"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[test]
fn real_cf_key_lists_and_removes_what_rcf_records() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path();
    let a: KeyId = "MD5=0123456789abcdef0123456789abcdef".parse().unwrap();
    let b: KeyId = "MD5=fedcba9876543210fedcba9876543210".parse().unwrap();
    let t0 = 1_765_000_000;
    {
        let store = LmdbLastseen::open(wd).unwrap();
        for (key, address, direction, now) in [
            (&a, "127.0.0.2", Direction::Incoming, t0),
            (&a, "127.0.0.2", Direction::Incoming, t0 + 300),
            (&b, "::1", Direction::Outgoing, t0 + 60),
        ] {
            store
                .record(&Seen {
                    key,
                    address,
                    direction,
                    now,
                })
                .unwrap();
        }
        let q = store.quality(&a, Direction::Incoming).unwrap().unwrap();
        assert_eq!((q.lastseen, q.q), (t0 + 300, 300.0));
        assert!((q.expect - 120.0).abs() < 1e-9);
        assert_eq!(store.address(&b).unwrap().as_deref(), Some("::1"));
        // cf-key reads while rcf still has the file open.
        let (code, out) = cf_key(wd, &["-s", "-N", "-n"]);
        assert_eq!(code, 0, "{out}");
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        let mut want = vec![
            "Direction\tIP\tName\tLast connection\tKey".to_string(),
            format!("Incoming\t127.0.0.2\t127.0.0.2\t{}\t{a}", ctime(t0 + 300)),
            format!("Outgoing\t::1\t::1\t{}\t{b}", ctime(t0 + 60)),
            "Total Entries: 2".to_string(),
        ];
        want.sort();
        assert_eq!(lines, want, "{out}");
    }
    // The truncated table too.
    let (_, out) = cf_key(wd, &["-s", "-n"]);
    assert!(out.contains(&format!("Incoming   127.0.0.2 ")), "{out}");
    assert!(out.ends_with("Total Entries: 2\n"), "{out}");

    // cf-key -r (with a coherence check) removes b's entries from the file
    // rcf made, and rcf writes on after it.
    let (code, out) = cf_key(wd, &["-I", "-r", &b.to_string()]);
    assert!(
        out.contains("Removed corresponding entries from lastseen"),
        "{code} {out}"
    );
    let store = LmdbLastseen::open(wd).unwrap();
    assert_eq!(store.address(&b).unwrap(), None);
    store
        .record(&Seen {
            key: &b,
            address: "127.0.0.3",
            direction: Direction::Incoming,
            now: t0 + 900,
        })
        .unwrap();
    drop(store);
    let (_, out) = cf_key(wd, &["-s", "-N", "-n"]);
    assert!(
        out.contains(&format!(
            "Incoming\t127.0.0.3\t127.0.0.3\t{}\t{b}",
            ctime(t0 + 900)
        )),
        "{out}"
    );
    assert!(out.ends_with("Total Entries: 2\n"), "{out}");
}

/// rcf writes the lastseen file of a work directory that the real
/// cf-serverd is writing at the same time (it records every authenticated
/// cf-net connection): LMDB's writer lock is shared, nothing is lost on
/// either side, and cf-key -s lists both writers' entries.
#[test]
fn rcf_and_the_real_cf_serverd_write_one_lastseen_file_at_once() {
    use rcf_conformance::lab::{cf_net, Lab, RealServer};
    let lab = Lab::new("lastseen-shared").unwrap();
    lab.trust_both_ways().unwrap();
    let srv = RealServer::start(&lab.server, &lab.policy()).unwrap();
    let hp = srv.host_port();
    let wd = lab.server.path().to_path_buf();
    let t0 = 1_765_000_000;
    let keys: Vec<KeyId> = (0..20)
        .map(|i| format!("MD5={:032x}", 0xabc0_0000u64 + i).parse().unwrap())
        .collect();
    // rcf writes round after round for as long as cf-net connects.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (wd, keys, done) = (wd.clone(), keys.clone(), done.clone());
        std::thread::spawn(move || {
            let store = LmdbLastseen::open(&wd).unwrap();
            let mut round = 0;
            while round < 10 || !done.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, k) in keys.iter().enumerate() {
                    store
                        .record(&Seen {
                            key: k,
                            address: &format!("127.0.1.{i}"),
                            direction: Direction::Incoming,
                            now: t0 + round * 60,
                        })
                        .unwrap();
                }
                round += 1;
            }
            round
        })
    };
    for _ in 0..8 {
        let run = cf_net(&lab.client, &hp, &["connect"]).unwrap();
        assert!(run.status.success(), "{}", run.output);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = writer.join().unwrap();
    let last = t0 + (rounds - 1) * 60;
    let (_, log) = srv.stop();
    let client_id = lab.client.key_id().unwrap();
    let (code, out) = cf_key(&wd, &["-s", "-N", "-n"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("Total Entries: 21\n"), "{out}\n{log}");
    for (i, k) in keys.iter().enumerate() {
        let want = format!("Incoming\t127.0.1.{i}\t127.0.1.{i}\t{}\t{k}", ctime(last));
        assert!(out.lines().any(|l| l == want), "missing {want}\n{out}");
    }
    let theirs = out
        .lines()
        .find(|l| l.ends_with(&client_id))
        .unwrap_or_else(|| panic!("cf-serverd's entry for {client_id} missing\n{out}"));
    assert!(theirs.starts_with("Incoming\t127.0.0.1\t"), "{theirs}");
    // Our average over all rounds is intact (60 s apart).
    let store = LmdbLastseen::open(&wd).unwrap();
    let q = store
        .quality(&keys[3], Direction::Incoming)
        .unwrap()
        .unwrap();
    assert_eq!((q.lastseen, q.q, q.dq), (last, 60.0, 0.0));
    eprintln!("{rounds} rounds of 20 records written while cf-serverd served 8 connections");
}

/// Issue 20, single node: rcf-serverd records each authenticated peer in
/// 3.21's own `state/cf_lastseen.lmdb` (as cf-serverd's `LastSaw1`), so the
/// real `cf-key -s` lists it; `rcf-key -s` prints exactly what `cf-key -s
/// -n` prints from that file, in both forms; `rcf-key -r` removes a peer by
/// host name (`localhost`, resolved to its addresses) from lastseen and its
/// key from ppkeys, and the real cf-key agrees it is gone.
#[test]
fn single_node_rcf_serverd_peers_are_listed_by_the_real_cf_key() {
    use rcf_conformance::lab::{cf_net, rcf_binary, Lab, RcfServer};
    let lab = Lab::new("lastseen-rcf").unwrap();
    lab.trust_both_ways().unwrap();
    let srv = RcfServer::start(&lab.server, &lab.policy()).unwrap();
    let hp = srv.host_port();
    for _ in 0..2 {
        let run = cf_net(&lab.client, &hp, &["connect"]).unwrap();
        assert!(run.status.success(), "{}", run.output);
    }
    let wd = lab.server.path().to_path_buf();
    let client_id = lab.client.key_id().unwrap();
    // The recorder writes off the connection's thread: wait for it.
    let t0 = std::time::Instant::now();
    let out = loop {
        let (code, out) = cf_key(&wd, &["-s", "-N", "-n"]);
        assert_eq!(code, 0, "{out}");
        if out.contains(&client_id) {
            break out;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "{out}\n{}",
            srv.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // The second connection's sighting may land in a later write than the
    // first: stop the server so the file no longer changes between the two
    // tools' reads (CI once saw 17:13:32 from one and :33 from the other).
    srv.stop();
    let line = out.lines().find(|l| l.ends_with(&client_id)).unwrap();
    assert!(
        line.starts_with("Incoming\t127.0.0.1\t127.0.0.1\t"),
        "{line}"
    );
    assert!(out.ends_with("Total Entries: 1\n"), "{out}");
    let rcf_key = |args: &[&str]| {
        let o = Command::new(rcf_binary("rcf-key").unwrap())
            .args(args)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &wd)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    for (ours, theirs) in [
        (vec!["-s", "-N"], vec!["-s", "-N", "-n"]),
        (vec!["-s"], vec!["-s", "-n"]),
    ] {
        let (code, mine) = rcf_key(&ours);
        assert_eq!(code, 0, "{mine}");
        let out = Command::new("cf-key")
            .args(&theirs)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &wd)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert_eq!(
            mine,
            String::from_utf8_lossy(&out.stdout),
            "rcf-key {ours:?} vs cf-key {theirs:?}"
        );
    }
    // By host name: localhost is 127.0.0.1 (and ::1).
    assert!(lab
        .server
        .trusted_keys()
        .iter()
        .any(|f| f.contains(&client_id)));
    let (code, out) = rcf_key(&["-I", "-r", "localhost"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Removed corresponding entries from lastseen database"),
        "{out}"
    );
    assert!(
        !lab.server
            .trusted_keys()
            .iter()
            .any(|f| f.contains(&client_id)),
        "{:?}",
        lab.server.trusted_keys()
    );
    let (_, out) = cf_key(&wd, &["-s", "-N", "-n"]);
    assert!(out.ends_with("Total Entries: 0\n"), "{out}");
    let (code, _) = rcf_key(&["-r", "localhost"]);
    assert_eq!(code, 253, "nothing left for that host");
}
