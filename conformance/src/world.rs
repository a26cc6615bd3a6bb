//! The in-memory world for driving a core server session without I/O is
//! `rcf_core::testing` (one world for the core's tests, the fuzz targets
//! and this suite); this module re-exports it with the session helpers the
//! replay and the session tests share.

use std::sync::Arc;

use rcf_core::server::{Level, Now, PolicyView, Session};
pub use rcf_core::testing::keys::PEER_PUB_PEM as TEST_PUB_PEM;
pub use rcf_core::testing::{file_stat, Node, TablePolicy, World};

/// [`TEST_PUB_PEM`] (a real key made by cf-key 3.21) as the TLS layer
/// would hand it to a session.
pub fn test_peer_key() -> rcf_core::server::PeerKey {
    rcf_core::testing::keys::peer_key()
}

/// A session for `ip` presenting [`test_peer_key`] at time `now`.
pub fn session(policy: Arc<dyn PolicyView>, ip: &str, now: Now) -> Session {
    Session::new(
        Default::default(),
        policy,
        ip.to_string(),
        test_peer_key(),
        now,
    )
}

/// Level names in log lines, for assertions.
pub fn level(l: Level) -> &'static str {
    l.as_str()
}
