//! Augments (`def.json`, `def_preferred.json`, the `augments` chain) and
//! host-specific data (`WORKDIR/data/host_specific.json`), installed as
//! 3.21 installs them (libpromises/generic_agent.c `LoadAugmentsData`,
//! libpromises/cmdb.c `LoadCMDBData`) before the policy is evaluated.
//!
//! Pure: the caller parses the JSON into [`Json`] (order kept, as 3.21
//! iterates objects in file order) and answers [`AugmentsReader`] for the
//! chain; the result is variables and classes for `LoadOptions`.
//!
//! Values become what 3.21 makes of them: a primitive a string, an array
//! of primitives an slist, anything else (an object, an array holding
//! containers) a data container. What rcf cannot install yet is an error,
//! never a silent skip: namespaced names (`ns:bundle.var`, `ns:class`),
//! since a variable the MPF's `def.cf` would take from augments and rcf
//! left unset could widen access.

use super::eval::{Eval, Here, LoadOptions, Value};
use super::{Canon, PolicySource};
use std::collections::{BTreeMap, BTreeSet};

pub use super::json::Json;

/// Reads a further augments file named in an `augments` list: `Ok(None)`
/// when it cannot be opened (3.21 logs that at verbose level), `Err` when
/// it is not valid JSON.
pub trait AugmentsReader {
    /// The parsed file.
    fn read_json(&self, path: &str) -> Result<Option<Json>, String>;
}

/// What augments and host-specific data define.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Augmented {
    /// Variables by (bundle, name); augments default to `def`, host-specific
    /// data to `variables`.
    pub vars: BTreeMap<(String, String), Value>,
    /// Classes to define.
    pub classes: BTreeSet<String>,
    /// Files read, in order.
    pub files: Vec<String>,
    /// What 3.21 logs at verbose level (installed entries, unknown keys).
    pub notes: Vec<String>,
    /// What 3.21 logs as errors but goes on after (bad entries skipped).
    pub warnings: Vec<String>,
    /// What rcf cannot install exactly as 3.21 would: the policy must not
    /// be used (see the module doc).
    pub errors: Vec<String>,
}

/// No files: the evaluator only tests class expressions here.
struct NoFiles;
impl PolicySource for NoFiles {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        Err(format!("{path}: not available while loading augments"))
    }
    fn canonicalize(&self, _: &str) -> Canon {
        Canon::Missing
    }
    fn exists(&self, _: &str) -> bool {
        false
    }
}

/// Most augments files followed through `augments` lists (3.21 has no
/// limit and recurses forever on a cycle).
pub const MAX_AUGMENTS_FILES: usize = 64;

struct Ctx<'a> {
    base: &'a LoadOptions,
    out: Augmented,
    reader: &'a dyn AugmentsReader,
    /// Variables set from host-specific data: augments cannot override them.
    cmdb: BTreeSet<(String, String)>,
}

impl Ctx<'_> {
    fn all_classes(&self) -> BTreeSet<String> {
        // hard classes and the soft ones defined before augments (-D)
        let mut c = self.base.classes.clone();
        c.extend(self.base.soft_classes.iter().cloned());
        c.extend(self.out.classes.iter().cloned());
        c.insert("any".into());
        c
    }

    /// `$(sys.x)`, `${sys.x}`, `$(def.x)` and `$(x)` (as `def.x`)
    /// expanded in `s`; references that do not resolve to a scalar stay
    /// literal, as 3.21's `JsonExpandElement` leaves them.
    fn expand(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('$') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let close = match after.chars().next() {
                Some('(') => ')',
                Some('{') => '}',
                _ => {
                    out.push('$');
                    rest = after;
                    continue;
                }
            };
            let Some(end) = after.find(close) else {
                out.push_str(&rest[i..]);
                return out;
            };
            let name = &after[1..end];
            let (scope, var) = name.split_once('.').unwrap_or(("def", name));
            let v = match scope {
                "sys" => self.base.sys.get(var).cloned(),
                _ => self
                    .out
                    .vars
                    .get(&(scope.to_string(), var.to_string()))
                    .cloned(),
            };
            match v {
                Some(Value::Scalar(x)) if !name.contains('$') => out.push_str(&x),
                _ => out.push_str(&rest[i..i + 1 + end + 1]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn expand_json(&self, j: &Json) -> Json {
        match j {
            Json::Str(s) => Json::Str(self.expand(s)),
            Json::Arr(a) => Json::Arr(a.iter().map(|x| self.expand_json(x)).collect()),
            Json::Obj(kv) => Json::Obj(
                kv.iter()
                    .map(|(k, v)| (k.clone(), self.expand_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `CheckContextClassmatch`: `expr::` is a class expression, anything
    /// else a regex that must match a whole defined class name.
    fn class_matches(&mut self, file: &str, check: &str) -> bool {
        let classes = self.all_classes();
        if let Some(expr) = check.strip_suffix("::") {
            if expr.is_empty() {
                self.out.warnings.push(format!(
                    "Invalid class expression in augments: '{check}' ({file})"
                ));
                return false;
            }
            let opts = LoadOptions {
                classes,
                // the caller's classes are the discovered hard classes
                hard_classes_discovered: true,
                ..Default::default()
            };
            let mut ev = Eval::new(&NoFiles, &opts);
            let here = Here {
                file,
                scope: "def",
                line: 0,
            };
            return match ev.class_expr(expr, &here) {
                Some(super::eval::Tri::True) => true,
                Some(super::eval::Tri::Unknown) => {
                    // never guess: a class rcf cannot decide fails the load
                    self.out.errors.push(format!(
                        "{file}: class expression '{check}' depends on something rcf cannot evaluate"
                    ));
                    false
                }
                _ => false,
            };
        }
        // PCRE semantics (look-around, back-references) as 3.21
        match super::addr::Regex::new(&format!("^(?:{check})$")) {
            Ok(rx) => classes.iter().any(|c| rx.is_match(c).unwrap_or(false)),
            Err(e) => {
                self.out.errors.push(format!(
                    "{file}: class regex '{check}' cannot be evaluated by rcf ({e})"
                ));
                false
            }
        }
    }

    /// `VarRefParse` plus the augments rules: (bundle, name), bundle
    /// defaulting to `default_scope`.
    fn var_ref(&mut self, file: &str, key: &str, default_scope: &str) -> Option<(String, String)> {
        if key.contains(':') {
            self.out.errors.push(format!(
                "{file}: variable '{key}': namespaced augments variables are not supported by rcf"
            ));
            return None;
        }
        // a '.' inside an index ("x[a.b]") does not separate the bundle
        let head = key.split('[').next().unwrap_or(key);
        match head.find('.') {
            Some(i) => Some((key[..i].to_string(), key[i + 1..].to_string())),
            None => Some((default_scope.to_string(), key.to_string())),
        }
    }

    fn install_var(&mut self, file: &str, key: &str, data: &Json, default_scope: &str) {
        let Some(r) = self.var_ref(file, key, default_scope) else {
            return;
        };
        if self.cmdb.contains(&r) {
            self.out.notes.push(format!(
                "Cannot set variable {}.{} from augments, already defined from host-specific data",
                r.0, r.1
            ));
            return;
        }
        // JsonPrimitiveToString (reals `%.2f`); a number 3.21 exits on is an error
        let scalar = |j: &Json| {
            j.to_scalar()
                .map_err(|e| format!("{file}: variable '{key}': {e}"))
        };
        let v = if matches!(data, Json::Null) {
            self.out
                .warnings
                .push(format!("{file}: variable '{key}' is null, not installed"));
            return;
        } else if data.is_primitive() {
            match scalar(data) {
                Ok(Some(s)) => Value::Scalar(s),
                Ok(None) => return,
                Err(e) => return self.out.errors.push(e),
            }
        } else if let (Json::Arr(a), true) = (data, data.primitives().is_some()) {
            // an array of primitives is an slist (nulls left out)
            let mut l = Vec::new();
            for x in a {
                match scalar(x) {
                    Ok(Some(s)) => l.push(s),
                    Ok(None) => {}
                    Err(e) => return self.out.errors.push(e),
                }
            }
            Value::List(l)
        } else {
            // anything else is a data container, stored as 3.21 copies it
            match data.normalised() {
                Ok(j) => Value::Data(j),
                Err(e) => {
                    return self
                        .out
                        .errors
                        .push(format!("{file}: variable '{key}': {e}"))
                }
            }
        };
        self.out.notes.push(format!(
            "Installing augments variable '{}.{}' from file '{file}'",
            r.0, r.1
        ));
        self.out.vars.insert(r, v);
    }

    fn install_class(&mut self, file: &str, name: &str) {
        if name.contains(':') {
            self.out.errors.push(format!(
                "{file}: class '{name}': namespaced augments classes are not supported by rcf"
            ));
            return;
        }
        self.out.notes.push(format!(
            "Installing augments class '{name}' from file '{file}'"
        ));
        self.out.classes.insert(super::hostclasses::canonify(name));
    }
}

/// Installs one augments file's contents (`LoadAugmentsData`). Returns
/// false when the file is not a JSON object.
fn load_data(c: &mut Ctx<'_>, file: &str, j: &Json) -> bool {
    let Json::Obj(kv) = j else {
        c.out.warnings.push(format!(
            "Invalid augments file contents in '{file}', must be a JSON object"
        ));
        return false;
    };
    c.out.files.push(file.to_string());
    for (k, _) in kv {
        if !matches!(
            k.as_str(),
            "vars" | "classes" | "inputs" | "augments" | "variables"
        ) {
            c.out.notes.push(format!(
                "Unknown augments key '{k}' in file '{file}', skipping it"
            ));
        }
    }
    if let Some(vars) = j.get("vars").filter(|v| !matches!(v, Json::Null)) {
        match c.expand_json(vars) {
            Json::Obj(kv) => {
                for (k, v) in &kv {
                    c.install_var(file, k, v, "def");
                }
            }
            _ => c.out.warnings.push(format!(
                "Invalid augments vars in '{file}', must be a JSON object"
            )),
        }
    }
    if let Some(vars) = j.get("variables").filter(|v| !matches!(v, Json::Null)) {
        match c.expand_json(vars) {
            Json::Obj(kv) => {
                for (k, info) in &kv {
                    let data = match info {
                        Json::Obj(_) => match info.get("value") {
                            Some(d) if !matches!(d, Json::Null) => d.clone(),
                            _ => {
                                c.out.warnings.push(format!("Missing value for the augments variable '{k}' in '{file}' (value field is required)"));
                                continue;
                            }
                        },
                        other => other.clone(),
                    };
                    c.install_var(file, k, &data, "def");
                }
            }
            _ => c.out.warnings.push(format!(
                "Invalid augments variables in '{file}', must be a JSON object"
            )),
        }
    }
    if let Some(classes) = j.get("classes").filter(|v| !matches!(v, Json::Null)) {
        match c.expand_json(classes) {
            Json::Obj(kv) => {
                for (name, data) in &kv {
                    let checks: Vec<String> = if let Some(p) = data.primitive() {
                        vec![p]
                    } else if let Some(l) = data.primitives() {
                        l
                    } else if let Json::Obj(_) = data {
                        let ce = data
                            .get("class_expressions")
                            .filter(|x| !matches!(x, Json::Null));
                        let re = data
                            .get("regular_expressions")
                            .filter(|x| !matches!(x, Json::Null));
                        match (ce, re) {
                            (Some(ce), None) => ce
                                .primitives()
                                .unwrap_or_default()
                                .into_iter()
                                .map(|e| {
                                    if e.ends_with("::") {
                                        e
                                    } else {
                                        format!("{e}::")
                                    }
                                })
                                .collect(),
                            (None, Some(re)) => re.primitives().unwrap_or_default(),
                            _ => {
                                c.out.warnings.push(format!("Invalid augments class data for class '{name}' in '{file}': either \"class_expressions\" or \"regular_expressions\" need to be specified"));
                                continue;
                            }
                        }
                    } else {
                        c.out.warnings.push(format!(
                            "Invalid augments class data for class '{name}' in '{file}'"
                        ));
                        continue;
                    };
                    for check in checks {
                        if c.class_matches(file, &check) {
                            c.install_class(file, name);
                            break;
                        }
                    }
                }
            }
            _ => c.out.warnings.push(format!(
                "Invalid augments classes in '{file}', must be a JSON object"
            )),
        }
    }
    if let Some(inputs) = j.get("inputs").filter(|v| !matches!(v, Json::Null)) {
        match c.expand_json(inputs).primitives() {
            Some(l) => {
                c.out
                    .vars
                    .insert(("def".into(), "augments_inputs".into()), Value::List(l));
            }
            None => c.out.warnings.push(format!(
                "Trying to augment inputs in '{file}' but the value was not a list of strings"
            )),
        }
    }
    if let Some(more) = j.get("augments").filter(|v| !matches!(v, Json::Null)) {
        match more.primitives() {
            Some(l) => {
                for f in l {
                    if !load_file(c, &f) {
                        c.out.warnings.push(format!(
                            "Could not load requested further augments from file '{f}'"
                        ));
                    }
                }
            }
            None => c.out.warnings.push(format!(
                "Trying to augment inputs in '{file}' but the value was not a list of strings"
            )),
        }
    }
    true
}

/// `LoadAugmentsFiles`: expands the name, reads and installs the file.
fn load_file(c: &mut Ctx<'_>, unexpanded: &str) -> bool {
    let file = c.expand(unexpanded);
    if file.contains("/.json") {
        return false;
    }
    if c.out.files.len() >= MAX_AUGMENTS_FILES {
        c.out.errors.push(format!(
            "more than {MAX_AUGMENTS_FILES} augments files (a cycle through 'augments'?) at '{file}'"
        ));
        return false;
    }
    match c.reader.read_json(&file) {
        Ok(Some(j)) => load_data(c, &file, &j),
        Ok(None) => {
            c.out
                .notes
                .push(format!("could not load JSON augments from '{file}'"));
            false
        }
        Err(e) => {
            c.out.warnings.push(e);
            false
        }
    }
}

/// Installs host-specific data (`LoadCMDBData`, read before augments):
/// `vars`/`variables` default to the bundle `variables`, classes may only
/// be `"any::"`-style unconditional.
fn load_cmdb(c: &mut Ctx<'_>, file: &str, j: &Json) {
    let Json::Obj(kv) = j else {
        c.out.warnings.push(format!(
            "Invalid CMDB contents in '{file}', must be a JSON object"
        ));
        return;
    };
    c.out.files.push(file.to_string());
    for (k, _) in kv {
        if !matches!(k.as_str(), "vars" | "classes" | "variables") {
            c.out.warnings.push(format!(
                "Invalid key '{k}' in the CMDB data file '{file}', skipping it"
            ));
        }
    }
    for key in ["vars", "variables"] {
        if let Some(Json::Obj(vars)) = j.get(key) {
            for (k, info) in vars {
                let data = match (key, info) {
                    ("variables", Json::Obj(_)) => match info.get("value") {
                        Some(d) => d.clone(),
                        None => continue,
                    },
                    _ => info.clone(),
                };
                c.install_var(file, k, &data, "variables");
                if let Some(r) = c.var_ref(file, k, "variables") {
                    c.cmdb.insert(r);
                }
            }
        }
    }
    if let Some(Json::Obj(classes)) = j.get("classes") {
        for (name, data) in classes {
            let ok = match data {
                Json::Str(s) => s == "any::",
                Json::Arr(a) => a.len() == 1 && a[0] == Json::Str("any::".into()),
                Json::Obj(_) => {
                    let ce = data.get("class_expressions").and_then(Json::primitives);
                    let re = data.get("regular_expressions").and_then(Json::primitives);
                    ce.is_none_or(|l| l.is_empty() || l == ["any::"])
                        && re.is_none_or(|l| l.is_empty() || l == ["any"])
                }
                _ => false,
            };
            if ok {
                c.install_class(file, name);
            } else {
                c.out.warnings.push(format!(
                    "Invalid class specification '{name}' in CMDB data, only \"any::\" allowed"
                ));
            }
        }
    }
}

/// Loads host-specific data (`host_specific`, already parsed, with its
/// path) and then the augments entry file (`def_preferred.json` or
/// `def.json` next to the policy entry, chosen by the caller), against the
/// hard classes and `sys.*` variables in `base`.
pub fn load(
    base: &LoadOptions,
    host_specific: Option<(&str, &Json)>,
    entry: &str,
    reader: &dyn AugmentsReader,
) -> Augmented {
    let mut c = Ctx {
        base,
        out: Augmented::default(),
        reader,
        cmdb: BTreeSet::new(),
    };
    if let Some((path, j)) = host_specific {
        load_cmdb(&mut c, path, j);
    }
    load_file(&mut c, entry);
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Files(HashMap<String, Json>);
    impl AugmentsReader for Files {
        fn read_json(&self, path: &str) -> Result<Option<Json>, String> {
            Ok(self.0.get(path).cloned())
        }
    }
    fn s(x: &str) -> Json {
        Json::Str(x.into())
    }
    fn arr(x: &[&str]) -> Json {
        Json::Arr(x.iter().map(|v| s(v)).collect())
    }
    fn obj(kv: Vec<(&str, Json)>) -> Json {
        Json::Obj(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    fn base() -> LoadOptions {
        let mut o = LoadOptions::default();
        o.classes.insert("linux".into());
        o.sys.insert("inputdir".into(), Value::Scalar("/in".into()));
        o
    }

    #[test]
    fn vars_classes_chain() {
        let mut f = HashMap::new();
        f.insert(
            "/in/def.json".to_string(),
            obj(vec![
                (
                    "vars",
                    obj(vec![
                        ("acl", arr(&["10.0.0.0/8"])),
                        ("b.x", s("$(sys.inputdir)/y")),
                    ]),
                ),
                (
                    "classes",
                    obj(vec![
                        ("a", arr(&["lin", "linu.*"])),
                        ("b", s("a.!windows::")),
                        ("c", s("in")),
                    ]),
                ),
                (
                    "augments",
                    arr(&["$(sys.inputdir)/2.json", "/missing.json"]),
                ),
            ]),
        );
        f.insert(
            "/in/2.json".to_string(),
            obj(vec![(
                "variables",
                obj(vec![("acl", obj(vec![("value", arr(&["1.2.3.4"]))]))]),
            )]),
        );
        let a = load(&base(), None, "/in/def.json", &Files(f));
        assert!(a.errors.is_empty(), "{:?}", a.errors);
        assert_eq!(
            a.vars[&("def".into(), "acl".into())],
            Value::List(vec!["1.2.3.4".into()])
        );
        assert_eq!(
            a.vars[&("b".into(), "x".into())],
            Value::Scalar("/in/y".into())
        );
        assert!(a.classes.contains("a") && a.classes.contains("b"));
        assert!(!a.classes.contains("c"), "regexes match whole names");
        assert_eq!(a.files, vec!["/in/def.json", "/in/2.json"]);
        assert!(a.warnings.iter().any(|w| w.contains("/missing.json")));
    }

    #[test]
    fn containers_install_and_namespaces_are_errors() {
        let mut f = HashMap::new();
        f.insert(
            "/in/def.json".to_string(),
            obj(vec![(
                "vars",
                obj(vec![("acl", obj(vec![("k", s("v"))])), ("ns:b.v", s("x"))]),
            )]),
        );
        let a = load(&base(), None, "/in/def.json", &Files(f));
        assert_eq!(a.errors.len(), 1, "{:?}", a.errors);
        // an object is a data container, as in 3.21
        assert_eq!(
            a.vars[&("def".into(), "acl".into())],
            Value::Data(obj(vec![("k", s("v"))]))
        );
    }

    #[test]
    fn augments_classes_see_define_classes() {
        // -D classes are soft but defined before augments, as in 3.21
        let mut f = HashMap::new();
        f.insert(
            "/in/def.json".to_string(),
            obj(vec![("classes", obj(vec![("from_d", arr(&["role_.*"]))]))]),
        );
        let mut b = base();
        b.soft_classes.insert("role_web".into());
        let a = load(&b, None, "/in/def.json", &Files(f));
        assert!(a.classes.contains("from_d"), "{a:?}");
    }

    #[test]
    fn host_specific_data_wins_and_cycles_stop() {
        let mut f = HashMap::new();
        f.insert(
            "/in/def.json".to_string(),
            obj(vec![
                ("vars", obj(vec![("variables.role", s("aug"))])),
                ("augments", arr(&["/in/def.json"])),
            ]),
        );
        let cmdb = obj(vec![
            ("vars", obj(vec![("role", s("cmdb"))])),
            (
                "classes",
                obj(vec![("ok", arr(&["any::"])), ("bad", s("linux::"))]),
            ),
        ]);
        let a = load(
            &base(),
            Some(("/w/data/host_specific.json", &cmdb)),
            "/in/def.json",
            &Files(f),
        );
        assert_eq!(
            a.vars[&("variables".into(), "role".into())],
            Value::Scalar("cmdb".into())
        );
        assert!(a.classes.contains("ok") && !a.classes.contains("bad"));
        assert!(a.errors.iter().any(|e| e.contains("cycle")));
    }
}
