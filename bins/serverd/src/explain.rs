//! `rcf-serverd --explain`: the ACL dry-run that answers "why was I
//! refused?".
//!
//! For one peer (IP, optional reverse-DNS name, key id, username) and one
//! request it reports, in order, what the server would decide:
//!
//! 1. connection level: `allowconnects`, `denyconnects`, `allowallconnects`,
//!    `maxconnections`, `allowlegacyconnects` (classic peers) and
//!    `trustkeysfrom` (for a key not yet in ppkeys);
//! 2. every candidate ACL rule (resource) for the request, whether it
//!    covers the request, and for each of its admit and deny entries
//!    whether that entry matches the peer;
//! 3. the verdict and the rule that decided.
//!
//! Every rule and entry shown, and the verdict, come from
//! [`ServerPolicy::check_explained`]: the decision function itself records
//! the rules it consulted (and the covering ones it did not), what each
//! answers alone and how each entry compared with the peer. This module
//! only prints them, so the explanation cannot drift from the decision.

use rcf_core::policy::acl::{Category, EntryOutcome, Role, Step};
use rcf_core::policy::{ConnFacts, Decision, Protocol, Reason, Request, Resource, ServerPolicy};
use std::collections::BTreeMap;

/// What is asked, by whom.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Peer IP.
    pub ip: String,
    /// Reverse-DNS name of the peer (None: lookup off or failed).
    pub hostname: Option<String>,
    /// `MD5=…`/`SHA=…` key id of the peer (empty: unknown).
    pub key: String,
    /// IDENTITY username.
    pub user: String,
    /// Classic (pre-TLS) protocol instead of TLS.
    pub classic: bool,
    /// The request.
    pub what: What,
    /// Whether the key is already trusted in ppkeys (None: not known / no key given).
    pub key_known: Option<bool>,
}

/// The kind of request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A canonical path (GET, STAT, OPENDIR, MD5; directories end in `/`).
    Path(String),
    /// VAR (literal handle).
    Literal(String),
    /// QUERY (first word), COOKIE (`delta`).
    Query(String),
    /// CONTEXT (a class name).
    Context(String),
    /// EXEC `-b` bundle.
    Bundle(String),
    /// EXEC `-D` class (roles:, admitted by username).
    Role(String),
}

impl Default for What {
    fn default() -> Self {
        What::Path("/".into())
    }
}

impl What {
    fn request(&self) -> Request<'_> {
        match self {
            What::Path(p) => Request::Path(p),
            What::Literal(n) => Request::Literal(n),
            What::Query(n) => Request::Query(n),
            What::Context(n) => Request::Context(n),
            What::Bundle(n) => Request::Bundle(n),
            What::Role(n) => Request::Role(n),
        }
    }
    fn label(&self) -> (&'static str, &str) {
        match self {
            What::Path(p) => ("path", p),
            What::Literal(n) => ("literal", n),
            What::Query(n) => ("query", n),
            What::Context(n) => ("context", n),
            What::Bundle(n) => ("bundle", n),
            What::Role(n) => ("role", n),
        }
    }
}

/// Where the connection stops, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnVerdict {
    /// The connection would be served.
    Admitted,
    /// Refused before any request, with cf-serverd's log line.
    Refused(String),
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Report {
    /// Human-readable lines.
    pub lines: Vec<String>,
    /// The connection-level outcome.
    pub connection: ConnVerdict,
    /// The ACL decision of the whole policy ([`ServerPolicy::check_explained`]).
    pub decision: Decision,
    /// Whether the explained run decided as the plain [`ServerPolicy::check`]
    /// (collecting the steps must not change the decision).
    pub consistent: bool,
}

impl Report {
    /// Connection admitted and request allowed.
    pub fn allowed(&self) -> bool {
        self.connection == ConnVerdict::Admitted && self.decision.allowed
    }
}

fn facts(a: &Ask) -> ConnFacts<'_> {
    ConnFacts {
        ip: &a.ip,
        hostname: a.hostname.as_deref(),
        key: &a.key,
        username: &a.user,
        protocol: if a.classic {
            Protocol::Classic
        } else {
            Protocol::Tls
        },
        encrypted: true,
    }
}

fn table<'p>(p: &'p ServerPolicy, w: &What) -> &'p BTreeMap<String, Resource> {
    match w {
        What::Path(_) => &p.acl.paths,
        What::Literal(_) => &p.acl.literals,
        What::Query(_) => &p.acl.queries,
        What::Context(_) => &p.acl.classes,
        What::Bundle(_) => &p.acl.bundles,
        What::Role(_) => &p.acl.roles,
    }
}

/// Words for a [`Reason`].
pub fn reason_text(r: &Reason) -> String {
    let cat = |c: &Category| match c {
        Category::Ip => "IP",
        Category::Hostname => "hostname",
        Category::Key => "key",
        Category::Username => "username",
    };
    match r {
        Reason::NoMatchingResource => "no access rule covers the request (default deny)".into(),
        Reason::Admitted { via, entry } => format!("admitted by {} entry '{entry}'", cat(via)),
        Reason::Denied { via, entry } => format!("denied by {} entry '{entry}' (deny beats admit)", cat(via)),
        Reason::NotAdmitted => "the deciding rule has no admit entry matching the peer".into(),
        Reason::HostnameUnverifiable { entry } => {
            format!("deny_hostnames entry '{entry}' cannot be ruled out: the peer's hostname is unknown (rcf denies; 3.21 would admit)")
        }
        Reason::UnresolvedDenyRule => "a deny entry of the deciding rule could not be evaluated (an unresolved variable or an invalid entry): nobody is admitted through it".into(),
        Reason::UnknownCondition => "the first matching classic entry comes from an access promise whose condition rcf cannot evaluate: denied".into(),
        Reason::RequiresEncryption => "ifencrypted is set and the request was not encrypted".into(),
        Reason::NoLegacyTable => "the classic protocol has no table for this kind of request".into(),
    }
}

fn connection(p: &ServerPolicy, a: &Ask, out: &mut Vec<String>) -> ConnVerdict {
    let c = &p.control;
    let ip = rcf_core::policy::addr::map_address(&a.ip);
    let mut verdict = ConnVerdict::Admitted;
    let refuse = |v: &mut ConnVerdict, why: String| {
        if *v == ConnVerdict::Admitted {
            *v = ConnVerdict::Refused(why);
        }
    };
    out.push("connection:".into());
    if c.allowconnects.is_empty() {
        out.push("  allowconnects: empty, every address may connect".into());
    } else if let Some(e) = c.allowconnects.matching(ip) {
        out.push(format!("  allowconnects: entry '{e}' matches {ip}"));
    } else {
        out.push(format!(
            "  allowconnects: no entry matches {ip} (entries: {})",
            c.allowconnects.entries().collect::<Vec<_>>().join(", ")
        ));
        refuse(
            &mut verdict,
            format!("Remote host '{ip}' not in allowconnects, denying connection"),
        );
    }
    match c.denyconnects.matching(ip) {
        Some(e) => {
            out.push(format!("  denyconnects: entry '{e}' matches {ip}"));
            refuse(
                &mut verdict,
                format!("Remote host '{ip}' is in denyconnects, denying connection"),
            );
        }
        None => out.push(format!("  denyconnects: no entry matches {ip}")),
    }
    match c.allowallconnects.matching(ip) {
        Some(e) => out.push(format!(
            "  allowallconnects: entry '{e}' matches: several simultaneous connections allowed"
        )),
        None => out.push(
            "  allowallconnects: no match: one connection at a time from this address".into(),
        ),
    }
    out.push(format!("  maxconnections: {} at once", c.maxconnections));
    if a.classic {
        match c.allowlegacyconnects.matching(ip) {
            Some(e) => out.push(format!(
                "  allowlegacyconnects: entry '{e}' matches: the classic protocol is accepted"
            )),
            None => {
                out.push(
                    "  allowlegacyconnects: no entry matches: the classic protocol is refused"
                        .into(),
                );
                refuse(
                    &mut verdict,
                    "Connection is not using latest protocol, denying".into(),
                );
            }
        }
    }
    let trusting = c.trustkeysfrom.matching(ip);
    match (a.key_known, trusting) {
        (Some(true), _) => out.push(format!("  key {}: already trusted (in ppkeys); trustkeysfrom is not consulted", a.key)),
        (_, Some(e)) => out.push(format!(
            "  trustkeysfrom: entry '{e}' matches: a key not yet in ppkeys would be trusted and saved (unless rcf-serverd's --trust-max-new/--trust-window budget is closed)"
        )),
        (known, None) => {
            out.push("  trustkeysfrom: no entry matches: a key not yet in ppkeys is refused (TRUST FAILED, peer presented an untrusted key)".into());
            if known == Some(false) {
                refuse(&mut verdict, "TRUST FAILED, peer presented an untrusted key, dropping connection!".into());
            }
        }
    }
    verdict
}

/// Explain the decision for `a` under `p`.
pub fn explain(p: &ServerPolicy, a: &Ask) -> Report {
    let mut out = Vec::new();
    let (kind, name) = a.what.label();
    out.push(format!(
        "peer: ip={} hostname={} key={} user={} protocol={}",
        a.ip,
        a.hostname.as_deref().unwrap_or("(unknown)"),
        if a.key.is_empty() { "(none)" } else { &a.key },
        if a.user.is_empty() { "(none)" } else { &a.user },
        if a.classic { "classic" } else { "tls" }
    ));
    out.push(format!("request: {kind} '{name}'"));
    let connection = connection(p, a, &mut out);
    let explained = p.check_explained(&facts(a), a.what.request());
    let decision = explained.decision.clone();
    if a.classic {
        classic(p, &explained.steps, &decision, &mut out);
    } else {
        tls(p, a, &explained.steps, &mut out);
    }
    let plain = p.check(&facts(a), a.what.request());
    let consistent = plain == decision;
    let by = decision
        .resource
        .as_deref()
        .map(|r| format!(" by rule '{r}'"))
        .unwrap_or_default();
    let via = if decision.via_connection_vars {
        " (through the $(connection.*) rewrite)"
    } else {
        ""
    };
    out.push(format!(
        "access: {}{by}{via}: {}",
        if decision.allowed {
            "ALLOWED"
        } else {
            "DENIED"
        },
        reason_text(&decision.reason)
    ));
    match &connection {
        ConnVerdict::Admitted => out.push(format!(
            "verdict: {}",
            if decision.allowed {
                "ALLOWED"
            } else {
                "DENIED"
            }
        )),
        ConnVerdict::Refused(why) => {
            out.push(format!("verdict: DENIED at connection level: {why}"))
        }
    }
    if !consistent {
        out.push(format!(
            "INTERNAL INCONSISTENCY: the explained decision is {} by {:?}, the plain one {} by {:?}; please report",
            decision.allowed, decision.resource, plain.allowed, plain.resource
        ));
    }
    Report {
        lines: out,
        connection,
        decision,
        consistent,
    }
}

fn origins(r: &Resource) -> String {
    if r.origins.is_empty() {
        String::new()
    } else {
        format!(
            " [{}]",
            r.origins
                .iter()
                .map(|(f, l)| format!("{f}:{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The entries of one rule, as the decision compared them.
fn describe(r: Option<&Resource>, st: &Step, out: &mut Vec<String>) {
    if r.is_some_and(|r| r.poisoned) {
        out.push("      (a deny entry could not be evaluated: this rule admits nobody)".into());
    }
    let list = |c: Category| match c {
        Category::Ip => "ips",
        Category::Hostname => "hostnames",
        Category::Key => "keys",
        Category::Username => "users",
    };
    if !st.entries.iter().any(|e| !e.deny) {
        out.push("      (no admit entries)".into());
    }
    for e in st.entries.iter().filter(|e| !e.deny) {
        out.push(format!(
            "      admit_{} '{}': {}",
            list(e.via),
            e.text,
            if e.outcome == EntryOutcome::Matches {
                "matches"
            } else {
                "does not match"
            }
        ));
    }
    for e in st.entries.iter().filter(|e| e.deny) {
        let word = match e.outcome {
            EntryOutcome::Matches => "matches",
            EntryOutcome::Unverifiable => "cannot be checked (hostname unknown)",
            EntryOutcome::NoMatch => "does not match",
        };
        out.push(format!("      deny_{} '{}': {word}", list(e.via), e.text));
    }
}

/// TLS: the rules the decision consulted, in its order (B.5).
fn tls(p: &ServerPolicy, a: &Ask, steps: &[Step], out: &mut Vec<String>) {
    let t = table(p, &a.what);
    out.push(format!("candidate rules ({} in this table):", t.len()));
    let mut shown_rewrite = false;
    for st in steps {
        let r = t.get(&st.resource);
        let at = r.map(origins).unwrap_or_default();
        let alone = |st: &Step| {
            format!(
                "alone it {} ({})",
                if st.allowed { "admits" } else { "refuses" },
                reason_text(&st.reason)
            )
        };
        match st.role {
            Role::LongestPrefix | Role::ShorterPrefix => {
                let role = if st.role == Role::LongestPrefix {
                    "longest prefix: decides the direct check"
                } else {
                    "shorter prefix: not consulted (only the longest counts)"
                };
                out.push(format!("  '{}'{at}: {role}; {}", st.resource, alone(st)));
                describe(r, st, out);
            }
            Role::RewrittenLongest | Role::RewrittenShorter => {
                if !shown_rewrite {
                    out.push("  rules covering the path with $(connection.*) substituted:".into());
                    shown_rewrite = true;
                }
                let role = if st.role == Role::RewrittenLongest {
                    "longest prefix of the rewritten path"
                } else {
                    "shorter prefix: not consulted"
                };
                out.push(format!(
                    "  '{}'{at}: {role}; {}",
                    st.resource,
                    if st.allowed {
                        "admits through $(connection.*)"
                    } else {
                        "does not admit through $(connection.*)"
                    }
                ));
            }
            Role::ExactName => {
                out.push(format!(
                    "  '{}'{at}: exact name match: {}",
                    st.resource,
                    reason_text(&st.reason)
                ));
                describe(r, st, out);
            }
            Role::RegexNoMatch => out.push(format!(
                "  '{}'{at}: regex does not match the name: not a candidate",
                st.resource
            )),
            Role::RegexMatch => {
                out.push(format!(
                    "  '{}'{at}: regex matches: {}",
                    st.resource,
                    reason_text(&st.reason)
                ));
                describe(r, st, out);
            }
            Role::ClassicAdmit | Role::ClassicDeny => {}
        }
    }
    if steps.is_empty() {
        match &a.what {
            What::Path(_) => out.push("  none: no rule's path is a prefix of the request".into()),
            What::Literal(n) | What::Query(n) => out.push(format!(
                "  none: no rule is named '{n}' (names: {})",
                t.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            _ => out.push("  none: the table is empty".into()),
        }
    }
}

/// Classic: the B.9 entries the decision consulted (the first covering
/// admit entry in policy order, then the covering deny entries).
fn classic(p: &ServerPolicy, steps: &[Step], d: &Decision, out: &mut Vec<String>) {
    out.push(format!(
        "classic ACL (first covering admit entry in policy order, then every covering deny entry): {} admit and {} deny path entries",
        p.legacy.admit.len(),
        p.legacy.deny.len()
    ));
    for st in steps {
        let kind = if st.role == Role::ClassicAdmit {
            "admit"
        } else {
            "deny"
        };
        let verdict = if st.role == Role::ClassicDeny && st.allowed {
            "no entry matches the peer".to_string()
        } else {
            reason_text(&st.reason)
        };
        out.push(format!(
            "  {kind} '{}': entries {}: {verdict}",
            st.resource,
            st.classic_entries.join(", ")
        ));
    }
    if steps.is_empty() {
        out.push("  none: no classic entry covers the request".into());
    }
    if d.maproot {
        out.push("  maproot matches: files owned by others are readable".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcf_core::policy::{Canon, LoadOptions, PolicySource};
    use std::collections::BTreeSet;

    struct Mem {
        text: String,
        dirs: BTreeSet<&'static str>,
    }

    impl PolicySource for Mem {
        fn read(&self, path: &str) -> Result<Vec<u8>, String> {
            if path == "/p/promises.cf" {
                Ok(self.text.as_bytes().to_vec())
            } else {
                Err("No such file or directory".into())
            }
        }
        fn canonicalize(&self, path: &str) -> Canon {
            let p = path.trim_end_matches('/');
            let p = if p.is_empty() { "/" } else { p };
            if self.dirs.contains(p) {
                Canon::Resolved {
                    path: p.into(),
                    is_dir: true,
                }
            } else if p.contains("/missing") {
                Canon::Missing
            } else {
                Canon::Resolved {
                    path: p.into(),
                    is_dir: false,
                }
            }
        }
        fn exists(&self, _path: &str) -> bool {
            true
        }
    }

    const POLICY: &str = r#"
body server control
{
      allowconnects => { "127.0.0.0/8", "10.0.0.0/8", "::1" };
      denyconnects => { "10.9.9.9" };
      allowallconnects => { "127.0.0.1" };
      trustkeysfrom => { "127.0.0.1" };
      allowlegacyconnects => { "10.0.0.0/8" };
      allowusers => { "root" };
}

bundle server acl
{
  access:
      "/srv/data/"
        admit_ips => { "127.0.0.1", "10.1.0.0/16" },
        deny_ips => { "10.1.2.0/24" };
      "/srv/data/private/"
        admit_keys => { "MD5=aaaa" },
        admit_hostnames => { ".example.org" };
      "/srv/data/private/open.txt"
        admit_ips => { "127.0.0.0/8" };
      "/srv/hosts/$(connection.ip)/"
        admit_ips => { "$(connection.ip)" };
      "/srv/keys/$(connection.key)/"
        admit_keys => { "$(connection.key)" };
      "/srv/named/"
        admit_hostnames => { "host1.example.org", ".lab.test" },
        deny_hostnames => { "bad.lab.test" };
      "/srv/poison/"
        admit_ips => { "127.0.0.1" },
        deny_ips => { "$(no.such_var)" };
      "/"
        admit_ips => { "10.5.5.5" };
      "the literal value"
        handle => "handle_a",
        resource_type => "literal",
        admit_ips => { "127.0.0.1" };
      "delta"
        resource_type => "query",
        admit_keys => { "MD5=aaaa" };
      "linux.*"
        resource_type => "context",
        admit_ips => { "127.0.0.0/8" };
      "linux_bad.*"
        resource_type => "context",
        admit_ips => { "127.0.0.1" },
        deny_ips => { "127.0.0.1" };
      "run_.*"
        resource_type => "bundle",
        admit_ips => { "127.0.0.1" };
      "run_secret"
        resource_type => "bundle",
        admit_keys => { "MD5=aaaa" },
        deny_ips => { "10.0.0.0/8" };

  roles:
      "class_.*" authorize => { "root" };
      "class_admin" authorize => { "admin" };
}
"#;

    fn policy() -> ServerPolicy {
        let dirs: BTreeSet<&'static str> = [
            "/",
            "/srv",
            "/srv/data",
            "/srv/data/private",
            "/srv/hosts",
            "/srv/keys",
            "/srv/named",
            "/srv/poison",
            "/srv/hosts/$(connection.ip)",
            "/srv/keys/$(connection.key)",
        ]
        .into_iter()
        .collect();
        let src = Mem {
            text: POLICY.into(),
            dirs,
        };
        let opts = LoadOptions {
            file: "/p/promises.cf".into(),
            ..Default::default()
        };
        rcf_core::policy::load(&src, &opts).expect("policy loads")
    }

    fn ask(ip: &str, host: Option<&str>, key: &str, user: &str, what: What) -> Ask {
        Ask {
            ip: ip.into(),
            hostname: host.map(str::to_string),
            key: key.into(),
            user: user.into(),
            classic: false,
            what,
            key_known: None,
        }
    }

    /// The explanation's verdict and deciding rule equal the decision
    /// function's, and its parts derive the same answer, for every case.
    #[test]
    fn explain_equals_the_decision_function() {
        let p = policy();
        use What::*;
        let path = |s: &str| Path(s.to_string());
        // (ask, expected allowed, expected deciding resource)
        let cases: Vec<(Ask, bool, Option<&str>)> = vec![
            (
                ask("127.0.0.1", None, "MD5=zz", "root", path("/srv/data/f")),
                true,
                Some("/srv/data/"),
            ),
            (
                ask("10.1.7.7", None, "MD5=zz", "root", path("/srv/data/f")),
                true,
                Some("/srv/data/"),
            ),
            (
                ask("10.1.2.3", None, "MD5=zz", "root", path("/srv/data/f")),
                false,
                Some("/srv/data/"),
            ),
            (
                ask("10.2.0.1", None, "MD5=zz", "root", path("/srv/data/f")),
                false,
                Some("/srv/data/"),
            ),
            (
                ask(
                    "127.0.0.1",
                    None,
                    "MD5=zz",
                    "root",
                    path("/srv/data/private/x"),
                ),
                false,
                Some("/srv/data/private/"),
            ),
            (
                ask(
                    "10.2.0.1",
                    None,
                    "MD5=aaaa",
                    "root",
                    path("/srv/data/private/x"),
                ),
                true,
                Some("/srv/data/private/"),
            ),
            (
                ask(
                    "10.2.0.1",
                    Some("a.example.org"),
                    "MD5=zz",
                    "root",
                    path("/srv/data/private/x"),
                ),
                true,
                Some("/srv/data/private/"),
            ),
            (
                ask(
                    "127.0.0.2",
                    None,
                    "MD5=zz",
                    "root",
                    path("/srv/data/private/open.txt"),
                ),
                true,
                Some("/srv/data/private/open.txt"),
            ),
            (
                ask(
                    "10.3.3.3",
                    None,
                    "MD5=zz",
                    "root",
                    path("/srv/hosts/10.3.3.3/file"),
                ),
                true,
                Some("/srv/hosts/$(connection.ip)/"),
            ),
            (
                ask(
                    "10.3.3.3",
                    None,
                    "MD5=zz",
                    "root",
                    path("/srv/hosts/10.3.3.4/file"),
                ),
                false,
                None,
            ),
            (
                ask(
                    "10.3.3.3",
                    None,
                    "MD5=bbbb",
                    "root",
                    path("/srv/keys/MD5=bbbb/k"),
                ),
                true,
                Some("/srv/keys/$(connection.key)/"),
            ),
            (
                ask(
                    "10.3.3.3",
                    None,
                    "MD5=bbbb",
                    "root",
                    path("/srv/keys/MD5=cccc/k"),
                ),
                false,
                None,
            ),
            (
                ask(
                    "10.3.3.3",
                    Some("host1.example.org"),
                    "",
                    "root",
                    path("/srv/named/f"),
                ),
                true,
                Some("/srv/named/"),
            ),
            (
                ask(
                    "10.3.3.3",
                    Some("x.lab.test"),
                    "",
                    "root",
                    path("/srv/named/f"),
                ),
                true,
                Some("/srv/named/"),
            ),
            (
                ask(
                    "10.3.3.3",
                    Some("bad.lab.test"),
                    "",
                    "root",
                    path("/srv/named/f"),
                ),
                false,
                Some("/srv/named/"),
            ),
            (
                ask("10.3.3.3", None, "", "root", path("/srv/named/f")),
                false,
                Some("/srv/named/"),
            ),
            (
                ask("127.0.0.1", None, "", "root", path("/srv/poison/f")),
                false,
                Some("/srv/poison/"),
            ),
            (
                ask("10.5.5.5", None, "", "root", path("/etc/passwd")),
                true,
                Some("/"),
            ),
            (
                ask("10.5.5.6", None, "", "root", path("/etc/passwd")),
                false,
                Some("/"),
            ),
            (
                ask("127.0.0.1", None, "", "root", Literal("handle_a".into())),
                true,
                Some("handle_a"),
            ),
            (
                ask("127.0.0.2", None, "", "root", Literal("handle_a".into())),
                false,
                Some("handle_a"),
            ),
            (
                ask("127.0.0.1", None, "", "root", Literal("handle_b".into())),
                false,
                None,
            ),
            (
                ask("127.0.0.1", None, "MD5=aaaa", "root", Query("delta".into())),
                true,
                Some("delta"),
            ),
            (
                ask("127.0.0.1", None, "MD5=bbbb", "root", Query("delta".into())),
                false,
                Some("delta"),
            ),
            (
                ask("127.0.0.1", None, "", "root", Context("linux_x86".into())),
                true,
                Some("linux.*"),
            ),
            (
                ask(
                    "127.0.0.1",
                    None,
                    "",
                    "root",
                    Context("linux_bad_one".into()),
                ),
                false,
                Some("linux_bad.*"),
            ),
            (
                ask(
                    "127.0.0.2",
                    None,
                    "",
                    "root",
                    Context("linux_bad_one".into()),
                ),
                true,
                Some("linux.*"),
            ),
            (
                ask("127.0.0.1", None, "", "root", Context("windows".into())),
                false,
                None,
            ),
            (
                ask("127.0.0.1", None, "", "root", Bundle("run_update".into())),
                true,
                Some("run_.*"),
            ),
            (
                ask(
                    "10.0.0.1",
                    None,
                    "MD5=aaaa",
                    "root",
                    Bundle("run_secret".into()),
                ),
                false,
                Some("run_secret"),
            ),
            (
                ask(
                    "127.0.0.1",
                    None,
                    "MD5=aaaa",
                    "root",
                    Bundle("run_secret".into()),
                ),
                true,
                Some("run_.*"),
            ),
            (
                ask("127.0.0.1", None, "", "root", Role("class_x".into())),
                true,
                Some("class_.*"),
            ),
            (
                ask("127.0.0.1", None, "", "admin", Role("class_admin".into())),
                true,
                Some("class_admin"),
            ),
            (
                ask("127.0.0.1", None, "", "bob", Role("class_admin".into())),
                false,
                Some("class_admin"),
            ),
        ];
        for (i, (a, allowed, resource)) in cases.iter().enumerate() {
            let r = explain(&p, a);
            let d = p.check(&facts(a), a.what.request());
            let text = r.lines.join("\n");
            assert!(
                r.consistent,
                "case {i}: explained and plain decisions differ\n{text}"
            );
            assert_eq!(r.decision, d, "case {i}");
            assert_eq!(d.allowed, *allowed, "case {i}: expectation\n{text}");
            if let Some(res) = resource {
                assert_eq!(d.resource.as_deref(), Some(*res), "case {i}\n{text}");
            }
            let last_access = r.lines.iter().find(|l| l.starts_with("access: ")).unwrap();
            assert!(
                last_access.starts_with(if *allowed {
                    "access: ALLOWED"
                } else {
                    "access: DENIED"
                }),
                "case {i}: {last_access}"
            );
        }
    }

    #[test]
    fn explains_entries_and_connection_refusals() {
        let p = policy();
        let r = explain(
            &p,
            &ask(
                "10.1.2.3",
                None,
                "MD5=zz",
                "root",
                What::Path("/srv/data/f".into()),
            ),
        );
        let t = r.lines.join("\n");
        assert!(t.contains("admit_ips '10.1.0.0/16': matches"), "{t}");
        assert!(t.contains("admit_ips '127.0.0.1': does not match"), "{t}");
        assert!(t.contains("deny_ips '10.1.2.0/24': matches"), "{t}");
        assert!(
            t.contains("'/' [/p/promises.cf:33]: shorter prefix: not consulted"),
            "{t}"
        );
        assert!(t.contains("denied by IP entry '10.1.2.0/24'"), "{t}");

        let r = explain(
            &p,
            &ask(
                "192.168.1.1",
                None,
                "",
                "root",
                What::Path("/etc/passwd".into()),
            ),
        );
        assert_eq!(
            r.connection,
            ConnVerdict::Refused(
                "Remote host '192.168.1.1' not in allowconnects, denying connection".into()
            )
        );
        assert!(!r.allowed());
        let r = explain(
            &p,
            &ask("10.9.9.9", None, "", "root", What::Path("/".into())),
        );
        assert_eq!(
            r.connection,
            ConnVerdict::Refused(
                "Remote host '10.9.9.9' is in denyconnects, denying connection".into()
            )
        );
        let mut a = ask(
            "10.5.5.5",
            None,
            "MD5=new",
            "root",
            What::Path("/etc/passwd".into()),
        );
        a.key_known = Some(false);
        let r = explain(&p, &a);
        assert_eq!(
            r.connection,
            ConnVerdict::Refused(
                "TRUST FAILED, peer presented an untrusted key, dropping connection!".into()
            )
        );
        a.key_known = Some(true);
        assert!(explain(&p, &a).allowed());
        let mut a = ask(
            "127.0.0.1",
            None,
            "",
            "root",
            What::Path("/srv/data/f".into()),
        );
        a.classic = true;
        let r = explain(&p, &a);
        assert_eq!(
            r.connection,
            ConnVerdict::Refused("Connection is not using latest protocol, denying".into())
        );
        // The hostname that cannot be checked is called out.
        let r = explain(
            &p,
            &ask(
                "10.3.3.3",
                None,
                "",
                "root",
                What::Path("/srv/named/f".into()),
            ),
        );
        let t = r.lines.join("\n");
        assert!(
            t.contains("deny_hostnames 'bad.lab.test': cannot be checked (hostname unknown)"),
            "{t}"
        );
    }
}
