//! The real clients: cf-agent, cf-net, cf-runagent (and any tool run).

use super::policy::copy_policy;
use super::proc::{spawn_logged, wait_bounded};
use super::{grep, tail, CopySpec, LabError, Workdir, TOOL_TIMEOUT};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A finished client run.
#[derive(Debug, Clone)]
pub struct ToolRun {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    /// stdout and stderr, interleaved as written (lossy UTF-8).
    pub output: String,
    /// Where `output` is kept (`lab-logs/` of the work dir).
    pub log: PathBuf,
    pub elapsed: Duration,
}

impl ToolRun {
    /// Exit code 0?
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code (None if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Does the output contain `needle`?
    pub fn contains(&self, needle: &str) -> bool {
        self.output.contains(needle)
    }

    /// Output lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<&str> {
        grep(&self.output, needle)
    }

    /// Panic with the command, exit status and output unless the output
    /// contains `needle`.
    #[track_caller]
    pub fn assert_contains(&self, needle: &str) {
        assert!(
            self.contains(needle),
            "{}\nexpected output to contain {needle:?}",
            self.describe()
        );
    }

    /// The output without CFEngine-style log lines (`   error: …`,
    /// `  notice: …`, `verbose: …`; cf-net, cf-agent and rcf-agent print
    /// them alike) and blank lines: what a cf-net-style tool answered, for
    /// comparing two tools' answers.
    pub fn result_lines(&self) -> Vec<String> {
        const LEVELS: [&str; 7] = [
            "critical:",
            "error:",
            "warning:",
            "notice:",
            "info:",
            "verbose:",
            "debug:",
        ];
        self.output
            .lines()
            .filter(|l| !LEVELS.iter().any(|p| l.trim_start().starts_with(p)))
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Command, status, log path and the output tail, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "$ {}\nstatus {:?}, {:?}, log {}\n--- output (tail) ---\n{}",
            self.cmdline,
            self.status,
            self.elapsed,
            self.log.display(),
            tail(&self.output, 60)
        )
    }
}

/// `cf-promises -T masterfiles` in `wd`'s sandbox: 3.21 checks the
/// policy and, when it is valid, stamps the tree with
/// `cf_promises_validated` and `cf_promises_release_id` (what a hub's
/// masterfiles need before agents will take an update from it).
pub fn cf_promises_stamp(wd: &Workdir, masterfiles: &Path) -> Result<ToolRun, LabError> {
    let cfp = wd.bins().promises.clone();
    run_tool(
        wd,
        &cfp,
        &["-T", &masterfiles.to_string_lossy()],
        None,
        crate::lab::TOOL_TIMEOUT,
    )
}

/// Run `program args...` in `wd`'s sandbox env (see [`Workdir::command`]),
/// output to a fresh `lab-logs/<program>-<n>.log`, `stdin` written and
/// closed if given, killed (process group) after `timeout`.
pub fn run_tool(
    wd: &Workdir,
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<ToolRun, LabError> {
    let stem = program
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tool".into());
    let log = wd.next_log(&stem, "log");
    let cmdline = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = wd.command(program);
    cmd.args(args);
    let t0 = Instant::now();
    let mut child = spawn_logged(cmd, &log, stdin.map(str::as_bytes))?;
    let res = wait_bounded(&mut child, timeout);
    let elapsed = t0.elapsed();
    let output = std::fs::read(&log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    match res {
        Ok(status) => Ok(ToolRun {
            cmdline,
            status,
            output,
            log,
            elapsed,
        }),
        Err(()) => Err(LabError::Timeout {
            what: cmdline,
            timeout,
            tail: tail(&output, 40),
        }),
    }
}

/// What the classes of one copy promise said (from `RCFLAB-OUTCOME` reports).
/// cf-agent evaluates a files promise in several passes, so a fresh copy
/// shows up as `repaired` AND `kept` (observed on 3.21); an unchanged file
/// is `kept` only; a missing or denied source is `failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    pub kept: bool,
    pub repaired: bool,
    pub failed: bool,
    pub denied: bool,
    pub timeout: bool,
}

impl CopyOutcome {
    /// Repaired or kept, and nothing failed/denied/timed out.
    pub fn ok(&self) -> bool {
        (self.kept || self.repaired) && !self.failed && !self.denied && !self.timeout
    }
}

/// A finished cf-agent run of copy promises.
#[derive(Debug, Clone)]
pub struct AgentRun {
    pub run: ToolRun,
    /// The generated client policy.
    pub policy: PathBuf,
    /// One per [`CopySpec`], in order.
    pub outcomes: Vec<CopyOutcome>,
}

impl std::ops::Deref for AgentRun {
    type Target = ToolRun;
    fn deref(&self) -> &ToolRun {
        &self.run
    }
}

/// Run the real `cf-agent -K -f <policy> <flags>` on an arbitrary client
/// policy text (written to `lab-logs/agent-policy-<n>.cf` as the bytes its
/// `rcf_core::bytestr` encoding stands for, so a copy source may name a
/// file that is not UTF-8), bounded by [`TOOL_TIMEOUT`]. `flags` e.g.
/// `["-v"]` or `["-I"]`.
pub fn cf_agent_policy(
    client: &Workdir,
    policy: &str,
    flags: &[&str],
) -> Result<(ToolRun, PathBuf), LabError> {
    let pol = client.next_log("agent-policy", "cf");
    std::fs::write(&pol, rcf_core::bytestr::decode(policy))
        .map_err(|e| LabError::io(format!("write {}", pol.display()), e))?;
    let p = pol.to_string_lossy().into_owned();
    let mut args = vec!["-K", "-f", &p];
    args.extend_from_slice(flags);
    let agent = client.bins().agent.clone();
    Ok((run_tool(client, &agent, &args, None, TOOL_TIMEOUT)?, pol))
}

/// One copy promise in one `cf-agent -K -v` run. See [`cf_agent_copies`].
pub fn cf_agent_copy(client: &Workdir, spec: &CopySpec) -> Result<AgentRun, LabError> {
    cf_agent_copies(client, std::slice::from_ref(spec))
}

/// Several copy promises, in order, in ONE `cf-agent -K -v` run (so they
/// share cf-agent's cached connection per server). Creates the client key
/// if missing and each destination's parent dir; does not delete existing
/// destinations. cf-agent exits 0 even when a copy failed: judge by
/// [`AgentRun::outcomes`], the files and the output.
pub fn cf_agent_copies(client: &Workdir, specs: &[CopySpec]) -> Result<AgentRun, LabError> {
    cf_agent_copies_with_flags(client, specs, &["-v"])
}

/// [`cf_agent_copies`] with other cf-agent flags instead of `-v` (e.g.
/// `["-d"]`, `["-I"]`; outcomes are parsed whatever the verbosity).
pub fn cf_agent_copies_with_flags(
    client: &Workdir,
    specs: &[CopySpec],
    flags: &[&str],
) -> Result<AgentRun, LabError> {
    client.cf_key()?;
    for s in specs {
        if let Some(parent) = s.dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| LabError::io(format!("mkdir {}", parent.display()), e))?;
        }
    }
    let (run, policy) = cf_agent_policy(client, &copy_policy(specs), flags)?;
    let outcomes = parse_outcomes(&run.output, specs.len());
    Ok(AgentRun {
        run,
        policy,
        outcomes,
    })
}

/// Read the `R: RCFLAB-OUTCOME <i> <word>` reports of a [`copy_policy`]
/// run with `n` promises.
pub fn parse_outcomes(output: &str, n: usize) -> Vec<CopyOutcome> {
    let mut outcomes = vec![CopyOutcome::default(); n];
    for line in output.lines() {
        // only "R: ..." report lines, not a verbose echo of the promise
        let Some(rest) = line.split("R: RCFLAB-OUTCOME ").nth(1) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(i), Some(o)) = (it.next().and_then(|i| i.parse::<usize>().ok()), it.next())
        else {
            continue;
        };
        let Some(out) = outcomes.get_mut(i) else {
            continue;
        };
        match o {
            "kept" => out.kept = true,
            "repaired" => out.repaired = true,
            "failed" => out.failed = true,
            "denied" => out.denied = true,
            "timeout" => out.timeout = true,
            _ => {}
        }
    }
    outcomes
}

/// Run the real `cf-net -H <host_port> <args...>` (e.g. `["connect"]`,
/// `["-v", "stat", "/path"]`), bounded by [`TOOL_TIMEOUT`]. Creates the
/// client key if missing. cf-net trusts a new server key on first use.
pub fn cf_net(client: &Workdir, host_port: &str, args: &[&str]) -> Result<ToolRun, LabError> {
    client.cf_key()?;
    let mut a = vec!["-H", host_port];
    a.extend_from_slice(args);
    let net = client.bins().net.clone();
    run_tool(client, &net, &a, None, TOOL_TIMEOUT)
}

/// Run the real `cf-runagent -f <minimal policy> <args...>` (pass
/// `-H host:port` in `args`), `stdin` fed if given, bounded by
/// [`TOOL_TIMEOUT`]. If `args` contains `-f` the minimal policy is not
/// added. cf-runagent never trusts a new server key: trust both ways first
/// ([`Workdir::trust`]). Remote output lines are prefixed `<ip>> `.
pub fn cf_runagent(
    client: &Workdir,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<ToolRun, LabError> {
    client.cf_key()?;
    let mut a: Vec<String> = Vec::new();
    if !args.iter().any(|x| *x == "-f" || x.starts_with("--file")) {
        let pol = client.inputs().join("rcflab-runagent.cf");
        std::fs::write(
            &pol,
            "body common control\n{\n  bundlesequence => { \"rcflab_noop\" };\n}\nbundle agent rcflab_noop\n{\n  vars:\n    \"noop\" string => \"noop\";\n}\n",
        )
        .map_err(|e| LabError::io(format!("write {}", pol.display()), e))?;
        a.push("-f".into());
        a.push(pol.to_string_lossy().into_owned());
    }
    a.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let ra = client.bins().runagent.clone();
    run_tool(client, &ra, &refs, stdin, TOOL_TIMEOUT)
}

/// A harmless `cfruncommand`: a `/bin/sh` script that prints
/// `rcflab cfruncommand ran with args: <args>` and appends one line per
/// invocation to its log: `ARGV [arg1] [arg2] ...`.
#[derive(Debug, Clone)]
pub struct CfrunScript {
    /// The script (mode 0755).
    pub path: PathBuf,
    /// Its invocation log.
    pub log: PathBuf,
}

impl CfrunScript {
    /// Write `dir/cfrun.sh` (logging to `dir/cfrun-invocations.log`).
    pub fn write(dir: &Path) -> Result<CfrunScript, LabError> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("cfrun.sh");
        let log = dir.join("cfrun-invocations.log");
        let script = format!(
            "#!/bin/sh\necho \"rcflab cfruncommand ran with args: $*\"\n{{ printf 'ARGV'; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; printf '\\n'; }} >> '{}'\nexit 0\n",
            log.display()
        );
        std::fs::write(&path, script)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| LabError::io(format!("chmod {}", path.display()), e))?;
        Ok(CfrunScript { path, log })
    }

    /// The argv of each invocation so far (without argv\[0\]).
    pub fn invocations(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("ARGV"))
            .map(|rest| {
                let mut args = Vec::new();
                let mut s = rest;
                while let Some(start) = s.find(" [") {
                    let after = &s[start + 2..];
                    // the closing "]" is the one followed by " [" or the end
                    let end = after
                        .find("] [")
                        .unwrap_or_else(|| after.rfind(']').unwrap_or(after.len()));
                    args.push(after[..end].to_string());
                    s = &after[end.min(after.len())..];
                    s = s.strip_prefix(']').unwrap_or(s);
                }
                args
            })
            .collect()
    }
}
