//! rcf-serverd rereads its policy without SIGHUP, as cf-serverd 3.21 does
//! (a newer `cf_promises_validated`), and when a policy file changes;
//! a bad edit keeps the last good policy; an invalid policy at start
//! falls back to `inputs/failsafe.cf`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // below the ephemeral range (see the lab): a `bind :0` port can become
    // another test's source port before the server binds it
    rcf_conformance::lab::free_port()
}

/// A policy `cf-promises -c` accepts (a bundlesequence of a defined
/// bundle): cf-serverd 3.21 validates with `-c` and goes to failsafe otherwise.
fn policy(port: u16, path: &str) -> String {
    format!(
        r#"
body common control {{ bundlesequence => {{ "main" }}; }}
bundle agent main {{ }}
body server control {{ port => "{port}"; bindtointerface => "127.0.0.1"; allowconnects => {{ "127.0.0.1" }}; }}
bundle server acl {{ access: "{path}" admit_ips => {{ "127.0.0.1" }}; }}
"#
    )
}

fn start(wd: &Path, log: &Path, metrics: u16) -> Kill {
    start_with(wd, log, metrics, &[])
}

fn start_with(wd: &Path, log: &Path, metrics: u16, extra: &[&str]) -> Kill {
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    let f = std::fs::File::create(log).unwrap();
    Kill(
        Command::new(bin)
            .args(["--no-fork", "--reload-interval", "1", "--metrics"])
            .arg(format!("127.0.0.1:{metrics}"))
            .args(extra)
            .arg("--workdir")
            .arg(wd)
            .env_remove("CFENGINE_TEST_OVERRIDE_WORKDIR")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start rcf-serverd"),
    )
}

fn wait_for(log: &Path, what: &str, child: &mut Kill) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(what) {
            return text;
        }
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("rcf-serverd exited ({st}) before '{what}':\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "no '{what}' within 20 s:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(port: u16, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("rcf_serverd_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
}

fn wait_metric(port: u16, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(port, name) < want {
        assert!(Instant::now() < deadline, "{name} never reached {want}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn workdir(root: &Path) -> std::path::PathBuf {
    let wd = root.join("wd");
    for d in ["inputs", "masterfiles", "state"] {
        std::fs::create_dir_all(wd.join(d)).unwrap();
    }
    wd
}

#[test]
fn reloads_without_sighup_and_keeps_the_last_good_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = workdir(tmp.path());
    let (port, mport) = (free_port(), free_port());
    let pf = wd.join("inputs/promises.cf");
    std::fs::write(&pf, policy(port, "/srv/one/")).unwrap();
    let log = tmp.path().join("log");
    let mut d = start(&wd, &log, mport);
    wait_for(&log, "Server is starting", &mut d);

    // an edited policy file is picked up
    std::fs::write(&pf, policy(port, "/srv/two/")).unwrap();
    wait_metric(mport, "policy_reloads_total", 1);
    wait_for(&log, "Rereading policy file", &mut d);

    // a bad edit is refused, the last good policy stays
    std::fs::write(&pf, "bundle server acl { access: \"/x\" admit_ips => ; }\n").unwrap();
    wait_metric(mport, "policy_reload_failures_total", 1);
    wait_for(&log, "File changes contain errors -- ignoring", &mut d);
    assert_eq!(metric(mport, "policy_reloads_total"), 1);

    // repaired, then a newer validated marker (what cf-agent's update
    // writes after cf-promises) triggers a reload as in 3.21
    std::fs::write(&pf, policy(port, "/srv/three/")).unwrap();
    wait_metric(mport, "policy_reloads_total", 2);
    std::fs::write(
        wd.join("masterfiles/cf_promises_validated"),
        r#"{ "timestamp": 4102444800 }"#,
    )
    .unwrap();
    wait_metric(mport, "policy_reloads_total", 3);
}

#[test]
fn invalid_policy_at_start_runs_failsafe() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = workdir(tmp.path());
    let (port, mport) = (free_port(), free_port());
    std::fs::write(wd.join("inputs/promises.cf"), "bundle server { broken\n").unwrap();
    std::fs::write(
        wd.join("inputs/failsafe.cf"),
        policy(port, "/srv/failsafe/"),
    )
    .unwrap();
    let log = tmp.path().join("log");
    let mut d = start(&wd, &log, mport);
    let text = wait_for(&log, "Server is starting", &mut d);
    assert!(text.contains("so going to failsafe"), "{text}");
    assert!(text.contains("failsafe.cf"), "{text}");

    // without failsafe.cf it refuses to start
    std::fs::remove_file(wd.join("inputs/failsafe.cf")).unwrap();
    drop(d);
    let log2 = tmp.path().join("log2");
    let mut d = start(&wd, &log2, free_port());
    let deadline = Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Ok(Some(st)) = d.0.try_wait() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "still running without a failsafe"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st.code(), Some(1));
    assert!(std::fs::read_to_string(&log2).unwrap().contains("no '"));
}

/// The running daemon reads the same augments as `--check-config`: a
/// `def.json` next to the policy sets `def.acl`, and the access summary
/// the daemon logs at start admits exactly what `--check-config -v` says.
#[test]
fn the_daemon_applies_def_json_augments_as_check_config_does() {
    let tmp = tempfile::tempdir().unwrap();
    let wd = workdir(tmp.path());
    let (port, mport) = (free_port(), free_port());
    std::fs::write(
        wd.join("inputs/promises.cf"),
        format!(
            r#"
body common control {{ bundlesequence => {{ "main" }}; }}
bundle agent main {{ }}
body server control {{ port => "{port}"; bindtointerface => "127.0.0.1"; allowconnects => {{ "127.0.0.1" }}; }}
bundle server acl {{ access: "/srv/aug/" admit_ips => {{ @(def.acl) }}; }}
"#
        ),
    )
    .unwrap();
    std::fs::write(
        wd.join("inputs/def.json"),
        r#"{ "vars": { "acl": [ "127.0.0.9", "10.1.0.0/16" ] } }"#,
    )
    .unwrap();
    let log = tmp.path().join("log");
    let mut d = start_with(&wd, &log, mport, &["-v"]);
    let text = wait_for(&log, "Server is starting", &mut d);
    let daemon = summary(&text);
    assert!(
        daemon.iter().any(|l| l.ends_with("admit_ips: 127.0.0.9"))
            && daemon.iter().any(|l| l.ends_with("admit_ips: 10.1.0.0/16")),
        "the daemon's summary must admit def.json's acl:\n{text}"
    );
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    let out = Command::new(bin)
        .args(["--check-config", "-v", "--workdir"])
        .arg(&wd)
        .env_remove("CFENGINE_TEST_OVERRIDE_WORKDIR")
        .output()
        .unwrap();
    let check = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        summary(&check),
        daemon,
        "--check-config -v and the daemon disagree"
    );
}

/// The access summary block of a log or of `--check-config -v`'s output,
/// each line without its level prefix.
fn summary(text: &str) -> Vec<String> {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            l.strip_prefix(" verbose: ")
                .unwrap_or(l)
                .trim_end()
                .to_string()
        })
        .collect();
    let begin = lines
        .iter()
        .position(|l| l.contains("BEGIN summary of access promises"));
    let end = lines
        .iter()
        .position(|l| l.contains("END summary of access promises"));
    match (begin, end) {
        (Some(b), Some(e)) if b < e => lines[b..=e].to_vec(),
        _ => panic!("no access summary in:\n{text}"),
    }
}
