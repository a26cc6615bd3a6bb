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

impl<'a> Loader<'a> {
    /// Reads and parses one file (errors are recorded against the
    /// including `from` position). Returns whether it was added.
    fn read_parse(&mut self, path: &str, from: Option<(&str, u32)>) -> bool {
        if self.files.len() >= super::eval::MAX_FILES {
            let (f, line) = from.unwrap_or((path, 0));
            self.errors.push(diag(
                f,
                line,
                format!("more than {} policy files", super::eval::MAX_FILES),
            ));
            return false;
        }
        let bytes = match self.ev.src.read(path) {
            Ok(b) => b,
            Err(e) => {
                let (f, line) = from.unwrap_or((path, 0));
                self.errors.push(diag(
                    f,
                    line,
                    format!("cannot read policy file '{path}': {e}"),
                ));
                return false;
            }
        };
        if bytes.len() > super::parse::MAX_FILE_SIZE {
            self.errors.push(diag(
                path,
                0,
                format!("policy file too large ({} bytes)", bytes.len()),
            ));
            return false;
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        match super::parse::parse_policy(path, &text) {
            Ok(p) => {
                self.files.push(p);
                true
            }
            Err(e) => {
                self.errors.push(Diagnostic {
                    file: e.file,
                    line: e.line,
                    col: e.col,
                    message: e.expected,
                });
                false
            }
        }
    }

    /// The `inputs` of a file's `body common control` / `body file
    /// control`: resolved paths (relative ones against the file's
    /// directory) with their line, plus the unresolved entries.
    fn inputs_of(&mut self, idx: usize) -> (Vec<Located>, Vec<Located>) {
        let path = self.files[idx].path.clone();
        let attrs: Vec<Constraint> = self.files[idx]
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Body(body)
                    if body.name == "control" && (body.kind == "common" || body.kind == "file") =>
                {
                    Some(body)
                }
                _ => None,
            })
            .flat_map(|body| body.attrs.iter().filter(|a| a.lval == "inputs").cloned())
            .collect();
        let mut inputs = Vec::new();
        let mut unresolved_all = Vec::new();
        {
            for a in &attrs {
                let here = Here {
                    file: &path,
                    scope: "control_common",
                    line: a.pos.line,
                };
                self.ev.take_unknowns();
                let cond = self.ev.class_expr(&a.guard, &here).unwrap_or(Tri::False);
                let why = self.ev.take_unknowns();
                if cond == Tri::False {
                    continue;
                }
                let items: Vec<Rval> = match &a.rval {
                    Rval::List(l) => l.clone(),
                    other => vec![other.clone()],
                };
                for it in &items {
                    let mut unresolved = Vec::new();
                    let v = self.ev.eval_rval_lenient(it, &here, &mut unresolved);
                    if !unresolved.is_empty() {
                        unresolved_all.push((unresolved.join(", "), a.pos.line));
                        continue;
                    }
                    let vals = match v {
                        Value::List(l) => l,
                        Value::Scalar(s) => vec![s],
                    };
                    for x in vals {
                        let full = if x.starts_with('/') {
                            x
                        } else {
                            format!("{}/{}", dirname(&path), x)
                        };
                        if cond == Tri::Unknown && self.ev.uncertain_files.insert(full.clone()) {
                            self.ev.warn(&here, format!("inputs entry '{full}' is loaded under a condition rcf cannot evaluate ({}); every promise in it is treated as unknown (deny rules apply, admit rules do not)", why.join(", ")));
                        }
                        inputs.push((full, a.pos.line));
                    }
                }
            }
        }
        (inputs, unresolved_all)
    }

    /// Loads the main file and, to a fixpoint, every input the policy
    /// names (inputs may depend on variables defined in other inputs, as
    /// in the masterfiles framework). Cycles in the final include graph
    /// are refused.
    fn load_all(&mut self, root: &str) {
        if !self.read_parse(root, None) {
            return;
        }
        let mut edges: Vec<(usize, String, u32)> = Vec::new();
        loop {
            self.eval_commons();
            let mut added = false;
            // depth-first pre-order, so files end up in include order
            let mut visited: Vec<bool> = vec![false; self.files.len()];
            let root_path = self.files[0].path.clone();
            let mut todo: Vec<(String, Option<(String, u32)>)> = vec![(root_path, None)];
            while let Some((path, from)) = todo.pop() {
                let idx = match self.files.iter().position(|f| f.path == path) {
                    Some(i) => i,
                    None => {
                        let fr = from.as_ref().map(|(f, l)| (f.as_str(), *l));
                        if !self.read_parse(&path, fr) {
                            continue;
                        }
                        added = true;
                        self.files.len() - 1
                    }
                };
                visited.resize(self.files.len(), false);
                if visited[idx] {
                    continue;
                }
                visited[idx] = true;
                let (inputs, _) = self.inputs_of(idx);
                let me = self.files[idx].path.clone();
                for (inp, line) in inputs.into_iter().rev() {
                    if !edges.iter().any(|(f, t, _)| *f == idx && *t == inp) {
                        edges.push((idx, inp.clone(), line));
                    }
                    todo.push((inp, Some((me.clone(), line))));
                }
            }
            if !added || !self.errors.is_empty() {
                break;
            }
        }
        if !self.errors.is_empty() {
            return;
        }
        for idx in 0..self.files.len() {
            let (_, unresolved) = self.inputs_of(idx);
            let file = self.files[idx].path.clone();
            for (names, line) in unresolved {
                self.ev.warnings.push(diag(
                    &file,
                    line,
                    format!("inputs: unresolved variable(s) {names}; entry skipped"),
                ));
            }
        }
        // cycle detection on the include graph
        let index: BTreeMap<&str, usize> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.as_str(), i))
            .collect();
        let n = self.files.len();
        let mut adj: Vec<Vec<(usize, u32)>> = vec![Vec::new(); n];
        for (f, t, line) in &edges {
            if let Some(&ti) = index.get(t.as_str()) {
                adj[*f].push((ti, *line));
            }
        }
        let mut state = vec![0u8; n];
        let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
        let mut path: Vec<usize> = vec![0];
        state[0] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if *next < adj[node].len() {
                let (child, line) = adj[node][*next];
                *next += 1;
                if state[child] == 1 {
                    let pos = path.iter().position(|&p| p == child).unwrap_or(0);
                    let mut chain: Vec<&str> = path[pos..]
                        .iter()
                        .map(|&i| self.files[i].path.as_str())
                        .collect();
                    chain.push(self.files[child].path.as_str());
                    let msg = format!("include cycle refused: {}", chain.join(" -> "));
                    let from = self.files[node].path.clone();
                    self.errors.push(diag(&from, line, msg));
                    return;
                }
                if state[child] == 0 {
                    state[child] = 1;
                    stack.push((child, 0));
                    path.push(child);
                }
            } else {
                state[node] = 2;
                stack.pop();
                path.pop();
            }
        }
    }

    /// Unknown attributes in the `vars:` and `classes:` promises the server
    /// evaluates (common and server bundles) are errors, like cf-promises.
    fn check_var_class_attrs(&mut self) {
        const VARS: &[&str] = &[
            "string", "int", "real", "slist", "ilist", "rlist", "data", "policy",
        ];
        const CLASSES: &[&str] = &[
            "expression",
            "and",
            "or",
            "xor",
            "not",
            "dist",
            "select_class",
            "scope",
            "persistence",
        ];
        for f in &self.files {
            for b in &f.blocks {
                let Block::Bundle(b) = b else { continue };
                if b.kind != "common" && b.kind != "server" {
                    continue;
                }
                for sec in &b.sections {
                    let known = match sec.promise_type.as_str() {
                        "vars" => VARS,
                        "classes" => CLASSES,
                        _ => continue,
                    };
                    for p in &sec.promises {
                        for c in &p.constraints {
                            let l = c.lval.as_str();
                            if !known.contains(&l) && !COMMON_PROMISE_ATTRS.contains(&l) {
                                self.errors.push(diag_at(
                                    &f.path,
                                    c.pos,
                                    format!(
                                        "unknown attribute '{l}' in {} promise '{}' of bundle {}",
                                        sec.promise_type, p.promiser, b.name
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Three passes over every argument-less `bundle common`, like CFEngine.
    fn eval_commons(&mut self) {
        let files = std::mem::take(&mut self.files);
        for _ in 0..3 {
            for f in &files {
                for b in &f.blocks {
                    if let Block::Bundle(b) = b {
                        if b.kind == "common" && b.args.is_empty() {
                            self.ev.eval_bundle_vars_classes(&f.path, b);
                        }
                    }
                }
            }
        }
        self.files = files;
    }

    fn server_control(&mut self, c: &mut ServerControl) {
        let files = std::mem::take(&mut self.files);
        let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for f in &files {
            for b in &f.blocks {
                let Block::Body(body) = b else { continue };
                if body.kind != "server" || body.name != "control" {
                    continue;
                }
                for a in &body.attrs {
                    let here = Here {
                        file: &f.path,
                        scope: "control_server",
                        line: a.pos.line,
                    };
                    let name = a.lval.as_str();
                    let Some(&known) = SERVER_CONTROL_ATTRS.iter().find(|&&k| k == name) else {
                        self.errors.push(diag_at(
                            &f.path,
                            a.pos,
                            format!("unknown attribute '{name}' in body server control"),
                        ));
                        continue;
                    };
                    self.ev.take_unknowns();
                    match self.ev.class_expr(&a.guard, &here).unwrap_or(Tri::False) {
                        Tri::True => {}
                        Tri::False => continue,
                        Tri::Unknown => {
                            let why = self.ev.take_unknowns().join(", ");
                            // only a list that takes access away may apply on a maybe
                            if known == "denyconnects" {
                                self.ev.warn(&here, format!("body server control: '{name}' is guarded by a condition rcf cannot evaluate ({why}); applied (it only denies)"));
                            } else {
                                self.ev.warn(&here, format!("body server control: '{name}' is guarded by a condition rcf cannot evaluate ({why}); ignored (never widened)"));
                                continue;
                            }
                        }
                    }
                    let mut unresolved = Vec::new();
                    let v = self.ev.eval_rval_lenient(&a.rval, &here, &mut unresolved);
                    if !unresolved.is_empty() {
                        c.unresolved = true;
                        self.ev.warn(
                            &here,
                            format!("unresolved variable(s) {} in body server control attribute '{name}' (cf-serverd: 'Unresolved variables found in cf-serverd policy, scheduling policy reload')", unresolved.join(", ")),
                        );
                    }
                    let line = a.pos.line;
                    let file = f.path.as_str();
                    let scalar = |errs: &mut Vec<Diagnostic>, v: &Value| -> Option<String> {
                        match v {
                            Value::Scalar(s) => Some(s.clone()),
                            Value::List(_) => {
                                errs.push(diag(
                                    file,
                                    line,
                                    format!("'{name}' expects a single value, not a list"),
                                ));
                                None
                            }
                        }
                    };
                    match known {
                        "allowconnects"
                        | "denyconnects"
                        | "allowallconnects"
                        | "trustkeysfrom"
                        | "allowlegacyconnects"
                        | "allowusers" => {
                            let items = match v {
                                Value::List(l) => l,
                                Value::Scalar(s) => vec![s],
                            };
                            if known != "allowusers" {
                                for it in &items {
                                    if let Some(p) = ip_rule_problem(it) {
                                        if is_soft_problem(it) && known != "denyconnects" {
                                            self.ev.warnings.push(diag(
                                                file,
                                                line,
                                                format!("{known}: {p}; this entry never matches"),
                                            ));
                                        } else {
                                            self.errors.push(diag(
                                                file,
                                                line,
                                                format!("{known}: {p}"),
                                            ));
                                        }
                                    }
                                }
                            }
                            lists.entry(known).or_default().extend(items);
                        }
                        "maxconnections"
                        | "port"
                        | "call_collect_interval"
                        | "collect_window"
                        | "keycacheTTL" => {
                            let Some(s) = scalar(&mut self.errors, &v) else {
                                continue;
                            };
                            if !unresolved.is_empty() {
                                continue;
                            }
                            let n: i64 = match s.trim().parse() {
                                Ok(n) => n,
                                Err(_) => {
                                    self.errors.push(diag(
                                        file,
                                        line,
                                        format!("'{known}' must be an integer, got '{s}'"),
                                    ));
                                    continue;
                                }
                            };
                            match known {
                                "maxconnections" if (0..=i64::from(u32::MAX)).contains(&n) => {
                                    c.maxconnections = n as u32
                                }
                                "port" if (1..=65535).contains(&n) => c.port = n as u16,
                                "call_collect_interval"
                                    if (0..=(i64::from(u32::MAX) / 60)).contains(&n) =>
                                {
                                    c.call_collect_interval = n as u32 * 60
                                }
                                "collect_window" if (0..=i64::from(u32::MAX)).contains(&n) => {
                                    c.collect_window = n as u32
                                }
                                "keycacheTTL" => {}
                                _ => self.errors.push(diag(
                                    file,
                                    line,
                                    format!("'{known}' value {n} is out of range"),
                                )),
                            }
                        }
                        "denybadclocks"
                        | "logencryptedtransfers"
                        | "logallconnections"
                        | "listen"
                        | "auditing"
                        | "hostnamekeys" => {
                            let Some(s) = scalar(&mut self.errors, &v) else {
                                continue;
                            };
                            let b = match s.as_str() {
                                "true" | "yes" | "on" => true,
                                "false" | "no" | "off" => false,
                                _ => {
                                    self.errors.push(diag(
                                        file,
                                        line,
                                        format!(
                                            "'{known}' must be true/false/yes/no/on/off, got '{s}'"
                                        ),
                                    ));
                                    continue;
                                }
                            };
                            match known {
                                "denybadclocks" => c.denybadclocks = b,
                                "logencryptedtransfers" => c.logencryptedtransfers = b,
                                "logallconnections" => c.logallconnections = b,
                                "listen" => c.listen = b,
                                _ => {}
                            }
                        }
                        "allowciphers" => c.allowciphers = scalar(&mut self.errors, &v),
                        "allowtlsversion" => {
                            let Some(s) = scalar(&mut self.errors, &v) else {
                                continue;
                            };
                            c.tls_min_version = match s.as_str() {
                                "1.0" => {
                                    self.ev.warn(&here, "Setting minimum acceptable TLS version to 1.0, but minimum version recommended by CFEngine is 1.1.".into());
                                    TlsMinVersion::V1_0
                                }
                                "1.1" => TlsMinVersion::V1_1,
                                "1.2" => TlsMinVersion::V1_2,
                                "1.3" => TlsMinVersion::V1_3,
                                _ => {
                                    self.ev.warn(&here, format!("Unrecognized requested minimum TLS version '{s}', using the minimum required version 1.0."));
                                    TlsMinVersion::V1_0
                                }
                            };
                            c.allowtlsversion = Some(s);
                        }
                        "bindtointerface" => {
                            c.bindtointerface = scalar(&mut self.errors, &v).unwrap_or_default()
                        }
                        "cfruncommand" => {
                            let s = scalar(&mut self.errors, &v).unwrap_or_default();
                            if s.len() > 1023 {
                                self.ev.warn(
                                    &here,
                                    "cfruncommand too long (>1024), leaving empty".into(),
                                );
                            } else {
                                c.cfruncommand = s;
                            }
                        }
                        "serverfacility" => {
                            let s = scalar(&mut self.errors, &v).unwrap_or_default();
                            let ok = s == "LOG_USER"
                                || s == "LOG_DAEMON"
                                || (s.len() == 10
                                    && s.starts_with("LOG_LOCAL")
                                    && s.as_bytes()[9].is_ascii_digit()
                                    && s.as_bytes()[9] <= b'7');
                            if ok {
                                c.serverfacility = s;
                            } else {
                                self.errors.push(diag(file, line, format!("serverfacility '{s}' is not one of LOG_USER, LOG_DAEMON, LOG_LOCAL0..7")));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        self.files = files;
        let mk = |k: &str| {
            ConnList::from_policy_order(
                lists
                    .get(k)
                    .map(|v| v.iter().map(String::as_str).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
        };
        c.allowconnects = mk("allowconnects");
        c.denyconnects = mk("denyconnects");
        c.allowallconnects = mk("allowallconnects");
        c.trustkeysfrom = mk("trustkeysfrom");
        c.allowlegacyconnects = mk("allowlegacyconnects");
        let mut users: Vec<String> = Vec::new();
        for u in lists.get("allowusers").into_iter().flatten() {
            if !users.contains(u) {
                users.insert(0, u.clone());
            }
        }
        c.allowusers = users;
        if let Some(ci) = &c.allowciphers {
            if !ci.split(':').any(|p| p.starts_with("TLS_")) {
                let file = self
                    .files
                    .first()
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                self.ev.warnings.push(diag(
                    &file,
                    0,
                    format!("Disabling TLS 1.3 because no TLS 1.3 ciphersuites specified in allowed ciphers: '{ci}'"),
                ));
            }
        }
    }

    fn server_bundles(&mut self, pol: &mut ServerPolicy) {
        let files = std::mem::take(&mut self.files);
        for f in &files {
            for b in &f.blocks {
                let Block::Bundle(b) = b else { continue };
                if b.kind != "server" || !b.args.is_empty() {
                    continue;
                }
                let scope = super::eval::bundle_scope(b);
                // vars and classes first (three passes for forward references)
                for _ in 0..3 {
                    self.ev.eval_bundle_vars_classes(&f.path, b);
                }
                for sec in &b.sections {
                    if !matches!(
                        sec.promise_type.as_str(),
                        "meta" | "vars" | "classes" | "roles" | "access" | "defaults" | "reports"
                    ) {
                        self.ev.warnings.push(diag(
                            &f.path,
                            sec.pos.line,
                            format!("Trying to evaluate unsupported/obsolete promise type {} in server bundle {}", sec.promise_type, b.name),
                        ));
                    }
                }
                for want in ["roles", "access"] {
                    for sec in b.sections.iter().filter(|s| s.promise_type == want) {
                        for p in &sec.promises {
                            let here = Here {
                                file: &f.path,
                                scope: &scope,
                                line: p.pos.line,
                            };
                            self.ev.take_unknowns();
                            let active = self.ev.promise_active(p, &here);
                            let why = self.ev.take_unknowns().join(", ");
                            if active == Tri::False {
                                continue;
                            }
                            let maybe = active == Tri::Unknown;
                            if maybe {
                                let what = if want == "roles" {
                                    "is dropped (it only admits)"
                                } else {
                                    "keeps only its deny rules (admit rules, maproot and shortcut are not applied)"
                                };
                                self.ev.warn(&here, format!("{want} promise '{}' depends on a condition rcf cannot evaluate ({why}); it {what}", p.promiser));
                                if want == "roles" {
                                    continue;
                                }
                            }
                            for it in self.ev.iterations(p, &here) {
                                self.ev.bindings = it;
                                if want == "roles" {
                                    self.role_promise(pol, p, &here);
                                } else {
                                    self.access_promise(pol, p, &here, maybe);
                                }
                            }
                            self.ev.bindings.clear();
                        }
                    }
                }
            }
        }
        self.files = files;
    }

    fn role_promise(&mut self, pol: &mut ServerPolicy, p: &Promise, here: &Here) {
        // a promiser resolves `$(bundle.var)` in its namespace first, as 3.21
        self.ev.in_bundle.set(true);
        let e = self.ev.expand(&p.promiser, here);
        self.ev.in_bundle.set(false);
        if !e.unresolved.is_empty() {
            self.ev.warn(
                here,
                format!(
                    "roles promise '{}' dropped: unresolved variable(s) {}",
                    e.text,
                    e.unresolved.join(", ")
                ),
            );
            return;
        }
        let name = e.text;
        if let Some(err) = addr::compile_error(&name) {
            self.errors.push(diag(
                here.file,
                here.line,
                format!("roles promiser '{name}' is not a valid regular expression: {err}"),
            ));
            return;
        }
        let mut users = Vec::new();
        for c in p.constraints.iter().rev() {
            let h = Here {
                line: c.pos.line,
                ..here.clone()
            };
            if c.lval == "authorize" {
                let is_list = match &c.rval {
                    Rval::List(_) => true,
                    Rval::Scalar(s) => super::eval::list_ref(s).is_some(),
                    _ => false,
                };
                if !is_list {
                    self.errors.push(diag(
                        h.file,
                        h.line,
                        format!(
                            "Right-hand side of authorize promise for '{name}' should be a list"
                        ),
                    ));
                    return;
                }
                let mut unresolved = Vec::new();
                let v = self.ev.eval_rval_lenient(&c.rval, &h, &mut unresolved);
                if !unresolved.is_empty() {
                    self.ev.warn(
                        &h,
                        format!(
                            "roles promise '{name}' dropped: unresolved variable(s) {}",
                            unresolved.join(", ")
                        ),
                    );
                    return;
                }
                match v {
                    Value::List(l) => users.extend(l),
                    Value::Scalar(s) => users.push(s),
                }
            } else if !COMMON_PROMISE_ATTRS.contains(&c.lval.as_str()) {
                if matches!(c.rval, Rval::List(_)) {
                    continue;
                }
                self.ev.warn(
                    &h,
                    format!("Unrecognised promise '{}' for {}", c.lval, name),
                );
            }
        }
        let res = pol
            .acl
            .roles
            .entry(name.clone())
            .or_insert_with(|| Resource {
                name: name.clone(),
                name_re: self.regexes.get(&name),
                ..Default::default()
            });
        res.admit.usernames.extend(users);
        res.origins.push((here.file.to_string(), here.line));
    }

    /// One access promise into the TLS tables and the classic lists.
    /// `maybe`: rcf could not tell whether the promise applies, so only
    /// what takes access away is applied (deny lists, `ifencrypted =>
    /// true`); its admit lists, maproot and shortcut are not, and a classic
    /// entry it would create first is marked so that it decides nothing
    /// in anyone's favour.
    fn access_promise(&mut self, pol: &mut ServerPolicy, p: &Promise, here: &Here, maybe: bool) {
        // a promiser resolves `$(bundle.var)` in its namespace first, as 3.21
        self.ev.in_bundle.set(true);
        let e = self.ev.expand(&p.promiser, here);
        self.ev.in_bundle.set(false);
        if !e.unresolved.is_empty() {
            self.ev.warn(
                here,
                format!(
                    "access promise '{}' dropped: unresolved variable(s) {}",
                    e.text,
                    e.unresolved.join(", ")
                ),
            );
            return;
        }
        let promiser = e.text;
        // gather constraints; any unresolved value drops the whole rule
        let mut resource_type = String::from("path");
        let mut handle: Option<String> = None;
        let mut lists: Vec<(String, Vec<String>, u32)> = Vec::new();
        let mut ifencrypted: Option<bool> = None;
        let mut shortcut: Option<(String, u32)> = None;
        let mut has_rds = None;
        let mut poisoned = false;
        for c in &p.constraints {
            let h = Here {
                line: c.pos.line,
                ..here.clone()
            };
            let lval = c.lval.as_str();
            if !ACCESS_ATTRS.contains(&lval)
                && !COMMON_PROMISE_ATTRS.contains(&lval)
                && lval != "ifelapsed"
                && lval != "expireafter"
            {
                self.errors.push(diag_at(
                    h.file,
                    c.pos,
                    format!("unknown attribute '{lval}' in access promise '{promiser}'"),
                ));
                continue;
            }
            if matches!(
                lval,
                "if" | "ifvarclass"
                    | "unless"
                    | "comment"
                    | "meta"
                    | "depends_on"
                    | "action"
                    | "classes"
                    | "with"
            ) {
                continue;
            }
            if lval == "report_data_select" {
                has_rds = Some(c.pos.line);
                continue;
            }
            let mut unresolved = Vec::new();
            let v = self.ev.eval_rval_lenient(&c.rval, &h, &mut unresolved);
            if !unresolved.is_empty() {
                let names = unresolved.join(", ");
                if lval.starts_with("deny") {
                    // kept as written (as cf-serverd does, for the summary), but the
                    // entry then denies everyone: an unknown deny rule never widens
                    self.ev.warn(&h, format!("access rule '{promiser}': '{lval}' holds unresolved variable(s) {names}; the rule now denies every request it covers"));
                    poisoned = true;
                } else if ACCESS_LIST_ATTRS.contains(&lval) {
                    // an unresolved admit entry is kept literally and can never match
                    self.ev.warn(&h, format!("access rule '{promiser}': '{lval}' holds unresolved variable(s) {names}; that entry never matches"));
                } else {
                    self.ev.warn(&h, format!("access rule '{promiser}' dropped (never widened): attribute '{lval}' holds unresolved variable(s) {names}"));
                    return;
                }
            }
            match (lval, v) {
                ("resource_type", Value::Scalar(s)) => resource_type = s,
                ("handle", Value::Scalar(s)) => handle = Some(s),
                ("shortcut", Value::Scalar(s)) => shortcut = Some((s, h.line)),
                ("ifencrypted", Value::Scalar(s)) => {
                    ifencrypted = Some(match s.as_str() {
                        "true" | "yes" | "on" => true,
                        "false" | "no" | "off" => false,
                        _ => {
                            self.errors.push(diag(
                                h.file,
                                h.line,
                                format!("ifencrypted must be a boolean, got '{s}'"),
                            ));
                            return;
                        }
                    })
                }
                (l, Value::List(items))
                    if !matches!(l, "resource_type" | "handle" | "shortcut" | "ifencrypted") =>
                {
                    if l.starts_with("deny") && !poisoned {
                        if let Some(bad) = items.iter().find(|it| has_unexpanded_var(it)) {
                            self.ev.warn(&h, format!("access rule '{promiser}': '{l}' entry '{bad}' holds an unresolved variable; the rule now denies every request it covers"));
                            poisoned = true;
                        }
                    }
                    lists.push((l.to_string(), items, h.line))
                }
                (l, Value::Scalar(_))
                    if !matches!(l, "resource_type" | "handle" | "shortcut" | "ifencrypted") =>
                {
                    self.errors.push(diag(
                        h.file,
                        h.line,
                        format!("attribute '{l}' of access promise '{promiser}' expects a list"),
                    ));
                    return;
                }
                (l, _) => {
                    self.errors.push(diag(
                        h.file,
                        h.line,
                        format!(
                            "attribute '{l}' of access promise '{promiser}' expects a single value"
                        ),
                    ));
                    return;
                }
            }
        }
        if !matches!(
            resource_type.as_str(),
            "path" | "literal" | "context" | "query" | "variable" | "bundle"
        ) {
            self.errors.push(diag(here.file, here.line, format!("resource_type '{resource_type}' is not one of path, literal, context, query, variable, bundle")));
            return;
        }
        if let Some(line) = has_rds {
            if resource_type != "query" {
                self.errors.push(diag(
                    here.file,
                    line,
                    "Constraint report_data_select is allowed only for 'query' resource_type",
                ));
                return;
            }
        }
        if maybe {
            lists.retain(|(l, _, _)| l.starts_with("deny"));
            if ifencrypted == Some(false) {
                ifencrypted = None;
            }
            if let Some((s, _)) = shortcut.take() {
                if !pol.shortcuts.contains_key(&s) {
                    // it might be the first registration in 3.21: nobody gets it
                    self.blocked_shortcuts.insert(s);
                }
            }
        }
        // validate entries before touching any table
        for (l, items, line) in &lists {
            for it in items {
                let problem = match l.as_str() {
                    "admit_ips" | "deny_ips" => ip_rule_problem(it),
                    "admit" | "deny" if admit_type(it) == AdmitType::Ip => {
                        if it.contains(|c: char| c.is_ascii_lowercase())
                            && !it.contains(':')
                            && ip_rule_problem(it).is_some()
                        {
                            // 3.21 quirk (B.4): hex-letter hostnames such as "bad.cafe" are classified as IPs
                            self.ev.warnings.push(diag(
                                here.file,
                                *line,
                                format!("{l} entry '{it}' of '{promiser}' is classified as an IP rule (only hex letters and dots), so it never matches a hostname; use admit_hostnames/deny_hostnames"),
                            ));
                            None
                        } else {
                            ip_rule_problem(it)
                        }
                    }
                    _ => None,
                };
                if let Some(pr) = problem {
                    // 3.21 keeps the entry (it logs it at match time and it never
                    // matches); rcf keeps it too, but a deny list holding one denies
                    if l.starts_with("deny") {
                        self.ev.warnings.push(diag(
                            here.file,
                            *line,
                            format!("{l} of '{promiser}': {pr}; the rule now denies every request it covers (3.21 would skip the entry)"),
                        ));
                        poisoned = true;
                    } else {
                        self.ev.warnings.push(diag(
                            here.file,
                            *line,
                            format!("{l} of '{promiser}': {pr}; this entry never matches"),
                        ));
                    }
                }
            }
            if matches!(l.as_str(), "admit" | "deny") {
                if let Some(last) = items.last() {
                    if admit_type(last) == AdmitType::Hostname
                        && regex_hostname_forms(last).is_none()
                    {
                        self.errors.push(diag(
                            here.file,
                            *line,
                            format!("{l} entry '{last}' of '{promiser}' is a hostname regex that cannot be converted for TLS ACLs; cf-serverd 3.21 exits with 'StrList_Append' (code 255) on this, rcf refuses the policy"),
                        ));
                        return;
                    }
                }
            }
        }
        let key: String;
        let table: &mut BTreeMap<String, Resource>;
        let mut legacy_admit: Option<&mut LegacyAuth> = None;
        let mut legacy_deny: Option<&mut LegacyAuth> = None;
        match resource_type.as_str() {
            "path" => {
                let Some(k) = self.canonical_acl_path(&promiser, here) else {
                    return;
                };
                key = k;
                table = &mut pol.acl.paths;
                legacy_admit = Some(get_or_create(&mut pol.legacy.admit, &key, maybe));
                legacy_deny = Some(get_or_create(&mut pol.legacy.deny, &key, false));
            }
            "literal" => {
                let Some(h) = handle.clone() else {
                    self.ev.warn(here, "Access to literal server data requires you to define a promise handle for reference".into());
                    return;
                };
                key = h;
                table = &mut pol.acl.literals;
                legacy_admit = Some(get_or_create(&mut pol.legacy.varadmit, &key, maybe));
                legacy_deny = Some(get_or_create(&mut pol.legacy.vardeny, &key, false));
            }
            "context" | "variable" | "query" => {
                key = promiser.clone();
                if resource_type == "context" {
                    if let Some(err) = addr::compile_error(&key) {
                        self.errors.push(diag(
                            here.file,
                            here.line,
                            format!(
                                "context promiser '{key}' is not a valid regular expression: {err}"
                            ),
                        ));
                        return;
                    }
                }
                if resource_type == "query" {
                    self.ev.warn(
                        here,
                        "Report data select is only available in CFEngine Enterprise".into(),
                    );
                }
                table = match resource_type.as_str() {
                    "context" => &mut pol.acl.classes,
                    "variable" => &mut pol.acl.variables,
                    _ => &mut pol.acl.queries,
                };
                legacy_admit = Some(get_or_create(&mut pol.legacy.varadmit, &key, maybe));
                legacy_deny = Some(get_or_create(&mut pol.legacy.vardeny, &key, false));
            }
            _ => {
                key = promiser.clone();
                if let Some(err) = addr::compile_error(&key) {
                    self.errors.push(diag(
                        here.file,
                        here.line,
                        format!("bundle promiser '{key}' is not a valid regular expression: {err}"),
                    ));
                    return;
                }
                table = &mut pol.acl.bundles;
            }
        }
        if let Some((s, line)) = shortcut {
            if s.contains('/') {
                self.ev.warnings.push(diag(
                    here.file,
                    line,
                    format!("slashes are forbidden in ACL shortcut: {s}"),
                ));
            } else if self.blocked_shortcuts.contains(&s) {
                self.ev.warnings.push(diag(
                    here.file,
                    line,
                    format!("shortcut '{s}' not registered: an earlier access promise whose condition rcf cannot evaluate may have registered it first in 3.21"),
                ));
            } else if let std::collections::btree_map::Entry::Vacant(e) = pol.shortcuts.entry(s) {
                e.insert(promiser.clone());
            } else {
                // 3.21 quirk: the message says "replaced" but the first registration is kept
                self.ev.warnings.push(diag(
                    here.file,
                    line,
                    format!("Already existing shortcut for path '{promiser}' was replaced"),
                ));
            }
        }
        let res = table.entry(key.clone()).or_insert_with(|| Resource {
            name: key.clone(),
            name_re: if resource_type == "path" {
                None
            } else {
                self.regexes.get(&key)
            },
            ..Default::default()
        });
        res.origins.push((here.file.to_string(), here.line));
        res.poisoned |= poisoned;
        if let Some(dp) = legacy_deny.as_deref_mut() {
            dp.poisoned |= poisoned;
        }
        if let (Some(ap), Some(enc)) = (legacy_admit.as_deref_mut(), ifencrypted) {
            ap.encrypt = enc;
        }
        let mut hostname_rule = false;
        for (l, items, _) in &lists {
            for it in items {
                match l.as_str() {
                    "admit_ips" => {
                        res.admit.ips.push(Entry::new(it, &mut self.regexes));
                        if let Some(ap) = legacy_admit.as_deref_mut() {
                            ap.accesslist.push(it.clone());
                        }
                    }
                    "deny_ips" => {
                        res.deny.ips.push(Entry::new(it, &mut self.regexes));
                        if let Some(dp) = legacy_deny.as_deref_mut() {
                            dp.accesslist.push(it.clone());
                        }
                    }
                    "admit_hostnames" => {
                        res.admit.hostnames.push(Entry::new(it, &mut self.regexes));
                        hostname_rule = true;
                        if let Some(ap) = legacy_admit.as_deref_mut() {
                            ap.accesslist.push(new_host_to_old(it));
                        }
                    }
                    "deny_hostnames" => {
                        res.deny.hostnames.push(Entry::new(it, &mut self.regexes));
                        hostname_rule = true;
                        if let Some(dp) = legacy_deny.as_deref_mut() {
                            dp.accesslist.push(new_host_to_old(it));
                        }
                    }
                    "admit_keys" => res.admit.keys.push(it.clone()),
                    "deny_keys" => res.deny.keys.push(it.clone()),
                    "admit" | "deny" => {
                        let rules = if l == "admit" {
                            &mut res.admit
                        } else {
                            &mut res.deny
                        };
                        match admit_type(it) {
                            AdmitType::Key => rules.keys.push(it.clone()),
                            AdmitType::Ip => rules.ips.push(Entry::new(it, &mut self.regexes)),
                            AdmitType::Hostname => match regex_hostname_forms(it) {
                                Some(forms) => {
                                    for f in forms {
                                        rules.hostnames.push(Entry::new(&f, &mut self.regexes));
                                    }
                                    hostname_rule = true;
                                }
                                None => self.ev.warnings.push(diag(
                                    here.file,
                                    here.line,
                                    format!("{l} entry '{it}' of '{promiser}' is a hostname regex that TLS ACLs cannot use; ignored for TLS"),
                                )),
                            },
                        }
                        let lp = if l == "admit" {
                            legacy_admit.as_deref_mut()
                        } else {
                            legacy_deny.as_deref_mut()
                        };
                        if let Some(a) = lp {
                            a.accesslist.push(it.clone());
                        }
                    }
                    "maproot" => {
                        if let Some(ap) = legacy_admit.as_deref_mut() {
                            ap.maproot.push(it.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        res.admit.sort();
        res.deny.sort();
        if hostname_rule && !pol.reverse_dns {
            pol.reverse_dns = true;
            self.notes.push(diag(here.file, here.line, "Found hostname admit/deny in access_rules, turning on reverse DNS lookups for every connection"));
        }
    }

    /// B.3: the ACL key for a path promiser, or `None` (logged) if ignored.
    fn canonical_acl_path(&mut self, promiser: &str, here: &Here) -> Option<String> {
        if promiser.len() > PATH_MAX - 1 {
            self.ev.warnings.push(diag(
                here.file,
                here.line,
                format!(
                    "Path '{promiser}' in access_rules is too long ({} > {PATH_MAX}), ignoring!",
                    promiser.len()
                ),
            ));
            return None;
        }
        if !promiser.starts_with('/') {
            self.notes.push(diag(
                here.file,
                here.line,
                format!("Relative paths are not allowed: {promiser}"),
            ));
            self.ev.warnings.push(diag(
                here.file,
                here.line,
                format!("Failed to canonicalize path '{promiser}' in access_rules, ignoring!"),
            ));
            return None;
        }
        match self.ev.src.canonicalize(promiser) {
            Canon::Resolved { path, is_dir } => {
                let mut p = path;
                if is_dir && !p.ends_with('/') {
                    p.push('/');
                }
                Some(p)
            }
            Canon::Missing => {
                if self.ev.src.is_symlink(promiser.trim_end_matches('/')) {
                    self.notes.push(diag(
                        here.file,
                        here.line,
                        format!("Requested file is a dead symbolic link (filename: {promiser})"),
                    ));
                }
                self.notes.push(diag(
                    here.file,
                    here.line,
                    format!("Path does not exist, it's added as-is in access rules: {promiser}"),
                ));
                self.notes.push(diag(here.file, here.line, "WARNING: this means that (not) having a trailing slash defines if it's (not) a directory!"));
                let mut p = promiser.to_string();
                if p.len() >= 2 && p.ends_with("/.") {
                    p.pop();
                }
                Some(p)
            }
            Canon::Failed(e) => {
                self.ev.warnings.push(diag(
                    here.file,
                    here.line,
                    format!(
                        "Failed to canonicalize path '{promiser}' in access_rules, ignoring! ({e})"
                    ),
                ));
                None
            }
        }
    }
}

/// Whether a value still holds a `$(...)`/`${...}`/`@(...)` other than
/// the `$(connection.*)` markers.
fn has_unexpanded_var(s: &str) -> bool {
    let t = s
        .replace("$(connection.ip)", "")
        .replace("$(connection.hostname)", "")
        .replace("$(connection.key)", "")
        .replace("${connection.ip}", "")
        .replace("${connection.hostname}", "")
        .replace("${connection.key}", "");
    t.contains("$(") || t.contains("${") || t.contains("@(") || t.contains("@{")
}

/// Whether an IP-rule problem is only "this never matches" (an empty
/// entry or an empty address before `/n`, as MPF produces on a host with
/// no `sys.policy_hub`). cf-serverd accepts those; rcf warns for allow
/// lists and refuses them in deny lists (a never-matching deny rule would
/// silently widen access).
fn is_soft_problem(rule: &str) -> bool {
    rule.is_empty() || rule.starts_with('/')
}

/// A load-time check of an IP rule: bad CIDRs, impossible octets, and
/// entries that are neither an address form nor a valid regex.
fn ip_rule_problem(rule: &str) -> Option<String> {
    if rule.contains("$(") || rule.contains("${") {
        // connection variables, or an unresolved variable (warned elsewhere)
        return None;
    }
    if rule.is_empty() {
        return Some("empty IP rule".into());
    }
    if let Some(p) = addr::rule_problem(rule) {
        return Some(p);
    }
    let ip_alphabet = rule
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/' | '-'));
    if ip_alphabet && rule.contains('.') && !rule.contains(':') && !rule.contains('/') {
        for o in rule.split('.') {
            if o.is_empty() {
                continue;
            }
            let bounds: Vec<&str> = o.split('-').collect();
            for b in bounds {
                match b.parse::<u32>() {
                    Ok(n) if n <= 255 => {}
                    _ => {
                        return Some(format!(
                            "'{rule}' is not a valid IPv4 address, prefix or range"
                        ))
                    }
                }
            }
        }
        if rule.split('.').count() > 4 {
            return Some(format!(
                "'{rule}' is not a valid IPv4 address, prefix or range"
            ));
        }
        return None;
    }
    if ip_alphabet {
        return None;
    }
    if let Some(e) = addr::compile_error(rule) {
        return Some(format!(
            "'{rule}' is neither an address form nor a valid regular expression ({e})"
        ));
    }
    None
}

#[derive(Debug, PartialEq, Eq)]
enum AdmitType {
    Ip,
    Hostname,
    Key,
}

fn admit_type(s: &str) -> AdmitType {
    if s.starts_with("SHA=") || s.starts_with("MD5=") {
        AdmitType::Key
    } else if s.chars().all(|c| "0123456789abcdef.:/[-]*()\\".contains(c)) {
        AdmitType::Ip
    } else {
        AdmitType::Hostname
    }
}

/// `StrList_AppendRegexHostname`: the TLS hostname entries a legacy
/// `admit`/`deny` hostname becomes, or `None` if it cannot be converted.
fn regex_hostname_forms(host: &str) -> Option<Vec<String>> {
    if !addr::is_regex(host) {
        return Some(vec![host.to_string()]);
    }
    if host.contains(['(', '{', '[', '|', '+', '?', ']', '}', ')']) {
        return None;
    }
    let mut skip_domain = false;
    let mut skip_host = false;
    let mut name = host;
    if let Some(r) = name.strip_prefix('^') {
        skip_domain = true;
        name = r;
    }
    if let Some(r) = name.strip_prefix(".*") {
        skip_domain = false;
        name = r;
    }
    if let Some(r) = name.strip_prefix("\\.") {
        skip_host = true;
        name = r;
    }
    if name.contains('*') {
        return None;
    }
    if name.len() < host.len() || host.contains('\\') {
        let mut copy = String::from(".");
        let mut it = name.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('.') => copy.push('.'),
                    _ => return None,
                }
            } else {
                copy.push(c);
            }
        }
        let mut out = Vec::new();
        if !skip_host {
            out.push(copy[1..].to_string());
        }
        if !skip_domain {
            out.push(copy);
        }
        return Some(out);
    }
    Some(vec![host.to_string()])
}

/// `NewHostToOldACL`: `.dom.tld` becomes the regex `.*\.dom\.tld`.
fn new_host_to_old(host: &str) -> String {
    if !host.starts_with('.') {
        return host.to_string();
    }
    let mut out = String::from(".*");
    for frag in host.split('.').filter(|f| !f.is_empty()) {
        out.push_str("\\.");
        out.push_str(frag);
    }
    if host.chars().all(|c| c == '.') {
        out.push_str("\\.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_conversions() {
        assert_eq!(
            regex_hostname_forms(".*\\.example\\.com"),
            Some(vec![".example.com".to_string()])
        );
        assert_eq!(
            regex_hostname_forms(".*example.com"),
            Some(vec!["example.com".to_string(), ".example.com".to_string()])
        );
        // live 3.21: IsRegex("^host\.ex\.com") is false, so it is kept verbatim
        // (SEMANTICS.md B.4 says it becomes host.ex.com; the binary disagrees)
        assert_eq!(
            regex_hostname_forms("^host\\.ex\\.com"),
            Some(vec!["^host\\.ex\\.com".to_string()])
        );
        assert_eq!(
            regex_hostname_forms("^.*\\.ex\\.com"),
            Some(vec![".ex.com".to_string()])
        );
        assert_eq!(
            regex_hostname_forms("host.example.com"),
            Some(vec!["host.example.com".to_string()])
        );
        assert_eq!(regex_hostname_forms("(a|b).com"), None);
        assert_eq!(new_host_to_old(".example.com"), ".*\\.example\\.com");
        assert_eq!(new_host_to_old("..a..b"), ".*\\.a\\.b");
        assert_eq!(new_host_to_old("host.b.org"), "host.b.org");
    }

    #[test]
    fn admit_classification() {
        assert_eq!(admit_type("MD5=abc"), AdmitType::Key);
        assert_eq!(admit_type("10.0.0.0/8"), AdmitType::Ip);
        assert_eq!(admit_type("bad.cafe"), AdmitType::Ip);
        assert_eq!(admit_type("$(connection.ip)"), AdmitType::Hostname);
        assert_eq!(admit_type("host.example.com"), AdmitType::Hostname);
    }

    #[test]
    fn ip_rule_checks() {
        assert!(ip_rule_problem("10.0.0.0/8").is_none());
        assert!(ip_rule_problem("10.0.0.0/33").is_some());
        assert!(ip_rule_problem("10.0.0.300").is_some());
        assert!(ip_rule_problem("10.0.0.1-20").is_none());
        assert!(ip_rule_problem("10.*").is_none());
        assert!(ip_rule_problem("10.[").is_some());
        assert!(ip_rule_problem("::1").is_none());
        assert!(ip_rule_problem("fe80::/12").is_some());
        assert!(ip_rule_problem("$(connection.ip)").is_none());
    }
}
