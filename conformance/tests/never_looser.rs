//! Issue 18's "never looser" rule against the real cf-serverd 3.21: deny
//! rules guarded by functions rcf does not evaluate (finding 2) and by hard
//! classes it has not discovered (finding 3) still deny, and invalid CIDR
//! entries are skipped as 3.21 skips them instead of refusing the policy.
//! Each request is asked of the real server with the real cf-net and of
//! rcf's decision function on the same policy: rcf must never admit what
//! 3.21 refuses, and must equal it where the expected answer is listed.

use rcf_core::policy::{Canon, ConnFacts, LoadOptions, PolicySource, Protocol, Request, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CF_SERVERD: &str = "/usr/bin/cf-serverd";
const CF_KEY: &str = "/usr/bin/cf-key";
const CF_NET: &str = "/usr/bin/cf-net";

struct Fs;

impl PolicySource for Fs {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| e.to_string())
    }
    fn canonicalize(&self, path: &str) -> Canon {
        match std::fs::canonicalize(path) {
            Ok(p) => Canon::Resolved {
                is_dir: p.is_dir(),
                path: p.to_string_lossy().into_owned(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Canon::Missing,
            Err(e) => Canon::Failed(e.to_string()),
        }
    }
    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
}

/// Kills the process it guards (by PID, through its own Child handle) on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workdir(root: &Path) -> PathBuf {
    let wd = root.to_path_buf();
    for d in ["inputs", "ppkeys", "state", "outputs", "modules", "data"] {
        std::fs::create_dir_all(wd.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["ppkeys", "inputs"] {
        std::fs::set_permissions(wd.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = Command::new(CF_KEY)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &wd)
        .output()
        .expect("run cf-key");
    assert!(out.status.success(), "cf-key failed");
    // cf-serverd validates with WORKDIR/bin/cf-promises
    let _ = std::fs::remove_dir_all(wd.join("bin"));
    std::os::unix::fs::symlink("/usr/bin", wd.join("bin")).unwrap();
    wd
}

fn trust(wd: &Path, other: &Path) {
    let out = Command::new(CF_KEY)
        .arg("-t")
        .arg(other.join("ppkeys/localhost.pub"))
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
        .output()
        .unwrap();
    assert!(out.status.success(), "cf-key -t failed");
}

fn cf_net_stat(cli: &Path, hostport: &str, path: &str) -> bool {
    let out = Command::new("timeout")
        .args(["30", CF_NET, "-H", hostport, "stat", path])
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", cli)
        .stdin(Stdio::null())
        .output()
        .expect("run cf-net");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("' is a ") {
        return true;
    }
    assert!(
        text.contains("Could not stat"),
        "unexpected cf-net output for {path}: {text}"
    );
    false
}

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
    for b in [CF_SERVERD, CF_KEY, CF_NET] {
        assert!(
            Path::new(b).exists(),
            "{b} missing: install the cfengine3 package"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let srv = workdir(&tmp.path().join("srv"));
    let cli = workdir(&tmp.path().join("cli"));
    trust(&srv, &cli);
    trust(&cli, &srv);
    let data = std::fs::canonicalize(srv.join("data")).unwrap();
    let d = data.to_string_lossy().into_owned();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut access = String::new();
    for (dir, rules, _) in cases() {
        std::fs::create_dir_all(data.join(dir)).unwrap();
        std::fs::write(data.join(dir).join("f"), "x\n").unwrap();
        access.push_str(&format!(
            "    {}\n",
            rules.replace("\"D/", &format!("\"{d}/"))
        ));
    }
    let policy_text = format!(
        r#"
body common control {{ bundlesequence => {{ "noop" }}; }}
bundle agent noop {{ vars: "x" string => "y"; }}
body server control {{ port => "{port}"; bindtointerface => "127.0.0.1"; allowconnects => {{ "127.0.0.1" }}; }}
bundle server acl
{{
  access:
{access}}}
"#
    );
    let policy = srv.join("inputs/promises.cf");
    std::fs::write(&policy, &policy_text).unwrap();

    let log_path = tmp.path().join("cf-serverd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(CF_SERVERD)
        .args(["-F", "-v", "-f"])
        .arg(&policy)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &srv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start cf-serverd");
    let mut guard = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("Listening for connections") {
            assert!(
                !text.contains("going to failsafe"),
                "cf-serverd rejected the policy:\n{text}"
            );
            break;
        }
        if let Ok(Some(st)) = guard.0.try_wait() {
            panic!("cf-serverd exited early ({st}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "cf-serverd did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hostport = format!("127.0.0.1:{port}");
    let real: Vec<bool> = cases()
        .iter()
        .map(|(dir, _, _)| cf_net_stat(&cli, &hostport, &format!("{d}/{dir}/f")))
        .collect();
    drop(guard);

    // rcf on the same policy, with only the classes rcf-serverd itself
    // knows today (no host discovery)
    let w = srv.to_string_lossy().into_owned();
    let mut sys = BTreeMap::new();
    sys.insert("workdir".to_string(), Value::Scalar(w));
    let opts = LoadOptions {
        file: policy.to_string_lossy().into_owned(),
        sys,
        classes: ["linux", "debian", "cfengine", "community_edition"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        ..Default::default()
    };
    let pol = rcf_core::policy::load(&Fs, &opts).unwrap_or_else(|e| panic!("rcf refused:\n{e}"));
    let key = std::fs::read_dir(srv.join("ppkeys"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("root-")
                .and_then(|x| x.strip_suffix(".pub"))
                .map(str::to_string)
        })
        .expect("client key trusted on the server");
    let mut problems = Vec::new();
    for ((dir, _, want), real_allowed) in cases().iter().zip(&real) {
        if let Some(w) = want {
            if w != real_allowed {
                problems.push(format!(
                    "{dir}: real cf-serverd answered {real_allowed}, expected {w}"
                ));
            }
        }
        let path = format!("{d}/{dir}/f");
        for f in [
            ConnFacts {
                ip: "127.0.0.1",
                hostname: None,
                key: &key,
                username: "root",
                protocol: Protocol::Tls,
                encrypted: true,
            },
            ConnFacts {
                ip: "127.0.0.1",
                hostname: None,
                key: &key,
                username: "root",
                protocol: Protocol::Classic,
                encrypted: true,
            },
        ] {
            let dec = pol.check(&f, Request::Path(&path));
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
    let tls = |dir: &str| {
        let path = format!("{d}/{dir}/f");
        pol.check(
            &ConnFacts {
                ip: "127.0.0.1",
                hostname: None,
                key: &key,
                username: "root",
                protocol: Protocol::Tls,
                encrypted: true,
            },
            Request::Path(&path),
        )
        .allowed
    };
    for (dir, want) in [("a", true), ("b", false), ("g", false), ("i", false)] {
        if tls(dir) != want {
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
