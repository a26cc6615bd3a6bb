//! A buffered, I/O-free TLS connection for the session state machines.
//!
//! # Run-loop contract
//! * Bytes read from the socket go to [`TlsLayer::handle_input`]; a read of
//!   zero bytes (TCP EOF) goes to [`TlsLayer::handle_eof`].
//! * After every call, drain [`TlsLayer::poll_transmit`] until `None` and
//!   write the bytes to the socket, **also after an error** (the error may
//!   have queued a fatal alert for the peer); then close on error.
//! * Read plaintext with [`TlsLayer::read_plaintext`] or
//!   [`TlsLayer::read_record`]. Only read from the socket while
//!   [`TlsLayer::wants_input`] is true: that is the back-pressure that keeps
//!   buffered plaintext bounded (rustls stops taking ciphertext once it
//!   holds 16 KiB of unread plaintext, so at most that plus what one
//!   `read_tls` decrypts, under 32 KiB, is buffered; we hold at most
//!   [`MAX_PENDING_INPUT`] bytes of ciphertext it could not take yet, and a
//!   driver that feeds more gets [`TlsError::InputOverflow`]).
//!
//! # Records
//! CFEngine's C receiver reads a transaction header and its payload with a
//! single `SSL_read` each, i.e. from one TLS record (PROTOCOL.md §3.2).
//! [`TlsLayer::send_plaintext`] therefore turns each call into exactly one
//! record when it is ≤ 16 KiB (more: consecutive 16 KiB records), and
//! [`TlsLayer::read_record`] hands out received plaintext one record at a
//! time for receivers that want to emulate the C rules.
//!
//! # Randomness
//! rustls and aws-lc draw from the operating system's RNG internally for
//! ClientHello/ServerHello randoms, ephemeral (EC)DH key shares, RSA-PSS
//! salts and RSA blinding. That cannot be injected through rustls' API and
//! is the only randomness this layer uses.

use std::io::{BufRead, ErrorKind, Write};
use std::sync::Arc;

use rsa::RsaPublicKey;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::cert::rsa_public_key_from_cert;
use super::error::{from_rustls, PeerError, TlsError};
use super::settings::openssl_name;

/// Ciphertext we keep for rustls while its plaintext buffer is full. A
/// driver honouring [`TlsLayer::wants_input`] stays far below this.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Largest plaintext rustls puts in one record.
pub const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// The fatal `handshake_failure` alert a server with unusable settings
/// answers every ClientHello with, as a plaintext TLS 1.2-framed record.
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// What [`TlsLayer::read_plaintext`] / [`TlsLayer::read_record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// This many bytes were appended to the output.
    Data(usize),
    /// Nothing buffered now; feed more input.
    NoData,
    /// The peer ended the stream; no more plaintext will come.
    Eof(EofKind),
}

/// How the peer ended the stream. Neither is an error: a 3.21 cf-serverd
/// always closes TCP without `close_notify` (PROTOCOL.md §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EofKind {
    /// The peer sent a TLS `close_notify` alert.
    CloseNotify,
    /// TCP was closed without `close_notify` (what cf-serverd does).
    WithoutCloseNotify,
}

/// Version and suite of an established connection, named as OpenSSL names
/// them, for `TLS version negotiated: %8s; Cipher: %s,%s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: &'static str,
    /// e.g. `TLS_AES_256_GCM_SHA384` or `ECDHE-RSA-AES256-GCM-SHA384`.
    pub cipher: &'static str,
}

impl std::fmt::Display for Negotiated {
    /// CFEngine's verbose line, byte for byte: `TLS version negotiated: %8s;
    /// Cipher: %s,%s` (the second `%s` is the suite's protocol version, the
    /// same as the connection's for every suite rustls implements).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TLS version negotiated: {:>8}; Cipher: {},{}",
            self.version, self.cipher, self.version
        )
    }
}

/// A server's TLS context: a rustls configuration, or, when the settings
/// leave nothing usable, a refusal given to every client.
#[derive(Debug, Clone)]
pub enum ServerTls {
    /// Handshakes proceed with this configuration.
    Ready(Arc<ServerConfig>),
    /// Every handshake is answered with a `handshake_failure` alert; the
    /// string says why (names the setting), for the one start-up warning
    /// and the per-connection error.
    Refusing(String),
}

impl ServerTls {
    /// Builds the context. Unusable settings are not an error (the server
    /// must keep listening); only a host key rustls cannot use is.
    pub fn new(
        key: &rsa::RsaPrivateKey,
        settings: &super::TlsSettings,
        clock: &super::TlsClock,
    ) -> Result<ServerTls, TlsError> {
        if let Some(why) = settings.unusable_reason() {
            // Still check the key, so a broken key is not hidden by a bad setting.
            super::cert::make_certificate(key, clock.get())?;
            return Ok(ServerTls::Refusing(why.to_string()));
        }
        Ok(ServerTls::Ready(super::server_config(
            key, settings, clock,
        )?))
    }

    /// A fresh server-side layer for one accepted connection.
    pub fn accept(&self) -> Result<TlsLayer, TlsError> {
        match self {
            ServerTls::Ready(cfg) => TlsLayer::server(cfg.clone()),
            ServerTls::Refusing(why) => Ok(TlsLayer::refusing(why.clone())),
        }
    }
}

enum Inner {
    Active(Box<Connection>),
    /// Unusable settings: answer the first bytes with an alert, then stop.
    Refusing {
        why: String,
        alert: Option<Vec<u8>>,
    },
}

/// One TLS connection, driven by byte buffers only (see module docs).
pub struct TlsLayer {
    inner: Inner,
    /// Ciphertext received but not yet accepted by rustls.
    pending_in: Vec<u8>,
    /// TCP EOF seen by the driver.
    eof: bool,
    /// TCP EOF already passed to rustls.
    eof_delivered: bool,
    /// The layer failed; everything but `poll_transmit` returns `Closed`.
    failed: bool,
    peer_key: Option<RsaPublicKey>,
    peer_cert: Option<Vec<u8>>,
    /// Whole units ([`TlsLayer::queue_unit`]) not yet sealed into a record.
    unsealed: Vec<u8>,
    /// Plaintext handed to rustls since the last `poll_transmit`.
    sealed: usize,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.is_handshaking())
            .field("pending_in", &self.pending_in.len())
            .field("eof", &self.eof)
            .field("failed", &self.failed)
            .finish()
    }
}

impl TlsLayer {
    /// Server side of a new connection.
    pub fn server(config: Arc<ServerConfig>) -> Result<TlsLayer, TlsError> {
        let conn = ServerConnection::new(config).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self::with(Inner::Active(Box::new(conn.into()))))
    }

    /// Client side of a new connection; the ClientHello is ready in
    /// [`TlsLayer::poll_transmit`] at once. No SNI is sent; the name is a
    /// placeholder our verifier ignores.
    pub fn client(config: Arc<ClientConfig>) -> Result<TlsLayer, TlsError> {
        let name = ServerName::try_from("cfengine.invalid")
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let conn =
            ClientConnection::new(config, name).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(Self::with(Inner::Active(Box::new(conn.into()))))
    }

    /// A server-side layer that refuses the handshake (unusable settings).
    pub fn refusing(why: String) -> TlsLayer {
        Self::with(Inner::Refusing { why, alert: None })
    }

    fn with(inner: Inner) -> TlsLayer {
        let mut layer = TlsLayer {
            inner,
            pending_in: Vec::new(),
            eof: false,
            eof_delivered: false,
            failed: false,
            peer_key: None,
            peer_cert: None,
            unsealed: Vec::new(),
            sealed: 0,
        };
        if let Inner::Active(c) = &mut layer.inner {
            // Never split a write into several records because of a buffer
            // limit (that would break the one-record-per-transaction rule);
            // outgoing data is bounded by our own state machines instead.
            c.set_buffer_limit(None);
        }
        layer
    }

    /// Feeds bytes read from the socket. On `Err`, drain
    /// [`TlsLayer::poll_transmit`] (it may hold a fatal alert), then close.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::Closed);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Refusing { why, alert } => {
                if alert.is_none() {
                    *alert = Some(HANDSHAKE_FAILURE_ALERT.to_vec());
                }
                self.failed = true;
                return Err(TlsError::Unusable(why.clone()));
            }
            Inner::Active(_) => {}
        }
        if self.pending_in.len() + bytes.len() > MAX_PENDING_INPUT {
            self.failed = true;
            return Err(TlsError::InputOverflow(self.pending_in.len() + bytes.len()));
        }
        self.pending_in.extend_from_slice(bytes);
        self.pump()
    }

    /// The socket reached EOF (a zero-byte read). Before the handshake
    /// completed this is [`PeerError::EofDuringHandshake`]; afterwards it is
    /// reported by the read functions as [`ReadStatus::Eof`].
    pub fn handle_eof(&mut self) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::Closed);
        }
        self.eof = true;
        if let Inner::Refusing { .. } = self.inner {
            self.failed = true;
            return Err(TlsError::Peer(PeerError::EofDuringHandshake));
        }
        self.pump()
    }

    /// Moves pending ciphertext into rustls as far as its plaintext buffer
    /// allows, and the EOF once everything before it was processed.
    fn pump(&mut self) -> Result<(), TlsError> {
        let Inner::Active(conn) = &mut self.inner else {
            return Ok(());
        };
        // rustls takes a few KiB per `read_tls`; consume by offset and
        // compact once, rather than shifting the rest after every call.
        let mut used = 0;
        let mut result = Ok(());
        while used < self.pending_in.len() {
            let mut rd: &[u8] = &self.pending_in[used..];
            let n = match conn.read_tls(&mut rd) {
                Ok(n) => n,
                // rustls' plaintext or message buffer is full: wait for the
                // caller to read plaintext.
                Err(e) if e.kind() == ErrorKind::Other => break,
                Err(e) => {
                    self.failed = true;
                    result = Err(TlsError::Peer(PeerError::Protocol(e.to_string())));
                    break;
                }
            };
            used += n;
            if let Err(e) = conn.process_new_packets() {
                self.failed = true;
                result = Err(from_rustls(e));
                break;
            }
            if n == 0 {
                break;
            }
        }
        self.pending_in.drain(..used);
        result?;
        if self.eof && !self.eof_delivered && self.pending_in.is_empty() {
            self.eof_delivered = true;
            let mut empty: &[u8] = &[];
            let _ = conn.read_tls(&mut empty);
            if let Err(e) = conn.process_new_packets() {
                self.failed = true;
                return Err(from_rustls(e));
            }
            if conn.is_handshaking() {
                self.failed = true;
                return Err(TlsError::Peer(PeerError::EofDuringHandshake));
            }
        }
        if self.peer_key.is_none() && !conn.is_handshaking() {
            if let Some(cert) = conn.peer_certificates().and_then(|c| c.first()) {
                // The verifier accepted only certificates with an RSA key.
                self.peer_key = rsa_public_key_from_cert(cert.as_ref()).ok();
                self.peer_cert = Some(cert.as_ref().to_vec());
            }
        }
        Ok(())
    }

    /// Bytes to write to the socket, if any. Call until `None`.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        // A failure here is already recorded (`failed`); what rustls holds
        // (an alert, say) still goes out.
        let _ = self.seal();
        self.sealed = 0;
        match &mut self.inner {
            Inner::Refusing { alert, .. } => alert.take(),
            Inner::Active(conn) => {
                if !conn.wants_write() {
                    return None;
                }
                let mut out = Vec::new();
                while conn.wants_write() {
                    match conn.write_tls(&mut out) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                (!out.is_empty()).then_some(out)
            }
        }
    }

    /// True until the handshake completed (also while refusing).
    pub fn is_handshaking(&self) -> bool {
        match &self.inner {
            Inner::Active(c) => c.is_handshaking(),
            Inner::Refusing { .. } => true,
        }
    }

    /// Whether the driver should read more from the socket now (see the
    /// module's back-pressure rule).
    pub fn wants_input(&self) -> bool {
        if self.failed || self.eof || !self.pending_in.is_empty() {
            return false;
        }
        match &self.inner {
            Inner::Active(c) => c.wants_read(),
            Inner::Refusing { alert, .. } => alert.is_none(),
        }
    }

    /// Appends all buffered plaintext (across record boundaries) to `out`.
    pub fn read_plaintext(&mut self, out: &mut Vec<u8>) -> Result<ReadStatus, TlsError> {
        let mut total = 0;
        loop {
            match self.read_record(out)? {
                ReadStatus::Data(n) => total += n,
                other if total == 0 => return Ok(other),
                _ => return Ok(ReadStatus::Data(total)),
            }
        }
    }

    /// Appends the plaintext of (the rest of) one received TLS record to
    /// `out`; never crosses into the next record. Lets a receiver apply
    /// CFEngine's "one `SSL_read` = at most one record" rules.
    pub fn read_record(&mut self, out: &mut Vec<u8>) -> Result<ReadStatus, TlsError> {
        if self.failed {
            return Err(TlsError::Closed);
        }
        let Inner::Active(conn) = &mut self.inner else {
            return Ok(ReadStatus::NoData);
        };
        let mut reader = conn.reader();
        let status = match reader.fill_buf() {
            Ok([]) => ReadStatus::Eof(EofKind::CloseNotify),
            Ok(chunk) => {
                let n = chunk.len();
                out.extend_from_slice(chunk);
                reader.consume(n);
                ReadStatus::Data(n)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => ReadStatus::NoData,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                ReadStatus::Eof(EofKind::WithoutCloseNotify)
            }
            Err(e) => {
                self.failed = true;
                return Err(TlsError::Peer(PeerError::Protocol(e.to_string())));
            }
        };
        if let ReadStatus::Data(_) = status {
            // Room freed in rustls' buffer: take more of the pending ciphertext.
            self.pump()?;
        }
        Ok(status)
    }

    /// Queues `data` as application data: one TLS record when
    /// `data.len() <= 16 KiB`, else consecutive 16 KiB records. Written
    /// before the handshake ends, it is held and sent, still one record per
    /// call, once the handshake completes. Empty data sends nothing.
    pub fn send_plaintext(&mut self, data: &[u8]) -> Result<(), TlsError> {
        // Queued units go first, in their own record.
        self.seal()?;
        self.write_record(data)
    }

    /// Queue one unit (a framed transaction, a raw GET block) that must not
    /// be split across TLS records; units share records of up to
    /// [`MAX_RECORD_PLAINTEXT`] bytes. 3.21 reads a record's transactions
    /// one `SSL_read` at a time, so only a split unit breaks it, and sealing
    /// each unit on its own cost a visible share of every request. Queued
    /// units go out at the next `poll_transmit` or `send_plaintext`.
    pub fn queue_unit(&mut self, unit: &[u8]) -> Result<(), TlsError> {
        if self.unsealed.len() + unit.len() > MAX_RECORD_PLAINTEXT {
            self.seal()?;
        }
        self.unsealed.extend_from_slice(unit);
        Ok(())
    }

    /// Plaintext queued or handed to rustls since the last `poll_transmit`:
    /// a driver answering back to back drains once this passes its batch.
    pub fn pending_plaintext(&self) -> usize {
        self.unsealed.len() + self.sealed
    }

    /// The queued units as one record.
    fn seal(&mut self) -> Result<(), TlsError> {
        if self.unsealed.is_empty() {
            return Ok(());
        }
        let units = std::mem::take(&mut self.unsealed);
        let r = self.write_record(&units);
        // Keep the allocation for the next batch.
        self.unsealed = units;
        self.unsealed.clear();
        r
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), TlsError> {
        if self.failed {
            return Err(TlsError::Closed);
        }
        let Inner::Active(conn) = &mut self.inner else {
            return Err(TlsError::Closed);
        };
        if data.is_empty() {
            return Ok(());
        }
        // With no buffer limit (set in `with`), rustls accepts the whole
        // buffer in one call and fragments only at 16 KiB.
        conn.writer().write_all(data).map_err(|_| {
            self.failed = true;
            TlsError::Closed
        })?;
        self.sealed += data.len();
        Ok(())
    }

    /// Queues a `close_notify` alert (cf-agent sends one; cf-serverd never does).
    pub fn send_close_notify(&mut self) {
        // After what was queued before it.
        let _ = self.seal();
        if let Inner::Active(conn) = &mut self.inner {
            conn.send_close_notify();
        }
    }

    /// The peer's RSA public key, once the handshake completed. Trust is the
    /// caller's decision (ppkeys, `trustkeysfrom`, `trustkey`).
    pub fn peer_public_key(&self) -> Option<&RsaPublicKey> {
        self.peer_key.as_ref()
    }

    /// DER of the certificate the peer presented (for logs and tests: a
    /// CFEngine peer's is X.509 v1, serial 0, `CN=a`).
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.peer_cert.as_deref()
    }

    /// Version and suite, once the handshake completed.
    pub fn negotiated(&self) -> Option<Negotiated> {
        let Inner::Active(conn) = &self.inner else {
            return None;
        };
        if conn.is_handshaking() {
            return None;
        }
        let version = match conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "unknown",
        };
        let cipher = openssl_name(conn.negotiated_cipher_suite()?);
        Some(Negotiated { version, cipher })
    }
}
