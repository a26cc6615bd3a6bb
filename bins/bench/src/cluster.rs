//! `compare --cluster`: the same load against the cluster mode of issue 20,
//! in the same run as the single servers: one rcf-serverd with the
//! PostgreSQL trust store (`rcf+pg`, the database's cost against ppkeys),
//! and Debian's HAProxy (TCP mode, roundrobin, `send-proxy-v2`) in front of
//! one and two such replicas presenting the same hub key (`haproxy>1`,
//! `haproxy>2`: the proxy hop's cost). PostgreSQL runs from initdb/pg_ctl in
//! a temporary directory on loopback; everything is stopped by PID.
//!
//! Each simulated agent connects from its own 127/8 address to HAProxy,
//! which hands that address on in the PROXY header, so the replicas apply
//! one connection per address to the agents, not to the proxy.

use std::process::Command;
use std::sync::Arc;

use rcf_conformance::lab::{
    rcf_binary, AnyServer, HaProxy, ServerKind, ServerPolicy, Workdir, HAPROXY,
};
use rcf_pg::scratch::ScratchPostgres;

use crate::load::{self, Shared};
use crate::{lab, procstat, CompareArgs, Row};

/// The cluster variants measured, in order.
pub const VARIANTS: [Variant; 3] = [Variant::Direct, Variant::Proxied(1), Variant::Proxied(2)];

/// One cluster row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One rcf-serverd with the PostgreSQL store, no proxy.
    Direct,
    /// HAProxy in front of this many replicas.
    Proxied(usize),
}

impl Variant {
    /// The row's label.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Direct => "rcf+pg",
            Variant::Proxied(1) => "haproxy>1",
            Variant::Proxied(_) => "haproxy>2",
        }
    }
}

/// PostgreSQL with the schema and the agents' key trusted, and two
/// replica work dirs holding the hub's key.
pub struct Rig {
    _pg: ScratchPostgres,
    url: String,
    replicas: Vec<Workdir>,
    tmp: tempfile::TempDir,
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {out:?}"))
    }
}

impl Rig {
    /// Start PostgreSQL, migrate it (`rcf-serverd --migrate`), trust the
    /// agents' key in it (`rcf-key --trust-store -t`), and deploy `hub`'s
    /// key to two replica work dirs.
    pub fn start(hub: &Workdir, client: &Workdir) -> Result<Rig, String> {
        if !std::path::Path::new(HAPROXY).exists() {
            return Err(format!("{HAPROXY} is missing (apt-get install haproxy)"));
        }
        let pg = ScratchPostgres::start()?;
        let url = pg.url();
        run_ok(
            Command::new(lab(rcf_binary("rcf-serverd"))?).args([
                "--trust-store",
                &url,
                "--migrate",
            ]),
            "rcf-serverd --migrate",
        )?;
        run_ok(
            Command::new(lab(rcf_binary("rcf-key"))?)
                .args(["--trust-store", &url, "-t"])
                .arg(client.pubkey_path()),
            "rcf-key --trust-store -t",
        )?;
        let mut replicas = Vec::new();
        for i in 0..2 {
            let wd = lab(Workdir::new(&format!("bench-replica{i}")))?;
            for f in ["localhost.priv", "localhost.pub"] {
                std::fs::copy(hub.ppkeys().join(f), wd.ppkeys().join(f))
                    .map_err(|e| format!("deploy the hub key: {e}"))?;
            }
            replicas.push(wd);
        }
        Ok(Rig {
            _pg: pg,
            url,
            replicas,
            tmp: tempfile::tempdir().map_err(|e| e.to_string())?,
        })
    }
}

/// What one variant runs: its replicas and (when proxied) HAProxy.
struct Running {
    servers: Vec<AnyServer>,
    haproxy: Option<HaProxy>,
    port: u16,
}

impl Running {
    fn server_pids(&self) -> Vec<u32> {
        self.servers.iter().map(|s| s.pid()).collect()
    }
}

/// Start the variant's replicas and (proxied) HAProxy. With `pin`, as for
/// the single servers: each replica starts on CPU 0 (one event loop) and
/// HAProxy on the load generator's CPUs, so `rcf+pg` compares with the
/// pinned `rcf-serverd` row on equal terms.
fn start(rig: &Rig, v: Variant, policy: &ServerPolicy, pin: bool) -> Result<Running, String> {
    let n = match v {
        Variant::Direct => 1,
        Variant::Proxied(n) => n,
    };
    let mut flags = vec!["--trust-store", rig.url.as_str()];
    if v != Variant::Direct {
        flags.extend(["--proxy-from", "127.0.0.1/32"]);
    }
    let mut servers = Vec::new();
    for wd in &rig.replicas[..n] {
        let go = || {
            lab(AnyServer::start_with_flags(
                ServerKind::Rcf,
                wd,
                policy,
                &flags,
            ))
        };
        servers.push(if pin {
            procstat::spawn_on(&[0], go)?
        } else {
            go()?
        });
    }
    if v == Variant::Direct {
        let port = servers[0].port();
        return Ok(Running {
            servers,
            haproxy: None,
            port,
        });
    }
    let ports: Vec<u16> = servers.iter().map(|s| s.port()).collect();
    let go = || lab(HaProxy::start(rig.tmp.path(), &ports, 5000, 2000));
    let hap = if pin {
        procstat::spawn_on(&procstat::load_cpus(), go)?
    } else {
        go()?
    };
    let front = hap.front();
    Ok(Running {
        servers,
        haproxy: Some(hap),
        port: front,
    })
}

fn cpu(pids: &[u32]) -> Result<f64, String> {
    pids.iter().map(|&p| procstat::cpu_seconds(p)).sum()
}

/// Measure one variant at K agents, as `measure` does for one server.
/// With `--pin` the replicas are kept on CPU 0 and HAProxy and the load
/// generator on the other CPUs (PostgreSQL, nearly idle behind the trust
/// cache, is not pinned); without it all share every CPU. The row's CPU is
/// the replicas' (all of them); `proxy_cpu_s` is HAProxy's.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    rig: &Rig,
    v: Variant,
    policy: &ServerPolicy,
    base: &rcf_smol::ConnectOptions,
    make_shared: &dyn Fn(rcf_smol::ConnectOptions, u32) -> Shared,
    a: &CompareArgs,
    k: usize,
    addr: &mut u32,
) -> Result<(Row, f64), String> {
    let mut policy = policy.clone();
    policy.port = 0;
    let run = start(rig, v, &policy, a.pin)?;
    let mut opts = base.clone();
    opts.port = run.port;
    let shared = Arc::new(make_shared(opts, *addr));
    // One probe run per replica (roundrobin): fail fast on a setup problem.
    for _ in 0..run.servers.len() {
        let mut probe = load::Agent::new(&shared, usize::MAX / 2);
        if let Err(e) = smol::block_on(probe.run(&shared)) {
            let logs: Vec<String> = run
                .servers
                .iter()
                .map(|s| rcf_conformance::lab::tail(&s.log(), 20))
                .collect();
            return Err(format!(
                "{}: probe run failed: {e}\n{}",
                v.label(),
                logs.join("\n---\n")
            ));
        }
    }
    let pids = run.server_pids();
    let hap_pid: Vec<u32> = run.haproxy.iter().map(|h| h.pid()).collect();
    let client_cpus: Option<Vec<usize>> = if a.pin {
        let cpus = procstat::load_cpus();
        for &p in &pids {
            procstat::pin_process(p, &[0])?;
        }
        for &p in &hap_pid {
            procstat::pin_process(p, &cpus)?;
        }
        Some(cpus)
    } else {
        None
    };
    let (cpu0, hap0, self0) = (cpu(&pids)?, cpu(&hap_pid)?, procstat::self_cpu_seconds());
    let load = a.load(&shared, k, client_cpus.as_deref());
    if a.pin {
        for &p in &pids {
            procstat::check_on_cpu0(p, v.label())?;
        }
    }
    let (cpu1, hap1, self1) = (cpu(&pids)?, cpu(&hap_pid)?, procstat::self_cpu_seconds());
    let rss_mb = pids
        .iter()
        .map(|&p| procstat::vm_hwm_kb(p).map(|kb| kb as f64 / 1024.0))
        .sum::<Result<f64, String>>()?;
    *addr = shared.next_source_index();
    drop(run);
    let runs = load.runs.max(1) as f64;
    Ok((
        Row {
            kind: ServerKind::Rcf,
            label: Some(v.label()),
            load,
            cpu_s: cpu1 - cpu0,
            rss_mb,
            client_cpu_s: (self1 - self0) / runs,
        },
        (hap1 - hap0) / runs,
    ))
}
