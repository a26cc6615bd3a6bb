//! rcf-agent `--protocol classic` against the real cf-serverd 3.21 and
//! rcf-serverd, both with `allowlegacyconnects`. Loopback only; fails when
//! the CFEngine binaries are missing.

use rcf_conformance::lab::*;

fn against(server_is_real: bool) {
    require_cfengine().unwrap();
    let tag = if server_is_real { "real" } else { "rcf" };
    let srv_wd = Workdir::new(&format!("aclassic-{tag}-srv")).unwrap();
    let cli = Workdir::new(&format!("aclassic-{tag}-cli")).unwrap();
    srv_wd.cf_key().unwrap();
    cli.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let mut p = ServerPolicy::new(0).admit(data.share_path(""));
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    let (hp, _real, _ours);
    if server_is_real {
        let s = RealServer::start(&srv_wd, &p).unwrap();
        hp = s.host_port();
        _real = Some(s);
        _ours = None;
    } else {
        let s = RcfServer::start(&srv_wd, &p).unwrap();
        hp = s.host_port();
        _ours = Some(s);
        _real = None;
    }
    let out = cli.scratch().join("out");
    let o = |n: &str| out.join(n).to_string_lossy().into_owned();
    // First contact: the key is unknown, so --trustkey is needed (SAUTH n).
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            &data.share_path("hello.txt"),
            &o("hello.txt"),
        ],
    )
    .unwrap();
    assert!(
        !run.success(),
        "{tag}: an unknown classic server key must need --trustkey\n{}",
        run.describe()
    );
    run.assert_contains("trustkey = false");
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--trustkey",
            &data.share_path("hello.txt"),
            &o("hello.txt"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    let srv_id = srv_wd.key_id().unwrap();
    assert!(
        cli.trusted_keys().contains(&format!("root-{srv_id}.pub")),
        "{tag}: {:?}",
        cli.trusted_keys()
    );
    // Known key now (SAUTH y): encrypted, no --trustkey.
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--encrypt",
            &data.share_path("big.bin"),
            &o("big.bin"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("big.bin"), &out.join("big.bin")).unwrap();
    // A recursive tree with digest compare, encrypted.
    let run = rcf_agent(
        &cli,
        &[
            "copy",
            "-H",
            &hp,
            "--protocol",
            "classic",
            "--encrypt",
            "--recurse",
            "--compare",
            "digest",
            &data.share_path("tree"),
            &o("tree"),
        ],
    )
    .unwrap();
    assert!(run.success(), "{tag}: {}", run.describe());
    trees_equal(&data.share.join("tree"), &out.join("tree")).unwrap();
}

#[test]
fn rcf_agent_classic_against_the_real_cf_serverd() {
    against(true);
}

#[test]
fn rcf_agent_classic_against_rcf_serverd() {
    against(false);
}

/// `rcf-agent net --protocol classic` and `runagent --protocol classic`
/// against the real cf-serverd: every net subcommand prints what the real
/// cf-net (over TLS, to the same server) prints, EXEC runs the
/// cfruncommand with the classes asked for, and the real cf-runagent over
/// classic gets the same EXEC lines and exit codes.
#[test]
fn rcf_agent_net_and_runagent_classic_against_the_real_cf_serverd() {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("aclassic-net-srv").unwrap();
    let cli = Workdir::new("aclassic-net-cli").unwrap();
    srv_wd.cf_key().unwrap();
    cli.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let mut p = ServerPolicy::new(0).admit(data.share_path(""));
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    p.cfruncommand = Some(sp.clone());
    p.allowusers = vec!["root".into()];
    p.access.push(AccessRule::admit_loopback(sp.clone()));
    p.roles.push(("role1".into(), vec!["root".into()]));
    let srv = RealServer::start(&srv_wd, &p).unwrap();
    let hp = srv.host_port();
    let net = |args: &[&str]| {
        let mut a = vec!["net", "--protocol", "classic", "-H", hp.as_str()];
        a.extend_from_slice(args);
        rcf_agent(&cli, &a).unwrap()
    };
    // connect (cf-net trusts the server key; over classic it is remembered).
    let ours = net(&["connect"]);
    assert_eq!(ours.code(), Some(0), "{}", ours.describe());
    let real = cf_net(&cli, &hp, &["connect"]).unwrap();
    assert_eq!(
        ours.result_lines(),
        real.result_lines(),
        "connect\n{}\n{}",
        ours.describe(),
        real.describe()
    );
    assert_eq!(
        ours.result_lines(),
        vec![format!("Connected & authenticated successfully to '{hp}'")]
    );
    // stat: a file, a directory, a missing path.
    for (path, code) in [
        (data.share_path("hello.txt"), 0),
        (data.share_path("tree"), 0),
        (data.share_path("missing"), 1),
    ] {
        let ours = net(&["stat", &path]);
        let real = cf_net(&cli, &hp, &["stat", &path]).unwrap();
        assert_eq!(ours.code(), Some(code), "{}", ours.describe());
        assert_eq!(
            ours.result_lines(),
            real.result_lines(),
            "stat {path}\n{}\n{}",
            ours.describe(),
            real.describe()
        );
    }
    // opendir: the same names in the same order.
    let tree = data.share_path("tree");
    let ours = net(&["opendir", &tree]);
    let real = cf_net(&cli, &hp, &["opendir", &tree]).unwrap();
    assert_eq!(ours.code(), Some(0), "{}", ours.describe());
    assert_eq!(
        ours.result_lines(),
        real.result_lines(),
        "opendir\n{}\n{}",
        ours.describe(),
        real.describe()
    );
    assert!(ours.result_lines().contains(&"a.txt".to_string()));
    // get: the same bytes (a plain GET over several 2048-byte blocks).
    let dest = cli.scratch().join("big.classic");
    let ours = net(&[
        "get",
        &data.share_path("big.bin"),
        "-o",
        &dest.to_string_lossy(),
    ]);
    assert_eq!(ours.code(), Some(0), "{}", ours.describe());
    trees_equal(&data.share.join("big.bin"), &dest).unwrap();
    // runagent over classic: EXEC in clear, classes after it.
    let runagent = |role: &str| {
        let a = ["runagent", "--protocol", "classic", "-H", &hp, "-D", role];
        rcf_agent(&cli, &a).unwrap()
    };
    let before = script.invocations().len();
    let run = runagent("role1");
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run.assert_contains("(exit code: 0)");
    run.assert_contains("rcflab cfruncommand ran with args: -D role1");
    let inv = script.invocations();
    assert_eq!(inv.len(), before + 1, "{}", run.describe());
    assert_eq!(inv[before], vec!["-D".to_string(), "role1".to_string()]);
    // A role the server does not grant: refused, nothing runs, 255.
    let run = runagent("other");
    assert_eq!(run.code(), Some(255), "{}", run.describe());
    assert_eq!(script.invocations().len(), before + 1);
    // The real cf-runagent over classic (protocol_version in its policy),
    // trusting the server with -i: the same EXEC lines and exit codes.
    let pol = cli.inputs().join("runagent-classic.cf");
    std::fs::write(
        &pol,
        "body common control\n{\n  bundlesequence => { \"noop\" };\n  protocol_version => \"classic\";\n}\nbundle agent noop\n{\n  vars:\n    \"x\" string => \"x\";\n}\n",
    )
    .unwrap();
    let pol = pol.to_string_lossy().into_owned();
    for (role, code) in [("role1", 0), ("other", 255)] {
        let real = cf_runagent(
            &cli,
            &["-f", &pol, "-i", "-H", &hp, "-D", role],
            Some("yes\n"),
        )
        .unwrap();
        let ours = runagent(role);
        let exec_lines = |r: &ToolRun| -> Vec<String> {
            r.output
                .lines()
                .filter(|l| l.contains("> "))
                .filter(|l| {
                    l.contains("(exit code")
                        || l.contains("EXEC denied")
                        || l.contains("cfruncommand ran")
                })
                .map(str::to_string)
                .collect()
        };
        assert_eq!(real.code(), Some(code), "{}", real.describe());
        assert_eq!(ours.code(), Some(code), "{}", ours.describe());
        assert_eq!(
            exec_lines(&ours),
            exec_lines(&real),
            "{}\n{}",
            real.describe(),
            ours.describe()
        );
    }
}
