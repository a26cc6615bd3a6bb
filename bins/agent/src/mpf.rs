//! What `rcf-agent update` needs from the masterfiles policy framework
//! besides the copies themselves: `update_def`'s settings as the augments
//! file (`inputs/def.json`) sets them, and policy validation before a new
//! policy is swapped in (`cf-promises` when installed, else rcf's own
//! checker, `rcf-serverd --check-config`).

use std::path::{Path, PathBuf};
use std::process::Command;

use rcf_core::client::mpf_update::{UpdateSettings, GATE_DISABLE_CLASS};
use rcf_core::client::Level;
use serde_json::Value;

use crate::output::Output;

/// `update_def`'s settings from `<inputs>/def.json` (missing file: the
/// MPF's defaults). A file that is not valid JSON is an error, as it is for
/// cf-agent (which then runs without augments; here the update stops
/// rather than guess).
pub fn settings(inputs: &Path, out: &Output) -> Result<UpdateSettings, String> {
    let path = inputs.join("def.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(UpdateSettings::resolve(None, None, false))
        }
        Err(e) => return Err(format!("Can't read '{}': {e}", path.display())),
    };
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("Augments file '{}' is not valid JSON: {e}", path.display()))?;
    let var = |name: &str| -> Option<&Value> {
        doc.get("vars").and_then(|v| v.get(name)).or_else(|| {
            // 3.18+ "variables": { "def.NAME": { "value": ... } } (or NAME)
            let vs = doc.get("variables")?;
            let v = vs.get(format!("def.{name}")).or_else(|| vs.get(name))?;
            Some(v.get("value").unwrap_or(v))
        })
    };
    let patterns = match var("input_name_patterns") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        format!(
                            "'{}': input_name_patterns must be a list of strings",
                            path.display()
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => {
            return Err(format!(
                "'{}': input_name_patterns must be a list of strings",
                path.display()
            ))
        }
    };
    let master = match var("mpf_update_policy_master_location") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(format!(
                "'{}': mpf_update_policy_master_location must be a string",
                path.display()
            ))
        }
    };
    let gate_disabled = match doc.get("classes").and_then(|c| c.get(GATE_DISABLE_CLASS)) {
        None => false,
        Some(v) => {
            let always = |s: &str| s == "any" || s == ".*";
            let known = match v {
                Value::String(s) => always(s),
                Value::Array(a) => a.iter().any(|x| x.as_str().is_some_and(always)),
                _ => false,
            };
            if !known {
                out.log(
                    Level::Warning,
                    &format!("'{}': the condition of class '{GATE_DISABLE_CLASS}' is not evaluated by rcf-agent; taking it as defined (masterfiles is walked every run)", path.display()),
                );
            }
            true
        }
    };
    Ok(UpdateSettings::resolve(patterns, master, gate_disabled))
}

/// The first executable `name` in `PATH` or in CFEngine's usual bin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/var/cfengine/bin", "/usr/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Validate the policy whose entry point is `promises` (in its own
/// directory, as cf-promises resolves relative inputs against it): with
/// `cf-promises` when installed, else `rcf-serverd --check-config` (next to
/// this binary, or in `PATH`). `Ok` names the checker; `Err` says why the
/// policy is refused (its output included) or that nothing could check it.
pub fn validate(workdir: &Path, promises: &Path) -> Result<String, String> {
    let (tool, args): (PathBuf, Vec<std::ffi::OsString>) = if let Some(t) = find_tool("cf-promises")
    {
        (t, vec!["-f".into(), promises.as_os_str().to_owned()])
    } else {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("rcf-serverd")))
            .filter(|p| p.is_file());
        let Some(t) = beside.or_else(|| find_tool("rcf-serverd")) else {
            return Err("Neither cf-promises nor rcf-serverd is installed: the new policy cannot be validated".into());
        };
        (
            t,
            vec![
                "--check-config".into(),
                "--workdir".into(),
                workdir.as_os_str().to_owned(),
                "-f".into(),
                promises.as_os_str().to_owned(),
            ],
        )
    };
    let shown = tool.display().to_string();
    let run = Command::new(&tool)
        .args(&args)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", workdir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("Can't run '{shown}': {e}"))?;
    if run.status.success() {
        Ok(shown)
    } else {
        let mut text = String::from_utf8_lossy(&run.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&run.stdout));
        let text: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(20)
            .collect();
        Err(format!(
            "Policy '{}' failed validation by '{shown}' ({}): {}",
            promises.display(),
            run.status,
            text.join(" | ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out() -> Output {
        Output::new(Level::Error, false)
    }

    #[test]
    fn augments_forms() {
        let d = tempfile::tempdir().unwrap();
        let s = settings(d.path(), &out()).unwrap();
        assert_eq!(s, UpdateSettings::resolve(None, None, false));
        std::fs::write(
            d.path().join("def.json"),
            r#"{"vars":{"input_name_patterns":[".*\\.cf"],"mpf_update_policy_master_location":"/srv/mf"},
                "classes":{"cfengine_internal_disable_cf_promises_validated":["any"]}}"#,
        )
        .unwrap();
        let s = settings(d.path(), &out()).unwrap();
        assert_eq!(s.input_name_patterns, vec![r".*\.cf".to_string()]);
        assert_eq!(s.master_location, "/srv/mf");
        assert!(s.gate_disabled);
        std::fs::write(
            d.path().join("def.json"),
            r#"{"variables":{"def.input_name_patterns":{"value":["x"]}}}"#,
        )
        .unwrap();
        let s = settings(d.path(), &out()).unwrap();
        assert_eq!(s.input_name_patterns, vec!["x".to_string()]);
        assert!(!s.gate_disabled);
        std::fs::write(d.path().join("def.json"), "{not json").unwrap();
        assert!(settings(d.path(), &out())
            .unwrap_err()
            .contains("not valid JSON"));
        std::fs::write(
            d.path().join("def.json"),
            r#"{"vars":{"input_name_patterns":"x"}}"#,
        )
        .unwrap();
        assert!(settings(d.path(), &out())
            .unwrap_err()
            .contains("list of strings"));
    }
}
