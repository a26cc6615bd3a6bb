//! `rcf-serverd --check-config`: exit 0 with the summary for a good policy,
//! exit 1 with `file:line` errors for broken ones.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static N: AtomicUsize = AtomicUsize::new(0);

/// A private temp dir, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!(
            "rcf-check-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("inputs")).unwrap();
        Tmp(p)
    }
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str], workdir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rcf-serverd"))
        .arg("--check-config")
        .args(args)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", workdir)
        .output()
        .expect("run rcf-serverd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
body common control { inputs => { "lib/def.cf" }; }
bundle agent main { }
body server control { allowconnects => { "127.0.0.1" }; allowusers => { "root" }; }
bundle server acl
{
  access:
    "$(sys.workdir)/inputs/" admit_ips => { @(def.acl) }, shortcut => "inputs";
    "/nonexistent/$(connection.ip)/" admit_ips => { "$(connection.ip)" };
}
"#;

const DEF: &str =
    "bundle common def { vars: \"acl\" slist => { \"127.0.0.1\", \"10.0.0.0/8\" }; }\n";

#[test]
fn good_policy_prints_the_summary_and_exits_0() {
    let t = Tmp::new();
    t.write("inputs/promises.cf", GOOD);
    t.write("inputs/lib/def.cf", DEF);
    // default file: WORKDIR/inputs/promises.cf, workdir from the environment
    let (code, out, err) = run(&[], &t.0);
    assert_eq!(code, 0, "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&" === BEGIN summary of access promises === ")
    );
    assert_eq!(
        lines.last(),
        Some(&" === END summary of access promises === ")
    );
    let real = std::fs::canonicalize(t.0.join("inputs")).unwrap();
    assert!(
        lines.contains(&format!("\tPath: {}/", real.display()).as_str()),
        "{out}"
    );
    assert!(lines.contains(&"\t\tadmit_ips: 10.0.0.0/8"), "{out}");
    assert!(
        lines.contains(&"\tPath: /nonexistent/$(connection.ip)/"),
        "{out}"
    );
    assert!(
        err.contains(
            "Path does not exist, it's added as-is in access rules: /nonexistent/$(connection.ip)/"
        ),
        "{err}"
    );
    // --workdir beats the environment; -f relative to WORKDIR/inputs
    let other = Tmp::new();
    let (code, out, _) = Command::new(env!("CARGO_BIN_EXE_rcf-serverd"))
        .args(["--check-config", "--workdir"])
        .arg(&t.0)
        .args(["-f", "promises.cf"])
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &other.0)
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                (),
            )
        })
        .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("admit_ips: 10.0.0.0/8"));
}

#[test]
fn missing_default_file_exits_1() {
    let t = Tmp::new();
    let (code, _, err) = run(&[], &t.0);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "cannot read policy file '{}/inputs/promises.cf'",
            t.0.display()
        )),
        "{err}"
    );
}

#[test]
fn broken_policies_exit_1_with_file_and_line() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("syntax error", &[("inputs/promises.cf", "bundle server x\n{\n access:\n  \"/a\" admit_ips => { \"1.2.3.4\" }\n}\n")], "promises.cf:5:1: expected ',' or ';'"),
        ("missing input", &[("inputs/promises.cf", "body common control\n{\n inputs => { \"nope.cf\" };\n}\n")], "promises.cf:3: cannot read policy file"),
        (
            "include cycle",
            &[
                ("inputs/promises.cf", "body common control { inputs => { \"a.cf\" }; }\n"),
                ("inputs/a.cf", "body file control\n{\n inputs => { \"promises.cf\" };\n}\n"),
            ],
            "a.cf:3: include cycle refused",
        ),
        ("unknown attribute", &[("inputs/promises.cf", "body server control\n{\n  bindtoaddress => \"127.0.0.1\";\n}\n")], "promises.cf:3:3: unknown attribute 'bindtoaddress'"),
        ("bad regex", &[("inputs/promises.cf", "bundle server x\n{\n access:\n  \"bad[\" resource_type => \"context\", admit_ips => { \"1.2.3.4\" };\n}\n")], "promises.cf:4: context promiser 'bad[' is not a valid regular expression"),
    ];
    for (name, files, want) in cases {
        let t = Tmp::new();
        for (rel, text) in *files {
            t.write(rel, text);
        }
        let (code, out, err) = run(&[], &t.0);
        assert_eq!(
            code, 1,
            "{name}: expected exit 1, stdout: {out} stderr: {err}"
        );
        assert!(err.contains(want), "{name}: expected '{want}' in:\n{err}");
        assert!(
            !out.contains("BEGIN summary"),
            "{name}: printed a summary for a broken policy"
        );
    }
}

/// Issue 18: an invalid CIDR or address does not refuse the policy (3.21
/// runs it and never matches the entry); it is a warning with file:line,
/// and a deny list holding one denies.
#[test]
fn bad_cidr_is_a_warning_not_a_refusal() {
    let t = Tmp::new();
    t.write(
        "inputs/promises.cf",
        "bundle server x\n{\n access:\n  \"/a\"\n   admit_ips => { \"10.0.0.0/99\", \"10.0.0.1\" };\n  \"/b\" deny_ips => { \"10.0.0.0/99\" };\n}\nbundle agent main { }\nbody server control\n{\n allowconnects => { \"300.1.1.1\", \"10.0.0.1\" };\n}\n",
    );
    let (code, out, err) = run(&[], &t.0);
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(
        err.contains("promises.cf:11: allowconnects")
            && err.contains("skipped, as cf-serverd 3.21 does"),
        "{err}"
    );
    assert!(
        err.contains("promises.cf:5: admit_ips of '/a': Invalid IPv4 CIDR")
            && err.contains("this entry never matches"),
        "{err}"
    );
    assert!(
        err.contains("promises.cf:6: deny_ips of '/b': Invalid IPv4 CIDR")
            && err.contains("denies every request it covers"),
        "{err}"
    );
    assert!(out.contains("admit_ips: 10.0.0.0/99"), "{out}");
}

/// As `cf-promises -c` (what cf-serverd runs first): a policy whose
/// bundlesequence names no defined bundle (`main` by default) is refused.
#[test]
fn check_config_validates_like_cf_promises() {
    let t = Tmp::new();
    t.write(
        "inputs/promises.cf",
        "bundle server x\n{\n access:\n  \"/a\" admit_ips => { \"10.0.0.1\" };\n}\n",
    );
    let (code, out, err) = run(&[], &t.0);
    assert_eq!(code, 1, "stdout: {out} stderr: {err}");
    assert!(
        err.contains("Bundle 'main' listed in the bundlesequence is not a defined bundle"),
        "{err}"
    );
    t.write(
        "inputs/promises.cf",
        "bundle agent main\n{\n files:\n  \"/tmp/x\" perms => nosuch;\n}\n",
    );
    let (code, _, err) = run(&[], &t.0);
    assert_eq!(code, 1);
    assert!(err.contains("promises.cf:4:"), "{err}");
    assert!(
        err.contains("Undefined body nosuch with type perms"),
        "{err}"
    );
}
