//! Interop lab: the real CFEngine 3.21 binaries, sandboxed on loopback.
//!
//! Every interop test in the project drives the real `cf-serverd`,
//! `cf-agent`, `cf-net`, `cf-runagent`, `cf-key` and `cf-promises` through
//! this module, the Rust counterpart of `/work/shared/interop/cfe-lab.sh`.
//!
//! * [`Workdir`]: a throw-away CFEngine work dir (keys, inputs, `bin ->
//!   /usr/bin`) in a temp dir, plus a `scratch/` dir for data and outputs.
//! * [`ServerPolicy`] / [`AccessRule`]: render a server `promises.cf`.
//! * [`RealServer`]: the real `cf-serverd` in the foreground, logging to a
//!   file, stopped by PID when dropped.
//! * [`cf_agent_copies`], [`cf_net`], [`cf_runagent`]: the real clients,
//!   pointed at any `host:port` (the real server or ours).
//! * [`Daemon`]: the same PID-guarded process handling for any other server
//!   binary (e.g. `rcf-serverd`).
//! * [`make_data_tree`], [`trees_equal`], [`CfrunScript`]: fixtures.
//!
//! # Sandboxing rules the harness enforces
//! * Every CFEngine process gets a cleared environment with only `PATH`,
//!   `HOME` (the work dir), `LC_ALL=C` and `CFENGINE_TEST_OVERRIDE_WORKDIR`.
//! * Servers bind loopback only; policies are validated with `cf-promises`
//!   before `cf-serverd` starts, and a start is refused if the log ever says
//!   `going to failsafe` (failsafe listens on `*:5308`).
//! * Every child runs in its own process group and gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`: it dies with the thread that spawned it.
//!   So create servers in the thread that uses them (the test thread).
//!   Stopping is SIGTERM to the group, a grace period, then SIGKILL, always
//!   while the leader is still unreaped so the group id cannot be reused.
//! * Every client run is bounded by a timeout.
//!
//! Set `RCF_LAB_KEEP=1` to keep temp dirs (their paths go to stderr) for
//! post-mortem; set `RCF_CFE_BINDIR` to use binaries from another dir
//! (default `/usr/bin`).
//!
//! The binaries are required: [`require_cfengine`] fails with
//! `cf-serverd not found at /usr/bin/cf-serverd: install Debian's cfengine3`
//! and tests are expected to unwrap that error (fail, never skip).

mod agent;
mod client;
mod client_replay;
mod policy;
mod proc;
mod rcf;
mod server;
mod tree;
mod workdir;

pub use client::{
    cf_agent_copies, cf_agent_copies_with_flags, cf_agent_copy, cf_agent_policy, cf_net, cf_runagent,
    parse_outcomes, run_tool, AgentRun, CfrunScript, CopyOutcome, ToolRun,
};
pub use agent::{rcf_agent, spawn_rcf_agent};
pub use client_replay::{client_replay, ReplayReport};
pub use policy::{copy_policy, quote, AccessRule, CopySpec, ServerPolicy, LOOPBACKS};
pub use proc::{port_listening, wait_port_listening, Daemon};
pub use rcf::{rcf_bin, RcfServer};
pub use server::RealServer;
pub use tree::{make_data_tree, trees_equal, trees_equal_deref, DataTree};
pub use workdir::Workdir;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Default bound on a client run (cf-agent, cf-net, cf-runagent, cf-key).
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on a server start (policy validation excluded).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Everything that can go wrong in the lab. `Debug` prints the same text
/// as `Display`, so `.unwrap()` shows a readable message.
#[derive(thiserror::Error)]
pub enum LabError {
    /// A CFEngine binary is missing: the test must fail, not skip.
    #[error("{name} not found at {}: install Debian's cfengine3 (apt-get install cfengine3)", path.display())]
    MissingBinary { name: &'static str, path: PathBuf },
    /// An I/O error, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A subprocess did not finish in time (it has been killed).
    #[error("{what} timed out after {timeout:?} and was killed; output tail:\n{tail}")]
    Timeout { what: String, timeout: Duration, tail: String },
    /// Something failed; `detail` holds the relevant output or log tail.
    #[error("{what}: {detail}")]
    Failed { what: String, detail: String },
}

impl std::fmt::Debug for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io { context: context.into(), source }
    }
    pub(crate) fn failed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        LabError::Failed { what: what.into(), detail: detail.into() }
    }
}

/// Paths of the real CFEngine binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfeBins {
    /// The directory holding them (`/usr/bin`); work dirs link `bin` to it.
    pub dir: PathBuf,
    pub serverd: PathBuf,
    pub agent: PathBuf,
    pub key: PathBuf,
    pub net: PathBuf,
    pub runagent: PathBuf,
    pub promises: PathBuf,
}

/// Locate the real CFEngine binaries (in `$RCF_CFE_BINDIR`, default
/// `/usr/bin`); error naming the first one missing.
pub fn require_cfengine() -> Result<CfeBins, LabError> {
    let dir = std::env::var_os("RCF_CFE_BINDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"));
    let find = |name: &'static str| -> Result<PathBuf, LabError> {
        let path = dir.join(name);
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(LabError::MissingBinary { name, path })
        }
    };
    Ok(CfeBins {
        serverd: find("cf-serverd")?,
        agent: find("cf-agent")?,
        key: find("cf-key")?,
        net: find("cf-net")?,
        runagent: find("cf-runagent")?,
        promises: find("cf-promises")?,
        dir,
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// A loopback TCP port that was free a moment ago (bind `127.0.0.1:0`, read,
/// drop). Never hands out the same port twice in one process, so parallel
/// tests do not collide with each other; a collision with another process
/// shows up as a failed server start.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = given.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local_addr").port();
        // also make sure ::1 is free on that port when IPv6 is there
        let v6_ok = match TcpListener::bind("[::1]:0") {
            Ok(_) => TcpListener::bind(("::1", port)).is_ok(),
            Err(_) => true,
        };
        drop(l);
        if v6_ok && set.insert(port) {
            return port;
        }
    }
}

/// `host:port` as the CFEngine `-H` options want it (`[::1]:port` for v6).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Whether `RCF_LAB_KEEP` asks to keep temp dirs.
pub(crate) fn keep_dirs() -> bool {
    std::env::var_os("RCF_LAB_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Lines of `text` containing `needle`.
pub fn grep<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}
