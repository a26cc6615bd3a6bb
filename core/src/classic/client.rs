//! The client side of a classic (protocol v1) connection: the `CAUTH` /
//! `SAUTH` key exchange as cf-agent runs it (`IdentifyAgent`,
//! `AuthenticateAgent`), then `STAT`, `GET`, `OPENDIR`, `MD5` and `VERSION`,
//! each plain or in its encrypted `S*` form (PROTOCOL.md §7), and
//! cf-runagent's `EXEC` (always plain, as cf-runagent sends it).
//!
//! # Driving it
//! ```text
//! let mut c = ClassicClient::new(cfg, now, &mut rng)?;  // queues C0..C3
//! loop { write every c.poll_transmit(); wait for bytes or c.poll_timeout();
//!        c.handle_input(now, &bytes, &mut rng) or c.handle_timeout(now);
//!        handle every c.poll_event() }                  // until Authenticated
//! c.stat(now, b"/srv/file", encrypt)?;                 // one request at a time
//! ... Stat(reply) ... c.get(now, b"/srv/file", reply.size, encrypt)?; ... Data ... FileDone
//! ```
//! The machine is lock-step: a request may be issued only when
//! [`ClassicClient::is_idle`]. It follows the error split of
//! [`crate::machine`]: what the server did wrong (bad bytes, a refused
//! key, silence past [`ClientConfig::timeout_ms`]) comes as
//! [`ClientEvent::Failed`], after which the machine [is
//! closed](ClassicClient::is_closed): close the socket. An `Err` from a
//! request method is the caller's mistake (busy, desynchronised, too
//! long) and changes nothing.
//!
//! # For the rcf-agent integration (`--protocol classic [--encrypt]`)
//! * Connect plain TCP (no TLS, no peek games: the server classifies us by
//!   the `CAUTH` at offset 8 of the first transaction).
//! * `ClientConfig::server_key`: the key from `ppkeys/<localuser>-<id>.pub`
//!   if the agent already trusts this server (sends `SAUTH y`), else `None`
//!   (`SAUTH n`) with `trust_server` = the promise's `trustkey`.
//! * On [`ClientEvent::Authenticated`] with `newly_trusted`, store
//!   `server_key` as `ppkeys/<localuser>-<server_key_id>.pub` (what cf-agent
//!   does) — the machine never touches storage.
//! * `encrypt` per request maps to `copy_from encrypt`; `STAT` before `GET`
//!   is the caller's job (the size is an argument), as is any stat cache.
//!
//! After a refused `GET`/`SGET` the server may have sent more than the one
//! refusal the client can recognise (3.21's ownership refusal adds a raw
//! block, or a second refusal transaction, and some refusals close), so the
//! machine marks itself [`desynchronised`](ClassicClient::is_desynchronised)
//! and refuses further requests: open a new connection.

use std::collections::VecDeque;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::frame::{self, c_str, Decoder, Status, Transaction};
use crate::machine::Now;
use crate::reply::{self, OpendirChunk, StatReply};
use crate::request;

use super::crypto::{self, SessionCipher, DIGEST_LEN, NONCE_MPI_LEN, SESSION_KEY_LEN};
use super::wire;

/// The bufsize cf-agent states in a plain `GET`.
pub const GET_BUFSIZE: u16 = 2048;
/// Most directory-listing bytes one `OPENDIR` reply may accumulate.
pub const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;
/// Prefix of the change-during-transfer message.
pub const CHANGED: &[u8] = b"BAD: File changed while copying";

/// Who the client is and what it knows about the server.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our socket's numeric IP, sent in `CAUTH` (the server ignores it).
    pub local_ip: String,
    /// Our fully qualified name, sent in `CAUTH`; classic ACLs match it as a regex.
    pub fqdn: String,
    /// The local user name; the server stores our key as `<user>-<id>.pub`.
    pub user: String,
    /// Our host key (`localhost.priv`).
    pub key: Arc<RsaPrivateKey>,
    /// The server's key if we already trust one (`SAUTH y`: the nonce is
    /// encrypted to it, so the server's reply proves it holds the key).
    pub server_key: Option<RsaPublicKey>,
    /// Accept an unknown server key (cf-agent `trustkey`). Only consulted
    /// when `server_key` is `None`.
    pub trust_server: bool,
    /// How long the server may stay silent while a reply (or the next step
    /// of the key exchange) is due, in ms, before [`ClientEvent::Failed`]
    /// with [`ClassicClientError::Timeout`].
    pub timeout_ms: u64,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("local_ip", &self.local_ip)
            .field("fqdn", &self.fqdn)
            .field("user", &self.user)
            .field("server_key_known", &self.server_key.is_some())
            .field("trust_server", &self.trust_server)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// What the client tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The key exchange succeeded; the session key is in place.
    Authenticated {
        /// The server's key (from S4/S5, or the configured one).
        server_key: RsaPublicKey,
        /// Its `MD5=…` id; cf-agent stores it as `ppkeys/<user>-<id>.pub`.
        server_key_id: String,
        /// True when the key was learnt in this exchange (trust on first use).
        newly_trusted: bool,
        /// The server's S1 text (`OK: key accepted` or `OK: unknown key was accepted on trust`).
        s1: String,
    },
    /// A `STAT` reply.
    Stat(StatReply),
    /// File bytes of the current `GET`, in order.
    Data(Vec<u8>),
    /// The current `GET` delivered exactly the expected size.
    FileDone,
    /// A complete directory listing (`.` and `..` included, server order).
    Listing(Vec<Vec<u8>>),
    /// An `MD5` reply: `true` when the server's file differs from our digest.
    Md5 {
        /// `CFD_TRUE` (files differ) vs `CFD_FALSE`.
        differs: bool,
    },
    /// A `VERSION` reply text (`OK: 3.21.0`).
    Version(String),
    /// One line of `EXEC` output, as the server sent it (`> …`, `BAD: …`,
    /// `(exit code: N)`), without its C-string terminator.
    ExecLine(Vec<u8>),
    /// The `EXEC` output ended (`CFD_TERMINATOR`); the remote exit code
    /// when a `(exit code: N)` line reported one.
    ExecDone(Option<i32>),
    /// The server refused the request; the text is its reply.
    Refused(String),
    /// The server did something wrong (or stayed silent too long): the
    /// machine is closed, the request outstanding gets no reply.
    Failed(ClassicClientError),
}

/// Why a classic connection failed. Raised by the server's behaviour, these
/// arrive as [`ClientEvent::Failed`]; `Busy`, `Desynchronised`, `TooLong`
/// and `Failed` are the caller's mistakes, returned as `Err` by the request
/// methods (and `new`, with `Crypto`, for a server key it cannot use).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicClientError {
    /// The byte stream is not valid transaction framing.
    #[error("framing error: {0}")]
    Frame(#[from] frame::FrameError),
    /// The server did not accept our key (S1 was a `BAD:` reply).
    #[error("Bad protocol reply: {0}")]
    KeyRejected(String),
    /// The server's digest of our nonce (S2) is wrong.
    #[error("Challenge response from server was incorrect")]
    BadChallengeResponse,
    /// The server's key is unknown and trust was not allowed.
    #[error("Not authorized to trust public key of server (trustkey = false)")]
    Untrusted,
    /// A key-exchange message did not decode (RSA, MPI, key parts).
    #[error("key exchange failed: {0}")]
    Crypto(#[from] crypto::CryptoError),
    /// A request was issued while another is outstanding or before authentication.
    #[error("client is not idle (a request is outstanding or authentication is not done)")]
    Busy,
    /// A request after a refused transfer left the stream in an unknown state.
    #[error("the connection is desynchronised after a refused transfer; reconnect")]
    Desynchronised,
    /// The server sent something this request cannot have as a reply.
    #[error("unexpected reply: {0}")]
    Unexpected(String),
    /// The source file changed on the server during the transfer.
    #[error("Source changed while copying")]
    Changed,
    /// The server closed the connection while a reply was due.
    #[error("connection closed by the server")]
    HungUp,
    /// Nothing arrived from the server for longer than the reply deadline.
    #[error("Timeout waiting for the server ({0} ms)")]
    Timeout(u64),
    /// The data did not add up to the size announced by STAT.
    #[error("transfer size mismatch: expected {expected}, got {got}")]
    SizeMismatch {
        /// Size the caller gave.
        expected: u64,
        /// Bytes received.
        got: u64,
    },
    /// A request argument cannot be sent (too long for one transaction).
    #[error("request too long")]
    TooLong,
    /// The machine already failed; nothing more can happen on it.
    #[error("client already failed")]
    Failed,
}

#[derive(Debug)]
enum Stage {
    S1,
    S2,
    S3,
    S4,
    S5 { n: Vec<u8> },
}

#[derive(Debug)]
enum Pending {
    None,
    Handshake(Stage),
    Stat {
        first: Option<Vec<u8>>,
    },
    GetPlain {
        size: u64,
        got: u64,
    },
    GetRefused,
    GetSealed {
        size: u64,
        got: u64,
    },
    Opendir {
        sealed: bool,
        names: Vec<Vec<u8>>,
        bytes: usize,
    },
    Md5,
    Version,
    Exec {
        code: Option<i32>,
        lines: usize,
    },
}

/// Most `EXEC` output lines accepted before the server is considered hostile.
pub const MAX_EXEC_LINES: usize = 1_000_000;

/// One classic client connection.
pub struct ClassicClient {
    cfg: ClientConfig,
    nonce: [u8; NONCE_MPI_LEN],
    counter_digest: Option<[u8; DIGEST_LEN]>,
    server_key: Option<RsaPublicKey>,
    s1: String,
    cipher: Option<SessionCipher>,
    decoder: Decoder,
    pending: Pending,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<ClientEvent>,
    failed: bool,
    desync: bool,
    /// When the server's next bytes are due (monotonic ms), while a reply
    /// or a key-exchange step is outstanding.
    deadline: u64,
}

impl ClassicClient {
    /// Start a connection: queues `CAUTH`, `SAUTH` (with a fresh nonce,
    /// encrypted to the server's key when one is configured) and our
    /// public key's modulus and exponent, as cf-agent sends them back to back.
    /// The key-exchange deadline starts at `now`. `Err` when the
    /// configuration cannot be sent (names too long, an unusable server key).
    pub fn new<R: RngCore + CryptoRng>(
        cfg: ClientConfig,
        now: Now,
        rng: &mut R,
    ) -> Result<Self, ClassicClientError> {
        let nonce = crypto::nonce_mpi(rng);
        let mut c = ClassicClient {
            deadline: now.mono_ms.saturating_add(cfg.timeout_ms),
            server_key: cfg.server_key.clone(),
            cfg,
            nonce,
            counter_digest: None,
            s1: String::new(),
            cipher: None,
            decoder: Decoder::new(),
            pending: Pending::Handshake(Stage::S1),
            out: VecDeque::new(),
            events: VecDeque::new(),
            failed: false,
            desync: false,
        };
        let cauth = wire::encode_cauth(&c.cfg.local_ip, &c.cfg.fqdn, &c.cfg.user);
        c.push(Status::Done, &cauth)?;
        let sauth = match &c.server_key {
            Some(k) => {
                wire::encode_sauth(true, &crypto::rsa_encrypt(rng, k, &nonce)?, NONCE_MPI_LEN)
            }
            None => wire::encode_sauth(false, &nonce, NONCE_MPI_LEN),
        };
        c.push(Status::Done, &sauth)?;
        let (n, e) = crypto::public_key_mpis(&c.cfg.key.to_public_key());
        c.push(Status::Done, &n)?;
        c.push(Status::Done, &e)?;
        Ok(c)
    }

    /// Bytes to write, in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The next event for the driver.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Authenticated and no request outstanding: a new request may be issued.
    pub fn is_idle(&self) -> bool {
        !self.failed && self.cipher.is_some() && matches!(self.pending, Pending::None)
    }

    /// Whether the key exchange completed.
    pub fn is_authenticated(&self) -> bool {
        self.cipher.is_some()
    }

    /// After a refused transfer the stream state is unknown; reconnect.
    pub fn is_desynchronised(&self) -> bool {
        self.desync
    }

    /// The session cipher (for tests and key-log tooling).
    pub fn session_cipher(&self) -> Option<&SessionCipher> {
        self.cipher.as_ref()
    }

    /// Whether the machine failed ([`ClientEvent::Failed`] was queued):
    /// close the socket once `poll_transmit` is drained.
    pub fn is_closed(&self) -> bool {
        self.failed
    }

    /// The peer's mistake: the machine closes and says why.
    fn fail(&mut self, e: ClassicClientError) {
        if !self.failed {
            self.failed = true;
            self.events.push_back(ClientEvent::Failed(e));
        }
    }

    /// The server closed the connection: [`ClientEvent::Failed`] with
    /// [`ClassicClientError::HungUp`] if a reply was still due, except
    /// during `EXEC`, whose output then ends there
    /// ([`ClientEvent::ExecDone`]) as cf-runagent stops reading at the
    /// first failed receive (a refused `EXEC` is `BAD: …` and a close).
    pub fn handle_eof(&mut self, _now: Now) {
        if let Pending::Exec { code, .. } = self.pending {
            self.pending = Pending::None;
            self.failed = true;
            self.events.push_back(ClientEvent::ExecDone(code));
            return;
        }
        if !matches!(self.pending, Pending::None) {
            self.fail(ClassicClientError::HungUp);
        }
    }

    /// Bytes read from the socket; the reply deadline restarts at `now`.
    /// Randomness is needed when these bytes complete the key exchange (the
    /// session key and its RSA padding).
    pub fn handle_input<R: RngCore + CryptoRng>(&mut self, now: Now, bytes: &[u8], rng: &mut R) {
        if self.failed {
            return;
        }
        self.deadline = now.mono_ms.saturating_add(self.cfg.timeout_ms);
        let r = self
            .decoder
            .push(bytes)
            .map_err(ClassicClientError::from)
            .and_then(|_| self.drive(rng));
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// When to call [`handle_timeout`](ClassicClient::handle_timeout), in
    /// monotonic ms: while the key exchange runs or a reply is due; `None`
    /// when idle or closed (an idle connection waits on its caller).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        (!self.failed && !matches!(self.pending, Pending::None)).then_some(self.deadline)
    }

    /// A deadline may have passed: a server silent past it fails the
    /// machine with [`ClassicClientError::Timeout`].
    pub fn handle_timeout(&mut self, now: Now) {
        if self.poll_timeout().is_some_and(|d| now.mono_ms >= d) {
            self.fail(ClassicClientError::Timeout(self.cfg.timeout_ms));
        }
    }

    // ---- requests -------------------------------------------------------

    fn ready(&self) -> Result<&SessionCipher, ClassicClientError> {
        if self.failed {
            return Err(ClassicClientError::Failed);
        }
        if self.desync {
            return Err(ClassicClientError::Desynchronised);
        }
        match (&self.cipher, &self.pending) {
            (Some(c), Pending::None) => Ok(c),
            _ => Err(ClassicClientError::Busy),
        }
    }

    fn request(
        &mut self,
        now: Now,
        word: &str,
        plain: Vec<u8>,
        encrypt: bool,
        pending: Pending,
    ) -> Result<(), ClassicClientError> {
        let cipher = self.ready()?.clone();
        let payload = if encrypt {
            let mut p = plain;
            if word != "SMD5" {
                p.push(0);
            }
            wire::seal(word, &cipher, &p)
        } else {
            plain
        };
        if payload.len() > frame::MAX_PAYLOAD {
            return Err(ClassicClientError::TooLong);
        }
        self.push(Status::Done, &payload)?;
        self.pending = pending;
        self.deadline = now.mono_ms.saturating_add(self.cfg.timeout_ms);
        Ok(())
    }

    /// `SYNCH <now> STAT <path>` (or `SSYNCH`), with the wall-clock
    /// seconds of `now`. Replies: [`ClientEvent::Stat`] or `Refused`.
    pub fn stat(&mut self, now: Now, path: &[u8], encrypt: bool) -> Result<(), ClassicClientError> {
        self.request(
            now,
            "SSYNCH",
            request::encode_stat(now.unix_s, path),
            encrypt,
            Pending::Stat { first: None },
        )
    }

    /// `GET 2048 <path>` (or `SGET`) of a file whose size a `STAT` just
    /// gave. Replies: `Data`… then `FileDone`, or `Refused`. A zero size
    /// sends nothing and completes at once, as cf-agent does.
    pub fn get(
        &mut self,
        now: Now,
        path: &[u8],
        size: u64,
        encrypt: bool,
    ) -> Result<(), ClassicClientError> {
        if size == 0 {
            self.ready()?;
            self.events.push_back(ClientEvent::FileDone);
            return Ok(());
        }
        if encrypt {
            let mut p = b"GET dummykey ".to_vec();
            p.extend_from_slice(path);
            self.request(now, "SGET", p, true, Pending::GetSealed { size, got: 0 })
        } else {
            self.request(
                now,
                "GET",
                request::encode_get(GET_BUFSIZE, path),
                false,
                Pending::GetPlain { size, got: 0 },
            )
        }
    }

    /// `OPENDIR <dir>` (or `SOPENDIR`). Replies: [`ClientEvent::Listing`] or `Refused`.
    pub fn opendir(
        &mut self,
        now: Now,
        path: &[u8],
        encrypt: bool,
    ) -> Result<(), ClassicClientError> {
        self.request(
            now,
            "SOPENDIR",
            request::encode_opendir(path),
            encrypt,
            Pending::Opendir {
                sealed: encrypt,
                names: Vec::new(),
                bytes: 0,
            },
        )
    }

    /// `MD5 <path>\0\0<digest>` (or `SMD5`). Replies: [`ClientEvent::Md5`] or `Refused`.
    pub fn md5(
        &mut self,
        now: Now,
        path: &[u8],
        digest: &[u8; 16],
        encrypt: bool,
    ) -> Result<(), ClassicClientError> {
        self.request(
            now,
            "SMD5",
            request::encode_md5(path, digest),
            encrypt,
            Pending::Md5,
        )
    }

    /// `VERSION`. Replies: [`ClientEvent::Version`].
    pub fn version(&mut self, now: Now) -> Result<(), ClassicClientError> {
        self.request(now, "VERSION", b"VERSION".to_vec(), false, Pending::Version)
    }

    /// `EXEC<args>` (cf-runagent's `HailExec`: `args` is `" -D…"` /
    /// `" -b …"` or empty), followed at once by each non-empty class of
    /// `select` (at most 9, as the TLS client) and `CFD_TERMINATOR`, all
    /// plain transactions as cf-runagent sends them whatever the protocol.
    /// Replies: [`ClientEvent::ExecLine`]… then [`ClientEvent::ExecDone`].
    pub fn exec(
        &mut self,
        now: Now,
        args: &[u8],
        select: &[Vec<u8>],
    ) -> Result<(), ClassicClientError> {
        let cmd = [b"EXEC".as_slice(), args].concat();
        self.request(
            now,
            "EXEC",
            cmd,
            false,
            Pending::Exec {
                code: None,
                lines: 0,
            },
        )?;
        for class in select.iter().filter(|c| !c.is_empty()).take(9) {
            self.push(Status::Done, &class[..class.len().min(frame::MAX_PAYLOAD)])?;
        }
        self.push(Status::Done, reply::TERMINATOR)
    }

    // ---- replies --------------------------------------------------------

    fn drive<R: RngCore + CryptoRng>(&mut self, rng: &mut R) -> Result<(), ClassicClientError> {
        loop {
            match &mut self.pending {
                Pending::None => {
                    if self.decoder.buffered() > 0 && !self.desync {
                        return Err(ClassicClientError::Unexpected(
                            "data from the server with no request outstanding".into(),
                        ));
                    }
                    return Ok(());
                }
                Pending::GetPlain { .. } => {
                    if !self.raw_get()? {
                        return Ok(());
                    }
                    continue;
                }
                _ => {}
            }
            let Some(t) = self.decoder.poll()? else {
                return Ok(());
            };
            self.transaction(t, rng)?;
        }
    }

    fn transaction<R: RngCore + CryptoRng>(
        &mut self,
        t: Transaction,
        rng: &mut R,
    ) -> Result<(), ClassicClientError> {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let p = &t.payload[..];
        match pending {
            Pending::None | Pending::GetPlain { .. } => {
                return Err(ClassicClientError::Unexpected(
                    "transaction while raw data was expected".into(),
                ))
            }
            Pending::GetRefused => {
                self.desync = true;
                self.refused(p);
            }
            Pending::Handshake(stage) => self.handshake(stage, p, rng)?,
            Pending::Stat { first: None } => {
                if p.starts_with(b"OK:") {
                    self.pending = Pending::Stat {
                        first: Some(p.to_vec()),
                    };
                } else {
                    self.refused(p);
                }
            }
            Pending::Stat { first: Some(first) } => match StatReply::parse(&first, p) {
                Ok(r) => self.events.push_back(ClientEvent::Stat(r)),
                Err(e) => return Err(ClassicClientError::Unexpected(format!("STAT reply: {e}"))),
            },
            Pending::GetSealed { size, got } => {
                if got == 0 && p.starts_with(reply::FAILED) {
                    self.desync = true;
                    self.refused(p);
                    return Ok(());
                }
                if p.starts_with(CHANGED) {
                    self.desync = true;
                    return Err(ClassicClientError::Changed);
                }
                let cipher = self.cipher.clone().ok_or(ClassicClientError::Failed)?;
                let plain = cipher.decrypt(p)?;
                let got = got + plain.len() as u64;
                if got > size {
                    return Err(ClassicClientError::SizeMismatch {
                        expected: size,
                        got,
                    });
                }
                if !plain.is_empty() {
                    self.events.push_back(ClientEvent::Data(plain));
                }
                if t.status == Status::Done {
                    if got != size {
                        return Err(ClassicClientError::SizeMismatch {
                            expected: size,
                            got,
                        });
                    }
                    self.events.push_back(ClientEvent::FileDone);
                } else {
                    self.pending = Pending::GetSealed { size, got };
                }
            }
            Pending::Opendir {
                sealed,
                mut names,
                mut bytes,
            } => {
                let plain = if sealed && !reply::is_bad(p) {
                    let cipher = self.cipher.clone().ok_or(ClassicClientError::Failed)?;
                    cipher.decrypt(p)?
                } else {
                    p.to_vec()
                };
                match reply::parse_opendir_packet(&plain) {
                    Err(reply::OpendirError::Refused(text)) => {
                        self.events.push_back(ClientEvent::Refused(text));
                    }
                    Err(reply::OpendirError::Empty) => {
                        return Err(ClassicClientError::Unexpected(
                            "empty OPENDIR packet".into(),
                        ))
                    }
                    Ok(chunk) => {
                        let (more, last) = match chunk {
                            OpendirChunk::Names(n) => (n, false),
                            OpendirChunk::Last(n) => (n, true),
                        };
                        bytes += more.iter().map(|n| n.len() + 1).sum::<usize>();
                        if bytes > MAX_LISTING_BYTES {
                            return Err(ClassicClientError::Unexpected(
                                "directory listing too large".into(),
                            ));
                        }
                        names.extend(more);
                        if last {
                            self.events.push_back(ClientEvent::Listing(names));
                        } else {
                            self.pending = Pending::Opendir {
                                sealed,
                                names,
                                bytes,
                            };
                        }
                    }
                }
            }
            Pending::Md5 => {
                let s = c_str(p);
                if s == reply::CFD_TRUE {
                    self.events.push_back(ClientEvent::Md5 { differs: true });
                } else if s == reply::CFD_FALSE {
                    self.events.push_back(ClientEvent::Md5 { differs: false });
                } else {
                    self.refused(p);
                }
            }
            Pending::Exec { code, lines } => {
                let line = c_str(p);
                if line.starts_with(reply::TERMINATOR) {
                    self.events.push_back(ClientEvent::ExecDone(code));
                } else {
                    if lines + 1 > MAX_EXEC_LINES {
                        return Err(ClassicClientError::Unexpected("endless EXEC output".into()));
                    }
                    let code = match line.strip_prefix(b"(exit code: ") {
                        Some(n) => std::str::from_utf8(n)
                            .ok()
                            .and_then(|t| t.trim_end().trim_end_matches(')').parse().ok()),
                        None => code,
                    };
                    self.events.push_back(ClientEvent::ExecLine(line.to_vec()));
                    self.pending = Pending::Exec {
                        code,
                        lines: lines + 1,
                    };
                }
            }
            Pending::Version => {
                let s = String::from_utf8_lossy(c_str(p)).into_owned();
                if s.starts_with("OK:") {
                    self.events.push_back(ClientEvent::Version(s));
                } else {
                    self.refused(p);
                }
            }
        }
        Ok(())
    }

    fn refused(&mut self, p: &[u8]) {
        self.events.push_back(ClientEvent::Refused(
            String::from_utf8_lossy(c_str(p)).into_owned(),
        ));
    }

    fn handshake<R: RngCore + CryptoRng>(
        &mut self,
        stage: Stage,
        p: &[u8],
        rng: &mut R,
    ) -> Result<(), ClassicClientError> {
        match stage {
            Stage::S1 => {
                let s = String::from_utf8_lossy(c_str(p)).into_owned();
                if !s.starts_with("OK:") {
                    return Err(ClassicClientError::KeyRejected(s));
                }
                self.s1 = s;
                self.pending = Pending::Handshake(Stage::S2);
            }
            Stage::S2 => {
                if p.len() < DIGEST_LEN || p[..DIGEST_LEN] != crypto::digest(&self.nonce) {
                    return Err(ClassicClientError::BadChallengeResponse);
                }
                if self.server_key.is_none() && !self.cfg.trust_server {
                    return Err(ClassicClientError::Untrusted);
                }
                self.pending = Pending::Handshake(Stage::S3);
            }
            Stage::S3 => {
                let counter = crypto::rsa_decrypt(&self.cfg.key, p)?;
                if counter.len() < NONCE_MPI_LEN {
                    return Err(ClassicClientError::Unexpected(format!(
                        "counter-challenge of {} bytes",
                        counter.len()
                    )));
                }
                // cf-agent hashes as many bytes as its own nonce has.
                self.counter_digest = Some(crypto::digest(&counter[..NONCE_MPI_LEN]));
                if self.server_key.is_some() {
                    self.finish(false, rng)?;
                } else {
                    self.pending = Pending::Handshake(Stage::S4);
                }
            }
            Stage::S4 => self.pending = Pending::Handshake(Stage::S5 { n: p.to_vec() }),
            Stage::S5 { n } => {
                self.server_key = Some(crypto::public_key_from_mpis(&n, p)?);
                self.finish(true, rng)?;
            }
        }
        Ok(())
    }

    /// C4 (digest of the counter-challenge) and C5 (the session key,
    /// encrypted to the server's key).
    fn finish<R: RngCore + CryptoRng>(
        &mut self,
        newly_trusted: bool,
        rng: &mut R,
    ) -> Result<(), ClassicClientError> {
        let server_key = self.server_key.clone().ok_or(ClassicClientError::Failed)?;
        let d = self.counter_digest.ok_or(ClassicClientError::Failed)?;
        self.push(Status::Done, &d)?;
        let mut key = [0u8; SESSION_KEY_LEN];
        rng.fill_bytes(&mut key);
        let c5 = crypto::rsa_encrypt(rng, &server_key, &key)?;
        self.push(Status::Done, &c5)?;
        self.cipher = Some(SessionCipher::new(key));
        let server_key_id =
            crate::keys::key_id(&server_key, crate::keys::DigestKind::Md5).to_string();
        self.events.push_back(ClientEvent::Authenticated {
            server_key,
            server_key_id,
            newly_trusted,
            s1: self.s1.clone(),
        });
        Ok(())
    }

    /// Consume raw `GET` data. Returns whether progress was made.
    fn raw_get(&mut self) -> Result<bool, ClassicClientError> {
        let Pending::GetPlain { size, got } = self.pending else {
            return Ok(false);
        };
        let buf = self.decoder.peek_raw();
        const REFUSAL: &[u8] = b"BAD: Unspecified server refusal";
        const FRAMED: usize = frame::HEADER_LEN + 5;
        if got == 0 {
            // Wait until a refusal could be recognised (libcfnet's checks):
            // a framed `t <n>` + `BAD: ` transaction, or a raw block that
            // starts with the refusal text.
            let need = (size as usize)
                .min(REFUSAL.len())
                .max(FRAMED.min(size as usize));
            if buf.len() < need {
                return Ok(false);
            }
            if buf.len() >= FRAMED && buf[0] == b't' && &buf[frame::HEADER_LEN..FRAMED] == b"BAD: "
            {
                let mut h = [0u8; frame::HEADER_LEN];
                h.copy_from_slice(&buf[..frame::HEADER_LEN]);
                if frame::parse_header(&h).is_ok() {
                    self.pending = Pending::GetRefused;
                    return Ok(true);
                }
            }
            if size as usize >= REFUSAL.len() && buf.starts_with(REFUSAL) {
                self.desync = true;
                self.pending = Pending::None;
                let n = buf.len().min(usize::from(GET_BUFSIZE));
                let text = self.decoder.take_raw(n);
                self.refused(&text);
                return Ok(true);
            }
        }
        // At each 2048-byte block boundary, look for the change message.
        let remaining = size - got;
        if got % u64::from(GET_BUFSIZE) == 0 && remaining as usize >= CHANGED.len() {
            if buf.len() < CHANGED.len() {
                return Ok(false);
            }
            if buf.starts_with(CHANGED) {
                self.desync = true;
                return Err(ClassicClientError::Changed);
            }
        }
        let to_boundary = u64::from(GET_BUFSIZE) - got % u64::from(GET_BUFSIZE);
        let max = remaining.min(to_boundary) as usize;
        let data = self.decoder.take_raw(max);
        if data.is_empty() {
            return Ok(false);
        }
        let got = got + data.len() as u64;
        self.events.push_back(ClientEvent::Data(data.to_vec()));
        if got == size {
            self.pending = Pending::None;
            self.events.push_back(ClientEvent::FileDone);
        } else {
            self.pending = Pending::GetPlain { size, got };
        }
        Ok(true)
    }

    fn push(&mut self, status: Status, payload: &[u8]) -> Result<(), ClassicClientError> {
        let v = wire::framed(status, payload).ok_or(ClassicClientError::TooLong)?;
        self.out.push_back(v);
        Ok(())
    }
}
