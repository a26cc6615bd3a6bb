//! The evaluator a server needs: `inputs`, `bundle common` variables and
//! classes, class expressions, variable expansion and a small set of
//! functions. Everything the outside world knows (files, environment,
//! `sys.*`) comes from the caller.

use super::ast::*;
use super::{Diagnostic, PolicySource};
use std::collections::{BTreeMap, BTreeSet};

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
    /// Variables defined before the policy is read (augments, host-specific
    /// data), by (bundle, name); policy may test and override them.
    pub vars: BTreeMap<(String, String), Value>,
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

impl<'a> Eval<'a> {
    pub fn new(src: &'a dyn PolicySource, opts: &'a LoadOptions) -> Self {
        let mut classes = opts.classes.clone();
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
        }
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
        let name = strip_ns(name);
        let (scope, var) = match name.split_once('.') {
            Some((s, v)) if !s.contains('[') => (strip_ns(s), v),
            _ => (here.scope, name),
        };
        match scope {
            "sys" => self.opts.sys.get(var).cloned(),
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
                    "bundle" => here.scope.to_string(),
                    "promise_linenumber" => here.line.to_string(),
                    _ => return None,
                };
                Some(Value::Scalar(v))
            }
            "connection" => None,
            _ => self
                .vars
                .get(&(scope.to_string(), var.to_string()))
                .cloned(),
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
                match self.lookup(&name, here) {
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
                    return self.lookup(name, here);
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
                    if let Some(v) = self.lookup(name, here) {
                        return v;
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
                    match self.eval_rval_lenient(it, here, unresolved) {
                        Value::Scalar(s) => out.push(s),
                        Value::List(l) => out.extend(l),
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
            Value::List(_) => None,
        }
    }

    fn list_arg(&mut self, c: &FnCall, i: usize, here: &Here, depth: usize) -> Option<Vec<String>> {
        let a = c.args.get(i)?;
        match self.eval_rval(a, here, depth)? {
            Value::List(l) => Some(l),
            // a bare name: the list variable called that
            Value::Scalar(s) => match self.lookup(&s, here)? {
                Value::List(l) => Some(l),
                Value::Scalar(_) => None,
            },
        }
    }

    fn class_bool(b: bool) -> Option<Value> {
        Some(Value::Scalar(if b { "any" } else { "!any" }.into()))
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
                Self::class_bool(!self.class_expr(&e, h)?)
            }
            "and" | "or" => {
                let mut vals = Vec::new();
                for i in 0..argc {
                    let e = self.scalar_arg(c, i, h, depth)?;
                    vals.push(self.class_expr(&e, h)?);
                }
                Self::class_bool(if name == "and" {
                    vals.iter().all(|&x| x)
                } else {
                    vals.iter().any(|&x| x)
                })
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
                    if self.class_expr(&cond, h)? {
                        return Some(Value::Scalar(self.scalar_arg(c, i + 1, h, depth)?));
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
            "getvalues" | "getindices" if need(1) => {
                let n = self.scalar_arg(c, 0, h, depth)?;
                if let Some(v) = self.lookup(&n, h) {
                    return Some(match (name, v) {
                        ("getvalues", Value::List(l)) => Value::List(l),
                        ("getvalues", Value::Scalar(s)) => Value::List(vec![s]),
                        _ => Value::List(Vec::new()),
                    });
                }
                let n = strip_ns(&n);
                let (scope, var) = match n.split_once('.') {
                    Some((s, v)) => (s.to_string(), v.to_string()),
                    None => (h.scope.to_string(), n.to_string()),
                };
                let prefix = format!("{var}[");
                let mut out = Vec::new();
                for ((sc, k), v) in &self.vars {
                    if *sc != scope || !k.starts_with(&prefix) || !k.ends_with(']') {
                        continue;
                    }
                    let idx = &k[prefix.len()..k.len() - 1];
                    if idx.contains('[') || idx.contains(']') {
                        continue;
                    }
                    if name == "getindices" {
                        out.push(idx.to_string());
                    } else {
                        match v {
                            Value::Scalar(x) => out.push(x.clone()),
                            Value::List(l) => out.extend(l.iter().cloned()),
                        }
                    }
                }
                Some(Value::List(out))
            }
            "length" if need(1) => Some(Value::Scalar(
                self.list_arg(c, 0, h, depth)?.len().to_string(),
            )),
            "nth" if need(2) => {
                let l = self.list_arg(c, 0, h, depth)?;
                let i: i64 = self.scalar_arg(c, 1, h, depth)?.trim().parse().ok()?;
                let i = if i < 0 { l.len() as i64 + i } else { i };
                l.get(usize::try_from(i).ok()?).cloned().map(Value::Scalar)
            }
            "lastnode" if need(2) => {
                let s = self.scalar_arg(c, 0, h, depth)?;
                let sep = self.scalar_arg(c, 1, h, depth)?;
                let re = super::addr::compile(&sep)?;
                Some(Value::Scalar(re.split(&s).last().unwrap_or("").to_string()))
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
                let re = super::addr::compile(&re)?;
                let hit = self.classes.iter().any(|k| super::addr::full_match(&re, k));
                Self::class_bool(hit)
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
                self.warn(
                    h,
                    format!("function '{}' with {} argument(s) is not supported by rcf; the value is left unresolved", c.name, argc),
                );
                None
            }
        };
        r
    }

    /// Evaluates a class expression: `!` binds tightest, then `.`/`&`,
    /// then `|`/`||`; parentheses group. Variables are expanded first; an
    /// expression with an unresolved variable is false. `None` means the
    /// expression is malformed (a warning is recorded).
    pub fn class_expr(&mut self, expr: &str, here: &Here) -> Option<bool> {
        let e = self.expand(expr, here);
        if !e.unresolved.is_empty() {
            return Some(false);
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

    pub fn is_class(&self, name: &str, scope: &str) -> bool {
        let name = strip_ns(name);
        self.classes.contains(name)
            || self
                .local_classes
                .contains(&(scope.to_string(), name.to_string()))
    }

    /// Is the promise's guard (and `if`/`ifvarclass`/`unless`) true?
    pub fn promise_active(&mut self, p: &Promise, here: &Here) -> bool {
        if !self.class_expr(&p.guard, here).unwrap_or(false) {
            return false;
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
            let v = match &c.rval {
                Rval::Scalar(s) => {
                    let e = self.expand(s, &h);
                    if !e.unresolved.is_empty() {
                        // CFEngine skips promises whose condition is unresolved
                        return false;
                    }
                    self.class_expr(&e.text, &h)
                }
                Rval::Call(f) => match self.call(f, &h, 0) {
                    Some(Value::Scalar(s)) => self.class_expr(&s, &h),
                    _ => return false,
                },
                _ => None,
            };
            match v {
                Some(b) if b == want => {}
                _ => return false,
            }
        }
        true
    }

    /// Evaluates the `vars:` and `classes:` of a bundle into `scope`.
    /// Classes of `common` bundles are global.
    pub fn eval_bundle_vars_classes(&mut self, file: &str, b: &Bundle) {
        let scope = b.name.rsplit(':').next().unwrap_or(&b.name).to_string();
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
                        if !self.promise_active(p, &here) {
                            continue;
                        }
                        for iter in self.iterations(p, &here) {
                            self.bindings = iter;
                            let e = self.expand(&p.promiser, &here);
                            if !e.unresolved.is_empty() {
                                continue;
                            }
                            for c in &p.constraints {
                                let ty = c.lval.as_str();
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
                    }
                }
                "classes" => {
                    for p in &sec.promises {
                        let here = Here {
                            file,
                            scope: &scope,
                            line: p.pos.line,
                        };
                        if !self.promise_active(p, &here) {
                            continue;
                        }
                        let name = canonify(&self.expand(&p.promiser, &here).text);
                        let mut val: Option<bool> = if p.constraints.iter().all(|c| {
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
                            Some(true)
                        } else {
                            None
                        };
                        for c in &p.constraints {
                            let h = Here {
                                line: c.pos.line,
                                ..here.clone()
                            };
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
                                            vals.push(self.class_expr(x, &h).unwrap_or(false));
                                        }
                                        Some(match c.lval.as_str() {
                                            "and" => vals.iter().all(|&x| x),
                                            "or" => vals.iter().any(|&x| x),
                                            _ => vals.iter().filter(|&&x| x).count() == 1,
                                        })
                                    }
                                    Some(Value::Scalar(s)) => self.class_expr(&s, &h),
                                    None => None,
                                },
                                "not" => match self.eval_rval(&c.rval, &h, 0) {
                                    Some(Value::Scalar(s)) => self.class_expr(&s, &h).map(|b| !b),
                                    _ => None,
                                },
                                _ => continue,
                            };
                            val = v;
                        }
                        if val == Some(true) {
                            if global {
                                self.classes.insert(name);
                            } else {
                                self.local_classes.insert((scope.clone(), name));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Bindings for CFEngine's implicit iteration: every `$(v)` in the
    /// promiser or in scalar constraints that names a list yields one
    /// iteration per element (cartesian product, bounded).
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
        for c in &p.constraints {
            if let Rval::Scalar(s) = &c.rval {
                if list_ref(s).is_none() {
                    scan(s);
                }
            }
        }
        let mut out = vec![BTreeMap::new()];
        for n in names {
            if let Some(Value::List(l)) = self.lookup(&n, here) {
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
    fn or(&mut self, d: usize) -> Option<bool> {
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
            v = v || r;
        }
        Some(v)
    }
    fn and(&mut self, d: usize) -> Option<bool> {
        let mut v = self.not(d)?;
        while self.i < self.t.len() && (self.t[self.i] == '.' || self.t[self.i] == '&') {
            self.i += 1;
            let r = self.not(d)?;
            v = v && r;
        }
        Some(v)
    }
    fn not(&mut self, d: usize) -> Option<bool> {
        if self.i < self.t.len() && self.t[self.i] == '!' {
            self.i += 1;
            return self.not(d + 1).map(|b| !b).filter(|_| d < MAX_EVAL_DEPTH);
        }
        self.atom(d)
    }
    fn atom(&mut self, d: usize) -> Option<bool> {
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
