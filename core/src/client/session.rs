//! The client side of one connection, above TLS: version negotiation,
//! IDENTITY/WELCOME, and an in-order request queue (PROTOCOL.md §5.2, §6.6,
//! §8.4, §9.1).
//!
//! Plaintext in ([`Session::handle_plaintext`]), plaintext records out
//! ([`Session::poll_record`], each one TLS record: the version line and
//! IDENTITY go out as two records, as cf-agent sends them), events out
//! ([`Session::poll_event`]). Requests are queued with
//! [`Session::request`] at any time, even before WELCOME; they are sent as
//! soon as the dialog is done and their replies come back, in order, as
//! [`Event::Reply`].
//!
//! # Pipelining
//! `STAT`, `OPENDIR` and `MD5` replies are self-delimiting, so any number
//! of them may be outstanding at once. A `GET` reply is a bare byte stream
//! whose end the client only knows from the size, and whose refusals look
//! like data, so a `GET` is a barrier: it is sent only when nothing else is
//! outstanding, and nothing is sent behind it until it completes.
//!
//! # Memory
//! Every buffer is bounded: file data is handed out as [`Event::Data`] as
//! it arrives (never accumulated), a directory listing is capped at
//! [`MAX_LISTING_BYTES`], the frame decoder at its own limit, and the
//! number of queued requests is the caller's.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::banner::{self, ProtocolVersion};
use crate::frame::{self, Decoder, FrameError, Status};
use crate::identity::{self, LineBuffer};
use crate::reply::{self, OpendirChunk, OpendirError, StatReply};
use crate::request;

use super::{Level, Now};

/// The block size cf-agent asks for in `GET` (`CopyRegularFileNet`).
pub const GET_BUFSIZE: u16 = 2048;
/// The server sends file data in blocks of this size; a
/// `BAD: File changed while copying` block can only start at a multiple.
pub const SERVER_BLOCK: u64 = 2048;
/// Most bytes of names one `OPENDIR` listing may carry before the session
/// calls the server hostile and closes.
pub const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
/// How long a `GET` of a file shorter than a framed refusal waits for more
/// bytes when what arrived could be the start of one.
pub const AMBIGUITY_WAIT_MS: u64 = 500;

const CHANGED_MARKER: &[u8] = b"BAD: File changed while copying";
/// `t NNNN\0…` header plus `BAD: `: enough bytes to tell a framed refusal from data.
const FRAMED_SNIFF: usize = frame::HEADER_LEN + 5;

/// Settings for one session.
#[derive(Debug, Clone)]
pub struct Config {
    /// The version to ask for (`None` = latest); the banner may lower it.
    pub version: Option<ProtocolVersion>,
    /// The IDENTITY username (the local user; `root` for an agent).
    pub username: String,
    /// How long to wait for any expected bytes before giving up (the C
    /// client's receive timeout, `copy_from timeout`, default 30 s).
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: None,
            username: "root".into(),
            timeout_ms: 30_000,
        }
    }
}

/// Caller-chosen handle of a request, echoed in its reply and data events.
pub type RequestId = u64;

/// A request, as libcfnet's client functions send them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// `SYNCH <client_time> STAT <path>` (`cf_remote_stat`).
    Stat {
        /// Remote path (absolute, or a server shortcut).
        path: Vec<u8>,
        /// The client's wall clock, seconds (the server's clock check).
        client_time: i64,
    },
    /// `GET 2048 <path>`, reading exactly `size` bytes (from the preceding STAT).
    Get {
        /// Remote path.
        path: Vec<u8>,
        /// Bytes to read.
        size: u64,
    },
    /// `OPENDIR <path>`.
    Opendir {
        /// Remote directory.
        path: Vec<u8>,
    },
    /// `MD5 <path>\0\0<digest>` (`CompareHashNet`).
    Md5 {
        /// Remote path.
        path: Vec<u8>,
        /// MD5 of the local copy.
        digest: [u8; 16],
    },
    /// `EXEC[ -D<classes>][ -b <bundles>]` (cf-runagent), then one
    /// transaction per class of the `-s` selection, then the terminator.
    /// The output streams as [`Event::ExecLine`] until the terminator.
    Exec {
        /// Text after `EXEC`, e.g. ` -Dfoo,bar -b baz` (leading space included).
        args: Vec<u8>,
        /// Class names for the server's class match (`-s`).
        select: Vec<Vec<u8>>,
    },
}

impl ClientRequest {
    /// The request as a [`RequestRef`] borrowing its fields.
    pub fn borrowed(&self) -> RequestRef<'_> {
        match self {
            ClientRequest::Stat { path, client_time } => RequestRef::Stat {
                path,
                client_time: *client_time,
            },
            ClientRequest::Get { path, size } => RequestRef::Get { path, size: *size },
            ClientRequest::Opendir { path } => RequestRef::Opendir { path },
            ClientRequest::Md5 { path, digest } => RequestRef::Md5 {
                path,
                digest: *digest,
            },
            ClientRequest::Exec { args, select } => RequestRef::Exec { args, select },
        }
    }
}

/// A [`ClientRequest`] whose paths are borrowed from the caller: given to
/// [`Session::request_ref`], it is framed straight into the session's
/// output buffer when it can go out at once, and copied only when it has to
/// wait in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRef<'a> {
    /// See [`ClientRequest::Stat`].
    Stat {
        /// Remote path.
        path: &'a [u8],
        /// The client's wall clock, seconds.
        client_time: i64,
    },
    /// See [`ClientRequest::Get`].
    Get {
        /// Remote path.
        path: &'a [u8],
        /// Bytes to read.
        size: u64,
    },
    /// See [`ClientRequest::Opendir`].
    Opendir {
        /// Remote directory.
        path: &'a [u8],
    },
    /// See [`ClientRequest::Md5`].
    Md5 {
        /// Remote path.
        path: &'a [u8],
        /// MD5 of the local copy.
        digest: [u8; 16],
    },
    /// See [`ClientRequest::Exec`].
    Exec {
        /// Text after `EXEC`.
        args: &'a [u8],
        /// Class names for the server's class match.
        select: &'a [Vec<u8>],
    },
}

impl RequestRef<'_> {
    /// An owned copy.
    pub fn to_request(self) -> ClientRequest {
        match self {
            RequestRef::Stat { path, client_time } => ClientRequest::Stat {
                path: path.to_vec(),
                client_time,
            },
            RequestRef::Get { path, size } => ClientRequest::Get {
                path: path.to_vec(),
                size,
            },
            RequestRef::Opendir { path } => ClientRequest::Opendir {
                path: path.to_vec(),
            },
            RequestRef::Md5 { path, digest } => ClientRequest::Md5 {
                path: path.to_vec(),
                digest,
            },
            RequestRef::Exec { args, select } => ClientRequest::Exec {
                args: args.to_vec(),
                select: select.to_vec(),
            },
        }
    }

    /// Append the request's transaction (header and payload) to `out`;
    /// nothing is appended when the payload cannot be framed.
    fn encode_framed(self, out: &mut Vec<u8>) -> Result<(), frame::EncodeError> {
        let start = out.len();
        out.extend_from_slice(&[0u8; frame::HEADER_LEN]);
        match self {
            RequestRef::Stat { path, client_time } => request::write_stat(out, client_time, path),
            RequestRef::Get { path, .. } => request::write_get(out, GET_BUFSIZE, path),
            RequestRef::Opendir { path } => request::write_opendir(out, path),
            RequestRef::Md5 { path, digest } => request::write_md5(out, path, &digest),
            RequestRef::Exec { args, .. } => {
                out.extend_from_slice(b"EXEC");
                out.extend_from_slice(args);
            }
        }
        match frame::encode_header(Status::Done, out.len() - start - frame::HEADER_LEN) {
            Ok(h) => {
                out[start..start + frame::HEADER_LEN].copy_from_slice(&h);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Requests whose replies cannot be told apart from what follows them
    /// (raw GET data, EXEC output) go out alone.
    fn is_barrier(self) -> bool {
        matches!(self, RequestRef::Get { .. } | RequestRef::Exec { .. })
    }
}

/// Why a `GET` brought no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetFailure {
    /// A framed `BAD: …` transaction arrived instead of data (ACL refusal,
    /// missing file). The connection stays usable.
    Refused(String),
    /// A raw block starting with the refusal text arrived (ownership or
    /// `open` failure); its length is unknowable, so the session closes.
    Denied,
    /// `BAD: File changed while copying`; the session closes.
    Changed,
}

/// A reply to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `STAT`: the parsed fields, or the server's `BAD: …` text (refusal,
    /// missing file, clock skew).
    Stat(Result<StatReply, String>),
    /// `GET`: `Ok` once exactly `size` bytes were handed out as [`Event::Data`].
    Get(Result<(), GetFailure>),
    /// `OPENDIR`: every name the server sent (`.` and `..` included, in
    /// its order), or its refusal text. Names are raw; see
    /// [`super::listing`] before using one as a local path.
    Listing(Result<Vec<Vec<u8>>, String>),
    /// `MD5`: `Ok(true)` when the server says the files differ (`CFD_TRUE`),
    /// `Ok(false)` for `CFD_FALSE`, `Err(text)` for anything else (the C
    /// client reads every non-`CFD_TRUE` reply as "same"; we tell them apart).
    Md5(Result<bool, String>),
    /// `EXEC`: the terminator arrived; the remote exit code if an
    /// `(exit code: N)` line came before it.
    Exec(Option<i32>),
}

/// Why the session ended early. Every variant is final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server's first line was not a usable `CFE_v<N>` banner.
    #[error("{0}")]
    Negotiation(#[from] banner::NegotiationError),
    /// The server answered IDENTITY with something other than `OK WELCOME`.
    #[error("Peer did not accept our identity! Responded: {0}")]
    NotWelcomed(String),
    /// An identification line broke the 1023-byte limit.
    #[error("identification line too long")]
    LineTooLong,
    /// The server closed the connection during identification.
    #[error("Connection was hung up during identification! ({0})")]
    HungUpDuringIdentification(&'static str),
    /// The server closed the connection with requests outstanding.
    #[error("Connection closed by the server with {0} request(s) outstanding")]
    HungUp(usize),
    /// The server sent bytes that are not valid transactions.
    #[error("bad reply from server: {0}")]
    Frame(#[from] FrameError),
    /// A reply did not have the shape its request calls for.
    #[error("malformed {what} reply: {detail}")]
    Malformed {
        /// Which request.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Nothing arrived for longer than the configured timeout.
    #[error("Timeout waiting for the server ({0} ms)")]
    Timeout(u64),
    /// A directory listing passed [`MAX_LISTING_BYTES`].
    #[error("directory listing larger than {MAX_LISTING_BYTES} bytes, refusing")]
    ListingTooLarge,
    /// A request could not be framed (payload empty or over 4088 bytes).
    #[error("cannot send request: {0}")]
    Encode(#[from] frame::EncodeError),
    /// The TLS layer failed or the peer was not trusted (set by the wrapper).
    #[error("{0}")]
    Transport(String),
}

/// Output of the session for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A log line, worded as cf-agent words it.
    Log {
        /// Level.
        level: Level,
        /// Text.
        message: String,
    },
    /// The server welcomed us; requests now flow.
    Established {
        /// The negotiated version.
        version: ProtocolVersion,
    },
    /// File bytes of a `GET`, in order; write them as they come.
    Data {
        /// The request.
        id: RequestId,
        /// The bytes.
        bytes: Bytes,
    },
    /// One reply transaction of a running `EXEC` (`cf-serverd executing
    /// cfruncommand: …`, `> output`, `(exit code: N)`, `EXEC denied …`, …).
    ExecLine {
        /// The request.
        id: RequestId,
        /// The transaction, up to its first NUL.
        line: Bytes,
    },
    /// A request completed.
    Reply {
        /// The request.
        id: RequestId,
        /// Its outcome.
        reply: Reply,
    },
    /// The session ended in error; requests still queued get no reply.
    Failed(ClientError),
    /// (From [`super::Connection`] only.) The TLS handshake is done: is this
    /// server key trusted? Answer with [`super::Connection::handle_trust`];
    /// nothing from the server is read until then (PROTOCOL.md §6.5).
    VerifyServerKey {
        /// `MD5=…` id of the key.
        key_id: String,
        /// The key from the server's certificate.
        key: rsa::RsaPublicKey,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitBanner,
    AwaitWelcome,
    Ready,
    Closed,
}

#[derive(Debug)]
enum Progress {
    /// `have_first`: the first transaction is in `Session::stat_first`.
    Stat {
        have_first: bool,
    },
    Get {
        size: u64,
        got: u64,
        started: bool,
        ambiguous_since: Option<u64>,
    },
    Opendir {
        names: Vec<Vec<u8>>,
        bytes: usize,
    },
    Md5,
    Exec {
        code: Option<i32>,
        lines: usize,
    },
}

/// Most reply transactions one EXEC may produce before we give up on it.
const MAX_EXEC_LINES: usize = 1_000_000;

#[derive(Debug)]
struct Outstanding {
    id: RequestId,
    progress: Progress,
}

/// One client connection's protocol state above TLS.
pub struct Session {
    cfg: Config,
    phase: Phase,
    version: Option<ProtocolVersion>,
    lines: LineBuffer,
    decoder: Decoder,
    unsent: VecDeque<(RequestId, ClientRequest)>,
    outstanding: VecDeque<Outstanding>,
    /// Identification lines, one record each.
    records: VecDeque<Vec<u8>>,
    /// Framed requests not yet taken, back to back; each ends at the
    /// matching entry of `out_ends`. Reused from batch to batch.
    out: Vec<u8>,
    out_ends: Vec<usize>,
    /// How many of `out_ends` were taken by `poll_record`.
    out_taken: usize,
    /// The first transaction of the STAT reply at the front of the queue.
    stat_first: Vec<u8>,
    events: VecDeque<Event>,
    deadline: Option<u64>,
    received: u64,
}

impl Session {
    /// A session whose TLS handshake (and server-key trust check) is done.
    /// It waits for the banner; the deadline starts now.
    pub fn new(cfg: Config, now: Now) -> Self {
        let deadline = Some(now.mono_ms + cfg.timeout_ms);
        Session {
            cfg,
            phase: Phase::AwaitBanner,
            version: None,
            lines: LineBuffer::new(),
            decoder: Decoder::new(),
            unsent: VecDeque::new(),
            outstanding: VecDeque::new(),
            records: VecDeque::new(),
            out: Vec::new(),
            out_ends: Vec::new(),
            out_taken: 0,
            stat_first: Vec::new(),
            events: VecDeque::new(),
            deadline,
            received: 0,
        }
    }

    /// The negotiated version, once the banner was read.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Whether WELCOME arrived and the session has not ended.
    pub fn is_established(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether the session ended (error, protocol desynchronisation after a
    /// failed GET, or EOF); close the connection once records are drained.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Requests sent or queued that have no reply yet.
    pub fn pending(&self) -> usize {
        self.unsent.len() + self.outstanding.len()
    }

    /// File bytes received so far (for progress and metrics).
    pub fn bytes_received(&self) -> u64 {
        self.received
    }

    /// The next transaction or identification line to send. Transactions
    /// must not be split across TLS records; several may share one.
    #[must_use]
    pub fn poll_record(&mut self) -> Option<Vec<u8>> {
        if let Some(r) = self.records.pop_front() {
            return Some(r);
        }
        let end = *self.out_ends.get(self.out_taken)?;
        let start = match self.out_taken {
            0 => 0,
            i => self.out_ends[i - 1],
        };
        let r = self.out[start..end].to_vec();
        self.out_taken += 1;
        if self.out_taken == self.out_ends.len() {
            self.clear_out();
        }
        Some(r)
    }

    /// The next identification line (one record of its own).
    pub(super) fn poll_line(&mut self) -> Option<Vec<u8>> {
        self.records.pop_front()
    }

    /// Hand every queued request transaction to `send`, in order, each one
    /// whole, without copying them out; they are gone afterwards (also
    /// when `send` fails, which ends the connection).
    pub(super) fn drain_transactions<E>(
        &mut self,
        mut send: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut start = match self.out_taken {
            0 => 0,
            i => self.out_ends[i - 1],
        };
        let mut r = Ok(());
        for &end in &self.out_ends[self.out_taken..] {
            r = send(&self.out[start..end]);
            if r.is_err() {
                break;
            }
            start = end;
        }
        self.clear_out();
        r
    }

    fn clear_out(&mut self) {
        self.out.clear();
        self.out_ends.clear();
        self.out_taken = 0;
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether [`poll_event`](Session::poll_event) has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When to call [`handle_timeout`](Session::handle_timeout), monotonic ms.
    /// `None` while nothing is expected from the server.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.phase == Phase::Closed {
            return None;
        }
        if self.phase == Phase::Ready && self.outstanding.is_empty() {
            return None;
        }
        let ambiguity = self.outstanding.front().and_then(|o| match o.progress {
            Progress::Get {
                ambiguous_since: Some(t),
                ..
            } => Some(t + AMBIGUITY_WAIT_MS),
            _ => None,
        });
        match (self.deadline, ambiguity) {
            (Some(d), Some(a)) => Some(d.min(a)),
            (d, a) => d.or(a),
        }
    }

    /// A deadline passed: settle an ambiguous short GET, or give up.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.phase == Phase::Closed {
            return;
        }
        self.process(now);
        if self.phase == Phase::Closed {
            return;
        }
        match self.deadline {
            Some(d)
                if now.mono_ms >= d
                    && (self.phase != Phase::Ready || !self.outstanding.is_empty()) =>
            {
                self.fail(ClientError::Timeout(self.cfg.timeout_ms));
            }
            _ => {}
        }
    }

    /// Whether [`request`](Session::request) and
    /// [`request_ref`](Session::request_ref) would read their `now` now:
    /// only while nothing is outstanding (a request then starts the reply
    /// deadline). Otherwise any earlier `now` gives the same result, so a
    /// driver pipelining a batch need not read the clock per request.
    pub fn request_uses_now(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Queue a request; it is sent as soon as the protocol allows.
    pub fn request(&mut self, now: Now, id: RequestId, req: ClientRequest) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.can_send_now(req.borrowed()) {
            self.send(now, id, req.borrowed());
        } else {
            self.unsent.push_back((id, req));
        }
    }

    /// As [`request`](Session::request), borrowing the request: it is
    /// framed straight into the output when the protocol lets it go out
    /// now, and copied only when it has to wait.
    pub fn request_ref(&mut self, now: Now, id: RequestId, req: RequestRef<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.can_send_now(req) {
            self.send(now, id, req);
        } else {
            self.unsent.push_back((id, req.to_request()));
        }
    }

    /// Whether `req`, queued now, would be sent at once: the session is
    /// ready, nothing is waiting before it, and no barrier is in the way.
    fn can_send_now(&self, req: RequestRef<'_>) -> bool {
        self.phase == Phase::Ready
            && self.unsent.is_empty()
            && !self.barrier_outstanding()
            && (!req.is_barrier() || self.outstanding.is_empty())
    }

    /// Whether a GET or EXEC is outstanding. One is only ever sent when
    /// nothing else is outstanding and nothing is sent behind it, so it can
    /// only be the sole entry: checking the ends is enough.
    fn barrier_outstanding(&self) -> bool {
        let is_barrier =
            |o: &Outstanding| matches!(o.progress, Progress::Get { .. } | Progress::Exec { .. });
        self.outstanding.front().is_some_and(is_barrier)
            || self.outstanding.back().is_some_and(is_barrier)
    }

    /// Decrypted bytes from the server.
    pub fn handle_plaintext(&mut self, now: Now, bytes: &[u8]) {
        if self.phase == Phase::Closed || bytes.is_empty() {
            return;
        }
        self.deadline = Some(now.mono_ms + self.cfg.timeout_ms);
        match self.phase {
            Phase::AwaitBanner | Phase::AwaitWelcome => {
                self.lines.push(bytes);
                self.identification(now);
            }
            _ => {
                if let Err(e) = self.decoder.push(bytes) {
                    return self.fail(e.into());
                }
                self.process(now);
            }
        }
    }

    /// The server closed its side (with or without `close_notify`).
    pub fn handle_eof(&mut self, now: Now) {
        if self.phase == Phase::Closed {
            return;
        }
        // A short GET waiting out an ambiguity is settled by the EOF.
        if let Some(Outstanding {
            progress: Progress::Get {
                ambiguous_since, ..
            },
            ..
        }) = self.outstanding.front_mut()
        {
            if ambiguous_since.is_some() {
                *ambiguous_since = Some(0);
                self.process(Now {
                    mono_ms: now.mono_ms.max(AMBIGUITY_WAIT_MS),
                    ..now
                });
            }
        }
        match self.phase {
            Phase::AwaitBanner => self.fail(ClientError::HungUpDuringIdentification("no banner")),
            Phase::AwaitWelcome => self.fail(ClientError::HungUpDuringIdentification("no welcome")),
            Phase::Ready if !self.outstanding.is_empty() || !self.unsent.is_empty() => {
                self.fail(ClientError::HungUp(self.pending()))
            }
            _ => self.phase = Phase::Closed,
        }
    }

    /// End the session from outside (transport failure, untrusted key).
    pub fn abort(&mut self, why: ClientError) {
        if self.phase != Phase::Closed {
            self.fail(why);
        }
    }

    // ---- identification -------------------------------------------------

    fn identification(&mut self, now: Now) {
        loop {
            let line = match self.lines.next_line() {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(_) => return self.fail(ClientError::LineTooLong),
            };
            match self.phase {
                Phase::AwaitBanner => {
                    let v = match banner::client_choose(self.cfg.version, &line) {
                        Ok(v) => v,
                        Err(e) => return self.fail(e.into()),
                    };
                    self.version = Some(v);
                    self.log(
                        Level::Verbose,
                        format!(
                            "Sending version line: CFE_v{} cf-agent {}",
                            v.number(),
                            banner::SOFTWARE_VERSION
                        ),
                    );
                    self.records.push_back(banner::client_version_line(v));
                    self.records
                        .push_back(identity::encode_identity(&self.cfg.username));
                    self.phase = Phase::AwaitWelcome;
                }
                Phase::AwaitWelcome => {
                    if !identity::is_welcome(&line) {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        return self.fail(ClientError::NotWelcomed(text));
                    }
                    self.phase = Phase::Ready;
                    let version = self.version.unwrap_or(banner::LATEST);
                    self.events.push_back(Event::Established { version });
                    let rest = self.lines.take_rest();
                    if !rest.is_empty() {
                        if let Err(e) = self.decoder.push(&rest) {
                            return self.fail(e.into());
                        }
                    }
                    self.flush_unsent(now);
                    self.process(now);
                    return;
                }
                _ => return,
            }
        }
    }

    // ---- requests -------------------------------------------------------

    fn flush_unsent(&mut self, now: Now) {
        if self.phase != Phase::Ready {
            return;
        }
        while let Some((_, req)) = self.unsent.front() {
            if self.barrier_outstanding()
                || (req.borrowed().is_barrier() && !self.outstanding.is_empty())
            {
                return;
            }
            let (id, req) = self.unsent.pop_front().expect("front exists");
            self.send(now, id, req.borrowed());
        }
    }

    /// Frame one request into the output and track its reply.
    fn send(&mut self, now: Now, id: RequestId, req: RequestRef<'_>) {
        if let Err(e) = req.encode_framed(&mut self.out) {
            // Tell the caller about this one request and go on.
            self.events.push_back(Event::Log {
                level: Level::Error,
                message: format!("cannot send request: {e}"),
            });
            let reply = match req {
                RequestRef::Stat { .. } => Reply::Stat(Err(e.to_string())),
                RequestRef::Get { .. } => Reply::Get(Err(GetFailure::Refused(e.to_string()))),
                RequestRef::Opendir { .. } => Reply::Listing(Err(e.to_string())),
                RequestRef::Md5 { .. } => Reply::Md5(Err(e.to_string())),
                RequestRef::Exec { .. } => Reply::Exec(None),
            };
            self.events.push_back(Event::Reply { id, reply });
            return;
        }
        self.out_ends.push(self.out.len());
        if let RequestRef::Exec { select, .. } = req {
            for class in select.iter().filter(|c| !c.is_empty()).take(9) {
                if frame::encode(
                    Status::Done,
                    &class[..class.len().min(frame::MAX_PAYLOAD)],
                    &mut self.out,
                )
                .is_ok()
                {
                    self.out_ends.push(self.out.len());
                }
            }
            frame::encode(Status::Done, reply::TERMINATOR, &mut self.out).expect("terminator fits");
            self.out_ends.push(self.out.len());
        }
        if self.outstanding.is_empty() {
            self.deadline = Some(now.mono_ms + self.cfg.timeout_ms);
        }
        if let RequestRef::Get { size: 0, .. } = req {
            // An empty file: the server sends nothing, so the GET is
            // complete as soon as it is sent (it went out alone).
            self.events.push_back(Event::Reply {
                id,
                reply: Reply::Get(Ok(())),
            });
            return;
        }
        let progress = match req {
            RequestRef::Stat { .. } => Progress::Stat { have_first: false },
            RequestRef::Get { size, .. } => Progress::Get {
                size,
                got: 0,
                started: false,
                ambiguous_since: None,
            },
            RequestRef::Opendir { .. } => Progress::Opendir {
                names: Vec::new(),
                bytes: 0,
            },
            RequestRef::Md5 { .. } => Progress::Md5,
            RequestRef::Exec { .. } => Progress::Exec {
                code: None,
                lines: 0,
            },
        };
        self.outstanding.push_back(Outstanding { id, progress });
    }

    /// Consume whatever replies the buffered bytes complete, sending queued
    /// requests as the queue drains (a GET waits for the replies before it).
    fn process(&mut self, now: Now) {
        loop {
            self.consume(now);
            let before = self.outstanding.len();
            self.flush_unsent(now);
            if self.phase != Phase::Ready
                || self.outstanding.len() == before
                || self.decoder.buffered() == 0
            {
                return;
            }
        }
    }

    fn consume(&mut self, now: Now) {
        // Out of `self` while replies are read, so a payload can be lent
        // from its buffer while the rest of the session is updated.
        let mut decoder = std::mem::take(&mut self.decoder);
        self.consume_from(&mut decoder, now);
        self.decoder = decoder;
    }

    fn consume_from(&mut self, decoder: &mut Decoder, now: Now) {
        while self.phase == Phase::Ready {
            let Some(front) = self.outstanding.front_mut() else {
                break;
            };
            if let Progress::Get { .. } = front.progress {
                match self.get_step(decoder, now) {
                    Step::Wait => break,
                    Step::Continue => continue,
                }
            }
            let payload = match decoder.poll_payload() {
                Ok(Some((_, p))) => p,
                Ok(None) => break,
                Err(e) => return self.fail(e.into()),
            };
            self.transaction(payload);
        }
    }

    fn transaction(&mut self, payload: &[u8]) {
        // Updated in place at the front of the queue (popping and pushing
        // back a STAT between its two transactions showed in profiles).
        let Some(o) = self.outstanding.front_mut() else {
            return;
        };
        let id = o.id;
        let done = match &mut o.progress {
            Progress::Stat { have_first } => match *have_first {
                false if reply::is_bad(payload) => Some(Reply::Stat(Err(bad_text(payload)))),
                false => {
                    self.stat_first.clear();
                    self.stat_first.extend_from_slice(payload);
                    *have_first = true;
                    None
                }
                true => match StatReply::parse(&self.stat_first, payload) {
                    Ok(st) => Some(Reply::Stat(Ok(st))),
                    Err(e) => {
                        let detail = format!("{e}: {}", lossy(&self.stat_first));
                        return self.fail(ClientError::Malformed {
                            what: "STAT",
                            detail,
                        });
                    }
                },
            },
            Progress::Opendir { names, bytes } => match reply::parse_opendir_packet(payload) {
                Ok(OpendirChunk::Names(n)) => {
                    *bytes += payload.len();
                    if *bytes > MAX_LISTING_BYTES {
                        self.outstanding.pop_front();
                        return self.fail(ClientError::ListingTooLarge);
                    }
                    names.extend(n);
                    None
                }
                Ok(OpendirChunk::Last(n)) => {
                    names.extend(n);
                    Some(Reply::Listing(Ok(std::mem::take(names))))
                }
                Err(OpendirError::Refused(_)) => Some(Reply::Listing(Err(bad_text(payload)))),
                Err(OpendirError::Empty) => {
                    self.outstanding.pop_front();
                    return self.fail(ClientError::Malformed {
                        what: "OPENDIR",
                        detail: "empty packet".into(),
                    });
                }
            },
            Progress::Md5 => {
                let p = frame::c_str(payload);
                Some(Reply::Md5(if p == reply::CFD_TRUE {
                    Ok(true)
                } else if p == reply::CFD_FALSE {
                    Ok(false)
                } else {
                    Err(bad_text(payload))
                }))
            }
            Progress::Exec { code, lines } => {
                let line = frame::c_str(payload);
                if line.starts_with(reply::TERMINATOR) {
                    Some(Reply::Exec(*code))
                } else {
                    *lines += 1;
                    if *lines > MAX_EXEC_LINES {
                        return self.fail(ClientError::Malformed {
                            what: "EXEC",
                            detail: "endless output".into(),
                        });
                    }
                    if let Some(n) = line.strip_prefix(b"(exit code: ") {
                        *code = std::str::from_utf8(n)
                            .ok()
                            .and_then(|t| t.trim_end().trim_end_matches(')').parse().ok());
                    }
                    self.events.push_back(Event::ExecLine {
                        id,
                        line: Bytes::copy_from_slice(line),
                    });
                    None
                }
            }
            // `process` hands a GET's bytes to `get_step`, never here; stay
            // total anyway rather than trust that invariant with a panic.
            Progress::Get { .. } => {
                return self.fail(ClientError::Malformed {
                    what: "GET",
                    detail: "framed reply inside a GET stream".into(),
                });
            }
        };
        if let Some(reply) = done {
            self.outstanding.pop_front();
            self.events.push_back(Event::Reply { id, reply });
        }
    }

    fn log(&mut self, level: Level, message: String) {
        self.events.push_back(Event::Log { level, message });
    }

    fn fail(&mut self, e: ClientError) {
        self.phase = Phase::Closed;
        self.events.push_back(Event::Failed(e));
    }
}

fn bad_text(payload: &[u8]) -> String {
    let p = frame::c_str(payload);
    let p = p.strip_prefix(reply::BAD_PREFIX).unwrap_or(p);
    String::from_utf8_lossy(p).into_owned()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(frame::c_str(b))
        .chars()
        .take(120)
        .collect()
}

#[path = "get_steps.rs"]
mod get_steps;
use get_steps::Step;
#[cfg(test)]
use get_steps::{sniff, Sniff};

#[cfg(test)]
mod tests {
    use super::*;

    fn now(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            unix_s: 1_800_000_000,
        }
    }

    fn established() -> Session {
        let mut s = Session::new(Config::default(), now(0));
        s.handle_plaintext(now(1), b"CFE_v3 cf-serverd 3.21.0\n");
        assert_eq!(s.poll_record().unwrap(), b"CFE_v3 cf-agent 3.21.0\n");
        assert_eq!(s.poll_record().unwrap(), b"IDENTITY USERNAME=root\n");
        s.handle_plaintext(now(2), b"OK WELCOME USERNAME=root\n");
        assert!(matches!(s.poll_event(), Some(Event::Log { .. })));
        assert_eq!(
            s.poll_event(),
            Some(Event::Established {
                version: ProtocolVersion::Cookie
            })
        );
        s
    }

    fn txn(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        frame::encode(Status::Done, p, &mut v).unwrap();
        v
    }

    fn drain(s: &mut Session) -> Vec<Event> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn sniff_rules() {
        let refusal = txn(reply::FAILED);
        assert_eq!(sniff(&refusal), Sniff::Framed(67));
        assert_eq!(sniff(&refusal[..5]), Sniff::NeedMore);
        assert_eq!(sniff(b"hello"), Sniff::Data);
        assert_eq!(sniff(b"t 5"), Sniff::NeedMore);
        assert_eq!(sniff(b"t x"), Sniff::Data);
        assert_eq!(sniff(reply::FAILED), Sniff::RawRefusal);
        assert_eq!(sniff(b"t 59\0\0\0\0BAX"), Sniff::Data);
    }

    #[test]
    fn pipelined_stats_then_get_barrier() {
        let mut s = established();
        s.request(
            now(3),
            1,
            ClientRequest::Stat {
                path: b"/a".to_vec(),
                client_time: 5,
            },
        );
        s.request(
            now(3),
            2,
            ClientRequest::Md5 {
                path: b"/a".to_vec(),
                digest: [0; 16],
            },
        );
        s.request(
            now(3),
            3,
            ClientRequest::Get {
                path: b"/a".to_vec(),
                size: 3,
            },
        );
        s.request(
            now(3),
            4,
            ClientRequest::Stat {
                path: b"/b".to_vec(),
                client_time: 5,
            },
        );
        assert_eq!(s.poll_record().unwrap(), txn(b"SYNCH 5 STAT /a"));
        assert!(s.poll_record().unwrap().ends_with(&[0u8; 16]));
        assert_eq!(s.poll_record(), None, "GET waits for the queue to drain");
        let mut input = txn(b"OK: 0 420 0 0 0 3 1 2 3 0 4 1 5");
        input.extend(txn(b"OK:"));
        input.extend(txn(b"CFD_TRUE"));
        s.handle_plaintext(now(4), &input);
        assert_eq!(s.poll_record().unwrap(), txn(b"GET 2048 /a"));
        assert_eq!(s.poll_record(), None, "nothing behind a GET");
        s.handle_plaintext(now(5), b"abc");
        assert_eq!(s.poll_record().unwrap(), txn(b"SYNCH 5 STAT /b"));
        let ev = drain(&mut s);
        assert!(
            matches!(&ev[0], Event::Reply { id: 1, reply: Reply::Stat(Ok(st)) } if st.size == 3)
        );
        assert_eq!(
            ev[1],
            Event::Reply {
                id: 2,
                reply: Reply::Md5(Ok(true))
            }
        );
        assert_eq!(
            ev[2],
            Event::Data {
                id: 3,
                bytes: Bytes::from_static(b"abc")
            }
        );
        assert_eq!(
            ev[3],
            Event::Reply {
                id: 3,
                reply: Reply::Get(Ok(()))
            }
        );
    }

    #[test]
    fn framed_refusal_keeps_sync_and_change_marker_closes() {
        let mut s = established();
        s.request(
            now(3),
            1,
            ClientRequest::Get {
                path: b"/x".to_vec(),
                size: 5000,
            },
        );
        s.request(
            now(3),
            2,
            ClientRequest::Opendir {
                path: b"/d".to_vec(),
            },
        );
        let _ = std::iter::from_fn(|| s.poll_record()).count();
        s.handle_plaintext(now(4), &txn(reply::FAILED));
        let mut listing = b".\0a\0".to_vec();
        listing.extend_from_slice(reply::TERMINATOR);
        listing.extend_from_slice(&[0, 0]);
        s.handle_plaintext(now(5), &txn(&listing));
        let ev = drain(&mut s);
        assert!(ev.contains(&Event::Reply {
            id: 1,
            reply: Reply::Get(Err(GetFailure::Refused(
                "Unspecified server refusal (see verbose server output)".into()
            )))
        }));
        assert!(ev.contains(&Event::Reply {
            id: 2,
            reply: Reply::Listing(Ok(vec![b".".to_vec(), b"a".to_vec()]))
        }));

        let mut s = established();
        s.request(
            now(3),
            1,
            ClientRequest::Get {
                path: b"/x".to_vec(),
                size: 5000,
            },
        );
        let mut data = vec![b'x'; 2048];
        data.extend_from_slice(b"BAD: File changed while copying: /x\0");
        s.handle_plaintext(now(4), &data);
        let ev = drain(&mut s);
        assert!(ev.contains(&Event::Reply {
            id: 1,
            reply: Reply::Get(Err(GetFailure::Changed))
        }));
        assert!(s.is_closed());
    }

    #[test]
    fn short_file_that_looks_like_a_header_is_settled_by_timeout() {
        let mut s = established();
        s.request(
            now(3),
            1,
            ClientRequest::Get {
                path: b"/x".to_vec(),
                size: 3,
            },
        );
        s.handle_plaintext(now(10), b"t 5");
        assert!(drain(&mut s).is_empty());
        let t = s.poll_timeout().unwrap();
        assert_eq!(t, 10 + AMBIGUITY_WAIT_MS);
        s.handle_timeout(now(t));
        let ev = drain(&mut s);
        assert_eq!(
            ev[0],
            Event::Data {
                id: 1,
                bytes: Bytes::from_static(b"t 5")
            }
        );
        assert_eq!(
            ev[1],
            Event::Reply {
                id: 1,
                reply: Reply::Get(Ok(()))
            }
        );
    }

    #[test]
    fn denial_timeout_and_hangup() {
        let mut s = Session::new(Config::default(), now(0));
        s.handle_plaintext(now(1), b"CFE_v3 cf-serverd 3.21.0\n");
        s.handle_plaintext(now(2), b"BAD\n");
        assert!(drain(&mut s)
            .iter()
            .any(|e| matches!(e, Event::Failed(ClientError::NotWelcomed(t)) if t == "BAD")));
        let mut s = Session::new(Config::default(), now(0));
        s.handle_timeout(now(30_000));
        assert!(drain(&mut s).contains(&Event::Failed(ClientError::Timeout(30_000))));
        let mut s = Session::new(Config::default(), now(0));
        s.handle_eof(now(1));
        assert!(
            drain(&mut s).contains(&Event::Failed(ClientError::HungUpDuringIdentification(
                "no banner"
            )))
        );
        let mut s = established();
        s.request(
            now(3),
            1,
            ClientRequest::Stat {
                path: b"/a".to_vec(),
                client_time: 5,
            },
        );
        s.handle_eof(now(4));
        assert!(drain(&mut s).contains(&Event::Failed(ClientError::HungUp(1))));
    }

    #[test]
    fn replies_split_anywhere_give_the_same_events() {
        let mut input = txn(b"OK: 0 420 0 0 0 5000 1 2 3 0 4 1 5");
        input.extend(txn(b"OK:"));
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        input.extend(&data);
        let mut listing = b".\0..\0x\0".to_vec();
        listing.extend_from_slice(reply::TERMINATOR);
        listing.extend_from_slice(&[0, 0]);
        input.extend(txn(&listing));
        let run = |step: usize| {
            let mut s = established();
            s.request(
                now(3),
                1,
                ClientRequest::Stat {
                    path: b"/f".to_vec(),
                    client_time: 5,
                },
            );
            s.request(
                now(3),
                2,
                ClientRequest::Get {
                    path: b"/f".to_vec(),
                    size: 5000,
                },
            );
            s.request(
                now(3),
                3,
                ClientRequest::Opendir {
                    path: b"/d".to_vec(),
                },
            );
            let mut got = Vec::new();
            let mut file = Vec::new();
            for c in input.chunks(step) {
                s.handle_plaintext(now(4), c);
                for e in drain(&mut s) {
                    match e {
                        Event::Data { bytes, .. } => file.extend_from_slice(&bytes),
                        Event::Reply { id, reply } => got.push((id, reply)),
                        other => panic!("{other:?}"),
                    }
                }
            }
            (got, file)
        };
        let whole = run(input.len());
        assert!(whole.1 == data, "{} file bytes", whole.1.len());
        assert_eq!(whole.0.len(), 3);
        for step in [1, 2, 7, 8, 9, 2047, 2048, 2049, 4096] {
            let got = run(step);
            assert!(
                got == whole,
                "split every {step} bytes: {} replies, {} file bytes",
                got.0.len(),
                got.1.len()
            );
        }
    }

    #[test]
    fn arbitrary_server_bytes_never_panic() {
        // A crude fuzz over fixed seeds: whatever the server sends, the
        // session answers with events, never a panic.
        let mut x: u64 = 0x1234_5678;
        for round in 0..200 {
            let mut s = established();
            s.request(
                now(3),
                1,
                ClientRequest::Stat {
                    path: b"/a".to_vec(),
                    client_time: 5,
                },
            );
            s.request(
                now(3),
                2,
                ClientRequest::Opendir {
                    path: b"/a".to_vec(),
                },
            );
            s.request(
                now(3),
                3,
                ClientRequest::Get {
                    path: b"/a".to_vec(),
                    size: round,
                },
            );
            for _ in 0..20 {
                let mut chunk = Vec::new();
                for _ in 0..(x % 64) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    chunk.push(if x % 3 < 1 {
                        b"t 9\0OK:"[(x % 7) as usize]
                    } else {
                        x as u8
                    });
                }
                s.handle_plaintext(now(4), &chunk);
                drain(&mut s);
            }
            s.handle_eof(now(5));
            drain(&mut s);
        }
    }

    /// What the session sent for a request before requests were framed
    /// in place: the payload built on its own, then framed.
    fn old_payload(req: &ClientRequest) -> Vec<u8> {
        match req {
            ClientRequest::Stat { path, client_time } => request::encode_stat(*client_time, path),
            ClientRequest::Get { path, .. } => request::encode_get(GET_BUFSIZE, path),
            ClientRequest::Opendir { path } => request::encode_opendir(path),
            ClientRequest::Md5 { path, digest } => request::encode_md5(path, digest),
            ClientRequest::Exec { args, .. } => [b"EXEC".as_slice(), args].concat(),
        }
    }

    fn arbitrary_request(g: &mut quickcheck::Gen) -> ClientRequest {
        use quickcheck::Arbitrary;
        // Mostly short paths, sometimes ones too long to frame.
        let mut path = Vec::<u8>::arbitrary(g);
        if u8::arbitrary(g) % 16 == 0 {
            path.resize(4070 + usize::from(u8::arbitrary(g)) % 40, b'p');
        }
        let mut digest = [0u8; 16];
        for b in &mut digest {
            *b = u8::arbitrary(g);
        }
        match u8::arbitrary(g) % 5 {
            0 => ClientRequest::Stat {
                path,
                client_time: i64::arbitrary(g),
            },
            1 => ClientRequest::Get {
                path,
                size: u64::arbitrary(g) % 3,
            },
            2 => ClientRequest::Opendir { path },
            3 => ClientRequest::Md5 { path, digest },
            _ => ClientRequest::Exec {
                args: path,
                select: Vec::<Vec<u8>>::arbitrary(g),
            },
        }
    }

    #[derive(Debug, Clone)]
    struct Reqs(Vec<ClientRequest>);

    impl quickcheck::Arbitrary for Reqs {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            let n = usize::arbitrary(g) % 8;
            Reqs((0..n).map(|_| arbitrary_request(g)).collect())
        }
    }

    /// Requests framed in place (owned or borrowed) are the bytes the old
    /// encoder produced, transaction for transaction; an unframeable one
    /// still gets its error reply and nothing on the wire.
    #[quickcheck_macros::quickcheck]
    fn in_place_framing_matches_the_old_encoder(reqs: Reqs, borrowed: bool) -> bool {
        for req in reqs.0 {
            let mut s = established();
            let mut want = Vec::new();
            let framed = frame::encode(Status::Done, &old_payload(&req), &mut want).is_ok();
            if framed {
                if let ClientRequest::Exec { select, .. } = &req {
                    for class in select.iter().filter(|c| !c.is_empty()).take(9) {
                        let mut r = Vec::new();
                        if frame::encode(
                            Status::Done,
                            &class[..class.len().min(frame::MAX_PAYLOAD)],
                            &mut r,
                        )
                        .is_ok()
                        {
                            want.extend(r);
                        }
                    }
                    frame::encode(Status::Done, reply::TERMINATOR, &mut want).unwrap();
                }
            }
            if borrowed {
                s.request_ref(now(3), 9, req.borrowed());
            } else {
                s.request(now(3), 9, req.clone());
            }
            let got: Vec<u8> = std::iter::from_fn(|| s.poll_record()).flatten().collect();
            if got != want {
                return false;
            }
            let ev = drain(&mut s);
            let error_reply = ev.iter().any(|e| {
                matches!(e, Event::Reply { id: 9, reply } if match reply {
                    Reply::Stat(r) => r.is_err(),
                    Reply::Get(r) => r.is_err(),
                    Reply::Listing(r) => r.is_err(),
                    Reply::Md5(r) => r.is_err(),
                    Reply::Exec(c) => c.is_none(),
                })
            });
            if !framed && !error_reply {
                return false;
            }
        }
        true
    }

    /// A pipeline queued behind a GET comes out in order, whole, whether
    /// it is taken with `poll_record` or `drain_transactions`.
    #[test]
    fn queued_requests_drain_in_order() {
        let reqs: Vec<ClientRequest> = (0..5)
            .map(|i| match i {
                2 => ClientRequest::Get {
                    path: b"/g".to_vec(),
                    size: 1,
                },
                _ => ClientRequest::Stat {
                    path: format!("/s{i}").into_bytes(),
                    client_time: -7,
                },
            })
            .collect();
        let mut a = established();
        let mut b = established();
        for (i, r) in reqs.iter().enumerate() {
            a.request(now(3), i as u64, r.clone());
            b.request_ref(now(3), i as u64, r.borrowed());
        }
        let mut from_b = Vec::new();
        b.drain_transactions(|t| {
            from_b.push(t.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        let from_a: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_record()).collect();
        assert_eq!(from_a, from_b);
        assert_eq!(
            from_a,
            vec![txn(b"SYNCH -7 STAT /s0"), txn(b"SYNCH -7 STAT /s1")]
        );
        let mut st = txn(b"OK: 0 420 0 0 0 3 1 2 3 0 4 1 5");
        st.extend(txn(b"OK:"));
        let two = [st.clone(), st].concat();
        a.handle_plaintext(now(4), &two);
        assert_eq!(a.poll_record().unwrap(), txn(b"GET 2048 /g"));
        assert_eq!(a.poll_record(), None);
        a.handle_plaintext(now(5), b"x");
        assert_eq!(a.poll_record().unwrap(), txn(b"SYNCH -7 STAT /s3"));
        assert_eq!(a.poll_record().unwrap(), txn(b"SYNCH -7 STAT /s4"));
        assert_eq!(a.poll_record(), None);
    }
}
