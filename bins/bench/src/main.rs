//! rcf-bench: rcf-serverd and the real cf-serverd 3.21 side by side, under
//! the load of K agents running the masterfiles update.
//!
//! `rcf-bench compare --agents 1,10,100 --scenario steady` starts each
//! server in turn (the lab's PID-guarded `RealServer` and `RcfServer`, same
//! policy, same tree, same machine), runs the same load against it and
//! prints one table, then one JSON line per K (the last line is the JSON of
//! the last K). `rcf-bench tree --out DIR` writes the tree only.
//!
//! Everything is on loopback; every process started is stopped by PID.

mod load;
mod procstat;
mod tree;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rcf_conformance::lab::{AccessRule, RcfServer, RealServer, ServerPolicy, Workdir};
use rcf_core::banner::ProtocolVersion;
use rcf_core::keys::DigestKind;
use rcf_core::tls::{TlsClock, TlsSettings};
use rcf_smol::ConnectOptions;

use load::{LoadResult, Scenario, Shared};

#[derive(Parser)]
#[command(name = "rcf-bench", about = "rcf-serverd vs cf-serverd 3.21 under masterfiles-update load")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the same load against cf-serverd 3.21 and rcf-serverd; print a table and JSON.
    Compare(CompareArgs),
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

#[derive(Args, Clone)]
struct CompareArgs {
    /// Simulated agents, one or a comma-separated list.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 10, 100, 1000])]
    agents: Vec<usize>,
    /// steady (nothing changed) or changed (10% of the files per run).
    #[arg(long, default_value = "steady")]
    scenario: Scenario,
    /// Most runs per agent per server (the load also stops at --duration).
    #[arg(long, default_value_t = 1_000_000)]
    runs: u64,
    /// Seconds of load per server and K (runs in progress then finish).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Client OS threads (the agents are tasks spread over them).
    #[arg(long, default_value_t = 2)]
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
    #[command(flatten)]
    shape: TreeArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Tree { out, shape } => tree::generate(&out, shape.files, shape.bytes, shape.seed).map(|t| {
            println!("{}: {} files, {} dirs, {} bytes", t.root.display(), t.files.len(), t.dirs.len(), t.bytes());
        }).map_err(|e| e.to_string()),
        Cmd::Compare(a) => compare(&a),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cfe,
    Rcf,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cfe => "cf-serverd",
            Kind::Rcf => "rcf-serverd",
        }
    }
}

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    kind: Kind,
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

fn compare(a: &CompareArgs) -> Result<(), String> {
    procstat::raise_nofile();
    let kinds: Vec<Kind> = match a.servers.as_str() {
        "both" => vec![Kind::Cfe, Kind::Rcf],
        "cfe" => vec![Kind::Cfe],
        "rcf" => vec![Kind::Rcf],
        s => return Err(format!("--servers {s:?}: both, cfe or rcf")),
    };
    // Work dirs: one per server, one for the simulated agents' key; the
    // tree lives in the client's scratch dir, readable by both servers.
    let client = lab(Workdir::new("bench-client"))?;
    lab(client.cf_key())?;
    let tree = tree::generate(&client.scratch().join("masterfiles"), a.shape.files, a.shape.bytes, a.shape.seed)
        .map_err(|e| format!("generate tree: {e}"))?;
    let mut wds = Vec::new();
    for k in &kinds {
        let wd = lab(Workdir::new(match k {
            Kind::Cfe => "bench-cfe",
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
    policy.maxconnections = Some(a.maxconnections);
    policy.access.push(AccessRule { admit_ips: vec!["127.0.0.0/8".into()], ..AccessRule::new(tree.root.to_string_lossy()) });

    let key = rcf_fs::ppkeys::load_host_key(client.path(), DigestKind::Md5).map_err(|e| e.to_string())?.private;
    let clock = TlsClock::new(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    let tls = rcf_core::tls::client_config(&key, &TlsSettings::client_default(), &clock).map_err(|e| e.to_string())?;
    let base = ConnectOptions {
        host: "127.0.0.1".into(),
        port: 0,
        version: Some(ProtocolVersion::Cookie),
        timeout: Duration::from_secs(a.timeout.max(1)),
        trust_new: false,
        ppkeys: client.ppkeys(),
        local_user: "root".into(),
        tls,
        clock,
        log: Arc::new(|_, _| {}),
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
    println!("# machine: {} CPUs, load average {}", procstat::ncpus(), procstat::loadavg());
    if kinds.contains(&Kind::Rcf) {
        println!("# rcf-serverd: {}", lab(rcf_conformance::lab::rcf_binary("rcf-serverd"))?.display());
    }
    println!(
        "{:>5} {:<12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>8} {:>6} {:>10}",
        "K", "server", "runs", "runs/s", "p50 ms", "p99 ms", "cpu s/run", "rss MB", "errors", "client cpu"
    );
    let mut addr = 0u32;
    let mut jsons = Vec::new();
    for &k in &a.agents {
        let mut rows = Vec::new();
        for (kind, wd) in kinds.iter().zip(&wds) {
            let row = measure(*kind, wd, &policy, &base, &tree, a, k, &mut addr)?;
            print_row(k, &row);
            rows.push(row);
        }
        let get = |kind: Kind| rows.iter().find(|r| r.kind == kind);
        if let (Some(c), Some(r)) = (get(Kind::Cfe), get(Kind::Rcf)) {
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
        jsons.push(json_line(k, a.scenario, get(Kind::Rcf), get(Kind::Cfe)));
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
    tree: &tree::Tree,
    a: &CompareArgs,
    k: usize,
    addr: &mut u32,
) -> Result<Row, String> {
    // A fresh server per (server, K): VmHWM is then this load's peak.
    enum Srv {
        Cfe(RealServer),
        Rcf(RcfServer),
    }
    let srv = match kind {
        Kind::Cfe => Srv::Cfe(lab(RealServer::start_with_flags(wd, policy, &[]))?),
        Kind::Rcf => Srv::Rcf(lab(RcfServer::start_with_flags(wd, policy, &[]))?),
    };
    let (pid, port) = match &srv {
        Srv::Cfe(s) => (s.pid(), s.port()),
        Srv::Rcf(s) => (s.pid(), s.port()),
    };
    let mut opts = base.clone();
    opts.port = port;
    let shared = Arc::new(Shared::new(opts, tree, a.scenario, *addr));
    // One unmeasured run first: fail fast on a setup problem.
    let mut probe = load::Agent::new(&shared, usize::MAX / 2);
    if let Err(e) = smol::block_on(probe.run(&shared)) {
        let log = match &srv {
            Srv::Cfe(s) => s.log(),
            Srv::Rcf(s) => s.log(),
        };
        return Err(format!("{}: probe run failed: {e}\n--- server log tail ---\n{}", kind.name(), rcf_conformance::lab::tail(&log, 30)));
    }
    let cpu0 = procstat::cpu_seconds(pid)?;
    let self0 = procstat::self_cpu_seconds();
    let load = load::run_load(shared.clone(), k, a.threads, Duration::from_secs_f64(a.duration), a.runs);
    let cpu1 = procstat::cpu_seconds(pid)?;
    let self1 = procstat::self_cpu_seconds();
    let rss_mb = procstat::vm_hwm_kb(pid)? as f64 / 1024.0;
    *addr = shared.next_source_index();
    drop(srv);
    let runs = load.runs.max(1) as f64;
    Ok(Row { kind, load, cpu_s: cpu1 - cpu0, rss_mb, client_cpu_s: (self1 - self0) / runs })
}

fn print_row(k: usize, r: &Row) {
    println!(
        "{:>5} {:<12} {:>7} {:>9.2} {:>9.1} {:>9.1} {:>10.4} {:>8.1} {:>6} {:>10.4}",
        k,
        r.kind.name(),
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

fn json_line(k: usize, s: Scenario, rcf: Option<&Row>, cfe: Option<&Row>) -> String {
    let f = |r: Option<&Row>, g: &dyn Fn(&Row) -> f64| r.map(g).unwrap_or(f64::NAN);
    let rr = f(rcf, &|r| r.load.runs_per_s());
    let cr = f(cfe, &|r| r.load.runs_per_s());
    let errors = rcf.map(|r| r.load.errors).unwrap_or(0) + cfe.map(|r| r.load.errors).unwrap_or(0);
    format!(
        "{{\"agents\":{k},\"scenario\":\"{}\",\"rcf_runs_per_s\":{},\"cfe_runs_per_s\":{},\"ratio\":{},\"rcf_cpu_s_per_run\":{},\"cfe_cpu_s_per_run\":{},\"rcf_rss_mb\":{},\"cfe_rss_mb\":{},\"errors\":{},\"rcf_p50_ms\":{},\"rcf_p99_ms\":{},\"cfe_p50_ms\":{},\"cfe_p99_ms\":{}}}",
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
