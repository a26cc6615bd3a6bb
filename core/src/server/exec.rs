//! EXEC (cf-runagent): deciding what, if anything, to run (SEMANTICS.md D.8).
//!
//! Correct by construction: the argv handed to the adapter is the words of
//! `cfruncommand` (split once, by CFEngine's quote rules, without a shell)
//! followed by `-D <list>` and `--bundlesequence <list>` whose lists are
//! joined from tokens that each matched `[A-Za-z0-9_:]+` and were
//! authorised. No client byte is ever re-split or passed to a shell.

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
