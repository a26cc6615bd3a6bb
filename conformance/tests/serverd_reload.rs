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
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn policy(port: u16, path: &str) -> String {
    format!(
        r#"
body server control {{ port => "{port}"; bindtointerface => "127.0.0.1"; allowconnects => {{ "127.0.0.1" }}; }}
bundle server acl {{ access: "{path}" admit_ips => {{ "127.0.0.1" }}; }}
"#
    )
}

fn start(wd: &Path, log: &Path, metrics: u16) -> Kill {
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    let f = std::fs::File::create(log).unwrap();
    Kill(
        Command::new(bin)
            .args(["--no-fork", "--reload-interval", "1", "--metrics"])
            .arg(format!("127.0.0.1:{metrics}"))
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
