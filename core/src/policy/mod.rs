//! Server policy: the CFEngine 3 policy language subset a server needs, and
//! the access-control engine that answers "may this peer have that?".
//!
//! Everything here is pure: policy text arrives through [`PolicySource`],
//! canonicalisation of path promisers is a question the caller answers, and
//! the loaded [`ServerPolicy`] is an immutable value a server swaps
//! atomically on reload.

pub mod ast;
pub mod parse;

pub use parse::{parse_policy, SyntaxError};
