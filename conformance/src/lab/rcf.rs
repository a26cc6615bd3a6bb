//! Our own `rcf-serverd`, started from the same [`ServerPolicy`] as the
//! real one, so one test can hold both servers to the same expectations.

use super::proc::Daemon;
use super::{
    free_port, host_port, rcf_binary, tail, LabError, ServerPolicy, Workdir, START_TIMEOUT,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A running `rcf-serverd -F -v --workdir <wd> -f <wd>/inputs/promises.cf`.
/// Stopped by PID on drop, like [`RealServer`](super::RealServer).
#[derive(Debug)]
pub struct RcfServer {
    daemon: Daemon,
    port: u16,
    bind: String,
    policy_path: PathBuf,
}

impl RcfServer {
    /// Write `policy` to `inputs/promises.cf` and start our server on it,
    /// waiting (up to 20 s) until it listens. With `policy.port == 0` a free
    /// port is chosen. The host key is made with the real `cf-key` first, so
    /// both servers can share a work dir layout.
    pub fn start(wd: &Workdir, policy: &ServerPolicy) -> Result<RcfServer, LabError> {
        Self::start_with_flags(wd, policy, &["-v"])
    }

    /// As [`start`](RcfServer::start), with other verbosity flags.
    pub fn start_with_flags(
        wd: &Workdir,
        policy: &ServerPolicy,
        flags: &[&str],
    ) -> Result<RcfServer, LabError> {
        wd.cf_key()?;
        let mut p = policy.clone();
        if p.port == 0 {
            p.port = free_port();
        }
        let policy_path = wd.inputs().join("promises.cf");
        std::fs::write(&policy_path, p.render_bytes())
            .map_err(|e| LabError::io(format!("write {}", policy_path.display()), e))?;
        let bin = rcf_binary("rcf-serverd")?;
        let log = wd.next_log("rcf-serverd", "log");
        let mut cmd = wd.command(&bin);
        cmd.arg("-F")
            .args(flags)
            .arg("--workdir")
            .arg(wd.path())
            .arg("-f")
            .arg(&policy_path);
        let t0 = Instant::now();
        let daemon = Daemon::spawn("rcf-serverd", cmd, &log)?;
        loop {
            let text = daemon.log();
            if !daemon.is_running() {
                return Err(LabError::failed(
                    "rcf-serverd exited at start",
                    tail(&text, 40),
                ));
            }
            if text.contains("Server is starting") && super::port_listening(p.port) {
                break;
            }
            if t0.elapsed() >= START_TIMEOUT {
                return Err(LabError::failed(
                    format!(
                        "rcf-serverd not listening on {} after {START_TIMEOUT:?}",
                        p.port
                    ),
                    tail(&text, 40),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(RcfServer {
            daemon,
            port: p.port,
            bind: p.bind.clone(),
            policy_path,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn host_port(&self) -> String {
        host_port(&self.bind, self.port)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The policy file it runs.
    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.daemon.wait_for_log(needle, timeout)
    }

    /// Whether it still runs.
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// Stop it now (SIGTERM, grace, SIGKILL).
    pub fn stop(mut self) {
        self.daemon.stop();
    }
}
