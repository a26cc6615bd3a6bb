//! The access decision (SEMANTICS.md B.5 for TLS, B.9 for the classic
//! protocol): given who is asking and for what, allow or deny, and say
//! which rule decided and why.

use super::addr::{self, full_match, fuzzy_set_match};
use super::server::{LegacyAuth, LegacyMatchers, Resource, Rules, ServerPolicy};
use std::collections::BTreeMap;

/// Which protocol the peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Pre-TLS protocol (needs allowlegacyconnects); legacy ACLs apply.
    Classic,
    /// Protocol 2 or 3 over TLS; the new ACL tables apply.
    Tls,
}

/// What the server knows about the peer.
#[derive(Debug, Clone, Copy)]
pub struct ConnFacts<'a> {
    /// Peer IP as numeric text; a `::ffff:` prefix is removed here anyway.
    pub ip: &'a str,
    /// Reverse-DNS name (TLS) or the client-claimed name (classic, lower
    /// case). `None`: lookup off or failed.
    pub hostname: Option<&'a str>,
    /// Key id of the peer, e.g. `MD5=…`.
    pub key: &'a str,
    /// Username from IDENTITY (TLS) or CAUTH (classic).
    pub username: &'a str,
    /// Protocol in use.
    pub protocol: Protocol,
    /// Classic only: whether the encrypted command variant was used.
    pub encrypted: bool,
}

/// What is being asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// A canonical (real) path: GET, OPENDIR, STAT, MD5, EXEC's argv\[0\].
    Path(&'a str),
    /// A literal handle (VAR).
    Literal(&'a str),
    /// A persistent variable name (no TLS command uses it in 3.21).
    Variable(&'a str),
    /// A persistent class name (CONTEXT, one class at a time).
    Context(&'a str),
    /// A query name (QUERY first word, `delta` for COOKIE, `collect_calls`).
    Query(&'a str),
    /// A bundle name (EXEC `-b`).
    Bundle(&'a str),
    /// A class to activate (EXEC `-D`), admitted by username.
    Role(&'a str),
}

/// Which list of an entry matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// `admit_ips`/`deny_ips` (or an IP-class legacy entry).
    Ip,
    /// Hostname lists.
    Hostname,
    /// Key lists.
    Key,
    /// Role usernames.
    Username,
}

/// Why the decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No ACL entry covers the request: default deny.
    NoMatchingResource,
    /// The deciding entry admitted the peer through `entry` of `via`.
    Admitted {
        /// The list that matched.
        via: Category,
        /// The matching rule text.
        entry: String,
    },
    /// The deciding entry has a deny rule matching the peer (deny beats admit).
    Denied {
        /// The list that matched.
        via: Category,
        /// The matching rule text.
        entry: String,
    },
    /// The deciding entry exists but none of its admit rules match.
    NotAdmitted,
    /// rcf deviation from 3.21: the entry has `deny_hostnames` but the
    /// peer's hostname is unknown (lookup off or failed), so the deny rule
    /// cannot be ruled out and the request is denied. 3.21 skips the rule
    /// and admits (SEMANTICS.md B.8).
    HostnameUnverifiable {
        /// The first deny_hostnames entry that could not be checked.
        entry: String,
    },
    /// rcf safety rule: a deny rule of the deciding entry could not be
    /// evaluated (an unresolved variable, or an entry 3.21 would skip such
    /// as an invalid CIDR), so nobody is admitted through it.
    UnresolvedDenyRule,
    /// Classic: the first matching entry was created by an access promise
    /// whose condition rcf could not evaluate; in 3.21 another entry may
    /// decide, so rcf denies (never looser).
    UnknownCondition,
    /// Classic: `ifencrypted` is set and the request was not encrypted.
    RequiresEncryption,
    /// Classic: this kind of resource has no legacy table (bundle, role).
    NoLegacyTable,
}

/// The answer, with enough detail for `--explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub allowed: bool,
    /// The resource (ACL key) that decided, if any.
    pub resource: Option<String>,
    /// True when the decision came from the `$(connection.*)` rewritten lookup (B.5.2 step 2).
    pub via_connection_vars: bool,
    /// Why.
    pub reason: Reason,
    /// Classic only: the peer matched the entry's `maproot`.
    pub maproot: bool,
}

/// How a rule took part in a decision (for `--explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Paths: the longest covering prefix; it decides the direct check.
    LongestPrefix,
    /// Paths: a shorter covering prefix; not consulted (shown alone).
    ShorterPrefix,
    /// Paths: the longest prefix of the `$(connection.*)` rewritten path.
    RewrittenLongest,
    /// Paths: a shorter prefix of the rewritten path; not consulted.
    RewrittenShorter,
    /// Literals and queries: the rule of exactly that name.
    ExactName,
    /// Regex tables: the rule's regex matches the name (a candidate).
    RegexMatch,
    /// Regex tables: the rule's regex does not match (not a candidate).
    RegexNoMatch,
    /// Classic: the first covering admit entry in policy order.
    ClassicAdmit,
    /// Classic: a covering deny entry.
    ClassicDeny,
}

/// How one admit or deny entry compared with the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryOutcome {
    /// It matches the peer.
    Matches,
    /// It does not.
    NoMatch,
    /// A hostname entry and the peer's hostname is unknown.
    Unverifiable,
}

/// One entry of a rule, as the decision compared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryCheck {
    /// From the deny lists (else admit).
    pub deny: bool,
    /// Which list.
    pub via: Category,
    /// The entry as written.
    pub text: String,
    /// The comparison's result.
    pub outcome: EntryOutcome,
}

/// One rule the decision looked at, with what it answers on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The rule (resource name, or classic entry path).
    pub resource: String,
    /// Its part in the decision.
    pub role: Role,
    /// What the rule alone answers.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// Its entries against the peer (TLS rules; empty for classic).
    pub entries: Vec<EntryCheck>,
    /// Classic entries: the entry list as written.
    pub classic_entries: Vec<String>,
}

/// A decision with the rules that led to it, computed by the same code
/// as [`ServerPolicy::check`] (the trace is only collected when asked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained {
    /// The decision, identical to [`ServerPolicy::check`]'s.
    pub decision: Decision,
    /// The rules consulted (and the covering ones that were not), in order.
    pub steps: Vec<Step>,
}

/// Collects [`Step`]s when explaining; `None` when deciding.
type Tracer = Option<Vec<Step>>;

/// The classic matcher of one entry list against the peer.
type ClassicMatcher<'m> =
    dyn Fn(&addr::ConnList, &[(String, Option<addr::Regex>)]) -> Option<(Category, String)> + 'm;

fn entry_checks(res: &Resource, who: &Who) -> Vec<EntryCheck> {
    let mut out = Vec::new();
    for (deny, rules) in [(false, &res.admit), (true, &res.deny)] {
        let v4 = addr::parse_peer_v4(who.ip);
        for e in &rules.ips {
            let m = !who.ip.is_empty() && ip_entry_matches(e, who.ip, v4);
            out.push((deny, Category::Ip, e.text.clone(), m, false));
        }
        for e in &rules.hostnames {
            let (m, unv) = match who.hostname {
                Some(h) => (host_entry_direct(e, h) || host_entry_regex(e, h), false),
                None => (false, true),
            };
            out.push((deny, Category::Hostname, e.text.clone(), m, unv));
        }
        for k in &rules.keys {
            let m = !who.key.is_empty() && k == who.key;
            out.push((deny, Category::Key, k.clone(), m, false));
        }
        for u in &rules.usernames {
            let m = who.username == Some(u.as_str());
            out.push((deny, Category::Username, u.clone(), m, false));
        }
    }
    out.into_iter()
        .map(|(deny, via, text, m, unv)| EntryCheck {
            deny,
            via,
            text,
            outcome: if m {
                EntryOutcome::Matches
            } else if unv && deny {
                EntryOutcome::Unverifiable
            } else {
                EntryOutcome::NoMatch
            },
        })
        .collect()
}

fn step(res: &Resource, role: Role, who: &Who, allowed: bool, reason: Reason) -> Step {
    Step {
        resource: res.name.clone(),
        role,
        allowed,
        reason,
        entries: entry_checks(res, who),
        classic_entries: Vec::new(),
    }
}

impl Decision {
    fn deny(reason: Reason) -> Self {
        Decision {
            allowed: false,
            resource: None,
            via_connection_vars: false,
            reason,
            maproot: false,
        }
    }
}

/// The peer identity used by one check (real values, or the markers of the
/// special-variable lookup).
struct Who<'a> {
    ip: &'a str,
    hostname: Option<&'a str>,
    key: &'a str,
    username: Option<&'a str>,
}

enum Hit {
    Yes(Category, String),
    No,
    Unverifiable(String),
}

/// One IP entry against the peer (`v4`: the peer's IPv4 form, if any).
fn ip_entry_matches(e: &super::server::Entry, ip: &str, v4: Option<u32>) -> bool {
    let hit = match e.v4cidr {
        Some(c) => addr::v4_cidr_match(c, v4),
        None => fuzzy_set_match(&e.text, ip),
    };
    hit || e.re.as_ref().is_some_and(|re| full_match(re, ip))
}

fn match_ips(rules: &Rules, ip: &str) -> Option<String> {
    if ip.is_empty() {
        return None;
    }
    // The peer's IPv4 form, parsed at most once per check.
    let mut v4: Option<Option<u32>> = None;
    rules
        .ips
        .iter()
        .find(|e| {
            let v = match e.v4cidr {
                Some(_) => *v4.get_or_insert_with(|| addr::parse_peer_v4(ip)),
                None => None,
            };
            ip_entry_matches(e, ip, v)
        })
        .map(|e| e.text.clone())
}

/// A hostname entry by name: equal, or a `.domain` suffix.
fn host_entry_direct(e: &super::server::Entry, host: &str) -> bool {
    !host.is_empty()
        && (e.text == host
            || (e.text.starts_with('.')
                && host.len() > e.text.len()
                && host.ends_with(e.text.as_str())))
}

/// A hostname entry as a full regex (the legacy fallback).
fn host_entry_regex(e: &super::server::Entry, host: &str) -> bool {
    !host.is_empty() && e.re.as_ref().is_some_and(|re| full_match(re, host))
}

fn match_hostnames(rules: &Rules, host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    if let Some(e) = rules.hostnames.iter().find(|e| host_entry_direct(e, host)) {
        return Some(e.text.clone());
    }
    rules
        .hostnames
        .iter()
        .find(|e| host_entry_regex(e, host))
        .map(|e| e.text.clone())
}

fn match_list(rules: &Rules, who: &Who) -> Hit {
    if let Some(e) = match_ips(rules, who.ip) {
        return Hit::Yes(Category::Ip, e);
    }
    if let Some(h) = who.hostname {
        if let Some(e) = match_hostnames(rules, h) {
            return Hit::Yes(Category::Hostname, e);
        }
    }
    if let Some(k) = rules
        .keys
        .iter()
        .find(|k| !who.key.is_empty() && *k == who.key)
    {
        return Hit::Yes(Category::Key, k.clone());
    }
    if let Some(u) = who.username {
        if let Some(x) = rules.usernames.iter().find(|x| *x == u) {
            return Hit::Yes(Category::Username, x.clone());
        }
    }
    Hit::No
}

fn deny_hit(res: &Resource, who: &Who) -> Hit {
    match match_list(&res.deny, who) {
        Hit::Yes(c, e) => Hit::Yes(c, e),
        _ => {
            if who.hostname.is_none() {
                if let Some(e) = res.deny.hostnames.first() {
                    return Hit::Unverifiable(e.text.clone());
                }
            }
            Hit::No
        }
    }
}

/// B.5.1 for one entry. `explicit` also runs the deny phase when not
/// admitted (the regex-table lookups need it).
fn check_resource(res: &Resource, who: &Who) -> (bool, Reason) {
    if res.poisoned {
        return (false, Reason::UnresolvedDenyRule);
    }
    match match_list(&res.admit, who) {
        Hit::Yes(via, entry) => match deny_hit(res, who) {
            Hit::Yes(dvia, dentry) => (
                false,
                Reason::Denied {
                    via: dvia,
                    entry: dentry,
                },
            ),
            Hit::Unverifiable(e) => (false, Reason::HostnameUnverifiable { entry: e }),
            Hit::No => (true, Reason::Admitted { via, entry }),
        },
        _ => (false, Reason::NotAdmitted),
    }
}

/// Whether a path rule covers `path`: its name is a prefix ending at a
/// `/`, or equal.
fn covers_path(r: &Resource, path: &str) -> bool {
    path.starts_with(r.name.as_str()) && (r.name.ends_with('/') || r.name.len() == path.len())
}

/// Longest key that is a prefix of `path` ending at a `/`, or equal to it.
fn longest_prefix<'t>(table: &'t BTreeMap<String, Resource>, path: &str) -> Option<&'t Resource> {
    table
        .values()
        .filter(|r| covers_path(r, path))
        .max_by_key(|r| r.name.len())
}

impl ServerPolicy {
    /// Decides a request. Deny by default; the result names the rule that
    /// decided, so servers can log it and `--explain` can show it.
    pub fn check(&self, facts: &ConnFacts, req: Request) -> Decision {
        self.decide(facts, req, &mut None)
    }

    /// [`Self::check`] with the rules it consulted, each with what it
    /// answers alone and how each of its entries compared with the peer
    /// (and, for paths, the covering rules it did not consult). The same
    /// code decides both; only the collection of steps is added.
    pub fn check_explained(&self, facts: &ConnFacts, req: Request) -> Explained {
        let mut tr = Some(Vec::new());
        let decision = self.decide(facts, req, &mut tr);
        Explained {
            decision,
            steps: tr.unwrap_or_default(),
        }
    }

    fn decide(&self, facts: &ConnFacts, req: Request, tr: &mut Tracer) -> Decision {
        match facts.protocol {
            Protocol::Tls => self.check_tls(facts, req, tr),
            Protocol::Classic => self.check_classic(facts, req, tr),
        }
    }

    fn check_tls(&self, f: &ConnFacts, req: Request, tr: &mut Tracer) -> Decision {
        let ip = addr::map_address(f.ip);
        let hostname = f.hostname.filter(|h| !h.is_empty());
        let who = Who {
            ip,
            hostname,
            key: f.key,
            username: None,
        };
        let t = &self.acl;
        match req {
            Request::Path(p) => self.check_path(ip, hostname, f.key, p, tr),
            Request::Literal(n) => self.check_exact(&t.literals, n, &who, tr),
            Request::Variable(n) => self.check_exact(&t.variables, n, &who, tr),
            Request::Query(n) => self.check_exact(&t.queries, n, &who, tr),
            Request::Context(n) => check_regex(&t.classes, n, &who, tr),
            Request::Bundle(n) => check_regex(&t.bundles, n, &who, tr),
            Request::Role(n) => {
                let who = Who {
                    ip: "",
                    hostname: None,
                    key: "",
                    username: Some(f.username),
                };
                check_regex(&t.roles, n, &who, tr)
            }
        }
    }

    fn check_exact(
        &self,
        table: &BTreeMap<String, Resource>,
        name: &str,
        who: &Who,
        tr: &mut Tracer,
    ) -> Decision {
        match table.get(name) {
            None => Decision::deny(Reason::NoMatchingResource),
            Some(r) => {
                let (allowed, reason) = check_resource(r, who);
                if let Some(t) = tr {
                    t.push(step(r, Role::ExactName, who, allowed, reason.clone()));
                }
                Decision {
                    allowed,
                    resource: Some(r.name.clone()),
                    via_connection_vars: false,
                    reason,
                    maproot: false,
                }
            }
        }
    }

    /// B.5.2: the direct longest-prefix check OR the `$(connection.*)`
    /// rewritten check.
    fn check_path(
        &self,
        ip: &str,
        hostname: Option<&str>,
        key: &str,
        path: &str,
        tr: &mut Tracer,
    ) -> Decision {
        let table = &self.acl.paths;
        let me = Who {
            ip,
            hostname,
            key,
            username: None,
        };
        let direct = longest_prefix(table, path).map(|r| {
            let (a, reason) = check_resource(r, &me);
            (r, a, reason)
        });
        if let Some(t) = tr {
            // the covering rules, longest first: the first decides
            let mut cover: Vec<&Resource> =
                table.values().filter(|r| covers_path(r, path)).collect();
            cover.sort_by_key(|r| std::cmp::Reverse(r.name.len()));
            for (i, r) in cover.into_iter().enumerate() {
                let (a, reason) = check_resource(r, &me);
                let role = if i == 0 {
                    Role::LongestPrefix
                } else {
                    Role::ShorterPrefix
                };
                t.push(step(r, role, &me, a, reason));
            }
        }
        if let Some((r, true, reason)) = &direct {
            return Decision {
                allowed: true,
                resource: Some(r.name.clone()),
                via_connection_vars: false,
                reason: reason.clone(),
                maproot: false,
            };
        }
        // special-variable check
        let mut rewritten = path.to_string();
        if !ip.is_empty() {
            rewritten = rewritten.replace(ip, "$(connection.ip)");
        }
        if let Some(h) = hostname {
            rewritten = rewritten.replace(h, "$(connection.hostname)");
        }
        if !key.is_empty() {
            rewritten = rewritten.replace(key, "$(connection.key)");
        }
        if rewritten != path {
            let who = Who {
                ip: "$(connection.ip)",
                hostname: Some("$(connection.hostname)"),
                key: "$(connection.key)",
                username: None,
            };
            if let Some(t) = tr {
                let mut cover: Vec<&Resource> = table
                    .values()
                    .filter(|r| covers_path(r, &rewritten))
                    .collect();
                cover.sort_by_key(|r| std::cmp::Reverse(r.name.len()));
                for (i, r) in cover.into_iter().enumerate() {
                    let (a, reason) = check_resource(r, &who);
                    let role = if i == 0 {
                        Role::RewrittenLongest
                    } else {
                        Role::RewrittenShorter
                    };
                    t.push(step(r, role, &who, a, reason));
                }
            }
            if let Some(r) = longest_prefix(table, &rewritten) {
                let (a, reason) = check_resource(r, &who);
                if a {
                    return Decision {
                        allowed: true,
                        resource: Some(r.name.clone()),
                        via_connection_vars: true,
                        reason,
                        maproot: false,
                    };
                }
            }
        }
        match direct {
            Some((r, _, reason)) => Decision {
                allowed: false,
                resource: Some(r.name.clone()),
                via_connection_vars: false,
                reason,
                maproot: false,
            },
            None => Decision::deny(Reason::NoMatchingResource),
        }
    }

    /// B.9: the classic-protocol decision (first match in policy order,
    /// then every covering deny path, maproot, ifencrypted).
    fn check_classic(&self, f: &ConnFacts, req: Request, tr: &mut Tracer) -> Decision {
        let ip = addr::map_address(f.ip);
        let host = f.hostname.unwrap_or("");
        // IsMatchItemIn on the IP, else the client-claimed hostname against
        // each entry as a regex (IsRegexItemIn)
        let matches = |cl: &addr::ConnList,
                       res: &[(String, Option<addr::Regex>)]|
         -> Option<(Category, String)> {
            if let Some(e) = cl.matching(ip) {
                return Some((Category::Ip, e.to_string()));
            }
            if host.is_empty() {
                return None;
            }
            res.iter()
                .find(|(e, re)| e == host || re.as_ref().is_some_and(|re| full_match(re, host)))
                .map(|(e, _)| (Category::Hostname, e.clone()))
        };
        let empty = LegacyMatchers::default();
        let covers = |a: &LegacyAuth, p: &str| {
            a.path == p
                || a.path == "/"
                || (p.starts_with(a.path.as_str()) && p.as_bytes().get(a.path.len()) == Some(&b'/'))
        };
        let (admits, denies, name, regex): (&[LegacyAuth], &[LegacyAuth], &str, bool) = match req {
            Request::Path(p) => (&self.legacy.admit, &self.legacy.deny, p, false),
            Request::Literal(n) | Request::Variable(n) | Request::Query(n) => {
                (&self.legacy.varadmit, &self.legacy.vardeny, n, false)
            }
            Request::Context(n) => (&self.legacy.varadmit, &self.legacy.vardeny, n, true),
            Request::Bundle(_) | Request::Role(_) => return Decision::deny(Reason::NoLegacyTable),
        };
        let hit = |a: &LegacyAuth| -> bool {
            if regex {
                a.path == name || addr::full_match_str(&a.path, name)
            } else if matches!(req, Request::Path(_)) {
                covers(a, name)
            } else {
                a.path == name
            }
        };
        let Some(ap) = admits.iter().find(|a| hit(a)) else {
            return Decision::deny(Reason::NoMatchingResource);
        };
        let d = self.classic_entry(f, ap, denies, &hit, &matches, &empty, tr);
        if let Some(t) = tr {
            if let Some(first) = t.first_mut() {
                first.allowed = d.allowed;
                first.reason = d.reason.clone();
            }
        }
        d
    }

    /// B.9 from the first covering admit entry on; the steps record it and
    /// every covering deny entry consulted.
    #[allow(clippy::too_many_arguments)]
    fn classic_entry(
        &self,
        f: &ConnFacts,
        ap: &LegacyAuth,
        denies: &[LegacyAuth],
        hit: &dyn Fn(&LegacyAuth) -> bool,
        matches: &ClassicMatcher,
        empty: &LegacyMatchers,
        tr: &mut Tracer,
    ) -> Decision {
        let classic_step = |a: &LegacyAuth, role: Role| Step {
            resource: a.path.clone(),
            role,
            allowed: false,
            reason: Reason::NotAdmitted,
            entries: Vec::new(),
            classic_entries: a.accesslist.clone(),
        };
        if let Some(t) = tr {
            t.push(classic_step(ap, Role::ClassicAdmit));
        }
        if ap.uncertain {
            return Decision {
                resource: Some(ap.path.clone()),
                ..Decision::deny(Reason::UnknownCondition)
            };
        }
        let mut d = Decision {
            allowed: false,
            resource: Some(ap.path.clone()),
            via_connection_vars: false,
            reason: Reason::NotAdmitted,
            maproot: false,
        };
        let apm = ap.compiled.as_ref().unwrap_or(empty);
        d.maproot = matches(&apm.maproot, &apm.maproot_re).is_some();
        let Some((via, entry)) = matches(&apm.access, &apm.access_re) else {
            return d;
        };
        if ap.encrypt && !f.encrypted {
            d.reason = Reason::RequiresEncryption;
            return d;
        }
        for dp in denies.iter().filter(|a| hit(a)) {
            let dpm = dp.compiled.as_ref().unwrap_or(empty);
            let refusal = if dp.poisoned {
                Some(Reason::UnresolvedDenyRule)
            } else {
                matches(&dpm.access, &dpm.access_re).map(|(dvia, e)| Reason::Denied {
                    via: dvia,
                    entry: e,
                })
            };
            if let Some(t) = tr {
                // a deny entry "admits" alone when nothing in it refuses the peer
                t.push(Step {
                    allowed: refusal.is_none(),
                    reason: refusal.clone().unwrap_or(Reason::NotAdmitted),
                    ..classic_step(dp, Role::ClassicDeny)
                });
            }
            if let Some(r) = refusal {
                d.reason = r;
                d.resource = Some(dp.path.clone());
                return d;
            }
        }
        d.allowed = true;
        d.reason = Reason::Admitted { via, entry };
        d
    }

    /// The connection-level check for allowconnects, denyconnects,
    /// allowallconnects, trustkeysfrom and allowlegacyconnects: the entry
    /// that matches `ip` (IsMatchItemIn), if any.
    pub fn conn_list_match<'s>(list: &'s addr::ConnList, ip: &str) -> Option<&'s str> {
        list.matching(addr::map_address(ip))
    }

    /// Whether a peer at `ip` may connect at all (allowconnects, then denyconnects).
    pub fn connection_allowed(&self, ip: &str) -> bool {
        let ip = addr::map_address(ip);
        let c = &self.control;
        (c.allowconnects.is_empty() || c.allowconnects.contains(ip)) && !c.denyconnects.contains(ip)
    }

    /// EXEC step 2: `allowusers` names `user` exactly (3.21's `AllowedUser`;
    /// an empty name never matches).
    pub fn allows_exec_user(&self, user: &str) -> bool {
        !user.is_empty() && self.control.allowusers.iter().any(|u| u == user)
    }

    /// EXEC step 3 (`cf-runagent -s`): `name` is a class defined on this
    /// server, or an anchored regex matching one (3.21's `MatchClasses`).
    pub fn defines_class(&self, name: &str) -> bool {
        if self.defined_classes.contains(name) {
            return true;
        }
        match addr::compile(name) {
            Some(re) => self
                .defined_classes
                .iter()
                .any(|c| addr::full_match(&re, c)),
            None => false,
        }
    }

    /// Expands a request path that does not start with `/` through the
    /// registered shortcuts (B.7), substituting `$(connection.*)` with the
    /// peer's values. `None` when no shortcut applies.
    pub fn expand_shortcut(
        &self,
        request: &str,
        ip: &str,
        hostname: Option<&str>,
        key: &str,
    ) -> Option<String> {
        if request.starts_with('/') {
            return None;
        }
        let (first, rest) = match request.find('/') {
            Some(i) => (&request[..i], &request[i..]),
            None => (request, ""),
        };
        let target = self.shortcuts.get(first)?;
        let t = target
            .replace("$(connection.ip)", addr::map_address(ip))
            .replace("$(connection.hostname)", hostname.unwrap_or(""))
            .replace("$(connection.key)", key);
        Some(format!("{t}{rest}"))
    }
}

/// One regex-table rule alone (B.5.3): deny first (poisoned, a matching
/// deny entry, an unverifiable deny_hostnames), else admit, else not admitted.
fn regex_rule(r: &Resource, who: &Who) -> (bool, Reason) {
    if r.poisoned {
        return (false, Reason::UnresolvedDenyRule);
    }
    match deny_hit(r, who) {
        Hit::Yes(via, entry) => return (false, Reason::Denied { via, entry }),
        Hit::Unverifiable(entry) => return (false, Reason::HostnameUnverifiable { entry }),
        Hit::No => {}
    }
    match match_list(&r.admit, who) {
        Hit::Yes(via, entry) => (true, Reason::Admitted { via, entry }),
        _ => (false, Reason::NotAdmitted),
    }
}

/// B.5.3: every entry whose regex fully matches `name` is evaluated; any
/// explicit deny wins, else any admit, else deny.
fn check_regex(
    table: &BTreeMap<String, Resource>,
    name: &str,
    who: &Who,
    tr: &mut Tracer,
) -> Decision {
    let mut admitted: Option<Decision> = None;
    let mut denied: Option<Decision> = None;
    let mut any = None;
    for r in table.values() {
        if !r.name_re.as_ref().is_some_and(|re| full_match(re, name)) {
            if let Some(t) = tr {
                t.push(step(
                    r,
                    Role::RegexNoMatch,
                    who,
                    false,
                    Reason::NoMatchingResource,
                ));
            }
            continue;
        }
        any = Some(r.name.clone());
        let (allowed, reason) = regex_rule(r, who);
        if let Some(t) = tr {
            t.push(step(r, Role::RegexMatch, who, allowed, reason.clone()));
        }
        let decision = Decision {
            allowed,
            resource: Some(r.name.clone()),
            via_connection_vars: false,
            reason,
            maproot: false,
        };
        if allowed {
            admitted.get_or_insert(decision);
        } else if decision.reason != Reason::NotAdmitted {
            denied.get_or_insert(decision);
            if tr.is_none() {
                break; // the first deny decides
            }
        }
    }
    denied.or(admitted).unwrap_or(Decision {
        resource: any,
        ..Decision::deny(if table.is_empty() {
            Reason::NoMatchingResource
        } else {
            Reason::NotAdmitted
        })
    })
}

impl ServerPolicy {
    /// A one-paragraph human explanation of a decision (for `--explain`
    /// and for logs): the verdict, the deciding entry and where in the
    /// policy it was written.
    pub fn explain(&self, d: &Decision) -> String {
        let verdict = if d.allowed { "ALLOW" } else { "DENY" };
        let origins = d
            .resource
            .as_ref()
            .and_then(|name| {
                let t = &self.acl;
                [
                    &t.paths,
                    &t.classes,
                    &t.variables,
                    &t.literals,
                    &t.queries,
                    &t.roles,
                    &t.bundles,
                ]
                .iter()
                .find_map(|tab| tab.get(name))
            })
            .map(|r| {
                r.origins
                    .iter()
                    .map(|(f, l)| format!("{f}:{l}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let why = match &d.reason {
            Reason::NoMatchingResource => {
                "no access rule covers the request (default deny)".to_string()
            }
            Reason::Admitted { via, entry } => format!("admitted by {via:?} rule '{entry}'"),
            Reason::Denied { via, entry } => {
                format!("denied by {via:?} rule '{entry}' (deny beats admit)")
            }
            Reason::NotAdmitted => {
                "the deciding entry has no admit rule matching this peer".to_string()
            }
            Reason::HostnameUnverifiable { entry } => {
                format!("deny_hostnames rule '{entry}' cannot be checked because the peer's hostname is unknown (rcf denies; 3.21 would skip the rule)")
            }
            Reason::UnresolvedDenyRule => {
                "a deny rule of the deciding entry could not be evaluated (an unresolved variable or an invalid entry)".to_string()
            }
            Reason::UnknownCondition => {
                "the first matching classic entry comes from an access promise whose condition rcf cannot evaluate".to_string()
            }
            Reason::RequiresEncryption => {
                "the entry requires encryption (ifencrypted) and the request was not encrypted"
                    .to_string()
            }
            Reason::NoLegacyTable => {
                "the classic protocol has no table for this kind of request".to_string()
            }
        };
        let mut s = format!("{verdict}: {why}");
        if let Some(r) = &d.resource {
            s.push_str(&format!("; entry '{r}'"));
            if d.via_connection_vars {
                s.push_str(" (matched after substituting $(connection.*))");
            }
        }
        if !origins.is_empty() {
            s.push_str(&format!(" from {origins}"));
        }
        if d.maproot {
            s.push_str("; maproot applies");
        }
        s
    }
}
