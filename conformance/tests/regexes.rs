//! Policy regexes as 3.21's PCRE evaluates them (issue 17): look-ahead,
//! look-behind, back-references and full-match anchoring in `regcmp()`
//! and `classmatch()` guards, checked against the real cf-serverd with
//! cf-net. rcf used the `regex` crate, which refused these patterns.

mod real_serverd;

use real_serverd::Pair;

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
    let (_, text, problems) = pair.admit_if_cases(CASES, "", &[false, true]);
    assert!(problems.is_empty(), "{}\n{text}", problems.join("\n"));
}
