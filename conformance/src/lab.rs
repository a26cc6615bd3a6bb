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
//! * [`make_data_tree`], [`trees_equal`], [`CfrunScript`], [`Lab`]: fixtures.
//! * [`LogLine`], [`parse_log`], [`normalize`]: compare log lines.
//!
//! # Example
//! ```no_run
//! use rcf_conformance::lab::*;
//! use std::time::Duration;
//! let lab = Lab::new("example").unwrap();              // keys + data tree
//! let srv = RealServer::start(&lab.server, &lab.policy()).unwrap();
//! let spec = CopySpec::new(srv.port(), lab.data.share_path("hello.txt"), lab.out("hello.txt"));
//! let run = cf_agent_copy(&lab.client, &spec).unwrap();
//! assert!(run.outcomes[0].ok(), "{}", run.describe());
//! trees_equal(&lab.data.share.join("hello.txt"), &lab.out("hello.txt")).unwrap();
//! assert!(srv.wait_for_log("Closing connection", Duration::from_secs(5)));
//!
//! // Any other server (e.g. rcf-serverd) under the same PID guard:
//! let port = free_port();
//! let mut cmd = std::process::Command::new("/path/to/rcf-serverd");
//! cmd.arg("--port").arg(port.to_string());
//! let ours = Daemon::spawn("rcf-serverd", cmd, &lab.server.logs().join("rcf-serverd.log")).unwrap();
//! ours.wait_listening(port, Duration::from_secs(20)).unwrap();
//! let run = cf_net(&lab.client, &host_port("127.0.0.1", port), &["connect"]).unwrap();
//! ```
//!
//! # Sandboxing rules the harness enforces
//! * Every CFEngine process gets a cleared environment with only `PATH`,
//!   `HOME` (the work dir), `LC_ALL=C` and `CFENGINE_TEST_OVERRIDE_WORKDIR`.
//! * Servers bind loopback only; policies are validated with `cf-promises`
//!   before `cf-serverd` starts, and a start is refused if the log ever says
//!   `going to failsafe` (failsafe listens on `*:5308`).
//! * Every child runs in its own process group and gets
//!   `PR_SET_PDEATHSIG(SIGKILL)`, forked from one long-lived spawner thread,
//!   so it dies with the test process (even on SIGKILL of the test binary)
//!   but not with the test thread that started it. Stopping is SIGTERM to
//!   the group, a grace period, then SIGKILL, always while the leader is
//!   still unreaped so the group id cannot be reused.
//! * Every client run is bounded by a timeout ([`TOOL_TIMEOUT`], 60 s).
//!   cf-agent's own connect timeout is 30 s: put `timeout => "5";` in
//!   [`CopySpec::extra_body`] when pointing it at a server that may hang.
//!
//! # Facts observed with these tests (3.21.0-2, Debian 12)
//! * Exit codes do not tell success: cf-agent exits 0 when a copy failed,
//!   cf-net exits 0 after `Failed to connect to '<host:port>'`. cf-runagent
//!   exits 255 on a trust failure or an EXEC denial.
//! * A fresh copy sets both `promise_repaired` and `promise_kept` classes
//!   (several passes); an unchanged one only `kept`; a missing or denied
//!   source `repair_failed` (not `repair_denied`).
//! * Several copy promises to one server share one connection (agent log
//!   `FindIdle: found connection to '127.0.0.1' already open and ready.`),
//!   even after a refused STAT: the server logs one `Accepting connection`.
//! * cf-runagent sends `EXEC ` (trailing blank) or `EXEC -Da,b`; the server
//!   runs `cfruncommand -D a,b` (argv `["-D", "a,b"]`). `-i` plus `yes` on
//!   stdin trusts a new server key.
//! * cf-serverd: ready (`Server is starting...` and listening) ~0.1 s after
//!   spawn, exits 0 within ~25 ms of SIGTERM, exits 1 at once with `Could
//!   not bind server address` on a busy port. cf-key takes ~0.3 s (2048
//!   bits), a cf-agent copy run ~0.2 s. `ppkeys/` must be 0700 or every
//!   binary dies with `UNTRUSTED: Private key directory ... was not private`.
//! * Everything works unprivileged too (checked as `nobody` with a work dir
//!   it owns); the server then logs `Setting IDENTITY: USERNAME=nobody`.
//!
//! Set `RCF_LAB_KEEP=1` to keep temp dirs (their paths go to stderr) for
//! post-mortem (work dirs of failing tests are always kept); set `RCF_CFE_BINDIR` to use binaries from another dir
//! (default `/usr/bin`).
//!
//! The binaries are required: [`require_cfengine`] fails with
//! `cf-serverd not found at /usr/bin/cf-serverd: install Debian's cfengine3`
//! and tests are expected to unwrap that error (fail, never skip).

mod agent;
mod client;
mod client_replay;
mod either;
mod fixture;
mod haproxy;
mod logs;
mod policy;
mod proc;
mod rcf;
mod real_serverd;
mod runagent;
mod server;
mod tree;
mod workdir;

pub use agent::{agent_workdirs, rcf_agent, spawn_rcf_agent};
pub use client::{
    cf_agent_copies, cf_agent_copies_with_flags, cf_agent_copy, cf_agent_policy, cf_net,
    cf_promises_stamp, cf_runagent, parse_outcomes, run_tool, AgentRun, CfrunScript, CopyOutcome,
    ToolRun,
};
pub use client_replay::{client_replay, ReplayReport};
pub use either::{AnyServer, ServerKind};
pub use fixture::Lab;
pub use haproxy::{config as haproxy_config, HaProxy, HAPROXY};
pub use logs::{normalize, parse_log, LogLine};
pub use policy::{copy_policy, quote, AccessRule, CopySpec, ServerPolicy, LOOPBACKS};
pub use proc::{port_listening, wait_port_listening, Daemon};
pub use rcf::RcfServer;
pub use real_serverd::{
    cf_key_trust_each_other, cf_net_stat, spawn_real_cf_serverd, wait_for_real_log, KillOnDrop,
    PolicyFs, REAL_CF_KEY, REAL_CF_NET, REAL_CF_SERVERD,
};
pub use runagent::{exec_reply_lines, hail_case, ExecCase, ExecOutcome, Hailer, BASIC_EXEC_CASES};
pub use server::RealServer;
pub use tree::{copy_tree, make_data_tree, tree_entries, trees_equal, trees_equal_deref, DataTree};
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
    Timeout {
        what: String,
        timeout: Duration,
        tail: String,
    },
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
        LabError::Io {
            context: context.into(),
            source,
        }
    }
    pub(crate) fn failed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        LabError::Failed {
            what: what.into(),
            detail: detail.into(),
        }
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
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// One of our own binaries (`rcf-serverd`, `rcf-agent`, `rcf-key`): from
/// `$RCF_BIN_DIR` if set, else from the target dir of the running test
/// binary (`<target>/<profile>/<name>`, the test lives in
/// `<target>/<profile>/deps/`). `cargo test -p rcf-conformance` does not
/// build it: run `cargo build -p <name>` (or `--workspace`) first; the
/// error says so.
pub fn rcf_binary(name: &str) -> Result<PathBuf, LabError> {
    let dir = match std::env::var_os("RCF_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().map_err(|e| LabError::io("current_exe", e))?;
            let deps = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            if deps.file_name().is_some_and(|n| n == "deps") {
                deps.parent().map(Path::to_path_buf).unwrap_or(deps)
            } else {
                deps
            }
        }
    };
    let path = dir.join(name);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(LabError::failed(
            format!("{name} not found at {}", path.display()),
            format!("build it first: cargo build -p {name} (same profile and CARGO_TARGET_DIR as the tests), or set RCF_BIN_DIR"),
        ))
    }
}

/// A loopback TCP port that was free a moment ago (bound on 127.0.0.1 and
/// ::1, then dropped), chosen below the kernel's ephemeral port range so
/// no outgoing connection can take it meanwhile. Never hands out the same
/// port twice in one process, so parallel tests do not collide with each
/// other; a collision with another process shows up as a failed server
/// start.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = given.get_or_insert_with(HashSet::new);
    // Below the kernel's ephemeral range when there is room: a port taken
    // from that range (`bind :0`) can be handed to some other test's
    // outgoing connection as its source port before the server binds it
    // (a server that first makes its host key waits long enough), and the
    // server then fails with "Address already in use".
    let below = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > 12_000)
        .map(|low| (10_000u32, low));
    let mut seed =
        u64::from(std::process::id()) ^ (set.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    loop {
        let l = match below {
            Some((lo, hi)) => {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let port = lo + ((seed >> 33) as u32 % (hi - lo));
                match TcpListener::bind(("127.0.0.1", port as u16)) {
                    Ok(l) => l,
                    Err(_) => continue,
                }
            }
            None => TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"),
        };
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
