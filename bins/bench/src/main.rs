//! rcf-bench: rcf-serverd and the real cf-serverd 3.21 side by side, under
//! the load of K agents running the masterfiles update.
//!
//! `rcf-bench compare --agents 1,10,100 --scenario steady` starts each
//! server in turn (the lab's PID-guarded `RealServer` and `RcfServer`, same
//! policy, same tree, same machine), runs the same load against it and
//! prints one table, then one JSON line per K (the last line is the JSON of
//! the last K). `rcf-bench tree --out DIR` writes the tree only.
//! `rcf-bench agents` times rcf-agent against the real cf-agent syncing the
//! tree, directly and at an emulated round-trip time (`agents.rs`,
//! `delay.rs`); `rcf-bench handshakes` compares each server's connection
//! cost with the in-memory TLS handshake ceiling (`handshakes.rs`).
//!
//! Everything is on loopback; every process started is stopped by PID.

mod agents;
mod cluster;
mod delay;
mod handshakes;
mod load;
mod procstat;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rcf_conformance::lab::{AccessRule, ServerPolicy, Workdir};
use rcf_core::banner::ProtocolVersion;
use rcf_core::keys::DigestKind;
use rcf_core::tls::{TlsClock, TlsSettings};
use rcf_smol::ConnectOptions;

use load::{LoadResult, Scenario, Shared};

#[derive(Parser)]
#[command(
    name = "rcf-bench",
    about = "rcf-serverd vs cf-serverd 3.21 under masterfiles-update load"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the same load against cf-serverd 3.21 and rcf-serverd; print a table and JSON.
    Compare(CompareArgs),
    /// Hold N established, identified sessions against each server; report RSS per session.
    Idle(IdleArgs),
    /// Wall time of the real cf-agent syncing the tree (recursive copy, digest) from each server.
    Agent(AgentArgs),
    /// rcf-agent vs the real cf-agent syncing the tree from one server, at
    /// several round-trip times (netem if available, else a delay proxy).
    Agents(agents::AgentsArgs),
    /// Connection throughput (connect, TLS handshake, IDENTITY, close) of each
    /// server against the in-memory TLS handshake ceiling.
    Handshakes(handshakes::HandshakesArgs),
    /// Write the masterfiles-like tree to DIR and print its shape.
    Tree {
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        shape: TreeArgs,
    },
}

#[derive(Args, Clone)]
struct TreeArgs {
    /// Number of files.
    #[arg(long, default_value_t = tree::DEFAULT_FILES)]
    files: usize,
    /// Total bytes.
    #[arg(long, default_value_t = tree::DEFAULT_BYTES)]
    bytes: u64,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl TreeArgs {
    /// The masterfiles-like tree every comparison uses (the CLI defaults).
    fn standard() -> TreeArgs {
        TreeArgs {
            files: tree::DEFAULT_FILES,
            bytes: tree::DEFAULT_BYTES,
            seed: 1,
        }
    }

    /// A tiny tree, for loads where the files are not the point (idle
    /// sessions, connection churn).
    fn tiny() -> TreeArgs {
        TreeArgs {
            files: 10,
            bytes: 10_000,
            seed: 1,
        }
    }
}

#[derive(Args, Clone)]
struct CompareArgs {
    /// Simulated agents, one or a comma-separated list.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 10, 100, 1000])]
    agents: Vec<usize>,
    /// steady (nothing changed), changed (10% of the files per run) or mpf
    /// (the MPF's cf_promises_validated gate: the tree is walked only when it changed).
    #[arg(long, default_value = "steady")]
    scenario: Scenario,
    /// Also measure the cluster mode in the same run: rcf-serverd with the
    /// PostgreSQL trust store, and HAProxy (send-proxy-v2) in front of 1 and 2
    /// such replicas; prints the proxy hop's and the database's cost per run.
    #[arg(long)]
    cluster: bool,
    /// Most runs per agent per server (the load also stops at --duration).
    #[arg(long, default_value_t = 1_000_000)]
    runs: u64,
    /// Seconds of load per server and K (runs in progress then finish).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Client OS threads (the agents are tasks spread over them); 0 = one
    /// per load-generator CPU under --pin, else 2.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Which servers: both, cfe, rcf.
    #[arg(long, default_value = "both")]
    servers: String,
    /// Per-read timeout of a simulated agent, seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// maxconnections in the server policy (so it is not the limit).
    #[arg(long, default_value_t = 2000)]
    maxconnections: u32,
    /// Start each server on CPU 0 and keep it there, the load generator on
    /// the other CPUs (needs 2 or more), so neither steals the other's CPU:
    /// runs/s then measures the server on a fixed budget of one core. Without it both share all
    /// CPUs and runs/s measures the whole box.
    #[arg(long)]
    pin: bool,
    #[command(flatten)]
    shape: TreeArgs,
}

#[derive(Args, Clone)]
struct IdleArgs {
    /// Sessions to hold.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Which servers: both, cfe, rcf.
    #[arg(long, default_value = "both")]
    servers: String,
}

#[derive(Args, Clone)]
struct AgentArgs {
    /// cf-agent runs per server after the first (full) copy: each one an
    /// up-to-date check of the whole tree.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Which servers: both, cfe, rcf.
    #[arg(long, default_value = "both")]
    servers: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Tree { out, shape } => tree::generate(&out, shape.files, shape.bytes, shape.seed)
            .map(|t| {
                println!(
                    "{}: {} files, {} dirs, {} bytes",
                    t.root.display(),
                    t.files.len(),
                    t.dirs.len(),
                    t.bytes()
                );
            })
            .map_err(|e| e.to_string()),
        Cmd::Compare(a) => compare(&a),
        Cmd::Idle(a) => idle(&a),
        Cmd::Agent(a) => agent_e2e(&a),
        Cmd::Agents(a) => agents::run(&a),
        Cmd::Handshakes(a) => handshakes::run(&a),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcf-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Which server.
use rcf_conformance::lab::{AnyServer as Srv, ServerKind as Kind};

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    kind: Kind,
    /// The row's name when it is not the server's (cluster variants).
    label: Option<&'static str>,
    load: LoadResult,
    cpu_s: f64,
    rss_mb: f64,
    client_cpu_s: f64,
}

impl Row {
    fn cpu_per_run(&self) -> f64 {
        if self.load.runs == 0 {
            f64::NAN
        } else {
            self.cpu_s / self.load.runs as f64
        }
    }
}

fn lab<T>(r: Result<T, rcf_conformance::lab::LabError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

fn kinds(servers: &str) -> Result<Vec<Kind>, String> {
    match servers {
        "both" => Ok(vec![Kind::Real, Kind::Rcf]),
        "cfe" => Ok(vec![Kind::Real]),
        "rcf" => Ok(vec![Kind::Rcf]),
        s => Err(format!("--servers {s:?}: both, cfe or rcf")),
    }
}

/// Work dirs, keys, the tree, the policy and the client options shared by
/// every subcommand.
struct Setup {
    client: Workdir,
    wds: Vec<Workdir>,
    tree: tree::Tree,
    policy: ServerPolicy,
    base: ConnectOptions,
}

fn setup(
    kinds: &[Kind],
    shape: &TreeArgs,
    timeout: u64,
    maxconnections: u32,
) -> Result<Setup, String> {
    procstat::raise_nofile();
    // Work dirs: one per server, one for the simulated agents' key; the
    // tree lives in the client's scratch dir, readable by both servers.
    let client = lab(Workdir::new("bench-client"))?;
    lab(client.cf_key())?;
    let tree = tree::generate(
        &client.scratch().join("masterfiles"),
        shape.files,
        shape.bytes,
        shape.seed,
    )
    .map_err(|e| format!("generate tree: {e}"))?;
    let mut wds = Vec::new();
    for k in kinds {
        let wd = lab(Workdir::new(match k {
            Kind::Real => "bench-cfe",
            Kind::Rcf => "bench-rcf",
        }))?;
        lab(wd.cf_key())?;
        lab(wd.trust(&client, "root"))?;
        lab(client.trust(&wd, "root"))?;
        wds.push(wd);
    }
    let mut policy = ServerPolicy::new(0);
    policy.allowconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    policy.allowallconnects = vec![];
    policy.trustkeysfrom = vec![];
    policy.maxconnections = Some(maxconnections);
    policy.access.push(AccessRule {
        admit_ips: vec!["127.0.0.0/8".into()],
        ..AccessRule::new(tree.root.to_string_lossy())
    });

    let key = rcf_fs::ppkeys::load_host_key(client.path(), DigestKind::Md5)
        .map_err(|e| e.to_string())?
        .private;
    let clock = TlsClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let tls = rcf_core::tls::client_config(&key, &TlsSettings::client_default(), &clock)
        .map_err(|e| e.to_string())?;
    let base = ConnectOptions {
        host: "127.0.0.1".into(),
        port: 0,
        version: Some(ProtocolVersion::Cookie),
        timeout: Duration::from_secs(timeout.max(1)),
        trust_new: false,
        ppkeys: client.ppkeys(),
        local_user: "root".into(),
        tls,
        clock,
        log: Arc::new(|_, _| {}),
        bind_to: None,
        force_ipv4: false,
    };
    Ok(Setup {
        client,
        wds,
        tree,
        policy,
        base,
    })
}

/// Start a server for a benchmark: no verbose logging (the lab's
/// `start_with_flags` with none); rcf-serverd also takes the extra flags in
/// `RCF_BENCH_SERVERD_FLAGS`, for experiments (e.g. `--threads 1`).
fn start_server(kind: Kind, wd: &Workdir, policy: &ServerPolicy) -> Result<Srv, String> {
    let extra = match kind {
        Kind::Rcf => std::env::var("RCF_BENCH_SERVERD_FLAGS").unwrap_or_default(),
        Kind::Real => String::new(),
    };
    let flags: Vec<&str> = extra.split_whitespace().collect();
    lab(Srv::start_with_flags(kind, wd, policy, &flags))
}

impl CompareArgs {
    /// K agents of `shared` for `--duration` or `--runs`, on `cpus`.
    fn load(
        &self,
        shared: &Arc<load::Shared>,
        k: usize,
        cpus: Option<&[usize]>,
    ) -> load::LoadResult {
        load::run_load(
            shared.clone(),
            k,
            self.threads,
            Duration::from_secs_f64(self.duration),
            self.runs,
            cpus,
        )
    }
}

fn compare(a: &CompareArgs) -> Result<(), String> {
    let a = &CompareArgs {
        threads: procstat::load_threads(a.threads, a.pin),
        ..a.clone()
    };
    let kinds = kinds(&a.servers)?;
    let Setup {
        client,
        wds,
        tree,
        mut policy,
        base,
    } = setup(&kinds, &a.shape, a.timeout, a.maxconnections)?;
    // mpf: the stamp the agents check, next to the tree (3.21's format).
    let stamp = if a.scenario == Scenario::Mpf {
        let dir = client.scratch().join("mpf-stamp");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("cf_promises_validated");
        let content = b"{\n  \"timestamp\": 1765000000\n}\n".to_vec();
        std::fs::write(&path, &content).map_err(|e| e.to_string())?;
        policy.access.push(AccessRule {
            admit_ips: vec!["127.0.0.0/8".into()],
            ..AccessRule::new(dir.to_string_lossy())
        });
        Some((path, content))
    } else {
        None
    };
    let make_shared = |opts: ConnectOptions, addr: u32| {
        let s = Shared::new(opts, &tree, a.scenario, addr);
        match &stamp {
            Some((path, content)) => s.with_stamp(path, content),
            None => s,
        }
    };
    let rig = if a.cluster {
        let hub = wds
            .iter()
            .zip(&kinds)
            .find(|(_, k)| **k == Kind::Rcf)
            .map(|(w, _)| w)
            .ok_or("--cluster needs rcf-serverd among --servers")?;
        Some(cluster::Rig::start(hub, &client)?)
    } else {
        None
    };
    println!(
        "# tree: {} files, {} dirs, {} bytes; scenario {}; {:.0} s per server and K (at most {} runs per agent); {} client threads",
        tree.files.len(),
        tree.dirs.len(),
        tree.bytes(),
        a.scenario.name(),
        a.duration,
        a.runs,
        a.threads
    );
    println!(
        "# machine: {} CPUs, load average {}",
        procstat::ncpus(),
        procstat::loadavg()
    );
    if kinds.contains(&Kind::Rcf) {
        println!(
            "# rcf-serverd: {}",
            lab(rcf_conformance::lab::rcf_binary("rcf-serverd"))?.display()
        );
    }
    if a.pin {
        let n = procstat::ncpus();
        if n < 2 {
            return Err(format!("--pin needs at least 2 CPUs, this machine has {n}"));
        }
        println!(
            "# pinned: each server started on CPU 0 (so it sizes itself for one CPU) and kept there, the load generator on CPUs 1-{}",
            n - 1
        );
    } else {
        println!("# not pinned: servers and load generator share all CPUs (runs/s measures the whole box)");
    }
    println!(
        "{:>5} {:<12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8} {:>6} {:>10}",
        "K",
        "server",
        "runs",
        "runs/s",
        "p50 ms",
        "p99 ms",
        "cpu s/run",
        "rss MB",
        "errors",
        "client cpu"
    );
    let mut addr = 0u32;
    let mut jsons = Vec::new();
    for &k in &a.agents {
        let mut rows = Vec::new();
        for (kind, wd) in kinds.iter().zip(&wds) {
            let row = measure(*kind, wd, &policy, &base, &make_shared, a, k, &mut addr)?;
            print_row(k, &row);
            rows.push(row);
        }
        if let Some(rig) = &rig {
            let mut proxy_cpu = Vec::new();
            let mut crows = Vec::new();
            for v in cluster::VARIANTS {
                let (row, hap) =
                    cluster::measure(rig, v, &policy, &base, &make_shared, a, k, &mut addr)?;
                print_row(k, &row);
                proxy_cpu.push(hap);
                crows.push(row);
            }
            cluster_costs(
                k,
                rows.iter().find(|r| r.kind == Kind::Rcf),
                &crows,
                &proxy_cpu,
            );
            for r in &crows {
                for e in &r.load.error_samples {
                    println!("# {} K={k} error: {e}", r.label.unwrap_or("?"));
                }
            }
        }
        let get = |kind: Kind| rows.iter().find(|r| r.kind == kind);
        if let (Some(c), Some(r)) = (get(Kind::Real), get(Kind::Rcf)) {
            let ratio = r.load.runs_per_s() / c.load.runs_per_s();
            let cpu_ratio = c.cpu_per_run() / r.cpu_per_run();
            println!(
                "{:>5} {:<12} rcf/cfe runs/s = {:.2}x, cfe/rcf cpu per run = {:.2}x, p99 cfe {:.1} ms / rcf {:.1} ms",
                k,
                "ratio",
                ratio,
                cpu_ratio,
                c.load.percentile(0.99) * 1e3,
                r.load.percentile(0.99) * 1e3
            );
        }
        for r in &rows {
            for e in &r.load.error_samples {
                println!("# {} K={k} error: {e}", r.kind.name());
            }
        }
        jsons.push(json_line(
            k,
            a.scenario,
            a.pin,
            get(Kind::Rcf),
            get(Kind::Real),
        ));
    }
    for j in jsons {
        println!("{j}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn measure(
    kind: Kind,
    wd: &Workdir,
    policy: &ServerPolicy,
    base: &ConnectOptions,
    make_shared: &dyn Fn(ConnectOptions, u32) -> Shared,
    a: &CompareArgs,
    k: usize,
    addr: &mut u32,
) -> Result<Row, String> {
    // A fresh server per (server, K): VmHWM is then this load's peak.
    let srv = if a.pin {
        procstat::spawn_on(&[0], || start_server(kind, wd, policy))?
    } else {
        start_server(kind, wd, policy)?
    };
    let (pid, port) = (srv.pid(), srv.port());
    let mut opts = base.clone();
    opts.port = port;
    let shared = Arc::new(make_shared(opts, *addr));
    // One unmeasured run first: fail fast on a setup problem.
    let mut probe = load::Agent::new(&shared, usize::MAX / 2);
    if let Err(e) = smol::block_on(probe.run(&shared)) {
        let log = srv.log();
        return Err(format!(
            "{}: probe run failed: {e}\n--- server log tail ---\n{}",
            kind.name(),
            rcf_conformance::lab::tail(&log, 30)
        ));
    }
    let client_cpus: Option<Vec<usize>> = if a.pin {
        procstat::pin_process(pid, &[0])?;
        Some(procstat::load_cpus())
    } else {
        None
    };
    let cpu0 = procstat::cpu_seconds(pid)?;
    let self0 = procstat::self_cpu_seconds();
    let load = a.load(&shared, k, client_cpus.as_deref());
    if a.pin {
        procstat::check_on_cpu0(pid, kind.name())?;
    }
    // A server that died under the load (cf-serverd 3.21 sometimes does)
    // is said so, with its log, rather than as an unreadable /proc entry.
    if !srv.is_running() {
        return Err(format!(
            "{} died during the load at K={k}\n--- server log tail ---\n{}",
            kind.name(),
            rcf_conformance::lab::tail(&srv.log(), 30)
        ));
    }
    let cpu1 = procstat::cpu_seconds(pid)?;
    let self1 = procstat::self_cpu_seconds();
    let rss_mb = procstat::vm_hwm_kb(pid)? as f64 / 1024.0;
    *addr = shared.next_source_index();
    drop(srv);
    let runs = load.runs.max(1) as f64;
    Ok(Row {
        kind,
        label: None,
        load,
        cpu_s: cpu1 - cpu0,
        rss_mb,
        client_cpu_s: (self1 - self0) / runs,
    })
}

/// The cluster's costs at K, from the rows of one run: the database's
/// (rcf+pg against rcf-serverd with ppkeys) and the proxy hop's (HAProxy in
/// front of one replica against that replica alone), per run (= per
/// connection: each run is one connection).
fn cluster_costs(k: usize, ppkeys: Option<&Row>, rows: &[Row], proxy_cpu: &[f64]) {
    let (Some(direct), Some(one), Some(two)) = (rows.first(), rows.get(1), rows.get(2)) else {
        return;
    };
    let ms = |r: &Row| r.load.percentile(0.5) * 1e3;
    if let Some(p) = ppkeys {
        println!(
            "{:>5} {:<12} database: rcf+pg/rcf runs/s = {:.3} (target >= 0.95), +{:.2} ms p50, {:+.5} server cpu s per connection",
            k,
            "cost",
            direct.load.runs_per_s() / p.load.runs_per_s(),
            ms(direct) - ms(p),
            direct.cpu_per_run() - p.cpu_per_run()
        );
    }
    println!(
        "{:>5} {:<12} proxy hop: haproxy>1/rcf+pg runs/s = {:.3}, +{:.2} ms p50, haproxy cpu {:.5} s per connection; 2 replicas/1 runs/s = {:.2}",
        k,
        "cost",
        one.load.runs_per_s() / direct.load.runs_per_s(),
        ms(one) - ms(direct),
        proxy_cpu.get(1).copied().unwrap_or(f64::NAN),
        two.load.runs_per_s() / one.load.runs_per_s()
    );
}

fn print_row(k: usize, r: &Row) {
    println!(
        "{:>5} {:<12} {:>7} {:>9.2} {:>9.1} {:>9.1} {:>10.4} {:>8.1} {:>6} {:>10.4}",
        k,
        r.label.unwrap_or(r.kind.name()),
        r.load.runs,
        r.load.runs_per_s(),
        r.load.percentile(0.5) * 1e3,
        r.load.percentile(0.99) * 1e3,
        r.cpu_per_run(),
        r.rss_mb,
        r.load.errors,
        r.client_cpu_s
    );
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{:.4}", x)
    } else {
        "null".into()
    }
}

fn json_line(k: usize, s: Scenario, pinned: bool, rcf: Option<&Row>, cfe: Option<&Row>) -> String {
    let f = |r: Option<&Row>, g: &dyn Fn(&Row) -> f64| r.map(g).unwrap_or(f64::NAN);
    let rr = f(rcf, &|r| r.load.runs_per_s());
    let cr = f(cfe, &|r| r.load.runs_per_s());
    let errors = rcf.map(|r| r.load.errors).unwrap_or(0) + cfe.map(|r| r.load.errors).unwrap_or(0);
    format!(
        "{{\"agents\":{k},\"scenario\":\"{}\",\"rcf_runs_per_s\":{},\"cfe_runs_per_s\":{},\"ratio\":{},\"rcf_cpu_s_per_run\":{},\"cfe_cpu_s_per_run\":{},\"rcf_rss_mb\":{},\"cfe_rss_mb\":{},\"errors\":{},\"rcf_p50_ms\":{},\"rcf_p99_ms\":{},\"cfe_p50_ms\":{},\"cfe_p99_ms\":{},\"pinned\":{pinned}}}",
        s.name(),
        num(rr),
        num(cr),
        num(rr / cr),
        num(f(rcf, &|r| r.cpu_per_run())),
        num(f(cfe, &|r| r.cpu_per_run())),
        num(f(rcf, &|r| r.rss_mb)),
        num(f(cfe, &|r| r.rss_mb)),
        errors,
        num(f(rcf, &|r| r.load.percentile(0.5) * 1e3)),
        num(f(rcf, &|r| r.load.percentile(0.99) * 1e3)),
        num(f(cfe, &|r| r.load.percentile(0.5) * 1e3)),
        num(f(cfe, &|r| r.load.percentile(0.99) * 1e3)),
    )
}

fn idle(a: &IdleArgs) -> Result<(), String> {
    let kinds = kinds(&a.servers)?;
    let max = (a.sessions as u32 + 100).max(2000);
    let Setup {
        client: _client,
        wds,
        tree,
        policy,
        base,
    } = setup(&kinds, &TreeArgs::tiny(), 60, max)?;
    println!("# idle capacity: {} established, identified sessions held per server; machine load average {}", a.sessions, procstat::loadavg());
    println!(
        "{:<12} {:>8} {:>8} {:>11} {:>11} {:>14} {:>10} {:>12} {:>14}",
        "server",
        "held",
        "failed",
        "rss0 MB",
        "rss MB",
        "rss/session KB",
        "threads",
        "connect s",
        "fresh run ms"
    );
    let mut addr = 0x0010_0000u32;
    for (kind, wd) in kinds.iter().zip(&wds) {
        let srv = start_server(*kind, wd, &policy)?;
        let mut opts = base.clone();
        opts.port = srv.port();
        let shared = Arc::new(Shared::new(opts.clone(), &tree, Scenario::Steady, addr));
        smol::block_on(load::Agent::new(&shared, 0).run(&shared)).map_err(|e| {
            format!(
                "{}: probe: {e}\n{}",
                kind.name(),
                rcf_conformance::lab::tail(&srv.log(), 20)
            )
        })?;
        std::thread::sleep(Duration::from_millis(300));
        let rss0 = procstat::vm_rss_kb(srv.pid())?;
        let t0 = std::time::Instant::now();
        // connect in waves of 50 at a time, keep them all
        let (clients, failed) = smol::block_on(async {
            let mut held = Vec::with_capacity(a.sessions);
            let mut failed = 0usize;
            let mut first_err = None;
            let mut left = a.sessions;
            while left > 0 {
                let wave = left.min(50);
                left -= wave;
                let futs: Vec<_> = (0..wave)
                    .map(|_| {
                        let o = opts.clone();
                        let src = shared.next_source();
                        smol::spawn(
                            async move { rcf_smol::Client::connect_from(o, Some(src)).await },
                        )
                    })
                    .collect();
                for f in futs {
                    match f.await {
                        Ok(c) => held.push(c),
                        Err(e) => {
                            failed += 1;
                            first_err.get_or_insert(e.to_string());
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                println!("# {} first connect error: {e}", kind.name());
            }
            (held, failed)
        });
        let connect_s = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let rss1 = procstat::vm_rss_kb(srv.pid())?;
        let threads = procstat::threads(srv.pid()).unwrap_or(0);
        // A fresh agent while all those sessions are held: a full update
        // run (handshake, walk, STAT and MD5 of every file), timed.
        let fresh = {
            let t = std::time::Instant::now();
            match smol::block_on(load::Agent::new(&shared, 1).run(&shared)) {
                Ok(_) => format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0),
                Err(e) => format!("failed: {e}"),
            }
        };
        let per = if clients.is_empty() {
            f64::NAN
        } else {
            (rss1 as f64 - rss0 as f64) / clients.len() as f64
        };
        println!(
            "{:<12} {:>8} {:>8} {:>11.1} {:>11.1} {:>14.1} {:>10} {:>12.2} {:>14}",
            kind.name(),
            clients.len(),
            failed,
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0,
            per,
            threads,
            connect_s,
            fresh
        );
        smol::block_on(async {
            for c in clients {
                c.close().await;
            }
        });
        addr = shared.next_source_index();
        drop(srv);
    }
    Ok(())
}

fn agent_e2e(a: &AgentArgs) -> Result<(), String> {
    use rcf_conformance::lab::{cf_agent_copies_with_flags, trees_equal, CopySpec};
    let kinds = kinds(&a.servers)?;
    let Setup {
        client,
        wds,
        tree,
        policy,
        ..
    } = setup(&kinds, &TreeArgs::standard(), 30, 2000)?;
    println!(
        "# the real cf-agent 3.21 (cf-agent -K, copy_from compare => digest, depth_search inf, purge) syncing {} files / {} bytes; machine load average {}",
        tree.files.len(),
        tree.bytes(),
        procstat::loadavg()
    );
    println!(
        "{:<12} {:>12} {:>18} {:>8}",
        "server", "full copy s", "up-to-date run s", "ok"
    );
    for (kind, wd) in kinds.iter().zip(&wds) {
        let srv = start_server(*kind, wd, &policy)?;
        let dest = client.scratch().join(format!("copy-{}", kind.name()));
        let spec = CopySpec::new(srv.port(), tree.root.to_string_lossy(), &dest).recursive(true);
        let t0 = std::time::Instant::now();
        let first = lab(cf_agent_copies_with_flags(
            &client,
            std::slice::from_ref(&spec),
            &[],
        ))?;
        let full = t0.elapsed().as_secs_f64();
        let mut ok = first.outcomes.first().is_some_and(|o| o.ok())
            && trees_equal(&tree.root, &dest).is_ok();
        let mut times = Vec::new();
        for _ in 0..a.runs {
            let t = std::time::Instant::now();
            let run = lab(cf_agent_copies_with_flags(
                &client,
                std::slice::from_ref(&spec),
                &[],
            ))?;
            times.push(t.elapsed().as_secs_f64());
            ok &= run.outcomes.first().is_some_and(|o| o.ok());
        }
        times.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let median = times.get(times.len() / 2).copied().unwrap_or(f64::NAN);
        println!(
            "{:<12} {:>12.3} {:>18.3} {:>8}",
            kind.name(),
            full,
            median,
            ok
        );
        if !ok {
            println!(
                "# {} cf-agent output tail:\n{}",
                kind.name(),
                rcf_conformance::lab::tail(&first.run.output, 20)
            );
        }
        drop(srv);
    }
    Ok(())
}
