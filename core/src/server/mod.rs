//! The server role: one [`session::Session`] per connection, the questions
//! it asks ([`io`]) and the policy it consults ([`view`]).

pub mod admission;
pub mod conn;
pub mod exec;
pub mod io;
pub mod policy_view;
pub mod session;
pub mod tofu;
pub mod view;

pub use conn::Connection;
pub use io::{Answer, Event, KeyStatus, Level, Now};
pub use session::{Config, PeerKey, Session};
pub use view::{Decision, Peer, PolicyView, Resource};
