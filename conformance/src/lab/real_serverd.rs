//! The real cf-serverd run directly (foreground, verbose, logging to a
//! file) for the policy tests that read its log, and the filesystem
//! answers rcf's policy loader needs beside it. Test helpers: they panic
//! with the server's log instead of returning errors.

use rcf_core::policy::{Canon, PolicySource};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's cfengine3 package installs the real cf-serverd.
pub const REAL_CF_SERVERD: &str = "/usr/bin/cf-serverd";

/// Where Debian's cfengine3 package installs the real cf-key.
pub const REAL_CF_KEY: &str = "/usr/bin/cf-key";

/// Makes work dirs `srv` and `cli` trust each other's host key with the
/// real `cf-key -t`, and returns the id under which `srv` now stores the
/// client's key (its `ppkeys/root-ID.pub`). Panics when cf-key fails.
pub fn cf_key_trust_each_other(srv: &Path, cli: &Path) -> String {
    for (wd, other) in [(srv, cli), (cli, srv)] {
        let out = Command::new(REAL_CF_KEY)
            .arg("-t")
            .arg(other.join("ppkeys/localhost.pub"))
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
            .output()
            .unwrap();
        assert!(out.status.success(), "cf-key -t failed");
    }
    std::fs::read_dir(srv.join("ppkeys"))
        .unwrap()
        .flatten()
        .find_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("root-")
                .and_then(|x| x.strip_suffix(".pub"))
                .map(str::to_string)
        })
        .expect("client key trusted on the server")
}

/// Where Debian's cfengine3 package installs the real cf-net.
pub const REAL_CF_NET: &str = "/usr/bin/cf-net";

/// Runs the real `cf-net stat PATH` against `hostport` from the client work
/// dir `cli` (each try bounded to 30 s by `timeout`): true if the server
/// answered with the file's type (admitted), false on a refusal. Up to
/// `connect_tries` tries (at least one) while cf-net reports `Failed to
/// connect`, waiting 300 ms more before each retry: cf-serverd drops a
/// second connection from an address whose previous one it has not
/// reaped yet. Panics on any other answer.
pub fn cf_net_stat(cli: &Path, hostport: &str, path: &str, connect_tries: u64) -> bool {
    let mut text = String::new();
    for attempt in 0..connect_tries.max(1) {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300 * attempt));
        }
        let out = Command::new("timeout")
            .args(["30", REAL_CF_NET, "-H", hostport, "stat", path])
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", cli)
            .stdin(Stdio::null())
            .output()
            .expect("run cf-net");
        text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !text.contains("Failed to connect") {
            break;
        }
    }
    if text.contains("' is a ") {
        return true;
    }
    assert!(
        text.contains("Could not stat"),
        "unexpected cf-net output for {path}: {text}"
    );
    false
}

/// Filesystem answers for rcf's policy evaluator, straight from `std::fs`
/// (conformance does not depend on rcf-fs).
pub struct PolicyFs;

impl PolicySource for PolicyFs {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        std::fs::read(policy_fs_path(path)).map_err(|e| e.to_string())
    }
    fn canonicalize(&self, path: &str) -> Canon {
        use std::os::unix::ffi::OsStrExt;
        match std::fs::canonicalize(policy_fs_path(path)) {
            Ok(p) => Canon::Resolved {
                is_dir: p.is_dir(),
                path: rcf_core::bytestr::encode(p.as_os_str().as_bytes()).into_owned(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Canon::Missing,
            Err(e) => Canon::Failed(e.to_string()),
        }
    }
    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(policy_fs_path(path)).is_ok()
    }
}

/// The bytes a policy path (a `rcf_core::bytestr` encoding) names.
fn policy_fs_path(p: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(&rcf_core::bytestr::decode(p)).into()
}

/// Kills the process it guards (by PID, through its own Child handle) on
/// drop, so a test that panics still stops the server it started.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the real `cf-serverd -F -v EXTRA... -f POLICY` on work dir `wd`
/// (plus the `env` pairs), its stdout and stderr in a new file `log_path`.
/// Panics when it cannot be started.
pub fn spawn_real_cf_serverd(
    wd: &Path,
    policy: &Path,
    extra: &[&str],
    env: &[(&str, String)],
    log_path: &Path,
) -> KillOnDrop {
    let log = std::fs::File::create(log_path).unwrap();
    let mut cmd = Command::new(REAL_CF_SERVERD);
    cmd.args(["-F", "-v"])
        .args(extra)
        .arg("-f")
        .arg(policy)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start cf-serverd");
    KillOnDrop(child)
}

/// Waits (polling every 100 ms) until the log at `log_path` holds
/// `needle`, and returns the log's text then. Panics with the log when the
/// server exits first, or with `timeout_msg` and the log when `timeout`
/// passes.
pub fn wait_for_real_log(
    server: &mut KillOnDrop,
    log_path: &Path,
    needle: &str,
    timeout: Duration,
    timeout_msg: &str,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log_path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if let Ok(Some(st)) = server.0.try_wait() {
            panic!("cf-serverd exited early ({st}):\n{text}");
        }
        assert!(Instant::now() < deadline, "{timeout_msg}:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
