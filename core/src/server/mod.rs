//! The server role: one [`session::Session`] per connection, the questions
//! it asks ([`io`]) and the policy it consults ([`view`]).

pub mod admission;
pub mod conn;
pub use crate::machine::exec;
/// The questions and answers, kept here under their old path; they live in
/// the neutral [`crate::machine`] module that the classic server shares.
pub use crate::machine::io;
pub mod policy_view;
pub mod session;
pub mod sniff;
pub mod tofu;
pub mod view;

pub use crate::machine::io::{Answer, Event, KeyStatus};
pub use crate::machine::{CallerError, Level, Now};
pub use conn::Connection;
pub use session::{Config, PeerKey, Session};
pub use view::{Peer, PolicyView, ResourceKind, Verdict};
