//! The client role (what cf-agent's `copy_from`, cf-net and bootstrap
//! speak): a [`session::Session`] above TLS, a [`conn::Connection`] that
//! wraps it with the TLS layer and the server-key trust check, and the pure
//! helpers a copy needs ([`listing`]).
//!
//! Like the server role, nothing here touches sockets, files or clocks; the
//! client runtime adapter feeds bytes and time in and drains records and
//! events out, following the run-loop contract of the crate root.

pub mod conn;
pub mod listing;
pub mod session;

pub use crate::machine::{Level, Now};
pub use conn::Connection;
pub use session::{
    ClientError, ClientRequest, Config, Event, GetFailure, Reply, RequestId, RequestRef, Session,
};
