//! Policy regexes as 3.21's PCRE evaluates them (issue 17): look-ahead,
//! look-behind, back-references and full-match anchoring in `regcmp()`
//! and `classmatch()` guards, checked against the real cf-serverd with
//! cf-net. rcf used the `regex` crate, which refused these patterns.

mod real_serverd;

use rcf_core::policy::Request;
use real_serverd::{free_port, header, Pair};

/// (subdirectory, condition of an admit rule, 3.21's answer).
const CASES: &[(&str, &str, bool)] = &[
    ("a", r#"regcmp("(?=.*x)abc.*", "abcx")"#, true),
    ("b", r#"regcmp("(?=.*x)abc.*", "abcy")"#, false),
    ("c", r#"regcmp("(ab)\1", "abab")"#, true),
    ("d", r#"regcmp("(ab)\1", "abba")"#, false),
    (
        "e",
        r#"regcmp(".*(?<!\.example\.com)", "h.example.com")"#,
        false,
    ),
    (
        "f",
        r#"regcmp(".*(?<=\.example\.com)", "h.example.com")"#,
        true,
    ),
    // full match, not search
    ("g", r#"regcmp("b", "abc")"#, false),
    ("h", r#"regcmp("a|ab", "ab")"#, false),
    ("i", r#"regcmp("a.b", "a$(const.n)b")"#, true),
    // classmatch over the defined classes, with a look-ahead
    ("j", r#"classmatch("any(?!thing)")"#, true),
    ("k", r#"classmatch("rcf_(?=never)defined")"#, false),
];

#[test]
fn regexes_match_as_real_cf_serverd() {
    let pair = Pair::new();
    let d = pair.data.clone();
    let port = free_port();
    let mut access = String::new();
    let mut paths = Vec::new();
    for (dir, cond, _) in CASES {
        paths.push(pair.file(&format!("{dir}/f")));
        access.push_str(&format!(
            "    \"{d}/{dir}/\" admit_ips => {{ \"127.0.0.1\" }}, if => {cond};\n"
        ));
    }
    let text = format!(
        "{}bundle server acl\n{{\n  access:\n{access}}}\n",
        header(port, &[])
    );
    let policy = pair.input("promises.cf", &text);
    let real = pair.real_stat(&policy, port, &paths);
    let pol = pair.rcf_load(&policy);
    let mut problems = Vec::new();
    for (((dir, cond, want), real_allowed), path) in CASES.iter().zip(&real).zip(&paths) {
        if want != real_allowed {
            problems.push(format!(
                "{dir} {cond}: real cf-serverd {real_allowed}, expected {want}"
            ));
        }
        for classic in [false, true] {
            let dec = pol.check(&pair.facts(classic), Request::Path(path));
            if dec.allowed != *real_allowed {
                problems.push(format!(
                    "{dir} {cond} (classic: {classic}): rcf {}, real cf-serverd {real_allowed}",
                    dec.allowed
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}\n{text}", problems.join("\n"));
}
