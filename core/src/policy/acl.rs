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
            let hit = match e.v4cidr {
                Some(c) => {
                    addr::v4_cidr_match(c, *v4.get_or_insert_with(|| addr::parse_peer_v4(ip)))
                }
                None => fuzzy_set_match(&e.text, ip),
            };
            hit || e.re.as_ref().is_some_and(|re| full_match(re, ip))
        })
        .map(|e| e.text.clone())
}

fn match_hostnames(rules: &Rules, host: &str) -> Option<String> {
    if host.is_empty() {
        return None;
    }
    let direct = rules.hostnames.iter().find(|e| {
        e.text == host
            || (e.text.starts_with('.')
                && host.len() > e.text.len()
                && host.ends_with(e.text.as_str()))
    });
    if let Some(e) = direct {
        return Some(e.text.clone());
    }
    // legacy fallback: each entry as a full regex
    rules
        .hostnames
        .iter()
        .find(|e| e.re.as_ref().is_some_and(|re| full_match(re, host)))
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

/// Longest key that is a prefix of `path` ending at a `/`, or equal to it.
fn longest_prefix<'t>(table: &'t BTreeMap<String, Resource>, path: &str) -> Option<&'t Resource> {
    table
        .values()
        .filter(|r| {
            path.starts_with(r.name.as_str())
                && (r.name.ends_with('/') || r.name.len() == path.len())
        })
        .max_by_key(|r| r.name.len())
}

impl ServerPolicy {
    /// Decides a request. Deny by default; the result names the rule that
    /// decided, so servers can log it and `--explain` can show it.
    pub fn check(&self, facts: &ConnFacts, req: Request) -> Decision {
        match facts.protocol {
            Protocol::Tls => self.check_tls(facts, req),
            Protocol::Classic => self.check_classic(facts, req),
        }
    }

    fn check_tls(&self, f: &ConnFacts, req: Request) -> Decision {
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
            Request::Path(p) => self.check_path(ip, hostname, f.key, p),
            Request::Literal(n) => self.check_exact(&t.literals, n, &who),
            Request::Variable(n) => self.check_exact(&t.variables, n, &who),
            Request::Query(n) => self.check_exact(&t.queries, n, &who),
            Request::Context(n) => check_regex(&t.classes, n, &who),
            Request::Bundle(n) => check_regex(&t.bundles, n, &who),
            Request::Role(n) => {
                let who = Who {
                    ip: "",
                    hostname: None,
                    key: "",
                    username: Some(f.username),
                };
                check_regex(&t.roles, n, &who)
            }
        }
    }

    fn check_exact(&self, table: &BTreeMap<String, Resource>, name: &str, who: &Who) -> Decision {
        match table.get(name) {
            None => Decision::deny(Reason::NoMatchingResource),
            Some(r) => {
                let (allowed, reason) = check_resource(r, who);
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
    fn check_path(&self, ip: &str, hostname: Option<&str>, key: &str, path: &str) -> Decision {
        let table = &self.acl.paths;
        let direct = longest_prefix(table, path).map(|r| {
            let (a, reason) = check_resource(
                r,
                &Who {
                    ip,
                    hostname,
                    key,
                    username: None,
                },
            );
            (r, a, reason)
        });
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
            if let Some(r) = longest_prefix(table, &rewritten) {
                let who = Who {
                    ip: "$(connection.ip)",
                    hostname: Some("$(connection.hostname)"),
                    key: "$(connection.key)",
                    username: None,
                };
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
    fn check_classic(&self, f: &ConnFacts, req: Request) -> Decision {
        let ip = addr::map_address(f.ip);
        let host = f.hostname.unwrap_or("");
        // IsMatchItemIn on the IP, else the client-claimed hostname against
        // each entry as a regex (IsRegexItemIn)
        let matches = |cl: &addr::ConnList,
                       res: &[(String, Option<regex::Regex>)]|
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
        let apm = ap.compiled.as_ref().unwrap_or(&empty);
        d.maproot = matches(&apm.maproot, &apm.maproot_re).is_some();
        let Some((via, entry)) = matches(&apm.access, &apm.access_re) else {
            return d;
        };
        if ap.encrypt && !f.encrypted {
            d.reason = Reason::RequiresEncryption;
            return d;
        }
        for dp in denies.iter().filter(|a| hit(a)) {
            if dp.poisoned {
                d.reason = Reason::UnresolvedDenyRule;
                d.resource = Some(dp.path.clone());
                return d;
            }
            let dpm = dp.compiled.as_ref().unwrap_or(&empty);
            if let Some((dvia, e)) = matches(&dpm.access, &dpm.access_re) {
                d.reason = Reason::Denied {
                    via: dvia,
                    entry: e,
                };
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

/// B.5.3: every entry whose regex fully matches `name` is evaluated; any
/// explicit deny wins, else any admit, else deny.
fn check_regex(table: &BTreeMap<String, Resource>, name: &str, who: &Who) -> Decision {
    let mut admitted: Option<Decision> = None;
    let mut any = None;
    for r in table.values() {
        if !r.name_re.as_ref().is_some_and(|re| full_match(re, name)) {
            continue;
        }
        any = Some(r.name.clone());
        if r.poisoned {
            return Decision {
                allowed: false,
                resource: Some(r.name.clone()),
                via_connection_vars: false,
                reason: Reason::UnresolvedDenyRule,
                maproot: false,
            };
        }
        match deny_hit(r, who) {
            Hit::Yes(via, entry) => {
                return Decision {
                    allowed: false,
                    resource: Some(r.name.clone()),
                    via_connection_vars: false,
                    reason: Reason::Denied { via, entry },
                    maproot: false,
                }
            }
            Hit::Unverifiable(entry) => {
                return Decision {
                    allowed: false,
                    resource: Some(r.name.clone()),
                    via_connection_vars: false,
                    reason: Reason::HostnameUnverifiable { entry },
                    maproot: false,
                }
            }
            Hit::No => {}
        }
        if admitted.is_none() {
            if let Hit::Yes(via, entry) = match_list(&r.admit, who) {
                admitted = Some(Decision {
                    allowed: true,
                    resource: Some(r.name.clone()),
                    via_connection_vars: false,
                    reason: Reason::Admitted { via, entry },
                    maproot: false,
                });
            }
        }
    }
    admitted.unwrap_or(Decision {
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
