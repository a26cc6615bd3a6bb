//! A client and a server machine wired back to back, the [`World`]
//! answering the server, and a virtual clock (after quinn-proto's test
//! `Pair`): [`Pair::drive`] moves bytes and answers until both sides are
//! quiet, [`Pair::advance`] jumps the clock to the earlier of the two
//! `poll_timeout`s and fires both timers.

use std::sync::Arc;

use rsa::RsaPrivateKey;

use crate::classic::{self, ClassicPolicy, ClassicServer};
use crate::client;
use crate::server::{self, Now, PolicyView};
use crate::tls::{client_config, server_config, TlsClock, TlsLayer, TlsSettings};

use super::machine::{Machine, ServerMachine, TlsClient};
use super::world::World;

/// Rounds of [`Pair::drive`] before it calls the exchange a livelock.
const MAX_ROUNDS: usize = 1_000_000;

/// A client machine `C` and a server machine `S` talking to each other.
pub struct Pair<C: Machine, S: ServerMachine> {
    /// The client side.
    pub client: C,
    /// The server side.
    pub server: S,
    /// What answers the server's questions.
    pub world: World,
    /// The virtual clock: moves only by [`advance`](Pair::advance) or
    /// [`set_time`](Pair::set_time), the wall clock in step with it.
    pub now: Now,
    start: Now,
    /// Client events not yet taken.
    pub client_events: Vec<C::Event>,
    /// Every byte the client sent.
    pub client_bytes: Vec<u8>,
    /// Every byte the server sent.
    pub server_bytes: Vec<u8>,
    /// Feed the server the client's bytes in pieces of at most this many
    /// (exercises reassembly); `usize::MAX` feeds each transmit whole.
    pub chunk: usize,
}

/// The TLS client connection against the TLS server connection.
pub type TlsPair = Pair<TlsClient, server::Connection>;
/// The classic client against the classic server.
pub type ClassicPair = Pair<classic::ClassicClient, ClassicServer>;

impl<C: Machine, S: ServerMachine> Pair<C, S> {
    /// Wire `client` to `server` at time `now`. Nothing moves until
    /// [`drive`](Pair::drive).
    pub fn new(client: C, server: S, world: World, now: Now) -> Self {
        Pair {
            client,
            server,
            world,
            now,
            start: now,
            client_events: Vec::new(),
            client_bytes: Vec::new(),
            server_bytes: Vec::new(),
            chunk: usize::MAX,
        }
    }

    /// Move bytes both ways, answer every server question from the world
    /// and collect client events, until neither side has anything left.
    /// Bytes for a side that is closed are dropped, as a socket's would be.
    /// Panics when the world's answer is refused or the sides never settle.
    pub fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            while let Some(b) = self.client.poll_transmit() {
                moved = true;
                self.client_bytes.extend_from_slice(&b);
                for piece in b.chunks(self.chunk.max(1)) {
                    self.server
                        .handle_input(self.now, piece, &mut self.world.rng);
                }
            }
            while let Some(ev) = self.server.poll_event() {
                moved = true;
                if let Some(a) = self.world.answer(&ev) {
                    if let Err(e) = self.server.handle_answer(self.now, a, &mut self.world.rng) {
                        panic!("the world's answer to {ev:?} was refused: {e}");
                    }
                }
            }
            while let Some(b) = self.server.poll_transmit() {
                moved = true;
                self.server_bytes.extend_from_slice(&b);
                if !self.client.is_closed() {
                    self.client.handle_input(self.now, &b, &mut self.world.rng);
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                self.client_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("client and server still talking after {MAX_ROUNDS} rounds");
    }

    /// The earlier of the two machines' deadlines.
    pub fn next_timeout(&self) -> Option<u64> {
        [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Set the virtual clock to `mono_ms` (never backwards); the wall clock
    /// moves by the same amount.
    pub fn set_time(&mut self, mono_ms: u64) {
        let mono_ms = mono_ms.max(self.now.mono_ms);
        self.now = Now {
            mono_ms,
            unix_s: self.start.unix_s + ((mono_ms - self.start.mono_ms) / 1000) as i64,
        };
    }

    /// Set the wall clock to `unix_s` without moving the monotonic clock
    /// (a test whose requests carry a fixed client time).
    pub fn set_wall_clock(&mut self, unix_s: i64) {
        let elapsed = self.now.unix_s - self.start.unix_s;
        self.start.unix_s = unix_s - elapsed;
        self.now.unix_s = unix_s;
    }

    /// Jump to the next deadline, fire both machines' timers and
    /// [`drive`](Pair::drive). Returns the deadline, or `None` (and does
    /// nothing) when neither side has one.
    pub fn advance(&mut self) -> Option<u64> {
        let t = self.next_timeout()?;
        self.set_time(t);
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.drive();
        Some(t)
    }

    /// The client events collected so far, oldest first.
    pub fn take_events(&mut self) -> Vec<C::Event> {
        std::mem::take(&mut self.client_events)
    }
}

impl TlsPair {
    /// A TLS client (host key [`super::keys::client_key`], trusting the
    /// server's key) connecting to a TLS server (key
    /// [`super::keys::server_key`], peer IP 127.0.0.1) under `policy`, at
    /// [`super::START`].
    pub fn tls(
        world: World,
        policy: Arc<dyn PolicyView>,
        server_cfg: server::Config,
        client_cfg: client::Config,
    ) -> TlsPair {
        let now = super::START;
        let clock = TlsClock::new(now.unix_s as u64);
        let (settings, _) = TlsSettings::server_default();
        let stls = TlsLayer::server(
            server_config(&super::keys::server_key(), &settings, &clock)
                .expect("server TLS config"),
        )
        .expect("server TLS layer");
        let ctls = TlsLayer::client(
            client_config(
                &super::keys::client_key(),
                &TlsSettings::client_default(),
                &clock,
            )
            .expect("client TLS config"),
        )
        .expect("client TLS layer");
        let server = server::Connection::new(stls, server_cfg, policy, "127.0.0.1".into(), now);
        let client = TlsClient::new(
            client::Connection::new(ctls, client_cfg, now),
            Some(Ok(())),
            now,
        );
        Pair::new(client, server, world, now)
    }
}

impl ClassicPair {
    /// A classic client configured by `client_cfg` connecting to a classic
    /// server holding `server_key` (peer IP 127.0.0.1) under `policy`, at
    /// [`super::START`]. The client draws its nonce from the world's rng.
    pub fn classic(
        mut world: World,
        policy: Arc<dyn ClassicPolicy>,
        server_cfg: server::Config,
        server_key: Arc<RsaPrivateKey>,
        client_cfg: classic::ClientConfig,
    ) -> ClassicPair {
        let now = super::START;
        let client = classic::ClassicClient::new(client_cfg, now, &mut world.rng)
            .expect("the classic client starts");
        let server = ClassicServer::new(server_cfg, policy, server_key, "127.0.0.1".into(), now);
        Pair::new(client, server, world, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classic::{ClassicDecision, ClassicPeer, ClientEvent};
    use crate::client::{ClientRequest, Event, Reply};
    use crate::testing::{Node, TablePolicy};

    fn world() -> World {
        let mut w = World::default();
        w.insert("/srv", Node::dir(&[".", "..", "f"]));
        w.insert("/srv/f", Node::file(b"hello from the world\n", 0o644, 0));
        w.insert("/secret", Node::file(b"canary", 0o644, 0));
        w.forbidden.push(b"/secret".to_vec());
        w
    }

    fn tls_policy() -> Arc<TablePolicy> {
        Arc::new(TablePolicy {
            paths: vec![(b"/srv".to_vec(), vec!["127.0.0.1".into()])],
            ..Default::default()
        })
    }

    fn replies(ev: &[Event]) -> Vec<(u64, Reply)> {
        ev.iter()
            .filter_map(|e| match e {
                Event::Reply { id, reply } => Some((*id, reply.clone())),
                _ => None,
            })
            .collect()
    }

    /// A TLS pair: handshake, trust, IDENTITY/WELCOME, then STAT and GET
    /// of one file, byte for byte, every handle closed.
    #[test]
    fn tls_pair_identity_stat_get() {
        let mut p = Pair::tls(
            world(),
            tls_policy(),
            Default::default(),
            Default::default(),
        );
        p.drive();
        let ev = p.take_events();
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::VerifyServerKey { .. })),
            "{ev:?}"
        );
        assert!(
            ev.iter().any(|e| matches!(e, Event::Established { .. })),
            "{ev:?}"
        );
        assert!(p.world.logged("Client is TRUSTED"), "{:?}", p.world.logs);
        let now = p.now;
        p.client.request(
            now,
            1,
            ClientRequest::Stat {
                path: b"/srv/f".to_vec(),
                client_time: now.unix_s,
            },
        );
        p.drive();
        let ev = p.take_events();
        let [(1, Reply::Stat(Ok(st)))] = &replies(&ev)[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(st.size, 21);
        p.client.request(
            now,
            2,
            ClientRequest::Get {
                path: b"/srv/f".to_vec(),
                size: st.size,
            },
        );
        p.drive();
        let ev = p.take_events();
        let data: Vec<u8> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Data { id: 2, bytes } => Some(bytes.to_vec()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(data, b"hello from the world\n");
        assert_eq!(replies(&ev), vec![(2, Reply::Get(Ok(())))]);
        assert!(p.world.open.is_empty() && p.world.closed.len() == 1);
        // A denied path is refused without the world being asked about it.
        p.client.request(
            now,
            3,
            ClientRequest::Stat {
                path: b"/secret".to_vec(),
                client_time: now.unix_s,
            },
        );
        p.drive();
        assert!(matches!(
            &replies(&p.take_events())[..],
            [(3, Reply::Stat(Err(_)))]
        ));
    }

    /// The TLS server's handshake deadline, reached by virtual time alone:
    /// a client that never decides whether to trust the server's key
    /// leaves the server waiting for its banner until the pair's clock
    /// jumps to the deadline.
    #[test]
    fn tls_pair_handshake_deadline_by_virtual_time() {
        let cfg = server::Config {
            handshake_timeout_ms: 5_000,
            ..Default::default()
        };
        let mut p = Pair::tls(world(), tls_policy(), cfg, Default::default());
        p.client.trust = None;
        p.drive();
        assert!(!p.server.is_closing());
        assert_eq!(p.next_timeout(), Some(5_000));
        assert_eq!(p.advance(), Some(5_000));
        assert_eq!(p.now.mono_ms, 5_000);
        assert_eq!(p.now.unix_s, crate::testing::START.unix_s + 5);
        assert!(p.server.is_closing(), "{:?}", p.world.logs);
        assert_eq!(p.advance(), None, "nothing is left to time out");
    }

    struct SrvPolicy;
    impl ClassicPolicy for SrvPolicy {
        fn legacy_allowed(&self, _: &str) -> bool {
            true
        }
        fn trusts_keys_from(&self, _: &str) -> bool {
            true
        }
        fn deny_bad_clocks(&self) -> bool {
            true
        }
        fn expand_shortcut(&self, _: &[u8], _: &ClassicPeer) -> Option<Vec<u8>> {
            None
        }
        fn check_path(&self, p: &[u8], _: &ClassicPeer, _: bool) -> ClassicDecision {
            ClassicDecision {
                allowed: p == b"/srv" || p.starts_with(b"/srv/"),
                maproot: false,
                needs_encryption: false,
                rule: "/srv".into(),
            }
        }
        fn check_literal(&self, _: &[u8], _: &ClassicPeer, _: bool) -> bool {
            false
        }
    }

    /// A classic client that trusts a new server key, with a 30 s reply deadline.
    fn classic_client_cfg() -> classic::ClientConfig {
        classic::ClientConfig {
            local_ip: "127.0.0.1".into(),
            fqdn: "client.example".into(),
            user: "root".into(),
            key: Arc::new(crate::testing::keys::client_key()),
            server_key: None,
            trust_server: true,
            timeout_ms: 30_000,
        }
    }

    fn classic_pair(cfg: server::Config) -> ClassicPair {
        let skey = Arc::new(crate::testing::keys::server_key());
        let ccfg = classic_client_cfg();
        let mut p = Pair::classic(world(), Arc::new(SrvPolicy), cfg, skey, ccfg);
        p.chunk = 7;
        p
    }

    /// A server that takes every byte and never says anything.
    struct Silent;
    impl Machine for Silent {
        type Event = server::Event;
        fn handle_input(&mut self, _: Now, _: &[u8], _: &mut crate::testing::TestRng) {}
        fn handle_eof(&mut self, _: Now) {}
        fn poll_transmit(&mut self) -> Option<Vec<u8>> {
            None
        }
        fn poll_event(&mut self) -> Option<server::Event> {
            None
        }
        fn poll_timeout(&self) -> Option<u64> {
            None
        }
        fn handle_timeout(&mut self, _: Now) {}
        fn is_closed(&self) -> bool {
            false
        }
    }
    impl ServerMachine for Silent {
        fn handle_answer(
            &mut self,
            _: Now,
            a: server::Answer,
            _: &mut crate::testing::TestRng,
        ) -> Result<(), String> {
            Err(format!("nothing was asked: {a:?}"))
        }
    }

    /// The classic client's reply deadline lives in the machine: against a
    /// server that never answers its key exchange, virtual time alone
    /// makes it fail with a timeout, 30 s after it started.
    #[test]
    fn classic_client_times_out_on_a_silent_server() {
        let mut w = world();
        let start = crate::testing::START;
        let client = classic::ClassicClient::new(classic_client_cfg(), start, &mut w.rng).unwrap();
        let mut p = Pair::new(client, Silent, w, start);
        p.drive();
        assert!(p.client_bytes.windows(5).any(|w| w == b"CAUTH"));
        assert!(p.take_events().is_empty());
        assert_eq!(p.client.poll_timeout(), Some(start.mono_ms + 30_000));
        let t = p.advance().expect("the client's reply deadline");
        assert_eq!(t, start.mono_ms + 30_000);
        assert_eq!(
            p.take_events(),
            vec![ClientEvent::Failed(classic::ClassicClientError::Timeout(
                30_000
            ))]
        );
        assert!(p.client.is_closed());
        assert_eq!(p.next_timeout(), None, "a failed client keeps no deadline");
    }

    /// Once authenticated and idle the classic client waits on its caller
    /// (no deadline); a request starts one, its reply ends it.
    #[test]
    fn classic_client_deadline_only_while_a_reply_is_due() {
        let mut p = classic_pair(Default::default());
        p.drive();
        assert!(p.client.is_idle());
        assert_eq!(p.client.poll_timeout(), None);
        p.set_time(5_000);
        p.client.stat(p.now, b"/srv/f", false).unwrap();
        assert_eq!(p.client.poll_timeout(), Some(35_000));
        p.drive();
        assert!(matches!(&p.take_events()[..], [_, ClientEvent::Stat(_)]));
        assert_eq!(p.client.poll_timeout(), None);
    }

    /// A classic pair: key exchange (the client's key saved on trust),
    /// then STAT and GET of one file, plain and encrypted.
    #[test]
    fn classic_pair_auth_stat_get() {
        let mut p = classic_pair(Default::default());
        p.drive();
        let ev = p.take_events();
        assert!(
            matches!(
                &ev[..],
                [ClientEvent::Authenticated {
                    newly_trusted: true,
                    ..
                }]
            ),
            "{ev:?}"
        );
        assert!(p.server.is_authenticated());
        for enc in [false, true] {
            p.client.stat(p.now, b"/srv/f", enc).unwrap();
            p.drive();
            let ev = p.take_events();
            let [ClientEvent::Stat(st)] = &ev[..] else {
                panic!("{ev:?}")
            };
            p.client.get(p.now, b"/srv/f", st.size, enc).unwrap();
            p.drive();
            let ev = p.take_events();
            let data: Vec<u8> = ev
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Data(d) => Some(d.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(data, b"hello from the world\n", "enc={enc}");
            assert_eq!(ev.last(), Some(&ClientEvent::FileDone));
        }
        assert!(p.world.open.is_empty() && p.world.closed.len() == 2);
    }

    /// The classic server's idle deadline, reached by virtual time alone.
    #[test]
    fn classic_pair_idle_timeout_by_virtual_time() {
        let cfg = server::Config {
            handshake_timeout_ms: 1_000,
            idle_timeout_ms: 60_000,
            ..Default::default()
        };
        let mut p = classic_pair(cfg);
        p.drive();
        assert!(p.server.is_authenticated() && !p.server.is_closing());
        let t = p.advance().expect("an idle deadline");
        assert_eq!(t, 60_000);
        assert!(p.server.is_closing());
        assert!(
            p.world.logged("Connection timed out during idle, closing"),
            "{:?}",
            p.world.logs
        );
    }
}
