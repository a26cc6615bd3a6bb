//! Issue 18's "never looser" rule: what rcf cannot evaluate (an
//! unsupported function, an undiscovered hard class, a variable depending
//! on either) never lets a request through that 3.21 could refuse.

use super::tests::Mem;
use super::*;
use quickcheck::{Arbitrary, Gen};

const KEY: &str = "MD5=00000000000000000000000000000001";

fn opts(discovered: bool, classes: &[&str]) -> LoadOptions {
    LoadOptions {
        file: "/p/promises.cf".into(),
        classes: classes.iter().map(|s| s.to_string()).collect(),
        hard_classes_discovered: discovered,
        ..Default::default()
    }
}

fn mem(text: &str) -> Mem {
    Mem::default()
        .dir("/d")
        .dir("/d/a")
        .file("/d/a/b", "")
        .file("/d/x", "")
        .file("/p/promises.cf", text)
}

fn tls(ip: &str) -> ConnFacts<'_> {
    ConnFacts {
        ip,
        hostname: None,
        key: KEY,
        username: "root",
        protocol: Protocol::Tls,
        encrypted: true,
    }
}

fn classic(ip: &str, encrypted: bool) -> ConnFacts<'_> {
    ConnFacts {
        protocol: Protocol::Classic,
        encrypted,
        ..tls(ip)
    }
}

fn load_with(text: &str, o: &LoadOptions) -> ServerPolicy {
    load(&mem(text), o).unwrap_or_else(|e| panic!("policy refused:\n{e}"))
}

fn allowed(p: &ServerPolicy, f: &ConnFacts, path: &str) -> bool {
    p.check(f, Request::Path(path)).allowed
}

/// Issue 18 finding 2: a deny guarded by a function rcf does not evaluate
/// still applies (cf-serverd evaluates it and denies), over both protocols.
#[test]
fn unsupported_function_guarding_a_deny_denies() {
    for guard in [
        r#"returnszero("/bin/true","noshell")"#,
        r#"classify("127.0.0.1")"#,
        r#"hostinnetgroup("netgroup")"#,
    ] {
        let text = format!(
            "bundle server acl {{ access:\n \"/d/\" admit_ips => {{ \"127.0.0.1\" }};\n \"/d/\" deny_ips => {{ \"127.0.0.1\" }}, if => {guard};\n}}\n"
        );
        let p = load_with(&text, &opts(false, &[]));
        assert!(
            !allowed(&p, &tls("127.0.0.1"), "/d/x"),
            "{guard}: TLS admitted"
        );
        assert!(
            !allowed(&p, &classic("127.0.0.1", true), "/d/x"),
            "{guard}: classic admitted"
        );
        let name = guard.split('(').next().unwrap();
        let w: Vec<String> = p
            .warnings
            .iter()
            .filter(|w| w.message.contains(&format!("function '{name}'")))
            .map(|w| w.to_string())
            .collect();
        assert_eq!(w.len(), 1, "{guard}: want one warning, got {w:?}");
        assert!(w[0].starts_with("/p/promises.cf:3:"), "{}", w[0]);
        // the same function guarding an admit: the admit is not applied
        let text = format!(
            "bundle server acl {{ access:\n \"/d/\" admit_ips => {{ \"127.0.0.1\" }}, if => {guard};\n}}\n"
        );
        let p = load_with(&text, &opts(false, &[]));
        assert!(
            !allowed(&p, &tls("127.0.0.1"), "/d/x"),
            "{guard}: admit applied"
        );
    }
}

/// Issue 18 finding 3: a deny guarded by a hard class rcf has not
/// discovered applies; once the caller vouches for its discovery, an
/// absent hard class is false as in 3.21.
#[test]
fn undiscovered_hard_class_guarding_a_deny_denies() {
    let text = "bundle server acl { access:\n \"/d/\" admit_ips => { \"127.0.0.1\" };\n x86_64::\n \"/d/\" deny_ips => { \"127.0.0.1\" };\n}\n";
    let p = load_with(text, &opts(false, &[]));
    assert!(!allowed(&p, &tls("127.0.0.1"), "/d/x"));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.line == 4 && w.message.contains("class 'x86_64'")));
    let p = load_with(text, &opts(true, &[]));
    assert!(allowed(&p, &tls("127.0.0.1"), "/d/x"));
    let p = load_with(text, &opts(true, &["x86_64"]));
    assert!(!allowed(&p, &tls("127.0.0.1"), "/d/x"));
    // negated: `!x86_64` is just as unknown
    let text = "bundle server acl { access:\n \"/d/\" admit_ips => { \"127.0.0.1\" }, if => \"!Hr07\";\n}\n";
    let p = load_with(text, &opts(false, &[]));
    assert!(!allowed(&p, &tls("127.0.0.1"), "/d/x"));
}

/// Unknowns travel through variables and soft classes to the rule.
#[test]
fn unknown_values_propagate_through_vars_and_classes() {
    let text = r#"
bundle common g
{
  vars:
    "bad" slist => { execresult("/bin/echo 127.0.0.1", "noshell") };
    "cond" string => ifelse("Hr07", "any", "!any");
  classes:
    "evil" expression => returnszero("/bin/true", "noshell");
}
bundle server acl
{
  access:
    "/d/" admit_ips => { "127.0.0.1" }, deny_ips => { @(g.bad) };
    "/d/a/" admit_ips => { "127.0.0.1" };
    "/d/a/" deny_ips => { "127.0.0.1" }, if => "evil";
    "/d/a/b" admit_ips => { "127.0.0.1" };
    "/d/a/b" deny_ips => { "127.0.0.1" }, if => "$(g.cond)";
}
"#;
    let p = load_with(text, &opts(false, &[]));
    for path in ["/d/x", "/d/a/x", "/d/a/b"] {
        assert!(!allowed(&p, &tls("127.0.0.1"), path), "{path} admitted");
    }
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("variable 'g.bad'") && w.message.contains("execresult")));
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("class 'evil'") && w.message.contains("returnszero")));
}

/// 3.21 keeps an invalid CIDR in the list, logs it when matching and never
/// matches it; the rest of the list still works. rcf loads the policy
/// (it used to refuse it), warns with file:line, and makes a deny list
/// holding one deny (never wider than 3.21).
#[test]
fn invalid_cidr_entries_are_skipped_and_never_widen() {
    let text = r#"bundle server acl
{
  access:
    "/d/" admit_ips => { "127.0.0.1/33", "127.0.0.1" };
    "/d/a/" admit_ips => { "127.0.0.1" }, deny_ips => { "127.0.0.1/33" };
    "/d/a/b" admit_ips => { "127.0.0.1/33" };
}
"#;
    let p = load_with(text, &opts(true, &[]));
    assert!(allowed(&p, &tls("127.0.0.1"), "/d/x"));
    assert!(!allowed(&p, &tls("127.0.0.1"), "/d/a/x"));
    assert!(!allowed(&p, &tls("127.0.0.1"), "/d/a/b"));
    assert!(allowed(&p, &classic("127.0.0.1", false), "/d/x"));
    assert!(!allowed(&p, &classic("127.0.0.1", false), "/d/a/x"));
    for line in [4, 5, 6] {
        assert!(
            p.warnings
                .iter()
                .any(|w| w.line == line && w.message.contains("127.0.0.1/33")),
            "no warning for line {line}: {:?}",
            p.warnings
        );
    }
    // the summary keeps the entries, as cf-serverd prints them
    assert!(p
        .summary_lines()
        .iter()
        .any(|l| l.contains("admit_ips: 127.0.0.1/33")));
}

/// A shortcut an unknown promise may have registered first is given to nobody.
#[test]
fn unknown_promise_blocks_its_shortcut() {
    let text = "bundle server acl { access:\n \"/d/a/\" admit_ips => { \"127.0.0.1\" }, shortcut => \"s\", if => \"Hr07\";\n \"/d/\" admit_ips => { \"127.0.0.1\" }, shortcut => \"s\";\n}\n";
    let p = load_with(text, &opts(false, &[]));
    assert_eq!(p.expand_shortcut("s/x", "127.0.0.1", None, KEY), None);
    let p = load_with(text, &opts(true, &[]));
    assert_eq!(
        p.expand_shortcut("s/x", "127.0.0.1", None, KEY).as_deref(),
        Some("/d//x")
    );
}

// ---------------------------------------------------------------------------
// property: the decision with unknowns is never looser than any assignment
// ---------------------------------------------------------------------------

/// Hard-class-looking names: unknown unless the caller vouches for discovery.
const UNKNOWN: [&str; 2] = ["ipv4_10_9_9_1", "ipv4_10_9_9_2"];
const GUARDS: &[&str] = &[
    "any",
    "!any",
    "ipv4_10_9_9_1",
    "!ipv4_10_9_9_1",
    "ipv4_10_9_9_2",
    "ipv4_10_9_9_1.ipv4_10_9_9_2",
    "ipv4_10_9_9_1|ipv4_10_9_9_2",
    "!ipv4_10_9_9_1.!ipv4_10_9_9_2",
];
const PATHS: &[&str] = &["/d/", "/d/a/", "/d/a/b"];
const RULES: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.0/24", "10.0.0.1/33"];
const PEERS: &[&str] = &["10.0.0.1", "10.0.0.2", "10.0.0.3"];
const REQUESTS: &[&str] = &["/d/x", "/d/a/x", "/d/a/b"];

#[derive(Debug, Clone)]
struct Rule {
    path: usize,
    admit: Vec<usize>,
    deny: Vec<usize>,
    guard: usize,
    /// `if =>` instead of a class-guard line.
    via_if: bool,
    ifencrypted: Option<bool>,
    shortcut: bool,
}

#[derive(Debug, Clone)]
struct Pol(Vec<Rule>);

fn pick(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

fn subset(g: &mut Gen, n: usize) -> Vec<usize> {
    (0..n).filter(|_| bool::arbitrary(g)).collect()
}

impl Arbitrary for Pol {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = 1 + pick(g, 6);
        Pol((0..n)
            .map(|_| Rule {
                path: pick(g, PATHS.len()),
                admit: subset(g, RULES.len()),
                deny: subset(g, RULES.len()),
                guard: pick(g, GUARDS.len()),
                via_if: bool::arbitrary(g),
                ifencrypted: Option::<bool>::arbitrary(g),
                shortcut: pick(g, 4) == 0,
            })
            .collect())
    }
    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let v = self.0.clone();
        let n = if v.len() > 1 { v.len() } else { 0 };
        Box::new((0..n).map(move |i| {
            let mut w = v.clone();
            w.remove(i);
            Pol(w)
        }))
    }
}

impl Pol {
    fn text(&self) -> String {
        let mut s = String::from("bundle server acl\n{\n access:\n");
        for r in &self.0 {
            let list = |ix: &[usize]| {
                ix.iter()
                    .map(|&i| format!("\"{}\"", RULES[i]))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut attrs = Vec::new();
            if !r.admit.is_empty() {
                attrs.push(format!("admit_ips => {{ {} }}", list(&r.admit)));
            }
            if !r.deny.is_empty() {
                attrs.push(format!("deny_ips => {{ {} }}", list(&r.deny)));
            }
            if let Some(e) = r.ifencrypted {
                attrs.push(format!("ifencrypted => \"{e}\""));
            }
            if r.shortcut {
                attrs.push("shortcut => \"s\"".into());
            }
            if attrs.is_empty() {
                attrs.push("admit_keys => { }".into());
            }
            if r.via_if {
                attrs.push(format!("if => \"{}\"", GUARDS[r.guard]));
                s.push_str(" any::\n");
            } else {
                s.push_str(&format!(" {}::\n", GUARDS[r.guard]));
            }
            s.push_str(&format!("  \"{}\" {};\n", PATHS[r.path], attrs.join(", ")));
        }
        s.push_str("}\n");
        s
    }
}

/// All decisions of a policy, in a fixed order (peer × request × protocol).
fn decisions(p: &ServerPolicy) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for ip in PEERS {
        for req in REQUESTS
            .iter()
            .map(|r| r.to_string())
            .chain(["s/x".to_string()])
        {
            let path = match p.expand_shortcut(&req, ip, None, KEY) {
                Some(t) => Some(t.replace("//", "/")),
                None if req.starts_with('/') => Some(req.clone()),
                // no such shortcut: refused
                None => None,
            };
            for f in [tls(ip), classic(ip, false), classic(ip, true)] {
                out.push((
                    format!("{ip} {req} {:?} enc={}", f.protocol, f.encrypted),
                    path.as_ref().is_some_and(|path| allowed(p, &f, path)),
                ));
            }
        }
    }
    out
}

/// For random policies with random unknown guards, the decision with
/// unknowns is never an admit where some assignment of the unknowns gives
/// a deny (issue 18).
#[quickcheck_macros::quickcheck]
fn unknowns_never_admit_what_an_assignment_denies(pol: Pol) -> Result<(), String> {
    let text = pol.text();
    let with_unknowns = decisions(&load_with(&text, &opts(false, &[])));
    for mask in 0..(1u32 << UNKNOWN.len()) {
        let set: Vec<&str> = UNKNOWN
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect();
        let assigned = decisions(&load_with(&text, &opts(true, &set)));
        assert_eq!(with_unknowns.len(), assigned.len());
        for ((what, unk), (what2, known)) in with_unknowns.iter().zip(&assigned) {
            assert_eq!(what, what2);
            if *unk && !known {
                return Err(format!(
                    "{what}: admitted with unknowns, denied when {set:?} are the defined ones\n{text}"
                ));
            }
        }
    }
    Ok(())
}

/// With every unknown resolved the same way, the loader gives the same
/// decisions whether or not the caller vouches for discovery (the
/// three-valued path adds nothing when nothing is unknown).
#[quickcheck_macros::quickcheck]
fn without_unknowns_nothing_changes(pol: Pol) -> Result<(), String> {
    let text = pol.text().replace("ipv4_10_9_9_", "soft_");
    let a = decisions(&load_with(&text, &opts(false, &[])));
    let b = decisions(&load_with(&text, &opts(true, &[])));
    if a != b {
        return Err(format!("decisions differ for\n{text}"));
    }
    Ok(())
}

/// The explained decision (issue 16) is the plain decision, and names the
/// deciding rule among its steps.
#[quickcheck_macros::quickcheck]
fn explained_decision_is_the_decision(pol: Pol) -> Result<(), String> {
    let text = pol.text();
    let p = load_with(&text, &opts(false, &[]));
    for ip in PEERS {
        for req in REQUESTS {
            for f in [tls(ip), classic(ip, false), classic(ip, true)] {
                let plain = p.check(&f, Request::Path(req));
                let ex = p.check_explained(&f, Request::Path(req));
                if ex.decision != plain {
                    return Err(format!(
                        "{ip} {req}: {plain:?} vs {:?}\n{text}",
                        ex.decision
                    ));
                }
                if let Some(r) = &plain.resource {
                    if !ex.steps.iter().any(|s| &s.resource == r) {
                        return Err(format!(
                            "{ip} {req}: deciding rule {r} not in the steps\n{text}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// namespaces, as the real cf-serverd 3.21 resolves them (see
// conformance/tests/namespaces.rs for the same cases against the binary)
// ---------------------------------------------------------------------------

#[test]
fn namespaced_references_resolve_as_cf_serverd() {
    let main = "body common control { inputs => { \"ns.cf\" }; }\nbundle common g { vars: \"net\" string => \"127.0.0.1\"; classes: \"gcls\" expression => \"any\"; }\n";
    let ns = r#"body file control { namespace => "ns"; }
bundle common g2
{
  vars:
    "net" string => "127.0.0.1";
    "z" string => "$(g.net)";
  classes:
    "nscls" expression => "any";
}
bundle server acl
{
  vars:
    "local" string => "127.0.0.1";
  access:
    "/d/a/" admit_ips => { "$(g2.net)" };
    "/d/a/b" admit_ips => { "$(ns:g2.net)" };
    "/d/x" admit_ips => { "$(local)" }, if => "nscls.!gcls.default:gcls";
    "/e/" admit_ips => { "$(ns:g2.z)" };
}
"#;
    let m = mem(main).dir("/e").file("/p/ns.cf", ns);
    let p = load(&m, &opts(false, &["linux"])).unwrap();
    let f = tls("127.0.0.1");
    // `g2.net` in an access list is default:g2.net, which does not exist
    assert!(!allowed(&p, &f, "/d/a/x"));
    assert!(allowed(&p, &f, "/d/a/b"));
    assert!(allowed(&p, &f, "/d/x"));
    // a vars value falls back to the default namespace
    assert!(allowed(&p, &f, "/e/x"));
    // a class of a namespaced common bundle is not seen from the default one
    let main2 = format!(
        "{main}bundle server top {{ access: \"/e/\" admit_ips => {{ \"127.0.0.1\" }}, if => \"nscls\"; }}\n"
    );
    let m = mem(&main2).dir("/e").file("/p/ns.cf", ns);
    let p = load(&m, &opts(false, &["linux"])).unwrap();
    assert!(allowed(&p, &f, "/e/x"), "ns:g2.z still admits");
    let d = p.check(&f, Request::Path("/e/x"));
    assert_eq!(
        d.reason,
        Reason::Admitted {
            via: acl::Category::Ip,
            entry: "127.0.0.1".into()
        }
    );
    assert!(
        p.acl.paths["/e/"].origins.len() == 1,
        "the default bundle's promise must not apply"
    );
}

/// Preset variables (augments) are seen by the policy as `def.x`.
#[test]
fn preset_vars_are_visible() {
    let mut o = opts(true, &[]);
    o.vars.insert(
        ("def".into(), "acl".into()),
        Value::List(vec!["127.0.0.1".into(), "10.0.0.0/8".into()]),
    );
    let text = "bundle server acl { access: \"/d/\" admit_ips => { @(def.acl) }; }\n";
    let p = load_with(text, &o);
    assert!(allowed(&p, &tls("127.0.0.1"), "/d/x"));
    assert!(allowed(&p, &tls("10.1.2.3"), "/d/x"));
    assert!(!allowed(&p, &tls("192.168.0.1"), "/d/x"));
}

/// A path promiser holding a variable rcf cannot compute: its deny rules
/// reach every path rule (3.21's value could name any file), for the peers
/// they name only, over both protocols; its admit rules are dropped.
#[test]
fn unexpandable_promiser_denies_its_peers_everywhere() {
    let text = r#"bundle server s {
  vars: "v" string => execresult("/bin/echo a", "noshell");
  access:
    "/d" admit_ips => { "10.0.0.1", "10.0.0.2" };
    "/d/$(v)" deny_ips => { "10.0.0.1" }, admit_ips => { "10.0.0.3" };
}
"#;
    let p = load_with(text, &opts(true, &[]));
    for path in ["/d/a/b", "/d/x"] {
        assert!(!allowed(&p, &tls("10.0.0.1"), path), "{path}");
        assert!(!allowed(&p, &classic("10.0.0.1", false), path), "{path}");
        assert!(allowed(&p, &tls("10.0.0.2"), path), "{path}");
        assert!(!allowed(&p, &tls("10.0.0.3"), path), "{path}");
    }
    assert!(p
        .warnings
        .iter()
        .any(|w| w.line == 5 && w.message.contains("deny rules apply to every path rule")));
}
