//! The stock masterfiles framework (Debian's `/usr/share/cfengine3/masterfiles`)
//! in the setups an admin really has: `rcf-serverd --check-config` prints an
//! access summary identical, line for line, to the real `cf-serverd -v` on
//! the same work dir.

use std::path::Path;
use std::time::Duration;

mod policy_lab;
use policy_lab::*;

/// `rcf-serverd --check-config -f POLICY EXTRA...` on `wd`: its stdout lines
/// (the access summary). Panics with its stderr when it refuses the policy.
fn rcf_summary(wd: &Path, policy: &Path, extra: &[&str]) -> Vec<String> {
    rcf_serverd_stdout(wd, policy, &["--check-config", "-v"], extra)
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_same(real: &[String], ours: &[String]) {
    assert!(real.len() > 20, "summary too short: {real:#?}");
    if real != ours {
        let first = real
            .iter()
            .zip(ours)
            .position(|(a, b)| a != b)
            .unwrap_or(real.len().min(ours.len()));
        panic!(
            "summaries differ from line {} (real cf-serverd {} lines, rcf {} lines)\nreal:\n{}\nrcf:\n{}",
            first + 1,
            real.len(),
            ours.len(),
            real.join("\n"),
            ours.join("\n")
        );
    }
}

/// Both servers on the same work dir with the same extra arguments.
fn compare(tmp: &Path, wd: &Path, policy: &Path, port: u16, extra: &[&str]) -> Vec<String> {
    let real = real_cf_serverd_summary_with(tmp, wd, policy, port, extra, Duration::from_secs(90));
    let ours = rcf_summary(wd, policy, extra);
    assert_same(&real, &ours);
    real
}

/// A client bootstrapped to `127.0.0.1:PORT` (the form `cf-agent
/// --bootstrap HOST:PORT` and `rcf-agent bootstrap` write): 3.21 splits it
/// into `sys.policy_hub` and `sys.policy_hub_port`; rcf-serverd used to
/// refuse to start on it.
#[test]
fn mpf_bootstrapped_host_port() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    assert!(
        real.iter().any(|l| l.contains("127.0.0.1/16")),
        "the MPF's acl should hold $(sys.policy_hub)/16:\n{}",
        real.join("\n")
    );
}

/// A client bootstrapped to a bare address.
#[test]
fn mpf_bootstrapped_host() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), "127.0.0.1\n").unwrap();
    compare(tmp.path(), &wd, &policy, port, &[]);
}

/// Bootstrapped to a host name with a port: `sys.policy_hub` is the
/// address the name resolves to (getaddrinfo's first answer, as 3.21).
#[test]
fn mpf_bootstrapped_hostname_port() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("localhost:{port}\n")).unwrap();
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    assert!(
        real.iter()
            .any(|l| l.contains("127.0.0.1/16") || l.contains("::1/16")),
        "localhost should resolve into the acl:\n{}",
        real.join("\n")
    );
}

/// Bootstrapped to `[::1]:PORT` and to a bare IPv6 address.
#[test]
fn mpf_bootstrapped_ipv6_forms() {
    for dat in ["[::1]:5309", "::1"] {
        let (tmp, wd, policy, port) = mpf_workdir();
        std::fs::write(wd.join("policy_server.dat"), format!("{dat}\n")).unwrap();
        let real = compare(tmp.path(), &wd, &policy, port, &[]);
        assert!(
            real.iter().any(|l| l.contains("::1/16")),
            "{dat}: the MPF's acl should hold ::1/16:\n{}",
            real.join("\n")
        );
    }
}

/// Not bootstrapped at all.
#[test]
fn mpf_unbootstrapped() {
    let (tmp, wd, policy, port) = mpf_workdir();
    compare(tmp.path(), &wd, &policy, port, &[]);
}

/// A hub: bootstrapped to itself, `state/am_policy_hub` present, so
/// `policy_server` and `am_policy_hub` guard extra access rules.
#[test]
fn mpf_hub() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    std::fs::write(wd.join("state/am_policy_hub"), "").unwrap();
    std::fs::create_dir_all(wd.join("master_software_updates")).unwrap();
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    assert!(
        real.iter().any(|l| l.contains("master_software_updates")),
        "the hub-only rule should be in the summary:\n{}",
        real.join("\n")
    );
}

/// `-D` defines classes that guard rules; `-N` (which 3.21 applies to
/// persistent classes only) leaves hard classes alone.
#[test]
fn mpf_define_and_negate() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    append_site_bundle(
        &wd,
        r#"
bundle server site_defined
{
  access:
    site_role_a::
      "/srv/site_a/" admit_ips => { "10.1.0.0/16" };
    site_role_b::
      "/srv/site_b/" admit_ips => { "10.2.0.0/16" };
    linux::
      "/srv/still_linux/" admit_ips => { "10.3.0.0/16" };
}
"#,
    );
    let real = compare(
        tmp.path(),
        &wd,
        &policy,
        port,
        &["-D", "site_role_a,other", "-N", "linux"],
    );
    assert!(real.iter().any(|l| l.contains("/srv/site_a")));
    assert!(!real.iter().any(|l| l.contains("/srv/site_b")));
    assert!(real.iter().any(|l| l.contains("/srv/still_linux")));
}

/// A site policy whose access rules are guarded by hard classes (OS, arch,
/// addresses, interfaces, version, verbose mode, negations).
#[test]
fn mpf_site_policy_guarded_by_hard_classes() {
    let (tmp, wd, policy, port) = mpf_workdir();
    append_site_bundle(
        &wd,
        r#"
bundle server site_guarded
{
  access:
    linux.x86_64::
      "/srv/g_arch/" admit_ips => { "10.4.0.0/16" };
    ipv4_127_0_0_1.net_iface_lo::
      "/srv/g_lo/" admit_ips => { "10.5.0.0/16" };
    cfengine_3_21.community_edition.!enterprise_edition::
      "/srv/g_version/" admit_ips => { "10.6.0.0/16" };
    verbose_mode.inform_mode.server::
      "/srv/g_verbose/" admit_ips => { "10.7.0.0/16" };
    (Lcycle_0|Lcycle_1|Lcycle_2).64_bit.compiled_on_linux_gnu::
      "/srv/g_time/" admit_ips => { "10.8.0.0/16" };
    !linux|windows::
      "/srv/g_never/" admit_ips => { "10.9.0.0/16" };
    any::
      "/srv/g_deny/" admit_ips => { "10.0.0.0/8" }, deny_ips => { "10.10.0.0/16" },
        if => "feature_tls_1_3";
}
"#,
    );
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    for p in [
        "g_arch",
        "g_lo",
        "g_version",
        "g_verbose",
        "g_time",
        "g_deny",
    ] {
        assert!(
            real.iter().any(|l| l.contains(p)),
            "{p} missing from the real summary"
        );
    }
    assert!(!real.iter().any(|l| l.contains("g_never")));
}

/// Adds a `bundle server` to the MPF's controls/cf_serverd.cf (cf-serverd
/// evaluates every server bundle it loads).
fn append_site_bundle(wd: &Path, text: &str) {
    let ctl = wd.join("inputs/controls/cf_serverd.cf");
    let mut s = std::fs::read_to_string(&ctl).unwrap();
    s.push_str(text);
    std::fs::write(&ctl, s).unwrap();
}

/// `def.json` next to promises.cf: `vars` (the MPF's `acl` and the server
/// control lists), `classes` (a regex list and a class expression, one of
/// them true only through an earlier augments class), `inputs`, and an
/// `augments` chain whose file sets more variables.
#[test]
fn mpf_def_json_vars_classes_and_chain() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    let inputs = wd.join("inputs");
    std::fs::write(
        inputs.join("def.json"),
        r#"{
  "vars": {
    "acl": ["10.20.0.0/16", "192.168.7.7"],
    "trustkeysfrom": ["10.20.0.1"],
    "control_server_allowconnects": ["10.20.0.0/16", "127.0.0.1"],
    "control_server_allowallconnects": ["10.20.0.0/16"],
    "control_server_allowusers": ["root", "deploy"],
    "site_label": "lab"
  },
  "classes": {
    "site_on_linux": ["^nonexistent$", "linux"],
    "site_expr": "site_on_linux.x86_64::",
    "site_never": ["windows", "solaris::"]
  },
  "inputs": [],
  "augments": ["$(sys.inputdir)/more.json"]
}
"#,
    )
    .unwrap();
    std::fs::write(
        inputs.join("more.json"),
        r#"{ "variables": { "def.extra_dir": { "value": "/srv/extra/", "comment": "site", "tags": ["x"] } },
     "classes": { "site_from_chain": { "class_expressions": ["site_expr"] } } }"#,
    )
    .unwrap();
    append_site_bundle(
        &wd,
        r#"
bundle server site_augmented
{
  access:
    site_on_linux::
      "/srv/aug_linux/" admit_ips => { @(def.acl) };
    site_expr::
      "/srv/aug_expr/" admit_ips => { "10.30.0.0/16" };
    site_never::
      "/srv/aug_never/" admit_ips => { "10.31.0.0/16" };
    site_from_chain::
      "$(def.extra_dir)" admit_ips => { "10.32.0.0/16" };
}
"#,
    );
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    let text = real.join("\n");
    assert!(
        text.contains("10.20.0.0/16"),
        "acl from def.json not used:\n{text}"
    );
    assert!(
        !text.contains("127.0.0.1/16"),
        "the default acl should be replaced:\n{text}"
    );
    assert!(
        text.contains("IP: 10.20.0.1") && text.contains("USER: deploy"),
        "trustkeysfrom/allowusers from def.json not used:\n{text}"
    );
    for p in ["/srv/aug_linux", "/srv/aug_expr", "/srv/extra"] {
        assert!(text.contains(p), "{p} missing:\n{text}");
    }
    assert!(!text.contains("/srv/aug_never"));
}

/// `def.json` values that 3.21 installs as data containers (an object, an
/// array holding arrays), read by a site bundle through `$(def.x[k][j])`,
/// iteration and `getvalues`; and a JSON file with 3.21's leniencies (a
/// trailing comma, an unquoted key) that a strict parser would refuse.
#[test]
fn mpf_def_json_data_containers() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    std::fs::write(
        wd.join("inputs/def.json"),
        r#"{
  "vars": {
    "site": { "admit": ["10.40.0.0/16", "10.41.1.1"], "dirs": { "pub": "/srv/pub/" }, n: 3 },
    "mixed": [["10.42.0.1"], "10.42.0.2"],
  },
}
"#,
    )
    .unwrap();
    append_site_bundle(
        &wd,
        r#"
bundle server site_data
{
  vars:
    "adm" slist => getvalues("def.site[admit]");
  access:
    "$(def.site[dirs][pub])" admit_ips => { @(adm) };
    "/srv/iter/" admit_ips => { "$(def.site[admit])" };
    "/srv/mixed/" admit_ips => getvalues("def.mixed");
    "/srv/n$(def.site[n])/" admit_ips => { "10.43.0.1" };
}
"#,
    );
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    let text = real.join("\n");
    for p in [
        "/srv/pub",
        "/srv/iter",
        "/srv/mixed",
        "/srv/n3",
        "10.41.1.1",
        "10.42.0.1",
    ] {
        assert!(text.contains(p), "{p} missing:\n{text}");
    }
}

/// `def_preferred.json` wins over `def.json`; with
/// `--ignore-preferred-augments` `def.json` is read again.
#[test]
fn mpf_def_preferred_json() {
    let (tmp, wd, policy, port) = mpf_workdir();
    std::fs::write(wd.join("policy_server.dat"), format!("127.0.0.1:{port}\n")).unwrap();
    let inputs = wd.join("inputs");
    std::fs::write(
        inputs.join("def.json"),
        r#"{ "vars": { "acl": ["10.40.0.0/16"] } }"#,
    )
    .unwrap();
    std::fs::write(
        inputs.join("def_preferred.json"),
        r#"{ "vars": { "acl": ["10.41.0.0/16"] } }"#,
    )
    .unwrap();
    let real = compare(tmp.path(), &wd, &policy, port, &[]);
    let text = real.join("\n");
    assert!(
        text.contains("10.41.0.0/16") && !text.contains("10.40.0.0/16"),
        "{text}"
    );
    let real = compare(
        tmp.path(),
        &wd,
        &policy,
        port,
        &["--ignore-preferred-augments"],
    );
    let text = real.join("\n");
    assert!(
        text.contains("10.40.0.0/16") && !text.contains("10.41.0.0/16"),
        "{text}"
    );
}
