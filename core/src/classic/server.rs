//! The server side of a classic (protocol v1) connection: the `CAUTH` /
//! `SAUTH` key exchange and the classic command loop (PROTOCOL.md §7,
//! §8.10 classic column; SEMANTICS.md B.9, D.7).
//!
//! Bytes in ([`ClassicServer::handle_input`]), bytes out
//! ([`ClassicServer::poll_transmit`]: framed transactions and, for a plain
//! `GET`, raw file blocks), questions out ([`ClassicServer::poll_event`],
//! the same [`Event`]s as the TLS session) and answers in
//! ([`ClassicServer::handle_answer`], which also takes the randomness the
//! key exchange needs). After every input drain `poll_transmit` and
//! `poll_event`, then wait for input, an answer or `poll_timeout`.
//!
//! `allowlegacyconnects` is the adapter's check, made before this machine
//! exists ([`ClassicPolicy::legacy_allowed`]).
//!
//! Deliberate differences from 3.21, all on the safe side:
//! * `CAUTH`/`SAUTH` after authentication is a protocol error (3.21 would
//!   let a peer change its claimed user name mid-session).
//! * Files are opened, listed and hashed by their canonical path (what the
//!   ACL approved); only `STAT` looks at the requested path, so links are
//!   reported as links as 3.21 does.
//! * An encrypted `GET` of an empty file sends one `t` transaction holding
//!   an encrypted empty message (3.21 sends uninitialised memory; cf-agent
//!   never asks for an empty file).
//! * Padding after a refusal is zeros, never stack contents.
//! * `EXEC` (the steps of [`crate::machine::exec`], shared with the TLS
//!   session) reads cf-runagent's class selection up to its terminator;
//!   3.21 stops at the first match and reads the rest as commands.

use std::collections::VecDeque;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use rsa::{RsaPrivateKey, RsaPublicKey};

use crate::frame::{self, c_str, Decoder, Status};
use crate::machine::exec::{self, ExecClasses, ExecWait, TokenKind};
use crate::machine::io::{Answer, Canonical, Event, FileStat, KeyStatus, OpenedFile};
use crate::machine::transfer::{self, Transfer};
use crate::machine::{CallerError, Config, Level, Now, GET_BLOCK};
use crate::reply;
use crate::request::{self, Dialect, Encrypted, Request, RequestError};

#[path = "server_exec.rs"]
mod exec_host;

use super::crypto::{self, SessionCipher, DIGEST_LEN, SESSION_KEY_LEN};
use super::wire::SGET_CHUNK;

/// Facts the classic ACLs match on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicPeer {
    /// Numeric IP of the socket (the IP inside `CAUTH` is ignored).
    pub ip: String,
    /// The host name the client claimed in `CAUTH`, lower-cased. Unverified.
    pub hostname: String,
    /// The user name the client claimed in `CAUTH`.
    pub username: String,
    /// `MD5=…` id of the client's key, once received.
    pub key_id: String,
}

/// A classic path decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicDecision {
    /// Access granted.
    pub allowed: bool,
    /// The deciding rule's `maproot` matched the peer.
    pub maproot: bool,
    /// Denied only because the rule has `ifencrypted` and the request was plain.
    pub needs_encryption: bool,
    /// The deciding rule's path, for logs.
    pub rule: String,
}

/// What the classic machine needs from the loaded policy (the legacy ACLs
/// of SEMANTICS.md B.9 and a few control settings).
pub trait ClassicPolicy: Send + Sync {
    /// `allowlegacyconnects` matches this IP (empty or absent: nobody).
    fn legacy_allowed(&self, ip: &str) -> bool;
    /// `trustkeysfrom` matches this IP.
    fn trusts_keys_from(&self, ip: &str) -> bool;
    /// `denybadclocks`.
    fn deny_bad_clocks(&self) -> bool;
    /// Expand a relative path through the `shortcut` map; `None` if none applies.
    fn expand_shortcut(&self, path: &[u8], peer: &ClassicPeer) -> Option<Vec<u8>>;
    /// The legacy path ACL for a canonical path (no trailing slash).
    fn check_path(&self, path: &[u8], peer: &ClassicPeer, encrypted: bool) -> ClassicDecision;
    /// The legacy `varadmit` ACL for a literal handle (VAR) or query name.
    fn check_literal(&self, name: &[u8], peer: &ClassicPeer, encrypted: bool) -> bool;

    // EXEC (cf-runagent). 3.21's classic server runs the same `DoExec2` as
    // its TLS one, so these are the TLS rules, not the legacy tables. Each
    // default refuses, so a policy that does not answer them serves no EXEC.

    /// `cfruncommand` (empty: EXEC is refused).
    fn cfruncommand(&self) -> &str {
        ""
    }
    /// The `paths` access rule admits the EXEC program at this canonical
    /// path (3.21: `acl_CheckPath(paths_acl, …)` with the classic key and
    /// no host name, as `revdns` is only looked up over TLS).
    fn exec_path_allowed(&self, _path: &[u8], _peer: &ClassicPeer) -> bool {
        false
    }
    /// The `roles` rule grants a `-D` class, or a `bundle` rule a `-b`
    /// bundle, to this peer.
    fn exec_token_allowed(&self, _kind: TokenKind, _token: &str, _peer: &ClassicPeer) -> bool {
        false
    }
    /// `allowusers` names this user.
    fn user_may_exec(&self, _user: &str) -> bool {
        false
    }
    /// The class is defined on this server (for `cf-runagent -s`).
    fn class_defined(&self, _name: &str) -> bool {
        false
    }
}

impl ClassicPolicy for crate::policy::ServerPolicy {
    fn legacy_allowed(&self, ip: &str) -> bool {
        self.control
            .allowlegacyconnects
            .contains(crate::policy::addr::map_address(ip))
    }

    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.control
            .trustkeysfrom
            .contains(crate::policy::addr::map_address(ip))
    }

    fn deny_bad_clocks(&self) -> bool {
        self.control.denybadclocks
    }

    /// As the TLS view: bytes through [`crate::bytestr`] both ways.
    fn expand_shortcut(&self, path: &[u8], peer: &ClassicPeer) -> Option<Vec<u8>> {
        let p = crate::bytestr::encode(path);
        let host = (!peer.hostname.is_empty()).then_some(peer.hostname.as_str());
        crate::policy::ServerPolicy::expand_shortcut(self, &p, &peer.ip, host, &peer.key_id)
            .map(|t| crate::bytestr::decode(&t).into_owned())
    }

    /// Paths are matched as bytes through [`crate::bytestr`], as in 3.21.
    fn check_path(&self, path: &[u8], peer: &ClassicPeer, encrypted: bool) -> ClassicDecision {
        let p = crate::bytestr::encode(path);
        let d = self.check(&facts(peer, encrypted), crate::policy::Request::Path(&p));
        ClassicDecision {
            allowed: d.allowed,
            maproot: d.maproot,
            needs_encryption: d.reason == crate::policy::acl::Reason::RequiresEncryption,
            rule: crate::bytestr::display(&d.resource.unwrap_or_default()).into_owned(),
        }
    }

    fn check_literal(&self, name: &[u8], peer: &ClassicPeer, encrypted: bool) -> bool {
        let Ok(n) = std::str::from_utf8(name) else {
            return false;
        };
        self.check(&facts(peer, encrypted), crate::policy::Request::Literal(n))
            .allowed
    }

    fn cfruncommand(&self) -> &str {
        &self.control.cfruncommand
    }

    fn exec_path_allowed(&self, path: &[u8], peer: &ClassicPeer) -> bool {
        let p = crate::bytestr::encode(path);
        self.check(&exec_facts(peer), crate::policy::Request::Path(&p))
            .allowed
    }

    fn exec_token_allowed(&self, kind: TokenKind, token: &str, peer: &ClassicPeer) -> bool {
        let req = match kind {
            TokenKind::Class => crate::policy::Request::Role(token),
            TokenKind::Bundle => crate::policy::Request::Bundle(token),
        };
        self.check(&exec_facts(peer), req).allowed
    }

    fn user_may_exec(&self, user: &str) -> bool {
        self.allows_exec_user(user)
    }

    fn class_defined(&self, name: &str) -> bool {
        self.defines_class(name)
    }
}

/// `inner` with its `trusts_keys_from` answered through `gate` as well
/// (the TLS twin is `server::tofu::gated_view`).
pub fn gated_policy(
    inner: Arc<dyn ClassicPolicy>,
    gate: Arc<dyn crate::machine::NewKeyGate>,
) -> Arc<dyn ClassicPolicy> {
    Arc::new(GatedClassic { inner, gate })
}

/// A classic policy whose key-trust answer also consults the gate. Every
/// other method is delegated unchanged (a method added to [`ClassicPolicy`]
/// must be delegated here too).
struct GatedClassic {
    inner: Arc<dyn ClassicPolicy>,
    gate: Arc<dyn crate::machine::NewKeyGate>,
}

impl ClassicPolicy for GatedClassic {
    fn legacy_allowed(&self, ip: &str) -> bool {
        self.inner.legacy_allowed(ip)
    }
    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.gate.admit_new_key(ip, self.inner.trusts_keys_from(ip))
    }
    fn deny_bad_clocks(&self) -> bool {
        self.inner.deny_bad_clocks()
    }
    fn expand_shortcut(&self, path: &[u8], peer: &ClassicPeer) -> Option<Vec<u8>> {
        self.inner.expand_shortcut(path, peer)
    }
    fn check_path(&self, path: &[u8], peer: &ClassicPeer, encrypted: bool) -> ClassicDecision {
        self.inner.check_path(path, peer, encrypted)
    }
    fn check_literal(&self, name: &[u8], peer: &ClassicPeer, encrypted: bool) -> bool {
        self.inner.check_literal(name, peer, encrypted)
    }
    fn cfruncommand(&self) -> &str {
        self.inner.cfruncommand()
    }
    fn exec_path_allowed(&self, path: &[u8], peer: &ClassicPeer) -> bool {
        self.inner.exec_path_allowed(path, peer)
    }
    fn exec_token_allowed(&self, kind: TokenKind, token: &str, peer: &ClassicPeer) -> bool {
        self.inner.exec_token_allowed(kind, token, peer)
    }
    fn user_may_exec(&self, user: &str) -> bool {
        self.inner.user_may_exec(user)
    }
    fn class_defined(&self, name: &str) -> bool {
        self.inner.class_defined(name)
    }
}

fn facts(peer: &ClassicPeer, encrypted: bool) -> crate::policy::ConnFacts<'_> {
    crate::policy::ConnFacts {
        ip: &peer.ip,
        hostname: (!peer.hostname.is_empty()).then_some(peer.hostname.as_str()),
        key: &peer.key_id,
        username: &peer.username,
        protocol: crate::policy::Protocol::Classic,
        encrypted,
    }
}

/// The facts EXEC's rules match on: 3.21 checks them with the TLS rule set
/// (`paths_acl`, `roles_acl`, `bundles_acl`) on a classic connection too,
/// with an empty `revdns`.
fn exec_facts(peer: &ClassicPeer) -> crate::policy::ConnFacts<'_> {
    crate::policy::ConnFacts {
        ip: &peer.ip,
        hostname: None,
        key: &peer.key_id,
        username: &peer.username,
        protocol: crate::policy::Protocol::Tls,
        encrypted: true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for `CAUTH` (or, once it came, `SAUTH`); commands are refused.
    Unauthenticated,
    /// Inside the key exchange: reading C2 (modulus).
    Modulus,
    /// Reading C3 (exponent).
    Exponent,
    /// Waiting for the key lookup answer.
    KeyCheck,
    /// Reading C4 (counter-challenge response).
    Response,
    /// Reading C5 (session key).
    SessionKey,
    /// Waiting for the uid of a non-root user.
    User,
    /// Command loop, idle.
    Ready,
    /// Command loop, waiting on the adapter.
    Busy,
    /// Done; flush and close.
    Closing,
}

/// Which command a path operation serves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathKind {
    Stat { client_time: i64 },
    Get { bufsize: u16 },
    SGet,
    Opendir,
    SOpendir,
    Md5 { digest: [u8; 16] },
}

#[derive(Debug)]
struct PathOp {
    kind: PathKind,
    /// The requested path after shortcut expansion (what `StatFile` stats).
    requested: Vec<u8>,
    /// Whether the request came through an `S*` command (for `ifencrypted`).
    encrypted: bool,
}

impl PathOp {
    /// The request's metric label (the `S*` forms count as their plain word).
    fn label(&self) -> &'static str {
        match self.kind {
            PathKind::Stat { .. } => "STAT",
            PathKind::Get { .. } | PathKind::SGet => "GET",
            PathKind::Opendir | PathKind::SOpendir => "OPENDIR",
            PathKind::Md5 { .. } => "MD5",
        }
    }

    /// Whether an ACL refusal closes the connection (PROTOCOL.md §8.10).
    fn deny_closes(&self) -> bool {
        matches!(
            self.kind,
            PathKind::SGet | PathKind::Opendir | PathKind::SOpendir
        )
    }
}

/// A `GET` or `SGET` in progress: the shared transfer, and whether its
/// data goes out sealed (`SGET`) or as raw blocks.
#[derive(Debug)]
struct Sending {
    t: Transfer,
    encrypted: bool,
}

#[derive(Debug)]
enum Waiting {
    Nothing,
    Key,
    User,
    Canon(PathOp),
    Stat(PathOp),
    Open(PathOp),
    Read(Sending),
    Listing(PathOp),
    Digest([u8; 16]),
    Exec(ExecWait),
}

#[derive(Debug, Default)]
struct Auth {
    cauth_seen: bool,
    flag: u8,
    challenge_digest: [u8; DIGEST_LEN],
    modulus: Vec<u8>,
    client_key: Option<RsaPublicKey>,
    counter_digest: [u8; DIGEST_LEN],
}

/// One classic server connection.
pub struct ClassicServer {
    cfg: Config,
    policy: Arc<dyn ClassicPolicy>,
    host_key: Arc<RsaPrivateKey>,
    peer: ClassicPeer,
    uid: u32,
    maproot: bool,
    phase: Phase,
    waiting: Waiting,
    auth: Auth,
    cipher: Option<SessionCipher>,
    decoder: Decoder,
    current: String,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    deadline: Option<u64>,
    served: u64,
    pumping: bool,
    /// An admitted EXEC reading cf-runagent's class selection.
    exec: Option<ExecClasses>,
}

/// uid of a user the server does not know (`CF_UNKNOWN_OWNER`).
pub const UNKNOWN_UID: u32 = u32::MAX - 1;
/// Largest `C5` payload accepted (`CF_BUFSIZE / 2`).
pub const MAX_SESSION_KEY_PAYLOAD: usize = 2048;
/// File bytes asked for per read while serving `SGET`.
const SGET_READ: usize = 16 * SGET_CHUNK;
/// File bytes asked for per read while serving a plain `GET`.
const GET_READ: usize = 32 * GET_BLOCK;

impl ClassicServer {
    /// A machine for a peer at `ip` whose first bytes were a `CAUTH`
    /// transaction and whose IP passed `allowlegacyconnects`. `host_key`
    /// is the server's `localhost.priv`. The key-exchange deadline starts now.
    pub fn new(
        cfg: Config,
        policy: Arc<dyn ClassicPolicy>,
        host_key: Arc<RsaPrivateKey>,
        ip: String,
        now: Now,
    ) -> Self {
        let deadline = Some(now.mono_ms + cfg.handshake_timeout_ms);
        ClassicServer {
            cfg,
            policy,
            host_key,
            peer: ClassicPeer {
                ip,
                ..ClassicPeer::default()
            },
            uid: UNKNOWN_UID,
            maproot: false,
            phase: Phase::Unauthenticated,
            waiting: Waiting::Nothing,
            auth: Auth::default(),
            cipher: None,
            decoder: Decoder::new(),
            current: String::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            deadline,
            served: 0,
            pumping: false,
            exec: None,
        }
    }

    /// Swap in a reloaded policy; it applies from the next request on.
    pub fn set_policy(&mut self, policy: Arc<dyn ClassicPolicy>) {
        self.policy = policy;
    }

    /// The peer as the ACLs see it.
    pub fn peer(&self) -> &ClassicPeer {
        &self.peer
    }

    /// Whether the key exchange completed (the command loop runs).
    pub fn is_authenticated(&self) -> bool {
        self.cipher.is_some() && matches!(self.phase, Phase::Ready | Phase::Busy | Phase::Closing)
    }

    /// The negotiated session cipher, once authenticated.
    pub fn session_cipher(&self) -> Option<&SessionCipher> {
        self.cipher.as_ref()
    }

    /// Whether the connection is done: close once `poll_transmit` is drained.
    pub fn is_closing(&self) -> bool {
        self.phase == Phase::Closing
    }

    /// File bytes served so far.
    pub fn bytes_served(&self) -> u64 {
        self.served
    }

    /// Bytes queued and not yet returned by
    /// [`poll_transmit`](ClassicServer::poll_transmit): an adapter answering
    /// back to back drains once this passes its write batch, so a GET
    /// streams with bounded memory.
    pub fn pending_output(&self) -> usize {
        self.out.iter().map(Vec::len).sum()
    }

    /// When to call [`handle_timeout`](ClassicServer::handle_timeout); `None`
    /// while waiting on the adapter or closing.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let busy = !matches!(self.waiting, Waiting::Nothing);
        crate::machine::peer_deadline(self.phase == Phase::Closing, busy, self.deadline)
    }

    /// A deadline passed: a silent peer is dropped without a reply.
    pub fn handle_timeout(&mut self, now: Now) {
        let what = match self.cipher {
            Some(_) => "idle",
            None => "authentication",
        };
        if let Some(line) = crate::machine::timed_out(self.poll_timeout(), now, what) {
            self.events.push_back(line);
            self.close();
        }
    }

    /// The next question or log line.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write, in order (framed transactions or raw `GET` blocks).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// The peer closed its side.
    pub fn handle_eof(&mut self, _now: Now) {
        if self.phase != Phase::Closing {
            if let Err(e) = self.decoder.finish() {
                self.log(Level::Verbose, format!("Peer closed mid-transaction: {e}"));
            }
            if self.cipher.is_none() {
                self.log(
                    Level::Info,
                    "Peer closed the connection during authentication".into(),
                );
            }
        }
        self.close();
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        if self.phase == Phase::Closing {
            return;
        }
        if let Err(e) = self.decoder.push(bytes) {
            return self.bad_input(&e);
        }
        self.pump(now);
    }

    /// The adapter's answer to the outstanding question. The key exchange
    /// draws its counter-challenge and RSA padding from `rng`.
    pub fn handle_answer<R: RngCore + CryptoRng>(
        &mut self,
        now: Now,
        answer: Answer,
        rng: &mut R,
    ) -> Result<(), CallerError> {
        if self.phase == Phase::Closing {
            // A late answer after we decided to close: release what it holds.
            self.events.extend(crate::machine::late_answer(answer));
            return Ok(());
        }
        let waiting = std::mem::replace(&mut self.waiting, Waiting::Nothing);
        match (waiting, answer) {
            (Waiting::Key, Answer::Key(k)) => self.key_answer(now, k, rng),
            (Waiting::User, Answer::User(uid)) => {
                self.uid = uid.unwrap_or(UNKNOWN_UID);
                self.ready(now);
            }
            (Waiting::Canon(op), Answer::Canonical(r)) => self.canonical(now, op, r),
            (Waiting::Stat(op), Answer::Stat(r)) => self.stat_answer(now, op, r),
            (Waiting::Open(op), Answer::Opened(r)) => self.opened(now, op, r),
            (
                Waiting::Read(t),
                Answer::Data {
                    bytes,
                    current_size,
                },
            ) => self.data(now, t, bytes, current_size),
            (Waiting::Read(s), Answer::ReadFailed(e)) => self.read_failed(now, s, &e),
            (Waiting::Digest(d), Answer::Digest(mine)) => {
                self.send(Status::Done, transfer::md5_reply(d, mine));
                self.done(now);
            }
            (Waiting::Listing(op), Answer::Listing(r)) => self.listing(now, op, r),
            (Waiting::Exec(w), a) => exec::answer(self, now, w, a)?,
            (w, a) => {
                let want = match &w {
                    Waiting::Nothing => "nothing",
                    Waiting::Key => "Key",
                    Waiting::User => "User",
                    Waiting::Canon(_) => "Canonical",
                    Waiting::Stat(_) => "Stat",
                    Waiting::Open(_) => "Opened",
                    Waiting::Read(_) => "Data",
                    Waiting::Listing(_) => "Listing",
                    Waiting::Digest(_) => "Digest",
                    Waiting::Exec(w) => w.expects(),
                };
                self.waiting = w;
                return Err(CallerError::unexpected(want, &a));
            }
        }
        Ok(())
    }

    // ---- input dispatch -------------------------------------------------

    /// Serve buffered transactions until the machine must wait. Re-entrant
    /// calls (a reply finished synchronously inside a request) return at
    /// once and the outer loop carries on, so pipelined requests never
    /// deepen the stack.
    fn pump(&mut self, now: Now) {
        if self.pumping {
            return;
        }
        self.pumping = true;
        self.pump_loop(now);
        self.pumping = false;
    }

    fn pump_loop(&mut self, now: Now) {
        loop {
            if !matches!(
                self.phase,
                Phase::Unauthenticated
                    | Phase::Modulus
                    | Phase::Exponent
                    | Phase::Response
                    | Phase::SessionKey
                    | Phase::Ready
            ) {
                return;
            }
            let t = match self.decoder.poll() {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => return self.bad_input(&e),
            };
            match self.phase {
                Phase::Unauthenticated => self.pre_auth(&t.payload),
                Phase::Modulus => {
                    self.auth.modulus = t.payload.to_vec();
                    self.phase = Phase::Exponent;
                }
                Phase::Exponent => self.exponent(&t.payload),
                Phase::Response => self.response(&t.payload),
                Phase::SessionKey => self.session_key(now, &t.payload),
                Phase::Ready => {
                    self.deadline = self.cfg.idle_deadline(now);
                    match self.exec.take() {
                        Some(ec) => self.exec = exec::class_data(self, now, ec, &t.payload),
                        None => self.command(now, &t.payload),
                    }
                }
                _ => return,
            }
        }
    }

    // ---- key exchange ---------------------------------------------------

    fn pre_auth(&mut self, payload: &[u8]) {
        self.current = Request::describe(payload);
        if c_str(payload).is_empty() {
            self.log(Level::Warning, "Got NULL transmission, skipping!".into());
            return;
        }
        match request::parse_request(payload, Dialect::Classic) {
            Ok(Request::Cauth { fqdn, user, .. }) => {
                let user = String::from_utf8_lossy(&user).into_owned();
                if user.contains('/') || user.contains('\\') {
                    self.log(
                        Level::Info,
                        format!("Client is sending wrong username: {user}"),
                    );
                    return self.refuse_close();
                }
                self.peer.hostname = String::from_utf8_lossy(&fqdn).to_lowercase();
                self.peer.username = user;
                self.uid = if self.peer.username == "root" {
                    0
                } else {
                    UNKNOWN_UID
                };
                self.auth.cauth_seen = true;
            }
            Ok(Request::Sauth {
                flag,
                clen,
                nlen,
                challenge,
                enterprise,
            }) => {
                if !self.auth.cauth_seen {
                    self.log(
                        Level::Info,
                        "Client is not verified; rejecting connection".into(),
                    );
                    return self.refuse_close();
                }
                if enterprise.is_none() {
                    // [live] 3.21 accepts the 4-field form.
                    self.log(
                        Level::Verbose,
                        "Peer sent only 4 parameters, assuming it is a legacy community client"
                            .into(),
                    );
                }
                if let Err(why) = self.sauth(flag, clen, nlen, &challenge) {
                    self.log(Level::Error, format!("Authentication failure: {why}"));
                    self.auth_failed();
                }
            }
            Err(RequestError::Malformed {
                command: "SAUTH",
                why,
            }) => {
                self.log(Level::Error, format!("Authentication failure: {why}"));
                self.auth_failed();
            }
            Err(RequestError::BadCipherLength {
                command: "SAUTH",
                declared,
                actual,
            }) => {
                self.log(Level::Error, format!("Authentication failure: peer sent only {actual} bytes as challenge but claims to have sent {declared} bytes"));
                self.auth_failed();
            }
            _ => {
                self.log(
                    Level::Info,
                    format!(
                        "REFUSAL due to no RSA authentication (command: {})",
                        self.current
                    ),
                );
                self.refuse_close();
            }
        }
    }

    fn sauth(
        &mut self,
        flag: u8,
        clen: usize,
        nlen: usize,
        challenge: &[u8],
    ) -> Result<(), String> {
        let nonce = if flag == b'y' {
            let plain = crypto::rsa_decrypt(&self.host_key, challenge).map_err(|_| {
                "private decrypt of received challenge failed; probably the client has wrong public key for this server".to_string()
            })?;
            if plain.len() != nlen {
                return Err(format!(
                    "private decrypt of received challenge ({clen} bytes) resulted in {} bytes instead of promised {nlen} bytes",
                    plain.len()
                ));
            }
            plain
        } else {
            if nlen != clen {
                return Err(format!(
                    "peer sent illegal challenge (challenge_len {nlen} != crypt_len {clen})"
                ));
            }
            challenge.to_vec()
        };
        self.auth.flag = flag;
        self.auth.challenge_digest = crypto::digest(&nonce);
        self.phase = Phase::Modulus;
        Ok(())
    }

    fn exponent(&mut self, e: &[u8]) {
        let key = match crypto::public_key_from_mpis(&self.auth.modulus, e) {
            Ok(k) => k,
            Err(err) => {
                self.log(
                    Level::Error,
                    format!("Authentication failure: bad client public key ({err})"),
                );
                return self.auth_failed();
            }
        };
        let id = crate::keys::key_id(&key, crate::keys::DigestKind::Md5).to_string();
        self.log(Level::Verbose, format!("Peer's identity is: {id}"));
        self.peer.key_id = id.clone();
        self.auth.client_key = Some(key.clone());
        self.phase = Phase::KeyCheck;
        self.waiting = Waiting::Key;
        self.events.push_back(Event::LookupKey {
            user: self.peer.username.clone(),
            key_id: id,
            key,
            ip: self.peer.ip.clone(),
        });
    }

    fn key_answer<R: RngCore + CryptoRng>(&mut self, now: Now, k: KeyStatus, rng: &mut R) {
        let Some(key) = self.auth.client_key.clone() else {
            return self.auth_failed();
        };
        if k == KeyStatus::Trusted {
            self.log(
                Level::Verbose,
                format!(
                    "A public key was already known from {}/{} - no trust required",
                    self.peer.hostname, self.peer.ip
                ),
            );
            self.log(
                Level::Verbose,
                format!(
                    "The public key identity was confirmed as {}@{}",
                    self.peer.username, self.peer.hostname
                ),
            );
            self.send(Status::Done, b"OK: key accepted");
        } else if self.policy.trusts_keys_from(&self.peer.ip) {
            self.log(
                Level::Verbose,
                format!(
                    "Host {}/{} was found in the list of hosts to trust",
                    self.peer.hostname, self.peer.ip
                ),
            );
            self.send(Status::Done, b"OK: unknown key was accepted on trust");
            self.log(
                Level::Notice,
                format!("Trusting new key: {}", self.peer.key_id),
            );
            self.events.push_back(Event::SaveKey {
                user: self.peer.username.clone(),
                key_id: self.peer.key_id.clone(),
                key: key.clone(),
                ip: self.peer.ip.clone(),
            });
        } else {
            self.log(
                Level::Verbose,
                "No previous key found, and unable to accept this one on trust".into(),
            );
            self.send(Status::Done, b"BAD: key could not be accepted on trust");
            return self.auth_failed();
        }
        // S2: the digest of the client's challenge.
        let d = self.auth.challenge_digest;
        self.send(Status::Done, &d);
        // S3: our counter-challenge, encrypted to the client's key.
        let counter = crypto::nonce_mpi(rng);
        self.auth.counter_digest = crypto::digest(&counter);
        match crypto::rsa_encrypt(rng, &key, &counter) {
            Ok(c) => self.send(Status::Done, &c),
            Err(e) => {
                self.log(Level::Error, format!("Authentication failure: public encryption of counter-challenge failed ({e})"));
                return self.auth_failed();
            }
        }
        // S4/S5: our key, unless the client said it has it.
        if self.auth.flag != b'y' {
            let (n, e) = crypto::public_key_mpis(&self.host_key.to_public_key());
            self.send(Status::Done, &n);
            self.send(Status::Done, &e);
        }
        self.phase = Phase::Response;
        self.pump(now);
    }

    fn response(&mut self, payload: &[u8]) {
        if payload.len() < DIGEST_LEN || payload[..DIGEST_LEN] != self.auth.counter_digest {
            self.log(
                Level::Error,
                "Authentication failure: counter-challenge response was incorrect".into(),
            );
            return self.auth_failed();
        }
        self.log(
            Level::Verbose,
            format!(
                "Authentication of client {}/{} achieved",
                self.peer.hostname, self.peer.ip
            ),
        );
        self.phase = Phase::SessionKey;
    }

    fn session_key(&mut self, now: Now, payload: &[u8]) {
        if payload.len() > MAX_SESSION_KEY_PAYLOAD {
            self.log(
                Level::Error,
                format!(
                    "Authentication failure: session key received is too long ({} bytes)",
                    payload.len()
                ),
            );
            return self.auth_failed();
        }
        let key = if payload.len() == SESSION_KEY_LEN {
            // 3.21 takes a 16-byte payload as the raw key (old upgrade path).
            payload.to_vec()
        } else {
            match crypto::rsa_decrypt(&self.host_key, payload) {
                Ok(k) => k,
                Err(_) => {
                    self.log(
                        Level::Error,
                        "Authentication failure: private decrypt of session key failed".into(),
                    );
                    return self.auth_failed();
                }
            }
        };
        let Ok(k) = <[u8; SESSION_KEY_LEN]>::try_from(key.as_slice()) else {
            self.log(
                Level::Error,
                format!("Authentication failure: session key decrypts to invalid size, expected {SESSION_KEY_LEN} but got {} bytes", key.len()),
            );
            return self.auth_failed();
        };
        self.cipher = Some(SessionCipher::new(k));
        self.auth.modulus.clear();
        if self.uid == 0 || self.peer.username.is_empty() {
            self.ready(now);
        } else {
            self.phase = Phase::User;
            self.waiting = Waiting::User;
            self.events.push_back(Event::LookupUser {
                user: self.peer.username.clone(),
            });
        }
    }

    fn ready(&mut self, now: Now) {
        self.phase = Phase::Ready;
        self.deadline = self.cfg.idle_deadline(now);
        self.pump(now);
    }

    fn auth_failed(&mut self) {
        self.log(Level::Info, "Auth dialogue error".into());
        self.refuse_close();
    }

    // ---- command loop ---------------------------------------------------

    fn command(&mut self, now: Now, payload: &[u8]) {
        self.current = Request::describe(payload);
        if c_str(payload).is_empty() {
            self.log(Level::Warning, "Got NULL transmission, skipping!".into());
            return;
        }
        let req = match request::parse_request(payload, Dialect::Classic) {
            Ok(r) => r,
            Err(RequestError::BadBufsize(n)) => {
                // Classic accepts 0..=4096 (a 0 only matters for refusals).
                if n == 0 {
                    if let Some(path) = get_path(payload) {
                        return self.path_op(
                            now,
                            PathOp {
                                kind: PathKind::Get { bufsize: 0 },
                                requested: path,
                                encrypted: false,
                            },
                        );
                    }
                }
                self.log(Level::Info, "GET buffer out of bounds".into());
                return self.refuse_close();
            }
            Err(RequestError::BadCipherLength {
                command,
                declared,
                actual,
            }) => {
                self.log(
                    Level::Verbose,
                    format!("Protocol error {command}: declared {declared}, got {actual}"),
                );
                self.refuse();
                // SMD5, SVAR, SCONTEXT and SQUERY keep the connection.
                if matches!(command, "SSYNCH" | "SGET" | "SOPENDIR") {
                    self.close();
                }
                return;
            }
            Err(e) => return self.protocol_error(&e.to_string()),
        };
        match req {
            Request::Version => self.send(Status::Done, &reply::version()),
            Request::Stat { client_time, path } => self.path_op(
                now,
                PathOp {
                    kind: PathKind::Stat { client_time },
                    requested: path,
                    encrypted: false,
                },
            ),
            Request::Get { bufsize, path } => {
                let bufsize = if bufsize >= 4096 { 2048 } else { bufsize };
                self.path_op(
                    now,
                    PathOp {
                        kind: PathKind::Get { bufsize },
                        requested: path,
                        encrypted: false,
                    },
                )
            }
            Request::Opendir { path } => self.path_op(
                now,
                PathOp {
                    kind: PathKind::Opendir,
                    requested: path,
                    encrypted: false,
                },
            ),
            Request::Md5 { path, digest } => self.path_op(
                now,
                PathOp {
                    kind: PathKind::Md5 { digest },
                    requested: path,
                    encrypted: false,
                },
            ),
            Request::Var { name } => self.var(&name, false),
            Request::Context { regex } => {
                let regex = String::from_utf8_lossy(&regex);
                let line = format!("Context access failure on CONTEXT {regex}");
                self.log(Level::Info, line);
                self.refuse_close();
            }
            Request::Query { .. } | Request::Cookie => {
                self.protocol_error("QUERY is only answered by CFEngine Enterprise")
            }
            Request::CallMeBack => {
                self.log(Level::Info, "Decrypt error CALL_ME_BACK".into());
                self.close();
            }
            Request::Exec { args } => {
                let args = String::from_utf8_lossy(&args).into_owned();
                self.events
                    .push_back(crate::machine::received("EXEC", 7, args.as_bytes()));
                exec::start(self, args);
            }
            Request::Encrypted {
                kind,
                blocksize,
                ciphertext,
                ..
            } => self.encrypted(now, kind, blocksize, &ciphertext),
            Request::Cauth { .. } | Request::Sauth { .. } => {
                self.protocol_error("authentication repeated after success")
            }
            Request::Auth | Request::Classes => {
                self.log(Level::Warning, "Unexpected protocol command".into());
                self.protocol_error("obsolete command");
            }
        }
    }

    fn encrypted(&mut self, now: Now, kind: Encrypted, blocksize: Option<i64>, ciphertext: &[u8]) {
        let Some(cipher) = self.cipher.clone() else {
            return self.refuse_close();
        };
        let plain = match cipher.decrypt(ciphertext) {
            Ok(p) => p,
            Err(e) => {
                self.log(
                    Level::Error,
                    format!("Bad decrypt ({} bytes): {e}", ciphertext.len()),
                );
                Vec::new()
            }
        };
        self.current = Request::describe(&plain);
        match kind {
            Encrypted::Synch => {
                if !plain.starts_with(b"SYNCH") {
                    self.log(Level::Info, "No synch".into());
                    return self.refuse();
                }
                match request::parse_request(&plain, Dialect::Classic) {
                    Ok(Request::Stat { client_time, path }) => self.path_op(
                        now,
                        PathOp {
                            kind: PathKind::Stat { client_time },
                            requested: path,
                            encrypted: true,
                        },
                    ),
                    _ => self.protocol_error("malformed SSYNCH plaintext"),
                }
            }
            Encrypted::Get => {
                if plain.get(..3) != Some(b"GET".as_slice()) {
                    self.log(Level::Info, "SGET/GET problem".into());
                    return self.refuse();
                }
                if !(0..=8192).contains(&blocksize.unwrap_or(-1)) {
                    self.log(Level::Info, "SGET bounding error".into());
                    return self.refuse_close();
                }
                let path = c_str(plain.get(13..).unwrap_or(&[])).to_vec();
                self.path_op(
                    now,
                    PathOp {
                        kind: PathKind::SGet,
                        requested: path,
                        encrypted: true,
                    },
                )
            }
            Encrypted::Opendir => {
                if !plain.starts_with(b"OPENDIR") {
                    self.log(Level::Info, "Opendir failed to decrypt".into());
                    return self.refuse();
                }
                match request::parse_request(&plain, Dialect::Classic) {
                    Ok(Request::Opendir { path }) => self.path_op(
                        now,
                        PathOp {
                            kind: PathKind::SOpendir,
                            requested: path,
                            encrypted: true,
                        },
                    ),
                    _ => self.close(),
                }
            }
            Encrypted::Md5 => {
                if !plain.starts_with(b"MD5") {
                    self.log(Level::Info, "MD5 protocol error".into());
                    return self.refuse_close();
                }
                match request::parse_request(&plain, Dialect::Classic) {
                    Ok(Request::Md5 { path, digest }) => self.path_op(
                        now,
                        PathOp {
                            kind: PathKind::Md5 { digest },
                            requested: path,
                            encrypted: true,
                        },
                    ),
                    _ => self.close(),
                }
            }
            Encrypted::Var => {
                if !plain.starts_with(b"VAR") {
                    self.log(Level::Info, "VAR protocol defect".into());
                    return self.refuse_close();
                }
                let name = c_str(&plain).get(4..).unwrap_or(&[]).to_vec();
                self.var(&name, true)
            }
            Encrypted::Context => {
                if !plain.starts_with(b"CONTEXT") {
                    self.log(Level::Info, "CONTEXT protocol defect...".into());
                    return self.refuse_close();
                }
                self.log(
                    Level::Info,
                    format!("Context access failure on {}", self.current),
                );
                self.refuse_close();
            }
            Encrypted::Query => {
                if !plain.starts_with(b"QUERY") {
                    self.log(Level::Info, "QUERY protocol defect".into());
                    return self.refuse_close();
                }
                let name: Vec<u8> = c_str(&plain)
                    .get(6..)
                    .unwrap_or(&[])
                    .split(|&b| b == b' ')
                    .next()
                    .unwrap_or(&[])
                    .to_vec();
                if self.policy.check_literal(&name, &self.peer, true) {
                    self.protocol_error("QUERY is only answered by CFEngine Enterprise");
                } else {
                    self.log(Level::Info, "Query access failure".into());
                    self.refuse_close();
                }
            }
        }
    }

    fn var(&mut self, name: &[u8], encrypted: bool) {
        let name = &name[..name.len().min(255)];
        if !self.policy.check_literal(name, &self.peer, encrypted) {
            self.log(
                Level::Verbose,
                format!(
                    "Host {} denied access to literal '{}'",
                    self.peer.hostname,
                    String::from_utf8_lossy(name)
                ),
            );
            self.log(Level::Info, "Literal access failure".into());
            self.events.push_back(Event::Denied {
                request: "VAR",
                what: String::from_utf8_lossy(name).into_owned(),
                reason: String::new(),
            });
            return self.refuse_close();
        }
        self.log(
            Level::Verbose,
            "Access to server literals is only available in CFEngine Enterprise".into(),
        );
        if encrypted {
            let mut p = reply::NOT_FOUND.to_vec();
            p.push(0);
            self.send_sealed(Status::Done, &p);
        } else {
            self.send(Status::Done, reply::NOT_FOUND);
        }
    }

    // ---- path commands --------------------------------------------------

    fn path_op(&mut self, now: Now, mut op: PathOp) {
        let word = match (&op.kind, op.encrypted) {
            (PathKind::Stat { .. }, false) => "SYNCH",
            (PathKind::Stat { .. }, true) => "SSYNCH",
            (PathKind::Get { .. }, _) => "GET",
            (PathKind::SGet, _) => "SGET",
            (PathKind::Opendir, _) => "OPENDIR",
            (PathKind::SOpendir, _) => "SOPENDIR",
            (PathKind::Md5 { .. }, false) => "MD5",
            (PathKind::Md5 { .. }, true) => "SMD5",
        };
        let line = crate::machine::received(word, 8, &op.requested);
        self.events.push_back(line);
        if op.requested.is_empty() {
            self.log(Level::Verbose, "Empty filename in request, closing".into());
            return self.close();
        }
        if op.requested.first() != Some(&b'/') {
            match self.policy.expand_shortcut(&op.requested, &self.peer) {
                Some(p) if p.len() < frame::MAX_PAYLOAD => op.requested = p,
                Some(_) => {
                    self.log(Level::Verbose, "Expanding filename made it too long".into());
                    return self.close();
                }
                None => {}
            }
        }
        if op.requested.first() != Some(&b'/') || op.requested.contains(&0) {
            return self.unresolved(now, op, "No such file or directory");
        }
        let path = op.requested.clone();
        self.phase = Phase::Busy;
        self.waiting = Waiting::Canon(op);
        self.events.push_back(Event::Canonicalize { path });
    }

    /// The path does not resolve (`realpath` said `err`): denied.
    fn unresolved(&mut self, now: Now, op: PathOp, err: &str) {
        let p = String::from_utf8_lossy(&op.requested);
        let line = format!("Couldn't resolve (realpath: {err}) filename: {p}");
        self.log(Level::Info, line);
        self.deny(now, op);
    }

    fn deny(&mut self, now: Now, op: PathOp) {
        self.log(
            Level::Info,
            format!(
                "Host {} denied access to {}",
                self.peer.hostname,
                String::from_utf8_lossy(&op.requested)
            ),
        );
        let what = match op.kind {
            PathKind::Stat { .. } => "Access control in sync",
            PathKind::Get { .. } | PathKind::Md5 { .. } => "Access denied to get object",
            PathKind::SGet => "Access control error",
            PathKind::Opendir => "DIR access error",
            PathKind::SOpendir => "Access error",
        };
        self.log(Level::Info, what.into());
        self.refuse();
        if op.deny_closes() {
            self.close();
        }
        self.done(now);
    }

    fn canonical(&mut self, now: Now, op: PathOp, r: Result<Canonical, String>) {
        let c = match r {
            Ok(c) => c,
            Err(e) => return self.unresolved(now, op, &e),
        };
        let mut real = c.path;
        if real.len() > 1 && real.last() == Some(&b'/') {
            real.pop();
        }
        self.log(
            Level::Verbose,
            format!(
                "Filename {} is resolved to {}",
                String::from_utf8_lossy(&op.requested),
                String::from_utf8_lossy(&real)
            ),
        );
        // What 3.21.0 passes to AccessControl (server_classic.c): true for
        // SYNCH whatever the variant, and for SOPENDIR/SGET; false for a
        // plain GET and a plain OPENDIR (issue 18 finding 1: a listing under
        // `ifencrypted` is refused in clear text, and the refusal closes);
        // MD5 says which it was.
        let acl_encrypted = match op.kind {
            PathKind::Stat { .. } | PathKind::SOpendir | PathKind::SGet => true,
            PathKind::Get { .. } | PathKind::Opendir => false,
            PathKind::Md5 { .. } => op.encrypted,
        };
        let d = self.policy.check_path(&real, &self.peer, acl_encrypted);
        self.maproot = d.maproot;
        if d.maproot {
            self.log(
                Level::Verbose,
                "Mapping root privileges to access non-root files".into(),
            );
        }
        if !d.allowed {
            if d.needs_encryption {
                self.log(
                    Level::Error,
                    format!(
                        "File {} requires encrypt connection...will not serve",
                        d.rule
                    ),
                );
            }
            self.events.push_back(Event::Denied {
                request: op.label(),
                what: String::from_utf8_lossy(&real).into_owned(),
                reason: d.rule,
            });
            return self.deny(now, op);
        }
        self.log(
            Level::Verbose,
            format!(
                "Host {} granted access to {}",
                self.peer.hostname,
                String::from_utf8_lossy(&op.requested)
            ),
        );
        match op.kind {
            PathKind::Stat { client_time } => {
                let deny = self.policy.deny_bad_clocks();
                if let Some((log, msg)) = transfer::bad_clock(deny, now, client_time) {
                    self.events.push_back(log);
                    self.send(Status::Done, &msg);
                    return self.done(now);
                }
                let last = op
                    .requested
                    .rsplit(|&b| b == b'/')
                    .find(|s| !s.is_empty())
                    .unwrap_or(&[]);
                if last.len() > crate::reply::MAX_NAME + 1 {
                    let msg = format!(
                        "BAD: Filename suspiciously long [{}]",
                        String::from_utf8_lossy(&op.requested)
                    );
                    self.log(Level::Error, msg.clone());
                    self.send(Status::Done, msg.as_bytes());
                    return self.done(now);
                }
                // Classic reports a link as a link (no PreprocessRequestPath),
                // so the request path itself is stat'ed; its target's details
                // are merged only while it still resolves to `real`, the
                // path the ACL approved.
                let path = op.requested.clone();
                self.waiting = Waiting::Stat(op);
                self.events.push_back(Event::StatLink {
                    path,
                    resolved: real,
                });
            }
            PathKind::Get { .. } | PathKind::SGet => {
                self.waiting = Waiting::Open(PathOp {
                    requested: real.clone(),
                    ..op
                });
                self.events.push_back(Event::Open { path: real });
            }
            PathKind::Opendir | PathKind::SOpendir => {
                self.waiting = Waiting::Listing(op);
                self.events.push_back(Event::ListDir { path: real });
            }
            PathKind::Md5 { digest } => {
                self.waiting = Waiting::Digest(digest);
                self.events.push_back(Event::Digest { path: real });
            }
        }
    }

    fn stat_answer(&mut self, now: Now, op: PathOp, r: Result<FileStat, String>) {
        match r {
            Ok(st) => {
                for t in st.reply.encode() {
                    self.send(t.status, &t.payload);
                }
            }
            Err(e) => {
                let (log, msg) = transfer::stat_failed(&op.requested, &e);
                self.events.push_back(log);
                self.send(Status::Done, &msg);
            }
        }
        self.done(now);
    }

    fn listing(&mut self, now: Now, op: PathOp, r: Result<Vec<Vec<u8>>, String>) {
        let sealed = op.kind == PathKind::SOpendir;
        match r {
            Ok(names) => {
                for t in reply::opendir_packets(names.iter().map(|n| n.as_slice())) {
                    if sealed {
                        self.send_sealed(t.status, &t.payload);
                    } else {
                        self.send(t.status, &t.payload);
                    }
                }
            }
            Err(e) => {
                let (log, mut msg) = crate::machine::transfer::opendir_failed(&op.requested, &e);
                self.events.push_back(log);
                if sealed {
                    msg.push(0);
                    self.send_sealed(Status::Done, &msg);
                } else {
                    self.send(Status::Done, &msg);
                }
            }
        }
        self.done(now);
    }

    fn opened(&mut self, now: Now, op: PathOp, r: Result<OpenedFile, String>) {
        let encrypted = op.kind == PathKind::SGet;
        let bufsize = match op.kind {
            PathKind::Get { bufsize } => bufsize,
            _ => 0,
        };
        let f = match r {
            Ok(f) => f,
            Err(e) if self.uid != 0 && !self.maproot && transfer::unstatable(&e) => {
                // 3.21 checks ownership on the failed stat first: refused.
                let logs = transfer::not_owner_logs(&self.peer.username, &op.requested);
                self.events.extend(logs);
                self.refuse();
                return self.transfer_refused(now, encrypted, bufsize, None);
            }
            Err(e) => {
                self.events
                    .push_back(transfer::open_failed(&op.requested, &e));
                return self.transfer_refused(now, encrypted, bufsize, None);
            }
        };
        if !transfer::may_read(self.uid, self.maproot, &f) {
            let logs = transfer::not_owner_logs(&self.peer.username, &op.requested);
            self.events.extend(logs);
            self.refuse();
            let close = Event::Close { handle: f.handle };
            return self.transfer_refused(now, encrypted, bufsize, Some(close));
        }
        if f.is_dir {
            self.events
                .push_back(transfer::directory_read_failed(encrypted));
            self.events.push_back(Event::Close { handle: f.handle });
            return self.done(now);
        }
        let s = Sending {
            t: Transfer::new(&f, op.requested, f.size),
            encrypted,
        };
        if s.t.size0 == 0 {
            if encrypted {
                // 3.21's CfEncryptGetFile sends a CF_DONE transaction of
                // strlen(uninitialised stack) bytes here (seen: 6 bytes);
                // rcf sends the encryption of nothing (SECURITY.md).
                self.send_sealed(Status::Done, b"");
            }
            self.events.push_back(s.t.close());
            return self.done(now);
        }
        self.next_read(now, s);
    }

    /// A `GET` that cannot be served: a sealed `BAD: ` for `SGET`, the raw
    /// refusal block for a plain `GET` (none when it asked for 0 bytes);
    /// then `close` releases the file if one was opened.
    fn transfer_refused(&mut self, now: Now, encrypted: bool, bufsize: u16, close: Option<Event>) {
        if encrypted {
            self.log(Level::Verbose, "Transfer failure".into());
            self.send(Status::Done, reply::FAILED);
        } else if bufsize > 0 {
            self.out
                .push_back(transfer::refusal_block(usize::from(bufsize)));
        }
        self.events.extend(close);
        self.done(now);
    }

    /// Reading the file failed mid-transfer: an `SGET` gets `BAD: `, a
    /// plain `GET` just stops (the client sees a short file).
    fn read_failed(&mut self, now: Now, s: Sending, e: &str) {
        self.log(Level::Error, format!("Read failed in GetFile. (read: {e})"));
        if s.encrypted {
            self.send(Status::Done, reply::FAILED);
        }
        self.events.push_back(s.t.close());
        self.done(now);
    }

    fn next_read(&mut self, now: Now, s: Sending) {
        let step = if s.encrypted { SGET_READ } else { GET_READ };
        match s.t.next_read(step) {
            Some(read) => {
                self.events.push_back(read);
                self.waiting = Waiting::Read(s);
            }
            None => {
                self.events.push_back(s.t.close());
                self.done(now);
            }
        }
    }

    fn data(&mut self, now: Now, mut s: Sending, bytes: Vec<u8>, current_size: u64) {
        let Ok(at) = s.t.accept(&bytes, current_size) else {
            self.log(Level::Verbose, transfer::SOURCE_CHANGED.into());
            if s.encrypted {
                self.send(Status::Done, &s.t.changed_message());
            } else {
                self.out.extend(s.t.change_block());
            }
            self.events.push_back(s.t.close());
            return self.done(now);
        };
        if s.encrypted {
            let cipher = self.cipher.clone();
            let mut off = 0usize;
            for chunk in bytes.chunks(SGET_CHUNK) {
                off += chunk.len();
                let last = at + off as u64 >= s.t.size0;
                if let Some(c) = &cipher {
                    let ct = c.encrypt(chunk);
                    self.send(if last { Status::Done } else { Status::More }, &ct);
                }
            }
        } else {
            self.out.extend(transfer::raw_blocks(&bytes));
        }
        self.served += bytes.len() as u64;
        self.next_read(now, s);
    }

    // ---- replies --------------------------------------------------------

    fn done(&mut self, now: Now) {
        if self.phase == Phase::Closing {
            return;
        }
        self.phase = Phase::Ready;
        self.waiting = Waiting::Nothing;
        self.deadline = self.cfg.idle_deadline(now);
        self.pump(now);
    }

    fn refuse(&mut self) {
        self.send(Status::Done, reply::FAILED);
        let user = if self.peer.username.is_empty() {
            "?"
        } else {
            self.peer.username.as_str()
        };
        let m = format!("REFUSAL to user='{user}' of request: {}", self.current);
        self.log(Level::Verbose, m);
    }

    fn refuse_close(&mut self) {
        self.refuse();
        self.close();
    }

    fn protocol_error(&mut self, why: &str) {
        self.send(Status::Done, reply::REQUEST_DENIED);
        let line = format!(
            "Closing connection due to request: {} ({why})",
            self.current
        );
        self.log(Level::Info, line);
        self.close();
    }

    fn send(&mut self, status: Status, payload: &[u8]) {
        match super::wire::framed(status, payload) {
            Some(v) => self.out.push_back(v),
            None => self.log(
                Level::Error,
                format!("internal: cannot frame a {}-byte reply", payload.len()),
            ),
        }
    }

    fn send_sealed(&mut self, status: Status, plain: &[u8]) {
        if let Some(c) = &self.cipher {
            let ct = c.encrypt(plain);
            self.send(status, &ct);
        }
    }

    fn log(&mut self, level: Level, message: String) {
        self.events.push_back(Event::Log { level, message });
    }

    /// Bytes that cannot be framed end the connection.
    fn bad_input(&mut self, e: &crate::frame::FrameError) {
        self.events.push_back(crate::machine::bad_input(e));
        self.close();
    }

    fn close(&mut self) {
        if self.phase != Phase::Closing {
            self.phase = Phase::Closing;
            match std::mem::replace(&mut self.waiting, Waiting::Nothing) {
                Waiting::Read(s) => self.events.push_back(s.t.close()),
                Waiting::Exec(w) => self.events.extend(w.on_close()),
                _ => {}
            }
        }
    }
}

/// `GET %d %[^\n]` for a bufsize the shared parser rejects (classic takes 0).
fn get_path(payload: &[u8]) -> Option<Vec<u8>> {
    let s = c_str(payload).strip_prefix(b"GET ")?;
    let s = s.strip_prefix(b"0")?;
    let s = s.strip_prefix(b" ")?;
    let p = s.split(|&b| b == b'\n').next()?;
    let start = p.iter().position(|&b| b != b' ')?;
    Some(p[start..].to_vec())
}
