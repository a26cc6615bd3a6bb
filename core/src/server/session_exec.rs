//! EXEC on the TLS session (cf-runagent, PROTOCOL.md §8.8): the
//! `cfruncommand` and user checks, the class-selection transactions that
//! follow, and streaming the run's output. A child of [`super`] so it steps
//! the same [`Session`] state; kept apart because it is a protocol of its
//! own inside the command loop.

use crate::frame::{self, Status};
use crate::machine::io::{Canonical, Event};
use crate::machine::{Level, Now};
use crate::reply;

use super::super::exec::{self, TokenKind};
use super::super::view::ResourceKind;
use super::{ExecClasses, Phase, Session, Waiting};

impl Session {
    /// EXEC steps 1-3: a cfruncommand, its program admitted by a path
    /// rule, and an allowed user. Each refusal ends the connection.
    pub(super) fn start_exec(&mut self, args: String) {
        let cmd = self.policy.cfruncommand().to_string();
        let Some(arg0) = exec::split_command(&cmd).into_iter().next() else {
            self.log(Level::Info, "EXEC denied due to empty cfruncommand".into());
            return self.exec_refused();
        };
        if !arg0.starts_with('/') {
            self.log(Level::Info, "EXEC failed, invalid cfruncommand arg0".into());
            return self.exec_refused();
        }
        self.phase = Phase::Busy;
        self.waiting = Waiting::ExecCanon { args };
        self.events.push_back(Event::Canonicalize {
            path: arg0.into_bytes(),
        });
    }

    pub(super) fn exec_arg0(&mut self, now: Now, args: String, r: Result<Canonical, String>) {
        let Ok(c) = r else {
            self.log(Level::Info, "EXEC failed, invalid cfruncommand arg0".into());
            return self.exec_refused();
        };
        if !self.policy.check_path(&c.path, &self.peer).allowed {
            self.log(
                Level::Info,
                format!(
                    "EXEC denied due to ACL for file: {}",
                    String::from_utf8_lossy(&c.path)
                ),
            );
            return self.exec_refused();
        }
        if !self.policy.user_may_exec(&self.peer.username) {
            self.log(
                Level::Info,
                format!(
                    "EXEC denied due to not allowed user: {}",
                    self.peer.username
                ),
            );
            return self.exec_refused();
        }
        // Step 4: cf-runagent's class selection follows as transactions.
        self.exec = Some(ExecClasses {
            args,
            reads: 0,
            matched: false,
        });
        self.phase = Phase::Ready;
        self.waiting = Waiting::Nothing;
        self.serve(now);
    }

    pub(super) fn exec_refused(&mut self) {
        self.refuse();
        self.send(Status::Done, &reply::exec_terminator());
        self.close();
    }

    /// One class-selection transaction. We read up to the terminator (at
    /// most 10 transactions) instead of stopping at the first match as 3.21
    /// does, so no leftover is ever read as a command.
    pub(super) fn exec_class_data(&mut self, now: Now, payload: &[u8]) {
        let Some(mut ec) = self.exec.take() else {
            return;
        };
        ec.reads += 1;
        let text = frame::c_str(payload);
        if text.starts_with(reply::TERMINATOR) {
            if ec.reads == 1 || ec.matched {
                return self.exec_run(now, ec.args);
            }
            return self.exec_no_class(now);
        }
        for name in String::from_utf8_lossy(text)
            .split(' ')
            .filter(|n| !n.is_empty())
        {
            self.log(
                Level::Verbose,
                format!("Checking whether class {name} can be identified as me..."),
            );
            if self.policy.class_defined(name) {
                ec.matched = true;
            }
        }
        if ec.reads >= 10 {
            if ec.matched {
                return self.exec_run(now, ec.args);
            }
            return self.exec_no_class(now);
        }
        self.exec = Some(ec);
    }

    pub(super) fn exec_no_class(&mut self, now: Now) {
        self.log(Level::Verbose, "No classes matched, rejecting....".into());
        let hello = format!(
            "Hello  ({}), nothing relevant to do here...\n\n",
            self.peer.ip
        );
        self.send(Status::Done, hello.as_bytes());
        self.send(
            Status::Done,
            b"EXEC denied due to failed class match (check cf-serverd verbose output)",
        );
        self.send(Status::Done, &reply::exec_terminator());
        self.done(now);
    }

    /// Steps 5-7: authorise `-D`/`-b`, build argv, start the program.
    pub(super) fn exec_run(&mut self, now: Now, args: String) {
        let cmd = self.policy.cfruncommand().to_string();
        let policy = self.policy.clone();
        let peer = self.peer.clone();
        let mut denied_token = None;
        let r = exec::plan(&cmd, &args, |kind, tok| {
            let res = match kind {
                TokenKind::Class => ResourceKind::Role,
                TokenKind::Bundle => ResourceKind::Bundle,
            };
            let ok = policy.check_name(res, tok.as_bytes(), &peer).allowed;
            if !ok {
                denied_token = Some(tok.to_string());
            }
            ok
        });
        match r {
            Ok(p) => {
                let line = format!("cf-serverd executing cfruncommand: {}", p.display);
                self.log(Level::Info, line.clone());
                self.send(Status::Done, format!("{line}\n").as_bytes());
                self.phase = Phase::Busy;
                self.waiting = Waiting::ExecStart;
                self.events.push_back(Event::ExecStart { argv: p.argv });
            }
            Err(e) => {
                if let Some(t) = denied_token {
                    self.log(Level::Info, format!("Access denied to: {t}"));
                } else if let exec::ExecDenial::Role(t) | exec::ExecDenial::Bundle(t) = &e {
                    self.log(Level::Info, format!("llegal character in: {t}"));
                }
                self.log(Level::Info, e.to_string());
                self.send(Status::Done, e.to_string().as_bytes());
                if let exec::ExecDenial::TooLong { .. } = e {
                    self.close();
                    return;
                }
                self.send(Status::Done, &reply::exec_terminator());
                self.done(now);
            }
        }
    }
}
