//! Debian's HAProxy in front of rcf-serverd replicas, as the cluster guide
//! (`docs/cluster.md`) configures it: TCP mode, roundrobin, `send-proxy-v2`
//! to every replica, health checks with `check-send-proxy` (a PROXY v2
//! `LOCAL` header), redispatch to another replica when one refuses the
//! connection. Stopped by PID on drop (it is a [`Daemon`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, Daemon, LabError};

/// Where Debian installs it.
pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// A running HAProxy: agents connect to `127.0.0.1:<front>`.
#[derive(Debug)]
pub struct HaProxy {
    daemon: Daemon,
    front: u16,
    cfg: PathBuf,
}

/// The configuration [`HaProxy::start`] writes (also the guide's shape).
pub fn config(front: u16, backends: &[u16], maxconn: u32, check_ms: u32) -> String {
    let mut s = format!(
        "global\n  maxconn {maxconn}\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  retries 3\n  option redispatch 1\n\
         frontend cfengine\n  bind 127.0.0.1:{front}\n  default_backend replicas\n\
         backend replicas\n  balance roundrobin\n"
    );
    for (i, p) in backends.iter().enumerate() {
        s.push_str(&format!(
            "  server r{} 127.0.0.1:{p} send-proxy-v2 check check-send-proxy inter {check_ms}ms fall 1 rise 2\n",
            i + 1
        ));
    }
    s
}

impl HaProxy {
    /// Write the configuration into `dir` and start HAProxy in the
    /// foreground (`-db`), waiting until its front port listens. Fails
    /// (never skips) when HAProxy is not installed.
    pub fn start(
        dir: &Path,
        backends: &[u16],
        maxconn: u32,
        check_ms: u32,
    ) -> Result<HaProxy, LabError> {
        if !Path::new(HAPROXY).exists() {
            return Err(LabError::failed(
                format!("{HAPROXY} is missing"),
                "apt-get install haproxy".to_string(),
            ));
        }
        let front = free_port();
        let cfg = dir.join(format!("haproxy-{front}.cfg"));
        std::fs::write(&cfg, config(front, backends, maxconn, check_ms))
            .map_err(|e| LabError::io(format!("write {}", cfg.display()), e))?;
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-db").arg("-f").arg(&cfg);
        let daemon = Daemon::spawn("haproxy", cmd, &dir.join(format!("haproxy-{front}.log")))?;
        daemon.wait_listening(front, Duration::from_secs(10))?;
        Ok(HaProxy { daemon, front, cfg })
    }

    /// The port agents connect to.
    pub fn front(&self) -> u16 {
        self.front
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.cfg
    }

    /// Stop it now.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}
