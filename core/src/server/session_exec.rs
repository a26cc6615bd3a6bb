//! EXEC on the TLS session (cf-runagent, PROTOCOL.md §8.8): what the
//! session lends the shared steps of [`crate::machine::exec`] (the classic
//! server lends the same). A child of [`super`] so it reaches the
//! [`Session`] state.

use crate::frame::Status;
use crate::machine::exec::{ExecClasses, ExecHost, ExecWait, TokenKind};
use crate::machine::io::Event;
use crate::machine::{Level, Now};

use super::super::view::ResourceKind;
use super::{Phase, Session, Waiting};

impl ExecHost for Session {
    fn exec_command(&self) -> String {
        self.policy.cfruncommand().to_string()
    }

    fn exec_path_allowed(&self, path: &[u8]) -> bool {
        self.policy.check_path(path, &self.peer).allowed
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
