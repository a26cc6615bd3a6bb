//! `rcf_core::policy::validate` accepts and refuses what the real
//! `cf-promises -c` 3.21 does (cf-serverd runs it before loading a policy
//! and falls back to failsafe.cf when it fails).

mod real_serverd;

use real_serverd::Fs;
use std::process::Command;

const CF_PROMISES: &str = "/usr/bin/cf-promises";

const POLICIES: &[&str] = &[
    r#"body common control { bundlesequence => { "main" }; } bundle agent main { vars: "x" string => "y"; }"#,
    r#"body common control { bundlesequence => { "main", "nosuch" }; } bundle agent main { vars: "x" string => "y"; }"#,
    r#"bundle server acl { access: "/x" admit_ips => { "1.2.3.4" }; }"#,
    r#"bundle agent main { } bundle server acl { access: "/x" admit_ips => { "1.2.3.4" }; }"#,
    r#"body common control { bundlesequence => { "main" }; } bundle agent main { files: "/tmp/x" perms => nosuchbody; }"#,
    r#"bundle agent main { } bundle server s { access: "/x" admit_ips => { "1.2.3.4" }, action => nobody; }"#,
    r#"bundle agent main { vars: "x" int => "abc"; }"#,
    r#"bundle agent main { vars: "x" int => "10k"; "y" real => "0.5"; }"#,
    r#"bundle agent main { } bundle server s { access: "/x" admit_ips => "1.2.3.4"; }"#,
    r#"body common control { bundlesequence => { b("1") }; } bundle agent b(x) { }"#,
    r#"body common control { nosuch_class:: bundlesequence => { "nosuch" }; any:: bundlesequence => { "b" }; } bundle agent b { }"#,
    r#"bundle agent main { files: "/tmp/x" perms => m("1"); } body perms m(a) { mode => "$(a)"; }"#,
    r#"bundle agent main { } body server control { denybadclocks => "maybe"; }"#,
    r#"bundle agent main { } bundle server s { access: "/x" admit_ips => { "1.2.3.4" }, nosuch => "1"; }"#,
];

#[test]
fn validate_agrees_with_cf_promises() {
    assert!(
        std::path::Path::new(CF_PROMISES).exists(),
        "{CF_PROMISES} missing: install the cfengine3 package"
    );
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("wd");
    std::fs::create_dir_all(&wd).unwrap();
    let mut problems = Vec::new();
    let mut refused = 0;
    for (i, text) in POLICIES.iter().enumerate() {
        let f = tmp.path().join(format!("p{i}.cf"));
        std::fs::write(&f, text).unwrap();
        let out = Command::new(CF_PROMISES)
            .arg("-c")
            .arg("-f")
            .arg(&f)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &wd)
            .output()
            .expect("run cf-promises");
        let real_ok = out.status.success();
        refused += usize::from(!real_ok);
        let opts = rcf_core::policy::LoadOptions {
            file: f.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let ours = rcf_core::policy::validate(&Fs, &opts);
        if ours.is_ok() != real_ok {
            problems.push(format!(
                "{text}\n  cf-promises -c: {}{}\n  rcf: {:?}",
                if real_ok { "ok" } else { "refused" },
                String::from_utf8_lossy(&out.stderr),
                ours.err().map(|e| e.to_string())
            ));
        }
    }
    assert!(refused >= 5, "too few refusals to mean anything: {refused}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The stock masterfiles framework passes (cf-promises -c accepts it).
#[test]
fn validate_accepts_the_masterfiles_framework() {
    let mpf = std::path::Path::new("/usr/share/cfengine3/masterfiles");
    assert!(
        mpf.is_dir(),
        "{} missing: install the cfengine3 package",
        mpf.display()
    );
    let w = "/var/lib/cfengine3".to_string();
    let mut sys = std::collections::BTreeMap::new();
    for (k, v) in [
        ("workdir", w.clone()),
        ("inputdir", mpf.display().to_string()),
        ("masterdir", mpf.display().to_string()),
        ("libdir", format!("{}/lib", mpf.display())),
        ("local_libdir", "lib".into()),
        ("bindir", format!("{w}/bin")),
        ("statedir", format!("{w}/state")),
        ("uqhost", "localhost".into()),
        ("fqhost", "localhost".into()),
        ("cf_version", "3.21.0".into()),
    ] {
        sys.insert(k.to_string(), rcf_core::policy::Value::Scalar(v));
    }
    let opts = rcf_core::policy::LoadOptions {
        file: format!("{}/promises.cf", mpf.display()),
        sys,
        classes: ["linux", "debian", "cfengine", "community_edition"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ..Default::default()
    };
    if let Err(e) = rcf_core::policy::validate(&Fs, &opts) {
        panic!("masterfiles refused:\n{e}");
    }
}
