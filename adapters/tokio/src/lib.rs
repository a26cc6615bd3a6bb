//! tokio adapter: moves bytes between sockets and rcf-core server sessions.
