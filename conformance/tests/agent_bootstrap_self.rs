//! issue 19 must-show: "Bootstrap to self makes a working hub that a real
//! cf-agent bootstraps to."
//!
//! The hub is made of rcf only: the MPF 3.21 masterfiles, `rcf-agent
//! bootstrap` to 127.0.0.1 (its own address: the hub role, masterfiles
//! validated and stamped, put into inputs/), then rcf-serverd running the
//! hub's own bootstrapped MPF policy. A real `cf-agent --bootstrap` on a
//! client then goes all the way through `failsafe.cf`, `update.cf` and
//! `promises.cf` and reports success.
//!
//! The hub listens on 127.0.0.2: cf-agent takes the hub role itself when
//! told to bootstrap to one of its own addresses (127.0.0.1 is one; on
//! this loopback 127.0.0.2 is not an interface address, so the client
//! stays a client). The client's work dir is a sandbox
//! (`CFENGINE_TEST_OVERRIDE_WORKDIR`); the daemons cf-agent starts there
//! (cf-execd, cf-serverd, cf-monitord, from its `bin/`) are wrapped to run
//! in a network namespace of their own (`unshare -n`: the client's
//! cf-serverd binds no port on this host), and every process of that
//! sandbox is stopped by PID when the test ends, even on failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcf_conformance::lab::{
    agent_workdirs, copy_tree, free_port, rcf_agent, rcf_binary, run_tool, trees_equal, Daemon,
    Workdir,
};

const MPF: &str = "/usr/share/cfengine3/masterfiles";

/// The PIDs of every process whose environment names `workdir` as its
/// `CFENGINE_TEST_OVERRIDE_WORKDIR`: the sandbox's processes, and only them.
fn sandbox_pids(workdir: &Path) -> Vec<i32> {
    let want = format!("CFENGINE_TEST_OVERRIDE_WORKDIR={}", workdir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Stops, by PID, every process of the client's sandbox when dropped
/// (SIGTERM, up to 5 s, then SIGKILL).
struct SandboxDaemons {
    workdir: PathBuf,
}

impl SandboxDaemons {
    fn stop(&self) -> Vec<i32> {
        let pids = sandbox_pids(&self.workdir);
        // SAFETY: kill(2) on PIDs just read from /proc whose environment
        // names this test's own sandbox work dir.
        let signal = |pid: i32, sig: i32| unsafe { libc::kill(pid, sig) };
        for &p in &pids {
            signal(p, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in &sandbox_pids(&self.workdir) {
            signal(p, libc::SIGKILL);
        }
        pids
    }
}

impl Drop for SandboxDaemons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client's `bin/`: the real cf-agent and tools, and the daemons
/// wrapped into a network namespace of their own.
fn sandbox_bin(cli: &Workdir) {
    let bin = cli.path().join("bin");
    let real = std::fs::read_link(&bin).unwrap();
    std::fs::remove_file(&bin).unwrap();
    std::fs::create_dir(&bin).unwrap();
    for t in ["cf-agent", "cf-promises", "cf-key", "cf-net", "cf-runagent"] {
        std::os::unix::fs::symlink(real.join(t), bin.join(t)).unwrap();
    }
    for d in ["cf-serverd", "cf-execd", "cf-monitord"] {
        let w = bin.join(d);
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\necho \"$$ {d} $*\" >> '{}'\nexec unshare -n '{}' \"$@\"\n",
                cli.path().join("daemon-starts.log").display(),
                real.join(d).display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn real_cf_agent_bootstraps_to_an_rcf_only_hub() {
    let t0 = Instant::now();
    let (hub, cli) = agent_workdirs("bsself").unwrap();
    let mf = hub.path().join("masterfiles");
    copy_tree(Path::new(MPF), &mf).unwrap();

    // The hub, made by rcf-agent bootstrapping to itself (no cf-agent runs there).
    let b = rcf_agent(&hub, &["-I", "bootstrap", "--no-failsafe", "127.0.0.1"]).unwrap();
    assert!(b.success(), "{}", b.describe());
    b.assert_contains("Assuming role as policy server");
    assert!(hub.path().join("state/am_policy_hub").is_file());
    assert!(mf.join("cf_promises_validated").is_file());
    trees_equal(&mf, &hub.inputs()).unwrap_or_else(|d| panic!("hub inputs: {d}"));

    // rcf-serverd on the hub's own MPF policy.
    let port = free_port();
    let mut cmd = hub.command(&rcf_binary("rcf-serverd").unwrap());
    cmd.args(["-F", "-v", "--workdir"])
        .arg(hub.path())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.2", "-f"])
        .arg(hub.inputs().join("promises.cf"));
    let mut srv = Daemon::spawn(
        "rcf-serverd",
        cmd,
        &hub.path().join("lab-logs/rcf-serverd-mpf.log"),
    )
    .unwrap();
    srv.wait_listening(port, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", srv.log()));

    // The real cf-agent bootstraps to it.
    sandbox_bin(&cli);
    let daemons = SandboxDaemons {
        workdir: cli.path().to_path_buf(),
    };
    let target = format!("127.0.0.2:{port}");
    let agent = cli.bins().agent.clone();
    let run = run_tool(
        &cli,
        &agent,
        &["-I", "--bootstrap", &target],
        None,
        Duration::from_secs(120),
    )
    .unwrap();
    let started = std::fs::read_to_string(cli.path().join("daemon-starts.log")).unwrap_or_default();
    let stopped = daemons.stop();
    srv.stop();
    assert!(run.success(), "{}\n{}", run.describe(), srv.log());
    assert!(
        run.output
            .contains(&format!("Bootstrap to '{target}' completed successfully!")),
        "{}\n--- hub ---\n{}",
        run.describe(),
        srv.log()
    );
    run.assert_contains("This autonomous node assumes the role of voluntary client");
    assert_eq!(
        std::fs::read_to_string(cli.path().join("policy_server.dat")).unwrap(),
        format!("{target}\n")
    );
    assert!(!cli.path().join("state/am_policy_hub").exists());
    for f in [
        "promises.cf",
        "update.cf",
        "cf_promises_validated",
        "services/main.cf",
    ] {
        assert_eq!(
            std::fs::read(cli.inputs().join(f)).unwrap(),
            std::fs::read(mf.join(f)).unwrap(),
            "{f}: the client's copy differs from the hub's masterfiles"
        );
    }
    assert!(
        sandbox_pids(cli.path()).is_empty(),
        "sandbox processes left"
    );
    eprintln!(
        "[agent_bootstrap_self] cf-agent bootstrapped to the rcf-only hub at {target}; daemons it started: {:?}, stopped by PID: {stopped:?}; {:?} wall",
        started.lines().collect::<Vec<_>>(),
        t0.elapsed()
    );
}
