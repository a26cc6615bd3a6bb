//! Issue 18's "never looser" rule against the real cf-serverd 3.21: deny
//! rules guarded by functions rcf does not evaluate (finding 2) and by hard
//! classes it has not discovered (finding 3) still deny, and invalid CIDR
//! entries are skipped as 3.21 skips them instead of refusing the policy.
//! Each request is asked of the real server with the real cf-net and of
//! rcf's decision function on the same policy: rcf must never admit what
//! 3.21 refuses, and must equal it where the expected answer is listed.

mod real_serverd;

use rcf_core::policy::Request;
use real_serverd::{free_port, header, Pair};

fn is_x86_64() -> bool {
    std::env::consts::ARCH == "x86_64"
}

/// (subdirectory, access promises for it, what 3.21 answers 127.0.0.1 for
/// a file in it; None where it depends on the host).
fn cases() -> Vec<(&'static str, &'static str, Option<bool>)> {
    vec![
        // invalid CIDR next to a valid entry: skipped, the rest admits
        (
            "a",
            r#""D/a/" admit_ips => { "127.0.0.1/33", "127.0.0.1" };"#,
            Some(true),
        ),
        // invalid CIDR alone in a deny list: 3.21 skips it and admits; rcf
        // denies (stricter, listed in SECURITY.md)
        (
            "b",
            r#""D/b/" admit_ips => { "127.0.0.1" }, deny_ips => { "127.0.0.1/33" };"#,
            Some(true),
        ),
        (
            "c",
            r#""D/c/" admit_ips => { "127.0.0.1" }, deny_ips => { "127.0.0.1/33", "127.0.0.1" };"#,
            Some(false),
        ),
        // finding 2: functions rcf does not evaluate, guarding a deny
        (
            "d",
            r#""D/d/" admit_ips => { "127.0.0.1" }; "D/d/" deny_ips => { "127.0.0.1" }, if => returnszero("/bin/true", "noshell");"#,
            Some(false),
        ),
        (
            "f",
            r#""D/f/" admit_ips => { "127.0.0.1" }; "D/f/" deny_ips => { "127.0.0.1" }, if => classify("127.0.0.1");"#,
            Some(false),
        ),
        (
            "g",
            r#""D/g/" admit_ips => { "127.0.0.1" }; "D/g/" deny_ips => { "127.0.0.1" }, if => hostinnetgroup("rcf_no_such_netgroup");"#,
            Some(true),
        ),
        // finding 3: a hard class rcf has not discovered, guarding a deny
        (
            "e",
            r#""D/e/" admit_ips => { "127.0.0.1" }; "D/e/" deny_ips => { "127.0.0.1" }, if => "x86_64";"#,
            Some(!is_x86_64()),
        ),
        (
            "h",
            r#""D/h/" admit_ips => { "127.0.0.1" }; "D/h/" deny_ips => { "127.0.0.1" }, if => "ipv4_127_0_0_1";"#,
            Some(false),
        ),
        // the same functions guarding an admit: not applied by rcf
        (
            "i",
            r#""D/i/" admit_ips => { "127.0.0.1" }, if => returnszero("/bin/true", "noshell");"#,
            Some(true),
        ),
        // a variable whose value rcf cannot compute, in a deny list
        (
            "j",
            r#""D/j/" admit_ips => { "127.0.0.1" }, deny_ips => { execresult("/bin/echo 127.0.0.1", "noshell") };"#,
            Some(false),
        ),
    ]
}

#[test]
fn unevaluable_guards_and_bad_cidrs_never_widen_against_real_cf_serverd() {
    let pair = Pair::new();
    let d = pair.data.clone();
    let port = free_port();
    let (access, paths) = pair.access_cases(
        cases()
            .into_iter()
            .map(|(dir, rules, _)| (dir, rules.to_string())),
    );
    let policy_text = format!(
        "{}bundle server acl\n{{\n  access:\n{access}}}\n",
        header(port, &[])
    );
    let policy = pair.input("promises.cf", &policy_text);
    let real = pair.real_stat(&policy, port, &paths);
    let pol = pair.rcf_load(&policy);
    let mut problems = Vec::new();
    for (((dir, _, want), real_allowed), path) in cases().iter().zip(&real).zip(&paths) {
        if let Some(w) = want {
            if w != real_allowed {
                problems.push(format!(
                    "{dir}: real cf-serverd answered {real_allowed}, expected {w}"
                ));
            }
        }
        for classic in [false, true] {
            let f = pair.facts(classic);
            let dec = pol.check(&f, Request::Path(path));
            if dec.allowed && !real_allowed {
                problems.push(format!(
                    "{dir} ({:?}): rcf admits what cf-serverd 3.21 refuses: {}",
                    f.protocol,
                    pol.explain(&dec)
                ));
            }
        }
    }
    // the stricter answers are the documented ones, nothing else
    for (dir, want) in [("a", true), ("b", false), ("g", false), ("i", false)] {
        let path = format!("{d}/{dir}/f");
        if pol.check(&pair.facts(false), Request::Path(&path)).allowed != want {
            problems.push(format!("{dir}: rcf answered {}, expected {want}", !want));
        }
    }
    for needle in [
        "returnszero",
        "classify",
        "hostinnetgroup",
        "x86_64",
        "127.0.0.1/33",
        "execresult",
    ] {
        if !pol
            .warnings
            .iter()
            .any(|w| w.message.contains(needle) && w.line > 0)
        {
            problems.push(format!("no warning with file:line naming '{needle}'"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\npolicy:\n{policy_text}",
        problems.join("\n")
    );
}

/// An access promise whose promiser rcf cannot expand (issue 18): 3.21
/// computes the path (here with `execresult`, which rcf does not run) and
/// denies it; rcf cannot know which path that is (a value may hold `..`
/// or be absolute, and the promiser is canonicalised), so the promise's
/// deny rules go into every path rule: never looser, stricter for the
/// peers they name. Against the real cf-serverd.
#[test]
fn unexpandable_promiser_denies_every_path_for_its_peers() {
    let pair = Pair::new();
    let cases = [
        // 3.21: the promiser is DATA/k/, denied
        (
            "k",
            r#""D/k/" admit_ips => { "127.0.0.1" }; "D/$(kdir)/" deny_ips => { "127.0.0.1" };"#,
            false,
        ),
        // 3.21 admits; rcf denies (stricter: the deny above could be here)
        ("l", r#""D/l/" admit_ips => { "127.0.0.1" };"#, true),
        // unresolved in 3.21 too: kept literally, so it denies nothing there
        (
            "m",
            r#""D/m/" admit_ips => { "127.0.0.1" }; "D/m/$(rcf_no_such_var)" deny_ips => { "127.0.0.1" };"#,
            true,
        ),
    ];
    let (text, paths, real, pol) = pair.decide_both(
        "",
        "    \"kdir\" string => execresult(\"/bin/echo k\", \"noshell\");\n",
        cases.iter().map(|(dir, r, _)| (*dir, r.to_string())),
    );
    let mut problems = Vec::new();
    for (((dir, _, want), real_allowed), path) in cases.iter().zip(&real).zip(&paths) {
        if want != real_allowed {
            problems.push(format!(
                "{dir}: real cf-serverd answered {real_allowed}, expected {want}"
            ));
        }
        for classic in [false, true] {
            let dec = pol.check(&pair.facts(classic), Request::Path(path));
            if dec.allowed {
                problems.push(format!(
                    "{dir} (classic {classic}): rcf admits: {}",
                    pol.explain(&dec)
                ));
            }
        }
    }
    for needle in ["$(kdir)", "$(rcf_no_such_var)"] {
        if !pol
            .warnings
            .iter()
            .any(|w| w.message.contains(needle) && w.message.contains("every path") && w.line > 0)
        {
            problems.push(format!(
                "no warning with file:line for the promiser holding {needle}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\npolicy:\n{text}",
        problems.join("\n")
    );
}

/// Bad entries in `body server control` lists (issue 18), against the real
/// cf-serverd and rcf-serverd started on the same policy and asked by the
/// real cf-net: in allowconnects, allowallconnects and trustkeysfrom they
/// are skipped and both servers serve; a bad denyconnects entry is skipped
/// by 3.21 (serves) while rcf, not knowing whom it meant, refuses every
/// connection (stricter, announced with file:line).
#[test]
fn bad_control_list_entries_skipped_and_a_bad_deny_refuses_all() {
    use rcf_conformance::lab::*;
    require_cfengine().unwrap();
    let cli = Workdir::new("nl-ctl-cli").unwrap();
    cli.cf_key().unwrap();
    let mut seen = Vec::new();
    for (label, bad_deny, want_real, want_rcf) in [
        ("allow lists", false, true, true),
        ("denyconnects", true, true, false),
    ] {
        let mut answers = Vec::new();
        for real in [true, false] {
            let wd = Workdir::new(&format!("nl-ctl-{}-{}", bad_deny, real)).unwrap();
            let data = make_data_tree(&wd.scratch().join("data")).unwrap();
            let mut p = ServerPolicy::new(0).admit(data.share_path(""));
            p.allowconnects = vec!["127.0.0.1/33".into(), "10.[".into(), "127.0.0.1".into()];
            p.allowallconnects = vec!["127.0.0.1/40".into(), "127.0.0.1".into()];
            p.trustkeysfrom = vec!["1.2.3.4/99".into(), "127.0.0.1".into()];
            if bad_deny {
                p.denyconnects = vec!["10.9.9.9".into(), "127.0.0.1/33".into()];
            }
            let kind = if real {
                ServerKind::Real
            } else {
                ServerKind::Rcf
            };
            let srv = AnyServer::start(kind, &wd, &p).unwrap();
            let hello = data.share_path("hello.txt");
            let run = cf_net(&cli, &srv.host_port(), &["stat", &hello]).unwrap();
            let ok = run.contains("is a regular file");
            if !real {
                let log = srv.log();
                let needle = if bad_deny {
                    "refuses every connection"
                } else {
                    "this entry never matches"
                };
                assert!(
                    log.contains(needle) && log.contains("promises.cf:"),
                    "{label}: {log}"
                );
            }
            answers.push(ok);
        }
        assert_eq!(
            (answers[0], answers[1]),
            (want_real, want_rcf),
            "{label}: (real cf-serverd, rcf-serverd) served"
        );
        assert!(
            !(answers[1] && !answers[0]),
            "{label}: rcf looser than 3.21"
        );
        seen.push(format!("{label}: real {} rcf {}", answers[0], answers[1]));
    }
    eprintln!(
        "[never_looser] bad control-list entries: {}",
        seen.join("; ")
    );
}
