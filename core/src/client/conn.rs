//! One client TLS connection: the TLS layer below, the [`Session`] above,
//! and the server-key trust check between them.
//!
//! The trust check happens right after the handshake and **before** the
//! banner is read, as libcfnet's `TLSConnect` does (PROTOCOL.md §6.5): the
//! connection emits [`Event::VerifyServerKey`] and reads no plaintext until
//! [`Connection::handle_trust`] answers. A refused key ends the connection
//! with a `close_notify`; the server then logs "Client closed connection
//! early! He probably does not trust our key...".

use std::collections::VecDeque;

use crate::tls::{ReadStatus, TlsLayer};

use super::session::{ClientError, ClientRequest, Config, Event, RequestId, RequestRef, Session};
use super::{Level, Now};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trust {
    Handshaking,
    Asking,
    Trusted,
    Refused,
}

/// A client connection from the ClientHello to the close.
pub struct Connection {
    tls: TlsLayer,
    session: Session,
    trust: Trust,
    events: VecDeque<Event>,
    plaintext: Vec<u8>,
    deadline: u64,
    timeout_ms: u64,
    closing: bool,
}

impl Connection {
    /// Wrap a fresh client-side TLS layer (its ClientHello is already
    /// waiting in [`poll_transmit`](Connection::poll_transmit)). The
    /// handshake must finish within `cfg.timeout_ms`.
    pub fn new(tls: TlsLayer, cfg: Config, now: Now) -> Self {
        let timeout_ms = cfg.timeout_ms;
        Connection {
            tls,
            session: Session::new(cfg, now),
            trust: Trust::Handshaking,
            events: VecDeque::new(),
            plaintext: Vec::new(),
            deadline: now.mono_ms + timeout_ms,
            timeout_ms,
            closing: false,
        }
    }

    /// The session (version, counters).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Queue a request (sent once the server welcomed us).
    pub fn request(&mut self, now: Now, id: RequestId, req: ClientRequest) {
        self.session.request(now, id, req);
    }

    /// See [`Session::request_uses_now`].
    pub fn request_uses_now(&self) -> bool {
        self.session.request_uses_now()
    }

    /// Queue a borrowed request (see [`Session::request_ref`]).
    pub fn request_ref(&mut self, now: Now, id: RequestId, req: RequestRef<'_>) {
        self.session.request_ref(now, id, req);
    }

    /// Whether the driver should read from the socket now (TLS back-pressure).
    pub fn wants_input(&self) -> bool {
        !self.closing && self.trust != Trust::Asking && self.tls.wants_input()
    }

    /// Bytes read from the socket.
    pub fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        if self.closing {
            return;
        }
        if let Err(e) = self.tls.handle_input(bytes) {
            let msg = if self.tls.is_handshaking() {
                format!("Failed to establish TLS connection: {e}")
            } else {
                format!("TLS error: {e}")
            };
            self.fail(msg);
            return;
        }
        self.after_tls(now);
    }

    /// The socket reached EOF.
    pub fn handle_eof(&mut self, now: Now) {
        if self.closing {
            return;
        }
        if let Err(e) = self.tls.handle_eof() {
            self.fail(format!("Failed to establish TLS connection: {e}"));
            return;
        }
        self.after_tls(now);
        if self.trust == Trust::Trusted && !self.session.is_closed() {
            self.session.handle_eof(now);
        }
    }

    fn fail(&mut self, msg: String) {
        self.session.abort(ClientError::Transport(msg));
        self.closing = true;
    }

    fn after_tls(&mut self, now: Now) {
        if self.trust == Trust::Handshaking && !self.tls.is_handshaking() {
            let Some(key) = self.tls.peer_public_key().cloned() else {
                self.fail("Received key of unknown type, only RSA currently supported!".into());
                return;
            };
            if let Some(n) = self.tls.negotiated() {
                self.events.push_back(Event::Log {
                    level: Level::Verbose,
                    message: n.to_string(),
                });
            }
            let key_id = crate::keys::key_id(&key, crate::keys::DigestKind::Md5).to_string();
            self.events
                .push_back(Event::VerifyServerKey { key_id, key });
            self.trust = Trust::Asking;
            return;
        }
        if self.trust != Trust::Trusted {
            return;
        }
        loop {
            self.plaintext.clear();
            match self.tls.read_plaintext(&mut self.plaintext) {
                Ok(ReadStatus::Data(_)) => self.session.handle_plaintext(now, &self.plaintext),
                Ok(ReadStatus::NoData) => break,
                Ok(ReadStatus::Eof(_)) => {
                    self.session.handle_eof(now);
                    break;
                }
                Err(e) => {
                    self.fail(format!("TLS error: {e}"));
                    break;
                }
            }
        }
    }

    /// The answer to [`Event::VerifyServerKey`]: `Ok` to go on, `Err(message)`
    /// (e.g. `TRUST FAILED, server presented untrusted key: MD5=…`) to close.
    pub fn handle_trust(&mut self, now: Now, verdict: Result<(), String>) {
        if self.trust != Trust::Asking {
            return;
        }
        match verdict {
            Ok(()) => {
                self.trust = Trust::Trusted;
                self.after_tls(now);
            }
            Err(msg) => {
                self.trust = Trust::Refused;
                self.session.abort(ClientError::Transport(msg));
                self.close();
            }
        }
    }

    /// A deadline passed.
    pub fn handle_timeout(&mut self, now: Now) {
        match self.trust {
            Trust::Handshaking if now.mono_ms >= self.deadline && !self.closing => {
                self.fail(format!(
                    "Timeout during the TLS handshake ({} ms)",
                    self.timeout_ms
                ));
            }
            Trust::Trusted => self.session.handle_timeout(now),
            _ => {}
        }
    }

    /// When to call [`handle_timeout`](Connection::handle_timeout), monotonic ms.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        if self.closing {
            return None;
        }
        match self.trust {
            Trust::Handshaking => Some(self.deadline),
            Trust::Trusted => self.session.poll_timeout(),
            _ => None,
        }
    }

    /// Send `close_notify` (what cf-agent does when it disconnects); drain
    /// [`poll_transmit`](Connection::poll_transmit) before closing the socket.
    pub fn close(&mut self) {
        if !self.closing {
            self.flush_session();
            self.tls.send_close_notify();
            self.closing = true;
        }
    }

    fn flush_session(&mut self) {
        // The banner and IDENTITY lines go out one record each (3.21
        // mishandles both lines in one record); requests share records.
        while let Some(line) = self.session.poll_line() {
            if let Err(e) = self.tls.send_plaintext(&line) {
                self.fail(format!("TLS send failed: {e}"));
                return;
            }
        }
        let tls = &mut self.tls;
        if let Err(e) = self.session.drain_transactions(|t| tls.queue_unit(t)) {
            self.fail(format!("TLS send failed: {e}"));
        }
    }

    /// Ciphertext to write to the socket.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if !self.closing {
            self.flush_session();
        }
        self.tls.poll_transmit()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.session.poll_event()
    }

    /// Whether [`poll_event`](Connection::poll_event) has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty() || self.session.has_events()
    }

    /// Whether the connection is finished (error, refusal, EOF or
    /// [`close`](Connection::close)): stop once `poll_transmit` is drained.
    pub fn is_closed(&self) -> bool {
        self.closing || self.session.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_keys::{test_key, TEST_NOW};
    use crate::tls::{client_config, server_config, TlsClock, TlsSettings};

    fn now() -> Now {
        Now {
            mono_ms: 0,
            unix_s: TEST_NOW as i64,
        }
    }

    fn pair() -> (Connection, TlsLayer) {
        let clock = TlsClock::new(TEST_NOW);
        let (ss, _) = TlsSettings::server_default();
        let server = TlsLayer::server(server_config(test_key(0), &ss, &clock).unwrap()).unwrap();
        let client = TlsLayer::client(
            client_config(test_key(1), &TlsSettings::client_default(), &clock).unwrap(),
        )
        .unwrap();
        (Connection::new(client, Config::default(), now()), server)
    }

    /// Move bytes both ways; the server queues its banner as soon as its
    /// side of the handshake is done, as cf-serverd does.
    fn pump(c: &mut Connection, s: &mut TlsLayer, banner: &mut bool) {
        for _ in 0..20 {
            let mut moved = false;
            while let Some(b) = c.poll_transmit() {
                moved = true;
                s.handle_input(&b).unwrap();
            }
            if !*banner && !s.is_handshaking() {
                s.send_plaintext(b"CFE_v3 cf-serverd 3.21.0\n").unwrap();
                *banner = true;
            }
            while let Some(b) = s.poll_transmit() {
                moved = true;
                c.handle_input(now(), &b);
            }
            if !moved {
                break;
            }
        }
    }

    fn server_records(s: &mut TlsLayer) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        loop {
            let mut r = Vec::new();
            match s.read_record(&mut r).unwrap() {
                ReadStatus::Data(_) => v.push(r),
                _ => return v,
            }
        }
    }

    /// Identification lines go out one record each; pipelined requests
    /// after WELCOME share records, never splitting a transaction, with
    /// every request there in order.
    #[test]
    fn pipelined_requests_share_records_whole() {
        let (mut c, mut s) = pair();
        let mut banner = false;
        pump(&mut c, &mut s, &mut banner);
        c.handle_trust(now(), Ok(()));
        pump(&mut c, &mut s, &mut banner);
        assert_eq!(server_records(&mut s).len(), 2);
        s.send_plaintext(b"OK WELCOME USERNAME=root\n").unwrap();
        pump(&mut c, &mut s, &mut banner);
        // 400 STATs of ~100 bytes: ~40 KB, so at least three records.
        let path = |i: u64| {
            format!("/var/cfengine/masterfiles/some/dir/file-{i:04}.cf-with-a-long-name")
                .into_bytes()
        };
        for i in 0..400 {
            c.request(
                now(),
                i,
                ClientRequest::Stat {
                    path: path(i),
                    client_time: 0,
                },
            );
        }
        pump(&mut c, &mut s, &mut banner);
        let recs = server_records(&mut s);
        assert!(
            recs.len() >= 3 && recs.len() < 400,
            "{} records",
            recs.len()
        );
        let mut got = Vec::new();
        for r in &recs {
            assert!(r.len() <= crate::tls::MAX_RECORD_PLAINTEXT);
            // Each record holds whole transactions only.
            let mut d = crate::frame::Decoder::new();
            d.push(r).unwrap();
            while let Some(t) = d.poll().unwrap() {
                got.push(t.payload.to_vec());
            }
            assert_eq!(d.buffered(), 0, "a transaction was split across records");
        }
        assert_eq!(got.len(), 400);
        for (i, p) in got.iter().enumerate() {
            assert!(
                p.ends_with(&path(i as u64)),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }

    #[test]
    fn trust_is_decided_before_the_banner_is_read() {
        let (mut c, mut s) = pair();
        let mut banner = false;
        pump(&mut c, &mut s, &mut banner);
        assert!(banner);
        let ev: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        let want_id =
            crate::keys::key_id(&test_key(0).to_public_key(), crate::keys::DigestKind::Md5)
                .to_string();
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::VerifyServerKey { key_id, .. } if *key_id == want_id)),
            "{ev:?}"
        );
        // Nothing was answered to the banner yet.
        pump(&mut c, &mut s, &mut banner);
        assert!(server_records(&mut s).is_empty());
        c.handle_trust(now(), Ok(()));
        pump(&mut c, &mut s, &mut banner);
        // Version line and IDENTITY: two separate TLS records.
        assert_eq!(
            server_records(&mut s),
            vec![
                b"CFE_v3 cf-agent 3.21.0\n".to_vec(),
                b"IDENTITY USERNAME=root\n".to_vec()
            ]
        );
        s.send_plaintext(b"OK WELCOME USERNAME=root\n").unwrap();
        pump(&mut c, &mut s, &mut banner);
        let ev: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(
            ev.contains(&Event::Established {
                version: crate::banner::ProtocolVersion::Cookie
            }),
            "{ev:?}"
        );
        // A request now goes out as one framed record.
        c.request(
            now(),
            7,
            ClientRequest::Opendir {
                path: b"/d".to_vec(),
            },
        );
        pump(&mut c, &mut s, &mut banner);
        assert_eq!(
            server_records(&mut s),
            vec![b"t 10\0\0\0\0OPENDIR /d".to_vec()]
        );
        // A server EOF (without close_notify, as cf-serverd closes) while
        // the OPENDIR is unanswered fails the session.
        c.handle_eof(now());
        let ev: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        assert!(
            ev.contains(&Event::Failed(ClientError::HungUp(1))),
            "{ev:?}"
        );
    }

    #[test]
    fn refused_key_closes_with_close_notify_and_reads_nothing() {
        let (mut c, mut s) = pair();
        let mut banner = false;
        pump(&mut c, &mut s, &mut banner);
        let _: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        c.handle_trust(
            now(),
            Err("TRUST FAILED, server presented untrusted key: MD5=x".into()),
        );
        assert!(c.is_closed());
        let ev: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(
            ev,
            vec![Event::Failed(ClientError::Transport(
                "TRUST FAILED, server presented untrusted key: MD5=x".into()
            ))]
        );
        let out: Vec<u8> = std::iter::from_fn(|| c.poll_transmit()).flatten().collect();
        s.handle_input(&out).unwrap();
        let mut r = Vec::new();
        assert!(matches!(
            s.read_record(&mut r),
            Ok(ReadStatus::Eof(crate::tls::EofKind::CloseNotify))
        ));
        assert!(r.is_empty(), "no version line was sent");
    }
}
