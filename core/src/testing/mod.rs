//! A test harness for the protocol machines (cargo feature `testing`, and
//! the core's own tests): one in-memory [`World`] that answers every server
//! question, one [`Machine`] shape over the four machines, and a client↔server
//! [`Pair`] with a virtual clock that jumps to the next `poll_timeout`
//! (after quinn-proto's test `Pair`).
//!
//! Pure like the rest of the core: no I/O, no clock, no global randomness
//! (the world's rng is a seeded ChaCha8).
//!
//! ```
//! use std::sync::Arc;
//! use rcf_core::client::ClientRequest;
//! use rcf_core::testing::{Node, Pair, TablePolicy, World};
//!
//! let mut world = World::default();
//! world.insert("/srv/f", Node::file(b"hello", 0o644, 0));
//! let policy = TablePolicy { paths: vec![(b"/srv".to_vec(), vec!["*".into()])], ..Default::default() };
//! let mut p = Pair::tls(world, Arc::new(policy), Default::default(), Default::default());
//! p.drive();
//! p.client.request(p.now, 1, ClientRequest::Stat { path: b"/srv/f".to_vec(), client_time: p.now.unix_s });
//! p.drive();
//! assert!(p.take_events().iter().any(|e| matches!(e, rcf_core::client::Event::Reply { id: 1, .. })));
//! ```

pub mod keys;
pub mod machine;
pub mod pair;
pub mod world;

pub use machine::{Machine, ServerMachine, TlsClient};
pub use pair::{ClassicPair, Pair, TlsPair};
pub use world::{file_stat, Node, TablePolicy, World};

use crate::server::Now;

/// The deterministic rng of the harness (not for production use).
pub type TestRng = rand_chacha::ChaCha8Rng;

/// A [`TestRng`] seeded with `seed`.
pub fn rng(seed: u64) -> TestRng {
    use rand_chacha::rand_core::SeedableRng;
    TestRng::seed_from_u64(seed)
}

/// Where a [`Pair`]'s virtual clock starts: monotonic 0, 2026-01-01T00:00:00Z
/// (inside the test certificates' validity).
pub const START: Now = Now {
    mono_ms: 0,
    unix_s: 1_767_225_600,
};
