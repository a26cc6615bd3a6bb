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
