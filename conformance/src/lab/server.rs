//! The real cf-serverd.

use super::client::run_tool;
use super::proc::Daemon;
use super::{
    free_port, host_port, tail, LabError, ServerPolicy, Workdir, START_TIMEOUT, TOOL_TIMEOUT,
};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A running real `cf-serverd -F -l <verbosity> -f <work>/inputs/promises.cf`,
/// output in `lab-logs/cf-serverd-<n>.log` of its work dir. Stopped by PID
/// on drop (SIGTERM, 5 s grace, SIGKILL).
#[derive(Debug)]
pub struct RealServer {
    daemon: Daemon,
    port: u16,
    bind: String,
    policy_path: PathBuf,
    workdir: PathBuf,
    startup: Duration,
}

impl RealServer {
    /// Start with `-v` (verbose). See [`RealServer::start_with_flags`].
    pub fn start(wd: &Workdir, policy: &ServerPolicy) -> Result<RealServer, LabError> {
        Self::start_with_flags(wd, policy, &["-v"])
    }

    /// Write `policy` to `inputs/promises.cf`, validate it with `cf-promises
    /// -c`, start `cf-serverd -F -l <flags> -f <abs path>` and wait (up to
    /// 20 s) for `Server is starting...` in the log and the port to listen.
    /// Fails with the log tail if the log says `going to failsafe` or the
    /// process exits. Creates the host key if missing. With `policy.port ==
    /// 0` a free port is chosen (retried up to 3 times on a lost race).
    pub fn start_with_flags(
        wd: &Workdir,
        policy: &ServerPolicy,
        flags: &[&str],
    ) -> Result<RealServer, LabError> {
        if !is_loopback(&policy.bind) {
            return Err(LabError::failed(
                "refusing to start cf-serverd",
                format!("bind address {:?} is not loopback", policy.bind),
            ));
        }
        wd.cf_key()?;
        let attempts = if policy.port == 0 { 3 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let mut p = policy.clone();
            if p.port == 0 {
                p.port = free_port();
            }
            match Self::start_once(wd, &p, flags) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn start_once(
        wd: &Workdir,
        policy: &ServerPolicy,
        flags: &[&str],
    ) -> Result<RealServer, LabError> {
        let inputs = wd.inputs();
        for f in [
            "failsafe.cf",
            "cf_promises_release_id",
            "cf_promises_validated",
        ] {
            let _ = std::fs::remove_file(inputs.join(f));
        }
        let policy_path = inputs.join("promises.cf");
        std::fs::write(&policy_path, policy.render_bytes())
            .map_err(|e| LabError::io(format!("write {}", policy_path.display()), e))?;
        let pp = policy_path.to_string_lossy().into_owned();
        let check = run_tool(
            wd,
            &wd.bins().promises,
            &["-c", "-f", &pp],
            None,
            TOOL_TIMEOUT,
        )?;
        if !check.success() {
            return Err(LabError::failed(
                format!("server policy {pp} does not validate"),
                format!("{}\n--- policy ---\n{}", check.output, policy.render()),
            ));
        }
        if super::port_listening(policy.port) {
            return Err(LabError::failed(
                "cf-serverd start",
                format!("port {} is already in use", policy.port),
            ));
        }
        let log = wd.next_log("cf-serverd", "log");
        let mut cmd = wd.command(&wd.bins().serverd);
        cmd.arg("-F")
            .arg("-l")
            .args(flags)
            .arg("-f")
            .arg(&policy_path);
        let t0 = Instant::now();
        let daemon = Daemon::spawn("cf-serverd", cmd, &log)?;
        let deadline = t0 + START_TIMEOUT;
        loop {
            let text = daemon.log();
            if text.contains("going to failsafe") {
                return Err(LabError::failed(
                    "cf-serverd rejected the policy (failsafe)",
                    tail(&text, 40),
                ));
            }
            if !daemon.is_running() {
                return Err(LabError::failed(
                    "cf-serverd exited at start",
                    tail(&text, 40),
                ));
            }
            if text.contains("Server is starting") && super::port_listening(policy.port) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(LabError::failed(
                    format!(
                        "cf-serverd not listening on {} after {START_TIMEOUT:?}",
                        policy.port
                    ),
                    tail(&text, 40),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(RealServer {
            daemon,
            port: policy.port,
            bind: policy.bind.clone(),
            policy_path,
            workdir: wd.path().to_path_buf(),
            startup: t0.elapsed(),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>` (or `[::1]:<port>`), for `-H`.
    pub fn host_port(&self) -> String {
        host_port(&self.bind, self.port)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The work dir it runs in.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The policy file it was started with.
    pub fn policy_path(&self) -> &Path {
        &self.policy_path
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        self.daemon.log_path()
    }

    /// From spawn to "listening and `Server is starting`".
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The current log length, to pass to [`RealServer::log_since`] later.
    pub fn log_mark(&self) -> usize {
        self.log().len()
    }

    /// The log written after `mark` (from [`RealServer::log_mark`]).
    pub fn log_since(&self, mark: usize) -> String {
        let l = self.log();
        l.get(mark..).unwrap_or("").to_string()
    }

    /// Poll the log until it contains `needle` or `timeout` passes.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.daemon.wait_for_log(needle, timeout)
    }

    /// Still running?
    pub fn is_running(&self) -> bool {
        self.daemon.is_running()
    }

    /// Stop it (SIGTERM, grace, SIGKILL) and return its exit status and
    /// final log.
    pub fn stop(mut self) -> (Option<ExitStatus>, String) {
        let st = self.daemon.stop();
        (st, self.daemon.log())
    }
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

impl Drop for RealServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("rcf lab: cf-serverd log: {}", self.log_path().display());
        }
    }
}
