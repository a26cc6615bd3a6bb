//! Loading a server policy: `body server control`, `access:` and `roles:`
//! promises into an immutable [`ServerPolicy`] (SEMANTICS.md §A, §B).

use super::addr::Regex;
use super::addr::{self, ConnList};
use super::ast::*;
use super::eval::{dirname, Eval, Here, LoadOptions, Tri, Value};
use super::{Canon, Diagnostic, PolicyErrors, PolicySource};
use std::collections::BTreeMap;

/// Longest path promiser accepted (Linux PATH_MAX).
pub const PATH_MAX: usize = 4096;

/// The default `allowciphers` for TLS ≤ 1.2.
pub const DEFAULT_CIPHERS: &str = "AES256-GCM-SHA384:AES256-SHA";
/// The default TLS 1.3 suite.
pub const DEFAULT_TLS13_SUITES: &str = "TLS_AES_256_GCM_SHA384";

/// Minimum TLS version (`allowtlsversion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsMinVersion {
    /// TLS 1.0.
    V1_0,
    /// TLS 1.1 (3.21's real default).
    V1_1,
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// `body server control`, with 3.21's defaults (SEMANTICS.md A.1).
#[derive(Debug, Clone)]
pub struct ServerControl {
    /// IPs that may connect; empty = everyone.
    pub allowconnects: ConnList,
    /// IPs refused at connect.
    pub denyconnects: ConnList,
    /// IPs allowed several simultaneous connections.
    pub allowallconnects: ConnList,
    /// IPs whose new or changed keys are trusted.
    pub trustkeysfrom: ConnList,
    /// IPs allowed to use the classic protocol.
    pub allowlegacyconnects: ConnList,
    /// Users allowed to EXEC, stored order (reverse of policy, deduplicated).
    pub allowusers: Vec<String>,
    /// Thread limit (default 30).
    pub maxconnections: u32,
    /// `allowciphers` as written, if set.
    pub allowciphers: Option<String>,
    /// `allowtlsversion` as written, if set.
    pub allowtlsversion: Option<String>,
    /// Effective minimum TLS version (default 1.1; unknown strings give 1.0).
    pub tls_min_version: TlsMinVersion,
    /// Bind address or host; empty = dual-stack wildcard.
    pub bindtointerface: String,
    /// Listening port (default 5308).
    pub port: u16,
    /// Command run by EXEC; empty makes EXEC fail.
    pub cfruncommand: String,
    /// Refuse STAT with clock drift over an hour (default true).
    pub denybadclocks: bool,
    /// Classic protocol: log encrypted transfers.
    pub logencryptedtransfers: bool,
    /// Parsed, never used.
    pub logallconnections: bool,
    /// Syslog facility (default LOG_USER).
    pub serverfacility: String,
    /// Enterprise call-collect interval, in seconds (minutes × 60).
    pub call_collect_interval: u32,
    /// Enterprise collect window in seconds (default 30).
    pub collect_window: u32,
    /// Enterprise "listen" switch (Community always listens).
    pub listen: bool,
    /// Some value still holds an unresolved `$(...)`: cf-serverd would
    /// schedule a reload.
    pub unresolved: bool,
}

impl Default for ServerControl {
    fn default() -> Self {
        ServerControl {
            allowconnects: ConnList::default(),
            denyconnects: ConnList::default(),
            allowallconnects: ConnList::default(),
            trustkeysfrom: ConnList::default(),
            allowlegacyconnects: ConnList::default(),
            allowusers: Vec::new(),
            maxconnections: 30,
            allowciphers: None,
            allowtlsversion: None,
            tls_min_version: TlsMinVersion::V1_1,
            bindtointerface: String::new(),
            port: 5308,
            cfruncommand: String::new(),
            denybadclocks: true,
            logencryptedtransfers: false,
            logallconnections: false,
            serverfacility: "LOG_USER".into(),
            call_collect_interval: 0,
            collect_window: 30,
            listen: true,
            unresolved: false,
        }
    }
}

impl ServerControl {
    /// OpenSSL-style cipher names for TLS ≤ 1.2 (the parts not starting `TLS_`).
    pub fn tls12_ciphers(&self) -> Vec<String> {
        let s = self.allowciphers.as_deref().unwrap_or(DEFAULT_CIPHERS);
        s.split(':')
            .filter(|p| !p.is_empty() && !p.starts_with("TLS_"))
            .map(str::to_string)
            .collect()
    }
    /// TLS 1.3 suites. Empty when `allowciphers` is set without any `TLS_`
    /// part, which disables TLS 1.3 (the 3.21 trap).
    pub fn tls13_suites(&self) -> Vec<String> {
        let s = self.allowciphers.as_deref().unwrap_or(DEFAULT_TLS13_SUITES);
        s.split(':')
            .filter(|p| p.starts_with("TLS_"))
            .map(str::to_string)
            .collect()
    }
}

/// A rule entry with its regex form precompiled (for the fallbacks).
#[derive(Debug, Clone)]
pub struct Entry {
    /// As written (after expansion).
    pub text: String,
    pub(crate) re: Option<Regex>,
    /// An IPv4 CIDR rule as (network, mask), parsed once here instead of
    /// at every request's ACL check.
    pub(crate) v4cidr: Option<(u32, u32)>,
}

impl Entry {
    fn new(text: &str, cache: &mut addr::RegexCache) -> Self {
        Entry {
            text: text.to_string(),
            re: cache.get(text),
            v4cidr: addr::compile_v4_cidr(text),
        }
    }
}

/// Admit or deny lists of one resource.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// IP rules, sorted by byte order.
    pub ips: Vec<Entry>,
    /// Hostname rules, sorted by reversed-string order.
    pub hostnames: Vec<Entry>,
    /// Key ids, sorted by byte order.
    pub keys: Vec<String>,
    /// Usernames (roles only).
    pub usernames: Vec<String>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.ips.is_empty()
            && self.hostnames.is_empty()
            && self.keys.is_empty()
            && self.usernames.is_empty()
    }
    fn sort(&mut self) {
        self.ips
            .sort_by(|a, b| a.text.as_bytes().cmp(b.text.as_bytes()));
        self.keys.sort();
        self.hostnames
            .sort_by(|a, b| a.text.bytes().rev().cmp(b.text.bytes().rev()));
    }
}

/// One resource of an ACL table.
#[derive(Debug, Clone, Default)]
pub struct Resource {
    /// Resource name (canonical path, handle, regex, query name...).
    pub name: String,
    /// Admit lists.
    pub admit: Rules,
    /// Deny lists.
    pub deny: Rules,
    /// Where the promises that built it are (`file:line`), for `--explain`.
    pub origins: Vec<(String, u32)>,
    /// A deny rule of this resource holds an unresolved variable: rcf
    /// denies every request the resource decides (cf-serverd would keep the
    /// literal text, which never matches, and so admit).
    pub poisoned: bool,
    pub(crate) name_re: Option<Regex>,
}

impl Resource {
    /// Whether it holds no rule at all.
    pub fn is_empty(&self) -> bool {
        self.admit.is_empty() && self.deny.is_empty()
    }
}

/// The TLS ACL tables, each sorted by resource name (byte order).
#[derive(Debug, Clone, Default)]
pub struct AclTables {
    /// `paths_acl`.
    pub paths: BTreeMap<String, Resource>,
    /// `classes_acl` (resource_type context).
    pub classes: BTreeMap<String, Resource>,
    /// `vars_acl` (resource_type variable; unused by TLS VAR in 3.21).
    pub variables: BTreeMap<String, Resource>,
    /// `literals_acl`, keyed by handle.
    pub literals: BTreeMap<String, Resource>,
    /// `query_acl`.
    pub queries: BTreeMap<String, Resource>,
    /// `roles_acl`.
    pub roles: BTreeMap<String, Resource>,
    /// `bundles_acl`.
    pub bundles: BTreeMap<String, Resource>,
}

/// One entry of the classic-protocol lists (`Auth`).
#[derive(Debug, Clone, Default)]
pub struct LegacyAuth {
    /// Path (no trailing slash except `/`) or object name.
    pub path: String,
    /// Entries in insertion order (cf-serverd prepends, so it prints them reversed).
    pub accesslist: Vec<String>,
    /// maproot entries in insertion order.
    pub maproot: Vec<String>,
    /// ifencrypted.
    pub encrypt: bool,
    /// Created by an access promise whose condition rcf could not
    /// evaluate: in 3.21 it may not exist at this place in policy order,
    /// so when it is the first match the classic check denies
    /// ([`super::Reason::UnknownCondition`]).
    pub uncertain: bool,
    /// Deny side: the promise's deny list holds an entry rcf cannot
    /// evaluate (unresolved variable, invalid entry), so every request this
    /// entry covers is denied (as [`Resource::poisoned`] for TLS).
    pub poisoned: bool,
    /// Precompiled matchers for `accesslist` and `maproot` (built once at
    /// the end of a load, so requests never compile regexes).
    pub(crate) compiled: Option<LegacyMatchers>,
}

/// Precompiled classic matchers: IsMatchItemIn lists plus each entry as a
/// hostname regex.
#[derive(Debug, Clone, Default)]
pub(crate) struct LegacyMatchers {
    pub access: ConnList,
    pub access_re: Vec<(String, Option<Regex>)>,
    pub maproot: ConnList,
    pub maproot_re: Vec<(String, Option<Regex>)>,
}

impl LegacyAuth {
    fn compile(&mut self, cache: &mut addr::RegexCache) {
        let mut re = |l: &[String]| l.iter().map(|e| (e.clone(), cache.get(e))).collect();
        self.compiled = Some(LegacyMatchers {
            access: ConnList::from_policy_order(self.accesslist.iter().map(String::as_str)),
            access_re: re(&self.accesslist),
            maproot: ConnList::from_policy_order(self.maproot.iter().map(String::as_str)),
            maproot_re: re(&self.maproot),
        });
    }
}

/// The classic-protocol ACLs (B.9).
#[derive(Debug, Clone, Default)]
pub struct LegacyAcl {
    /// Path admit list, policy order.
    pub admit: Vec<LegacyAuth>,
    /// Path deny list, policy order.
    pub deny: Vec<LegacyAuth>,
    /// Literal/context/variable/query admit list.
    pub varadmit: Vec<LegacyAuth>,
    /// Literal/context/variable/query deny list.
    pub vardeny: Vec<LegacyAuth>,
}

/// The classic entry for `path`, created at the end when missing.
/// `uncertain`: the promise creating it may not apply in 3.21, so the
/// entry's place in policy order is not known (see [`LegacyAuth::uncertain`]).
fn get_or_create<'l>(
    list: &'l mut Vec<LegacyAuth>,
    path: &str,
    uncertain: bool,
) -> &'l mut LegacyAuth {
    let key = if path.len() > 1 {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if let Some(i) = list.iter().position(|a| a.path == key) {
        return &mut list[i];
    }
    list.push(LegacyAuth {
        path: key.to_string(),
        uncertain,
        ..Default::default()
    });
    list.last_mut().expect("just pushed")
}

/// A fully loaded, immutable server policy.
#[derive(Debug, Clone, Default)]
pub struct ServerPolicy {
    /// `body server control`.
    pub control: ServerControl,
    /// TLS ACLs.
    pub acl: AclTables,
    /// Classic ACLs.
    pub legacy: LegacyAcl,
    /// Shortcut name → raw promiser.
    pub shortcuts: BTreeMap<String, String>,
    /// Some hostname rule exists: do reverse DNS per TLS connection.
    pub reverse_dns: bool,
    /// Warnings (unknown functions, dropped rules, cf-serverd's load-time
    /// complaints).
    pub warnings: Vec<Diagnostic>,
    /// Informational load messages cf-serverd logs at INFO/VERBOSE (B.3).
    pub notes: Vec<Diagnostic>,
    /// Every policy file loaded, in load order.
    pub files: Vec<String>,
    /// Classes defined on this server after evaluation (hard classes and
    /// `bundle common` classes), for EXEC's class selection (`cf-runagent -s`).
    pub defined_classes: std::collections::BTreeSet<String>,
}

const SERVER_CONTROL_ATTRS: &[&str] = &[
    "allowallconnects",
    "allowconnects",
    "allowlegacyconnects",
    "allowciphers",
    "allowtlsversion",
    "allowusers",
    "auditing",
    "bindtointerface",
    "cfruncommand",
    "call_collect_interval",
    "collect_window",
    "denybadclocks",
    "denyconnects",
    "dynamicaddresses",
    "hostnamekeys",
    "keycacheTTL",
    "logallconnections",
    "logencryptedtransfers",
    "maxconnections",
    "port",
    "serverfacility",
    "skipverify",
    "trustkeysfrom",
    "listen",
];

const COMMON_PROMISE_ATTRS: &[&str] = &[
    "action",
    "classes",
    "comment",
    "depends_on",
    "handle",
    "if",
    "ifvarclass",
    "unless",
    "meta",
    "with",
];

const ACCESS_LIST_ATTRS: &[&str] = &[
    "admit",
    "deny",
    "admit_ips",
    "admit_hostnames",
    "admit_keys",
    "deny_ips",
    "deny_hostnames",
    "deny_keys",
    "maproot",
];

const ACCESS_ATTRS: &[&str] = &[
    "admit",
    "deny",
    "admit_ips",
    "admit_hostnames",
    "admit_keys",
    "deny_ips",
    "deny_hostnames",
    "deny_keys",
    "maproot",
    "ifencrypted",
    "resource_type",
    "shortcut",
    "report_data_select",
];

struct Loader<'a> {
    ev: Eval<'a>,
    /// Shortcut names an access promise of unknown applicability may have
    /// registered first: no later promise registers them.
    blocked_shortcuts: std::collections::BTreeSet<String>,
    /// Deny rules of path access promises whose promiser rcf could not
    /// expand: (deny lists, poisoned, origin). They could name any path,
    /// so at the end they are added to every path rule.
    floating_denies: Vec<(Rules, bool, (String, u32))>,
    regexes: addr::RegexCache,
    files: Vec<PolicyFile>,
    errors: Vec<Diagnostic>,
    notes: Vec<Diagnostic>,
}

/// A string with the policy line it came from.
type Located = (String, u32);

fn diag_at(file: &str, pos: Pos, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        message: message.into(),
    }
}

fn diag(file: &str, line: u32, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line,
        col: 0,
        message: message.into(),
    }
}

/// Loads, evaluates and checks a server policy. Either the whole new policy
/// comes back, or every error found (each with `file:line`): nothing is ever
/// half-applied, so a running server keeps its last good policy when this
/// fails.
pub fn load(src: &dyn PolicySource, opts: &LoadOptions) -> Result<ServerPolicy, PolicyErrors> {
    let mut l = Loader {
        ev: Eval::new(src, opts),
        blocked_shortcuts: Default::default(),
        floating_denies: Vec::new(),
        regexes: addr::RegexCache::default(),
        files: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
    };
    l.load_all(&opts.file);
    if !l.errors.is_empty() {
        return Err(PolicyErrors {
            errors: l.errors,
            warnings: l.ev.warnings,
        });
    }
    l.check_var_class_attrs();
    if !l.errors.is_empty() {
        return Err(PolicyErrors {
            errors: l.errors,
            warnings: l.ev.warnings,
        });
    }
    l.eval_commons();
    let mut pol = ServerPolicy {
        files: l.files.iter().map(|f| f.path.clone()).collect(),
        ..Default::default()
    };
    l.server_control(&mut pol.control);
    l.server_bundles(&mut pol);
    if !l.errors.is_empty() {
        return Err(PolicyErrors {
            errors: l.errors,
            warnings: l.ev.warnings,
        });
    }
    for list in [
        &mut pol.legacy.admit,
        &mut pol.legacy.deny,
        &mut pol.legacy.varadmit,
        &mut pol.legacy.vardeny,
    ] {
        for a in list.iter_mut() {
            a.compile(&mut l.regexes);
        }
    }
    pol.warnings = std::mem::take(&mut l.ev.warnings);
    pol.notes = l.notes;
    pol.defined_classes = l.ev.classes.clone();
    Ok(pol)
}

mod access;
mod control;
mod loading;
