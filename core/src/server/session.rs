//! The server side of one connection, above TLS: version negotiation,
//! IDENTITY, key trust, and the command loop (PROTOCOL.md §5, §6.5-6.7, §8).
//!
//! Plaintext in ([`Session::handle_plaintext`]), plaintext records out
//! ([`Session::poll_record`], one TLS record each, because 3.21's receiver
//! reads a header with a single `SSL_read`), questions out
//! ([`Session::poll_event`]) and answers in ([`Session::handle_answer`]).
//! After every input, drain `poll_record` and `poll_event` until both are
//! empty, then wait for input, an answer, or [`Session::poll_timeout`].

use std::collections::VecDeque;
use std::sync::Arc;

use crate::banner::{self, ProtocolVersion};
use crate::frame::{self, Decoder, Status};
use crate::identity::{self, LineBuffer};
use crate::reply;
use crate::request::{self, Dialect, Request, RequestError};

use super::view::{Peer, PolicyView, ResourceKind};
use crate::machine::exec::{self, ExecClasses, ExecWait};
use crate::machine::io::{Answer, Canonical, Event, KeyStatus, OpenedFile};
use crate::machine::transfer::{self, Transfer};
pub use crate::machine::{CallerError, Config, Level, Now, GET_BLOCK, READ_CHUNK};

/// Promised sizes remembered per connection (the client's STAT cache twin).
const MAX_PROMISES: usize = 4096;

#[path = "session_exec.rs"]
mod exec_steps;

/// The peer's key, as the TLS layer extracted it from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    /// `MD5=…` (what `admit_keys` and `$(connection.key)` match).
    pub id: String,
    /// The key itself, compared with ppkeys and stored on trust.
    pub key: rsa::RsaPublicKey,
}

impl PeerKey {
    /// The Community (MD5) identity of `key`.
    pub fn new(key: rsa::RsaPublicKey) -> Self {
        let id = crate::keys::key_id(&key, crate::keys::DigestKind::Md5).to_string();
        PeerKey { id, key }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitVersion,
    AwaitIdentity,
    Identifying,
    Ready,
    Busy,
    Closing,
}

#[derive(Debug)]
enum Waiting {
    Nothing,
    Key,
    User,
    Reverse,
    Canon(PathOp),
    Stat { path: Vec<u8> },
    Open { path: Vec<u8>, bufsize: u16 },
    Read(Transfer),
    Listing { path: Vec<u8> },
    Digest { digest: [u8; 16] },
    Exec(ExecWait),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Stat,
    Get,
    Opendir,
    Md5,
}

impl Cmd {
    fn denied_log(self) -> &'static str {
        match self {
            Cmd::Stat => "STAT",
            Cmd::Get => "GET",
            Cmd::Opendir => "OPENDIR",
            Cmd::Md5 => "file",
        }
    }

    /// The request's metric label.
    fn label(self) -> &'static str {
        match self {
            Cmd::Stat => "STAT",
            Cmd::Get => "GET",
            Cmd::Opendir => "OPENDIR",
            Cmd::Md5 => "MD5",
        }
    }
}

#[derive(Debug)]
struct PathOp {
    cmd: Cmd,
    /// The absolute path asked for (after shortcut expansion), for log lines.
    requested: Vec<u8>,
    client_time: i64,
    bufsize: u16,
    digest: [u8; 16],
}

/// One server connection's protocol state above TLS.
pub struct Session {
    cfg: Config,
    policy: Arc<dyn PolicyView>,
    peer: Peer,
    peer_key: Option<PeerKey>,
    version: Option<ProtocolVersion>,
    uid: Option<u32>,
    phase: Phase,
    waiting: Waiting,
    lines: LineBuffer,
    decoder: Decoder,
    /// Raw request payload being served, for log lines.
    current: Vec<u8>,
    records: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    deadline: Option<u64>,
    /// Newest last; a bounded ring, not a map: a STAT only appends (no
    /// hashing of a peer-chosen path per request), and the rare GET
    /// searches back from the newest, so the latest STAT of a path wins.
    promises: VecDeque<(Vec<u8>, u64)>,
    served: u64,
    /// Requests read so far (for per-command metrics).
    requests: u64,
    exec: Option<ExecClasses>,
}

impl Session {
    /// A session for a peer whose TLS handshake has just completed.
    ///
    /// Queues the banner at once: 3.21 speaks first after the handshake.
    /// `peer_key` is the key from the client certificate; trust in it is
    /// decided after IDENTITY, because ppkeys files are keyed by username.
    pub fn new(
        cfg: Config,
        policy: Arc<dyn PolicyView>,
        ip: String,
        peer_key: PeerKey,
        now: Now,
    ) -> Self {
        let deadline = Some(now.mono_ms + cfg.handshake_timeout_ms);
        let mut s = Session {
            cfg,
            policy,
            peer: Peer {
                ip,
                hostname: None,
                key_id: peer_key.id.clone(),
                username: String::new(),
            },
            peer_key: Some(peer_key),
            version: None,
            uid: None,
            phase: Phase::AwaitVersion,
            waiting: Waiting::Nothing,
            lines: LineBuffer::new(),
            decoder: Decoder::new(),
            current: Vec::new(),
            records: VecDeque::new(),
            events: VecDeque::new(),
            deadline,
            promises: VecDeque::new(),
            served: 0,
            requests: 0,
            exec: None,
        };
        s.records.push_back(banner::server_banner());
        s
    }

    /// Swap in a reloaded policy; it applies from the next request on.
    pub fn set_policy(&mut self, policy: Arc<dyn PolicyView>) {
        self.policy = policy;
    }

    /// The peer facts as the ACL sees them.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The negotiated protocol version, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Whether the session is finished: close the connection once
    /// [`poll_record`](Session::poll_record) has been drained.
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// Whether WELCOME was sent (the peer is identified and trusted).
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Ready | Phase::Busy)
    }

    /// File bytes served so far (for metrics).
    pub fn bytes_served(&self) -> u64 {
        self.served
    }

    /// Requests read so far and the text of the latest one (up to its
    /// first NUL), so an adapter can time each command for metrics.
    pub fn last_request(&self) -> (u64, &[u8]) {
        (self.requests, &self.current)
    }

    /// The next transaction (or raw GET block) to send. It must not be
    /// split across TLS records; several may share one.
    #[must_use]
    pub fn poll_record(&mut self) -> Option<Vec<u8>> {
        self.records.pop_front()
    }

    /// The next question or log line for the adapter.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Session::handle_timeout) must be called, in
    /// monotonic milliseconds. `None` while waiting on the adapter: a slow
    /// disk is not the peer's fault.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let busy = !matches!(self.waiting, Waiting::Nothing);
        crate::machine::peer_deadline(self.phase == Phase::Closing, busy, self.deadline)
    }

    /// The deadline passed: a silent or too slow peer is dropped without a reply.
    pub fn handle_timeout(&mut self, now: Now) {
        let what = match self.is_established() {
            true => "idle",
            false => "identification",
        };
        if let Some(line) = crate::machine::timed_out(self.poll_timeout(), now, what) {
            self.events.push_back(line);
            self.close();
        }
    }

    /// The peer closed its side.
    pub fn handle_eof(&mut self, _now: Now) {
        if self.phase == Phase::AwaitVersion {
            self.log(
                Level::Error,
                "Client closed connection early! He probably does not trust our key...".into(),
            );
        } else if let Err(e) = self.decoder.finish() {
            self.log(Level::Verbose, format!("Peer closed mid-transaction: {e}"));
        }
        self.close();
    }

    /// Decrypted application bytes from the peer.
    pub fn handle_plaintext(&mut self, now: Now, bytes: &[u8]) {
        if self.phase == Phase::Closing {
            return;
        }
        match self.phase {
            Phase::AwaitVersion | Phase::AwaitIdentity => {
                self.lines.push(bytes);
                self.identification(now);
            }
            _ => {
                if let Err(e) = self.decoder.push(bytes) {
                    return self.bad_input(&e);
                }
                self.serve(now);
            }
        }
    }

    /// The adapter's answer to the outstanding question.
    pub fn handle_answer(&mut self, now: Now, answer: Answer) -> Result<(), CallerError> {
        if self.phase == Phase::Closing {
            // A late answer after we decided to close: release what it holds.
            self.events.extend(crate::machine::late_answer(answer));
            return Ok(());
        }
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Nothing);
        match (waiting, answer) {
            (Waiting::Key, Answer::Key(k)) => self.key_answer(now, k),
            (Waiting::User, Answer::User(uid)) => {
                self.uid = Some(uid.unwrap_or(u32::MAX - 1));
                self.welcome(now);
            }
            (Waiting::Reverse, Answer::Hostname(h)) => {
                match &h {
                    Some(name) => {
                        self.log(Level::Info, format!("Hostname (reverse looked up): {name}"))
                    }
                    None => self.log(
                        Level::Info,
                        "Reverse lookup failed (getnameinfo: name unknown)!".into(),
                    ),
                }
                self.peer.hostname = h;
                self.phase = Phase::Ready;
                self.serve(now);
            }
            (Waiting::Canon(op), Answer::Canonical(r)) => self.canonical(now, op, r),
            (Waiting::Stat { path }, Answer::Stat(r)) => {
                match r {
                    Ok(st) => {
                        self.remember(path, st.reply.size);
                        // Both transactions in one record buffer.
                        let mut v = Vec::with_capacity(2 * frame::HEADER_LEN + 128);
                        st.reply.encode_framed(&mut v);
                        self.records.push_back(v);
                    }
                    Err(e) => {
                        let (log, msg) = transfer::stat_failed(&path, &e);
                        self.events.push_back(log);
                        self.send(Status::Done, &msg);
                    }
                }
                self.done(now);
            }
            (Waiting::Open { path, bufsize }, Answer::Opened(r)) => {
                self.opened(now, path, bufsize, r)
            }
            (
                Waiting::Read(t),
                Answer::Data {
                    bytes,
                    current_size,
                },
            ) => self.data(now, t, bytes, current_size),
            (Waiting::Read(t), Answer::ReadFailed(e)) => {
                self.log(Level::Error, format!("Read failed in GetFile. (read: {e})"));
                self.records.extend(t.change_block());
                self.events.push_back(t.close());
                self.done(now);
            }
            (Waiting::Listing { path }, Answer::Listing(r)) => {
                match r {
                    Ok(names) => {
                        for t in reply::opendir_packets(names.iter().map(|n| n.as_slice())) {
                            self.send(t.status, &t.payload);
                        }
                    }
                    Err(e) => {
                        let (log, msg) = transfer::opendir_failed(&path, &e);
                        self.events.push_back(log);
                        self.send(Status::Done, &msg);
                    }
                }
                self.done(now);
            }
            (Waiting::Exec(w), a) => exec::answer(self, now, w, a)?,
            (Waiting::Digest { digest }, Answer::Digest(mine)) => {
                self.send(Status::Done, transfer::md5_reply(digest, mine));
                self.done(now);
            }
            (w, a) => {
                let want = match &w {
                    Waiting::Nothing => "nothing",
                    Waiting::Key => "Key",
                    Waiting::User => "User",
                    Waiting::Reverse => "Hostname",
                    Waiting::Canon(_) => "Canonical",
                    Waiting::Stat { .. } => "Stat",
                    Waiting::Open { .. } => "Opened",
                    Waiting::Read(_) => "Data",
                    Waiting::Listing { .. } => "Listing",
                    Waiting::Digest { .. } => "Digest",
                    Waiting::Exec(w) => w.expects(),
                };
                self.waiting = w;
                return Err(CallerError::unexpected(want, &a));
            }
        }
        Ok(())
    }

    // ---- identification -------------------------------------------------

    fn identification(&mut self, now: Now) {
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    self.log(Level::Error, format!("Identification failed: {e}"));
                    self.close();
                    return;
                }
            };
            match self.phase {
                Phase::AwaitVersion => match banner::server_accept(&line) {
                    Ok(v) => {
                        self.version = Some(v);
                        self.phase = Phase::AwaitIdentity;
                    }
                    Err(e) => {
                        self.log(Level::Error, e.to_string());
                        self.close();
                        return;
                    }
                },
                Phase::AwaitIdentity => {
                    match identity::parse_identity(&line) {
                        Ok(id) => {
                            for (k, v) in &id.unknown {
                                self.log(
                                    Level::Verbose,
                                    format!("Received unknown IDENTITY parameter: {k}={v}"),
                                );
                            }
                            self.peer.username = id.username_or_empty().to_string();
                            if !self.peer.username.is_empty() {
                                self.log(
                                    Level::Verbose,
                                    format!("Setting IDENTITY: USERNAME={}", self.peer.username),
                                );
                            }
                        }
                        Err(e) => {
                            self.log(Level::Error, e.to_string());
                            self.close();
                            return;
                        }
                    }
                    self.phase = Phase::Identifying;
                    let rest = self.lines.take_rest();
                    if self.decoder.push(&rest).is_err() {
                        self.close();
                        return;
                    }
                    self.waiting = Waiting::Key;
                    let Some(key) = self.peer_key.as_ref().map(|k| k.key.clone()) else {
                        self.close();
                        return;
                    };
                    self.events.push_back(Event::LookupKey {
                        user: self.peer.username.clone(),
                        key_id: self.peer.key_id.clone(),
                        key,
                        ip: self.peer.ip.clone(),
                    });
                    let _ = now;
                    return;
                }
                _ => return,
            }
        }
    }

    fn key_answer(&mut self, now: Now, k: KeyStatus) {
        let id = self.peer.key_id.clone();
        match k {
            KeyStatus::Trusted => {
                self.log(
                    Level::Verbose,
                    "Received public key compares equal to the one we have stored".into(),
                );
                self.log(
                    Level::Verbose,
                    format!("{id}: Client is TRUSTED, public key MATCHES stored one."),
                );
            }
            KeyStatus::Missing | KeyStatus::Different => {
                if k == KeyStatus::Missing {
                    self.log(
                        Level::Verbose,
                        format!("Received key '{id}' not found in ppkeys"),
                    );
                } else {
                    self.log(
                        Level::Notice,
                        format!("Received key '{id}' compares different to the one in ppkeys"),
                    );
                }
                if self.policy.trusts_keys_from(&self.peer.ip) {
                    self.log(
                        Level::Verbose,
                        "Peer was found in \"trustkeysfrom\" list".into(),
                    );
                    self.log(Level::Notice, format!("Trusting new key: {id}"));
                    if let Some(pk) = &self.peer_key {
                        self.events.push_back(Event::SaveKey {
                            user: self.peer.username.clone(),
                            key_id: id,
                            key: pk.key.clone(),
                            ip: self.peer.ip.clone(),
                        });
                    }
                } else {
                    self.log(
                        Level::Notice,
                        "TRUST FAILED, peer presented an untrusted key, dropping connection!"
                            .into(),
                    );
                    self.log(
                        Level::Verbose,
                        "Add peer to \"trustkeysfrom\" if you really want to start trusting this new key.".into(),
                    );
                    self.close();
                    return;
                }
            }
        }
        match self.peer.username.as_str() {
            "root" => {
                self.uid = Some(0);
                self.welcome(now);
            }
            "" => {
                self.uid = Some(u32::MAX - 1);
                self.welcome(now);
            }
            u => {
                self.waiting = Waiting::User;
                self.events.push_back(Event::LookupUser {
                    user: u.to_string(),
                });
            }
        }
    }

    fn welcome(&mut self, now: Now) {
        let w = identity::encode_welcome(&self.peer.username);
        self.records.push_back(w);
        self.deadline = self.cfg.idle_deadline(now);
        if self.policy.needs_reverse_dns() {
            self.phase = Phase::Busy;
            self.waiting = Waiting::Reverse;
            self.events.push_back(Event::ReverseLookup {
                ip: self.peer.ip.clone(),
            });
        } else {
            self.phase = Phase::Ready;
            self.serve(now);
        }
    }

    // ---- command loop ---------------------------------------------------

    fn serve(&mut self, now: Now) {
        while self.phase == Phase::Ready {
            let t = match self.decoder.poll() {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => return self.bad_input(&e),
            };
            self.deadline = self.cfg.idle_deadline(now);
            if self.exec.is_some() {
                if let Some(ec) = self.exec.take() {
                    self.exec = exec::class_data(self, now, ec, &t.payload);
                }
            } else {
                self.request(now, &t.payload);
            }
        }
    }

    fn request(&mut self, now: Now, payload: &[u8]) {
        // Kept as bytes in a reused buffer: described only when logged.
        self.current.clear();
        self.current.extend_from_slice(crate::frame::c_str(payload));
        self.requests += 1;
        let req = match request::parse_request(payload, Dialect::Tls) {
            Ok(r) => r,
            Err(RequestError::Empty) => {
                self.log(
                    Level::Warning,
                    format!("Got NULL transmission (of size {})", payload.len()),
                );
                return;
            }
            Err(e) => {
                if let RequestError::Unknown(_) = e {
                    self.log(
                        Level::Warning,
                        format!("Unexpected protocol command: {}", self.current()),
                    );
                }
                return self.protocol_error(&format!("{e}"));
            }
        };
        match req {
            Request::Version => self.send(Status::Done, &reply::version()),
            Request::Stat { client_time, path } => {
                self.received("STAT", &path);
                self.path_op(
                    now,
                    path,
                    PathOp {
                        cmd: Cmd::Stat,
                        requested: Vec::new(),
                        client_time,
                        bufsize: 0,
                        digest: [0; 16],
                    },
                );
            }
            Request::Get { bufsize, path } => {
                self.received("GET", &path);
                let bufsize = if bufsize == 4096 { 2048 } else { bufsize };
                self.path_op(
                    now,
                    path,
                    PathOp {
                        cmd: Cmd::Get,
                        requested: Vec::new(),
                        client_time: 0,
                        bufsize,
                        digest: [0; 16],
                    },
                );
            }
            Request::Opendir { path } => {
                self.received("OPENDIR", &path);
                self.path_op(
                    now,
                    path,
                    PathOp {
                        cmd: Cmd::Opendir,
                        requested: Vec::new(),
                        client_time: 0,
                        bufsize: 0,
                        digest: [0; 16],
                    },
                );
            }
            Request::Md5 { path, digest } => {
                self.received("MD5", &path);
                self.path_op(
                    now,
                    path,
                    PathOp {
                        cmd: Cmd::Md5,
                        requested: Vec::new(),
                        client_time: 0,
                        bufsize: 0,
                        digest,
                    },
                );
            }
            Request::Var { name } => {
                let v = self
                    .policy
                    .check_name(ResourceKind::Literal, &name, &self.peer);
                if v.allowed {
                    self.log(
                        Level::Verbose,
                        "Access to server literals is only available in CFEngine Enterprise".into(),
                    );
                    self.send(Status::Done, reply::NOT_FOUND);
                } else {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    self.access_denied("VAR", "variable", name, v.rule);
                    self.refuse();
                }
            }
            Request::Context { regex } => {
                // No persistent classes are kept by rcf-serverd, so nothing can match.
                self.log(
                    Level::Info,
                    format!(
                        "No allowed classes for remoteclassesmatching: {}",
                        String::from_utf8_lossy(&regex)
                    ),
                );
                self.refuse();
            }
            Request::Query { args } => {
                let first: Vec<u8> = args.split(|&b| b == b' ').next().unwrap_or(&[]).to_vec();
                let v = self
                    .policy
                    .check_name(ResourceKind::Query, &first, &self.peer);
                if v.allowed {
                    // Community has no report data to give.
                    self.protocol_error("QUERY is only answered by CFEngine Enterprise");
                } else {
                    let args = String::from_utf8_lossy(&args).into_owned();
                    self.access_denied("QUERY", "query", args, v.rule);
                    self.refuse();
                }
            }
            Request::Cookie => {
                if self.version < Some(ProtocolVersion::Cookie) {
                    return self.protocol_error("COOKIE needs protocol version 3");
                }
                let v = self
                    .policy
                    .check_name(ResourceKind::Query, b"delta", &self.peer);
                if v.allowed {
                    self.protocol_error("COOKIE is only answered by CFEngine Enterprise");
                } else {
                    self.access_denied("COOKIE", "cookie query", "delta".into(), v.rule);
                    self.refuse();
                }
            }
            Request::CallMeBack => {
                self.access_denied(
                    "SCALLBACK",
                    "Call-Collect, check the ACL for class",
                    "collect_calls".into(),
                    "Call-Collect is CFEngine Enterprise only".into(),
                );
                self.close();
            }
            Request::Exec { args } => {
                exec::start(self, String::from_utf8_lossy(&args).into_owned())
            }
            // Classic-only words cannot come out of the TLS table.
            _ => self.protocol_error("command not valid inside TLS"),
        }
    }

    fn path_op(&mut self, now: Now, path: Vec<u8>, mut op: PathOp) {
        let path = if path.first() == Some(&b'/') {
            path
        } else {
            match self.policy.expand_shortcut(&path, &self.peer) {
                Some(p) if p.len() < frame::MAX_PAYLOAD * 2 => p,
                Some(_) => return self.protocol_error("shortcut expansion overflow"),
                None => {
                    self.log(
                        Level::Info,
                        format!(
                            "Relative paths are not allowed: {}",
                            String::from_utf8_lossy(&path)
                        ),
                    );
                    self.refuse();
                    return self.done(now);
                }
            }
        };
        if path.contains(&0) || path.first() != Some(&b'/') {
            self.log(
                Level::Info,
                format!(
                    "Relative paths are not allowed: {}",
                    String::from_utf8_lossy(&path)
                ),
            );
            self.refuse();
            return self.done(now);
        }
        op.requested = path.clone();
        self.phase = Phase::Busy;
        self.waiting = Waiting::Canon(op);
        self.events.push_back(Event::Canonicalize { path });
    }

    fn canonical(&mut self, now: Now, op: PathOp, r: Result<Canonical, String>) {
        let c = match r {
            Ok(c) => c,
            Err(e) => {
                let p = String::from_utf8_lossy(&op.requested);
                let why = format!("Failed to canonicalise filename '{p}' (realpath: {e})");
                self.log(Level::Info, why);
                self.refuse();
                return self.done(now);
            }
        };
        let mut path = c.path;
        match op.cmd {
            Cmd::Get | Cmd::Md5 => strip_slash(&mut path),
            Cmd::Opendir => add_slash(&mut path),
            Cmd::Stat => {
                if c.is_dir {
                    add_slash(&mut path)
                } else {
                    strip_slash(&mut path)
                }
            }
        }
        let d = self.policy.check_path(&path, &self.peer);
        if !d.allowed {
            let what = String::from_utf8_lossy(&path).into_owned();
            self.access_denied(op.cmd.label(), op.cmd.denied_log(), what, d.rule);
            self.refuse();
            return self.done(now);
        }
        match op.cmd {
            Cmd::Stat => {
                let deny = self.policy.deny_bad_clocks();
                if let Some((log, msg)) = transfer::bad_clock(deny, now, op.client_time) {
                    self.events.push_back(log);
                    self.send(Status::Done, &msg);
                    return self.done(now);
                }
                self.waiting = Waiting::Stat { path: path.clone() };
                self.events.push_back(Event::Stat { path });
            }
            Cmd::Get => {
                self.waiting = Waiting::Open {
                    path: path.clone(),
                    bufsize: op.bufsize,
                };
                self.events.push_back(Event::Open { path });
            }
            Cmd::Opendir => {
                self.waiting = Waiting::Listing { path: path.clone() };
                self.events.push_back(Event::ListDir { path });
            }
            Cmd::Md5 => {
                self.waiting = Waiting::Digest { digest: op.digest };
                self.events.push_back(Event::Digest { path });
            }
        }
    }

    fn opened(&mut self, now: Now, path: Vec<u8>, bufsize: u16, r: Result<OpenedFile, String>) {
        let uid = self.uid.unwrap_or(u32::MAX - 1);
        let f = match r {
            Ok(f) => f,
            Err(e) if uid != 0 && transfer::unstatable(&e) => {
                // 3.21 checks ownership on the failed stat first: refused.
                self.events
                    .extend(transfer::not_owner_logs(&self.peer.username, &path));
                self.refuse();
                self.raw_refusal_block(bufsize);
                return self.done(now);
            }
            Err(e) => {
                self.events.push_back(transfer::open_failed(&path, &e));
                self.raw_refusal_block(bufsize);
                return self.done(now);
            }
        };
        // The ownership rule (TransferRights): root reads anything admitted;
        // others need to own the file or find it world-readable.
        if !transfer::may_read(uid, false, &f) {
            let logs = transfer::not_owner_logs(&self.peer.username, &path);
            self.events.extend(logs);
            self.refuse();
            // 3.21 follows with a raw bufsize block; ours is zero-padded, never stack garbage.
            self.raw_refusal_block(bufsize);
            self.events.push_back(Event::Close { handle: f.handle });
            return self.done(now);
        }
        if f.is_dir {
            self.events
                .push_back(transfer::directory_read_failed(false));
            self.events.push_back(Event::Close { handle: f.handle });
            return self.done(now);
        }
        let target = self
            .promises
            .iter()
            .rev()
            .find(|(p, _)| *p == path)
            .map_or(f.size, |&(_, size)| size);
        let t = Transfer::new(&f, path, target);
        if t.size0 != t.target {
            // The file changed between the client's STAT and this GET. Sending
            // the new size would desynchronise the stream; say so in one block
            // the client reads whole, and let its next run fetch the new file.
            self.source_changed(now, t);
            return;
        }
        self.next_read(now, t);
    }

    fn next_read(&mut self, now: Now, t: Transfer) {
        match t.next_read(READ_CHUNK) {
            Some(read) => {
                self.events.push_back(read);
                self.waiting = Waiting::Read(t);
            }
            None => {
                self.events.push_back(t.close());
                self.done(now);
            }
        }
    }

    fn data(&mut self, now: Now, mut t: Transfer, bytes: Vec<u8>, current_size: u64) {
        if t.accept(&bytes, current_size).is_err() {
            return self.source_changed(now, t);
        }
        self.records.extend(transfer::raw_blocks(&bytes));
        self.served += bytes.len() as u64;
        self.next_read(now, t);
    }

    fn raw_refusal_block(&mut self, bufsize: u16) {
        let len = usize::from(bufsize.max(1));
        self.records.push_back(transfer::refusal_block(len));
    }

    /// The file changed under the transfer: one block the client reads
    /// whole says so, and the transfer ends.
    fn source_changed(&mut self, now: Now, t: Transfer) {
        self.log(Level::Verbose, transfer::SOURCE_CHANGED.into());
        self.records.extend(t.change_block());
        self.events.push_back(t.close());
        self.done(now);
    }

    fn remember(&mut self, path: Vec<u8>, size: u64) {
        if self.promises.len() >= MAX_PROMISES {
            self.promises.pop_front();
        }
        self.promises.push_back((path, size));
    }

    fn refuse(&mut self) {
        self.send(Status::Done, reply::FAILED);
        let user = if self.peer.username.is_empty() {
            "?".to_string()
        } else {
            self.peer.username.clone()
        };
        self.log(
            Level::Verbose,
            format!("REFUSAL to user='{user}' of request: {}", self.current()),
        );
    }

    fn protocol_error(&mut self, why: &str) {
        self.send(Status::Done, reply::REQUEST_DENIED);
        let line = format!(
            "Closing connection due to illegal request: {} ({why})",
            self.current()
        );
        self.log(Level::Info, line);
        self.close();
    }

    /// The request is answered: ready for the next one, unless closing.
    fn done(&mut self, now: Now) {
        if self.phase != Phase::Closing {
            self.phase = Phase::Ready;
            self.waiting = Waiting::Nothing;
            self.deadline = self.cfg.idle_deadline(now);
            self.serve(now);
        }
    }

    fn send(&mut self, status: Status, payload: &[u8]) {
        let mut v = Vec::with_capacity(frame::HEADER_LEN + payload.len());
        match frame::encode(status, payload, &mut v) {
            Ok(()) => self.records.push_back(v),
            Err(e) => self.log(Level::Error, format!("internal: cannot frame a reply: {e}")),
        }
    }

    fn log(&mut self, level: Level, message: String) {
        self.events.push_back(Event::Log { level, message });
    }

    /// The access rules refused `request` (its metric label): cf-serverd's
    /// `access denied to {kind}: {what}` line, then [`Event::Denied`], which
    /// metrics count instead of matching log text.
    fn access_denied(&mut self, request: &'static str, kind: &str, what: String, reason: String) {
        self.log(Level::Info, format!("access denied to {kind}: {what}"));
        self.events.push_back(Event::Denied {
            request,
            what,
            reason,
        });
    }

    /// Bytes that cannot be framed end the connection.
    fn bad_input(&mut self, e: &crate::frame::FrameError) {
        self.events.push_back(crate::machine::bad_input(e));
        self.close();
    }

    /// cf-serverd's per-request `verbose` line, built only if
    /// `cfg.log_level` shows it.
    fn received(&mut self, cmd: &str, path: &[u8]) {
        if Level::Verbose <= self.cfg.log_level {
            let line = crate::machine::received(cmd, 7, path);
            self.events.push_back(line);
        }
    }

    /// The request being served, as text (up to its first NUL).
    fn current(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.current)
    }

    fn close(&mut self) {
        if self.phase != Phase::Closing {
            self.phase = Phase::Closing;
            match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
                Waiting::Read(t) => self.events.push_back(Event::Close { handle: t.handle }),
                Waiting::Exec(w) => self.events.extend(w.on_close()),
                _ => {}
            }
        }
    }
}

fn strip_slash(p: &mut Vec<u8>) {
    if p.len() > 1 && p.last() == Some(&b'/') {
        p.pop();
    }
}

fn add_slash(p: &mut Vec<u8>) {
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
}
