//! rcf-key --trust-store postgresql://… against a real PostgreSQL started by
//! the test (loopback only, stopped by PID even on failure): -t, -s, -r on
//! the database, and --import-ppkeys / --export-ppkeys round trips with
//! ppkeys directories. Fails, never skips, when PostgreSQL is missing.

mod common;

use common::*;
use std::fs;

use rcf_pg::scratch::ScratchPostgres;

fn id_of(wd: &std::path::Path, pubfile: &std::path::Path) -> String {
    let r = rcf_key(wd, &["-p", pubfile.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    r.stdout.trim().to_string()
}

#[test]
fn trust_store_commands_and_ppkeys_round_trip() {
    let mut pg = ScratchPostgres::start().expect("start PostgreSQL");
    let url = pg.url();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(rcf_pg::migrate(&url))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("work");
    // Three peer keys, made by rcf-key -f.
    let mut pubs = Vec::new();
    for n in 0..3 {
        let base = tmp.path().join(format!("peer{n}"));
        let r = rcf_key(&wd, &["-f", base.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.all());
        pubs.push(base.with_extension("pub"));
    }
    let ids: Vec<String> = pubs.iter().map(|p| id_of(&wd, p)).collect();
    // Two trusted in the ppkeys directory (the single-node default).
    for (n, who) in [(0, "root@192.0.2.1"), (1, "alice@192.0.2.2")] {
        let arg = format!("{who}:{}", pubs[n].display());
        assert_eq!(rcf_key(&wd, &["-t", &arg]).code, 0);
    }
    let ts = ["--trust-store", url.as_str()];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = ts.to_vec();
        a.extend_from_slice(extra);
        rcf_key(&wd, &a)
    };

    // Import the ppkeys directory.
    let pp = wd.join("ppkeys");
    let r = with(&["--import-ppkeys", pp.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("Imported 2 keys from") && r.stdout.contains("0 already trusted"),
        "{}",
        r.all()
    );
    let r = with(&["--import-ppkeys", pp.to_str().unwrap()]);
    assert!(r.stdout.contains("Imported 0 keys from") && r.stdout.contains("2 already trusted"));

    // -t with an address records it; -s lists all three.
    let arg = format!("bob@127.0.0.7:{}", pubs[2].display());
    let r = with(&["-t", &arg]);
    assert_eq!(r.code, 0, "{}", r.all());
    let r = with(&["--list-trusted", "-N"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let want = format!(
        "User\tIP\tKey\nalice\t-\t{}\nbob\t127.0.0.7\t{}\nroot\t-\t{}\nTotal Entries: 3\n",
        ids[1], ids[2], ids[0]
    );
    assert_eq!(r.stdout, want);
    let r = with(&["--list-trusted"]);
    assert!(r.stdout.starts_with("User "), "{}", r.stdout);
    assert!(r.stdout.ends_with("Total Entries: 3\n"));

    // -r by address, then by id; nothing left to remove: cf-key's codes.
    let r = with(&["-I", "-r", "127.0.0.7"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains(&format!("Revoked key 'bob/{}'", ids[2])),
        "{}",
        r.all()
    );
    assert_eq!(with(&["-r", "127.0.0.7"]).code, 253);
    assert_eq!(with(&["-r", &ids[1]]).code, 0);
    assert_eq!(with(&["-r", &ids[1]]).code, 252);
    let r = with(&["--list-trusted", "-N"]);
    assert_eq!(
        r.stdout,
        format!("User\tIP\tKey\nroot\t-\t{}\nTotal Entries: 1\n", ids[0])
    );

    // Export: the unrevoked key, byte for byte as rcf-key -t wrote it, and
    // rcf-key -s on that directory lists it.
    let wd2 = tmp.path().join("work2");
    let out = wd2.join("ppkeys");
    let r = with(&["--export-ppkeys", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let name = format!("root-{}.pub", ids[0]);
    assert_eq!(
        fs::read(out.join(&name)).unwrap(),
        fs::read(pp.join(&name)).unwrap()
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    assert_eq!(mode(&out), 0o700);
    let r = rcf_key(&wd2, &["--list-trusted", "-N"]); // ppkeys mode: the files
    assert_eq!(
        r.stdout,
        format!("User\tIP\tKey\nroot\t-\t{}\nTotal Entries: 1\n", ids[0])
    );
    let r = with(&["--export-ppkeys", out.to_str().unwrap()]);
    assert!(r.stdout.contains("Exported 0 keys") && r.stdout.contains("1 already there"));

    // Usage errors.
    let r = rcf_key(&wd, &["--export-ppkeys", "/tmp/x"]);
    assert_eq!(r.code, 2, "needs --trust-store: {}", r.all());
    let r = rcf_key(&wd, &["--trust-store", "mysql://x", "-s"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("not a postgresql:// URL"), "{}", r.all());
    let r = with(&[]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("--trust-store applies to"), "{}", r.all());

    // Database down: a clear error, exit 1.
    pg.stop();
    let r = with(&["-s"]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("unreachable"), "{}", r.all());
}

/// `rcf-key --trust-store … -s` prints the fleet's lastseen exactly as the
/// real `cf-key -s` prints the same sightings from 3.21's own LMDB file
/// (written by rcf-fs), in both the table and the `-N` form (TZ=UTC: cf-key
/// prints local time, rcf-key UTC). Entry order is cf-key's hash order, so
/// the rows are compared sorted.
#[test]
fn fleet_lastseen_matches_real_cf_key_format() {
    use rcf_core::keys::KeyId;
    use rcf_core::lastseen::{Direction, LastseenStore, Seen};
    use rcf_fs::lastseen::LmdbLastseen;

    let pg = ScratchPostgres::start().expect("start PostgreSQL");
    let url = pg.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(rcf_pg::migrate(&url)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path();
    let a: KeyId = "MD5=0123456789abcdef0123456789abcdef".parse().unwrap();
    let b: KeyId = "MD5=fedcba9876543210fedcba9876543210".parse().unwrap();
    let t0 = 1_765_000_000;
    let sightings = [
        (&a, "127.0.0.2", Direction::Incoming, t0),
        (&a, "127.0.0.2", Direction::Outgoing, t0 + 7),
        (
            &b,
            "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff",
            Direction::Incoming,
            t0 + 90_000,
        ),
    ];
    let lmdb = LmdbLastseen::open(wd).unwrap();
    let pgs = rcf_pg::PgTrustStore::new(
        &url,
        rcf_core::keys::DigestKind::Md5,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    for (key, address, direction, now) in sightings {
        let seen = Seen {
            key,
            address,
            direction,
            now,
        };
        lmdb.record(&seen).unwrap();
        rt.block_on(pgs.record_lastseen(&seen)).unwrap();
    }
    drop(lmdb);
    let cf_key = require("cf-key", "apt-get install cfengine3");
    for extra in [&[][..], &["-N"][..]] {
        let mut args = vec!["-s", "-n"];
        args.extend_from_slice(extra);
        let real = std::process::Command::new(&cf_key)
            .args(&args)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap();
        let mut ours_args = vec!["--trust-store", url.as_str(), "-s"];
        ours_args.extend_from_slice(extra);
        let ours = rcf_key(wd, &ours_args);
        assert_eq!(ours.code, 0, "{}", ours.all());
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&ours.stdout), sorted(&real), "{extra:?}\n{real}");
        assert!(real.contains("Total Entries: 3"), "{real}");
    }
    // -r HOST forgets the host's lastseen records too (no trusted key
    // needed), as cf-key -r does in its lastseen database.
    let r = rcf_key(
        wd,
        &["--trust-store", url.as_str(), "-I", "-r", "127.0.0.2"],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("Removed 2 corresponding entries from lastseen database."),
        "{}",
        r.all()
    );
    let r = rcf_key(wd, &["--trust-store", url.as_str(), "-s", "-N"]);
    assert!(r.stdout.ends_with("Total Entries: 1\n"), "{}", r.all());
}
