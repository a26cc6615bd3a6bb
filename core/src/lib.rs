//! rcf-core: the pure heart of rcf, a wire-compatible implementation of
//! CFEngine 3's host-to-host protocol.
//!
//! Nothing in this crate touches sockets, files, clocks, threads or global
//! randomness. Every state machine takes bytes in and hands bytes and events
//! out; the current time and any randomness are arguments. Adapters
//! (the server and client runtime crates under `adapters/`) move bytes between sockets and these machines,
//! answer their file and DNS requests and run their timers.
//!
//! # Run-loop contract
//! After every input (`handle_*`), drain every output (`poll_*`) until it
//! returns `None`, then wait for the next input or for `poll_timeout`.

#![warn(missing_docs)]

pub mod banner;
pub mod bytestr;
pub mod civil;
pub mod classic;
pub mod client;
pub mod frame;
pub mod identity;
pub mod keys;
pub mod lastseen;
pub mod machine;
pub mod policy;
pub mod proxy;
pub mod reply;
pub mod request;
pub mod server;
pub mod tls;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
