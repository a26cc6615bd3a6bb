//! The interop harness against the real CFEngine 3.21 binaries (loopback
//! only). These tests FAIL when the binaries are missing (install Debian's
//! `cfengine3`). Each test prints its wall time.

use rcf_conformance::lab::*;
use std::time::{Duration, Instant};

fn setup(name: &str) -> Lab {
    Lab::new(name).unwrap()
}

fn report(name: &str, t0: Instant) {
    eprintln!("[interop_lab] {name}: {:?} wall", t0.elapsed());
}

#[test]
fn missing_binaries_error_is_clear() {
    // Not the real path: a dir with no binaries must give the install hint.
    let e = LabError::MissingBinary {
        name: "cf-serverd",
        path: "/usr/bin/cf-serverd".into(),
    };
    assert_eq!(
        e.to_string(),
        "cf-serverd not found at /usr/bin/cf-serverd: install Debian's cfengine3 (apt-get install cfengine3)"
    );
    require_cfengine().unwrap();
    // our own binaries are looked up next to the test binary
    let e = rcf_binary("rcf-no-such-binary").unwrap_err().to_string();
    assert!(e.contains("cargo build -p rcf-no-such-binary"), "{e}");
}

#[test]
fn t1_cf_net_connect_real_server() {
    let t0 = Instant::now();
    let s = setup("t1");
    let policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RealServer::start(&s.server, &policy).unwrap();
    eprintln!(
        "[interop_lab] t1: cf-serverd startup {:?}",
        srv.startup_time()
    );
    let run = cf_net(&s.client, &srv.host_port(), &["connect"]).unwrap();
    run.assert_contains("Connected & authenticated successfully");
    assert!(run.success(), "{}", run.describe());
    assert!(
        srv.wait_for_log("Closing connection", Duration::from_secs(5)),
        "{}",
        srv.log()
    );
    let log = srv.log();
    assert!(log.contains("Accepting connection"), "{log}");
    assert!(log.contains("Setting IDENTITY: USERNAME=root"), "{log}");
    // trustkeysfrom loopback: the server saved the client key
    let cli_id = s.client.key_id().unwrap();
    assert!(
        s.server
            .trusted_keys()
            .contains(&format!("root-{cli_id}.pub")),
        "{:?}",
        s.server.trusted_keys()
    );
    eprintln!("[interop_lab] t1: cf-net connect took {:?}", run.elapsed);
    // options after -H and before the command work too
    let hello = s.data.share_path("hello.txt");
    let stat = cf_net(&s.client, &srv.host_port(), &["-I", "stat", &hello]).unwrap();
    eprintln!("[interop_lab] t1: cf-net stat output:\n{}", stat.output);
    assert!(stat.success(), "{}", stat.describe());
    let got = s.client.scratch().join("got.txt");
    let get = cf_net(
        &s.client,
        &srv.host_port(),
        &["get", &hello, "-o", &got.to_string_lossy()],
    )
    .unwrap();
    eprintln!("[interop_lab] t1: cf-net get output:\n{}", get.output);
    trees_equal(&s.data.share.join("hello.txt"), &got).unwrap();
    let ls = cf_net(
        &s.client,
        &srv.host_port(),
        &["opendir", &s.data.share_path("tree")],
    )
    .unwrap();
    eprintln!("[interop_lab] t1: cf-net opendir output:\n{}", ls.output);
    ls.assert_contains("a.txt");
    let pid = srv.pid();
    let ts = Instant::now();
    let (status, _) = srv.stop();
    eprintln!(
        "[interop_lab] t1: cf-serverd exit after SIGTERM: {status:?} in {:?}",
        ts.elapsed()
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "cf-serverd {pid} still there"
    );
    report("t1_cf_net_connect_real_server", t0);
}

#[test]
fn t2_cf_agent_copies_file_and_tree() {
    let t0 = Instant::now();
    let s = setup("t2");
    let policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let out = s.client.scratch().join("out");
    let file = CopySpec::new(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let tree =
        CopySpec::new(srv.port(), s.data.share_path("tree"), out.join("tree")).recursive(true);
    // a stray file in the destination, to be purged
    std::fs::create_dir_all(out.join("tree/sub")).unwrap();
    std::fs::write(out.join("tree/sub/stray.txt"), b"purge me\n").unwrap();
    let run = cf_agent_copies(&s.client, &[file, tree]).unwrap();
    eprintln!("[interop_lab] t2: cf-agent run took {:?}", run.elapsed);
    assert!(
        run.outcomes.iter().all(|o| o.ok()),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    run.assert_contains("TLS version negotiated:  TLSv1.3");
    trees_equal(&s.data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    trees_equal(&s.data.share.join("tree"), &out.join("tree")).unwrap();
    // second run: everything kept, nothing repaired
    let file = CopySpec::new(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let again = cf_agent_copy(&s.client, &file).unwrap();
    assert_eq!(
        again.outcomes[0],
        CopyOutcome {
            kept: true,
            ..Default::default()
        },
        "{}",
        again.describe()
    );
    report("t2_cf_agent_copies_file_and_tree", t0);
}

#[test]
fn t3_missing_then_good_on_one_cached_connection() {
    let t0 = Instant::now();
    let s = setup("t3");
    let policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let out = s.client.scratch().join("out");
    let missing = CopySpec::new(
        srv.port(),
        s.data.share_path("no-such-file.txt"),
        out.join("missing.txt"),
    );
    let good = CopySpec::new(
        srv.port(),
        s.data.share_path("hello.txt"),
        out.join("hello.txt"),
    );
    let mark = srv.log_mark();
    let run = cf_agent_copies(&s.client, &[missing, good]).unwrap();
    assert!(srv.wait_for_log("Closing connection", Duration::from_secs(5)));
    let log = srv.log_since(mark);
    eprintln!("[interop_lab] t3: outcomes {:?}", run.outcomes);
    assert!(
        run.outcomes[0].failed && !run.outcomes[0].repaired,
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert!(
        run.outcomes[1].repaired && !run.outcomes[1].failed,
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    assert!(!out.join("missing.txt").exists());
    trees_equal(&s.data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    assert!(log.contains("Failed to canonicalise filename"), "{log}");
    // the server's story of this run, normalized (comparable with rcf-serverd's)
    let story: Vec<String> = parse_log(&log)
        .iter()
        .filter(|l| l.peer.is_some() && (l.level == "info" || l.message.starts_with("Received:")))
        .map(LogLine::key)
        .collect();
    eprintln!("[interop_lab] t3: server story: {story:#?}");
    assert_eq!(
        story.first().map(String::as_str),
        Some("info: Accepting connection"),
        "{story:?}"
    );
    assert_eq!(
        story.last().map(String::as_str),
        Some("info: Closing connection, terminating thread"),
        "{story:?}"
    );
    let accepts = grep(&log, "Accepting connection").len();
    let closes = grep(&log, "Closing connection").len();
    eprintln!(
        "[interop_lab] t3: server saw {accepts} connection(s), {closes} close(s) for the run"
    );
    assert_eq!(accepts, 1, "expected one cached connection:\n{log}");
    report("t3_missing_then_good_on_one_cached_connection", t0);
}

#[test]
fn t4_cf_runagent_exec() {
    let t0 = Instant::now();
    let s = setup("t4");
    let script = CfrunScript::write(&s.server.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let mut policy = ServerPolicy::new(0);
    policy.cfruncommand = Some(sp.clone());
    policy.allowusers = vec!["root".into()];
    policy.access.push(AccessRule::admit_loopback(sp.clone()));
    policy.roles.push(("rcflab_.*".into(), vec!["root".into()]));
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let hp = srv.host_port();
    s.server.trust(&s.client, "root").unwrap();
    // cf-runagent never trusts a new server key by itself...
    let untrusted = cf_runagent(&s.client, &["-H", &hp], None).unwrap();
    eprintln!(
        "[interop_lab] t4: untrusted server, exit {:?}:\n{}",
        untrusted.code(),
        untrusted.output
    );
    // ...unless -i and the user answers yes
    let interactive = cf_runagent(&s.client, &["-i", "-H", &hp], Some("yes\n")).unwrap();
    eprintln!(
        "[interop_lab] t4: -i + yes, exit {:?}:\n{}",
        interactive.code(),
        interactive.output
    );
    eprintln!(
        "[interop_lab] t4: client trusts {:?}",
        s.client.trusted_keys()
    );
    untrusted.assert_contains("TRUST FAILED, server presented untrusted key");
    assert_eq!(untrusted.code(), Some(255), "{}", untrusted.describe());
    interactive.assert_contains("Do you want to accept one on trust? (yes/no)");
    interactive.assert_contains("(exit code: 0)");
    let srv_id = s.server.key_id().unwrap();
    assert_eq!(s.client.trusted_keys(), vec![format!("root-{srv_id}.pub")]);
    s.client.untrust_all();
    s.client.trust(&s.server, "root").unwrap();
    let before = script.invocations().len();
    let run = cf_runagent(&s.client, &["-H", &hp], None).unwrap();
    run.assert_contains("(exit code: 0)");
    eprintln!("[interop_lab] t4: cf-runagent took {:?}", run.elapsed);
    run.assert_contains(&format!("cf-serverd executing cfruncommand: {sp}"));
    run.assert_contains("rcflab cfruncommand ran with args:");
    assert!(run.success(), "{}", run.describe());
    let run2 = cf_runagent(&s.client, &["-H", &hp, "-D", "rcflab_one,rcflab_two"], None).unwrap();
    run2.assert_contains("(exit code: 0)");
    let inv = script.invocations();
    eprintln!("[interop_lab] t4: cfruncommand argv: {inv:?}");
    let inv = &inv[before..];
    assert_eq!(inv.len(), 2, "{inv:?}");
    assert!(inv[0].is_empty(), "plain EXEC passes no args: {inv:?}");
    assert_eq!(
        inv[1],
        vec!["-D".to_string(), "rcflab_one,rcflab_two".to_string()],
        "{inv:?}"
    );
    // a class not granted by roles is refused
    let denied = cf_runagent(&s.client, &["-H", &hp, "-D", "other_class"], None).unwrap();
    denied.assert_contains("EXEC denied role activation");
    eprintln!(
        "[interop_lab] t4: denied cf-runagent exit code {:?}",
        denied.code()
    );
    assert!(srv.wait_for_log("Access denied to: other_class", Duration::from_secs(5)));
    assert_eq!(script.invocations().len(), before + 2);
    report("t4_cf_runagent_exec", t0);
}

#[test]
fn t5_classic_protocol_copy() {
    let t0 = Instant::now();
    let s = setup("t5");
    let mut policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    policy.allowlegacyconnects = vec!["127.0.0.1".into()];
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let dest = s.client.scratch().join("out/hello.txt");
    let spec = CopySpec::new(srv.port(), s.data.share_path("hello.txt"), &dest).protocol("classic");
    let run = cf_agent_copy(&s.client, &spec).unwrap();
    assert!(
        run.outcomes[0].ok(),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    trees_equal(&s.data.share.join("hello.txt"), &dest).unwrap();
    let log = srv.log();
    assert!(
        log.contains("Peeked CAUTH in TCP stream, considering the protocol as Classic"),
        "{log}"
    );
    report("t5_classic_protocol_copy", t0);
}

#[test]
fn t6_ipv6_loopback_server() {
    let t0 = Instant::now();
    let s = setup("t6");
    let mut policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    policy.bind = "::1".into();
    let srv = RealServer::start(&s.server, &policy).unwrap();
    assert!(srv.host_port().starts_with("[::1]:"));
    let run = cf_net(&s.client, &srv.host_port(), &["connect"]).unwrap();
    run.assert_contains("Connected & authenticated successfully");
    let dest = s.client.scratch().join("out/seq.txt");
    let mut spec = CopySpec::new(srv.port(), s.data.share_path("seq.txt"), &dest);
    spec.server = "::1".into();
    let run = cf_agent_copy(&s.client, &spec).unwrap();
    assert!(
        run.outcomes[0].ok(),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    trees_equal(&s.data.share.join("seq.txt"), &dest).unwrap();
    assert!(srv.log().contains("::1>"), "{}", srv.log());
    report("t6_ipv6_loopback_server", t0);
}

#[test]
fn t7_denied_path_and_untrusted_key() {
    let t0 = Instant::now();
    let s = setup("t7");
    let policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let dest = s.client.scratch().join("out/secret.txt");
    let secret = s
        .data
        .secret
        .join("secret.txt")
        .to_string_lossy()
        .into_owned();
    let spec = CopySpec::new(srv.port(), secret.as_str(), &dest);
    let run = cf_agent_copy(&s.client, &spec).unwrap();
    eprintln!(
        "[interop_lab] t7: denied copy outcome {:?}",
        run.outcomes[0]
    );
    assert!(
        !run.outcomes[0].ok() && !dest.exists(),
        "{:?}\n{}",
        run.outcomes,
        run.describe()
    );
    run.assert_contains("Unspecified server refusal");
    assert!(
        srv.wait_for_log(
            &format!("access denied to STAT: {secret}"),
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    srv.stop();

    // a server trusting nobody: a client key it does not know is dropped
    s.server.untrust_all();
    let mut policy = ServerPolicy::new(0).admit(s.data.share_path(""));
    policy.trustkeysfrom.clear();
    let srv = RealServer::start(&s.server, &policy).unwrap();
    let run = cf_net(&s.client, &srv.host_port(), &["connect"]).unwrap();
    eprintln!(
        "[interop_lab] t7: untrusted cf-net exit code {:?}",
        run.code()
    );
    assert!(
        !run.contains("Connected & authenticated successfully"),
        "{}",
        run.describe()
    );
    run.assert_contains("Failed to connect to");
    assert!(
        srv.wait_for_log(
            "TRUST FAILED, peer presented an untrusted key, dropping connection!",
            Duration::from_secs(5)
        ),
        "{}",
        srv.log()
    );
    report("t7_denied_path_and_untrusted_key", t0);
}

fn pid_alive(pid: u32) -> bool {
    // a zombie is dead for our purposes
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn t8_server_stopped_when_test_panics() {
    let t0 = Instant::now();
    let wd = Workdir::new("t8").unwrap();
    let pid = std::sync::Mutex::new(0u32);
    let kept = std::sync::Mutex::new(std::path::PathBuf::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let inner = Workdir::new("t8-inner").unwrap();
        *kept.lock().unwrap() = inner.path().to_path_buf();
        let srv = RealServer::start(&wd, &ServerPolicy::new(0)).unwrap();
        *pid.lock().unwrap() = srv.pid();
        panic!("simulated test failure");
    }));
    assert!(r.is_err());
    let pid = *pid.lock().unwrap();
    assert!(
        pid != 0 && !pid_alive(pid),
        "cf-serverd {pid} survived the panic"
    );
    // a work dir dropped while panicking is kept for post-mortem
    let kept = kept.lock().unwrap().clone();
    assert!(kept.exists(), "{} not kept", kept.display());
    std::fs::remove_dir_all(kept.parent().unwrap()).unwrap();
    report("t8_server_stopped_when_test_panics", t0);
}

#[test]
fn t9_bad_policy_is_refused_before_start() {
    let wd = Workdir::new("t9").unwrap();
    let mut policy = ServerPolicy::new(0);
    policy.extra_bundles = "bundle server broken {\n access: \"/x\" admit_ips => ;\n}\n".into();
    let e = RealServer::start(&wd, &policy).unwrap_err().to_string();
    assert!(e.contains("does not validate"), "{e}");
}

#[test]
fn t10_tool_timeout_kills_the_process_group() {
    let wd = Workdir::new("t10").unwrap();
    let pidfile = wd.scratch().join("bg.pid");
    let script = format!("sleep 30 & echo $! > {}; sleep 30", pidfile.display());
    let t0 = Instant::now();
    let e = run_tool(
        &wd,
        std::path::Path::new("/bin/sh"),
        &["-c", &script],
        None,
        Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(matches!(e, LabError::Timeout { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let bg: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !pid_alive(bg),
        "background child {bg} of the timed-out tool survived"
    );
}

#[test]
fn t11_every_policy_field_is_accepted_by_the_real_server() {
    let t0 = Instant::now();
    let s = setup("t11");
    let script = CfrunScript::write(&s.server.scratch()).unwrap();
    let mut p = s.policy();
    p.denyconnects = vec!["192.0.2.99".into()];
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    p.allowusers = vec!["root".into(), "nobody".into()];
    p.allowciphers = Some("AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384".into());
    p.allowtlsversion = Some("1.2".into());
    p.cfruncommand = Some(script.path.to_string_lossy().into_owned());
    p.maxconnections = Some(50);
    p.extra_control = "  logallconnections => \"true\";\n".into();
    let cli_id = s.client.key_id().unwrap();
    p.access.push(AccessRule {
        admit_keys: vec![cli_id.clone()],
        deny_hostnames: vec!["nowhere.invalid".into()],
        shortcut: Some("hello".into()),
        handle: Some("rcflab_hello".into()),
        ifencrypted: Some(false),
        maproot: vec!["127.0.0.1".into()],
        ..AccessRule::new(s.data.share_path("hello.txt"))
    });
    p.access.push(AccessRule {
        admit_ips: vec!["127.0.0.1".into()],
        resource_type: Some("literal".into()),
        ..AccessRule::new("rcflab_literal")
    });
    p.access
        .push(AccessRule::deny_loopback(s.data.secret.to_string_lossy()));
    p.roles.push((".*".into(), vec!["root".into()]));
    p.extra_bundles =
        "bundle common rcflab_extra\n{\n  vars:\n    \"x\" string => \"y\";\n}\n".into();
    let srv = RealServer::start(&s.server, &p).unwrap();
    let log = srv.log();
    for needle in [
        "Setting cipher list for TLS connections to: AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384",
        "Setting minimum acceptable TLS version: 1.2",
        "IP: 192.0.2.99",
        "USER: nobody",
    ] {
        assert!(log.contains(needle), "missing {needle:?} in\n{log}");
    }
    // the shortcut works: copy "hello" (TLS resolves shortcuts)
    let dest = s.out("hello-by-shortcut.txt");
    let run = cf_agent_copy(&s.client, &CopySpec::new(srv.port(), "hello", &dest)).unwrap();
    eprintln!(
        "[interop_lab] t11: copy by shortcut outcome {:?}",
        run.outcomes[0]
    );
    assert!(run.outcomes[0].ok(), "{}\n{}", run.describe(), srv.log());
    trees_equal(&s.data.share.join("hello.txt"), &dest).unwrap();
    report("t11_every_policy_field_is_accepted_by_the_real_server", t0);
}

#[test]
fn t12_server_outlives_the_thread_that_started_it() {
    let t0 = Instant::now();
    let s = setup("t12");
    let policy = s.policy();
    let srv = std::thread::scope(|sc| {
        sc.spawn(|| RealServer::start(&s.server, &policy).unwrap())
            .join()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(srv.is_running(), "{}", srv.log());
    let run = cf_net(&s.client, &srv.host_port(), &["connect"]).unwrap();
    run.assert_contains("Connected & authenticated successfully");
    let pid = srv.pid();
    drop(srv);
    assert!(!pid_alive(pid));
    report("t12_server_outlives_the_thread_that_started_it", t0);
}

/// Manual check: run with `--ignored manual_hang_with_a_server`, SIGKILL
/// the test binary, and see the cf-serverd it started die with it.
#[test]
#[ignore = "manual: SIGKILL the test binary while it hangs"]
fn manual_hang_with_a_server() {
    let wd = Workdir::new("hang").unwrap();
    let srv = RealServer::start(&wd, &ServerPolicy::new(0)).unwrap();
    eprintln!("manual_hang_with_a_server: cf-serverd pid {}", srv.pid());
    std::thread::sleep(Duration::from_secs(600));
}
