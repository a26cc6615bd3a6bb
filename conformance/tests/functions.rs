//! Policy functions rcf evaluates, against the real cf-serverd 3.21
//! (issue 17): `every`, `some`, `none`, `grep`, `splitstring`,
//! `string_split` and `sort`, each used in a condition of an admit rule
//! and checked with cf-net.

mod real_serverd;

use real_serverd::Pair;

const VARS: &str = r#"
bundle common g
{
  vars:
    "l0" slist => { "b", "c", "a", "10", "9" };
    "l1" slist => splitstring("1a,1b", ",", "9");
    "l2" slist => string_split("a,b,c", ",", "2");
    "l3" slist => sort("l0", "lex");
    "l4" slist => splitstring("a,b,c", ",", "2");
    "l5" slist => splitstring("", ",", "5");
    "l6" slist => grep("[a-b]", "l0");
    "l7" slist => string_split("a1b22c", "[0-9]+", "9");
    "l8" slist => splitstring(",x,,y", ",", "9");
    "l9" slist => { "10", "9", "100" };
    "l10" slist => sort("l9", "int");
}
"#;

/// (subdirectory, condition, 3.21's answer).
const CASES: &[(&str, &str, bool)] = &[
    ("a", r#"every("1.*", "g.l1")"#, true),
    ("b", r#"some("2.*", "g.l1")"#, false),
    ("c", r#"none("2.*", "g.l1")"#, true),
    ("d", r#"strcmp(join("|", "g.l2"), "a|b,c")"#, true),
    ("e", r#"strcmp(join("|", "g.l3"), "10|9|a|b|c")"#, true),
    ("f", r#"strcmp(join("|", "g.l4"), "a|b")"#, true),
    ("g", r#"every(".*", "g.l5")"#, false),
    ("h", r#"strcmp(join("|", "g.l6"), "b|a")"#, true),
    ("i", r#"strcmp(join("|", "g.l7"), "a|b|c")"#, true),
    ("j", r#"strcmp(join("|", "g.l8"), "|x||y")"#, true),
    ("k", r#"strcmp(join("|", "g.l10"), "9|10|100")"#, true),
    ("l", r#"some("c", "g.l0")"#, true),
];

#[test]
fn functions_evaluate_as_real_cf_serverd() {
    let pair = Pair::new();
    let (pol, text, problems) = pair.admit_if_cases(CASES, VARS, &[false]);
    assert!(
        !pol.warnings
            .iter()
            .any(|w| w.message.contains("does not support")),
        "{:?}",
        pol.warnings
    );
    assert!(problems.is_empty(), "{}\n{text}", problems.join("\n"));
}
