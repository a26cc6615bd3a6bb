//! EXEC over the classic protocol: the real cf-runagent 3.21 (its policy
//! saying `protocol_version => "classic"`) and `rcf-agent runagent
//! --protocol classic` against the real cf-serverd 3.21 and rcf-serverd,
//! both with `allowlegacyconnects` and the same policy. Each case must give
//! the same exit code, the same EXEC reply lines and the same argv on every
//! pairing. Loopback only; fails when the CFEngine binaries are missing.

use rcf_conformance::lab::*;

/// After [`BASIC_EXEC_CASES`]: `-s` with a class the server does not have.
const SELECT_ELSEWHERE: ExecCase = ExecCase {
    name: "selected class not defined on the server",
    args: &["-s", "no_such_class_here"],
    argv: None,
    says: "nothing relevant to do here",
};

/// cf-runagent's policy: talk classic.
const CLASSIC_RUNAGENT: &str = "body common control\n{\n  bundlesequence => { \"rcflab_noop\" };\n  protocol_version => \"classic\";\n}\nbundle agent rcflab_noop\n{\n  vars:\n    \"noop\" string => \"noop\";\n}\n";

fn policy(script: &str, users: &[&str]) -> ServerPolicy {
    let mut p = ServerPolicy::new(0);
    p.allowlegacyconnects = vec!["127.0.0.1".into()];
    p.cfruncommand = Some(script.into());
    p.allowusers = users.iter().map(|u| u.to_string()).collect();
    p.access.push(AccessRule::admit_loopback(script));
    p.roles.push(("role1".into(), vec!["root".into()]));
    p
}

/// Run `who` with `args` (answering its trust prompt with `stdin`).
fn invoke(cli: &Workdir, who: Hailer, args: &[&str], stdin: Option<&str>) -> ToolRun {
    match who {
        Hailer::CfRunagent => {
            let pol = cli.inputs().join("classic-runagent.cf");
            std::fs::write(&pol, CLASSIC_RUNAGENT).unwrap();
            let pol = pol.to_string_lossy().into_owned();
            let mut a = vec!["-f", pol.as_str()];
            a.extend_from_slice(args);
            cf_runagent(cli, &a, stdin).unwrap()
        }
        Hailer::RcfAgent => {
            let bin = rcf_binary("rcf-agent").unwrap();
            let wdp = cli.path().to_string_lossy().into_owned();
            let mut a = vec![
                "--workdir",
                wdp.as_str(),
                "runagent",
                "--protocol",
                "classic",
            ];
            a.extend_from_slice(args);
            run_tool(cli, &bin, &a, stdin, TOOL_TIMEOUT).unwrap()
        }
    }
}

/// First contact of `who` with `hp`, accepting the server key with `-i`
/// (cf-runagent's `trustkey` control is not read: only `-i` trusts). The
/// selected class is defined nowhere, so nothing runs.
fn first_contact(cli: &Workdir, hp: &str, who: Hailer) {
    let run = invoke(
        cli,
        who,
        &["-i", "-H", hp, "-s", "rcflab_nowhere"],
        Some("yes\n"),
    );
    assert!(
        !run.contains("Failed to connect"),
        "{who:?} -> {hp}: {}",
        run.describe()
    );
}

fn hail(cli: &Workdir, hp: &str, script: &CfrunScript, who: Hailer, c: &ExecCase) -> ExecOutcome {
    hail_case(c, hp, script, |args| invoke(cli, who, args, None))
}

/// `lines` with the host name of `Hello <host> (<ip>)` blanked.
fn hello_host(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match (l.find("Hello "), l.find(" (")) {
            (Some(a), Some(b)) if a + 6 <= b => format!("{}Hello _{}", &l[..a], &l[b..]),
            _ => l.clone(),
        })
        .collect()
}

/// A real and an rcf server (and their workdirs, which must outlive them)
/// with `p`, keys exchanged with `cli` both ways. Both serve one host key:
/// a classic client remembers one server key per IP, and both listen on
/// 127.0.0.1.
fn servers(tag: &str, cli: &Workdir, p: &ServerPolicy) -> (RealServer, RcfServer, [Workdir; 2]) {
    let real_wd = Workdir::new(&format!("xclassic-{tag}-real")).unwrap();
    let rcf_wd = Workdir::new(&format!("xclassic-{tag}-rcf")).unwrap();
    real_wd.cf_key().unwrap();
    std::fs::create_dir_all(rcf_wd.ppkeys()).unwrap();
    std::fs::copy(real_wd.privkey_path(), rcf_wd.privkey_path()).unwrap();
    std::fs::copy(real_wd.pubkey_path(), rcf_wd.pubkey_path()).unwrap();
    for wd in [&real_wd, &rcf_wd] {
        cli.trust(wd, "root").unwrap();
        wd.trust(cli, "root").unwrap();
    }
    // A classic cf-runagent finds the server key through lastseen by IP;
    // here 127.0.0.1 is also the client, whose own key it finds there (and
    // no file for it), so it falls back to the old-style `root-<ip>.pub`.
    std::fs::copy(
        real_wd.pubkey_path(),
        cli.ppkeys().join("root-127.0.0.1.pub"),
    )
    .unwrap();
    let real = RealServer::start(&real_wd, p).unwrap();
    let ours = RcfServer::start(&rcf_wd, p).unwrap();
    for hp in [real.host_port(), ours.host_port()] {
        first_contact(cli, &hp, Hailer::CfRunagent);
        first_contact(cli, &hp, Hailer::RcfAgent);
    }
    (real, ours, [real_wd, rcf_wd])
}

#[test]
fn classic_exec_cases_match_the_real_server() {
    require_cfengine().unwrap();
    let cli = Workdir::new("xclassic-cli").unwrap();
    cli.cf_key().unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let (real, ours, _wds) = servers("ok", &cli, &policy(&sp, &["root"]));
    for c in BASIC_EXEC_CASES.iter().chain([&SELECT_ELSEWHERE]) {
        let want = hail(&cli, &real.host_port(), &script, Hailer::CfRunagent, c);
        match c.argv {
            Some(a) => assert_eq!(
                want.2,
                Some(a.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                "{}: real cf-serverd ran otherwise",
                c.name
            ),
            None => assert_eq!(want.2, None, "{}: must not run", c.name),
        }
        let got = hail(&cli, &ours.host_port(), &script, Hailer::CfRunagent, c);
        assert_eq!(
            got,
            want,
            "{}: cf-runagent to rcf-serverd\n{}",
            c.name,
            ours.log()
        );
        // rcf-agent claims another host name in CAUTH (the server echoes
        // it in `Hello`), so it is compared with itself across servers,
        // and with cf-runagent on everything else.
        let theirs = hail(&cli, &real.host_port(), &script, Hailer::RcfAgent, c);
        let mine = hail(&cli, &ours.host_port(), &script, Hailer::RcfAgent, c);
        assert_eq!(
            mine,
            theirs,
            "{}: rcf-agent to rcf-serverd\n{}",
            c.name,
            ours.log()
        );
        assert_eq!(
            (theirs.0, hello_host(&theirs.1), theirs.2),
            (want.0, hello_host(&want.1), want.2),
            "{}: rcf-agent and cf-runagent to the real cf-serverd",
            c.name
        );
    }
    assert!(
        ours.log()
            .contains(&format!("cf-serverd executing cfruncommand: {sp} -D role1")),
        "{}",
        ours.log()
    );
}

#[test]
fn classic_exec_user_not_in_allowusers_is_refused_by_both() {
    require_cfengine().unwrap();
    let cli = Workdir::new("xclassic-cli2").unwrap();
    cli.cf_key().unwrap();
    let script = CfrunScript::write(&cli.scratch()).unwrap();
    let sp = script.path.to_string_lossy().into_owned();
    let (real, ours, _wds) = servers("users", &cli, &policy(&sp, &["someone"]));
    let c = ExecCase {
        name: "user not in allowusers",
        args: &[],
        argv: None,
        says: "Unspecified server refusal",
    };
    let want = hail(&cli, &real.host_port(), &script, Hailer::CfRunagent, &c);
    assert_eq!(want.2, None, "the real cf-serverd ran the command");
    assert_eq!(want.0, Some(255), "{want:?}");
    for (who, hp) in [
        (Hailer::CfRunagent, ours.host_port()),
        (Hailer::RcfAgent, real.host_port()),
        (Hailer::RcfAgent, ours.host_port()),
    ] {
        assert_eq!(hail(&cli, &hp, &script, who, &c), want, "{who:?} -> {hp}");
    }
    for srv_log in [real.log(), ours.log()] {
        assert!(
            srv_log.contains("EXEC denied due to not allowed user: root"),
            "{srv_log}"
        );
    }
}
