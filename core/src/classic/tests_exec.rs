//! EXEC (cf-runagent) over the classic protocol, on the classic pair: the
//! steps the TLS session takes too (`crate::machine::exec`), with replies
//! framed plain and the `Hello <host> (<ip>)` of a classic connection.

use super::*;
use crate::machine::exec::TokenKind;

/// A policy's EXEC settings for [`Pol`].
#[derive(Clone, Default)]
pub(super) struct ExecPol {
    /// `cfruncommand`.
    pub command: String,
    /// Programs the `paths` rules admit (canonical paths).
    pub programs: Vec<String>,
    /// `allowusers`.
    pub users: Vec<String>,
    /// `roles`: (class, user) grants.
    pub roles: Vec<(String, String)>,
    /// Bundles the `bundle` rules grant.
    pub bundles: Vec<String>,
    /// Classes defined on the server.
    pub classes: Vec<String>,
}

impl ExecPol {
    pub fn grants(&self, kind: TokenKind, token: &str, peer: &ClassicPeer) -> bool {
        match kind {
            TokenKind::Class => self
                .roles
                .iter()
                .any(|(c, u)| c == token && *u == peer.username),
            TokenKind::Bundle => self.bundles.iter().any(|b| b == token),
        }
    }
}

const AGENT: &str = "/var/cfengine/bin/cf-agent";

fn exec_pol() -> Pol {
    Pol {
        exec: Some(ExecPol {
            command: format!("\"{AGENT}\" -I -f failsafe.cf"),
            programs: vec![AGENT.into()],
            users: vec!["root".into()],
            roles: vec![("role1".into(), "root".into())],
            bundles: vec!["main".into()],
            classes: vec!["linux".into()],
        }),
        ..srv_pol()
    }
}

/// The world of [`world`] with the agent program and its output.
fn exec_world() -> World {
    let mut w = world();
    w.insert(AGENT, Node::file(b"\x7fELF", 0o755, 0));
    w.exec_refuse = None;
    w.exec_output = vec![b"R: hello from the agent".to_vec()];
    w.exec_exit = Some(0);
    w
}

fn exec_pair(pol: Pol, user: &str) -> Pair {
    let mut p = new_pair(pol, exec_world(), user, false, true);
    p.run().unwrap();
    let ev = p.events();
    assert!(
        matches!(&ev[..], [ClientEvent::Authenticated { .. }]),
        "{ev:?}\n{:?}",
        p.log()
    );
    p
}

/// EXEC `args` selecting `select`, run to its end: the lines cf-runagent
/// prints and its exit code (`None`: no `ExecDone`, i.e. the server closed).
fn exec(p: &mut Pair, args: &[u8], select: &[&str]) -> (Vec<String>, Option<Option<i32>>) {
    let select: Vec<Vec<u8>> = select.iter().map(|s| s.as_bytes().to_vec()).collect();
    p.client.exec(p.now, args, &select).unwrap();
    p.run().unwrap();
    if p.server.is_closing() {
        p.client.handle_eof(p.now);
        p.run().unwrap();
    }
    let mut lines = Vec::new();
    let mut done = None;
    for e in p.events() {
        match e {
            ClientEvent::ExecLine(l) => lines.push(String::from_utf8_lossy(&l).into_owned()),
            ClientEvent::ExecDone(c) => done = Some(c),
            other => panic!("unexpected {other:?}"),
        }
    }
    (lines, done)
}

/// The connection still serves: one VERSION after the EXEC.
fn still_serves(p: &mut Pair) {
    assert!(!p.server.is_closing(), "{:?}", p.log());
    p.client.version(p.now).unwrap();
    p.run().unwrap();
    let ev = p.events();
    assert!(matches!(&ev[..], [ClientEvent::Version(_)]), "{ev:?}");
}

#[test]
fn allowed_run_streams_output_then_the_exit_code() {
    let mut p = exec_pair(exec_pol(), "root");
    let (lines, done) = exec(&mut p, b"", &[]);
    assert_eq!(
        lines,
        [
            format!("cf-serverd executing cfruncommand: \"{AGENT}\" -I -f failsafe.cf\n"),
            "> R: hello from the agent\n".into(),
            "(exit code: 0)\n".into(),
        ]
    );
    assert_eq!(done, Some(Some(0)));
    assert_eq!(p.world.exec_runs, [vec![AGENT, "-I", "-f", "failsafe.cf"]]);
    still_serves(&mut p);
}

#[test]
fn granted_role_and_bundle_reach_the_argv() {
    let mut p = exec_pair(exec_pol(), "root");
    let (lines, done) = exec(&mut p, b" -Drole1 -b main", &["linux"]);
    assert_eq!(
        lines[0],
        format!(
            "cf-serverd executing cfruncommand: \"{AGENT}\" -I -f failsafe.cf -D role1 --bundlesequence main\n"
        )
    );
    assert_eq!(done, Some(Some(0)));
    assert_eq!(
        p.world.exec_runs,
        [vec![
            AGENT,
            "-I",
            "-f",
            "failsafe.cf",
            "-D",
            "role1",
            "--bundlesequence",
            "main"
        ]]
    );
}

#[test]
fn refused_role_runs_nothing_and_keeps_the_connection() {
    let mut p = exec_pair(exec_pol(), "root");
    let (lines, done) = exec(&mut p, b" -Drole2", &[]);
    assert_eq!(
        lines,
        ["EXEC denied role activation (check cf-serverd verbose output)"]
    );
    assert_eq!(done, Some(None));
    assert!(p.world.exec_runs.is_empty());
    assert!(
        p.log().iter().any(|l| l == "Access denied to: role2"),
        "{:?}",
        p.log()
    );
    still_serves(&mut p);
}

#[test]
fn user_not_in_allowusers_is_refused_and_closed() {
    let mut pol = exec_pol();
    pol.exec.as_mut().unwrap().users = vec!["admin".into()];
    let mut p = exec_pair(pol, "root");
    let (lines, done) = exec(&mut p, b"", &[]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("BAD:"), "{lines:?}");
    assert_eq!(done, Some(None), "the terminator follows the refusal");
    assert!(p.server.is_closing());
    assert!(p.world.exec_runs.is_empty());
    assert!(
        p.log()
            .iter()
            .any(|l| l == "EXEC denied due to not allowed user: root"),
        "{:?}",
        p.log()
    );
}

#[test]
fn program_outside_the_path_rules_is_refused() {
    let mut pol = exec_pol();
    pol.exec.as_mut().unwrap().programs.clear();
    let mut p = exec_pair(pol, "root");
    let (lines, _) = exec(&mut p, b"", &[]);
    assert!(lines[0].starts_with("BAD:"), "{lines:?}");
    assert!(p.server.is_closing());
    assert!(p.world.exec_runs.is_empty());
    assert!(
        p.log()
            .iter()
            .any(|l| l == &format!("EXEC denied due to ACL for file: {AGENT}")),
        "{:?}",
        p.log()
    );
}

#[test]
fn unmatched_class_selection_says_hello_with_the_cauth_host() {
    let mut p = exec_pair(exec_pol(), "root");
    let (lines, done) = exec(&mut p, b"", &["solaris", "hpux"]);
    assert_eq!(
        lines,
        [
            "Hello client.example (127.0.0.1), nothing relevant to do here...\n\n",
            "EXEC denied due to failed class match (check cf-serverd verbose output)",
        ]
    );
    assert_eq!(done, Some(None));
    assert!(p.world.exec_runs.is_empty());
    still_serves(&mut p);
}

#[test]
fn a_program_that_cannot_start_ends_with_the_terminator() {
    let mut w = exec_world();
    w.exec_refuse = Some("No such file or directory".into());
    let mut p = new_pair(exec_pol(), w, "root", false, true);
    p.run().unwrap();
    let _ = p.events();
    let (lines, done) = exec(&mut p, b"", &[]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(done, Some(None));
    assert!(
        p.log().iter().any(|l| l.starts_with("Unable to run 'EXEC")),
        "{:?}",
        p.log()
    );
    still_serves(&mut p);
}
