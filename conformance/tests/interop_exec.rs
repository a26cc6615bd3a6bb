//! EXEC: the real cf-runagent 3.21 against the real cf-serverd and against
//! rcf-serverd, case by case, with the same policy. Each case must give the
//! same exit code, the same EXEC reply lines and the same argv on both.

use rcf_conformance::lab::*;

/// After [`BASIC_EXEC_CASES`].
const MORE_CASES: &[ExecCase] = &[
    ExecCase {
        name: "several classes, all granted",
        args: &["-D", "role1,role2"],
        argv: Some(&["-D", "role1,role2"]),
        says: "(exit code: 0)",
    },
    ExecCase {
        name: "several classes, one not granted",
        args: &["-D", "role1,other"],
        argv: None,
        says: "EXEC denied role activation",
    },
    ExecCase {
        name: "repeated -D merged",
        args: &["-D", "role1", "-D", "role2"],
        argv: Some(&["-D", "role1,role2"]),
        says: "(exit code: 0)",
    },
    ExecCase {
        name: "namespaced bundle admitted",
        args: &["--remote-bundles", "ns1:deploy"],
        argv: Some(&["--bundlesequence", "ns1:deploy"]),
        says: "(exit code: 0)",
    },
    ExecCase {
        name: "other namespace refused",
        args: &["--remote-bundles", "ns2:deploy"],
        argv: None,
        says: "EXEC denied bundle activation",
    },
    ExecCase {
        name: "token with @ refused",
        args: &["-D", "role1@evil"],
        argv: None,
        says: "EXEC denied role activation",
    },
];

/// Every case, in order.
fn cases() -> Vec<&'static ExecCase> {
    BASIC_EXEC_CASES.iter().chain(MORE_CASES).collect()
}

fn policy(script: &str) -> ServerPolicy {
    let mut p = ServerPolicy::new(0);
    p.cfruncommand = Some(script.into());
    p.allowusers = vec!["root".into()];
    p.access.push(AccessRule::admit_loopback(script));
    let mut b = AccessRule::admit_loopback("ns1:.*");
    b.resource_type = Some("bundle".into());
    p.access.push(b);
    p.roles.push(("role1".into(), vec!["root".into()]));
    p.roles.push(("role2".into(), vec!["root".into()]));
    p
}

/// Run every case against `hp`; returns (exit code, EXEC lines, argv run) per case.
fn run_cases(cli: &Workdir, hp: &str, script: &CfrunScript, who: Hailer) -> Vec<ExecOutcome> {
    cases()
        .into_iter()
        .map(|c| {
            hail_case(c, hp, script, |args| match who {
                Hailer::CfRunagent => cf_runagent(cli, args, None).unwrap(),
                Hailer::RcfAgent => {
                    let mut a = vec!["runagent"];
                    a.extend_from_slice(args);
                    rcf_agent(cli, &a).unwrap()
                }
            })
        })
        .collect()
}

#[test]
fn cf_runagent_cases_match_the_real_server() {
    require_cfengine().unwrap();
    let real_wd = Workdir::new("exec-real").unwrap();
    let rcf_wd = Workdir::new("exec-rcf").unwrap();
    let cli = Workdir::new("exec-cli").unwrap();
    cli.cf_key().unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let real = RealServer::start(&real_wd, &policy(&sp)).unwrap();
    let ours = RcfServer::start(&rcf_wd, &policy(&sp)).unwrap();
    // cf-runagent never trusts a new server key: exchange keys first.
    cli.trust(&real_wd, "root").unwrap();
    cli.trust(&rcf_wd, "root").unwrap();
    let a = run_cases(&cli, &real.host_port(), &script, Hailer::CfRunagent);
    let b = run_cases(&cli, &ours.host_port(), &script, Hailer::CfRunagent);
    // rcf-agent runagent against both servers: the same outcomes again.
    let c = run_cases(&cli, &real.host_port(), &script, Hailer::RcfAgent);
    let d = run_cases(&cli, &ours.host_port(), &script, Hailer::RcfAgent);
    for (i, case) in cases().into_iter().enumerate() {
        assert_eq!(
            a[i],
            b[i],
            "{}: real cf-serverd vs rcf-serverd differ\n{}",
            case.name,
            ours.log()
        );
        assert_eq!(
            a[i], c[i],
            "{}: cf-runagent vs rcf-agent runagent differ (real server)",
            case.name
        );
        assert_eq!(
            a[i], d[i],
            "{}: cf-runagent vs rcf-agent runagent differ (rcf-serverd)",
            case.name
        );
    }
    assert!(
        ours.log().contains(&format!(
            "cf-serverd executing cfruncommand: {sp} -D role1,role2"
        )),
        "{}",
        ours.log()
    );
}

#[test]
fn exec_refused_for_user_acl_and_ip_and_deprecated_options() {
    require_cfengine().unwrap();
    let cli = Workdir::new("exec2-cli").unwrap();
    cli.cf_key().unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let variants: Vec<(&str, ServerPolicy, &str)> = vec![
        (
            "user not in allowusers",
            {
                let mut p = policy(&sp);
                p.allowusers = vec!["someone".into()];
                p
            },
            "EXEC denied due to not allowed user: root",
        ),
        (
            "no access rule for cfruncommand",
            {
                let mut p = policy(&sp);
                p.access.retain(|r| r.path != sp);
                p
            },
            "EXEC denied due to ACL for file",
        ),
        (
            "rule admits another IP only",
            {
                let mut p = policy(&sp);
                p.access.retain(|r| r.path != sp);
                let mut r = AccessRule::new(sp.clone());
                r.admit_ips = vec!["127.0.0.2".into()];
                p.access.push(r);
                p
            },
            "EXEC denied due to ACL for file",
        ),
    ];
    for (name, p, log_line) in variants {
        let wd = Workdir::new("exec2-srv").unwrap();
        let srv = RcfServer::start(&wd, &p).unwrap();
        cli.untrust_all();
        cli.trust(&wd, "root").unwrap();
        let before = script.invocations().len();
        let run = cf_runagent(&cli, &["-H", &srv.host_port()], None).unwrap();
        assert_eq!(run.code(), Some(255), "{name}: {}", run.describe());
        assert_eq!(
            script.invocations().len(),
            before,
            "{name}: the command ran"
        );
        assert!(
            srv.wait_for_log(log_line, std::time::Duration::from_secs(5)),
            "{name}: {}",
            srv.log()
        );
    }
    // cf-runagent itself refuses -o before connecting.
    let run = cf_runagent(&cli, &["-H", "127.0.0.1:1", "-o", "-Dx"], None).unwrap();
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    run.assert_contains("has been deprecated");
}

#[test]
fn rcf_agent_runagent_several_hosts_parallel_and_interactive_trust() {
    require_cfengine().unwrap();
    let cli = Workdir::new("exec3-cli").unwrap();
    cli.cf_key().unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let wd1 = Workdir::new("exec3-a").unwrap();
    let wd2 = Workdir::new("exec3-b").unwrap();
    let s1 = RcfServer::start(&wd1, &policy(&sp)).unwrap();
    let s2 = RealServer::start(&wd2, &policy(&sp)).unwrap();
    // Without -i an unknown server key is refused: nothing runs, exit 255.
    let run = rcf_agent(&cli, &["runagent", "-H", &s1.host_port()]).unwrap();
    assert_eq!(run.code(), Some(255), "{}", run.describe());
    run.assert_contains("TRUST FAILED");
    // -i asks with cf-runagent's prompt; "yes" trusts and runs.
    let bin = rcf_binary("rcf-agent").unwrap();
    let wdp = cli.path().to_string_lossy().into_owned();
    let run = run_tool(
        &cli,
        &bin,
        &["--workdir", &wdp, "runagent", "-i", "-H", &s1.host_port()],
        Some("maybe\nyes\n"),
        TOOL_TIMEOUT,
    )
    .unwrap();
    run.assert_contains("Do you want to accept one on trust? (yes/no)");
    run.assert_contains("Please reply yes or no...(maybe)");
    run.assert_contains("(exit code: 0)");
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    cli.trust(&wd2, "root").unwrap();
    // Two hosts in parallel (-b): both succeed, so no host failed: exit 0
    // (cf-runagent 3.21 would count both as failed here).
    let hosts = format!("{},{}", s1.host_port(), s2.host_port());
    let before = script.invocations().len();
    let run = rcf_agent(&cli, &["runagent", "-b", "-H", &hosts, "-D", "role1"]).unwrap();
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    assert_eq!(script.invocations().len(), before + 2);
    assert_eq!(
        run.lines_with("(exit code: 0)").len(),
        2,
        "{}",
        run.describe()
    );
    // One host refusing: exit code counts the failed host.
    let run = rcf_agent(&cli, &["runagent", "-H", &hosts, "-D", "role12"]).unwrap();
    assert_eq!(run.code(), Some(2), "{}", run.describe());
    // -b and -i together are refused as cf-runagent refuses them.
    let run = rcf_agent(&cli, &["runagent", "-b", "-i", "-H", &hosts]).unwrap();
    assert_eq!(run.code(), Some(101));
}
