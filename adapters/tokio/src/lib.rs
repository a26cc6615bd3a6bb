//! rcf-tokio: the server runtime. It accepts connections and applies
//! admission (here), then serves each one with the same loop whichever
//! protocol it speaks (`serve.rs`): the core tells classic from TLS on the
//! first bytes, and the loop pumps bytes between the socket and the core's
//! TLS `Connection` or classic `ClassicServer` (one `Machine`), answering
//! the core's questions from `rcf_fs`. No protocol logic lives here.

use std::io::Write as _;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcf_core::policy::ServerPolicy;
use rcf_core::server::admission::{unmap_ipv4_peer, Admission, ConnId, PendingLimits};
use rcf_core::server::{Config, Level, Now};
use rcf_core::tls::{ServerTls, TlsClock};
use rcf_fs::serve::ServerFs;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub mod cluster;
mod exec;
mod machine;
pub mod metrics;
mod serve;
pub mod tofu;

/// Writes log lines in cf-serverd's format: `<level>: <ip>>       <text>`.
pub struct Logger {
    /// Most verbose level printed.
    pub max: Level,
    /// Prefix lines with an ISO-8601 timestamp (`-l`).
    pub timestamps: bool,
    out: Mutex<Box<dyn std::io::Write + Send>>,
}

impl Logger {
    /// Log to stderr.
    pub fn stderr(max: Level, timestamps: bool) -> Self {
        Logger {
            max,
            timestamps,
            out: Mutex::new(Box::new(std::io::stderr())),
        }
    }

    /// Log to any writer (a file, or a buffer in tests).
    pub fn to(max: Level, timestamps: bool, w: Box<dyn std::io::Write + Send>) -> Self {
        Logger {
            max,
            timestamps,
            out: Mutex::new(w),
        }
    }

    /// One line; `ip` adds cf-serverd's per-connection prefix.
    pub fn log(&self, level: Level, ip: Option<&str>, msg: &str) {
        if level > self.max {
            return;
        }
        let mut line = String::new();
        if self.timestamps {
            let s = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            line.push_str(&format!("{s} "));
        }
        line.push_str(&format!("{:>8}: ", level.as_str()));
        if let Some(ip) = ip {
            line.push_str(&format!("{:<17}", format!("{ip}>")));
        }
        line.push_str(msg);
        line.push('\n');
        if let Ok(mut o) = self.out.lock() {
            let _ = o.write_all(line.as_bytes());
            let _ = o.flush();
        }
    }
}

/// Counters a metrics endpoint or a benchmark can read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused at admission.
    pub refused: AtomicU64,
    /// Connections that reached WELCOME.
    pub established: AtomicU64,
    /// File bytes served by GET.
    pub bytes_served: AtomicU64,
    /// Connections being served now.
    pub open: AtomicI64,
    /// TLS connections that ended before WELCOME.
    pub not_established: AtomicU64,
    /// Connections that spoke the classic protocol.
    pub classic: AtomicU64,
    /// Refused: not in allowconnects.
    pub refused_not_allowed: AtomicU64,
    /// Refused: in denyconnects.
    pub refused_denied: AtomicU64,
    /// Refused: second connection, not in allowallconnects.
    pub refused_second: AtomicU64,
    /// Refused: maxconnections reached.
    pub refused_too_many: AtomicU64,
    /// Dropped before identifying: the pre-authentication budget was full.
    pub evicted_pending: AtomicU64,
    /// Requests refused by the access rules (`access denied …`).
    pub denied_requests: AtomicU64,
    /// Successful policy reloads.
    pub reloads: AtomicU64,
    /// Reloads rejected (errors in the new policy).
    pub reload_failures: AtomicU64,
    /// Latency histograms and key sightings.
    pub detail: metrics::Metrics,
}

/// Wall-clock seconds since the Unix epoch (0 before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Everything the connection tasks share.
pub struct Shared {
    /// The current policy; reloads publish a new one here.
    pub policy: watch::Sender<Arc<ServerPolicy>>,
    /// The TLS context (fixed at start, like cf-serverd).
    pub tls: ServerTls,
    /// The clock rustls reads certificate times from.
    pub tls_clock: TlsClock,
    /// Disk answers.
    pub fs: Arc<ServerFs>,
    /// Open connections per IP, identified sessions, and the
    /// pre-authentication budget (see [`Shared::set_pending_limits`]).
    pub admission: Mutex<Admission>,
    /// How to drop each pending connection the budget evicts: the
    /// adapter's half of [`Admission`], which only names them.
    evictions: Mutex<std::collections::HashMap<ConnId, tokio::sync::oneshot::Sender<()>>>,
    /// Session deadlines.
    pub cfg: Config,
    /// How long one write may block before the peer is dropped.
    pub write_timeout: Duration,
    /// Where log lines go.
    pub logger: Arc<Logger>,
    /// Counters.
    pub stats: Stats,
    /// Bounds concurrent EXEC runs.
    pub exec_slots: Arc<tokio::sync::Semaphore>,
    /// How long one EXEC run may take before it is killed.
    pub exec_timeout: Duration,
    /// Trust on first use: `trustkeysfrom` plus the optional budget
    /// (`--trust-max-new`, `--trust-window`), shared by all connections.
    pub tofu: Arc<tofu::SharedTofu>,
    /// The listening sockets carry `TCP_NODELAY`, which Linux copies to
    /// every accepted connection: no `setsockopt` per connection. Set by
    /// whoever bound them (not for sockets passed by systemd).
    pub listeners_nodelay: std::sync::atomic::AtomicBool,
    /// Cluster mode (`--proxy-from`, `--trust-store`, lastseen); empty by default.
    pub cluster: cluster::Cluster,
    origin: Instant,
}

impl Shared {
    /// Bundle the server's shared state, with default deadlines.
    pub fn new(
        policy: Arc<ServerPolicy>,
        tls: ServerTls,
        tls_clock: TlsClock,
        fs: Arc<ServerFs>,
        logger: Arc<Logger>,
    ) -> Arc<Self> {
        Self::with_timeouts(
            policy,
            tls,
            tls_clock,
            fs,
            logger,
            Config::default(),
            Duration::from_secs(60),
        )
    }

    /// Bundle the server's shared state with explicit deadlines.
    pub fn with_timeouts(
        policy: Arc<ServerPolicy>,
        tls: ServerTls,
        tls_clock: TlsClock,
        fs: Arc<ServerFs>,
        logger: Arc<Logger>,
        cfg: Config,
        write_timeout: Duration,
    ) -> Arc<Self> {
        let (tx, _rx) = watch::channel(policy);
        let tofu = Arc::new(tofu::SharedTofu::new(logger.clone()));
        Arc::new(Shared {
            policy: tx,
            tls,
            tls_clock,
            fs,
            admission: Mutex::new(Admission::new()),
            evictions: Mutex::new(Default::default()),
            cfg,
            write_timeout,
            logger,
            stats: Stats::default(),
            exec_slots: Arc::new(tokio::sync::Semaphore::new(4)),
            exec_timeout: Duration::from_secs(600),
            tofu,
            listeners_nodelay: std::sync::atomic::AtomicBool::new(false),
            cluster: cluster::Cluster::default(),
            origin: Instant::now(),
        })
    }

    fn now(&self) -> Now {
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Now {
            mono_ms: self.origin.elapsed().as_millis() as u64,
            unix_s,
        }
    }

    /// Bound the connections that have not identified yet (per address and
    /// in all); call before serving.
    pub fn set_pending_limits(&self, limits: PendingLimits) {
        if let Ok(mut a) = self.admission.lock() {
            *a = Admission::with_limits(limits);
        }
    }

    /// Publish a reloaded policy: new connections and the next request of
    /// every open session use it.
    pub fn set_policy(&self, p: Arc<ServerPolicy>) {
        self.policy.send_replace(p);
    }
}

/// Serve on `listeners` until `shutdown` resolves.
pub async fn serve(
    listeners: Vec<TcpListener>,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(timer_anchor());
    for l in listeners {
        let shared = shared.clone();
        tasks.spawn(async move { accept_loop(l, shared).await });
    }
    shutdown.await;
    tasks.abort_all();
}

/// Keep a timer at most a second ahead on this runtime. Why: tokio wakes
/// its driver (an eventfd write, then one more `epoll_wait`) whenever a
/// timer is armed earlier than the driver's next wake, and with no timer
/// pending that is every connection's handshake deadline: two syscalls per
/// connection (strace, session 7), against one wake a second here.
async fn timer_anchor() {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Event-loop threads, each a single-threaded runtime serving its own
/// listening sockets (see [`spawn_shards`]).
pub struct Shards {
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Serve each group of `shards` on a thread of its own, with a
/// current-thread runtime: a connection is accepted, handshaken and served
/// start to end on one thread. Why: with one work-stealing runtime, every
/// accepted connection woke a second worker (an eventfd write and a
/// context switch) that then found little to steal; that was about a
/// tenth of the server's CPU per connection under connection churn. The
/// groups are meant to be `SO_REUSEPORT` sockets of the same addresses, so
/// the kernel spreads connections over the threads.
pub fn spawn_shards(
    shards: Vec<Vec<std::net::TcpListener>>,
    shared: Arc<Shared>,
) -> std::io::Result<Shards> {
    let (stop, _) = watch::channel(false);
    let mut threads = Vec::new();
    for (i, listeners) in shards.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = shared.clone();
        let mut rx = stop.subscribe();
        threads.push(
            std::thread::Builder::new()
                .name(format!("rcf-serverd-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let tl: Vec<TcpListener> = listeners
                            .into_iter()
                            .filter_map(|l| TcpListener::from_std(l).ok())
                            .collect();
                        serve(tl, shared, async move {
                            let _ = rx.wait_for(|stop| *stop).await;
                        })
                        .await;
                    });
                    // Blocked file or DNS answers must not hold up a stop.
                    rt.shutdown_timeout(Duration::from_secs(1));
                })?,
        );
    }
    Ok(Shards { stop, threads })
}

impl Shards {
    /// Stop accepting and serving on every thread, and wait for them.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                shared
                    .logger
                    .log(Level::Error, None, &format!("accept: {e}"));
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The handshake deadline runs from here, whatever comes first.
        let accepted = shared.now();
        // Behind a load balancer (--proxy-from) the PROXY header is read first.
        let Some(stream) = cluster::at_accept(&shared, stream, addr, accepted) else {
            continue;
        };
        let ip = unmap_ipv4_peer(&addr.ip().to_string()).to_string();
        if let Some(admitted) = admit(&shared, ip) {
            tokio::spawn(serve_admitted(stream, admitted, accepted));
        }
    }
}

/// Logged for a connection dropped to make room in the pre-authentication
/// budget.
const PENDING_EVICTED: &str = "Dropping a connection that has not identified yet: the pre-authentication budget is full (oldest of the busiest address goes first)";

/// An admitted connection: its slot, and what fires if the
/// pre-authentication budget evicts it.
pub(crate) struct Admitted {
    slot: Slot,
    evicted: tokio::sync::oneshot::Receiver<()>,
}

/// The accept step: admission of a connection served as `ip` (the TCP
/// peer, or the client a PROXY header carried) by the current policy
/// (`allowconnects`, `denyconnects`, `allowallconnects`, `maxconnections`)
/// and the pre-authentication budget. On success the slot is held until
/// the connection's task ends, and the connections this one evicts from
/// the budget are told to close. On refusal it is counted and logged, and
/// the caller drops the socket without a byte, as 3.21 does.
pub(crate) fn admit(shared: &Arc<Shared>, ip: String) -> Option<Admitted> {
    let admitted = {
        let policy = shared.policy.borrow().clone();
        let mut a = shared.admission.lock().expect("admission lock");
        a.admit(&ip, &policy.control)
    };
    let admitted = match admitted {
        Ok(t) => t,
        Err(refusal) => {
            refused(shared, &refusal);
            return None;
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    {
        let mut ev = shared.evictions.lock().expect("evictions lock");
        for id in &admitted.evict {
            if let Some(tx) = ev.remove(id) {
                let _ = tx.send(());
            }
        }
        ev.insert(admitted.id, tx);
    }
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    Some(Admitted {
        slot: Slot {
            shared: shared.clone(),
            ip,
            id: admitted.id,
        },
        evicted: rx,
    })
}

/// Serve an admitted connection, `accepted` at that time, as its slot's
/// address, giving the slot back however it ends; an eviction from the
/// pre-authentication budget drops the serving future, which closes the
/// socket.
pub(crate) async fn serve_admitted(stream: TcpStream, admitted: Admitted, accepted: Now) {
    let Admitted { slot, evicted } = admitted;
    tokio::select! {
        _ = serve::handle(stream, &slot, accepted) => {}
        Ok(()) = evicted => {
            slot.shared.stats.evicted_pending.fetch_add(1, Ordering::Relaxed);
            slot.shared.logger.log(Level::Info, Some(&slot.ip), PENDING_EVICTED);
        }
    }
}

/// Count and log a refusal, by reason (3.21's line, without the peer prefix).
fn refused(shared: &Shared, refusal: &rcf_core::server::admission::Refusal) {
    use rcf_core::server::admission::Refusal;
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    let by = match refusal {
        Refusal::NotAllowed(_) => &shared.stats.refused_not_allowed,
        Refusal::Denied(_) => &shared.stats.refused_denied,
        Refusal::Second(_) => &shared.stats.refused_second,
        Refusal::TooMany { .. } => &shared.stats.refused_too_many,
    };
    by.fetch_add(1, Ordering::Relaxed);
    shared.logger.log(Level::Error, None, &refusal.to_string());
}

/// An admitted connection's place in [`Admission`], given back however its
/// task ends.
pub(crate) struct Slot {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ip: String,
    id: ConnId,
}

impl Slot {
    /// The connection identified: it leaves the pre-authentication budget
    /// and takes one of the `maxconnections` places; `false` (counted and
    /// logged) when those are all taken: close it.
    pub(crate) fn identify(&self) -> bool {
        let policy = self.shared.policy.borrow().clone();
        let r = {
            let mut a = self.shared.admission.lock().expect("admission lock");
            a.identify(self.id, &policy.control)
        };
        if let Ok(mut ev) = self.shared.evictions.lock() {
            ev.remove(&self.id);
        }
        match r {
            Ok(()) => true,
            Err(refusal) => {
                refused(&self.shared, &refusal);
                false
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut a) = self.shared.admission.lock() {
            a.release(self.id);
        }
        if let Ok(mut ev) = self.shared.evictions.lock() {
            ev.remove(&self.id);
        }
        self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}
