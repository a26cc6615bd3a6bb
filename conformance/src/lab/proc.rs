//! PID-guarded subprocesses: spawn in a fresh process group with
//! `PR_SET_PDEATHSIG`, bounded waits, SIGTERM → grace → SIGKILL.

use super::{tail, LabError};
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);
/// How long a stopping process gets between SIGTERM and SIGKILL.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

type SpawnReq = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Fork every child from one long-lived thread. `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked exits, so forking from test threads would
/// kill a server as soon as the test thread that started it ends (e.g. a
/// server shared between tests). This thread lives until the process
/// exits, so children die exactly when the test process dies, whatever
/// thread started or stops them.
///
/// The child gets the CPU affinity of the thread that asked, as if that
/// thread had forked it: a benchmark that narrows its own thread to one
/// CPU before starting a server (`rcf-bench --pin`) means the server to
/// start there and size itself for that CPU, not for the spawner's mask.
fn spawn_via_spawner(mut cmd: Command) -> std::io::Result<Child> {
    use std::sync::mpsc::{channel, Sender};
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes inside it.
    let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the calling thread's mask into a cpu_set_t of the size passed.
    let have =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mask) }
            == 0;
    if have {
        // SAFETY: sched_setaffinity is a plain syscall, async-signal-safe
        // between fork and exec; `mask` is moved into the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    use std::sync::{Mutex, OnceLock};
    static SPAWNER: OnceLock<Mutex<Sender<SpawnReq>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = channel::<SpawnReq>();
        std::thread::Builder::new()
            .name("rcf-lab-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the rcf-lab spawner thread");
        Mutex::new(tx)
    });
    let (rtx, rrx) = channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, rtx))
        .map_err(|_| std::io::Error::other("rcf-lab spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| std::io::Error::other("rcf-lab spawner thread is gone"))?
}

/// Spawn `cmd` with stdout+stderr appended to `log`, stdin piped if `stdin`
/// is given (written and closed at once), in its own process group and with
/// PDEATHSIG set (forked from the spawner thread, see above).
pub(crate) fn spawn_logged(
    mut cmd: Command,
    log: &Path,
    stdin: Option<&[u8]>,
) -> Result<Child, LabError> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(format!("open log {}", log.display()), e))?;
    let err = out.try_clone().map_err(|e| LabError::io("dup log fd", e))?;
    cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    let parent = std::process::id() as libc::pid_t;
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // the test process died between fork and prctl: do not outlive it
            if libc::getppid() != parent {
                return Err(std::io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    let program = cmd.get_program().to_owned();
    let mut child =
        spawn_via_spawner(cmd).map_err(|e| LabError::io(format!("spawn {program:?}"), e))?;
    if let Some(data) = stdin {
        if let Some(mut pipe) = child.stdin.take() {
            // Small inputs only (prompt answers); a full pipe would block.
            let _ = pipe.write_all(data);
        }
    }
    Ok(child)
}

/// Has `pid` exited? Does not reap it (WNOWAIT), so its pid and process
/// group id stay reserved until [`Child::wait`].
pub(crate) fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: plain syscall on a zeroed siginfo_t.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 {
            // ECHILD: already reaped (should not happen), treat as exited.
            return true;
        }
        info.si_pid() != 0
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // SAFETY: signals only the process group we created (pgid == our
    // child's pid, still unreaped so the id cannot have been reused).
    unsafe {
        if libc::kill(-(pid as libc::pid_t), sig) != 0 {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// Stop `child` and everything in its process group: SIGTERM, up to
/// `grace`, SIGKILL; then reap it. Returns its exit status.
pub(crate) fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let pid = child.id();
    if !exited_unreaped(pid) {
        signal_group(pid, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while !exited_unreaped(pid) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
    // Kill stragglers in the group (e.g. a cfruncommand) and the leader if
    // it ignored SIGTERM. The leader is unreaped here, so this is safe.
    signal_group(pid, libc::SIGKILL);
    child.wait().ok()
}

/// Wait up to `timeout` for `child` to exit by itself; kill it (group) on
/// expiry. `Ok(status)` or `Err(())` on timeout.
pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<ExitStatus, ()> {
    let pid = child.id();
    let deadline = Instant::now() + timeout;
    loop {
        if exited_unreaped(pid) {
            // Leader is gone: reap children it may have left in the group.
            signal_group(pid, libc::SIGKILL);
            return child.wait().map_err(|_| ());
        }
        if Instant::now() >= deadline {
            terminate(child, Duration::from_millis(500));
            return Err(());
        }
        std::thread::sleep(POLL);
    }
}

/// A long-running process (a server) guarded by PID: its output goes to a
/// log file, and it is stopped (SIGTERM, grace, SIGKILL, by PID/process
/// group) when dropped, even on panic. Use it for `rcf-serverd` too.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    name: String,
    log: PathBuf,
}

impl Daemon {
    /// Spawn `cmd` (env and args already set) with stdout+stderr appended to
    /// `log`. `name` is used in messages.
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> Result<Daemon, LabError> {
        let child = spawn_logged(cmd, log, None)?;
        Ok(Daemon {
            child: Some(child),
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Still running?
    pub fn is_running(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| !exited_unreaped(c.id()))
    }

    /// Poll the log until it contains `needle` (true) or `timeout` passes.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait until `port` is listening on loopback (see [`port_listening`]);
    /// fails with the log tail if the process exits or `timeout` passes.
    pub fn wait_listening(&self, port: u16, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_running() {
                return Err(LabError::failed(
                    format!("{} exited before listening on port {port}", self.name),
                    tail(&self.log(), 40),
                ));
            }
            if port_listening(port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::failed(
                    format!(
                        "{} not listening on port {port} after {timeout:?}",
                        self.name
                    ),
                    tail(&self.log(), 40),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stop it now (SIGTERM, grace, SIGKILL); returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, GRACE)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Is anything listening on TCP `port` (any address, v4 or v6)? Reads
/// `/proc/net/tcp{,6}`, so it never connects (a probe connection would
/// show up in the server's log).
pub fn port_listening(port: u16) -> bool {
    let want = format!("{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|s| {
            s.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3
                    && cols[3] == "0A"
                    && cols[1].rsplit(':').next() == Some(want.as_str())
            })
        })
    })
}

/// Poll [`port_listening`] until true or `timeout`.
pub fn wait_port_listening(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_listening(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
