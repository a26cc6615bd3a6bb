//! One shape over the four protocol machines, so a [`super::Pair`] and
//! [`super::World::drive`] can run any of them: feed bytes, drain
//! transmits and events, `poll_timeout`/`handle_timeout`.
//!
//! The machines share their shape (time as `Now`, randomness as an
//! argument where it is drawn, peer errors as events); what is left to
//! absorb here is the TLS client's trust verdict, answered by
//! [`TlsClient`], and which machines take an rng at all.

use std::ops::{Deref, DerefMut};

use crate::classic::{ClassicClient, ClassicServer, ClientEvent};
use crate::client;
use crate::server::{self, Answer, Event, Now};

use super::TestRng;

/// A protocol machine as a test drives it.
pub trait Machine {
    /// What it reports to its driver.
    type Event;
    /// Bytes from the peer (ciphertext for TLS machines, plaintext for a
    /// bare session). `rng` is for machines that draw randomness.
    fn handle_input(&mut self, now: Now, bytes: &[u8], rng: &mut TestRng);
    /// The peer closed its side.
    fn handle_eof(&mut self, now: Now);
    /// The next bytes for the peer.
    fn poll_transmit(&mut self) -> Option<Vec<u8>>;
    /// The next event for the driver.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When [`handle_timeout`](Machine::handle_timeout) is due, monotonic ms.
    fn poll_timeout(&self) -> Option<u64>;
    /// A deadline may have passed.
    fn handle_timeout(&mut self, now: Now);
    /// Whether the machine is finished (drain `poll_transmit`, then close).
    fn is_closed(&self) -> bool;
}

/// A server machine: its events are the questions a [`super::World`] answers.
pub trait ServerMachine: Machine<Event = Event> {
    /// The answer to the outstanding question; `Err` when it does not fit.
    fn handle_answer(&mut self, now: Now, answer: Answer, rng: &mut TestRng) -> Result<(), String>;
}

/// The TLS server connection.
impl Machine for server::Connection {
    type Event = Event;
    fn handle_input(&mut self, now: Now, bytes: &[u8], _rng: &mut TestRng) {
        server::Connection::handle_input(self, now, bytes)
    }
    fn handle_eof(&mut self, now: Now) {
        server::Connection::handle_eof(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        server::Connection::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        server::Connection::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        server::Connection::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Now) {
        server::Connection::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        self.is_closing()
    }
}

impl ServerMachine for server::Connection {
    fn handle_answer(
        &mut self,
        now: Now,
        answer: Answer,
        _rng: &mut TestRng,
    ) -> Result<(), String> {
        server::Connection::handle_answer(self, now, answer).map_err(|e| e.to_string())
    }
}

/// The TLS server session on its own (plaintext records in and out).
impl Machine for server::Session {
    type Event = Event;
    fn handle_input(&mut self, now: Now, bytes: &[u8], _rng: &mut TestRng) {
        self.handle_plaintext(now, bytes)
    }
    fn handle_eof(&mut self, now: Now) {
        server::Session::handle_eof(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.poll_record()
    }
    fn poll_event(&mut self) -> Option<Event> {
        server::Session::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        server::Session::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Now) {
        server::Session::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        self.is_closing()
    }
}

impl ServerMachine for server::Session {
    fn handle_answer(
        &mut self,
        now: Now,
        answer: Answer,
        _rng: &mut TestRng,
    ) -> Result<(), String> {
        server::Session::handle_answer(self, now, answer).map_err(|e| e.to_string())
    }
}

/// The classic server.
impl Machine for ClassicServer {
    type Event = Event;
    fn handle_input(&mut self, now: Now, bytes: &[u8], _rng: &mut TestRng) {
        ClassicServer::handle_input(self, now, bytes)
    }
    fn handle_eof(&mut self, now: Now) {
        ClassicServer::handle_eof(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        ClassicServer::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<Event> {
        ClassicServer::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        ClassicServer::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Now) {
        ClassicServer::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        self.is_closing()
    }
}

impl ServerMachine for ClassicServer {
    fn handle_answer(&mut self, now: Now, answer: Answer, rng: &mut TestRng) -> Result<(), String> {
        ClassicServer::handle_answer(self, now, answer, rng).map_err(|e| e.to_string())
    }
}

/// The TLS client connection, answering its own server-key trust question
/// with a fixed verdict (the event is still reported).
pub struct TlsClient {
    /// The connection.
    pub conn: client::Connection,
    /// The verdict for [`client::Event::VerifyServerKey`]; `None` leaves
    /// the question unanswered (a client stalled before its banner).
    pub trust: Option<Result<(), String>>,
    now: Now,
}

impl TlsClient {
    /// Wrap `conn`; it trusts the server's key when `trust` is `Some(Ok)`.
    pub fn new(conn: client::Connection, trust: Option<Result<(), String>>, now: Now) -> Self {
        TlsClient { conn, trust, now }
    }
}

impl Deref for TlsClient {
    type Target = client::Connection;
    fn deref(&self) -> &client::Connection {
        &self.conn
    }
}

impl DerefMut for TlsClient {
    fn deref_mut(&mut self) -> &mut client::Connection {
        &mut self.conn
    }
}

impl Machine for TlsClient {
    type Event = client::Event;
    fn handle_input(&mut self, now: Now, bytes: &[u8], _rng: &mut TestRng) {
        self.now = now;
        self.conn.handle_input(now, bytes)
    }
    fn handle_eof(&mut self, now: Now) {
        self.now = now;
        self.conn.handle_eof(now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.conn.poll_transmit()
    }
    fn poll_event(&mut self) -> Option<client::Event> {
        let ev = self.conn.poll_event()?;
        if matches!(ev, client::Event::VerifyServerKey { .. }) {
            if let Some(verdict) = self.trust.clone() {
                self.conn.handle_trust(self.now, verdict);
            }
        }
        Some(ev)
    }
    fn poll_timeout(&self) -> Option<u64> {
        self.conn.poll_timeout()
    }
    fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        self.conn.handle_timeout(now)
    }
    fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }
}

/// The classic client.
impl Machine for ClassicClient {
    type Event = ClientEvent;
    fn handle_input(&mut self, now: Now, bytes: &[u8], rng: &mut TestRng) {
        ClassicClient::handle_input(self, now, bytes, rng)
    }
    fn handle_eof(&mut self, now: Now) {
        ClassicClient::handle_eof(self, now)
    }
    fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        ClassicClient::poll_transmit(self)
    }
    fn poll_event(&mut self) -> Option<ClientEvent> {
        ClassicClient::poll_event(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        ClassicClient::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Now) {
        ClassicClient::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        ClassicClient::is_closed(self)
    }
}
