//! `body server control`: 3.21's attributes and defaults into
//! [`ServerControl`].

use super::access::ip_rule_problem;
use super::*;

impl<'a> Loader<'a> {
    pub(super) fn server_control(&mut self, c: &mut ServerControl) {
        let files = std::mem::take(&mut self.files);
        let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        // the first denyconnects entry rcf cannot use (see ConnList)
        let mut unusable_deny: Option<String> = None;
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
                            Value::List(_) | Value::Data(_) => {
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
                                // eval_rval_lenient reports a container as unresolved
                                Value::Data(_) => Vec::new(),
                            };
                            if known != "allowusers" {
                                for it in &items {
                                    let Some(p) = ip_rule_problem(it) else {
                                        continue;
                                    };
                                    // 3.21 logs a bad entry (when it is
                                    // matched) and runs; it never matches.
                                    if known == "denyconnects" {
                                        // it might have meant anyone: deny all
                                        self.ev.warnings.push(diag(file, line, format!("{known}: {p}; cf-serverd 3.21 skips this entry, rcf cannot tell whom it was meant to deny and refuses every connection (never looser)")));
                                        unusable_deny.get_or_insert_with(|| it.clone());
                                    } else {
                                        self.ev.warnings.push(diag(
                                            file,
                                            line,
                                            format!("{known}: {p}; this entry never matches (skipped, as cf-serverd 3.21 does)"),
                                        ));
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
        c.denyconnects = match &unusable_deny {
            Some(bad) => mk("denyconnects").matching_all_for(bad),
            None => mk("denyconnects"),
        };
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
}
