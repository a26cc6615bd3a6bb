//! rcf-serverd as a drop-in for cf-serverd: the process contract that
//! CFEngine's own tooling relies on (issue 12). Loopback only; every
//! process started here is stopped by PID, also when an assertion fails.

use rcf_conformance::lab::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// PIDs whose command line contains `needle`, read from /proc the way
/// `pgrep -f` / `ps | grep` users find cf-serverd.
fn pids_matching(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !cmd.starts_with("sh ") && !cmd.contains("cat") {
                v.push(pid);
            }
        }
    }
    v
}

/// Kills whatever still matches our unique policy paths when the test ends.
struct Reaper(Vec<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for needle in &self.0 {
            for pid in pids_matching(needle) {
                // SAFETY-free: plain kill(2) on a process we started (its
                // command line holds our unique temp path).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

fn write_policy(wd: &Workdir, name: &str, port: u16, share: &str) -> PathBuf {
    let mut p = ServerPolicy::new(port).admit(share);
    p.allowallconnects = vec![];
    let path = wd.inputs().join(name);
    std::fs::write(&path, p.render()).unwrap();
    path
}

#[test]
fn started_as_cf_serverd_kf_through_a_pipe_two_instances_stopped_by_ps_match() {
    require_cfengine().unwrap();
    let t0 = Instant::now();
    let wd = Workdir::new("dropin").unwrap();
    wd.cf_key().unwrap();
    let data = make_data_tree(&wd.scratch().join("data")).unwrap();
    // Installed under the name cf-serverd.
    let link_dir = wd.scratch().join("sbin");
    std::fs::create_dir_all(&link_dir).unwrap();
    let cf_serverd = link_dir.join("cf-serverd");
    std::os::unix::fs::symlink(rcf_binary("rcf-serverd").unwrap(), &cf_serverd).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let pol1 = write_policy(&wd, "promises-a.cf", p1, &data.share_path(""));
    let pol2 = write_policy(&wd, "promises-b.cf", p2, &data.share_path(""));
    let _reaper = Reaper(vec![
        pol1.to_string_lossy().into_owned(),
        pol2.to_string_lossy().into_owned(),
    ]);

    for (pol, port, flags) in [(&pol1, p1, "-Kf"), (&pol2, p2, "-Klf")] {
        // `| cat` only ends when every writer of the pipe is gone: a child
        // that kept the inherited stdout would make this call hang.
        let script = format!("{} {flags} {} | cat", cf_serverd.display(), pol.display());
        let t = Instant::now();
        let out = Command::new("timeout")
            .arg("20")
            .arg("sh")
            .arg("-c")
            .arg(&script)
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd.path())
            .output()
            .unwrap();
        let took = t.elapsed();
        assert!(
            out.status.success(),
            "{script}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took < Duration::from_secs(10),
            "the call did not return promptly: {took:?}"
        );
        assert!(
            port_listening(port),
            "port {port} does not listen after the parent returned"
        );
        eprintln!("[dropin] {flags}: parent returned in {took:?}, port {port} listening");
    }
    // Per-port pid files in the shared workdir.
    for port in [p1, p2] {
        let pidfile = wd.path().join(format!("cf-serverd-{port}.pid"));
        assert!(pidfile.exists(), "{} missing", pidfile.display());
    }
    // Both serve: the real cf-net authenticates against each.
    let cli = Workdir::new("dropin-cli").unwrap();
    for port in [p1, p2] {
        cf_net(&cli, &format!("127.0.0.1:{port}"), &["connect"])
            .unwrap()
            .assert_contains("Connected & authenticated successfully");
    }
    // Stop both through a process-table match on their policy paths.
    let mut pids = Vec::new();
    for pol in [&pol1, &pol2] {
        let found = pids_matching(&pol.to_string_lossy());
        assert_eq!(
            found.len(),
            1,
            "expected one process for {}: {found:?}",
            pol.display()
        );
        let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", found[0]))
            .unwrap()
            .replace('\0', " ");
        assert!(
            cmdline.contains(&*pol.to_string_lossy()),
            "policy path not visible in `{cmdline}`"
        );
        // The daemon's standard streams are /dev/null.
        for fd in 0..3 {
            let target = std::fs::read_link(format!("/proc/{}/fd/{fd}", found[0])).unwrap();
            assert_eq!(
                target,
                Path::new("/dev/null"),
                "fd {fd} of the daemon is {}",
                target.display()
            );
        }
        pids.extend(found);
    }
    let ts = Instant::now();
    for &pid in &pids {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    while pids.iter().any(|&p| alive(p)) && ts.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pids.iter().any(|&p| alive(p)),
        "SIGTERM did not stop {pids:?}"
    );
    eprintln!(
        "[dropin] both stopped {:?} after SIGTERM; total {:?}",
        ts.elapsed(),
        t0.elapsed()
    );
}

#[test]
fn unusable_allowciphers_still_listens_warns_once_and_refuses_the_real_agent() {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("ciphers-srv").unwrap();
    let cli_wd = Workdir::new("ciphers-cli").unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let mut p = ServerPolicy::new(0).admit(data.share_path(""));
    p.allowciphers = Some("AES128-GCM-SHA256".into());
    let srv = RcfServer::start(&srv_wd, &p).unwrap();
    let log = srv.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.trim_start().starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "expected one warning:\n{log}");
    assert!(
        warnings[0].contains("allowciphers"),
        "the warning must name the setting: {}",
        warnings[0]
    );
    let out = cli_wd.scratch().join("out");
    let run = cf_agent_copy(
        &cli_wd,
        &CopySpec::new(srv.port(), data.share_path("hello.txt"), out.join("h")),
    )
    .unwrap();
    assert!(!run.outcomes[0].ok());
    assert!(!out.join("h").exists());
    run.assert_contains("Failed to establish TLS connection");
    assert!(
        srv.wait_for_log("Failed to accept TLS connection", Duration::from_secs(5)),
        "{}",
        srv.log()
    );
    assert!(srv.is_running());
}

#[test]
fn clustered_debug_flags_keep_it_in_the_foreground() {
    require_cfengine().unwrap();
    let wd = Workdir::new("dropin-fg").unwrap();
    wd.cf_key().unwrap();
    let data = make_data_tree(&wd.scratch().join("data")).unwrap();
    let port = free_port();
    let pol = write_policy(&wd, "promises-fg.cf", port, &data.share_path(""));
    let mut cmd = wd.command(&rcf_binary("rcf-serverd").unwrap());
    cmd.arg("-Kldf").arg(&pol);
    let log = wd.scratch().join("fg.log");
    let mut d = Daemon::spawn("rcf-serverd", cmd, &log).unwrap();
    d.wait_listening(port, Duration::from_secs(20)).unwrap();
    // -d implies no fork: the process we started is the server itself.
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.is_running(), "{}", d.log());
    assert!(
        d.log().contains("debug:") || d.log().contains("verbose:"),
        "-d did not raise the log level:\n{}",
        d.log()
    );
    d.stop();
}

#[test]
fn starts_with_a_legacy_encrypted_host_key() {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new("legacy-key-srv").unwrap();
    let cli = Workdir::new("legacy-key-cli").unwrap();
    let ppkeys = srv_wd.ppkeys();
    let priv_path = ppkeys.join("localhost.priv");
    let pub_path = ppkeys.join("localhost.pub");
    let st = Command::new("openssl")
        .args([
            "genrsa",
            "-traditional",
            "-des3",
            "-passout",
            "pass:Cfengine passphrase",
            "-out",
        ])
        .arg(&priv_path)
        .arg("2048")
        .output()
        .expect("openssl is needed for this test (apt-get install openssl)");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(std::fs::read_to_string(&priv_path)
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    let st = Command::new("openssl")
        .args([
            "rsa",
            "-passin",
            "pass:Cfengine passphrase",
            "-RSAPublicKey_out",
            "-in",
        ])
        .arg(&priv_path)
        .arg("-out")
        .arg(&pub_path)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    let srv = RcfServer::start(&srv_wd, &ServerPolicy::new(0).admit(data.share_path(""))).unwrap();
    let run = cf_net(&cli, &srv.host_port(), &["connect"]).unwrap();
    run.assert_contains("Connected & authenticated successfully");
    // The key the agent now trusts is the encrypted file's key.
    let id = srv_wd.key_id().unwrap();
    assert!(
        cli.trusted_keys()
            .iter()
            .any(|k| k.ends_with(&format!("{id}.pub"))),
        "{:?} vs {id}",
        cli.trusted_keys()
    );
}
