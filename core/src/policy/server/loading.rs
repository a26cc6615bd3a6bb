//! Reading the policy: files and their `inputs` to a fixpoint, attribute
//! checks on `vars`/`classes`, and `bundle common` evaluation.

use super::*;

impl<'a> Loader<'a> {
    /// Reads and parses one file (errors are recorded against the
    /// including `from` position). Returns whether it was added.
    pub(super) fn read_parse(&mut self, path: &str, from: Option<(&str, u32)>) -> bool {
        if self.files.len() >= super::super::eval::MAX_FILES {
            let (f, line) = from.unwrap_or((path, 0));
            self.errors.push(diag(
                f,
                line,
                format!("more than {} policy files", super::super::eval::MAX_FILES),
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
        if bytes.len() > super::super::parse::MAX_FILE_SIZE {
            self.errors.push(diag(
                path,
                0,
                format!("policy file too large ({} bytes)", bytes.len()),
            ));
            return false;
        }
        // Policy text is bytes, as in 3.21: a promiser holding bytes that are
        // not UTF-8 must match those bytes in a request path, so they are
        // carried losslessly (crate::bytestr) rather than replaced.
        let text = crate::bytestr::encode(&bytes).into_owned();
        match super::super::parse::parse_policy(path, &text) {
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
    pub(super) fn inputs_of(&mut self, idx: usize) -> (Vec<Located>, Vec<Located>) {
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
                        // eval_rval_lenient reports a container as unresolved
                        Value::Data(_) => Vec::new(),
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
    pub(super) fn load_all(&mut self, root: &str) {
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
    pub(super) fn check_var_class_attrs(&mut self) {
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
    pub(super) fn eval_commons(&mut self) {
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
}
