//! The load: K simulated agents, each repeating what the masterfiles update
//! (`update.cf`, `copy_from` with `compare => digest`, `depth_search`) does
//! every five minutes, back to back: a fresh TLS connection with
//! IDENTITY, a recursive OPENDIR walk with a STAT of every entry, an MD5 of
//! every file against the agent's local copy, a GET of every file that
//! differs, then close.
//!
//! Every connection comes from its own source address in 127.0.0.0/8
//! (127.0.0.2, 127.0.0.3, ...), so a server's one-connection-per-address
//! rule holds without `allowallconnects`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rcf_core::client::{Event, Reply, RequestRef};
use rcf_core::reply::FileType;
use rcf_smol::{Client, ConnectOptions};

use crate::tree::Tree;

/// What changes between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Nothing changed: every MD5 matches, no GET.
    Steady,
    /// 10% of the files changed since the agent's last run: their MD5
    /// differs (CFD_TRUE) and they are fetched with GET.
    Changed,
    /// The MPF's update (`cfe_internal_update_policy_cpv`): STAT and MD5 of
    /// `cf_promises_validated`; only when it differs is it fetched and the
    /// tree walked as in `steady`. The stamp does not change during a
    /// measurement, so a run is a handshake and two requests: what a
    /// steady fleet costs a hub.
    Mpf,
}

impl Scenario {
    /// `steady` / `changed`.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Changed => "changed",
            Scenario::Mpf => "mpf",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "steady" => Ok(Scenario::Steady),
            "changed" => Ok(Scenario::Changed),
            "mpf" => Ok(Scenario::Mpf),
            _ => Err(format!("unknown scenario {s:?} (steady, changed, mpf)")),
        }
    }
}

/// Most requests of one kind kept in flight on a connection (the batch
/// of `rcf_smol::Client::stat_many`, which the walk mirrors).
const PIPELINE: usize = rcf_smol::STAT_BATCH;

/// FxHash (rustc's hasher), for the per-file path lookups of the load
/// generator: SipHash of every path was a visible share of its CPU, and
/// the keys are our own tree's paths, not attacker-chosen.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0.rotate_left(5) ^ n as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Remote path -> index in the tree's files.
pub type PathIndex = HashMap<Vec<u8>, usize, BuildHasherDefault<FxHasher>>;

/// What the agents share.
pub struct Shared {
    /// Connection options (host, port, keys); the source address is per run.
    pub opts: ConnectOptions,
    /// The remote root of the tree.
    pub root: Vec<u8>,
    /// Remote path -> index in `tree.files`.
    pub index: PathIndex,
    /// The true digests (what the server has).
    pub digests: Vec<[u8; 16]>,
    /// Number of files expected per walk.
    pub nfiles: usize,
    /// Scenario.
    pub scenario: Scenario,
    /// `mpf`: the remote path of `cf_promises_validated` and its digest.
    pub stamp: Option<(Vec<u8>, [u8; 16])>,
    next_addr: AtomicU32,
}

impl Shared {
    /// Shared state for a load against `opts.host:opts.port`.
    pub fn new(opts: ConnectOptions, tree: &Tree, scenario: Scenario, first_addr: u32) -> Shared {
        let root = tree.root.to_string_lossy().into_owned().into_bytes();
        let index = tree
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut p = root.clone();
                p.push(b'/');
                p.extend_from_slice(f.rel.as_bytes());
                (p, i)
            })
            .collect();
        Shared {
            opts,
            root,
            index,
            digests: tree.files.iter().map(|f| f.digest).collect(),
            nfiles: tree.files.len(),
            scenario,
            stamp: None,
            next_addr: AtomicU32::new(first_addr),
        }
    }

    /// The `mpf` scenario's stamp: `path` on the server, holding `content`.
    pub fn with_stamp(mut self, path: &std::path::Path, content: &[u8]) -> Shared {
        self.stamp = Some((
            path.to_string_lossy().into_owned().into_bytes(),
            Md5::digest(content).into(),
        ));
        self
    }

    /// The next source address: 127.0.0.2 upwards, wrapping within 127/8
    /// (never 127.0.0.0, 127.0.0.1 or 127.255.255.255).
    pub fn next_source(&self) -> IpAddr {
        let n = self.next_addr.fetch_add(1, Ordering::Relaxed) % 0x00FF_FFFC;
        IpAddr::V4(Ipv4Addr::from(0x7F00_0002u32 + n))
    }
}

/// One agent's result of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunInfo {
    /// Requests sent (OPENDIR + STAT + MD5 + GET).
    pub requests: u64,
    /// Files fetched.
    pub gets: u64,
    /// File bytes received.
    pub bytes: u64,
}

/// One agent: its local copy (digests only) and which run it is on.
pub struct Agent {
    local: Vec<[u8; 16]>,
    /// `mpf`: the agent's copy of `cf_promises_validated` (its digest).
    stamp: Option<[u8; 16]>,
    run: u64,
    id: usize,
}

impl Agent {
    /// An agent whose copy is in sync with the server.
    pub fn new(shared: &Shared, id: usize) -> Agent {
        Agent {
            local: shared.digests.clone(),
            stamp: shared.stamp.as_ref().map(|(_, d)| *d),
            run: 0,
            id,
        }
    }

    /// Files changed "since the last run" in the changed scenario: a
    /// rotating tenth of them (different per agent and per run). Their
    /// local digest is made stale, which on the wire is exactly a file
    /// rewritten on the server: MD5 answers CFD_TRUE, the agent GETs it.
    fn make_stale(&mut self, shared: &Shared) -> usize {
        if shared.scenario != Scenario::Changed {
            return 0;
        }
        let phase = ((self.id as u64 + self.run) % 10) as usize;
        for i in (phase..self.local.len()).step_by(10) {
            self.local[i] = shared.digests[i];
            self.local[i][0] ^= 0xA5;
        }
        // (after a failed run, more than a tenth may be stale)
        self.local
            .iter()
            .zip(&shared.digests)
            .filter(|(a, b)| a != b)
            .count()
    }

    /// One update run against the server.
    pub async fn run(&mut self, shared: &Shared) -> Result<RunInfo, String> {
        let stale = self.make_stale(shared);
        self.run += 1;
        let source = shared.next_source();
        let mut c = Client::connect_from(shared.opts.clone(), Some(source))
            .await
            .map_err(|e| format!("connect from {source}: {e}"))?;
        let r = match shared.stamp.as_ref() {
            Some(stamp) if shared.scenario == Scenario::Mpf => {
                self.mpf(&mut c, shared, stamp).await
            }
            _ => self.session(&mut c, shared, stale).await,
        };
        c.close().await;
        r
    }

    /// The MPF's gate: STAT and MD5 of the stamp against the local copy;
    /// when it differs, GET it and walk the tree (`steady`'s session).
    async fn mpf(
        &mut self,
        c: &mut Client,
        shared: &Shared,
        (path, digest): &(Vec<u8>, [u8; 16]),
    ) -> Result<RunInfo, String> {
        let local = self.stamp.unwrap_or([0; 16]);
        let st = c
            .stat(path)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|t| format!("STAT of the stamp refused: {t}"))?;
        let differs = c
            .md5(path, local)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|t| format!("MD5 of the stamp refused: {t}"))?;
        let mut info = RunInfo {
            requests: 2,
            ..RunInfo::default()
        };
        if differs {
            let (d, _) = get_md5(c, path, st.size, "GET of the stamp").await?;
            if d != *digest {
                return Err("GET of the stamp gave a wrong digest".into());
            }
            let walk = self.session(c, shared, 0).await?;
            info.requests += 1 + walk.requests;
            info.gets += 1 + walk.gets;
            info.bytes += st.size + walk.bytes;
            self.stamp = Some(d);
        }
        Ok(info)
    }

    async fn session(
        &mut self,
        c: &mut Client,
        shared: &Shared,
        stale: usize,
    ) -> Result<RunInfo, String> {
        let mut info = RunInfo::default();
        // Every path of the run lives back to back in `arena`; the lists
        // below hold ranges into it (the load generator shares the cores
        // with the server, so it keeps its own per-file work to a minimum:
        // no allocation per path, requests framed from borrowed paths).
        let mut arena: Vec<u8> = Vec::with_capacity(shared.nfiles * 96);
        let push_path = |arena: &mut Vec<u8>, dir: &Range<usize>, name: &[u8]| {
            let start = arena.len();
            arena.extend_from_within(dir.clone());
            arena.push(b'/');
            arena.extend_from_slice(name);
            start..arena.len()
        };
        // Recursive walk: OPENDIR, then STAT of every entry (pipelined in
        // batches of PIPELINE, as `Client::stat_many` does).
        let mut files: Vec<(Range<usize>, u64)> = Vec::with_capacity(shared.nfiles);
        arena.extend_from_slice(&shared.root);
        let mut stack = vec![0..arena.len()];
        let mut entries: Vec<Range<usize>> = Vec::new();
        while let Some(dir) = stack.pop() {
            info.requests += 1;
            let names = c
                .opendir(&arena[dir.clone()])
                .await
                .map_err(|e| e.to_string())?
                .map_err(|t| format!("OPENDIR refused: {t}"))?;
            entries.clear();
            for n in &names {
                if n.as_slice() != b"." && n.as_slice() != b".." {
                    let p = push_path(&mut arena, &dir, n);
                    entries.push(p);
                }
            }
            info.requests += entries.len() as u64;
            for chunk in entries.chunks(PIPELINE) {
                let t = rcf_smol_unix_now();
                let first = c.next_request_id();
                for p in chunk {
                    c.submit_ref(RequestRef::Stat {
                        path: &arena[p.clone()],
                        client_time: t,
                    });
                }
                // Replies come in request order; all of the batch is read
                // before the first refusal is reported.
                let mut refused: Option<String> = None;
                for (k, p) in chunk.iter().enumerate() {
                    let st = match c.next_event().await.map_err(|e| e.to_string())? {
                        Event::Reply {
                            id,
                            reply: Reply::Stat(st),
                        } if id == first + k as u64 => st,
                        other => return Err(format!("unexpected event {other:?}")),
                    };
                    match st {
                        Err(t) => {
                            refused.get_or_insert_with(|| format!("STAT refused: {t}"));
                        }
                        Ok(_) if refused.is_some() => {}
                        Ok(st) => match st.file_type {
                            FileType::Dir => stack.push(p.clone()),
                            FileType::Regular => files.push((p.clone(), st.size)),
                            _ => {}
                        },
                    }
                }
                if let Some(r) = refused {
                    return Err(r);
                }
            }
        }
        if files.len() != shared.nfiles {
            return Err(format!(
                "walk found {} files, expected {}",
                files.len(),
                shared.nfiles
            ));
        }
        // MD5 of every file against the local copy (pipelined).
        let mut differ: Vec<(Range<usize>, u64, usize)> = Vec::new();
        let mut tree_index: Vec<usize> = Vec::with_capacity(PIPELINE);
        for chunk in files.chunks(PIPELINE) {
            tree_index.clear();
            let first = c.next_request_id();
            for (p, _) in chunk {
                let path = &arena[p.clone()];
                let i = *shared
                    .index
                    .get(path)
                    .ok_or_else(|| format!("unexpected file {}", String::from_utf8_lossy(path)))?;
                c.submit_ref(RequestRef::Md5 {
                    path,
                    digest: self.local[i],
                });
                tree_index.push(i);
            }
            info.requests += chunk.len() as u64;
            for (k, (p, size)) in chunk.iter().enumerate() {
                match c.next_event().await.map_err(|e| e.to_string())? {
                    Event::Reply {
                        id,
                        reply: Reply::Md5(r),
                    } => {
                        if id != first + k as u64 {
                            return Err("MD5 reply to an unknown request".into());
                        }
                        if r.map_err(|t| format!("MD5 refused: {t}"))? {
                            differ.push((p.clone(), *size, tree_index[k]));
                        }
                    }
                    other => return Err(format!("unexpected event {other:?}")),
                }
            }
        }
        if differ.len() != stale {
            return Err(format!("{} files differ, expected {stale}", differ.len()));
        }
        // GET what differs, check it, update the local copy.
        for (p, size, i) in differ {
            info.requests += 1;
            let path = &arena[p];
            let (d, got) = get_md5(c, path, size, "GET").await?;
            if d != shared.digests[i] {
                return Err(format!(
                    "GET {} gave a wrong digest",
                    String::from_utf8_lossy(path)
                ));
            }
            self.local[i] = d;
            info.gets += 1;
            info.bytes += got;
        }
        Ok(info)
    }
}

/// GET `path` (`size` bytes) whole: its MD5 and the bytes received. An
/// error names the request as `what` (e.g. "GET of the stamp").
async fn get_md5(
    c: &mut Client,
    path: &[u8],
    size: u64,
    what: &str,
) -> Result<([u8; 16], u64), String> {
    let mut h = Md5::new();
    let mut got = 0u64;
    c.get(path, size, |b| {
        got += b.len() as u64;
        h.update(b);
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|f| format!("{what} failed: {f:?}"))?;
    Ok((h.finalize().into(), got))
}

/// The client's wall clock, seconds (the STAT `client_time`).
fn rcf_smol_unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Result of one load.
#[derive(Debug, Default, Clone)]
pub struct LoadResult {
    /// Completed runs.
    pub runs: u64,
    /// Failed runs.
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Run latencies (successful runs), seconds, sorted.
    pub latencies: Vec<f64>,
    /// Wall time from the first start to the last end.
    pub wall: Duration,
    /// Requests sent by successful runs.
    pub requests: u64,
    /// GETs and bytes of successful runs.
    pub gets: u64,
    pub bytes: u64,
}

impl LoadResult {
    /// Successful agent-runs per second.
    pub fn runs_per_s(&self) -> f64 {
        self.runs as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    /// Latency percentile `q` in [0, 1], seconds.
    pub fn percentile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// Run `agents` simulated agents on `threads` OS threads until `duration`
/// has passed or each made `max_runs` runs (a run in progress at the
/// deadline finishes; each is bounded by the connection timeout).
pub fn run_load(
    shared: Arc<Shared>,
    agents: usize,
    threads: usize,
    duration: Duration,
    max_runs: u64,
    cpus: Option<&[usize]>,
) -> LoadResult {
    let threads = threads.max(1).min(agents.max(1));
    let result = Arc::new(Mutex::new(LoadResult::default()));
    let requests = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    std::thread::scope(|s| {
        for t in 0..threads {
            let shared = shared.clone();
            let result = result.clone();
            let requests = requests.clone();
            s.spawn(move || {
                if let Some(cpus) = cpus {
                    if let Err(e) = crate::procstat::pin_self(cpus) {
                        eprintln!("# load thread {t}: {e}");
                    }
                }
                let ex = smol::LocalExecutor::new();
                let mut tasks = Vec::new();
                for a in (t..agents).step_by(threads) {
                    let shared = shared.clone();
                    let result = result.clone();
                    let requests = requests.clone();
                    tasks.push(ex.spawn(async move {
                        let mut agent = Agent::new(&shared, a);
                        let mut lat = Vec::new();
                        let (mut runs, mut errors, mut gets, mut bytes) = (0u64, 0u64, 0u64, 0u64);
                        let mut samples = Vec::new();
                        while runs + errors < max_runs && Instant::now() < deadline {
                            let t0 = Instant::now();
                            match agent.run(&shared).await {
                                Ok(info) => {
                                    lat.push(t0.elapsed().as_secs_f64());
                                    runs += 1;
                                    gets += info.gets;
                                    bytes += info.bytes;
                                    requests.fetch_add(info.requests, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    errors += 1;
                                    if samples.len() < 3 {
                                        samples.push(e);
                                    }
                                    // do not spin on a refusing server
                                    smol::Timer::after(Duration::from_millis(50)).await;
                                }
                            }
                        }
                        let mut r = result.lock().unwrap();
                        r.runs += runs;
                        r.errors += errors;
                        r.gets += gets;
                        r.bytes += bytes;
                        r.latencies.extend(lat);
                        for e in samples {
                            if r.error_samples.len() < 5 {
                                r.error_samples.push(e);
                            }
                        }
                    }));
                }
                smol::block_on(ex.run(async {
                    for t in tasks {
                        t.await;
                    }
                }));
            });
        }
    });
    let mut r = Arc::try_unwrap(result)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_else(|a| a.lock().unwrap().clone());
    r.wall = start.elapsed();
    r.requests = requests.load(Ordering::Relaxed);
    r.latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    r
}

impl Shared {
    /// The index the next source address would take (to continue the
    /// sequence with a new server, so addresses are never reused soon).
    pub fn next_source_index(&self) -> u32 {
        self.next_addr.load(Ordering::Relaxed)
    }
}
