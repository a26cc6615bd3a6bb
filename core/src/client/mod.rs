//! The client role (what cf-agent's `copy_from`, cf-net and bootstrap
//! speak): a [`session::Session`] above TLS, a [`conn::Connection`] that
//! wraps it with the TLS layer and the server-key trust check, and the pure
//! helpers a copy needs ([`listing`], the `copy_from` rules in [`copy_plan`] and [`links`],
//! the trust wording in [`trust_words`]).
//!
//! Like the server role, nothing here touches sockets, files or clocks; the
//! client runtime adapter feeds bytes and time in and drains records and
//! events out, following the run-loop contract of the crate root.

pub mod conn;
pub mod copy_plan;
pub mod links;
pub mod listing;
pub mod mpf_update;
pub mod select;
pub mod session;
pub mod trust_words;

pub use crate::machine::{Level, Now};
pub use conn::Connection;
pub use session::{
    ClientError, ClientRequest, Config, Event, GetFailure, Reply, RequestId, RequestRef, Session,
};
