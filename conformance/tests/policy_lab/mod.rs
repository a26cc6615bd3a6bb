//! Shared by the policy interop tests: sandboxed work dirs with keys, and
//! the real cf-serverd's verbose access summary.

#![allow(dead_code)]

use rcf_conformance::lab::{spawn_real_cf_serverd, wait_for_real_log};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let dst = to.join(e.file_name());
        if p.is_dir() {
            copy_tree(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

/// Give `wd` a `bin/` of its own (links to the real tools) instead of the
/// lab's link to `/usr/bin`: the MPF's update policy writes into
/// `$(sys.bindir)` (the python symlink), which must stay in the sandbox.
pub fn private_bin(wd: &rcf_conformance::lab::Workdir) {
    let bin = wd.path().join("bin");
    let real = std::fs::read_link(&bin).unwrap();
    std::fs::remove_file(&bin).unwrap();
    std::fs::create_dir(&bin).unwrap();
    for t in [
        "cf-agent",
        "cf-promises",
        "cf-key",
        "cf-serverd",
        "cf-execd",
        "cf-monitord",
    ] {
        let _ = std::os::unix::fs::symlink(real.join(t), bin.join(t));
    }
}

/// The real agent's update of the policy: `cf-agent -KI -f inputs/update.cf
/// -b cfe_internal_update_policy_cpv` (what the MPF's `update.cf` runs for
/// the policy); returns the run and the number of files it transferred.
pub fn cf_agent_update(
    wd: &rcf_conformance::lab::Workdir,
) -> (rcf_conformance::lab::ToolRun, usize) {
    let upd = wd.inputs().join("update.cf");
    let agent = wd.bins().agent.clone();
    let run = rcf_conformance::lab::run_tool(
        wd,
        &agent,
        &[
            "-K",
            "-I",
            "-f",
            &upd.to_string_lossy(),
            "-b",
            "cfe_internal_update_policy_cpv",
        ],
        None,
        rcf_conformance::lab::TOOL_TIMEOUT,
    )
    .unwrap();
    // 3.21 logs one "info: Copied file '<src>' from '<server>' to '<dest>.cfnew'"
    // per transfer (then "Updated '...' from source" for a replaced file,
    // "Updated file '...'" for a new one). Local copies (modules_presence:
    // inputs/modules to modules/) say "Copied file 'X' to 'Y'", no server.
    let n = run
        .lines_with("info: Copied file '")
        .iter()
        .filter(|l| l.contains("' from '"))
        .count();
    (run, n)
}

pub const CF_SERVERD: &str = "/usr/bin/cf-serverd";
pub const CF_KEY: &str = "/usr/bin/cf-key";

pub fn free_loopback_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A sandboxed CFEngine work dir with keys, the fixture policy in
/// `inputs/`, and the data tree the policy's paths refer to.
pub fn make_workdir(root: &Path) -> PathBuf {
    let wd = root.join("wd");
    for d in ["inputs", "ppkeys", "state", "outputs", "modules"] {
        std::fs::create_dir_all(wd.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["ppkeys", "inputs"] {
        std::fs::set_permissions(wd.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::os::unix::fs::symlink("/usr/bin", wd.join("bin")).unwrap();
    let out = Command::new(CF_KEY)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &wd)
        .output()
        .expect("run cf-key");
    assert!(
        out.status.success(),
        "cf-key failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wd.join("ppkeys/localhost.priv").exists(),
        "cf-key made no key"
    );
    if !wd.join("bin").is_symlink() {
        let _ = std::fs::remove_dir_all(wd.join("bin"));
        std::os::unix::fs::symlink("/usr/bin", wd.join("bin")).unwrap();
    }
    let data = wd.join("data");
    for d in [
        "masterfiles",
        "modules",
        "share/private",
        "hosts",
        "keys",
        "pub_a",
        "pub_b",
        "guarded",
        "target",
    ] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(data.join("target"), data.join("link")).unwrap();
    std::fs::create_dir_all(data.join("target/sub")).unwrap();
    std::os::unix::fs::symlink(data.join("nowhere"), data.join("dangling")).unwrap();
    wd
}

/// Debian's stock masterfiles framework.
pub const MPF: &str = "/usr/share/cfengine3/masterfiles";

/// A sandboxed work dir holding the MPF in `inputs/`, its server bound to
/// loopback on a free port. Returns (tempdir, workdir, promises.cf, port).
pub fn mpf_workdir() -> (tempfile::TempDir, PathBuf, PathBuf, u16) {
    let mpf = Path::new(MPF);
    assert!(mpf.is_dir(), "{MPF} missing: install the cfengine3 package");
    assert!(
        Path::new(CF_KEY).exists() && Path::new(CF_SERVERD).exists(),
        "cf-key/cf-serverd missing: install the cfengine3 package"
    );
    let tmp = tempfile::tempdir().unwrap();
    let wd = make_workdir(tmp.path());
    copy_tree(mpf, &wd.join("inputs"));
    let port = free_loopback_port();
    let ctl = wd.join("inputs/controls/cf_serverd.cf");
    let text = std::fs::read_to_string(&ctl).unwrap();
    let anchor = "#   bindtointerface => \"::\";\n";
    assert!(
        text.contains(anchor),
        "masterfiles changed: no bindtointerface comment in cf_serverd.cf"
    );
    let patched = text.replacen(
        anchor,
        &format!("{anchor}      bindtointerface => \"127.0.0.1\";\n      port => \"{port}\";\n"),
        1,
    );
    std::fs::write(&ctl, patched).unwrap();
    let policy = wd.join("inputs/promises.cf");
    (tmp, wd, policy, port)
}

/// `rcf-serverd MODE... EXTRA... -f POLICY` on work dir `wd`: its stdout.
/// Panics with its stderr when it fails (refuses the policy).
pub fn rcf_serverd_stdout(wd: &Path, policy: &Path, mode: &[&str], extra: &[&str]) -> String {
    let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
    let out = Command::new(bin)
        .args(mode)
        .args(extra)
        .arg("-f")
        .arg(policy)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
        .output()
        .expect("run rcf-serverd");
    assert!(
        out.status.success(),
        "rcf-serverd {} failed:\n{}",
        mode.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summary lines of a cf-serverd log, without level prefixes.
pub fn real_summary(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let Some(idx) = line.find("verbose: ") else {
            continue;
        };
        if !line[..idx].trim().is_empty()
            && !line[..idx]
                .trim_end()
                .ends_with(|c: char| c.is_ascii_digit() || c == 'Z' || c == '>')
        {
            continue;
        }
        let msg = &line[idx + "verbose: ".len()..];
        if msg.contains("=== BEGIN summary of access promises ===") {
            inside = true;
        }
        if inside {
            out.push(msg.to_string());
        }
        if msg.contains("=== END summary of access promises ===") {
            break;
        }
    }
    out
}

/// Runs the real cf-serverd on `policy` in `wd` until it has printed its
/// access summary, then kills it (by PID, in a drop guard) and returns the
/// summary lines.
pub fn real_cf_serverd_summary(
    tmp: &Path,
    wd: &Path,
    policy: &Path,
    port: u16,
    timeout: Duration,
) -> Vec<String> {
    real_cf_serverd_summary_with(tmp, wd, policy, port, &[], timeout)
}

/// [`real_cf_serverd_summary`] with extra cf-serverd arguments (`-D`, `-N`,
/// `--ignore-preferred-augments`).
pub fn real_cf_serverd_summary_with(
    tmp: &Path,
    wd: &Path,
    policy: &Path,
    port: u16,
    extra: &[&str],
    timeout: Duration,
) -> Vec<String> {
    assert!(
        Path::new(CF_SERVERD).exists(),
        "{CF_SERVERD} missing: install the cfengine3 package"
    );
    let log_path = tmp.join("cf-serverd.log");
    let mut guard = spawn_real_cf_serverd(
        wd,
        policy,
        extra,
        &[("RCF_INTEROP_PORT", port.to_string())],
        &log_path,
    );
    let text = wait_for_real_log(
        &mut guard,
        &log_path,
        "END summary of access promises",
        timeout,
        &format!("no summary from cf-serverd within {timeout:?}"),
    );
    drop(guard);
    assert!(
        text.contains(&format!("Setting default port number to {port}")),
        "cf-serverd did not use the sandbox port {port}"
    );
    real_summary(&text)
}
