//! EXEC cases for the cf-runagent-shaped clients (the real cf-runagent and
//! `rcf-agent runagent`): one case, run by either, gives an outcome that
//! can be compared across servers and clients.

use super::{CfrunScript, ToolRun};

/// One hail and what must follow from it.
pub struct ExecCase {
    /// For messages.
    pub name: &'static str,
    /// cf-runagent's arguments after `-H host`.
    pub args: &'static [&'static str],
    /// Expected argv of the cfruncommand (None: must not run).
    pub argv: Option<&'static [&'static str]>,
    /// A line the client must print.
    pub says: &'static str,
}

/// The cases every EXEC comparison starts with: a plain run, a granted
/// role and one an unanchored match would grant. The policy must grant
/// the role `role1` to root (and no `role12`).
pub const BASIC_EXEC_CASES: [ExecCase; 3] = [
    ExecCase {
        name: "plain run",
        args: &[],
        argv: Some(&[]),
        says: "(exit code: 0)",
    },
    ExecCase {
        name: "role1 admitted",
        args: &["-D", "role1"],
        argv: Some(&["-D", "role1"]),
        says: "(exit code: 0)",
    },
    ExecCase {
        name: "role12 not matched by anchored role1",
        args: &["-D", "role12"],
        argv: None,
        says: "EXEC denied role activation",
    },
];

/// Which client hails.
#[derive(Clone, Copy, Debug)]
pub enum Hailer {
    /// The real cf-runagent 3.21.
    CfRunagent,
    /// `rcf-agent runagent`.
    RcfAgent,
}

/// (exit code, EXEC reply lines, argv the cfruncommand ran with).
pub type ExecOutcome = (Option<i32>, Vec<String>, Option<Vec<String>>);

/// The lines of a client's output that come from the EXEC replies.
pub fn exec_reply_lines(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            l.contains("EXEC denied")
                || l.contains("(exit code")
                || l.contains("nothing relevant")
                || l.contains("rcflab cfruncommand ran")
                || l.contains("> !!")
        })
        .map(|l| l.trim().to_string())
        .collect()
}

/// Run `c` through `hail` (given `-H hp` and the case's arguments) and
/// check what it printed and ran: `says` printed, the script run at most
/// once, with `argv` when given.
pub fn hail_case(
    c: &ExecCase,
    hp: &str,
    script: &CfrunScript,
    hail: impl FnOnce(&[&str]) -> ToolRun,
) -> ExecOutcome {
    let before = script.invocations().len();
    let mut args = vec!["-H", hp];
    args.extend_from_slice(c.args);
    let run = hail(&args);
    let inv = script.invocations();
    assert!(inv.len() <= before + 1, "{}: ran more than once", c.name);
    let ran = inv.get(before).cloned();
    assert!(
        run.contains(c.says),
        "{} (-> {hp}): expected `{}` in\n{}",
        c.name,
        c.says,
        run.describe()
    );
    match c.argv {
        Some(want) => assert_eq!(
            ran.as_deref(),
            Some(&want.iter().map(|s| s.to_string()).collect::<Vec<_>>()[..]),
            "{}",
            c.name
        ),
        None => assert_eq!(ran, None, "{}: must not run", c.name),
    }
    (run.code(), exec_reply_lines(&run.output), ran)
}
