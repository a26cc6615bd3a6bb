//! rcf-tokio: the server runtime. It accepts connections, applies admission,
//! tells classic from TLS on the first bytes, and pumps bytes between each
//! socket and an `rcf_core::server::Connection`, answering the core's
//! questions from `rcf_fs` on tokio's blocking pool. No protocol logic
//! lives here.
//!
//! Per connection the loop is the core's contract: after every input, drain
//! `poll_transmit` (with a write deadline) and `poll_event` (answering each
//! question), then wait for socket input or `poll_timeout`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcf_core::policy::ServerPolicy;
use rcf_core::server::admission::{unmap_ipv4_peer, Admission};
use rcf_core::server::sniff::{sniff, Protocol, SHORT_FIRST_SEGMENT, SNIFF_LEN};
use rcf_core::server::{Config, Connection, Event, Level, Now};
use rcf_core::tls::{ServerTls, TlsClock};
use rcf_fs::serve::{Files, ServerFs};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod classic;
pub mod cluster;
mod exec;
pub mod metrics;
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
    /// Open connections per IP.
    pub admission: Mutex<Admission>,
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
    for l in listeners {
        let shared = shared.clone();
        tasks.spawn(async move { accept_loop(l, shared).await });
    }
    shutdown.await;
    tasks.abort_all();
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
        // Behind a load balancer (--proxy-from) the PROXY header is read first.
        let Some(stream) = cluster::at_accept(&shared, stream, addr) else {
            continue;
        };
        let ip = unmap_ipv4_peer(&addr.ip().to_string()).to_string();
        if admit(&shared, &ip) {
            tokio::spawn(serve_admitted(stream, addr, ip, shared.clone()));
        }
    }
}

/// Admission (allowconnects, denyconnects, one connection per address,
/// maxconnections) for a connection served as `ip`; a refusal is counted
/// and logged. On success the slot is held until [`serve_admitted`] ends.
pub(crate) fn admit(shared: &Shared, ip: &str) -> bool {
    let admitted = {
        let policy = shared.policy.borrow().clone();
        let mut a = shared.admission.lock().expect("admission lock");
        a.admit(ip, &policy.control)
    };
    if let Err(refusal) = admitted {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        use rcf_core::server::admission::Refusal;
        let by = match &refusal {
            Refusal::NotAllowed(_) => &shared.stats.refused_not_allowed,
            Refusal::Denied(_) => &shared.stats.refused_denied,
            Refusal::Second(_) => &shared.stats.refused_second,
            Refusal::TooMany { .. } => &shared.stats.refused_too_many,
        };
        by.fetch_add(1, Ordering::Relaxed);
        shared.logger.log(Level::Error, None, &refusal.to_string());
        return false;
    }
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    true
}

/// Serve an admitted connection as `ip`, giving its admission slot back
/// however it ends.
pub(crate) async fn serve_admitted(
    stream: TcpStream,
    addr: SocketAddr,
    ip: String,
    shared: Arc<Shared>,
) {
    let _release = Release {
        shared: shared.clone(),
        ip: ip.clone(),
    };
    handle(stream, addr, ip, shared).await;
}

/// Gives the admission slot back however the task ends.
struct Release {
    shared: Arc<Shared>,
    ip: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Ok(mut a) = self.shared.admission.lock() {
            a.release(&self.ip);
        }
        self.shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a TLS connection that ended before WELCOME, however it ended.
struct EndCount {
    shared: Arc<Shared>,
    established: bool,
    /// This connection's request latencies, merged in batches and at the end.
    latency: metrics::LocalLatency,
}

impl Drop for EndCount {
    fn drop(&mut self) {
        if !self.established {
            self.shared
                .stats
                .not_established
                .fetch_add(1, Ordering::Relaxed);
        }
        self.latency.flush(&self.shared.stats.detail);
    }
}

/// Read what the socket holds into this worker thread's buffer and feed
/// it to `conn`: a waiting session then owns no read buffer (a 16 KiB one
/// per connection was 40% of an idle session's memory), and nothing is
/// zeroed per read.
fn read_ready(stream: &TcpStream, conn: &mut Connection, now: Now) {
    thread_local! {
        static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(16 * 1024));
    }
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        match stream.try_read_buf(&mut *buf) {
            Ok(0) => conn.handle_eof(now),
            Ok(n) => conn.handle_input(now, &buf[..n]),
            // Readiness was spurious: wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => conn.handle_eof(now),
        }
    });
}

/// Append to the per-burst output buffer, which starts at 16 KiB when
/// (re)made: growing it from nothing by doubling cost a measurable share
/// per burst, and an idle session keeps none (see the wait in `handle`).
fn extend_out(out: &mut Vec<u8>, bytes: &[u8]) {
    if out.capacity() == 0 {
        out.reserve(bytes.len().max(16 * 1024));
    }
    out.extend_from_slice(bytes);
}

/// A machine's log line is printed (through `log`, which adds the peer's
/// prefix); any other event is a question for the caller to answer.
pub(crate) fn question(ev: Event, log: &impl Fn(Level, &str)) -> Option<Event> {
    match ev {
        Event::Log { level, message } => {
            log(level, &message);
            None
        }
        q => Some(q),
    }
}

/// Logged when a peer stops reading and the write deadline passes.
const WRITE_STALLED: &str = "Peer stopped reading (write deadline), closing connection";

/// Answer `ev` from the filesystem on the blocking pool (it may block:
/// hashing, reads, key files, DNS), with `f` as this connection's file
/// state, which goes back into `files`. `None` if the pool task died.
pub(crate) async fn answer_on_pool(
    fs: &Arc<ServerFs>,
    files: &mut Option<Files>,
    mut f: Files,
    ev: Event,
) -> Option<(Option<rcf_core::server::Answer>, Option<(Level, String)>)> {
    let fs = fs.clone();
    let (f, r) = tokio::task::spawn_blocking(move || {
        let r = fs.answer(&mut f, &ev);
        (f, r)
    })
    .await
    .ok()?;
    *files = Some(f);
    Some(r)
}

/// Add to `counter` what a machine's running total `now` gained since
/// `last` (which it then becomes).
pub(crate) fn add_since(counter: &AtomicU64, last: &mut u64, now: u64) {
    if now != *last {
        counter.fetch_add(now - *last, Ordering::Relaxed);
        *last = now;
    }
}

/// Output is written once this much is pending, or when nothing else is.
const WRITE_BATCH: usize = 64 * 1024;

/// Write and clear `out`; false when the peer did not take it in time.
async fn send(stream: &mut TcpStream, out: &mut Vec<u8>, deadline: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = matches!(
        tokio::time::timeout(deadline, stream.write_all(out)).await,
        Ok(Ok(()))
    );
    out.clear();
    ok
}

/// Classic or TLS, from the first bytes (the decision is the core's
/// [`sniff`]): peeks until it can tell, giving a slow peer until 200 ms
/// before `deadline` to complete its first segment. `None` when the peer
/// closed or the deadline passed first.
async fn classify(stream: &TcpStream, deadline: Duration) -> Option<Protocol> {
    let mut buf = [0u8; SNIFF_LEN];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let n = tokio::time::timeout_at(end, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(p) = sniff(&buf[..n]) {
            return Some(p);
        }
        if tokio::time::Instant::now() + Duration::from_millis(200) > end {
            return Some(SHORT_FIRST_SEGMENT);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn handle(mut stream: TcpStream, _addr: SocketAddr, ip: String, shared: Arc<Shared>) {
    let log = |l: Level, m: &str| shared.logger.log(l, Some(&ip), m);
    // The handshake deadline runs from here (accept) to WELCOME.
    let accepted = shared.now();
    log(Level::Info, "Accepting connection");
    if !shared.listeners_nodelay.load(Ordering::Relaxed) {
        let _ = stream.set_nodelay(true);
    }
    let handshake = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    match classify(&stream, handshake).await {
        None if shared.now().mono_ms >= accepted.mono_ms + shared.cfg.handshake_timeout_ms => {
            log(
                Level::Info,
                "Connection timed out before the peer sent anything, closing",
            );
            return;
        }
        None => {
            log(
                Level::Verbose,
                "Peer closed TCP connection without sending data!",
            );
            return;
        }
        Some(Protocol::Classic) => {
            log(
                Level::Verbose,
                "Peeked CAUTH in TCP stream, considering the protocol as Classic",
            );
            shared.stats.classic.fetch_add(1, Ordering::Relaxed);
            return classic::handle_classic(stream, ip.clone(), shared.clone()).await;
        }
        Some(Protocol::Tls) => log(
            Level::Verbose,
            "Peeked nothing important in TCP stream, considering the protocol as TLS",
        ),
    }
    let tls = match shared.tls.accept() {
        Ok(t) => t,
        Err(e) => {
            log(
                Level::Error,
                &format!("Failed to accept TLS connection: {e}"),
            );
            return;
        }
    };
    let mut end = EndCount {
        shared: shared.clone(),
        established: false,
        latency: Default::default(),
    };
    let mut policy_rx = shared.policy.subscribe();
    let policy = policy_rx.borrow_and_update().clone();
    let mut conn = Connection::new(
        tls,
        shared.cfg.clone(),
        rcf_core::server::tofu::gated_view(policy, shared.tofu.clone()),
        ip.clone(),
        accepted,
    );
    // (requests read, when the latest started, its label) for latency metrics
    let mut timing: (u64, Option<(Instant, &'static str)>) = (0, None);
    let mut files = Some(Files::default());
    let mut run: Option<exec::Run> = None;
    let mut out: Vec<u8> = Vec::new();
    let mut established = false;
    let mut served = 0u64;
    let mut denied = 0u64;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<u64> = None;
    // The clock as read once per burst of quick answers (reset on each wait).
    let mut now: Option<Now> = None;
    loop {
        if let Some(s) = conn.session() {
            let (n, text) = s.last_request();
            if n != timing.0 {
                // A new request was read since we last looked: the previous
                // one (if any) ended when this one arrived.
                if let Some((t0, label)) = timing.1.take() {
                    end.latency
                        .observe(label, t0.elapsed(), &shared.stats.detail);
                }
                timing = (
                    n,
                    Some((Instant::now(), rcf_core::request::metric_label(text))),
                );
            }
        }
        // Send what is pending in one write (a STAT reply is two records;
        // one syscall per record showed up in profiles), bounded by the
        // write deadline.
        while let Some(bytes) = conn.poll_transmit() {
            extend_out(&mut out, &bytes);
        }
        if !send(&mut stream, &mut out, shared.write_timeout).await {
            log(Level::Info, WRITE_STALLED);
            return;
        }
        // Answer every question; answers may produce more output.
        let mut progressed = false;
        while let Some(ev) = conn.poll_event() {
            progressed = true;
            let Some(ev) = question(ev, &log) else {
                continue;
            };
            let ev = match cluster::answer_key(&shared, ev).await {
                cluster::Keyed::Other(ev) => ev,
                cluster::Keyed::Answer(a) => {
                    if let Some(Err(e)) = a.map(|a| conn.handle_answer(shared.now(), a)) {
                        log(Level::Error, &format!("internal: {e}"));
                        return;
                    }
                    continue;
                }
                cluster::Keyed::Close => return,
            };
            if let Some(answer) = exec::handle(&shared, &ip, &ev, &mut run).await {
                if let Some(a) = answer {
                    if let Err(e) = conn.handle_answer(shared.now(), a) {
                        log(Level::Error, &format!("internal: {e}"));
                        return;
                    }
                }
                break;
            }
            // Metadata questions (realpath, stat, listing, open) and digest
            // cache hits take microseconds: answer them here. Handing each to
            // the blocking pool cost two thread switches per question, which
            // dominated the server's profile. Hashing, reads, key files and
            // DNS may block, so they still go to the pool.
            let mut f = files.take().unwrap_or_default();
            let quick = match &ev {
                Event::Digest { path } => shared
                    .fs
                    .peek_digest(&mut f, path)
                    .map(|d| (Some(rcf_core::server::Answer::Digest(Some(d))), None)),
                e @ Event::LookupKey { .. } => shared.fs.quick_key(e).map(|a| (Some(a), None)),
                e if ServerFs::is_quick(e) => Some(shared.fs.answer(&mut f, e)),
                _ => None,
            };
            let (answer, note) = match quick {
                Some(r) => {
                    files = Some(f);
                    // Quick answers of one burst share one clock reading.
                    now = Some(now.unwrap_or_else(|| shared.now()));
                    r
                }
                None => match answer_on_pool(&shared.fs, &mut files, f, ev).await {
                    Some(r) => {
                        now = Some(shared.now());
                        r
                    }
                    None => return,
                },
            };
            if let Some((level, msg)) = note {
                log(level, &msg);
            }
            if let Some(a) = answer {
                if let Err(e) = conn.handle_answer(now.unwrap_or_else(|| shared.now()), a) {
                    log(Level::Error, &format!("internal: {e}"));
                    return;
                }
            }
            // Answer pipelined requests back to back, writing whenever a
            // batch fills (a GET's reads fill one each, so large files
            // stream with bounded memory); the rest goes out before the
            // next wait, at the top of the loop.
            if conn.pending_output() >= WRITE_BATCH {
                while let Some(bytes) = conn.poll_transmit() {
                    extend_out(&mut out, &bytes);
                }
            }
            if out.len() >= WRITE_BATCH {
                if !send(&mut stream, &mut out, shared.write_timeout).await {
                    log(Level::Info, WRITE_STALLED);
                    return;
                }
                now = None;
            }
        }
        if progressed {
            continue;
        }
        if !established && conn.session().map(|s| s.is_established()).unwrap_or(false) {
            established = true;
            end.established = true;
            shared.stats.established.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = conn.session() {
                cluster::established(&shared, &ip, &s.peer().key_id);
                if let Some(others) = shared.stats.detail.saw_key(&s.peer().key_id, &ip) {
                    log(
                        Level::Notice,
                        &format!(
                            "Key {} was already seen from {} (cloned host, or a moved one?)",
                            s.peer().key_id,
                            others.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(s) = conn.session() {
            add_since(&shared.stats.bytes_served, &mut served, s.bytes_served());
            add_since(
                &shared.stats.denied_requests,
                &mut denied,
                s.requests_denied(),
            );
        }
        if conn.is_closing() {
            break;
        }
        if policy_rx.has_changed().unwrap_or(false) {
            let p = policy_rx.borrow_and_update().clone();
            conn.set_policy(rcf_core::server::tofu::gated_view(p, shared.tofu.clone()));
        }
        // Everything asked was answered and sent: the request is done.
        if let Some((t0, label)) = timing.1.take() {
            end.latency
                .observe(label, t0.elapsed(), &shared.stats.detail);
        }
        // One timer per connection, moved only when the deadline comes
        // earlier or more than a second later than armed: re-arming a timer
        // for every request showed in profiles. Firing early is harmless
        // (`handle_timeout` checks the real deadline), then it is re-armed.
        let want = conn.poll_timeout();
        if let Some(w) = want {
            if armed.is_none_or(|a| w < a || w > a + 1000) {
                sleep.as_mut().reset(tokio::time::Instant::from_std(
                    shared.origin + Duration::from_millis(w),
                ));
                armed = Some(w);
            }
        }
        now = None;
        // Everything that arrived together is answered: the next lookups
        // must see the filesystem afresh (see `Files::end_burst`).
        if let Some(f) = files.as_mut() {
            f.end_burst();
        }
        // An idle session keeps no output buffer (re-made per burst).
        if out.is_empty() && out.capacity() > 0 {
            out = Vec::new();
        }
        tokio::select! {
            r = stream.readable() => match r {
                Ok(()) => read_ready(&stream, &mut conn, shared.now()),
                Err(_) => conn.handle_eof(shared.now()),
            },
            _ = &mut sleep, if want.is_some() => {
                armed = None;
                conn.handle_timeout(shared.now());
            }
            // `changed()` marks the new value seen, so apply it here: the
            // `has_changed()` check above would not see it again.
            r = policy_rx.changed() => {
                if r.is_ok() {
                    let p = policy_rx.borrow_and_update().clone();
                    conn.set_policy(rcf_core::server::tofu::gated_view(p, shared.tofu.clone()));
                }
            }
        }
    }
    // Flush what is left (a final refusal, an alert), then close without
    // close_notify, as 3.21 does.
    while let Some(bytes) = conn.poll_transmit() {
        if tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes))
            .await
            .is_err()
        {
            break;
        }
    }
    end.established = established;
    log(Level::Info, "Closing connection, terminating thread");
}
