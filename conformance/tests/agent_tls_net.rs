//! rcf-agent's outgoing TLS and network settings against the real
//! cf-serverd 3.21: `--tls-ciphers` / `--tls-min-version` (cf-agent's
//! `tls_ciphers` / `tls_min_version`, mapped onto rustls), a static-RSA-only
//! list refused by design with an error naming the suites,
//! `--bind-to-interface` (`bindtointerface`) and `--force-ipv4`. Where the
//! real cf-net has the same knob (`--tls-version`), both tools must agree.
//! Loopback only; fails when a peer is missing.

use rcf_conformance::lab::*;

#[test]
fn tls_settings_bind_to_interface_and_force_ipv4_against_the_real_cf_serverd() {
    let (srv_wd, cli) = agent_workdirs("atls").unwrap();
    let tls12_wd = Workdir::new("atls-12").unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let hello = data.share_path("hello.txt");
    let out = |n: &str| cli.scratch().join(n).to_string_lossy().into_owned();
    // The stock cf-serverd (TLS 1.3 with TLS_AES_256_GCM_SHA384, or static
    // RSA TLS 1.2), and one whose allowciphers leaves ECDHE TLS 1.2 only.
    let stock =
        RealServer::start(&srv_wd, &ServerPolicy::new(0).admit(data.share_path(""))).unwrap();
    let mut p12 = ServerPolicy::new(0).admit(data.share_path(""));
    p12.allowciphers = Some("ECDHE-RSA-AES256-GCM-SHA384".into());
    let only12 = RealServer::start(&tls12_wd, &p12).unwrap();
    let (hs, h12) = (stock.host_port(), only12.host_port());
    let copy = |hp: &str, extra: &[&str], dest: &str| {
        let mut a = vec!["copy", "--trustkey", "-H", hp];
        a.extend_from_slice(extra);
        a.push(hello.as_str());
        a.push(dest);
        rcf_agent(&cli, &a).unwrap()
    };

    // tls_min_version 1.3 against the stock server: works.
    let run = copy(&hs, &["--tls-min-version", "1.3"], &out("v13"));
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    trees_equal(&data.share.join("hello.txt"), &cli.scratch().join("v13")).unwrap();
    // An ECDHE TLS 1.2 suite only (no TLS_ name: TLS 1.3 off, as in 3.21)
    // against the server that allows just that suite: works.
    let run = copy(
        &h12,
        &["--tls-ciphers", "ECDHE-RSA-AES256-GCM-SHA384"],
        &out("e12"),
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    // TLS 1.3 required against a server without TLS 1.3: refused, and the
    // real cf-net with the same minimum version fails the same way.
    let run = copy(&h12, &["--tls-min-version", "1.3"], &out("v13-12"));
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    assert!(!cli.scratch().join("v13-12").exists());
    for (hp, ok) in [(&hs, true), (&h12, false)] {
        let real = cf_net(&cli, hp, &["--tls-version", "1.3", "connect"]).unwrap();
        let ours = rcf_agent(&cli, &["net", "-H", hp, "-t", "1.3", "connect"]).unwrap();
        assert_eq!(
            ours.result_lines(),
            real.result_lines(),
            "{}\n{}",
            real.describe(),
            ours.describe()
        );
        assert_eq!(
            ours.contains("Connected & authenticated successfully"),
            ok,
            "{}",
            ours.describe()
        );
    }
    // Static-RSA suites only: refused by design before connecting, the
    // error naming them (cf-agent with OpenSSL would negotiate them).
    let accepted = stock.log().matches("Accepting connection").count();
    let run = copy(
        &hs,
        &["--tls-ciphers", "AES256-GCM-SHA384:AES256-SHA"],
        &out("rsa"),
    );
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains(
        "the static-RSA suite(s) AES256-GCM-SHA384, AES256-SHA are unsupported by design",
    );
    assert!(!cli.scratch().join("rsa").exists());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        stock.log().matches("Accepting connection").count(),
        accepted,
        "no connection may be attempted"
    );
    // Mixed with a usable suite: the static-RSA one is a warning only.
    let run = copy(
        &hs,
        &["--tls-ciphers", "AES256-SHA:TLS_AES_256_GCM_SHA384"],
        &out("mixed"),
    );
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run.assert_contains("cipher 'AES256-SHA' is unsupported by design");

    // bindtointerface: a server admitting 127.0.0.2 only.
    let bind_wd = Workdir::new("atls-bind").unwrap();
    let mut pb = ServerPolicy::new(0);
    pb.allowconnects = vec!["127.0.0.2".into()];
    let mut rule = AccessRule::new(data.share_path(""));
    rule.admit_ips = vec!["127.0.0.2".into()];
    pb.access.push(rule);
    let bound = RealServer::start(&bind_wd, &pb).unwrap();
    cli.trust(&bind_wd, "root").unwrap();
    bind_wd.trust(&cli, "root").unwrap();
    let hb = bound.host_port();
    let run = copy(&hb, &[], &out("unbound"));
    assert_ne!(
        run.code(),
        Some(0),
        "from 127.0.0.1: refused\n{}",
        run.describe()
    );
    let run = copy(&hb, &["--bind-to-interface", "127.0.0.2"], &out("bound"));
    assert_eq!(run.code(), Some(0), "{}\n{}", run.describe(), bound.log());
    trees_equal(&data.share.join("hello.txt"), &cli.scratch().join("bound")).unwrap();
    assert!(bound.log().contains("127.0.0.2"), "{}", bound.log());
    // A name that does not resolve fails the connection, as in 3.21.
    let run = copy(
        &hb,
        &["--bind-to-interface", "no-such-host.invalid"],
        &out("badbind"),
    );
    assert_eq!(run.code(), Some(3), "{}", run.describe());
    run.assert_contains("Unable to lookup interface 'no-such-host.invalid' to bind");

    // force_ipv4: an IPv6 server address has no IPv4 address to use.
    let run = rcf_agent(
        &cli,
        &[
            "-v",
            "net",
            "-H",
            &format!("[::1]:{}", stock.port()),
            "--timeout",
            "3",
            "connect",
        ],
    )
    .unwrap();
    let run4 = copy(
        &format!("[::1]:{}", stock.port()),
        &["--force-ipv4", "-v"],
        &out("v4"),
    );
    assert_eq!(run4.code(), Some(3), "{}", run4.describe());
    run4.assert_contains("no IPv4 address, and force_ipv4 is set");
    assert!(run.contains("as address ::1"), "{}", run.describe());
    let run = copy(&hs, &["--force-ipv4", "-v"], &out("v4ok"));
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run.assert_contains("as address 127.0.0.1");
}
