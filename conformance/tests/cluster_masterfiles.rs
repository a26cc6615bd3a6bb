//! Issue 20: two replicas serving the same masterfiles from separate
//! checkouts (different mtimes and inodes) must not make an MPF agent that
//! bounces between them re-download anything. The MPF's `update.cf`
//! copies with `body copy_from u_rcp` (`compare => "digest"`, `purge =>
//! "true"`, no `preserve`): only content counts, so the checkouts may
//! differ in everything else, provided `cf_promises_validated` is the same
//! bytes on both (made once and deployed with the files, see
//! docs/cluster.md). Shown with the real MPF 3.21 and the real cf-agent
//! (`cf-agent -f update.cf -b cfe_internal_update_policy_cpv`) through
//! HAProxy (roundrobin) to two rcf-serverd replicas.

use std::path::Path;
use std::time::Duration;

use rcf_conformance::lab::{
    cf_promises_stamp, AccessRule, HaProxy, RcfServer, ServerPolicy, Workdir,
};

mod policy_lab;
use policy_lab::{cf_agent_update, copy_tree, private_bin};

const MPF: &str = "/usr/share/cfengine3/masterfiles";

/// Number of connections replica `r` authenticated so far.
fn sessions(r: &RcfServer) -> usize {
    r.log().matches("Client is TRUSTED").count()
}

#[test]
fn mpf_update_bouncing_between_replicas_with_separate_checkouts_transfers_nothing_again() {
    assert!(
        Path::new(MPF).is_dir(),
        "{MPF} missing (apt-get install cfengine3)"
    );
    let wds = [
        Workdir::new("mf-r1").unwrap(),
        Workdir::new("mf-r2").unwrap(),
    ];
    wds[0].cf_key().unwrap();
    for f in ["localhost.priv", "localhost.pub"] {
        std::fs::copy(wds[0].ppkeys().join(f), wds[1].ppkeys().join(f)).unwrap();
    }
    // One release: the MPF with its stamp, made once (cf-promises -T).
    let src = wds[0].scratch().join("release");
    copy_tree(Path::new(MPF), &src);
    let t = cf_promises_stamp(&wds[0], &src).unwrap();
    assert!(t.success(), "{}", t.describe());
    assert!(src.join("cf_promises_validated").is_file());
    // Two checkouts of it, a second apart: other inodes, other mtimes.
    let checkouts = [
        wds[0].path().join("masterfiles"),
        wds[1].path().join("masterfiles"),
    ];
    copy_tree(&src, &checkouts[0]);
    std::thread::sleep(Duration::from_millis(1100));
    copy_tree(&src, &checkouts[1]);
    {
        use std::os::unix::fs::MetadataExt;
        let f = "services/main.cf";
        let (a, b) = (
            std::fs::metadata(checkouts[0].join(f)).unwrap(),
            std::fs::metadata(checkouts[1].join(f)).unwrap(),
        );
        assert!(
            a.ino() != b.ino() && a.mtime() != b.mtime(),
            "checkouts must differ"
        );
    }

    let client = Workdir::new("mf-agent").unwrap();
    client.cf_key().unwrap();
    private_bin(&client);
    let mut replicas = Vec::new();
    for (wd, mf) in wds.iter().zip(&checkouts) {
        wd.trust(&client, "root").unwrap();
        let mut rule = AccessRule::admit_loopback(mf.to_string_lossy().into_owned());
        rule.shortcut = Some("masterfiles".into());
        let mut p = ServerPolicy::new(0);
        p.access.push(rule);
        replicas.push(
            RcfServer::start_with_flags(wd, &p, &["-v", "--proxy-from", "127.0.0.1/32"]).unwrap(),
        );
    }
    let ports: Vec<u16> = replicas.iter().map(|r| r.port()).collect();
    let hap = HaProxy::start(&client.scratch(), &ports, 100, 500).unwrap();

    // The agent was bootstrapped to the release before it: its stamp and
    // one file are older than the hub's.
    client.trust(&wds[0], "root").unwrap();
    copy_tree(&src, &client.inputs());
    std::fs::write(
        client.inputs().join("cf_promises_validated"),
        "{\n  \"timestamp\": 1\n}",
    )
    .unwrap();
    std::fs::write(client.inputs().join("services/main.cf"), "# older\n").unwrap();
    std::fs::write(
        client.path().join("policy_server.dat"),
        format!("127.0.0.1:{}\n", hap.front()),
    )
    .unwrap();

    let mut served = Vec::new();
    let mut run = |what: &str, want: usize| {
        let before: Vec<usize> = replicas.iter().map(sessions).collect();
        let (r, n) = cf_agent_update(&client);
        assert!(r.success(), "{what}: {}", r.describe());
        let after: Vec<usize> = replicas.iter().map(sessions).collect();
        let by: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
        assert_eq!(
            by.len(),
            1,
            "{what}: one replica served the run: {before:?} -> {after:?}"
        );
        assert_eq!(
            n,
            want,
            "{what}: files transferred through replica {}\n{}",
            by[0],
            r.describe()
        );
        served.push(by[0]);
        eprintln!(
            "[cluster_masterfiles] {what}: replica {} served, {n} file(s) transferred",
            by[0]
        );
    };
    // 1: the new stamp and the changed file, from one replica.
    run("first update", 2);
    // 2: the other replica's checkout, same stamp bytes: nothing.
    run("bounced, stamp unchanged", 0);
    // 3, 4: without a local stamp the whole tree is walked (MD5 of every
    // file against the other checkout): only the stamp itself is copied.
    for what in ["walk through one replica", "walk through the other"] {
        std::fs::remove_file(client.inputs().join("cf_promises_validated")).unwrap();
        run(what, 1);
    }
    assert!(served.contains(&0) && served.contains(&1), "{served:?}");
    assert!(
        served.windows(2).all(|w| w[0] != w[1]),
        "roundrobin alternates: {served:?}"
    );
    copy_tree_equal(&src, &client.inputs());
}

/// Every file of `a` is in `b` with the same bytes.
fn copy_tree_equal(a: &Path, b: &Path) {
    for e in std::fs::read_dir(a).unwrap().flatten() {
        let (p, q) = (e.path(), b.join(e.file_name()));
        if p.is_dir() {
            copy_tree_equal(&p, &q);
        } else if p.extension().is_some_and(|x| x == "cf" || x == "json") {
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(&q).unwrap_or_default(),
                "{}",
                q.display()
            );
        }
    }
}
