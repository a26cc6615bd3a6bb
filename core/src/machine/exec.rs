//! EXEC (cf-runagent): deciding what, if anything, to run (SEMANTICS.md D.8).
//!
//! Correct by construction: the argv handed to the adapter is the words of
//! `cfruncommand` (split once, by CFEngine's quote rules, without a shell)
//! followed by `-D <list>` and `--bundlesequence <list>` whose lists are
//! joined from tokens that each matched `[A-Za-z0-9_:]+` and were
//! authorised. No client byte is ever re-split or passed to a shell.

use crate::machine::io::{Answer, Canonical, Event, ExecChunk};
use crate::machine::{CallerError, Level, Now};
use crate::reply;

/// Longest command line 3.21 will run (`len >= CF_BUFSIZE` is refused).
pub const MAX_COMMAND: usize = 4095;

/// Split a command line as CFEngine's `ArgSplitCommand` does: words are
/// separated by whitespace; a word starting with `"`, `'` or `` ` `` runs to
/// the matching quote (or to the end of the string when unterminated, which
/// the masterfiles rely on), quotes removed.
pub fn split_command(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = cmd.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' || first == '\'' || first == '`' {
            chars.next();
            for c in chars.by_ref() {
                if c == first {
                    break;
                }
                word.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    out
}

/// Why an EXEC request was refused after the class check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecDenial {
    /// A `-D` class is malformed or not granted by a `roles` promise.
    #[error("EXEC denied role activation (check cf-serverd verbose output)")]
    Role(String),
    /// A `-b` bundle is malformed or not granted by a `bundle` access rule.
    #[error("EXEC denied bundle activation (check cf-serverd verbose output)")]
    Bundle(String),
    /// Something other than `-D`/`-b` lists was given.
    #[error("EXEC denied: invalid arguments: {0}")]
    InvalidArguments(String),
    /// The resulting command line is too long; the connection closes.
    #[error("EXEC denied: too long ({len} B) command: {cmd}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The command.
        cmd: String,
    },
}

/// Which list a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `-D`: a class for the remote agent.
    Class,
    /// `-b`: a bundle for `--bundlesequence`.
    Bundle,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPlan {
    /// The program and its arguments, exactly.
    pub argv: Vec<String>,
    /// The command as 3.21 prints it in `cf-serverd executing cfruncommand: …`.
    pub display: String,
}

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// Decide on an EXEC request's arguments.
///
/// `args` is the text after `EXEC`; `authorize(kind, token)` answers the
/// roles (classes, by username) and bundle (by peer) ACLs. Returns the
/// plan, or the denial to send. Every token is checked before anything
/// is authorised, so a malformed list never reaches the ACL.
pub fn plan(
    cfruncommand: &str,
    args: &str,
    mut authorize: impl FnMut(TokenKind, &str) -> bool,
) -> Result<ExecPlan, ExecDenial> {
    let mut classes: Vec<String> = Vec::new();
    let mut bundles: Vec<String> = Vec::new();
    let words: Vec<&str> = args.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let (kind, list) = if let Some(rest) = w.strip_prefix("-D") {
            (TokenKind::Class, rest)
        } else if let Some(rest) = w.strip_prefix("-b") {
            (TokenKind::Bundle, rest)
        } else {
            return Err(ExecDenial::InvalidArguments(words[i..].join(" ")));
        };
        let list = if list.is_empty() {
            i += 1;
            match words.get(i) {
                Some(l) => *l,
                None => return Err(ExecDenial::InvalidArguments(w.to_string())),
            }
        } else {
            list
        };
        for t in list.split(',') {
            let deny = |t: &str| match kind {
                TokenKind::Class => ExecDenial::Role(t.to_string()),
                TokenKind::Bundle => ExecDenial::Bundle(t.to_string()),
            };
            if !valid_token(t) {
                return Err(deny(t));
            }
            match kind {
                TokenKind::Class => classes.push(t.to_string()),
                TokenKind::Bundle => bundles.push(t.to_string()),
            }
        }
        i += 1;
    }
    for c in &classes {
        if !authorize(TokenKind::Class, c) {
            return Err(ExecDenial::Role(c.clone()));
        }
    }
    for b in &bundles {
        if !authorize(TokenKind::Bundle, b) {
            return Err(ExecDenial::Bundle(b.clone()));
        }
    }
    let mut argv = split_command(cfruncommand);
    let mut display = cfruncommand.to_string();
    if !classes.is_empty() {
        let l = classes.join(",");
        display.push_str(&format!(" -D {l}"));
        argv.push("-D".into());
        argv.push(l);
    }
    if !bundles.is_empty() {
        let l = bundles.join(",");
        display.push_str(&format!(" --bundlesequence {l}"));
        argv.push("--bundlesequence".into());
        argv.push(l);
    }
    if display.len() > MAX_COMMAND {
        return Err(ExecDenial::TooLong {
            len: display.len(),
            cmd: display,
        });
    }
    Ok(ExecPlan { argv, display })
}

// ---- the EXEC steps both servers take ------------------------------------
//
// 3.21 runs the same `DoExec2` for a TLS and a classic connection; so do
// we: the TLS session and the classic server each lend an [`ExecHost`]
// (their policy questions and their reply primitives) and the functions
// below take the steps (PROTOCOL.md §8.8, SEMANTICS.md D.8).

/// What an EXEC waits for from the adapter.
#[derive(Debug)]
pub enum ExecWait {
    /// The canonical path of cfruncommand's program; `args` is the request.
    Canon {
        /// The text after `EXEC`.
        args: String,
    },
    /// [`Answer::ExecStarted`].
    Start,
    /// The next [`Answer::ExecOutput`] of this run.
    Read {
        /// The adapter's handle of the run.
        handle: u64,
    },
}

/// An admitted EXEC reading cf-runagent's class-selection transactions
/// (`cf-runagent -s`), before it runs.
#[derive(Debug)]
pub struct ExecClasses {
    args: String,
    reads: u8,
    matched: bool,
}

/// What a server connection lends the shared EXEC steps: the policy's
/// answers for its peer, and its own way of replying and waiting. Both the
/// TLS session and the classic server implement it; the steps themselves
/// live only here.
pub trait ExecHost {
    /// `body server control` `cfruncommand` (empty: EXEC is refused).
    fn exec_command(&self) -> String;
    /// The `paths` access rule admits the program at this canonical path
    /// for the peer (3.21 checks `paths_acl` whatever the protocol).
    fn exec_path_allowed(&self, path: &[u8]) -> bool;
    /// The peer's user name (claimed in TLS `IDENTITY` or classic `CAUTH`).
    fn exec_user(&self) -> String;
    /// `allowusers` names the peer's user.
    fn exec_user_allowed(&self) -> bool;
    /// The class is defined on this server (a name or a regex over them).
    fn exec_class_defined(&self, name: &str) -> bool;
    /// The `roles` (`-D`) or `bundle` (`-b`) access rule grants this token.
    fn exec_token_allowed(&self, kind: TokenKind, token: &str) -> bool;
    /// `Hello <host> (<ip>)` of the no-class reply: the host name 3.21
    /// knows for the connection (empty over TLS) and the IP.
    fn exec_hello(&self) -> (String, String);
    /// The request being served, for the `Unable to run` line.
    fn exec_current(&self) -> String;
    /// Log a line.
    fn exec_log(&mut self, level: Level, message: String);
    /// Send one plain `CF_DONE` transaction.
    fn exec_send(&mut self, payload: &[u8]);
    /// 3.21's `RefuseAccess`: the refusal reply and its log line.
    fn exec_refuse(&mut self);
    /// End the connection once the queued replies are out.
    fn exec_close(&mut self);
    /// The EXEC is over: back to the command loop.
    fn exec_done(&mut self, now: Now);
    /// Wait for the adapter to answer `event`.
    fn exec_wait(&mut self, wait: ExecWait, event: Event);
    /// Keep waiting as before (no new event): the adapter answered
    /// something else, which is the caller's error, not the peer's.
    fn exec_keep(&mut self, wait: ExecWait);
    /// Keep `classes` and read the class-selection transactions next (each
    /// goes to [`class_data`]), carrying on with buffered input; called
    /// from an answer, never from inside the input loop.
    fn exec_select(&mut self, now: Now, classes: ExecClasses);
}

/// The part of [`ExecHost`] that is the same for both servers, given the
/// names they share: `log`, `send`, `refuse`, `close`, `done` methods;
/// `policy` (with `cfruncommand`, `user_may_exec`, `class_defined`),
/// `peer.username`, `phase` (`Phase::Busy`), `waiting` (`Waiting::Exec`),
/// `events` and `exec` fields, resolved where the macro is used.
macro_rules! exec_host_plumbing {
    () => {
        fn exec_command(&self) -> String {
            self.policy.cfruncommand().to_string()
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

        fn exec_log(&mut self, level: $crate::machine::Level, message: String) {
            self.log(level, message);
        }

        fn exec_send(&mut self, payload: &[u8]) {
            self.send($crate::frame::Status::Done, payload);
        }

        fn exec_refuse(&mut self) {
            self.refuse();
        }

        fn exec_close(&mut self) {
            self.close();
        }

        fn exec_done(&mut self, now: $crate::machine::Now) {
            self.done(now);
        }

        fn exec_wait(
            &mut self,
            wait: $crate::machine::exec::ExecWait,
            event: $crate::machine::io::Event,
        ) {
            self.phase = Phase::Busy;
            self.waiting = Waiting::Exec(wait);
            self.events.push_back(event);
        }

        fn exec_keep(&mut self, wait: $crate::machine::exec::ExecWait) {
            self.waiting = Waiting::Exec(wait);
        }

        fn exec_select(
            &mut self,
            now: $crate::machine::Now,
            classes: $crate::machine::exec::ExecClasses,
        ) {
            self.exec = Some(classes);
            self.done(now);
        }
    };
}
pub(crate) use exec_host_plumbing;

/// A refusal before the run: `RefuseAccess`, the terminator the command
/// loop always sends after `DoExec2`, and the connection ends.
fn refused<H: ExecHost>(h: &mut H, why: &str) {
    h.exec_log(Level::Info, why.to_string());
    h.exec_refuse();
    h.exec_send(&reply::exec_terminator());
    h.exec_close();
}

/// EXEC steps 0-1: a cfruncommand whose program is an absolute path;
/// then the adapter canonicalises it.
pub fn start<H: ExecHost>(h: &mut H, args: String) {
    let cmd = h.exec_command();
    let Some(arg0) = split_command(&cmd).into_iter().next() else {
        return refused(h, "EXEC denied due to empty cfruncommand");
    };
    if !arg0.starts_with('/') {
        return refused(h, "EXEC failed, invalid cfruncommand arg0");
    }
    h.exec_wait(
        ExecWait::Canon { args },
        Event::Canonicalize {
            path: arg0.into_bytes(),
        },
    );
}

/// Steps 1-2 with the canonical program: its path rule, then
/// `allowusers`. Each refusal ends the connection; then the class
/// selection follows as transactions.
pub fn arg0<H: ExecHost>(h: &mut H, now: Now, args: String, r: Result<Canonical, String>) {
    let Ok(c) = r else {
        return refused(h, "EXEC failed, invalid cfruncommand arg0");
    };
    if !h.exec_path_allowed(&c.path) {
        let why = format!(
            "EXEC denied due to ACL for file: {}",
            String::from_utf8_lossy(&c.path)
        );
        return refused(h, &why);
    }
    if !h.exec_user_allowed() {
        let why = format!("EXEC denied due to not allowed user: {}", h.exec_user());
        return refused(h, &why);
    }
    h.exec_select(
        now,
        ExecClasses {
            args,
            reads: 0,
            matched: false,
        },
    );
}

/// Step 3, one class-selection transaction. We read up to the terminator
/// (at most 10 transactions) instead of stopping at the first match as
/// 3.21 does, so no leftover is ever read as a command. Returns the
/// selection when more transactions are to come (the caller keeps it).
#[must_use]
pub fn class_data<H: ExecHost>(
    h: &mut H,
    now: Now,
    mut ec: ExecClasses,
    payload: &[u8],
) -> Option<ExecClasses> {
    ec.reads += 1;
    let text = crate::frame::c_str(payload);
    if text.starts_with(reply::TERMINATOR) {
        if ec.reads == 1 || ec.matched {
            run(h, now, ec.args);
        } else {
            no_class(h, now);
        }
        return None;
    }
    for name in String::from_utf8_lossy(text)
        .split(' ')
        .filter(|n| !n.is_empty())
    {
        h.exec_log(
            Level::Verbose,
            format!("Checking whether class {name} can be identified as me..."),
        );
        if h.exec_class_defined(name) {
            ec.matched = true;
        }
    }
    if ec.reads >= 10 {
        if ec.matched {
            run(h, now, ec.args);
        } else {
            no_class(h, now);
        }
        return None;
    }
    Some(ec)
}

fn no_class<H: ExecHost>(h: &mut H, now: Now) {
    h.exec_log(Level::Verbose, "No classes matched, rejecting....".into());
    let (host, ip) = h.exec_hello();
    let hello = format!("Hello {host} ({ip}), nothing relevant to do here...\n\n");
    h.exec_send(hello.as_bytes());
    h.exec_send(b"EXEC denied due to failed class match (check cf-serverd verbose output)");
    h.exec_send(&reply::exec_terminator());
    h.exec_done(now);
}

/// Steps 4-5: authorise `-D`/`-b`, build argv, start the program.
fn run<H: ExecHost>(h: &mut H, now: Now, args: String) {
    let cmd = h.exec_command();
    let mut denied_token = None;
    let r = plan(&cmd, &args, |kind, tok| {
        let ok = h.exec_token_allowed(kind, tok);
        if !ok {
            denied_token = Some(tok.to_string());
        }
        ok
    });
    match r {
        Ok(p) => {
            let line = format!("cf-serverd executing cfruncommand: {}", p.display);
            h.exec_log(Level::Info, line.clone());
            h.exec_send(format!("{line}\n").as_bytes());
            h.exec_wait(ExecWait::Start, Event::ExecStart { argv: p.argv });
        }
        Err(e) => {
            if let Some(t) = denied_token {
                h.exec_log(Level::Info, format!("Access denied to: {t}"));
            } else if let ExecDenial::Role(t) | ExecDenial::Bundle(t) = &e {
                h.exec_log(Level::Info, format!("llegal character in: {t}"));
            }
            h.exec_log(Level::Info, e.to_string());
            h.exec_send(e.to_string().as_bytes());
            if let ExecDenial::TooLong { .. } = e {
                return h.exec_close();
            }
            h.exec_send(&reply::exec_terminator());
            h.exec_done(now);
        }
    }
}

/// The adapter's answer while an EXEC waits on it (`wait`): when it
/// answers something else, the EXEC keeps waiting ([`ExecHost::exec_keep`])
/// and the caller gets [`CallerError::UnexpectedAnswer`].
pub fn answer<H: ExecHost>(
    h: &mut H,
    now: Now,
    wait: ExecWait,
    a: Answer,
) -> Result<(), CallerError> {
    match (wait, a) {
        (ExecWait::Canon { args }, Answer::Canonical(r)) => arg0(h, now, args, r),
        (ExecWait::Start, Answer::ExecStarted(Ok(handle))) => {
            h.exec_wait(ExecWait::Read { handle }, Event::ExecRead { handle })
        }
        (ExecWait::Start, Answer::ExecStarted(Err(e))) => {
            let line = format!("Unable to run '{}' (pipe: {e})", h.exec_current());
            h.exec_log(Level::Error, line);
            h.exec_send(&reply::exec_terminator());
            h.exec_done(now);
        }
        (ExecWait::Read { handle }, Answer::ExecOutput(ExecChunk::Line(mut line))) => {
            // `> ` + line + `\n` must fit one transaction.
            line.truncate(crate::frame::MAX_PAYLOAD - 3);
            let mut p = b"> ".to_vec();
            p.extend_from_slice(&line);
            p.push(b'\n');
            h.exec_send(&p);
            h.exec_wait(ExecWait::Read { handle }, Event::ExecRead { handle });
        }
        (ExecWait::Read { .. }, Answer::ExecOutput(ExecChunk::Exit(code))) => {
            if let Some(code) = code {
                h.exec_send(format!("(exit code: {code})\n").as_bytes());
            }
            h.exec_send(&reply::exec_terminator());
            h.exec_done(now);
        }
        (w, a) => {
            let want = w.expects();
            h.exec_keep(w);
            return Err(CallerError::unexpected(want, &a));
        }
    }
    Ok(())
}

impl ExecWait {
    /// The answer this wait expects, for [`crate::machine::CallerError`].
    pub fn expects(&self) -> &'static str {
        match self {
            ExecWait::Canon { .. } => "Canonical",
            ExecWait::Start => "ExecStarted",
            ExecWait::Read { .. } => "ExecOutput",
        }
    }

    /// What to tell the adapter when the connection ends during this wait.
    pub fn on_close(&self) -> Option<Event> {
        match self {
            ExecWait::Read { handle } => Some(Event::ExecKill { handle: *handle }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn quote_rules() {
        assert_eq!(
            split_command("/usr/bin/cf-agent -I -f x"),
            vec!["/usr/bin/cf-agent", "-I", "-f", "x"]
        );
        assert_eq!(
            split_command("\"/opt/my dir/agent\" -D 'a b' `c d`"),
            vec!["/opt/my dir/agent", "-D", "a b", "c d"]
        );
        assert_eq!(
            split_command("a \"unterminated rest"),
            vec!["a", "unterminated rest"]
        );
        assert!(split_command("   ").is_empty());
    }

    #[test]
    fn the_3_21_argument_forms() {
        let all = |_: TokenKind, _: &str| true;
        let p = plan("/bin/run", "-Drole1,role2 -b b1,b2", all).unwrap();
        assert_eq!(
            p.argv,
            vec!["/bin/run", "-D", "role1,role2", "--bundlesequence", "b1,b2"]
        );
        assert_eq!(p.display, "/bin/run -D role1,role2 --bundlesequence b1,b2");
        let p = plan("/bin/run", "-D role1 -D role2", all).unwrap();
        assert_eq!(p.argv, vec!["/bin/run", "-D", "role1,role2"]);
        assert_eq!(plan("/bin/run", "", all).unwrap().argv, vec!["/bin/run"]);
        assert_eq!(
            plan("/bin/run", "-b ns:bundle", all).unwrap().argv,
            vec!["/bin/run", "--bundlesequence", "ns:bundle"]
        );
    }

    #[test]
    fn refusals() {
        let all = |_: TokenKind, _: &str| true;
        assert_eq!(
            plan("/bin/run", "-D a@b", all),
            Err(ExecDenial::Role("a@b".into()))
        );
        assert_eq!(
            plan("/bin/run", "-D a;rm", all),
            Err(ExecDenial::Role("a;rm".into()))
        );
        assert_eq!(
            plan("/bin/run", "-b x$(y)", all),
            Err(ExecDenial::Bundle("x$(y)".into()))
        );
        assert_eq!(
            plan("/bin/run", "-o foo", all),
            Err(ExecDenial::InvalidArguments("-o foo".into()))
        );
        assert_eq!(
            plan("/bin/run", "-D", all),
            Err(ExecDenial::InvalidArguments("-D".into()))
        );
        let only_role1 = |k: TokenKind, t: &str| k == TokenKind::Class && t == "role1";
        assert_eq!(
            plan("/bin/run", "-D role1,role12", only_role1),
            Err(ExecDenial::Role("role12".into()))
        );
        let long = format!("-D {}", "a".repeat(5000));
        assert!(matches!(
            plan("/bin/run", &long, all),
            Err(ExecDenial::TooLong { .. })
        ));
        assert_eq!(
            ExecDenial::Role("x".into()).to_string(),
            "EXEC denied role activation (check cf-serverd verbose output)"
        );
        // issue 18 finding 4: 3.21 cuts a class list at a space or tab only,
        // so `role1\n-D` is one token, refused by its character set: the
        // whole request is denied, nothing runs
        assert_eq!(
            plan("/bin/run", "-D role1\n-D x", all),
            Err(ExecDenial::Role("role1\n-D".into()))
        );
    }

    /// No input ever puts into argv anything but cfruncommand's words, the
    /// two option words, and comma-joined validated tokens.
    #[quickcheck]
    fn argv_holds_only_validated_tokens(args: String, cmd_words: Vec<String>) -> bool {
        let cmd: String = cmd_words
            .iter()
            .map(|w| {
                w.chars()
                    .filter(|c| !c.is_whitespace() && !"\"'`".contains(*c))
                    .collect::<String>()
            })
            .filter(|w| !w.is_empty())
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        let base = split_command(&cmd);
        match plan(&cmd, &args, |_, _| true) {
            Err(_) => true,
            Ok(p) => {
                p.argv.len() >= base.len()
                    && p.argv[..base.len()] == base[..]
                    && p.argv[base.len()..].chunks(2).all(|pair| {
                        (pair[0] == "-D" || pair[0] == "--bundlesequence")
                            && pair.len() == 2
                            && pair[1].split(',').all(valid_token)
                    })
            }
        }
    }
}
