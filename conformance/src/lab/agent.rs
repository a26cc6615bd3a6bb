//! Our `rcf-agent` in the lab: run it (bounded) or spawn it (PID-guarded)
//! in a work dir's sandbox environment, like the real clients.

use super::client::run_tool;
use super::proc::Daemon;
use super::{rcf_binary, LabError, ToolRun, Workdir, TOOL_TIMEOUT};

/// Run `rcf-agent --workdir <wd> <args...>` to completion (bounded by
/// [`TOOL_TIMEOUT`]); output is stdout and stderr interleaved.
pub fn rcf_agent(wd: &Workdir, args: &[&str]) -> Result<ToolRun, LabError> {
    let bin = rcf_binary("rcf-agent")?;
    let wdp = wd.path().to_string_lossy().into_owned();
    let mut a = vec!["--workdir", wdp.as_str()];
    a.extend_from_slice(args);
    run_tool(wd, &bin, &a, None, TOOL_TIMEOUT)
}

/// Start `rcf-agent --workdir <wd> <args...>` in the background (for fault
/// tests that act while it runs); stopped by PID when dropped.
pub fn spawn_rcf_agent(wd: &Workdir, args: &[&str]) -> Result<Daemon, LabError> {
    let bin = rcf_binary("rcf-agent")?;
    let log = wd.next_log("rcf-agent-bg", "log");
    let mut cmd = wd.command(&bin);
    cmd.arg("--workdir").arg(wd.path()).args(args);
    Daemon::spawn("rcf-agent", cmd, &log)
}

/// The work dirs of an rcf-agent test: `<name>-srv` for a server and
/// `<name>-cli` for the agent, each with its host key, after checking that
/// the real CFEngine, `rcf-agent` and `rcf-serverd` are all there (so a
/// missing peer fails the test up front instead of half-way).
pub fn agent_workdirs(name: &str) -> Result<(Workdir, Workdir), LabError> {
    super::require_cfengine()?;
    rcf_binary("rcf-agent")?;
    rcf_binary("rcf-serverd")?;
    let srv = Workdir::new(&format!("{name}-srv"))?;
    let cli = Workdir::new(&format!("{name}-cli"))?;
    srv.cf_key()?;
    cli.cf_key()?;
    Ok((srv, cli))
}
