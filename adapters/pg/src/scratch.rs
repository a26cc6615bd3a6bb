//! A throw-away PostgreSQL server for tests (feature `scratch-server`):
//! `initdb` in a temporary directory, listening on 127.0.0.1 only on a free
//! port (plus a Unix socket in the same directory), stopped by its PID when
//! dropped, so a failing test still stops it. Uses Debian's binaries under
//! `/usr/lib/postgresql/*/bin`. As root (CI), the server runs as the
//! `postgres` user, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A running scratch server; see the module documentation.
#[derive(Debug)]
pub struct ScratchPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn find_bin() -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (apt-get install postgresql)"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install postgresql)".into())
}

impl ScratchPostgres {
    /// Create the cluster (superuser `rcf`, trust authentication) and start
    /// it; waits until it accepts connections.
    pub fn start() -> Result<Self, String> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("rcf-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        // SAFETY: geteuid has no preconditions.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|e| format!("chown: {e}"))?
                .success();
            if !ok {
                return Err("chown postgres: failed".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let me = ScratchPostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = me.data();
        let out = me
            .cmd("initdb")
            .args(["-U", "rcf", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        me.launch()?;
        Ok(me)
    }

    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=50",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .map_err(|e| format!("pg_ctl start: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            ));
        }
        Ok(())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgresql://rcf@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgresql://rcf@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's PID, from its pid file, while running.
    pub fn pid(&self) -> Option<i32> {
        let t = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        t.lines().next()?.trim().parse().ok()
    }

    /// Stop it now (SIGQUIT to the postmaster: immediate shutdown, as a
    /// crash would), waiting until the process is gone (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        // SAFETY: plain signal to a PID we read from our own server's pid file.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: signal 0 only checks the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // An immediate shutdown can leave the pid file: remove it so the
        // next start does not mistake it for a running server.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
    }

    /// Start it again after [`Self::stop`], on the same port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.launch()
    }

    /// The temporary directory holding data, log and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}
