//! Policy regexes as 3.21's PCRE evaluates them (issue 17): look-ahead,
//! look-behind, back-references and full-match anchoring in `regcmp()`
//! and `classmatch()` guards, checked against the real cf-serverd with
//! cf-net. rcf used the `regex` crate, which refused these patterns.

mod real_serverd;

use real_serverd::{admit_if, free_port, header, Pair};

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
    let port = free_port();
    let (access, paths) = pair.access_cases(
        CASES
            .iter()
            .map(|(dir, cond, _)| (*dir, admit_if(dir, cond))),
    );
    let text = format!(
        "{}bundle server acl\n{{\n  access:\n{access}}}\n",
        header(port, &[])
    );
    let policy = pair.input("promises.cf", &text);
    let real = pair.real_stat(&policy, port, &paths);
    let pol = pair.rcf_load(&policy);
    let cases: Vec<(String, bool)> = CASES
        .iter()
        .map(|(dir, cond, want)| (format!("{dir} {cond}"), *want))
        .collect();
    let problems = pair.disagreements(&pol, &cases, &real, &paths, &[false, true]);
    assert!(problems.is_empty(), "{}\n{text}", problems.join("\n"));
}
