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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcf_core::policy::ServerPolicy;
use rcf_core::server::admission::{map_address, Admission};
use rcf_core::server::{Config, Connection, Event, Level, Now};
use rcf_core::tls::{ServerTls, TlsClock};
use rcf_fs::serve::{Files, ServerFs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod classic;

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
        Logger { max, timestamps, out: Mutex::new(Box::new(std::io::stderr())) }
    }

    /// Log to any writer (a file, or a buffer in tests).
    pub fn to(max: Level, timestamps: bool, w: Box<dyn std::io::Write + Send>) -> Self {
        Logger { max, timestamps, out: Mutex::new(w) }
    }

    /// One line; `ip` adds cf-serverd's per-connection prefix.
    pub fn log(&self, level: Level, ip: Option<&str>, msg: &str) {
        if level > self.max {
            return;
        }
        let mut line = String::new();
        if self.timestamps {
            let s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
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
    origin: Instant,
}

impl Shared {
    /// Bundle the server's shared state, with default deadlines.
    pub fn new(policy: Arc<ServerPolicy>, tls: ServerTls, tls_clock: TlsClock, fs: Arc<ServerFs>, logger: Arc<Logger>) -> Arc<Self> {
        Self::with_timeouts(policy, tls, tls_clock, fs, logger, Config::default(), Duration::from_secs(60))
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
            origin: Instant::now(),
        })
    }

    fn now(&self) -> Now {
        let unix_s = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Now { mono_ms: self.origin.elapsed().as_millis() as u64, unix_s }
    }

    /// Publish a reloaded policy: new connections and the next request of
    /// every open session use it.
    pub fn set_policy(&self, p: Arc<ServerPolicy>) {
        self.policy.send_replace(p);
    }
}

/// Serve on `listeners` until `shutdown` resolves.
pub async fn serve(listeners: Vec<TcpListener>, shared: Arc<Shared>, shutdown: impl std::future::Future<Output = ()>) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let shared = shared.clone();
        tasks.spawn(async move { accept_loop(l, shared).await });
    }
    shutdown.await;
    tasks.abort_all();
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                shared.logger.log(Level::Error, None, &format!("accept: {e}"));
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = map_address(&addr.ip().to_string()).to_string();
        let admitted = {
            let policy = shared.policy.borrow().clone();
            let mut a = shared.admission.lock().expect("admission lock");
            a.admit(&ip, &policy.control)
        };
        if let Err(refusal) = admitted {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            shared.logger.log(Level::Error, None, &refusal.to_string());
            drop(stream);
            continue;
        }
        shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _release = Release { shared: shared.clone(), ip: ip.clone() };
            handle(stream, addr, ip, shared).await;
        });
    }
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
    }
}

/// Classic or TLS, from the first bytes: `CAUTH` at offset 8 (or a short
/// first segment that is not a TLS record) means classic.
async fn classify(stream: &TcpStream, deadline: Duration) -> Option<bool> {
    let mut buf = [0u8; 14];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let n = tokio::time::timeout_at(end, stream.peek(&mut buf)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if buf[0] == 0x16 {
            return Some(false);
        }
        if n >= 14 {
            return Some(&buf[8..13] == b"CAUTH");
        }
        // Give a slow peer a moment to complete its first 14 bytes.
        if tokio::time::Instant::now() + Duration::from_millis(200) > end {
            return Some(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn handle(mut stream: TcpStream, _addr: SocketAddr, ip: String, shared: Arc<Shared>) {
    let log = |l: Level, m: &str| shared.logger.log(l, Some(&ip), m);
    // The handshake deadline runs from here (accept) to WELCOME.
    let accepted = shared.now();
    log(Level::Info, "Accepting connection");
    let _ = stream.set_nodelay(true);
    let handshake = Duration::from_millis(shared.cfg.handshake_timeout_ms);
    match classify(&stream, handshake).await {
        None if shared.now().mono_ms >= accepted.mono_ms + shared.cfg.handshake_timeout_ms => {
            log(Level::Info, "Connection timed out before the peer sent anything, closing");
            return;
        }
        None => {
            log(Level::Verbose, "Peer closed TCP connection without sending data!");
            return;
        }
        Some(true) => {
            log(Level::Verbose, "Peeked CAUTH in TCP stream, considering the protocol as Classic");
            return classic::handle_classic(stream, ip.clone(), shared.clone()).await;
        }
        Some(false) => log(Level::Verbose, "Peeked nothing important in TCP stream, considering the protocol as TLS"),
    }
    let tls = match shared.tls.accept() {
        Ok(t) => t,
        Err(e) => {
            log(Level::Error, &format!("Failed to accept TLS connection: {e}"));
            return;
        }
    };
    let mut policy_rx = shared.policy.subscribe();
    let policy = policy_rx.borrow_and_update().clone();
    let mut conn = Connection::new(tls, shared.cfg.clone(), policy, ip.clone(), accepted);
    let mut files = Some(Files::default());
    let mut buf = vec![0u8; 16 * 1024];
    let mut established = false;
    let mut served = 0u64;
    loop {
        // Drain everything the core wants sent, bounded by the write deadline.
        while let Some(bytes) = conn.poll_transmit() {
            match tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    log(Level::Info, "Peer stopped reading (write deadline), closing connection");
                    return;
                }
            }
        }
        // Answer every question; answers may produce more output.
        let mut progressed = false;
        while let Some(ev) = conn.poll_event() {
            progressed = true;
            if let Event::Log { level, message } = &ev {
                log(*level, message);
                continue;
            }
            let fs = shared.fs.clone();
            let mut f = files.take().unwrap_or_default();
            let (f, (answer, note)) = match tokio::task::spawn_blocking(move || {
                let r = fs.answer(&mut f, &ev);
                (f, r)
            })
            .await
            {
                Ok(x) => x,
                Err(_) => return,
            };
            files = Some(f);
            if let Some((level, msg)) = note {
                log(level, &msg);
            }
            if let Some(a) = answer {
                if let Err(e) = conn.handle_answer(shared.now(), a) {
                    log(Level::Error, &format!("internal: {e}"));
                    return;
                }
            }
            // Send what this answer produced before asking the next question,
            // so a large GET streams with bounded memory.
            break;
        }
        if progressed {
            continue;
        }
        if !established && conn.session().map(|s| s.is_established()).unwrap_or(false) {
            established = true;
            shared.stats.established.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = conn.session() {
            let now_served = s.bytes_served();
            shared.stats.bytes_served.fetch_add(now_served - served, Ordering::Relaxed);
            served = now_served;
        }
        if conn.is_closing() {
            break;
        }
        if policy_rx.has_changed().unwrap_or(false) {
            let p = policy_rx.borrow_and_update().clone();
            conn.set_policy(p);
        }
        let sleep = conn.poll_timeout().map(|ms| {
            let now = shared.now().mono_ms;
            Duration::from_millis(ms.saturating_sub(now))
        });
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => conn.handle_eof(shared.now()),
                Ok(n) => conn.handle_input(shared.now(), &buf[..n]),
                Err(_) => conn.handle_eof(shared.now()),
            },
            _ = async { match sleep { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
                conn.handle_timeout(shared.now());
            }
            _ = policy_rx.changed() => {}
        }
    }
    // Flush what is left (a final refusal, an alert), then close without
    // close_notify, as 3.21 does.
    while let Some(bytes) = conn.poll_transmit() {
        if tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes)).await.is_err() {
            break;
        }
    }
    log(Level::Info, "Closing connection, terminating thread");
}
