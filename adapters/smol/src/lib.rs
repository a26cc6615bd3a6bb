//! rcf-smol: the client runtime. It connects, moves bytes between a smol
//! TCP stream and an [`rcf_core::client::Connection`], answers the
//! connection's one question (is this server key trusted?) from `ppkeys`,
//! and runs the timers. No protocol logic lives here.
//!
//! [`Client`] is one authenticated connection, used by `rcf-agent` as the
//! per-server cached connection of a run. Its typed calls ([`Client::stat`],
//! [`Client::get`], [`Client::opendir`], [`Client::md5`]) wait for their
//! reply; [`Client::stat_many`] and [`Client::md5_many`] pipeline a batch;
//! [`Client::submit`] and [`Client::next_event`] expose the core's request
//! queue for other pipelining (several STATs or MD5s in flight).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcf_core::banner::ProtocolVersion;
use rcf_core::client::{
    ClientError, ClientRequest, Config, Connection, Event, GetFailure, Level, Now, Reply,
    RequestId, RequestRef,
};
use rcf_core::keys::trust::TrustStore;
use rcf_core::keys::DigestKind;
use rcf_core::reply::StatReply;
use rcf_core::tls::{TlsClock, TlsLayer};
use rcf_fs::ppkeys::FsPpkeys;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

pub mod classic;
mod tcp;
pub use classic::{ClassicConn, ClassicOptions, Conn};

/// Most `STAT`s [`Client::stat_many`] keeps in flight at once.
pub const STAT_BATCH: usize = 128;

/// Where log lines go: the level and cf-agent's wording.
pub type LogFn = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// Everything needed to open one connection.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Host name or address, as the user wrote it (without the port).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Version to ask for (`None` = latest); classic is not spoken here.
    pub version: Option<ProtocolVersion>,
    /// Connect timeout, also the per-read timeout (`copy_from timeout`).
    pub timeout: Duration,
    /// Trust an unknown (or changed) server key and save it (`trustkey`,
    /// bootstrap, cf-net); otherwise such a key ends the connection.
    pub trust_new: bool,
    /// `WORKDIR/ppkeys`.
    pub ppkeys: PathBuf,
    /// The local user: the ppkeys file prefix and the IDENTITY username.
    pub local_user: String,
    /// Our TLS client configuration (host key certificate inside).
    pub tls: Arc<rustls::ClientConfig>,
    /// The time rustls sees ([`TlsClock`]: fixed when the options are made).
    pub clock: TlsClock,
    /// Log sink.
    pub log: LogFn,
    /// cf-agent's `bindtointerface`: the address (or name) outgoing
    /// sockets are bound to before connecting; `None` lets the OS choose.
    pub bind_to: Option<String>,
    /// `force_ipv4`: connect to the server's IPv4 addresses only.
    pub force_ipv4: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish()
    }
}

/// Why a connection or a request failed at the connection level (a
/// refusal of one file is a normal reply, not an error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect failed or timed out.
    #[error("Unable to establish connection to '{addr}': {detail}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The OS error or "Timeout connecting to server".
        detail: String,
    },
    /// The server's key is not trusted (and trusting it was not allowed).
    #[error("{message}")]
    Untrusted {
        /// `MD5=…` of the presented key.
        key_id: String,
        /// `TRUST FAILED, server presented untrusted key: MD5=…`.
        message: String,
    },
    /// The protocol session failed (TLS, identification, bad replies, EOF).
    #[error("{0}")]
    Session(#[from] ClientError),
    /// A socket read or write failed.
    #[error("connection I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The connection was already closed (after a failure or a desync).
    #[error("connection is closed")]
    Closed,
}

impl Error {
    /// Whether the server was never reached or never authenticated us (the
    /// case where cf-agent tries the next server in its list).
    pub fn is_connect_failure(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Untrusted { .. })
    }
}

/// One connected, authenticated client connection.
pub struct Client {
    stream: TcpStream,
    conn: Connection,
    opts: ConnectOptions,
    start: Instant,
    backlog: VecDeque<Event>,
    next_id: RequestId,
    server_key: Option<String>,
    untrusted: Option<(String, String)>,
    version: Option<ProtocolVersion>,
    buf: Vec<u8>,
    /// The last time read, for requests that do not need a fresh one.
    last_now: Now,
}

/// This host's name (the `CAUTH` fqdn; classic ACLs match it as a regex).
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Client {
    /// Connect, handshake, check the server key, identify; returns once the
    /// server welcomed us.
    pub async fn connect(opts: ConnectOptions) -> Result<Client, Error> {
        Self::connect_from(opts, None).await
    }

    /// As [`Client::connect`], with the local (source) address bound to
    /// `bind` first (port chosen by the OS) when it is `Some`: a load
    /// generator spreads its connections over 127.0.0.0/8 this way (a
    /// failed bind is then an error). `host` must then be an IP address of
    /// the same family.
    pub async fn connect_from(
        opts: ConnectOptions,
        bind: Option<std::net::IpAddr>,
    ) -> Result<Client, Error> {
        let stream = tcp::open(&opts, bind).await?;
        let _ = stream.set_nodelay(true);
        let tls = TlsLayer::client(opts.tls.clone())
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let start = Instant::now();
        let cfg = Config {
            version: opts.version,
            username: opts.local_user.clone(),
            timeout_ms: opts.timeout.as_millis() as u64,
        };
        let now = Now {
            mono_ms: 0,
            unix_s: unix_now(),
        };
        let conn = Connection::new(tls, cfg, now);
        let mut c = Client {
            stream,
            conn,
            opts,
            start,
            backlog: VecDeque::new(),
            next_id: 1,
            server_key: None,
            untrusted: None,
            version: None,
            buf: vec![0u8; 32 * 1024],
            last_now: now,
        };
        loop {
            match c.next_event().await? {
                Event::Established { version } => {
                    c.version = Some(version);
                    return Ok(c);
                }
                other => c.backlog.push_back(other),
            }
        }
    }

    /// The server key's id, once the handshake is done.
    pub fn server_key_id(&self) -> Option<&str> {
        self.server_key.as_deref()
    }

    /// The negotiated protocol version.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Whether requests can still be made on this connection.
    pub fn is_usable(&self) -> bool {
        !self.conn.is_closed()
    }

    /// File bytes received on this connection.
    pub fn bytes_received(&self) -> u64 {
        self.conn.session().bytes_received()
    }

    fn now(&mut self) -> Now {
        self.last_now = Now {
            mono_ms: self.start.elapsed().as_millis() as u64,
            unix_s: unix_now(),
        };
        self.last_now
    }

    /// The time for a request: read only when the session uses it (the
    /// first request of a pipeline starts the reply deadline); the clock
    /// reads per request were a visible share of a pipelined batch.
    fn request_now(&mut self) -> Now {
        if self.conn.request_uses_now() {
            self.now()
        } else {
            self.last_now
        }
    }

    /// Queue a request; its reply comes from [`Client::next_event`].
    pub fn submit(&mut self, req: ClientRequest) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.request_now();
        self.conn.request(now, id, req);
        id
    }

    /// The id the next [`Client::submit`] or [`Client::submit_ref`] will
    /// return (ids are consecutive).
    pub fn next_request_id(&self) -> RequestId {
        self.next_id
    }

    /// As [`Client::submit`], borrowing the request's path: a request that
    /// can go out at once is framed without copying it first.
    pub fn submit_ref(&mut self, req: RequestRef<'_>) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        let now = self.request_now();
        self.conn.request_ref(now, id, req);
        id
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(bytes) = self.conn.poll_transmit() {
            // Most writes fit the socket buffer at once: try without arming
            // a timer (a reactor timer per write was a visible share of the
            // client's CPU). A pending `write` wrote nothing, so dropping it
            // is safe; the rest goes through the timed path.
            let mut off = 0;
            while off < bytes.len() {
                match smol::future::poll_once(self.stream.write(&bytes[off..])).await {
                    Some(Ok(0)) => {
                        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into())
                    }
                    Some(Ok(n)) => off += n,
                    Some(Err(e)) => return Err(e.into()),
                    None => break,
                }
            }
            if off == bytes.len() {
                continue;
            }
            let bytes = &bytes[off..];
            let timeout = self.opts.timeout;
            let w = smol::future::or(async { Some(self.stream.write_all(bytes).await) }, async {
                Timer::after(timeout).await;
                None
            })
            .await;
            match w {
                Some(r) => r?,
                None => return Err(ClientError::Timeout(timeout.as_millis() as u64).into()),
            }
        }
        Ok(())
    }

    fn verify(&mut self, key_id: &str, key: &rcf_core::keys::RsaPublicKey) -> Result<(), String> {
        self.server_key = Some(key_id.to_string());
        let store = TrustStore::new(FsPpkeys::new(&self.opts.ppkeys), DigestKind::Md5);
        let outcome = store.verify(&self.opts.local_user, None, key, self.opts.trust_new);
        let report = match &outcome {
            Ok(o) => rcf_core::client::trust_words::describe(key_id, Ok(o)),
            Err(e) => rcf_core::client::trust_words::describe(key_id, Err(e)),
        };
        for (level, line) in &report.logs {
            (self.opts.log)(*level, line);
        }
        report.verdict
    }

    /// The next event that is not a log line: `Data`, `Reply` (or, during
    /// connect, `Established`). A session failure is an `Err`.
    pub async fn next_event(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                return Ok(e);
            }
            self.flush().await?;
            while let Some(e) = self.conn.poll_event() {
                match e {
                    Event::Log { level, message } => (self.opts.log)(level, &message),
                    Event::VerifyServerKey { key_id, key } => {
                        let verdict = self.verify(&key_id, &key);
                        if let Err(m) = &verdict {
                            self.untrusted = Some((key_id.clone(), m.clone()));
                        }
                        let now = self.now();
                        self.conn.handle_trust(now, verdict);
                    }
                    Event::Failed(e) => {
                        let _ = self.flush().await;
                        if let Some((key_id, message)) = self.untrusted.take() {
                            return Err(Error::Untrusted { key_id, message });
                        }
                        return Err(e.into());
                    }
                    // The only event waiting: hand it out directly (what the
                    // backlog round trip below would return next anyway).
                    other if self.backlog.is_empty() && !self.conn.has_events() => {
                        return Ok(other)
                    }
                    other => self.backlog.push_back(other),
                }
            }
            if !self.backlog.is_empty() {
                continue;
            }
            self.flush().await?;
            if self.conn.is_closed() {
                return Err(Error::Closed);
            }
            let deadline = self.conn.poll_timeout();
            let wait = deadline.map(|d| {
                Duration::from_millis(d.saturating_sub(self.start.elapsed().as_millis() as u64))
            });
            if self.conn.wants_input() {
                let start = self.start;
                let (stream, buf) = (&mut self.stream, &mut self.buf);
                // Data already waiting (the usual case deep in a pipeline)
                // is read without arming a timer; only a read that has to
                // wait gets the deadline.
                let r = match smol::future::poll_once(stream.read(buf)).await {
                    Some(r) => Some(r),
                    None => {
                        smol::future::or(async { Some(stream.read(buf).await) }, async {
                            match wait {
                                Some(w) => Timer::after(w).await,
                                None => Timer::never().await,
                            };
                            None
                        })
                        .await
                    }
                };
                let now = Now {
                    mono_ms: start.elapsed().as_millis() as u64,
                    unix_s: unix_now(),
                };
                self.last_now = now;
                match r {
                    Some(Ok(0)) => self.conn.handle_eof(now),
                    Some(Ok(n)) => self.conn.handle_input(now, &self.buf[..n]),
                    Some(Err(e)) => {
                        // A reset is an EOF to the protocol: the session
                        // reports what it was waiting for (or closes quietly).
                        (self.opts.log)(Level::Verbose, &format!("Socket read failed: {e}"));
                        self.conn.handle_eof(now);
                    }
                    None => self.conn.handle_timeout(now),
                }
            } else if let Some(w) = wait {
                Timer::after(w).await;
                let now = self.now();
                self.conn.handle_timeout(now);
            } else {
                return Err(ClientError::Transport(
                    "connection stalled: nothing to read and no deadline".into(),
                )
                .into());
            }
        }
    }

    async fn reply(
        &mut self,
        id: RequestId,
        mut on_data: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Reply, Error> {
        let mut sink_error: Option<std::io::Error> = None;
        // Events of other pipelined requests, handed back in order afterwards.
        let mut others: Vec<Event> = Vec::new();
        let result = loop {
            let ev = match self.next_event().await {
                Ok(ev) => ev,
                Err(e) => break Err(e),
            };
            match ev {
                Event::Reply { id: rid, reply } if rid == id => {
                    break match sink_error.take() {
                        Some(e) => Err(Error::Io(e)),
                        None => Ok(reply),
                    };
                }
                Event::Data { id: rid, bytes }
                | Event::ExecLine {
                    id: rid,
                    line: bytes,
                } if rid == id => {
                    if sink_error.is_none() {
                        if let Err(e) = on_data(&bytes) {
                            sink_error = Some(e);
                        }
                    }
                }
                other => others.push(other),
            }
        };
        for e in others.into_iter().rev() {
            self.backlog.push_front(e);
        }
        result
    }

    /// `SYNCH <now> STAT <path>`: the server's stat, or its refusal text.
    pub async fn stat(&mut self, path: &[u8]) -> Result<Result<StatReply, String>, Error> {
        let id = self.submit_ref(RequestRef::Stat {
            path,
            client_time: unix_now(),
        });
        match self.reply(id, |_| Ok(())).await? {
            Reply::Stat(r) => Ok(r),
            other => Err(ClientError::Transport(format!("unexpected reply {other:?}")).into()),
        }
    }

    /// Pipelined `STAT`s: all requests go out before the first reply is
    /// read (in batches of [`STAT_BATCH`], so buffered replies stay small);
    /// the results come back in the order of `paths`.
    pub async fn stat_many(
        &mut self,
        paths: &[Vec<u8>],
    ) -> Result<Vec<Result<StatReply, String>>, Error> {
        self.pipelined(
            paths,
            |p, t| RequestRef::Stat {
                path: p,
                client_time: t,
            },
            |r| match r {
                Reply::Stat(st) => Ok(st),
                other => Err(other),
            },
        )
        .await
    }

    /// Pipelined `MD5`s, like [`Client::stat_many`]: every `(path, local
    /// digest)` goes out before the first reply is read (in batches of
    /// [`STAT_BATCH`]); the verdicts (`Ok(true)` = the server's file
    /// differs) come back in the order of `items`.
    pub async fn md5_many(
        &mut self,
        items: &[(Vec<u8>, [u8; 16])],
    ) -> Result<Vec<Result<bool, String>>, Error> {
        self.pipelined(
            items,
            |(p, d), _| RequestRef::Md5 {
                path: p,
                digest: *d,
            },
            |r| match r {
                Reply::Md5(v) => Ok(v),
                other => Err(other),
            },
        )
        .await
    }

    /// Send `make(item, now)` for each of `items`, a batch of
    /// [`STAT_BATCH`] at a time, and collect the replies `pick` accepts in
    /// the order of `items`. Events for other requests (and replies `pick`
    /// hands back) are kept for later callers.
    async fn pipelined<'a, I, T: Clone>(
        &mut self,
        items: &'a [I],
        make: impl Fn(&'a I, i64) -> RequestRef<'a>,
        pick: impl Fn(Reply) -> Result<Result<T, String>, Reply>,
    ) -> Result<Vec<Result<T, String>>, Error> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(STAT_BATCH) {
            let t = unix_now();
            let first = self.next_id;
            for it in chunk {
                self.submit_ref(make(it, t));
            }
            let mut got: Vec<Option<Result<T, String>>> = vec![None; chunk.len()];
            let mut others = Vec::new();
            let mut left = chunk.len();
            let r = loop {
                if left == 0 {
                    break Ok(());
                }
                match self.next_event().await {
                    Ok(Event::Reply { id, reply })
                        if id >= first && ((id - first) as usize) < chunk.len() =>
                    {
                        match pick(reply) {
                            Ok(v) => {
                                got[(id - first) as usize] = Some(v);
                                left -= 1;
                            }
                            Err(reply) => others.push(Event::Reply { id, reply }),
                        }
                    }
                    Ok(other) => others.push(other),
                    Err(e) => break Err(e),
                }
            };
            for e in others.into_iter().rev() {
                self.backlog.push_front(e);
            }
            r?;
            results.extend(
                got.into_iter()
                    .map(|g| g.unwrap_or_else(|| Err("no reply".into()))),
            );
        }
        Ok(results)
    }

    /// `GET`: exactly `size` bytes (from the STAT) go to `on_data` as they
    /// arrive. A sink error is reported after the reply, so the connection
    /// stays in sync.
    pub async fn get(
        &mut self,
        path: &[u8],
        size: u64,
        on_data: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Result<(), GetFailure>, Error> {
        let id = self.submit_ref(RequestRef::Get { path, size });
        match self.reply(id, on_data).await? {
            Reply::Get(r) => Ok(r),
            other => Err(ClientError::Transport(format!("unexpected reply {other:?}")).into()),
        }
    }

    /// `OPENDIR`: every name the server listed, or its refusal text.
    pub async fn opendir(&mut self, path: &[u8]) -> Result<Result<Vec<Vec<u8>>, String>, Error> {
        let id = self.submit_ref(RequestRef::Opendir { path });
        match self.reply(id, |_| Ok(())).await? {
            Reply::Listing(r) => Ok(r),
            other => Err(ClientError::Transport(format!("unexpected reply {other:?}")).into()),
        }
    }

    /// `MD5`: `Ok(true)` when the server's file differs from `digest`.
    pub async fn md5(
        &mut self,
        path: &[u8],
        digest: [u8; 16],
    ) -> Result<Result<bool, String>, Error> {
        let id = self.submit_ref(RequestRef::Md5 { path, digest });
        match self.reply(id, |_| Ok(())).await? {
            Reply::Md5(r) => Ok(r),
            other => Err(ClientError::Transport(format!("unexpected reply {other:?}")).into()),
        }
    }

    /// `EXEC` (cf-runagent): each reply line goes to `on_line` as it
    /// arrives; the result is the remote exit code, if one was reported.
    pub async fn exec(
        &mut self,
        args: &[u8],
        select: &[Vec<u8>],
        on_line: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Option<i32>, Error> {
        let id = self.submit_ref(RequestRef::Exec { args, select });
        match self.reply(id, on_line).await? {
            Reply::Exec(code) => Ok(code),
            other => Err(ClientError::Transport(format!("unexpected reply {other:?}")).into()),
        }
    }

    /// Send `close_notify` and close, as cf-agent does at the end of a run.
    pub async fn close(mut self) {
        self.conn.close();
        let _ = self.flush().await;
        let _ = self.stream.close().await;
    }
}

/// `host:port`, bracketing a bare IPv6 address.
pub fn format_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
