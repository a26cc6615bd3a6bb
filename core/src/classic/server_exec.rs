//! EXEC on a classic connection: what the classic server lends the shared
//! steps of [`crate::machine::exec`], the same steps the TLS session takes
//! (3.21 runs one `DoExec2` for both). A child of [`super`] so it reaches
//! the [`ClassicServer`] state. Replies go out plain, as 3.21 sends them.

use crate::frame::Status;
use crate::machine::exec::{ExecClasses, ExecHost, ExecWait, TokenKind};
use crate::machine::io::Event;
use crate::machine::{Level, Now};

use super::{ClassicServer, Phase, Waiting};

impl ExecHost for ClassicServer {
    fn exec_command(&self) -> String {
        self.policy.cfruncommand().to_string()
    }

    fn exec_path_allowed(&self, path: &[u8]) -> bool {
        self.policy.exec_path_allowed(path, &self.peer)
    }

    fn exec_user(&self) -> String {
        self.peer.username.clone()
    }

    fn exec_user_allowed(&self) -> bool {
        self.policy.user_may_exec(&self.peer.username)
    }

    fn exec_class_defined(&self, name: &str) -> bool {
        self.policy.class_defined(name)
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

    fn exec_log(&mut self, level: Level, message: String) {
        self.log(level, message);
    }

    fn exec_send(&mut self, payload: &[u8]) {
        self.send(Status::Done, payload);
    }

    fn exec_refuse(&mut self) {
        self.refuse();
    }

    fn exec_close(&mut self) {
        self.close();
    }

    fn exec_done(&mut self, now: Now) {
        self.done(now);
    }

    fn exec_wait(&mut self, wait: ExecWait, event: Event) {
        self.phase = Phase::Busy;
        self.waiting = Waiting::Exec(wait);
        self.events.push_back(event);
    }

    fn exec_select(&mut self, now: Now, classes: ExecClasses) {
        self.exec = Some(classes);
        self.done(now);
    }
}
