//! `rcf-agent net` as cf-net 3.21: the same command lines through the real
//! cf-net and rcf-agent, against the real cf-serverd and rcf-serverd, give
//! the same answers: host lists, the policy-server default, `get -j N`
//! with `%d`, `--tls-version`/`--ciphers` (cf-net's `-t`/`-c`), and a
//! connect timeout against a silent server. Exit codes differ only where
//! rcf-agent documents it: cf-net exits 0 after a failed command, rcf-agent
//! 1 (3 when a host was not reached). Loopback only; fails when a peer is
//! missing.

use std::time::{Duration, Instant};

use rcf_conformance::lab::*;

/// Run the real cf-net with exactly `args` (no `-H` added).
fn cf_net_raw(cli: &Workdir, args: &[&str]) -> ToolRun {
    cli.cf_key().unwrap();
    let net = cli.bins().net.clone();
    run_tool(cli, &net, args, None, TOOL_TIMEOUT).unwrap()
}

/// `rcf-agent net <args>`.
fn rcf_net(cli: &Workdir, args: &[&str]) -> ToolRun {
    let mut a = vec!["net"];
    a.extend_from_slice(args);
    rcf_agent(cli, &a).unwrap()
}

/// Both tools with the same arguments; their answers must be equal.
/// Returns (cf-net, rcf-agent).
#[track_caller]
fn same_answers(cli: &Workdir, args: &[&str]) -> (ToolRun, ToolRun) {
    let real = cf_net_raw(cli, args);
    let ours = rcf_net(cli, args);
    assert_eq!(
        ours.result_lines(),
        real.result_lines(),
        "{args:?}\n{}\n{}",
        real.describe(),
        ours.describe()
    );
    (real, ours)
}

#[test]
fn net_answers_as_cf_net_for_host_lists_defaults_jobs_and_tls_options() {
    let (srv_wd, cli) = agent_workdirs("anet").unwrap();
    let rcf_wd = Workdir::new("anet-rcf").unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let mut p = ServerPolicy::new(0).admit(data.share_path(""));
    // get -j opens N connections at once.
    p.allowallconnects = vec!["127.0.0.1".into()];
    let real = RealServer::start(&srv_wd, &p).unwrap();
    let ours = RcfServer::start(&rcf_wd, &p).unwrap();
    let (r, o) = (real.host_port(), ours.host_port());
    let dead = format!("127.0.0.1:{}", free_port());

    // A host list: each host in turn, cf-net's lines, a dead one included.
    let list = format!("{r},{o},{dead}");
    let (cf, rc) = same_answers(&cli, &["-H", &list, "connect"]);
    assert_eq!(
        rc.result_lines(),
        vec![
            format!("Connected & authenticated successfully to '{r}'"),
            format!("Connected & authenticated successfully to '{o}'"),
            format!("Failed to connect to '{dead}'"),
        ]
    );
    assert_eq!(cf.code(), Some(0), "cf-net exits 0 whatever happened");
    assert_eq!(
        rc.code(),
        Some(3),
        "a host not reached: 3\n{}",
        rc.describe()
    );
    // Repeated -H: cf-net uses only the last one.
    let (_, rc) = same_answers(&cli, &["-H", &r, "-H", &o, "connect"]);
    assert_eq!(rc.code(), Some(0));
    assert_eq!(rc.result_lines().len(), 1, "{}", rc.describe());

    // stat over the list: file, directory, missing (host as written).
    for path in ["hello.txt", "tree", "missing"] {
        let path = data.share_path(path);
        let (_, rc) = same_answers(&cli, &["-H", &format!("{r},{o}"), "stat", &path]);
        let want = if path.ends_with("missing") { 1 } else { 0 };
        assert_eq!(rc.code(), Some(want), "{}", rc.describe());
    }
    // opendir: same names, same order.
    let (_, rc) = same_answers(&cli, &["-H", &o, "opendir", &data.share_path("tree")]);
    assert!(rc.result_lines().contains(&"a.txt".to_string()));

    // No -H and no policy_server.dat: cf-net's error, exit 1 for both.
    let _ = std::fs::remove_file(cli.path().join("policy_server.dat"));
    let (cf, rc) = same_answers(&cli, &["connect"]);
    assert_eq!(
        rc.result_lines(),
        vec!["Error: no host name (and no policy_server.dat)".to_string()]
    );
    assert_eq!((cf.code(), rc.code()), (Some(1), Some(1)));
    // The policy server by default, in policy_server.dat's own form.
    std::fs::write(cli.path().join("policy_server.dat"), format!("{o}\n")).unwrap();
    let (_, rc) = same_answers(&cli, &["stat", &data.share_path("hello.txt")]);
    assert_eq!(rc.code(), Some(0), "{}", rc.describe());
    assert_eq!(
        rc.result_lines(),
        vec![format!(
            "{o}:'{}' is a regular file",
            data.share_path("hello.txt")
        )]
    );

    // get -j 3: three connections at once, %d in the output name, and
    // `.N` appended without it; the files are the source's bytes.
    let big = data.share_path("big.bin");
    for (tool, dir) in [("cf-net", "j-real"), ("rcf", "j-rcf")] {
        let d = cli.scratch().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        let with_d = d.join("big-%d.bin").to_string_lossy().into_owned();
        let plain = d.join("plain.bin").to_string_lossy().into_owned();
        for out in [&with_d, &plain] {
            let args = [
                "-H",
                o.as_str(),
                "get",
                "-j",
                "3",
                big.as_str(),
                "-o",
                out.as_str(),
            ];
            let run = if tool == "cf-net" {
                cf_net_raw(&cli, &args)
            } else {
                rcf_net(&cli, &args)
            };
            assert_eq!(run.code(), Some(0), "{}", run.describe());
            assert!(run.result_lines().is_empty(), "{}", run.describe());
        }
        for name in [
            "big-0.bin",
            "big-1.bin",
            "big-2.bin",
            "plain.bin.0",
            "plain.bin.1",
            "plain.bin.2",
        ] {
            trees_equal(&data.share.join("big.bin"), &d.join(name))
                .unwrap_or_else(|e| panic!("{tool} {name}: {e}"));
        }
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 6, "{tool}: {names:?}");
    }
    // The server logs show the parallel connections (rcf-serverd).
    assert!(
        ours.log().matches("Accepting connection").count() >= 6,
        "{}",
        ours.log()
    );
    // get of a missing file: cf-net's line.
    let out = cli.scratch().join("none").to_string_lossy().into_owned();
    let (_, rc) = same_answers(
        &cli,
        &["-H", &r, "get", &data.share_path("missing"), "-o", &out],
    );
    assert_eq!(rc.code(), Some(1));
    // `-o -`: refused as cf-net 3.21 refuses it.
    let (_, rc) = same_answers(&cli, &["-H", &r, "get", &big, "-o", "-"]);
    assert_eq!(rc.code(), Some(1));

    // cf-net's --tls-version / --ciphers (its -t / -c): TLS 1.3 only, or
    // one TLS 1.3 suite, against both servers.
    for hp in [&r, &o] {
        same_answers(&cli, &["--tls-version", "1.3", "-H", hp, "connect"]);
        same_answers(
            &cli,
            &["--ciphers", "TLS_AES_256_GCM_SHA384", "-H", hp, "connect"],
        );
        let rc = rcf_net(
            &cli,
            &[
                "-t",
                "1.3",
                "-c",
                "TLS_AES_256_GCM_SHA384",
                "-H",
                hp,
                "connect",
            ],
        );
        assert_eq!(rc.code(), Some(0), "{}", rc.describe());
    }
    // A static-RSA-only list: cf-net 3.21 (OpenSSL) negotiates it with
    // cf-serverd's default allowciphers; rcf-agent refuses it by design,
    // naming the suites, without connecting.
    let rc = rcf_net(
        &cli,
        &["-c", "AES256-GCM-SHA384:AES256-SHA", "-H", &r, "connect"],
    );
    assert_eq!(rc.code(), Some(1), "{}", rc.describe());
    rc.assert_contains("AES256-GCM-SHA384, AES256-SHA are unsupported by design");
    assert!(!rc.contains("Connected & authenticated"));
}

#[test]
fn net_connect_to_a_silent_server_returns_after_the_timeout() {
    let (_srv, cli) = agent_workdirs("anet-silent").unwrap();
    // Accepts TCP (the kernel completes the handshake) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hp = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    for protocol in ["latest", "classic"] {
        let t0 = Instant::now();
        let rc = rcf_net(
            &cli,
            &[
                "--timeout",
                "2",
                "--protocol",
                protocol,
                "-H",
                &hp,
                "connect",
            ],
        );
        let took = t0.elapsed();
        assert_eq!(rc.code(), Some(3), "{protocol}: {}", rc.describe());
        assert_eq!(
            rc.result_lines(),
            vec![format!("Failed to connect to '{hp}'")],
            "{protocol}"
        );
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(15),
            "{protocol}: took {took:?} with --timeout 2"
        );
    }
    drop(silent);
}
