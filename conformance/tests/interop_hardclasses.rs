//! `rcf-serverd --show-classes` against the classes the real
//! `cf-promises --show-classes` tags `hardclass` on this host.

use std::path::Path;
use std::process::Command;

mod policy_lab;
use policy_lab::*;

const CF_PROMISES: &str = "/usr/bin/cf-promises";

/// The real hard classes (agent type `common` read as rcf-serverd's `server`).
fn real_hard_classes(wd: &Path, policy: &Path, extra: &[&str]) -> Vec<String> {
    assert!(
        Path::new(CF_PROMISES).exists(),
        "{CF_PROMISES} missing: install the cfengine3 package"
    );
    let out = Command::new(CF_PROMISES)
        .arg("--show-classes")
        .args(extra)
        .arg("-f")
        .arg(policy)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
        .output()
        .expect("run cf-promises");
    assert!(
        out.status.success(),
        "cf-promises failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        // the tags column starts at 61 and may hold spaces ("CFEngine roles")
        .filter(|l| {
            l.get(61..)
                .is_some_and(|t| t.split([',', ' ']).any(|x| x == "hardclass"))
        })
        .filter_map(|l| l.split_whitespace().next())
        .map(|c| {
            if c == "common" {
                "server".to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    v.sort();
    v
}

fn rcf_classes(wd: &Path, policy: &Path, extra: &[&str]) -> Vec<String> {
    let text = rcf_serverd_stdout(wd, policy, &["--show-classes"], extra);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    assert_eq!(
        header.trim_end(),
        format!("{:<60} {:<40} {}", "Class name", "Meta tags", "Comment")
    );
    let mut v: Vec<String> = lines
        .filter(|l| {
            l.get(61..)
                .is_some_and(|t| t.split([',', ' ']).any(|x| x == "hardclass"))
        })
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Runs both until a pair falls within one minute (time classes), then
/// compares.
fn compare(wd: &Path, policy: &Path, extra: &[&str]) -> Vec<String> {
    for _ in 0..3 {
        let minute = |v: &[String]| {
            v.iter()
                .find(|c| c.starts_with("GMT_Min") && c.len() == 9)
                .cloned()
        };
        let real = real_hard_classes(wd, policy, extra);
        let ours = rcf_classes(wd, policy, extra);
        if minute(&real) != minute(&ours) {
            continue;
        }
        let missing: Vec<_> = real.iter().filter(|c| !ours.contains(c)).collect();
        let extra_: Vec<_> = ours.iter().filter(|c| !real.contains(c)).collect();
        assert!(
            missing.is_empty() && extra_.is_empty(),
            "hard classes differ\nonly in cf-promises: {missing:?}\nonly in rcf-serverd: {extra_:?}"
        );
        return real;
    }
    panic!("the minute changed between the two runs three times in a row");
}

/// A keyed work dir, not bootstrapped.
#[test]
fn show_classes_equals_real_hard_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = make_workdir(tmp.path());
    let policy = wd.join("inputs/promises.cf");
    std::fs::write(&policy, "bundle agent main { }\n").unwrap();
    let real = compare(&wd, &policy, &[]);
    for c in [
        "any",
        "cfengine_3_21",
        "community_edition",
        "Min00_05",
        "linux",
    ] {
        if c == "Min00_05" {
            assert!(real.iter().any(|x| x.starts_with("Min") && x.contains('_')));
        } else {
            assert!(real.iter().any(|x| x == c), "{c} not among {real:?}");
        }
    }
    assert!(
        real.iter().any(|c| c.starts_with("PK_MD5_")),
        "no PK_MD5_ class"
    );
    assert!(
        real.iter().any(|c| c.starts_with("ipv4_127")),
        "no ipv4_ class"
    );
}

/// A hub: policy_server.dat and state/am_policy_hub; verbose mode.
#[test]
fn show_classes_on_a_hub_in_verbose_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = make_workdir(tmp.path());
    let policy = wd.join("inputs/promises.cf");
    std::fs::write(&policy, "bundle agent main { }\n").unwrap();
    std::fs::write(wd.join("policy_server.dat"), "127.0.0.1:5308\n").unwrap();
    std::fs::write(wd.join("state/am_policy_hub"), "").unwrap();
    let real = compare(&wd, &policy, &["-v"]);
    for c in [
        "am_policy_hub",
        "policy_server",
        "verbose_mode",
        "inform_mode",
    ] {
        assert!(real.iter().any(|x| x == c), "{c} not among {real:?}");
    }
}
