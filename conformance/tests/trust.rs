//! Key trust against rcf-serverd over real sockets: once `trustkeysfrom`
//! is closed, an unknown key, a known IP presenting a different key (new and
//! old-style ppkeys files) and user A's key presented under IDENTITY user B
//! are each refused with the line admins grep for, and the trust store
//! (`ppkeys/`) is left byte-for-byte unchanged.
//!
//! Loopback only, temp dirs, servers stopped by PID; all reads bounded.

mod support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use rcf_conformance::lab::*;
use support::*;

const TRUST_FAILED: &str = "TRUST FAILED, peer presented an untrusted key, dropping connection!";

fn key_of(wd: &Workdir) -> rcf_core::keys::RsaPrivateKey {
    wd.cf_key().unwrap();
    rcf_core::keys::parse_private_pem(&std::fs::read(wd.privkey_path()).unwrap()).unwrap()
}

/// ppkeys as name -> (mode, content).
fn snapshot(wd: &Workdir) -> BTreeMap<String, (u32, Vec<u8>)> {
    std::fs::read_dir(wd.ppkeys())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.permissions().mode(), std::fs::read(e.path()).unwrap()),
            )
        })
        .collect()
}

fn policy(trustkeysfrom: &[&str]) -> ServerPolicy {
    let mut p = ServerPolicy::new(0);
    p.allowconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    p.allowallconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    p.trustkeysfrom = trustkeysfrom.iter().map(|s| s.to_string()).collect();
    p.allowusers = vec!["root".into(), "alice".into()];
    p
}

/// Identify and expect a refusal: no WELCOME, the connection closed.
fn refused(srv: &RcfServer, src: Ipv4Addr, key: &rcf_core::keys::RsaPrivateKey, user: &str) {
    let (mut c, w) = RawClient::identify(src, srv.port(), key, user);
    assert!(
        w.is_none(),
        "{user}@{src} was welcomed: {:?}",
        w.map(|l| String::from_utf8_lossy(&l).into_owned())
    );
    assert!(
        c.wait_closed(Duration::from_secs(5)),
        "connection left open after a trust failure"
    );
}

fn welcomed(srv: &RcfServer, src: Ipv4Addr, key: &rcf_core::keys::RsaPrivateKey, user: &str) {
    let (mut c, w) = RawClient::identify(src, srv.port(), key, user);
    let w = w.unwrap_or_else(|| panic!("{user}@{src} refused:\n{}", srv.log()));
    assert!(
        w.starts_with(b"OK WELCOME"),
        "{:?}",
        String::from_utf8_lossy(&w)
    );
    c.txn(b"VERSION");
    assert_eq!(c.reply(IO).unwrap(), b"OK: 3.21.0");
}

/// Lines of `log` from `ip` saying TRUST FAILED.
fn trust_failures(log: &str, ip: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(TRUST_FAILED) && l.contains(&format!("{ip}>")))
        .count()
}

#[test]
fn an_unknown_key_is_refused_once_trustkeysfrom_is_closed() {
    let t0 = Instant::now();
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("t1-srv").unwrap();
    let cli_wd = Workdir::new("t1-cli").unwrap();
    srv_wd.cf_key().unwrap();
    let k = key_of(&cli_wd);
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let srv = RcfServer::start(&srv_wd, &policy(&[]).admit(data.share_path(""))).unwrap();
    let before = snapshot(&srv_wd);
    refused(&srv, Ipv4Addr::LOCALHOST, &k, "root");
    // The real cf-agent gets the same answer.
    let out = cli_wd.scratch().join("out/hello.txt");
    let run = cf_agent_copies(
        &cli_wd,
        &[CopySpec::new(
            srv.port(),
            data.share_path("hello.txt"),
            &out,
        )],
    )
    .unwrap();
    assert!(
        !run.outcomes[0].ok() && !out.exists(),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert!(srv.wait_for_log(TRUST_FAILED, Duration::from_secs(5)));
    let log = srv.log();
    assert_eq!(trust_failures(&log, "127.0.0.1"), 2, "{log}");
    assert!(log.contains("not found in ppkeys"), "{log}");
    assert_eq!(snapshot(&srv_wd), before, "ppkeys changed");
    assert!(
        !log.contains("Trusting new key") && !log.contains("Saved trusted key"),
        "{log}"
    );
    eprintln!(
        "[trust] unknown key refused (raw client and cf-agent), ppkeys unchanged; wall {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_known_ip_presenting_a_different_key_is_refused() {
    let t0 = Instant::now();
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("t2-srv").unwrap();
    let a_wd = Workdir::new("t2-a").unwrap();
    let b_wd = Workdir::new("t2-b").unwrap();
    srv_wd.cf_key().unwrap();
    let (ka, kb) = (key_of(&a_wd), key_of(&b_wd));

    // Trust on first use while trustkeysfrom is open: A's key is stored.
    let srv = RcfServer::start(&srv_wd, &policy(&["127.0.0.1"])).unwrap();
    welcomed(&srv, Ipv4Addr::LOCALHOST, &ka, "root");
    let stored = format!("root-{}.pub", a_wd.key_id().unwrap());
    assert!(
        srv_wd.ppkeys().join(&stored).exists(),
        "TOFU did not store {stored}: {:?}",
        snapshot(&srv_wd).keys()
    );
    srv.stop();

    // An old-style `<user>-<ip>.pub` for 127.0.0.2 holding A's key, too.
    std::fs::copy(
        a_wd.pubkey_path(),
        srv_wd.ppkeys().join("root-127.0.0.2.pub"),
    )
    .unwrap();

    // Closed: the same IPs now present B's key.
    let srv = RcfServer::start(&srv_wd, &policy(&[])).unwrap();
    let before = snapshot(&srv_wd);
    refused(&srv, Ipv4Addr::LOCALHOST, &kb, "root");
    refused(&srv, Ipv4Addr::new(127, 0, 0, 2), &kb, "root");
    assert!(srv.wait_for_log(TRUST_FAILED, Duration::from_secs(5)));
    let log = srv.log();
    assert_eq!(trust_failures(&log, "127.0.0.1"), 1, "{log}");
    assert_eq!(trust_failures(&log, "127.0.0.2"), 1, "{log}");
    assert!(
        log.contains("compares different to the one in ppkeys"),
        "the old-style file was not compared:\n{log}"
    );
    let after = snapshot(&srv_wd);
    assert!(
        after == before,
        "ppkeys changed: {:?} -> {:?}",
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    // A is still trusted from both IPs. (The unchanged ppkeys above is the
    // regression check: 3.21 would have renamed root-127.0.0.2.pub to B's id.)
    welcomed(&srv, Ipv4Addr::LOCALHOST, &ka, "root");
    welcomed(&srv, Ipv4Addr::new(127, 0, 0, 2), &ka, "root");
    eprintln!("[trust] known IP with a different key refused (new-style and old-style ppkeys), ppkeys unchanged; wall {:?}", t0.elapsed());
}

#[test]
fn user_a_key_under_identity_user_b_is_refused() {
    let t0 = Instant::now();
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("t3-srv").unwrap();
    let a_wd = Workdir::new("t3-a").unwrap();
    srv_wd.cf_key().unwrap();
    let ka = key_of(&a_wd);
    srv_wd.trust(&a_wd, "root").unwrap();
    let srv = RcfServer::start(&srv_wd, &policy(&[])).unwrap();
    let before = snapshot(&srv_wd);
    welcomed(&srv, Ipv4Addr::LOCALHOST, &ka, "root");
    refused(&srv, Ipv4Addr::LOCALHOST, &ka, "alice");
    refused(&srv, Ipv4Addr::LOCALHOST, &ka, "");
    assert!(srv.wait_for_log(TRUST_FAILED, Duration::from_secs(5)));
    let log = srv.log();
    assert_eq!(trust_failures(&log, "127.0.0.1"), 2, "{log}");
    assert_eq!(snapshot(&srv_wd), before, "ppkeys changed");
    eprintln!("[trust] root's key under IDENTITY alice and under no username refused, ppkeys unchanged; wall {:?}", t0.elapsed());
}
