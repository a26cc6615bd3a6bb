//! The evaluator a server needs: `inputs`, `bundle common` variables and
//! classes, class expressions, variable expansion and a small set of
//! functions. Everything the outside world knows (files, environment,
//! `sys.*`) comes from the caller.

use super::ast::*;
use super::json::Json;
use super::{Diagnostic, PolicySource};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

mod data;
mod io_fns;
use data::DataVar;

/// Deepest class-expression / expansion / function nesting evaluated.
pub const MAX_EVAL_DEPTH: usize = 64;
/// Most policy files one load may pull in through `inputs`.
pub const MAX_FILES: usize = 2000;
/// Longest string an expansion may produce.
pub const MAX_STRING: usize = 1 << 20;
/// Most bytes all variable values together may hold (self-referencing or
/// self-appending variables grow on every pass; this bounds them).
pub const MAX_VAR_BYTES: usize = 64 << 20;
/// Longest list a value may become.
pub const MAX_LIST_LEN: usize = 100_000;
/// Most iterations one promise may expand into through list variables.
pub const MAX_ITERATIONS: usize = 10_000;

/// A variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// string, int, real.
    Scalar(String),
    /// slist, ilist, rlist.
    List(Vec<String>),
    /// A data container (or, from `$(d[k])` lookups, one element of it).
    Data(Json),
}

/// A condition as rcf knows it: CFEngine's classes are two-valued, but
/// rcf cannot evaluate everything 3.21 can (a function it lacks, a hard
/// class it has not discovered, a variable whose definition depends on
/// either), and such a condition is `Unknown`. Kleene logic combines them.
/// Consumers must never let `Unknown` widen access: a rule of unknown
/// applicability applies when it denies and not when it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    /// Defined / holds.
    True,
    /// Not defined / does not hold.
    False,
    /// rcf cannot tell.
    Unknown,
}

impl Tri {
    /// From a known boolean.
    pub fn from_bool(b: bool) -> Self {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }
    /// Kleene AND: false wins, then unknown.
    pub fn and(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::True, Tri::True) => Tri::True,
            _ => Tri::Unknown,
        }
    }
    /// Kleene OR: true wins, then unknown.
    pub fn or(self, o: Tri) -> Tri {
        match (self, o) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::False, Tri::False) => Tri::False,
            _ => Tri::Unknown,
        }
    }
    /// Negation (unknown stays unknown).
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// What the caller tells the evaluator about the world.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The main policy file (absolute path).
    pub file: String,
    /// `sys.*` variables (workdir, inputdir, masterdir, policy_hub, fqhost,
    /// uqhost, ip_addresses, ...).
    pub sys: BTreeMap<String, Value>,
    /// Process environment, for `getenv()`.
    pub env: BTreeMap<String, String>,
    /// Hard classes (`any` and `server` are always added).
    pub classes: BTreeSet<String>,
    /// Soft classes defined before the policy is read (augments), in the
    /// default namespace as 3.21 defines them: true as `name` there, and
    /// only as `default:name` inside another namespace (unlike hard
    /// classes, which every namespace sees).
    pub soft_classes: BTreeSet<String>,
    /// Variables defined before the policy is read (augments, host-specific
    /// data), by (bundle, name); policy may test and override them.
    pub vars: BTreeMap<(String, String), Value>,
    /// The caller vouches that `classes` holds every hard class 3.21
    /// would define on this host (discovery done, `-D` applied). When
    /// false, an undefined name that may be a hard class
    /// ([`super::hardclass::may_be_hard_class`]) is unknown, not false.
    pub hard_classes_discovered: bool,
}

/// Where a promise being evaluated comes from (for `this.*` and messages).
#[derive(Debug, Clone)]
pub(crate) struct Here<'a> {
    pub file: &'a str,
    pub scope: &'a str,
    pub line: u32,
}

/// Evaluation state shared by the whole load.
pub(crate) struct Eval<'a> {
    pub src: &'a dyn PolicySource,
    pub opts: &'a LoadOptions,
    pub vars: BTreeMap<(String, String), Value>,
    pub classes: BTreeSet<String>,
    pub local_classes: BTreeSet<(String, String)>,
    pub warnings: Vec<Diagnostic>,
    /// Iteration bindings for `$(list)` in the promise being expanded.
    pub bindings: BTreeMap<String, String>,
    /// Bytes held by all variable values (bounded by [`MAX_VAR_BYTES`]).
    pub var_bytes: usize,
    /// Variables whose value rcf could not evaluate (scope, name): a
    /// lookup of one is unresolved and taints whatever uses it.
    pub unknown_vars: BTreeSet<(String, String)>,
    /// Global classes rcf could not decide.
    pub unknown_classes: BTreeSet<String>,
    /// Bundle-local classes rcf could not decide (scope, name).
    pub unknown_local_classes: BTreeSet<(String, String)>,
    /// What rcf could not evaluate during the current evaluation (a
    /// function, a class, a variable), named for the one warning the
    /// consumer logs. Cleared by [`Self::take_unknowns`].
    pub unknown_hits: RefCell<Vec<String>>,
    /// Policy files pulled in by an `inputs` entry whose condition rcf
    /// could not evaluate: every promise in them is of unknown applicability.
    pub uncertain_files: BTreeSet<String>,
    /// Expanding a vars promise's value or a promiser: `$(bundle.var)`
    /// tries the current namespace first (see `resolve_ref`).
    pub in_bundle: std::cell::Cell<bool>,
    /// 3.21's function cache (`EvalContextFunctionCacheGet`): the results
    /// of its cached functions (`execresult`, `returnszero`, `host2ip`,
    /// ...) keyed by the expanded arguments only, so calls with the same
    /// arguments share one result whatever the function; `None` marks a
    /// result rcf could not evaluate.
    pub fn_cache: BTreeMap<Vec<String>, Option<Value>>,
}

/// Result of expanding a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub text: String,
    /// Names of variables that could not be resolved (connection.* excluded).
    pub unresolved: Vec<String>,
}

fn canonify(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn strip_ns(name: &str) -> &str {
    name.strip_prefix("default:").unwrap_or(name)
}

/// 3.21's special scopes (`SpecialScopeFromString`): always in the
/// default namespace, whatever namespace the reference is made from.
fn is_special_scope(s: &str) -> bool {
    matches!(
        s,
        "const" | "edit" | "match" | "mon" | "sys" | "def" | "this" | "body"
    )
}

/// The evaluator's scope key of a bundle: its name in the default
/// namespace, `ns:name` in any other (variables and local classes are
/// keyed by it, so `ns:acl` and `acl` never share them).
pub(crate) fn bundle_scope(b: &Bundle) -> String {
    let name = b.name.rsplit(':').next().unwrap_or(&b.name);
    if b.namespace.is_empty() || b.namespace == "default" {
        name.to_string()
    } else {
        format!("{}:{name}", b.namespace)
    }
}

/// The namespace of a scope key (`None`: the default namespace).
fn scope_ns(scope: &str) -> Option<&str> {
    scope.split_once(':').map(|(ns, _)| ns)
}

/// Resolves a variable reference as cf-serverd 3.21 does (checked against
/// the real binary): an explicit `ns:` is kept; a special scope (`sys`,
/// `const`, `def`, `this`, ...) is in the default namespace; no scope
/// means the current bundle (non-special `this.x` too). A bundle scope
/// without `ns:` is in the default namespace, except in a vars promise's
/// value or a promiser (`in_bundle`), where the current bundle's namespace
/// is tried first. Returns the candidate scope keys, in lookup order, and
/// the variable.
fn resolve_ref(name: &str, current: &str, in_bundle: bool) -> (Vec<String>, String) {
    let idx = name.find('[').unwrap_or(name.len());
    let (ns, rest) = match name[..idx].find(':') {
        Some(i) => (Some(&name[..i]), &name[i + 1..]),
        None => (None, name),
    };
    let idx = rest.find('[').unwrap_or(rest.len());
    let (scope, var) = match rest[..idx].find('.') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    const THIS_SPECIAL: &[&str] = &[
        "v",
        "k",
        "this",
        "service_policy",
        "promiser",
        "promiser_uid",
        "promiser_gid",
        "promiser_pid",
        "promiser_ppid",
        "bundle",
        "handle",
        "namespace",
        "promise_filename",
        "promise_dirname",
        "promise_linenumber",
    ];
    let scope = match scope {
        Some("this") if !THIS_SPECIAL.contains(&var) => None,
        s => s,
    };
    let keys = match (ns, scope) {
        (_, Some(s)) if is_special_scope(s) => vec![s.to_string()],
        (Some("default"), Some(s)) => vec![s.to_string()],
        (Some(ns), Some(s)) => vec![format!("{ns}:{s}")],
        (None, Some(s)) => match scope_ns(current) {
            Some(ns) if in_bundle => vec![format!("{ns}:{s}"), s.to_string()],
            _ => vec![s.to_string()],
        },
        // an explicit namespace without a scope names no bundle
        (Some(_), None) => vec![String::new()],
        (None, None) => vec![current.to_string()],
    };
    (keys, var.to_string())
}

impl<'a> Eval<'a> {
    pub fn new(src: &'a dyn PolicySource, opts: &'a LoadOptions) -> Self {
        let mut classes = opts.classes.clone();
        classes.extend(opts.soft_classes.iter().cloned());
        classes.insert("any".into());
        classes.insert("server".into());
        Eval {
            src,
            opts,
            vars: opts.vars.clone(),
            classes,
            local_classes: BTreeSet::new(),
            warnings: Vec::new(),
            bindings: BTreeMap::new(),
            var_bytes: 0,
            unknown_vars: BTreeSet::new(),
            unknown_classes: BTreeSet::new(),
            unknown_local_classes: BTreeSet::new(),
            unknown_hits: RefCell::new(Vec::new()),
            uncertain_files: BTreeSet::new(),
            in_bundle: std::cell::Cell::new(false),
            fn_cache: BTreeMap::new(),
        }
    }

    /// Records that something rcf cannot evaluate was met.
    fn hit_unknown(&self, what: String) {
        let mut h = self.unknown_hits.borrow_mut();
        if !h.contains(&what) {
            h.push(what);
        }
    }

    /// The unknown constructs met since the last call (and forgets them).
    pub fn take_unknowns(&self) -> Vec<String> {
        std::mem::take(&mut *self.unknown_hits.borrow_mut())
    }

    pub fn warn(&mut self, here: &Here, msg: String) {
        let d = Diagnostic {
            file: here.file.to_string(),
            line: here.line,
            col: 0,
            message: msg,
        };
        if !self.warnings.contains(&d) {
            self.warnings.push(d);
        }
    }

    /// Stores a variable unless that would push all values past
    /// [`MAX_VAR_BYTES`] (then it warns and keeps the old value).
    pub fn set_var(&mut self, scope: &str, name: &str, v: Value, here: &Here) {
        let size = |v: &Value| match v {
            Value::Scalar(s) => s.len() + 16,
            Value::List(l) => l.iter().map(|x| x.len() + 16).sum::<usize>() + 16,
            Value::Data(j) => j.to_compact().len() + 16,
        };
        let key = (scope.to_string(), name.to_string());
        let old = self
            .vars
            .get(&key)
            .map(|v| size(v) + name.len())
            .unwrap_or(0);
        let new = size(&v) + name.len();
        if self.var_bytes - old + new > MAX_VAR_BYTES {
            self.warn(here, format!("variable '{scope}.{name}' not set: all variables together would exceed {MAX_VAR_BYTES} bytes"));
            return;
        }
        self.var_bytes = self.var_bytes - old + new;
        self.vars.insert(key, v);
    }

    /// Looks a variable up; `None` when it does not exist. `connection.*`
    /// never exists at policy time.
    pub fn lookup(&self, name: &str, here: &Here) -> Option<Value> {
        if let Some(v) = self.bindings.get(name) {
            return Some(Value::Scalar(v.clone()));
        }
        self.lookup_unbound(name, here)
    }

    /// [`Self::lookup`] without the promise's iteration bindings: what
    /// `@(name)` reads (3.21 binds only `$(name)` per iteration; `@(list)`
    /// is the whole list, `@(container)` the container, in the same promise).
    pub fn lookup_unbound(&self, name: &str, here: &Here) -> Option<Value> {
        let (scopes, var) = resolve_ref(name, here.scope, self.in_bundle.get());
        let mut found = None;
        for scope in &scopes {
            found = self.lookup_in(scope, &var, here);
            if found.is_some() {
                break;
            }
        }
        found
    }

    /// A variable in one scope key (special scopes included).
    fn lookup_in(&self, scope: &str, var: &str, here: &Here) -> Option<Value> {
        match scope {
            "sys" => self
                .opts
                .sys
                .get(var)
                .cloned()
                .or_else(|| self.lookup_in_container(scope, var)),
            "const" => Some(Value::Scalar(
                match var {
                    "dollar" => "$",
                    "n" | "endl" => "\n",
                    "r" => "\r",
                    "t" => "\t",
                    "at" => "@",
                    "dirsep" => "/",
                    _ => return None,
                }
                .to_string(),
            )),
            "this" => {
                let f = here.file;
                let v = match var {
                    "promise_filename" => f.to_string(),
                    "promise_dirname" => dirname(f).to_string(),
                    "bundle" => here.scope.rsplit(':').next().unwrap_or("").to_string(),
                    "namespace" => scope_ns(here.scope).unwrap_or("default").to_string(),
                    "promise_linenumber" => here.line.to_string(),
                    _ => return None,
                };
                Some(Value::Scalar(v))
            }
            "connection" => None,
            _ => {
                let key = (scope.to_string(), var.to_string());
                if self.unknown_vars.contains(&key) {
                    self.hit_unknown(format!("variable '{scope}.{var}'"));
                    return None;
                }
                if let Some(v) = self.vars.get(&key) {
                    return Some(v.clone());
                }
                self.lookup_in_container(scope, var)
            }
        }
    }

    /// Expands `$(x)` and `${x}` (nested references first). Lists in
    /// scalar context stay unexpanded and count as unresolved, unless bound
    /// by promise iteration. `$(connection.*)` stays as literal text.
    pub fn expand(&self, s: &str, here: &Here) -> Expanded {
        let mut unresolved = Vec::new();
        let text = self.expand_inner(s, here, 0, &mut unresolved);
        Expanded { text, unresolved }
    }

    fn expand_inner(
        &self,
        s: &str,
        here: &Here,
        depth: usize,
        unresolved: &mut Vec<String>,
    ) -> String {
        if depth > MAX_EVAL_DEPTH || !s.contains('$') {
            return s.to_string();
        }
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' && i + 1 < b.len() && (b[i + 1] == b'(' || b[i + 1] == b'{') {
                let open = b[i + 1];
                let close = if open == b'(' { b')' } else { b'}' };
                // find matching close, counting both bracket kinds
                let mut d = 0i32;
                let mut j = i + 1;
                let mut end = None;
                while j < b.len() {
                    match b[j] {
                        b'(' | b'{' => d += 1,
                        b')' | b'}' => {
                            d -= 1;
                            if d == 0 {
                                if b[j] == close {
                                    end = Some(j);
                                }
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let Some(end) = end else {
                    out.push_str(&s[i..]);
                    break;
                };
                let inner = &s[i + 2..end];
                let name = self.expand_inner(inner, here, depth + 1, unresolved);
                let is_conn = strip_ns(&name).starts_with("connection.");
                let found = match self.lookup(&name, here) {
                    Some(Value::Data(j)) => self.data_scalar(&name, &j).map(Value::Scalar),
                    v => v,
                };
                match found {
                    Some(Value::Scalar(v)) if !is_conn => out.push_str(&v),
                    _ => {
                        if !is_conn {
                            unresolved.push(name.clone());
                        }
                        out.push('$');
                        out.push(open as char);
                        out.push_str(&name);
                        out.push(close as char);
                    }
                }
                if out.len() > MAX_STRING {
                    unresolved.push("<string too long>".into());
                    return out;
                }
                i = end + 1;
            } else {
                let ch_len = s[i..].chars().next().map(|c| c.len_utf8()).unwrap_or(1);
                out.push_str(&s[i..i + ch_len]);
                i += ch_len;
            }
        }
        out
    }

    /// Evaluates an rval to a value. `None` means unresolved (an unknown
    /// function or a missing variable), with a warning already recorded.
    pub fn eval_rval(&mut self, r: &Rval, here: &Here, depth: usize) -> Option<Value> {
        if depth > MAX_EVAL_DEPTH {
            self.warn(here, "expression nested too deeply".into());
            return None;
        }
        match r {
            Rval::Scalar(s) => {
                if let Some(name) = list_ref(s) {
                    return self.lookup_unbound(name, here);
                }
                let e = self.expand(s, here);
                if e.unresolved.is_empty() {
                    Some(Value::Scalar(e.text))
                } else {
                    None
                }
            }
            Rval::Symbol(s) => Some(Value::Scalar(s.clone())),
            Rval::List(items) => {
                let mut out = Vec::new();
                for it in items {
                    match self.eval_rval(it, here, depth + 1)? {
                        Value::Scalar(s) => out.push(s),
                        Value::List(l) => out.extend(l),
                        Value::Data(_) => self.warn_data_in_list(it, here),
                    }
                    if out.len() > MAX_LIST_LEN {
                        self.warn(
                            here,
                            format!("list too long (more than {MAX_LIST_LEN} elements)"),
                        );
                        return None;
                    }
                }
                Some(Value::List(out))
            }
            Rval::Call(c) => self.call(c, here, depth + 1),
        }
    }

    /// Like [`Self::eval_rval`] but keeps unresolved text, reporting the
    /// names that did not resolve (used for access lists, where an
    /// unresolved entry must drop the rule rather than widen it).
    pub fn eval_rval_lenient(
        &mut self,
        r: &Rval,
        here: &Here,
        unresolved: &mut Vec<String>,
    ) -> Value {
        match r {
            Rval::Scalar(s) => {
                if let Some(name) = list_ref(s) {
                    match self.lookup_unbound(name, here) {
                        // a container is no list or scalar here: unresolved
                        Some(Value::Data(_)) | None => {}
                        Some(v) => return v,
                    }
                    unresolved.push(name.to_string());
                    return Value::Scalar(s.clone());
                }
                let e = self.expand(s, here);
                unresolved.extend(e.unresolved);
                Value::Scalar(e.text)
            }
            Rval::List(items) => {
                let mut out = Vec::new();
                for it in items {
                    // `@(container)` in a list: 3.21 leaves it out (in
                    // deny lists too: seen in the differential run)
                    if let Rval::Scalar(s) = it {
                        if let Some(Value::Data(_)) =
                            list_ref(s).and_then(|n| self.lookup_unbound(n, here))
                        {
                            self.warn_data_in_list(it, here);
                            continue;
                        }
                    }
                    match self.eval_rval_lenient(it, here, unresolved) {
                        Value::Scalar(s) => out.push(s),
                        Value::List(l) => out.extend(l),
                        Value::Data(_) => self.warn_data_in_list(it, here),
                    }
                    if out.len() > MAX_LIST_LEN {
                        self.warn(
                            here,
                            format!("list too long (more than {MAX_LIST_LEN} elements); truncated"),
                        );
                        out.truncate(MAX_LIST_LEN);
                        unresolved.push("<list too long>".into());
                        break;
                    }
                }
                Value::List(out)
            }
            other => match self.eval_rval(other, here, 0) {
                Some(Value::Data(_)) => {
                    unresolved.push(format!("{other:?} (a data container)"));
                    Value::Scalar(String::new())
                }
                Some(v) => v,
                None => {
                    unresolved.push(format!("{other:?}"));
                    Value::Scalar(String::new())
                }
            },
        }
    }

    fn scalar_arg(&mut self, c: &FnCall, i: usize, here: &Here, depth: usize) -> Option<String> {
        match self.eval_rval(c.args.get(i)?, here, depth)? {
            Value::Scalar(s) => Some(s),
            Value::List(_) | Value::Data(_) => None,
        }
    }

    /// A list argument: a list, or the name of a list variable, or a data
    /// container (`@(d)`, its name, inline JSON) whose elements are all
    /// strings, integers or booleans. A container holding anything else
    /// is unknown: 3.21's functions differ in how they print or skip
    /// those, and rcf does not guess.
    fn list_arg(&mut self, c: &FnCall, i: usize, here: &Here, depth: usize) -> Option<Vec<String>> {
        let a = c.args.get(i)?;
        let j = match self.eval_rval(a, here, depth)? {
            Value::List(l) => return Some(l),
            Value::Data(j) => j,
            // a bare name: the list variable called that
            Value::Scalar(s) => match self.named_value(&s, here)? {
                Value::List(l) => return Some(l),
                Value::Scalar(_) => return None,
                Value::Data(j) => j,
            },
        };
        self.data_as_list(&c.name, &j)
    }

    fn class_bool(b: bool) -> Option<Value> {
        Some(Value::Scalar(if b { "any" } else { "!any" }.into()))
    }

    /// A class-valued result; `Unknown` is returned as no value (the
    /// construct was recorded by [`Self::hit_unknown`]).
    fn class_tri(t: Tri) -> Option<Value> {
        match t {
            Tri::True => Self::class_bool(true),
            Tri::False => Self::class_bool(false),
            Tri::Unknown => None,
        }
    }

    /// Function calls. Class-valued functions return `any` / `!any`.
    pub fn call(&mut self, c: &FnCall, here: &Here, depth: usize) -> Option<Value> {
        let here_call = Here {
            file: here.file,
            scope: here.scope,
            line: c.pos.line,
        };
        let h = &here_call;
        let name = strip_ns(&c.name);
        let argc = c.args.len();
        if let Some(r) = self.call_data(name, c, h, depth) {
            return r;
        }
        if let Some(r) = self.call_cached(name, c, h, depth) {
            return r;
        }
        if let Some(r) = self.call_io(name, c, h, depth) {
            return r;
        }
        let need = |n: usize| argc == n;
        let r = match name {
            "getenv" if need(2) => {
                let var = self.scalar_arg(c, 0, h, depth)?;
                let max: usize = self.scalar_arg(c, 1, h, depth)?.trim().parse().ok()?;
                let v = self.opts.env.get(&var).cloned().unwrap_or_default();
                Some(Value::Scalar(v.chars().take(max).collect()))
            }
            "concat" => {
                let mut out = String::new();
                for i in 0..argc {
                    out.push_str(&self.scalar_arg(c, i, h, depth)?);
                }
                Some(Value::Scalar(out))
            }
            "strcmp" if need(2) => {
                let a = self.scalar_arg(c, 0, h, depth)?;
                let b = self.scalar_arg(c, 1, h, depth)?;
                Self::class_bool(a == b)
            }
            "regcmp" if need(2) => {
                let re = self.scalar_arg(c, 0, h, depth)?;
                let s = self.scalar_arg(c, 1, h, depth)?;
                if super::addr::compile(&re).is_none() {
                    self.warn(h, format!("regcmp(): invalid regular expression '{re}'"));
                    return None;
                }
                Self::class_bool(super::addr::full_match_str(&re, &s))
            }
            "not" if need(1) => {
                let e = self.scalar_arg(c, 0, h, depth)?;
                Self::class_tri(self.class_expr(&e, h)?.not())
            }
            "and" | "or" => {
                let mut acc = Tri::from_bool(name == "and");
                for i in 0..argc {
                    let e = self.scalar_arg(c, i, h, depth)?;
                    let v = self.class_expr(&e, h)?;
                    acc = if name == "and" { acc.and(v) } else { acc.or(v) };
                }
                Self::class_tri(acc)
            }
            "join" if need(2) => {
                let sep = self.scalar_arg(c, 0, h, depth)?;
                let l = self.list_arg(c, 1, h, depth)?;
                Some(Value::Scalar(l.join(&sep)))
            }
            "ifelse" if argc >= 1 && argc % 2 == 1 => {
                let mut i = 0;
                while i + 1 < argc {
                    let cond = self.scalar_arg(c, i, h, depth)?;
                    match self.class_expr(&cond, h)? {
                        Tri::True => {
                            return Some(Value::Scalar(self.scalar_arg(c, i + 1, h, depth)?))
                        }
                        Tri::False => {}
                        Tri::Unknown => {
                            self.hit_unknown(format!("ifelse() condition '{cond}'"));
                            return None;
                        }
                    }
                    i += 2;
                }
                Some(Value::Scalar(self.scalar_arg(c, argc - 1, h, depth)?))
            }
            "isvariable" if need(1) => {
                let v = self.scalar_arg(c, 0, h, depth)?;
                Self::class_bool(self.lookup(&v, h).is_some())
            }
            "canonify" if need(1) => {
                Some(Value::Scalar(canonify(&self.scalar_arg(c, 0, h, depth)?)))
            }
            "fileexists" if need(1) => {
                let p = self.scalar_arg(c, 0, h, depth)?;
                Self::class_bool(self.src.exists(&p))
            }
            "translatepath" if need(1) => Some(Value::Scalar(self.scalar_arg(c, 0, h, depth)?)),
            "lastnode" if need(2) => {
                let s = self.scalar_arg(c, 0, h, depth)?;
                let sep = self.scalar_arg(c, 1, h, depth)?;
                let re = super::addr::compile(&sep)?;
                let last = re.split(&s).last()?.ok()?;
                Some(Value::Scalar(last.to_string()))
            }
            "isdir" if need(1) => {
                let p = self.scalar_arg(c, 0, h, depth)?;
                Self::class_bool(matches!(
                    self.src.canonicalize(&p),
                    super::Canon::Resolved { is_dir: true, .. }
                ))
            }
            "maplist" if need(2) => {
                let Rval::Scalar(tpl) = &c.args[0] else {
                    return None;
                };
                let l = self.list_arg(c, 1, h, depth)?;
                let saved = self.bindings.clone();
                let mut out = Vec::new();
                for item in l {
                    self.bindings.insert("this".into(), item);
                    let e = self.expand(tpl, h);
                    if !e.unresolved.is_empty() {
                        self.bindings = saved;
                        return None;
                    }
                    out.push(e.text);
                }
                self.bindings = saved;
                Some(Value::List(out))
            }
            "classmatch" if argc >= 1 => {
                let re = self.scalar_arg(c, 0, h, depth)?;
                let rx = super::addr::compile(&re)?;
                if self.classes.iter().any(|k| super::addr::full_match(&rx, k)) {
                    return Self::class_bool(true);
                }
                let maybe = self
                    .unknown_classes
                    .iter()
                    .any(|k| super::addr::full_match(&rx, k));
                if maybe || !self.opts.hard_classes_discovered {
                    // an undiscovered hard class or an undecided class may match
                    self.hit_unknown(format!(
                        "classmatch('{re}') over classes rcf has not decided"
                    ));
                    return Self::class_tri(Tri::Unknown);
                }
                Self::class_bool(false)
            }
            // FilterInternal: full match of each element; `every` needs a
            // non-empty list
            "every" | "some" | "none" | "grep" if need(2) => {
                let re = self.scalar_arg(c, 0, h, depth)?;
                let l = self.list_arg(c, 1, h, depth)?;
                let Some(rx) = super::addr::compile(&re) else {
                    self.warn(h, format!("{name}(): invalid regular expression '{re}'"));
                    return None;
                };
                let hits: Vec<String> = l
                    .iter()
                    .filter(|x| super::addr::full_match(&rx, x))
                    .cloned()
                    .collect();
                match name {
                    "every" => Self::class_bool(!l.is_empty() && hits.len() == l.len()),
                    "some" => Self::class_bool(!hits.is_empty()),
                    "none" => Self::class_bool(hits.is_empty()),
                    _ => Some(Value::List(hits)),
                }
            }
            // RlistFromSplitRegex (allow_blanks): at most `max` pieces
            // before the rest; an empty match ends the split
            "splitstring" if need(3) => {
                let text = self.scalar_arg(c, 0, h, depth)?;
                let re = self.scalar_arg(c, 1, h, depth)?;
                let max: i64 = self.scalar_arg(c, 2, h, depth)?.trim().parse().ok()?;
                let max = usize::try_from(max).unwrap_or(0);
                Some(Value::List(io_fns::split_regex(&text, &re, max, true)))
            }
            // RlistFromRegexSplitNoOverflow: max-1 pieces, then the rest
            "string_split" if need(3) => {
                let text = self.scalar_arg(c, 0, h, depth)?;
                let re = self.scalar_arg(c, 1, h, depth)?;
                let max: i64 = self.scalar_arg(c, 2, h, depth)?.trim().parse().ok()?;
                if max < 1 {
                    return None;
                }
                let rx = super::addr::compile(&re)?;
                let mut out = Vec::new();
                let mut sp = text.as_str();
                while (out.len() as i64) < max - 1 {
                    let Ok(Some(m)) = rx.find(sp) else { break };
                    out.push(sp[..m.start()].to_string());
                    sp = &sp[m.end()..];
                }
                out.push(sp.to_string());
                Some(Value::List(out))
            }
            "sort" if argc == 1 || argc == 2 => {
                let mut l = self.list_arg(c, 0, h, depth)?;
                let mode = if argc == 2 {
                    self.scalar_arg(c, 1, h, depth)?
                } else {
                    "lex".to_string()
                };
                match mode.as_str() {
                    "lex" => l.sort(),
                    "int" | "real" => l.sort_by(|a, b| {
                        let x = a.trim().parse::<f64>().unwrap_or(0.0);
                        let y = b.trim().parse::<f64>().unwrap_or(0.0);
                        x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
                    }),
                    _ => {
                        self.hit_unknown(format!(
                            "sort() mode '{mode}', which rcf does not support"
                        ));
                        return None;
                    }
                }
                Some(Value::List(l))
            }
            "isgreaterthan" | "islessthan" if need(2) => {
                let a = self.scalar_arg(c, 0, h, depth)?;
                let b = self.scalar_arg(c, 1, h, depth)?;
                let gt = match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
                    (Ok(x), Ok(y)) => x > y,
                    _ => a > b,
                };
                let lt = match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
                    (Ok(x), Ok(y)) => x < y,
                    _ => a < b,
                };
                Self::class_bool(if name == "isgreaterthan" { gt } else { lt })
            }
            _ => {
                // named in the one warning of whatever uses the value
                self.hit_unknown(format!(
                    "function '{}' with {} argument(s), which rcf does not support",
                    c.name, argc
                ));
                None
            }
        };
        r
    }

    /// Evaluates a class expression: `!` binds tightest, then `.`/`&`,
    /// then `|`/`||`; parentheses group. Variables are expanded first; an
    /// expression with an undefined variable is false (as in 3.21), one
    /// whose variable rcf could not evaluate is unknown. `None` means the
    /// expression is malformed (a warning is recorded).
    pub fn class_expr(&mut self, expr: &str, here: &Here) -> Option<Tri> {
        let before = self.unknown_hits.borrow().len();
        let e = self.expand(expr, here);
        if !e.unresolved.is_empty() {
            if self.unknown_hits.borrow().len() > before {
                return Some(Tri::Unknown);
            }
            return Some(Tri::False);
        }
        let toks: Vec<char> = e.text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut p = ClassParser {
            t: &toks,
            i: 0,
            ev: self,
            scope: here.scope,
        };
        let r = p.or(0);
        match r {
            Some(v) if p.i == toks.len() => Some(v),
            _ => {
                self.warn(here, format!("malformed class expression '{}'", e.text));
                None
            }
        }
    }

    /// Whether a class is defined: true when defined, unknown when rcf
    /// could not decide it (or it may be a hard class rcf has not
    /// discovered), false otherwise.
    ///
    /// Namespaces as 3.21's `EvalTokenAsClass`: hard classes are seen
    /// unqualified from anywhere (and as `default:x`); an unqualified soft
    /// class is looked up in the current bundle's namespace (and among the
    /// bundle's local classes); `ns:x` names the soft class of `ns`.
    pub fn is_class(&self, name: &str, scope: &str) -> Tri {
        let hard = |n: &str| n == "any" || n == "server" || self.opts.classes.contains(n);
        let (key, local, may_be_hard) = match name.split_once(':') {
            Some(("default", n)) => {
                if hard(n) {
                    return Tri::True;
                }
                (n.to_string(), None, true)
            }
            Some((ns, n)) => (format!("{ns}:{n}"), None, false),
            None => {
                if hard(name) {
                    return Tri::True;
                }
                let key = match scope_ns(scope) {
                    Some(ns) => format!("{ns}:{name}"),
                    None => name.to_string(),
                };
                (key, Some((scope.to_string(), name.to_string())), true)
            }
        };
        let is_local =
            |set: &BTreeSet<(String, String)>| local.as_ref().is_some_and(|l| set.contains(l));
        if self.classes.contains(&key) || is_local(&self.local_classes) {
            return Tri::True;
        }
        if self.unknown_classes.contains(&key) || is_local(&self.unknown_local_classes) {
            self.hit_unknown(format!("class '{key}', which rcf could not decide"));
            return Tri::Unknown;
        }
        let name = strip_ns(name);
        if may_be_hard
            && !self.opts.hard_classes_discovered
            && super::hardclass::undecided(
                name,
                &self.opts.classes,
                self.opts.sys.contains_key("policy_hub"),
            )
        {
            self.hit_unknown(format!(
                "class '{name}', a hard class rcf has not discovered"
            ));
            return Tri::Unknown;
        }
        Tri::False
    }

    /// Whether the promise applies: its class guard and every
    /// `if`/`ifvarclass`/`unless`, combined in Kleene logic. An undefined
    /// variable or a failed function skips the promise, as in 3.21; a
    /// condition rcf could not evaluate makes the answer unknown (the
    /// constructs are left in [`Self::unknown_hits`] for the caller's
    /// warning).
    pub fn promise_active(&mut self, p: &Promise, here: &Here) -> Tri {
        let mut acc = match self.class_expr(&p.guard, here) {
            Some(t) => t,
            None => return Tri::False,
        };
        if acc == Tri::False {
            return Tri::False;
        }
        if self.uncertain_files.contains(here.file) {
            self.hit_unknown(format!(
                "'{}' is an input loaded under an unknown condition",
                here.file
            ));
            acc = acc.and(Tri::Unknown);
        }
        for c in &p.constraints {
            let want = match c.lval.as_str() {
                "if" | "ifvarclass" => true,
                "unless" => false,
                _ => continue,
            };
            let h = Here {
                line: c.pos.line,
                ..here.clone()
            };
            let before = self.unknown_hits.borrow().len();
            let v = match &c.rval {
                Rval::Scalar(s) => {
                    let e = self.expand(s, &h);
                    if !e.unresolved.is_empty() {
                        if self.unknown_hits.borrow().len() > before {
                            Some(Tri::Unknown)
                        } else {
                            // CFEngine skips promises whose condition is unresolved
                            return Tri::False;
                        }
                    } else {
                        self.class_expr(&e.text, &h)
                    }
                }
                Rval::Call(f) => match self.call(f, &h, 0) {
                    Some(Value::Scalar(s)) => self.class_expr(&s, &h),
                    _ if self.unknown_hits.borrow().len() > before => Some(Tri::Unknown),
                    _ => return Tri::False,
                },
                _ => None,
            };
            let v = match v {
                Some(v) => v,
                None => return Tri::False,
            };
            acc = acc.and(if want { v } else { v.not() });
            if acc == Tri::False {
                return Tri::False;
            }
        }
        acc
    }

    /// Marks a variable as unknown (its value depends on something rcf
    /// cannot evaluate), with one warning naming why.
    fn set_unknown_var(&mut self, scope: &str, name: &str, why: &[String], here: &Here) {
        let key = (scope.to_string(), name.to_string());
        if self.unknown_vars.insert(key) {
            self.warn(
                here,
                format!(
                    "variable '{scope}.{name}' cannot be evaluated by rcf ({}); everything that uses it is treated as unknown (deny rules still apply, admit rules do not)",
                    why.join(", ")
                ),
            );
        }
    }

    /// Evaluates the `vars:` and `classes:` of a bundle into `scope`.
    /// Classes of `common` bundles are global.
    pub fn eval_bundle_vars_classes(&mut self, file: &str, b: &Bundle) {
        let scope = bundle_scope(b);
        let global = b.kind == "common";
        for sec in &b.sections {
            match sec.promise_type.as_str() {
                "vars" => {
                    for p in &sec.promises {
                        let here = Here {
                            file,
                            scope: &scope,
                            line: p.pos.line,
                        };
                        self.take_unknowns();
                        let active = self.promise_active(p, &here);
                        if active == Tri::False {
                            self.take_unknowns();
                            continue;
                        }
                        let guard_why = self.take_unknowns();
                        for iter in self.iterations(p, &here) {
                            self.bindings = iter;
                            self.in_bundle.set(true);
                            let e = self.expand(&p.promiser, &here);
                            if !e.unresolved.is_empty() {
                                self.take_unknowns();
                                continue;
                            }
                            if active == Tri::Unknown {
                                self.set_unknown_var(&scope, &e.text, &guard_why, &here);
                                continue;
                            }
                            for c in &p.constraints {
                                let ty = c.lval.as_str();
                                if ty == "data" {
                                    let h = Here {
                                        line: c.pos.line,
                                        ..here.clone()
                                    };
                                    match self.eval_data_var(&c.rval, &h) {
                                        DataVar::Set(j) => {
                                            self.set_var(&scope, &e.text, Value::Data(j), &h)
                                        }
                                        DataVar::Undefined(why) => self.warn(
                                            &h,
                                            format!("data variable '{}' not set: {why}", e.text),
                                        ),
                                        DataVar::Unknown(why) => {
                                            self.set_unknown_var(&scope, &e.text, &[why], &h)
                                        }
                                    }
                                    continue;
                                }
                                if !matches!(
                                    ty,
                                    "string" | "int" | "real" | "slist" | "ilist" | "rlist"
                                ) {
                                    continue;
                                }
                                let h = Here {
                                    line: c.pos.line,
                                    ..here.clone()
                                };
                                // like CFEngine: a value with unresolved variables is kept
                                // literally; a failed function call leaves the variable undefined
                                let v = match &c.rval {
                                    Rval::Call(_) => self.eval_rval(&c.rval, &h, 0),
                                    other => {
                                        let mut unresolved = Vec::new();
                                        let v = self.eval_rval_lenient(other, &h, &mut unresolved);
                                        if unresolved.iter().any(|u| u.starts_with("Call(")) {
                                            None
                                        } else {
                                            Some(v)
                                        }
                                    }
                                };
                                let why = self.take_unknowns();
                                if !why.is_empty() {
                                    self.set_unknown_var(&scope, &e.text, &why, &h);
                                    continue;
                                }
                                if let Some(v) = v {
                                    let v = match (ty, v) {
                                        ("slist" | "ilist" | "rlist", Value::Scalar(s)) => {
                                            Value::List(vec![s])
                                        }
                                        (_, v) => v,
                                    };
                                    self.set_var(&scope, &e.text, v, &h);
                                }
                            }
                        }
                        self.bindings.clear();
                        self.in_bundle.set(false);
                    }
                }
                "classes" => {
                    for p in &sec.promises {
                        let here = Here {
                            file,
                            scope: &scope,
                            line: p.pos.line,
                        };
                        self.take_unknowns();
                        let active = self.promise_active(p, &here);
                        if active == Tri::False {
                            self.take_unknowns();
                            continue;
                        }
                        let name = canonify(&self.expand(&p.promiser, &here).text);
                        // a global class of a namespaced bundle is `ns:name`
                        let global_key = match scope_ns(&scope) {
                            Some(ns) => format!("{ns}:{name}"),
                            None => name.clone(),
                        };
                        let mut val: Option<Tri> = if p.constraints.iter().all(|c| {
                            matches!(
                                c.lval.as_str(),
                                "if" | "ifvarclass"
                                    | "unless"
                                    | "comment"
                                    | "handle"
                                    | "meta"
                                    | "scope"
                                    | "persistence"
                            )
                        }) {
                            Some(Tri::True)
                        } else {
                            None
                        };
                        for c in &p.constraints {
                            let h = Here {
                                line: c.pos.line,
                                ..here.clone()
                            };
                            let before = self.unknown_hits.borrow().len();
                            let v = match c.lval.as_str() {
                                "expression" => match &c.rval {
                                    Rval::Scalar(s) => self.class_expr(s, &h),
                                    r => match self.eval_rval(r, &h, 0) {
                                        Some(Value::Scalar(s)) => self.class_expr(&s, &h),
                                        _ => None,
                                    },
                                },
                                "and" | "or" | "xor" => match self.eval_rval(&c.rval, &h, 0) {
                                    Some(Value::List(l)) => {
                                        let mut vals = Vec::new();
                                        for x in &l {
                                            vals.push(self.class_expr(x, &h).unwrap_or(Tri::False));
                                        }
                                        Some(match c.lval.as_str() {
                                            "and" => vals.iter().fold(Tri::True, |a, &x| a.and(x)),
                                            "or" => vals.iter().fold(Tri::False, |a, &x| a.or(x)),
                                            _ => {
                                                if vals.contains(&Tri::Unknown) {
                                                    Tri::Unknown
                                                } else {
                                                    Tri::from_bool(
                                                        vals.iter()
                                                            .filter(|&&x| x == Tri::True)
                                                            .count()
                                                            == 1,
                                                    )
                                                }
                                            }
                                        })
                                    }
                                    Some(Value::Scalar(s)) => self.class_expr(&s, &h),
                                    Some(Value::Data(_)) | None => None,
                                },
                                "not" => match self.eval_rval(&c.rval, &h, 0) {
                                    Some(Value::Scalar(s)) => self.class_expr(&s, &h).map(Tri::not),
                                    _ => None,
                                },
                                // random selections 3.21 makes and rcf does not
                                "dist" | "select_class" => {
                                    self.hit_unknown(format!("'{}' (a random selection)", c.lval));
                                    Some(Tri::Unknown)
                                }
                                _ => continue,
                            };
                            val = match v {
                                None if self.unknown_hits.borrow().len() > before => {
                                    Some(Tri::Unknown)
                                }
                                v => v,
                            };
                        }
                        let why = self.take_unknowns();
                        match active.and(val.unwrap_or(Tri::False)) {
                            Tri::True => {
                                if global {
                                    self.classes.insert(global_key);
                                } else {
                                    self.local_classes.insert((scope.clone(), name));
                                }
                            }
                            Tri::Unknown => {
                                let (fresh, label) = if global {
                                    (
                                        self.unknown_classes.insert(global_key.clone()),
                                        global_key.clone(),
                                    )
                                } else {
                                    (
                                        self.unknown_local_classes
                                            .insert((scope.clone(), name.clone())),
                                        format!("{scope}.{name}"),
                                    )
                                };
                                if fresh {
                                    self.warn(&here, format!("class '{label}' cannot be decided by rcf ({}); rules it guards are treated as unknown (deny rules still apply, admit rules do not)", why.join(", ")));
                                }
                            }
                            Tri::False => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Bindings for CFEngine's implicit iteration: every `$(v)` in the
    /// promiser, in scalar constraints or in the items of list constraints
    /// that names a list or a data container yields one iteration per
    /// element (a container's primitive elements; cartesian product,
    /// bounded).
    pub fn iterations(&mut self, p: &Promise, here: &Here) -> Vec<BTreeMap<String, String>> {
        let mut names: Vec<String> = Vec::new();
        let mut scan = |s: &str| {
            for n in var_refs(s) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        };
        scan(&p.promiser);
        // scalars and the items of lists (3.21 iterates over every rval)
        fn walk(r: &Rval, scan: &mut dyn FnMut(&str)) {
            match r {
                Rval::Scalar(s) if list_ref(s).is_none() => scan(s),
                Rval::List(items) => items.iter().for_each(|i| walk(i, scan)),
                _ => {}
            }
        }
        for c in &p.constraints {
            walk(&c.rval, &mut scan);
        }
        let mut out = vec![BTreeMap::new()];
        for n in names {
            let l = match self.iteration_lookup(&n, here) {
                Some(Value::List(l)) => Some(l),
                // a container iterates over its primitive elements
                Some(Value::Data(j)) => self.data_iteration(&j),
                _ => None,
            };
            if let Some(l) = l {
                let mut next = Vec::new();
                for b in &out {
                    for item in &l {
                        let mut b2 = b.clone();
                        b2.insert(n.clone(), item.clone());
                        next.push(b2);
                    }
                }
                if next.len() > MAX_ITERATIONS {
                    self.warn(here, format!("promise iterates over more than {MAX_ITERATIONS} combinations; skipped"));
                    return Vec::new();
                }
                out = next;
            }
        }
        out
    }
}

impl Eval<'_> {
    /// The variable an iteration wheel reads: 3.21's iteration engine
    /// qualifies `bundle.var` with the promise's namespace only (no
    /// fallback to the default namespace, unlike expansion), so inside a
    /// namespaced bundle `$(g.list)` of the default namespace does not
    /// iterate and stays unexpanded (seen in the differential run).
    fn iteration_lookup(&self, name: &str, here: &Here) -> Option<Value> {
        let (scopes, var) = resolve_ref(name, here.scope, true);
        self.lookup_in(scopes.first()?, &var, here)
    }
}

/// `@(name)` / `@{name}` as a whole string: the list it names.
pub(crate) fn list_ref(s: &str) -> Option<&str> {
    let inner = s
        .strip_prefix("@(")
        .and_then(|r| r.strip_suffix(')'))
        .or_else(|| s.strip_prefix("@{").and_then(|r| r.strip_suffix('}')))?;
    if inner.contains(['(', ')', '{', '}', '$']) {
        None
    } else {
        Some(inner)
    }
}

/// Names referenced as `$(name)` / `${name}` without nesting.
fn var_refs(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'$' && (b[i + 1] == b'(' || b[i + 1] == b'{') {
            let close = if b[i + 1] == b'(' { ')' } else { '}' };
            if let Some(end) = s[i + 2..].find(close) {
                let n = &s[i + 2..i + 2 + end];
                if !n.contains(['$', '(', '{']) {
                    out.push(n.to_string());
                }
                i += 2 + end;
                continue;
            }
        }
        i += 1;
    }
    out
}

pub(crate) fn dirname(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => ".",
    }
}

struct ClassParser<'p, 'e, 'a> {
    t: &'p [char],
    i: usize,
    ev: &'e Eval<'a>,
    scope: &'p str,
}

impl ClassParser<'_, '_, '_> {
    fn or(&mut self, d: usize) -> Option<Tri> {
        if d > MAX_EVAL_DEPTH {
            return None;
        }
        let mut v = self.and(d)?;
        while self.i < self.t.len() && self.t[self.i] == '|' {
            self.i += 1;
            if self.i < self.t.len() && self.t[self.i] == '|' {
                self.i += 1;
            }
            let r = self.and(d)?;
            v = v.or(r);
        }
        Some(v)
    }
    fn and(&mut self, d: usize) -> Option<Tri> {
        let mut v = self.not(d)?;
        while self.i < self.t.len() && (self.t[self.i] == '.' || self.t[self.i] == '&') {
            self.i += 1;
            let r = self.not(d)?;
            v = v.and(r);
        }
        Some(v)
    }
    fn not(&mut self, d: usize) -> Option<Tri> {
        if self.i < self.t.len() && self.t[self.i] == '!' {
            self.i += 1;
            return self.not(d + 1).map(Tri::not).filter(|_| d < MAX_EVAL_DEPTH);
        }
        self.atom(d)
    }
    fn atom(&mut self, d: usize) -> Option<Tri> {
        if self.i < self.t.len() && self.t[self.i] == '(' {
            self.i += 1;
            let v = self.or(d + 1)?;
            if self.i < self.t.len() && self.t[self.i] == ')' {
                self.i += 1;
                return Some(v);
            }
            return None;
        }
        let start = self.i;
        while self.i < self.t.len()
            && (self.t[self.i].is_alphanumeric() || self.t[self.i] == '_' || self.t[self.i] == ':')
        {
            self.i += 1;
        }
        if start == self.i {
            return None;
        }
        let name: String = self.t[start..self.i].iter().collect();
        Some(self.ev.is_class(&name, self.scope))
    }
}
