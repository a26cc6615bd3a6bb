//! The real cf-agent 3.21 (and cf-net) as clients of rcf-serverd, loopback
//! only. These tests FAIL when the CFEngine binaries are missing.

use rcf_conformance::lab::*;
use std::time::{Duration, Instant};

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

fn policy(s: &Setup) -> ServerPolicy {
    ServerPolicy::new(0).admit(s.data.share_path(""))
}

fn done(name: &str, t0: Instant) {
    eprintln!("[interop_server] {name}: {:?} wall", t0.elapsed());
}

#[test]
fn copy_file_and_recursive_tree_with_purge() {
    let t0 = Instant::now();
    let s = setup("rs1");
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let out = s.cli_wd.scratch().join("out");
    std::fs::create_dir_all(out.join("tree/sub")).unwrap();
    std::fs::write(out.join("tree/sub/stray.txt"), b"purge me\n").unwrap();
    let file = CopySpec::new(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let tree =
        CopySpec::new(srv.port(), s.data.share_path("tree"), out.join("tree")).recursive(true);
    let run = cf_agent_copies(&s.cli_wd, &[file, tree]).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.ok()),
        "{:?}\n{}\n{}",
        run.outcomes,
        run.describe(),
        srv.log()
    );
    trees_equal(&s.data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    trees_equal(&s.data.share.join("tree"), &out.join("tree")).unwrap();
    assert!(
        !out.join("tree/sub/stray.txt").exists(),
        "purge did not remove the stray file"
    );
    run.assert_contains("TLS version negotiated:  TLSv1.3");
    let log = srv.log();
    assert!(
        log.contains("Accepting connection") && log.contains("Received:    STAT"),
        "{log}"
    );
    done("copy_file_and_recursive_tree_with_purge", t0);
}

#[test]
fn compare_mtime_and_digest_same_and_different() {
    let t0 = Instant::now();
    let s = setup("rs2");
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let src = s.data.share_path("seq.txt");
    let mk = |name: &str, cmp: &str| {
        let mut c = CopySpec::new(srv.port(), src.clone(), out.join(name));
        c.compare = Some(cmp.into());
        c
    };
    // First copy: all repaired.
    let run = cf_agent_copies(&s.cli_wd, &[mk("d", "digest"), mk("m", "mtime")]).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.repaired),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    // Same content: digest compare asks MD5 and gets CFD_FALSE, nothing copied.
    let run = cf_agent_copies(&s.cli_wd, &[mk("d", "digest"), mk("m", "mtime")]).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.kept && !o.repaired),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert!(srv.log().contains("Received:     MD5"), "{}", srv.log());
    // Local copy altered, same size, older: digest sees the difference.
    let original = std::fs::read(out.join("d")).unwrap();
    let mut altered = original.clone();
    altered[0] ^= 1;
    std::fs::write(out.join("d"), &altered).unwrap();
    let run = cf_agent_copies(&s.cli_wd, &[mk("d", "digest")]).unwrap();
    assert!(
        run.outcomes[0].repaired,
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert_eq!(std::fs::read(out.join("d")).unwrap(), original);
    done("compare_mtime_and_digest_same_and_different", t0);
}

#[test]
fn encrypt_missing_ok_shortcut_and_connection_ip_promiser() {
    let t0 = Instant::now();
    let s = setup("rs3");
    let mut p = policy(&s);
    // A shortcut, and a $(connection.ip) promiser with an explicit trailing slash.
    let per_host = s.srv_wd.scratch().join("perhost");
    std::fs::create_dir_all(per_host.join("127.0.0.1")).unwrap();
    std::fs::write(per_host.join("127.0.0.1/mine.txt"), b"for 127.0.0.1\n").unwrap();
    std::fs::create_dir_all(per_host.join("127.0.0.2")).unwrap();
    std::fs::write(per_host.join("127.0.0.2/other.txt"), b"not yours\n").unwrap();
    let mut sc = AccessRule::admit_loopback(s.data.masterfiles.to_string_lossy().into_owned());
    sc.shortcut = Some("masterfiles".into());
    p.access.push(sc);
    let mut ci = AccessRule::new(format!("{}/$(connection.ip)/", per_host.display()));
    ci.admit_ips = vec!["$(connection.ip)".into()];
    p.access.push(ci);
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let mut enc = CopySpec::new(
        srv.port(),
        s.data.share_path("big.bin"),
        out.join("big.bin"),
    );
    enc.encrypt = true;
    let mut missing = CopySpec::new(
        srv.port(),
        s.data.share_path("no-such-file"),
        out.join("nothing"),
    );
    missing.missing_ok = true;
    let short = CopySpec::new(
        srv.port(),
        "masterfiles/promises.cf",
        out.join("promises.cf"),
    );
    let mine = CopySpec::new(
        srv.port(),
        format!("{}/127.0.0.1/mine.txt", per_host.display()),
        out.join("mine.txt"),
    );
    let other = CopySpec::new(
        srv.port(),
        format!("{}/127.0.0.2/other.txt", per_host.display()),
        out.join("other.txt"),
    );
    let run = cf_agent_copies(&s.cli_wd, &[enc, missing, short, mine, other]).unwrap();
    let o = &run.outcomes;
    assert!(
        o[0].ok() && o[1].ok() && o[2].ok() && o[3].ok(),
        "{o:?}\n{}\n{}",
        run.describe(),
        srv.log()
    );
    assert!(
        !o[4].ok(),
        "another host's directory must be refused: {o:?}"
    );
    trees_equal(&s.data.share.join("big.bin"), &out.join("big.bin")).unwrap();
    trees_equal(
        &s.data.masterfiles.join("promises.cf"),
        &out.join("promises.cf"),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(out.join("mine.txt")).unwrap(),
        b"for 127.0.0.1\n"
    );
    assert!(!out.join("nothing").exists() && !out.join("other.txt").exists());
    done("encrypt_missing_ok_shortcut_and_connection_ip_promiser", t0);
}

#[test]
fn denied_file_and_missing_then_good_copy_on_one_cached_connection() {
    let t0 = Instant::now();
    let s = setup("rs4");
    let mut p = policy(&s);
    let private = s.data.share.join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::write(private.join("k.txt"), b"secret\n").unwrap();
    p.access.push(AccessRule::deny_loopback(
        private.to_string_lossy().into_owned() + "/",
    ));
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let denied = CopySpec::new(
        srv.port(),
        private.join("k.txt").to_string_lossy().into_owned(),
        out.join("k.txt"),
    );
    let missing = CopySpec::new(
        srv.port(),
        s.data.share_path("missing.txt"),
        out.join("missing.txt"),
    );
    let good = CopySpec::new(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let run = cf_agent_copies(&s.cli_wd, &[denied, missing, good]).unwrap();
    let o = &run.outcomes;
    assert!(
        !o[0].ok() && !o[1].ok() && o[2].ok(),
        "{o:?}\n{}\n{}",
        run.describe(),
        srv.log()
    );
    assert!(!out.join("k.txt").exists());
    run.assert_contains(
        "Server returned error: Unspecified server refusal (see verbose server output)",
    );
    let log = srv.log();
    assert_eq!(
        log.matches("Accepting connection").count(),
        1,
        "one cached connection expected:\n{log}"
    );
    assert!(log.contains("access denied to STAT:"), "{log}");
    assert!(log.contains("Failed to canonicalise filename"), "{log}");
    done(
        "denied_file_and_missing_then_good_copy_on_one_cached_connection",
        t0,
    );
}

#[test]
fn denyconnects_refuses_the_connection() {
    let t0 = Instant::now();
    let s = setup("rs5");
    let mut p = policy(&s);
    p.denyconnects = vec!["127.0.0.1".into()];
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let run = cf_agent_copy(
        &s.cli_wd,
        &CopySpec::new(srv.port(), s.data.share_path("hello.txt"), out.join("h")),
    )
    .unwrap();
    assert!(!run.outcomes[0].ok());
    assert!(!out.join("h").exists());
    assert!(
        srv.wait_for_log(
            "Remote host '127.0.0.1' is in denyconnects, denying connection",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    done("denyconnects_refuses_the_connection", t0);
}

#[test]
fn untrusted_client_key_refused_then_accepted_after_trustkeysfrom() {
    let t0 = Instant::now();
    let s = setup("rs6");
    let mut p = policy(&s);
    p.trustkeysfrom = vec![];
    let out = s.cli_wd.scratch().join("out");
    {
        let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
        let run = cf_agent_copy(
            &s.cli_wd,
            &CopySpec::new(srv.port(), s.data.share_path("hello.txt"), out.join("h")),
        )
        .unwrap();
        assert!(!run.outcomes[0].ok(), "{}", run.describe());
        assert!(
            srv.wait_for_log(
                "TRUST FAILED, peer presented an untrusted key, dropping connection!",
                Duration::from_secs(5)
            ),
            "{}",
            srv.log()
        );
        run.assert_contains("Connection was hung up during identification!");
        assert!(
            s.srv_wd.trusted_keys().is_empty(),
            "{:?}",
            s.srv_wd.trusted_keys()
        );
        srv.stop();
    }
    p.trustkeysfrom = vec!["127.0.0.1".into()];
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let run = cf_agent_copy(
        &s.cli_wd,
        &CopySpec::new(srv.port(), s.data.share_path("hello.txt"), out.join("h")),
    )
    .unwrap();
    assert!(run.outcomes[0].ok(), "{}\n{}", run.describe(), srv.log());
    let id = s.cli_wd.key_id().unwrap();
    assert!(
        s.srv_wd.trusted_keys().contains(&format!("root-{id}.pub")),
        "{:?}",
        s.srv_wd.trusted_keys()
    );
    assert!(srv.log().contains(&format!("Trusting new key: {id}")));
    done(
        "untrusted_client_key_refused_then_accepted_after_trustkeysfrom",
        t0,
    );
}

#[test]
fn agent_without_trustkey_refuses_an_unknown_server_key() {
    let t0 = Instant::now();
    let s = setup("rs7");
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let mut c = CopySpec::new(srv.port(), s.data.share_path("hello.txt"), out.join("h"));
    c.trustkey = false;
    let run = cf_agent_copy(&s.cli_wd, &c).unwrap();
    assert!(!run.outcomes[0].ok());
    run.assert_contains("TRUST FAILED, server presented untrusted key:");
    assert!(!out.join("h").exists());
    done("agent_without_trustkey_refuses_an_unknown_server_key", t0);
}

#[test]
fn two_instances_on_two_ports_from_one_workdir() {
    let t0 = Instant::now();
    let s = setup("rs8");
    let a = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let b = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    assert_ne!(a.port(), b.port());
    let out = s.cli_wd.scratch().join("out");
    let ca = CopySpec::new(a.port(), s.data.share_path("hello.txt"), out.join("a"));
    let cb = CopySpec::new(b.port(), s.data.share_path("seq.txt"), out.join("b"));
    let run = cf_agent_copies(&s.cli_wd, &[ca, cb]).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.ok()),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert!(a.is_running() && b.is_running());
    done("two_instances_on_two_ports_from_one_workdir", t0);
}

#[test]
fn a_100_mb_file_arrives_byte_identical() {
    let t0 = Instant::now();
    let s = setup("rs9");
    let big = s.data.share.join("big100.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..100 {
            for chunk in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&block).unwrap();
        }
    }
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let out = s.cli_wd.scratch().join("out");
    let t1 = Instant::now();
    let run = cf_agent_copy(
        &s.cli_wd,
        &CopySpec::new(
            srv.port(),
            big.to_string_lossy().into_owned(),
            out.join("big"),
        ),
    )
    .unwrap();
    let took = t1.elapsed();
    assert!(
        run.outcomes[0].ok(),
        "{}\n{}",
        run.describe(),
        rcf_conformance::lab::tail(&srv.log(), 30)
    );
    trees_equal(&big, &out.join("big")).unwrap();
    eprintln!(
        "[interop_server] 100 MiB copied by cf-agent from rcf-serverd in {took:?} (debug build)"
    );
    done("a_100_mb_file_arrives_byte_identical", t0);
}

#[test]
fn cf_net_connect_stat_get_opendir() {
    let t0 = Instant::now();
    let s = setup("rs10");
    let srv = RcfServer::start(&s.srv_wd, &policy(&s)).unwrap();
    let hp = srv.host_port();
    cf_net(&s.cli_wd, &hp, &["connect"])
        .unwrap()
        .assert_contains("Connected & authenticated successfully");
    let hello = s.data.share_path("hello.txt");
    cf_net(&s.cli_wd, &hp, &["stat", &hello])
        .unwrap()
        .assert_contains("is a regular file");
    let missing = s.data.share_path("nope");
    cf_net(&s.cli_wd, &hp, &["stat", &missing])
        .unwrap()
        .assert_contains("Could not stat");
    let got = s.cli_wd.scratch().join("got.txt");
    let run = cf_net(
        &s.cli_wd,
        &hp,
        &["get", &hello, "-o", &got.to_string_lossy()],
    )
    .unwrap();
    assert_eq!(
        std::fs::read(&got).unwrap(),
        b"hello from cf-serverd lab\n",
        "{}",
        run.describe()
    );
    let run = cf_net(&s.cli_wd, &hp, &["opendir", &s.data.share_path("tree")]).unwrap();
    run.assert_contains("a.txt");
    done("cf_net_connect_stat_get_opendir", t0);
}

#[test]
fn no_policy_file_serves_masterfiles_to_loopback_and_makes_the_host_key() {
    let t0 = Instant::now();
    require_cfengine().unwrap();
    let wd = Workdir::new("rs11-srv").unwrap();
    let cli = Workdir::new("rs11-cli").unwrap();
    cli.cf_key().unwrap();
    assert!(!wd.privkey_path().exists());
    let mf = wd.path().join("masterfiles");
    std::fs::create_dir_all(mf.join("lib")).unwrap();
    std::fs::write(mf.join("promises.cf"), b"bundle agent main { }\n").unwrap();
    std::fs::write(mf.join("lib/x.cf"), b"# lib\n").unwrap();
    std::fs::write(wd.scratch().join("outside.txt"), b"not served\n").unwrap();
    let port = free_port();
    let mut cmd = wd.command(&rcf_binary("rcf-serverd").unwrap());
    cmd.args(["-F", "-v", "--port", &port.to_string(), "--workdir"])
        .arg(wd.path());
    let d = Daemon::spawn("rcf-serverd", cmd, &wd.scratch().join("srv.log")).unwrap();
    d.wait_listening(port, Duration::from_secs(30)).unwrap();
    assert!(
        wd.privkey_path().exists() && wd.pubkey_path().exists(),
        "host key not generated"
    );
    let out = cli.scratch().join("out");
    let mut tree = CopySpec::new(port, "masterfiles", out.join("inputs")).recursive(true);
    tree.trustkey = true;
    let outside = CopySpec::new(
        port,
        wd.scratch()
            .join("outside.txt")
            .to_string_lossy()
            .into_owned(),
        out.join("outside"),
    );
    let run = cf_agent_copies(&cli, &[tree, outside]).unwrap();
    assert!(run.outcomes[0].ok(), "{}\n{}", run.describe(), d.log());
    assert!(!run.outcomes[1].ok());
    trees_equal(&mf, &out.join("inputs")).unwrap();
    // rcf-key agrees the generated key is a valid CFEngine key (cf-key -p reads it).
    let p = run_tool(
        &wd,
        &wd.bins().key,
        &["-p", &wd.pubkey_path().to_string_lossy()],
        None,
        TOOL_TIMEOUT,
    )
    .unwrap();
    assert!(p.output.trim().starts_with("MD5="), "{}", p.describe());
    done(
        "no_policy_file_serves_masterfiles_to_loopback_and_makes_the_host_key",
        t0,
    );
}

#[test]
fn ipv6_loopback() {
    let t0 = Instant::now();
    let s = setup("rs12");
    let mut p = policy(&s);
    p.bind = "::1".into();
    let srv = RcfServer::start(&s.srv_wd, &p).unwrap();
    let run = cf_net(&s.cli_wd, &format!("[::1]:{}", srv.port()), &["connect"]).unwrap();
    run.assert_contains("Connected & authenticated successfully");
    assert!(srv.log().contains("::1>"), "{}", srv.log());
    done("ipv6_loopback", t0);
}
