//! `bundle server`: `access:` and `roles:` promises into the TLS tables
//! and the classic lists.

use super::*;

/// An access promise's attributes, as written and expanded.
struct AccessAttrs {
    resource_type: String,
    handle: Option<String>,
    /// (attribute, entries, line) of every list attribute.
    lists: Vec<(String, Vec<String>, u32)>,
    ifencrypted: Option<bool>,
    /// (shortcut, line).
    shortcut: Option<(String, u32)>,
    /// Line of a `report_data_select`.
    has_rds: Option<u32>,
    /// A deny list held something unresolved: the rule denies everything.
    poisoned: bool,
}

impl<'a> Loader<'a> {
    pub(super) fn server_bundles(&mut self, pol: &mut ServerPolicy) {
        let files = std::mem::take(&mut self.files);
        for f in &files {
            for b in &f.blocks {
                let Block::Bundle(b) = b else { continue };
                if b.kind != "server" || !b.args.is_empty() {
                    continue;
                }
                let scope = crate::policy::eval::bundle_scope(b);
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
        self.apply_floating_denies(pol);
    }

    /// The deny rules of path promises rcf could not expand go into every
    /// path rule (the value 3.21 computed may hold `..` or be absolute, and
    /// 3.21 canonicalises the promiser, so it could name any file): a peer
    /// those rules deny is denied every path, never admitted where 3.21
    /// may deny. Requests no rule covers are denied anyway.
    fn apply_floating_denies(&mut self, pol: &mut ServerPolicy) {
        for (deny, poisoned, origin) in std::mem::take(&mut self.floating_denies) {
            for res in pol.acl.paths.values_mut() {
                res.deny.ips.extend(deny.ips.iter().cloned());
                res.deny.hostnames.extend(deny.hostnames.iter().cloned());
                res.deny.keys.extend(deny.keys.iter().cloned());
                res.deny.sort();
                res.poisoned |= poisoned;
                res.origins.push(origin.clone());
            }
        }
    }

    /// The expanded promiser of a `kind` (`access`, `roles`) promise,
    /// resolving `$(bundle.var)` in the promise's namespace first as 3.21
    /// does; `None`, with a warning that the promise is dropped, when a
    /// variable in it does not resolve.
    fn promiser(&mut self, p: &Promise, here: &Here, kind: &str) -> Option<String> {
        let e = self.expand_promiser(p, here);
        if !e.unresolved.is_empty() {
            self.ev.warn(
                here,
                format!(
                    "{kind} promise '{}' dropped: unresolved variable(s) {}",
                    e.text,
                    e.unresolved.join(", ")
                ),
            );
            return None;
        }
        Some(e.text)
    }

    /// The promiser expanded as [`Loader::promiser`] does, unresolved
    /// variables listed rather than refused.
    fn expand_promiser(&mut self, p: &Promise, here: &Here) -> crate::policy::eval::Expanded {
        self.ev.in_bundle.set(true);
        let e = self.ev.expand(&p.promiser, here);
        self.ev.in_bundle.set(false);
        e
    }

    pub(super) fn role_promise(&mut self, pol: &mut ServerPolicy, p: &Promise, here: &Here) {
        let Some(name) = self.promiser(p, here, "roles") else {
            return;
        };
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
                    Rval::Scalar(s) => super::super::eval::list_ref(s).is_some(),
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
                    // eval_rval_lenient reports a container as unresolved
                    Value::Data(_) => {}
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

    /// The attributes of an access promise, checked and expanded; `None`
    /// (logged) when the rule is dropped. Any unresolved value drops the
    /// whole rule, except in deny lists (the rule then denies everything it
    /// covers) and admit lists (that entry never matches).
    fn access_attrs(&mut self, p: &Promise, here: &Here, promiser: &str) -> Option<AccessAttrs> {
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
                    return None;
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
                            return None;
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
                    return None;
                }
                (l, _) => {
                    self.errors.push(diag(
                        h.file,
                        h.line,
                        format!(
                            "attribute '{l}' of access promise '{promiser}' expects a single value"
                        ),
                    ));
                    return None;
                }
            }
        }
        Some(AccessAttrs {
            resource_type,
            handle,
            lists,
            ifencrypted,
            shortcut,
            has_rds,
            poisoned,
        })
    }

    /// Checks a promise's resource type and list entries before any table
    /// is touched; false (logged) when the promise or the policy is refused.
    fn check_access_attrs(&mut self, a: &mut AccessAttrs, here: &Here, promiser: &str) -> bool {
        if !matches!(
            a.resource_type.as_str(),
            "path" | "literal" | "context" | "query" | "variable" | "bundle"
        ) {
            self.errors.push(diag(here.file, here.line, format!("resource_type '{}' is not one of path, literal, context, query, variable, bundle", a.resource_type)));
            return false;
        }
        if let Some(line) = a.has_rds {
            if a.resource_type != "query" {
                self.errors.push(diag(
                    here.file,
                    line,
                    "Constraint report_data_select is allowed only for 'query' resource_type",
                ));
                return false;
            }
        }
        let mut poisoned = false;
        // validate entries before touching any table
        for (l, items, line) in &a.lists {
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
                        return false;
                    }
                }
            }
        }
        a.poisoned |= poisoned;
        true
    }

    /// One `access:` promise into the TLS tables and the classic lists:
    /// attributes gathered and checked first, so a refused promise touches
    /// no table.
    /// `maybe`: rcf could not tell whether the promise applies, so only
    /// what takes access away is applied (deny lists, `ifencrypted =>
    /// true`); its admit lists, maproot and shortcut are not, and a classic
    /// entry it would create first is marked so that it decides nothing
    /// in anyone's favour.
    pub(super) fn access_promise(
        &mut self,
        pol: &mut ServerPolicy,
        p: &Promise,
        here: &Here,
        maybe: bool,
    ) {
        let e = self.expand_promiser(p, here);
        let floating = !e.unresolved.is_empty();
        let promiser = e.text;
        let Some(mut a) = self.access_attrs(p, here, &promiser) else {
            return;
        };
        if floating {
            if a.resource_type != "path" {
                self.ev.warn(
                    here,
                    format!(
                        "access promise '{promiser}' dropped: unresolved variable(s) {}",
                        e.unresolved.join(", ")
                    ),
                );
                return;
            }
            self.ev.warn(here, format!("access promise '{promiser}': unresolved variable(s) {}; the path it names could be any file, so its deny rules apply to every path rule and its admit rules, maproot and shortcut are not applied", e.unresolved.join(", ")));
        }
        let maybe = maybe || floating;
        if maybe {
            a.lists.retain(|(l, _, _)| l.starts_with("deny"));
            if a.ifencrypted == Some(false) {
                a.ifencrypted = None;
            }
            if let Some((s, _)) = a.shortcut.take() {
                if !pol.shortcuts.contains_key(&s) {
                    // it might be the first registration in 3.21: nobody gets it
                    self.blocked_shortcuts.insert(s);
                }
            }
        }
        if !self.check_access_attrs(&mut a, here, &promiser) {
            return;
        }
        let AccessAttrs {
            resource_type,
            handle,
            lists,
            ifencrypted,
            shortcut,
            poisoned,
            ..
        } = a;
        let key: String;
        let mut scratch: BTreeMap<String, Resource> = BTreeMap::new();
        let table: &mut BTreeMap<String, Resource>;
        let mut legacy_admit: Option<&mut LegacyAuth> = None;
        let mut legacy_deny: Option<&mut LegacyAuth> = None;
        match resource_type.as_str() {
            "path" if floating => {
                // Built aside, then added to every path rule at the end;
                // classic: one deny entry covering everything.
                key = "/".into();
                table = &mut scratch;
                legacy_deny = Some(get_or_create(&mut pol.legacy.deny, &key, false));
            }
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
        if floating {
            let origin = (here.file.to_string(), here.line);
            let deny = std::mem::take(&mut res.deny);
            self.floating_denies.push((deny, res.poisoned, origin));
        }
        if hostname_rule && !pol.reverse_dns {
            pol.reverse_dns = true;
            self.notes.push(diag(here.file, here.line, "Found hostname admit/deny in access_rules, turning on reverse DNS lookups for every connection"));
        }
    }

    /// B.3: the ACL key for a path promiser, or `None` (logged) if ignored.
    pub(super) fn canonical_acl_path(&mut self, promiser: &str, here: &Here) -> Option<String> {
        let len = crate::bytestr::byte_len(promiser);
        if len > PATH_MAX - 1 {
            self.ev.warnings.push(diag(
                here.file,
                here.line,
                format!(
                    "Path '{}' in access_rules is too long ({len} > {PATH_MAX}), ignoring!",
                    crate::bytestr::display(promiser)
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
pub(super) fn has_unexpanded_var(s: &str) -> bool {
    let t = s
        .replace("$(connection.ip)", "")
        .replace("$(connection.hostname)", "")
        .replace("$(connection.key)", "")
        .replace("${connection.ip}", "")
        .replace("${connection.hostname}", "")
        .replace("${connection.key}", "");
    t.contains("$(") || t.contains("${") || t.contains("@(") || t.contains("@{")
}

/// A load-time check of an IP rule: bad CIDRs, impossible octets, and
/// entries that are neither an address form nor a valid regex.
pub(super) fn ip_rule_problem(rule: &str) -> Option<String> {
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
pub(super) enum AdmitType {
    Ip,
    Hostname,
    Key,
}

pub(super) fn admit_type(s: &str) -> AdmitType {
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
pub(super) fn regex_hostname_forms(host: &str) -> Option<Vec<String>> {
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
pub(super) fn new_host_to_old(host: &str) -> String {
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
