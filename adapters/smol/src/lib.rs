//! smol adapter: moves bytes between sockets and rcf-core client sessions.
