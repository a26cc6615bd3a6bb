//! One accepted TLS connection: the TLS layer below, the [`Session`] above.
//!
//! Ciphertext in ([`Connection::handle_input`]), ciphertext out
//! ([`Connection::poll_transmit`]); everything else is the session's
//! contract. The session only exists once the handshake is done, because it
//! needs the key from the client's certificate.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::tls::{ReadStatus, TlsLayer};

use super::io::{Answer, Event, Level, Now};
use super::session::{CallerError, Config, PeerKey, Session};
use super::view::PolicyView;

/// A server connection from the first TLS byte to the close.
pub struct Connection {
    tls: TlsLayer,
    session: Option<Session>,
    cfg: Config,
    policy: Arc<dyn PolicyView>,
    ip: String,
    /// When the connection was accepted: the handshake deadline runs from
    /// here to WELCOME, across the TLS handshake and identification.
    accepted_ms: u64,
    deadline: u64,
    /// Log lines from before the session existed.
    events: VecDeque<Event>,
    closing: bool,
    plaintext: Vec<u8>,
}

impl Connection {
    /// Wrap a fresh server-side TLS layer for a peer at `ip`.
    ///
    /// The handshake deadline starts now: a peer that sends a ClientHello
    /// and then nothing is dropped by [`poll_timeout`](Connection::poll_timeout).
    pub fn new(
        tls: TlsLayer,
        cfg: Config,
        policy: Arc<dyn PolicyView>,
        ip: String,
        now: Now,
    ) -> Self {
        let deadline = now.mono_ms + cfg.handshake_timeout_ms;
        Connection {
            tls,
            session: None,
            cfg,
            policy,
            ip,
            accepted_ms: now.mono_ms,
            deadline,
            events: VecDeque::new(),
            closing: false,
            plaintext: Vec::new(),
        }
    }

    /// The session, once the handshake is done.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Swap in a reloaded policy for the requests still to come.
    pub fn set_policy(&mut self, policy: Arc<dyn PolicyView>) {
        if let Some(s) = &mut self.session {
            s.set_policy(policy.clone());
        }
        self.policy = policy;
    }

    fn log(&mut self, level: Level, message: String) {
        self.events.push_back(Event::Log { level, message });
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        if self.closing {
            return;
        }
        if let Err(e) = self.tls.handle_input(bytes) {
            self.log(
                Level::Error,
                format!("Failed to accept TLS connection: {e}"),
            );
            self.closing = true;
            return;
        }
        self.after_tls(now);
    }

    /// The socket reached EOF.
    pub fn handle_eof(&mut self, now: Now) {
        let _ = self.tls.handle_eof();
        self.after_tls(now);
        match &mut self.session {
            Some(s) => s.handle_eof(now),
            None if !self.closing => {
                self.log(
                    Level::Verbose,
                    "Peer closed the connection during the TLS handshake".into(),
                );
            }
            None => {}
        }
        self.closing = true;
    }

    fn after_tls(&mut self, now: Now) {
        if self.session.is_none() && !self.tls.is_handshaking() {
            let Some(key) = self.tls.peer_public_key().cloned() else {
                self.log(
                    Level::Error,
                    "Received key of unknown type, only RSA currently supported!".into(),
                );
                self.closing = true;
                return;
            };
            if let Some(n) = self.tls.negotiated() {
                self.log(
                    Level::Verbose,
                    format!(
                        "TLS version negotiated: {:>8}; Cipher: {},{}",
                        n.version, n.cipher, n.version
                    ),
                );
            }
            self.log(
                Level::Verbose,
                "TLS session established, checking trust...".into(),
            );
            // The session's identification deadline counts from accept, not
            // from the end of the handshake: one deadline for the whole way
            // to WELCOME, so a peer slow in both phases cannot double it.
            let start = Now {
                mono_ms: self.accepted_ms,
                unix_s: now.unix_s,
            };
            let s = Session::new(
                self.cfg.clone(),
                self.policy.clone(),
                self.ip.clone(),
                PeerKey::new(key),
                start,
            );
            self.session = Some(s);
        }
        let Some(s) = &mut self.session else { return };
        loop {
            self.plaintext.clear();
            match self.tls.read_plaintext(&mut self.plaintext) {
                Ok(ReadStatus::Data(_)) => s.handle_plaintext(now, &self.plaintext),
                Ok(ReadStatus::NoData) => break,
                Ok(ReadStatus::Eof(_)) => {
                    s.handle_eof(now);
                    break;
                }
                Err(e) => {
                    self.events.push_back(Event::Log {
                        level: Level::Info,
                        message: format!("TLS error: {e}"),
                    });
                    self.closing = true;
                    break;
                }
            }
        }
        self.flush_session();
    }

    /// Queue the session's transactions; several share a TLS record.
    fn flush_session(&mut self) {
        let Some(s) = &mut self.session else { return };
        while let Some(r) = s.poll_record() {
            if let Err(e) = self.tls.queue_unit(&r) {
                self.events.push_back(Event::Log {
                    level: Level::Info,
                    message: format!("TLS send failed: {e}"),
                });
                self.closing = true;
                return;
            }
        }
    }

    /// Plaintext produced but not yet returned by
    /// [`Connection::poll_transmit`]. Answers are cheapest drained in
    /// bursts: an adapter answering back to back should drain once this
    /// passes its write batch (a GET streams with bounded memory), and
    /// always before it waits for input.
    pub fn pending_output(&self) -> usize {
        self.tls.pending_plaintext()
    }

    /// The adapter's answer to the session's outstanding question.
    pub fn handle_answer(&mut self, now: Now, answer: Answer) -> Result<(), CallerError> {
        let Some(s) = &mut self.session else {
            return Err(CallerError::UnexpectedAnswer {
                want: "nothing",
                got: format!("{answer:?}").chars().take(80).collect(),
            });
        };
        s.handle_answer(now, answer)?;
        self.flush_session();
        Ok(())
    }

    /// A deadline passed.
    pub fn handle_timeout(&mut self, now: Now) {
        match &mut self.session {
            Some(s) => s.handle_timeout(now),
            None if now.mono_ms >= self.deadline && !self.closing => {
                self.log(Level::Info, "TLS handshake timed out, closing".into());
                self.closing = true;
            }
            None => {}
        }
    }

    /// When to call [`handle_timeout`](Connection::handle_timeout), in monotonic ms.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closing {
            return None;
        }
        match &self.session {
            Some(s) => s.poll_timeout(),
            None => Some(self.deadline),
        }
    }

    /// Ciphertext to write to the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.flush_session();
        self.tls.poll_transmit()
    }

    /// The next question or log line.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.session.as_mut().and_then(|s| s.poll_event())
    }

    /// Whether the connection is done: close the socket once
    /// [`poll_transmit`](Connection::poll_transmit) returns `None`.
    pub fn is_closing(&self) -> bool {
        self.closing
            || self
                .session
                .as_ref()
                .map(|s| s.is_closing())
                .unwrap_or(false)
    }
}
