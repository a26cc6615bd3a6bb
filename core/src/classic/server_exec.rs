//! EXEC on a classic connection: what the classic server lends the shared
//! steps of [`crate::machine::exec`], the same steps the TLS session takes
//! (3.21 runs one `DoExec2` for both). A child of [`super`] so it reaches
//! the [`ClassicServer`] state. Replies go out plain, as 3.21 sends them.

use crate::machine::exec::{ExecHost, TokenKind};

use super::{ClassicServer, Phase, Waiting};

impl ExecHost for ClassicServer {
    fn exec_path_allowed(&self, path: &[u8]) -> bool {
        self.policy.exec_path_allowed(path, &self.peer)
    }

    fn exec_token_allowed(&self, kind: TokenKind, token: &str) -> bool {
        self.policy.exec_token_allowed(kind, token, &self.peer)
    }

    /// The host name the client claimed in `CAUTH` (3.21's `conn->hostname`).
    fn exec_hello(&self) -> (String, String) {
        (self.peer.hostname.clone(), self.peer.ip.clone())
    }

    fn exec_current(&self) -> String {
        self.current.clone()
    }

    crate::machine::exec::exec_host_plumbing!();
}
