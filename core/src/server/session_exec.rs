//! EXEC on the TLS session (cf-runagent, PROTOCOL.md §8.8): what the
//! session lends the shared steps of [`crate::machine::exec`] (the classic
//! server lends the same). A child of [`super`] so it reaches the
//! [`Session`] state.

use crate::machine::exec::{ExecHost, TokenKind};

use super::super::view::ResourceKind;
use super::{Phase, Session, Waiting};

impl ExecHost for Session {
    fn exec_path_allowed(&self, path: &[u8]) -> bool {
        self.policy.check_path(path, &self.peer).allowed
    }

    fn exec_token_allowed(&self, kind: TokenKind, token: &str) -> bool {
        let res = match kind {
            TokenKind::Class => ResourceKind::Role,
            TokenKind::Bundle => ResourceKind::Bundle,
        };
        self.policy
            .check_name(res, token.as_bytes(), &self.peer)
            .allowed
    }

    /// 3.21's TLS connection has no host name here: `Hello  (<ip>)`.
    fn exec_hello(&self) -> (String, String) {
        (String::new(), self.peer.ip.clone())
    }

    fn exec_current(&self) -> String {
        self.current().into_owned()
    }

    crate::machine::exec::exec_host_plumbing!();
}
