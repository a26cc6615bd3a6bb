//! `rcf-bench agents`: wall time of `rcf-agent` against the real
//! `cf-agent` 3.21 syncing the same tree from the same server, with no
//! added latency and across an emulated round-trip time.
//!
//! Why: the issue asks whether rcf-agent's request pipelining pays off on
//! a real network. On loopback a round trip costs microseconds and both
//! agents are dominated by process start-up and local work; at 20 ms RTT
//! every request/reply exchange that is not pipelined costs 20 ms, so the
//! number of round trips per sync decides.
//!
//! Contract, per server (`--server rcf`, the default: rcf-serverd; `cfe`:
//! cf-serverd 3.21; `both`: one after the other) and per RTT (`--rtt-ms`):
//! * each client, the real `cf-agent -K` (a `copy_from` promise through the
//!   lab's [`cf_agent_copies_with_flags`]: `compare => digest`,
//!   `depth_search => inf`, `purge`, `trustkey`) and `rcf-agent copy
//!   --recurse --purge --compare digest --trustkey`, copies the tree into an
//!   empty directory (full copy), which must then equal the source
//!   ([`trees_equal`]), then runs `--runs` more times on the synced copy
//!   (up-to-date runs: each must copy nothing);
//! * the time of a run is its process's wall time (spawn to exit), start-up
//!   included, as an operator sees it;
//! * RTT 0 connects straight to the server; RTT > 0 goes through netem when
//!   the kernel has it (the whole benchmark re-runs itself inside a network
//!   namespace with `netem delay RTT/2` on its `lo`), else through the
//!   user-space [`DelayProxy`] (RTT/2 each way); the first lines say which.
//!
//! Output: one row per (server, client, RTT), one ratio line (cf-agent time
//! / rcf-agent time) per (server, RTT), and as the last line one JSON
//! object with every figure. Nothing is asserted about the timings.
//!
//! Both agents use one client work dir whose key the server trusts and
//! which trusts the server's key (as `compare` sets up); the server admits
//! 127.0.0.0/8, which includes the proxy's source address 127.0.0.1, and
//! lists 127.0.0.1 in `allowallconnects` so a proxied connection whose
//! close is still on its way never blocks the next run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Args;
use rcf_conformance::lab::{
    cf_agent_copies_with_flags, rcf_agent, tail, trees_equal, CopySpec, Workdir,
};

use crate::delay::{probe_netem, sh, DelayProxy};
use crate::{lab, procstat, start_server, Kind, Setup, TreeArgs};

/// `rcf-bench agents` arguments.
#[derive(Args, Clone, Debug)]
pub struct AgentsArgs {
    /// Round-trip times to measure, milliseconds (0 = direct connection).
    #[arg(long = "rtt-ms", value_delimiter = ',', default_values_t = vec![0u64, 20])]
    pub rtt_ms: Vec<u64>,
    /// Up-to-date runs per client after the full copy (the median is shown).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Which server: rcf (rcf-serverd), cfe (cf-serverd 3.21) or both.
    #[arg(long, default_value = "rcf")]
    pub server: String,
    /// How to add latency: auto (netem if the kernel has it, else the
    /// proxy), proxy, netem.
    #[arg(long, default_value = "auto")]
    pub emulation: String,
    /// Internal: already running inside this network namespace (netem mode).
    #[arg(long = "in-netns", hide = true)]
    pub in_netns: Option<String>,
}

/// How latency is added for RTT > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Proxy,
    Netem,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Proxy => "proxy",
            Via::Netem => "netem",
        }
    }
}

/// One client's figures at one RTT.
#[derive(Debug, Clone)]
struct Row {
    server: Kind,
    client: &'static str,
    rtt_ms: u64,
    via: Via,
    full_s: f64,
    uptodate_s: Vec<f64>,
    ok: bool,
    /// Request/reply turns through the proxy: full copy, last up-to-date run.
    turns_full: Option<u64>,
    turns_uptodate: Option<u64>,
    /// Full copy through the proxy: connections it used and the turns of
    /// the busiest one (with several connections at once, `turns_full` is
    /// their sum and this is the lower bound on round trips waited for).
    conns_full: Option<u64>,
    turns_full_busiest: Option<u64>,
}

impl Row {
    fn median(&self) -> f64 {
        let mut t = self.uptodate_s.clone();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Entry point.
pub fn run(a: &AgentsArgs) -> Result<(), String> {
    let kinds = match a.server.as_str() {
        "rcf" => vec![Kind::Rcf],
        "cfe" => vec![Kind::Real],
        "both" => vec![Kind::Rcf, Kind::Real],
        s => return Err(format!("--server {s:?}: rcf, cfe or both")),
    };
    let wants_delay = a.rtt_ms.iter().any(|&r| r > 0);
    let netem = match (a.emulation.as_str(), &a.in_netns) {
        (_, Some(ns)) => {
            println!("# netem: inside network namespace {ns}, `tc qdisc replace dev lo root netem delay RTT/2` (each direction crosses lo once)");
            true
        }
        ("proxy", None) => {
            if wants_delay {
                println!("# user-space delay proxy (--emulation proxy): RTT/2 each way");
            }
            false
        }
        ("auto" | "netem", None) if wants_delay => match probe_netem() {
            Ok(()) => return reexec_in_netns(),
            Err(e) if a.emulation == "netem" => return Err(format!("netem unavailable: {e}")),
            Err(e) => {
                println!("# netem unavailable ({e}): user-space delay proxy, RTT/2 each way");
                false
            }
        },
        ("auto" | "netem", None) => false,
        (e, None) => return Err(format!("--emulation {e:?}: auto, proxy or netem")),
    };

    let Setup {
        client,
        wds,
        tree,
        mut policy,
        ..
    } = crate::setup(&kinds, &TreeArgs::standard(), 30, 2000)?;
    policy.allowallconnects = vec!["127.0.0.1".into()];
    println!(
        "# tree: {} files, {} dirs, {} bytes; full copy into an empty dir, then {} up-to-date runs per client (median shown); compare digest, depth_search inf, purge",
        tree.files.len(),
        tree.dirs.len(),
        tree.bytes(),
        a.runs
    );
    println!(
        "# machine: {} CPUs, load average {}; cf-agent {}, rcf-agent {}",
        procstat::ncpus(),
        procstat::loadavg(),
        client.bins().agent.display(),
        lab(rcf_conformance::lab::rcf_binary("rcf-agent"))?.display()
    );
    println!(
        "{:<12} {:<10} {:>6} {:<7} {:>11} {:>19} {:>5}",
        "server", "client", "rtt ms", "via", "full copy s", "up-to-date median s", "ok"
    );
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for (kind, wd) in kinds.iter().zip(&wds) {
        let srv = start_server(*kind, wd, &policy)?;
        for &rtt in &a.rtt_ms {
            let one_way = Duration::from_micros(rtt * 500);
            let (via, port, proxy) = if rtt == 0 {
                if netem {
                    let _ = sh("tc", &["qdisc", "del", "dev", "lo", "root"]);
                }
                (Via::Direct, srv.port(), None)
            } else if netem {
                let d = format!("{}us", rtt * 500);
                sh(
                    "tc",
                    &[
                        "qdisc", "replace", "dev", "lo", "root", "netem", "delay", &d,
                    ],
                )?;
                (Via::Netem, srv.port(), None)
            } else {
                let p = DelayProxy::start(([127, 0, 0, 1], srv.port()).into(), one_way)
                    .map_err(|e| format!("delay proxy: {e}"))?;
                (Via::Proxy, p.port(), Some(p))
            };
            let mut pair = Vec::new();
            for client_name in ["cf-agent", "rcf-agent"] {
                let conns0 = proxy.as_ref().map(|p| p.accepted());
                let row = measure(
                    proxy.as_ref(),
                    *kind,
                    client_name,
                    rtt,
                    via,
                    port,
                    &client,
                    &tree.root,
                    a.runs,
                )
                .map_err(|e| format!("{e}\n--- server log tail ---\n{}", tail(&srv.log(), 20)))?;
                println!(
                    "{:<12} {:<10} {:>6} {:<7} {:>11.3} {:>19.3} {:>5}",
                    kind.name(),
                    row.client,
                    rtt,
                    via.name(),
                    row.full_s,
                    row.median(),
                    row.ok
                );
                if let (Some(p), Some(c0)) = (&proxy, conns0) {
                    println!(
                        "# {} through the proxy: {} connections for {} runs; request/reply turns: full copy {} (sum over its {} connection(s); busiest connection {}), up-to-date run {}",
                        row.client,
                        p.accepted() - c0,
                        a.runs + 1,
                        row.turns_full.unwrap_or(0),
                        row.conns_full.unwrap_or(0),
                        row.turns_full_busiest.unwrap_or(0),
                        row.turns_uptodate.unwrap_or(0)
                    );
                }
                pair.push(row);
            }
            let (c, r) = (&pair[0], &pair[1]);
            let ratio = (c.full_s / r.full_s, c.median() / r.median());
            println!(
                "{:<12} {:<10} {:>6} cf-agent/rcf-agent: full copy {:.2}x, up-to-date {:.2}x",
                kind.name(),
                "ratio",
                rtt,
                ratio.0,
                ratio.1
            );
            ratios.push((*kind, rtt, ratio));
            rows.extend(pair);
        }
        drop(srv);
    }
    if netem {
        let _ = sh("tc", &["qdisc", "del", "dev", "lo", "root"]);
    }
    println!("{}", json(a, &rows, &ratios));
    Ok(())
}

/// Full copy, then `runs` up-to-date runs, of one client against `port`.
#[allow(clippy::too_many_arguments)]
fn measure(
    proxy: Option<&DelayProxy>,
    server: Kind,
    client_name: &'static str,
    rtt_ms: u64,
    via: Via,
    port: u16,
    client: &Workdir,
    source: &Path,
    runs: usize,
) -> Result<Row, String> {
    let dest = client.scratch().join(format!(
        "agents-{}-{client_name}-rtt{rtt_ms}",
        server.name()
    ));
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| format!("rm {}: {e}", dest.display()))?;
    }
    let src = source.to_string_lossy().into_owned();
    let spec = CopySpec::new(port, src.clone(), &dest).recursive(true);
    let hp = format!("127.0.0.1:{port}");
    let dest_s = dest.to_string_lossy().into_owned();
    let rcf_args = [
        "-I",
        "copy",
        "-H",
        hp.as_str(),
        "--trustkey",
        "--compare",
        "digest",
        "--recurse",
        "--purge",
        src.as_str(),
        dest_s.as_str(),
    ];
    // One run: (wall seconds, success, files copied?, output for messages).
    let once = || -> Result<(f64, bool, bool, String), String> {
        if client_name == "cf-agent" {
            let r = lab(cf_agent_copies_with_flags(
                client,
                std::slice::from_ref(&spec),
                &[],
            ))?;
            let o = r.outcomes.first().copied().unwrap_or_default();
            Ok((
                r.run.elapsed.as_secs_f64(),
                o.ok(),
                o.repaired,
                r.run.describe(),
            ))
        } else {
            let r = lab(rcf_agent(client, &rcf_args))?;
            Ok((
                r.elapsed.as_secs_f64(),
                r.success(),
                r.contains("Updated file"),
                r.describe(),
            ))
        }
    };
    let turns = || proxy.map(|p| p.turns());
    let t0 = turns();
    let c0 = proxy.map(|p| p.conn_turns().len());
    let (full_s, ok, copied, out) = once()?;
    let turns_full = turns().zip(t0).map(|(b, a)| b - a);
    let per_conn = proxy.zip(c0).map(|(p, c0)| p.conn_turns().split_off(c0));
    let conns_full = per_conn.as_ref().map(|v| v.len() as u64);
    let turns_full_busiest = per_conn.and_then(|v| v.into_iter().max());
    let equal = trees_equal(source, &dest);
    if !ok || !copied || equal.is_err() {
        return Err(format!(
            "{client_name} full copy via {} (rtt {rtt_ms} ms) failed: ok {ok}, copied {copied}, {}\n{out}",
            via.name(),
            equal.err().unwrap_or_else(|| "trees equal".into())
        ));
    }
    let mut row = Row {
        server,
        client: client_name,
        rtt_ms,
        via,
        full_s,
        uptodate_s: Vec::new(),
        ok: true,
        turns_full,
        turns_uptodate: None,
        conns_full,
        turns_full_busiest,
    };
    for _ in 0..runs {
        let t0 = turns();
        let (t, ok, copied, out) = once()?;
        row.turns_uptodate = turns().zip(t0).map(|(b, a)| b - a);
        row.uptodate_s.push(t);
        if !ok || copied {
            row.ok = false;
            println!(
                "# {client_name} up-to-date run: ok {ok}, copied something {copied}\n{}",
                tail(&out, 20)
            );
        }
    }
    if let Err(e) = trees_equal(source, &dest) {
        row.ok = false;
        println!("# {client_name} after the up-to-date runs: {e}");
    }
    Ok(row)
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn json(a: &AgentsArgs, rows: &[Row], ratios: &[(Kind, u64, (f64, f64))]) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"server\":\"{}\",\"client\":\"{}\",\"rtt_ms\":{},\"via\":\"{}\",\"full_copy_s\":{},\"uptodate_median_s\":{},\"uptodate_s\":[{}],\"ok\":{},\"turns_full_copy\":{},\"turns_uptodate\":{},\"connections_full_copy\":{},\"turns_full_copy_busiest_connection\":{}}}",
                r.server.name(),
                r.client,
                r.rtt_ms,
                r.via.name(),
                num(r.full_s),
                num(r.median()),
                r.uptodate_s.iter().map(|t| num(*t)).collect::<Vec<_>>().join(","),
                r.ok,
                r.turns_full.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
                r.turns_uptodate.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
                r.conns_full.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
                r.turns_full_busiest.map(|t| t.to_string()).unwrap_or_else(|| "null".into())
            )
        })
        .collect();
    let ratios: Vec<String> = ratios
        .iter()
        .map(|(k, rtt, (f, u))| {
            format!(
                "{{\"server\":\"{}\",\"rtt_ms\":{rtt},\"full_copy\":{},\"uptodate\":{}}}",
                k.name(),
                num(*f),
                num(*u)
            )
        })
        .collect();
    format!(
        "{{\"bench\":\"agents\",\"runs\":{},\"rows\":[{}],\"cf_agent_over_rcf_agent\":[{}]}}",
        a.runs,
        rows.join(","),
        ratios.join(",")
    )
}

/// netem works: run this same command again inside a fresh network
/// namespace (`rcf-bench-<pid>`, `lo` up), where the child puts netem on
/// `lo` per RTT; the namespace is deleted afterwards whatever happened.
fn reexec_in_netns() -> Result<(), String> {
    let ns = format!("rcf-bench-{}", std::process::id());
    sh("ip", &["netns", "add", &ns])?;
    let r = (|| {
        sh(
            "ip",
            &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
        )?;
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let status = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .arg("--in-netns")
            .arg(&ns)
            .status()
            .map_err(|e| format!("ip netns exec: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "the run inside network namespace {ns} failed: {status}"
            ))
        }
    })();
    let _ = sh("ip", &["netns", "del", &ns]);
    r
}
