//! Validation as `cf-promises -c` does it, which is what cf-serverd 3.21
//! runs before loading a policy (and falls back to `failsafe.cf` when it
//! fails): on top of what [`super::load`] refuses, the bundlesequence must
//! name defined bundles (`main` when there is none), every body a promise
//! names must be defined, and `int`/`real` values must parse.
//!
//! Checked against the real `cf-promises -c` exit status
//! (`conformance/tests/validate.rs`). Entries rcf cannot resolve (a
//! bundlesequence built from variables) are not judged.

use super::ast::*;
use super::eval::{Eval, Here, Tri};
use super::{Diagnostic, LoadOptions, PolicyErrors, PolicySource, ServerPolicy};

/// Attributes whose value names a body of the same type.
const BODY_ATTRS: &[&str] = &[
    "action",
    "classes",
    "perms",
    "copy_from",
    "depth_search",
    "delete",
    "changes",
    "edit_defaults",
    "file_select",
    "link_from",
    "rename",
    "acl",
    "contain",
    "package_method",
    "process_count",
    "process_select",
    "service_method",
    "location",
    "select_region",
    "edit_field",
    "replace_with",
    "insert_select",
    "delete_select",
    "match_value",
    "volume",
    "mount",
    "database_server",
    "environment_resources",
    "environment_interfaces",
    "report_data_select",
];

fn bare(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

fn err(file: &str, pos: Pos, message: String) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: pos.line,
        col: pos.col,
        message,
    }
}

/// `IntFromString`'s accepted forms: digits with an optional sign and a
/// k/m/g/K/M/G or % suffix, or `inf`/`now`.
fn is_cf_int(s: &str) -> bool {
    let t = s.trim();
    if matches!(t, "inf" | "now") {
        return true;
    }
    let t = t
        .strip_suffix(['k', 'm', 'g', 'K', 'M', 'G', '%'])
        .unwrap_or(t);
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
}

fn is_cf_real(s: &str) -> bool {
    let t = s.trim();
    let t = t
        .strip_suffix(['k', 'm', 'g', 'K', 'M', 'G', '%'])
        .unwrap_or(t);
    t == "inf" || t.parse::<f64>().is_ok_and(|x| x.is_finite())
}

/// Loads the policy as [`super::load`] does, then applies the checks of
/// `cf-promises -c` it does not make. `Err` lists every problem with
/// `file:line`, as `load` does; a policy that passes is returned.
pub fn validate(src: &dyn PolicySource, opts: &LoadOptions) -> Result<ServerPolicy, PolicyErrors> {
    let pol = super::load(src, opts)?;
    let mut files = Vec::new();
    for f in &pol.files {
        let Ok(bytes) = src.read(f) else { continue };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Ok(p) = super::parse_policy(f, &text) {
            files.push(p);
        }
    }
    let mut ev = Eval::new(src, opts);
    ev.classes = pol.defined_classes.clone();
    let mut errors = Vec::new();
    let mut warnings = pol.warnings.clone();
    let inputs_complete = !pol
        .warnings
        .iter()
        .any(|w| w.message.starts_with("inputs: unresolved"));
    let bundles: Vec<&str> = files
        .iter()
        .flat_map(|f| f.blocks.iter())
        .filter_map(|b| match b {
            Block::Bundle(b) => Some(bare(&b.name)),
            _ => None,
        })
        .collect();
    let bodies: Vec<(&str, &str)> = files
        .iter()
        .flat_map(|f| f.blocks.iter())
        .filter_map(|b| match b {
            Block::Body(b) => Some((b.kind.as_str(), bare(&b.name))),
            _ => None,
        })
        .collect();

    // bundlesequence (VerifyBundleSequence): the last one in effect, or "main"
    let mut seq: Option<(String, Pos, Vec<Rval>)> = None;
    for f in &files {
        for b in &f.blocks {
            let Block::Body(body) = b else { continue };
            if body.kind != "common" || body.name != "control" {
                continue;
            }
            for a in body.attrs.iter().filter(|a| a.lval == "bundlesequence") {
                let here = Here {
                    file: &f.path,
                    scope: "control_common",
                    line: a.pos.line,
                };
                if ev.class_expr(&a.guard, &here) != Some(Tri::True) {
                    continue;
                }
                let items = match &a.rval {
                    Rval::List(l) => l.clone(),
                    other => vec![other.clone()],
                };
                seq = Some((f.path.clone(), a.pos, items));
            }
        }
    }
    let (seq_file, seq_pos, items) = seq.unwrap_or_else(|| {
        (
            opts.file.clone(),
            Pos::default(),
            vec![Rval::Scalar("main".into())],
        )
    });
    for it in &items {
        let name = match it {
            Rval::Scalar(s) | Rval::Symbol(s) => s.as_str(),
            Rval::Call(c) => c.name.as_str(),
            Rval::List(_) => continue,
        };
        if name.contains('$') || name.contains('@') {
            continue; // built from variables: not judged
        }
        if !bundles.contains(&bare(name)) {
            let d = err(
                &seq_file,
                seq_pos,
                format!("Bundle '{name}' listed in the bundlesequence is not a defined bundle"),
            );
            if inputs_complete {
                errors.push(d);
            } else {
                // it may be in an input rcf could not resolve: not judged
                warnings.push(Diagnostic {
                    message: format!(
                        "{} (not judged: some inputs could not be resolved)",
                        d.message
                    ),
                    ..d
                });
            }
        }
    }

    // undefined bodies and int/real values in every bundle
    for f in &files {
        for b in &f.blocks {
            let Block::Bundle(bundle) = b else { continue };
            for sec in &bundle.sections {
                for p in &sec.promises {
                    for c in &p.constraints {
                        let named = match &c.rval {
                            Rval::Symbol(s) => Some(s.as_str()),
                            Rval::Call(call) => Some(call.name.as_str()),
                            _ => None,
                        };
                        if let Some(body) = named {
                            if BODY_ATTRS.contains(&c.lval.as_str())
                                && !body.contains('$')
                                && !bodies.contains(&(c.lval.as_str(), bare(body)))
                            {
                                errors.push(err(
                                    &f.path,
                                    c.pos,
                                    format!("Undefined body {body} with type {}", c.lval),
                                ));
                            }
                        }
                        if sec.promise_type == "vars" {
                            if let Rval::Scalar(v) = &c.rval {
                                let bad = !v.contains('$')
                                    && match c.lval.as_str() {
                                        "int" => !is_cf_int(v),
                                        "real" => !is_cf_real(v),
                                        _ => false,
                                    };
                                if bad {
                                    errors.push(err(
                                        &f.path,
                                        c.pos,
                                        format!(
                                            "Cannot parse value as {}: '{v}'",
                                            if c.lval == "int" { "integer" } else { "real" }
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(ServerPolicy { warnings, ..pol })
    } else {
        Err(PolicyErrors { errors, warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::Mem;

    fn check(text: &str) -> Result<ServerPolicy, PolicyErrors> {
        let m = Mem::default().file("/p/promises.cf", text);
        let o = LoadOptions {
            file: "/p/promises.cf".into(),
            ..Default::default()
        };
        validate(&m, &o)
    }

    #[test]
    fn cf_promises_checks() {
        let ok = [
            r#"body common control { bundlesequence => { "main" }; } bundle agent main { vars: "x" string => "y"; }"#,
            r#"bundle agent main { } bundle server acl { access: "/x" admit_ips => { "1.2.3.4" }; }"#,
            r#"body common control { bundlesequence => { b("1") }; } bundle agent b(x) { }"#,
            r#"body common control { nosuch_class:: bundlesequence => { "nosuch" }; any:: bundlesequence => { "b" }; } bundle agent b { }"#,
            r#"bundle agent main { files: "/tmp/x" perms => m("1"); } body perms m(a) { mode => "$(a)"; }"#,
            r#"bundle agent main { vars: "i" int => "10k"; "r" real => "1.5"; "j" int => "$(x)"; }"#,
        ];
        for t in ok {
            assert!(check(t).is_ok(), "{t}: {:?}", check(t).err());
        }
        let bad = [
            (
                r#"bundle server acl { access: "/x" admit_ips => { "1.2.3.4" }; }"#,
                "Bundle 'main'",
            ),
            (
                r#"body common control { bundlesequence => { "main", "nosuch" }; } bundle agent main { }"#,
                "Bundle 'nosuch'",
            ),
            (
                r#"bundle agent main { files: "/tmp/x" perms => nosuchbody; }"#,
                "Undefined body nosuchbody with type perms",
            ),
            (
                r#"bundle agent main { } bundle server s { access: "/x" admit_ips => { "1.2.3.4" }, action => nobody; }"#,
                "Undefined body nobody with type action",
            ),
            (
                r#"bundle agent main { vars: "x" int => "abc"; }"#,
                "Cannot parse value as integer",
            ),
        ];
        for (t, want) in bad {
            let e = check(t).expect_err(t);
            assert!(e.to_string().contains(want), "{t}: {e}");
            assert!(e.errors.iter().all(|d| d.file == "/p/promises.cf"), "{e}");
        }
    }
}
