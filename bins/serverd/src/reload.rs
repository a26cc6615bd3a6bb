//! When to reread the policy without SIGHUP, as cf-serverd 3.21 decides it
//! (cf-serverd-functions.c `CheckFileChanges`, checked after every
//! `select()` timeout of 10 s): the `timestamp` in the validated-policy
//! marker grew. rcf also rereads when a loaded policy file (or an augments
//! file) changed size or mtime, so an edit that no `cf-promises` run
//! validated is still picked up; a bad edit keeps the last good policy.

use std::path::{Path, PathBuf};

/// 3.21's `select()` timeout, after which it looks for new policy.
pub const CHECK_INTERVAL_SECS: u64 = 10;

/// The marker 3.21 reads (`GetPromisesValidatedFile`): with `-f`,
/// `STATEDIR/validated_<canonified -f argument>`; without,
/// `WORKDIR/masterfiles/cf_promises_validated`.
pub fn validated_file(workdir: &str, cli_file: Option<&str>) -> PathBuf {
    match cli_file {
        Some(f) => Path::new(workdir).join("state").join(format!(
            "validated_{}",
            rcf_core::policy::hostclasses::canonify(f)
        )),
        None => Path::new(workdir).join("masterfiles/cf_promises_validated"),
    }
}

/// `ReadTimestampFromPolicyValidatedFile`: the JSON's `timestamp`; the
/// file's mtime when it exists but does not parse; 0 when missing.
pub fn validated_at(path: &Path) -> i64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    let mtime = || {
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    let Ok(text) = std::fs::read(path) else {
        return mtime();
    };
    match rcf_fs::augments::parse(&path.display().to_string(), &text) {
        Ok(rcf_core::policy::augments::Json::Obj(kv)) => kv
            .iter()
            .rev()
            .find(|(k, _)| k == "timestamp")
            .and_then(|(_, v)| match v {
                rcf_core::policy::augments::Json::Num(n) => n.parse::<f64>().ok().map(|x| x as i64),
                _ => None,
            })
            .unwrap_or(0),
        _ => mtime(),
    }
}

/// What a change is looked for in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    /// The marker's timestamp.
    pub validated_at: i64,
    /// (path, size, mtime in ns) of each watched file; `None` when missing.
    pub files: Vec<(String, Option<(u64, i128)>)>,
}

/// Looks at the marker and `files` now.
pub fn fingerprint(marker: &Path, files: &[String]) -> Fingerprint {
    let stat = |p: &str| {
        std::fs::metadata(p).ok().map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0);
            (m.len(), t)
        })
    };
    Fingerprint {
        validated_at: validated_at(marker),
        files: files.iter().map(|f| (f.clone(), stat(f))).collect(),
    }
}

/// Why a reload is due, as the log says it; `None` when nothing changed.
pub fn reason(old: &Fingerprint, new: &Fingerprint) -> Option<&'static str> {
    if new.validated_at > old.validated_at {
        Some("New promises detected...")
    } else if new.files != old.files {
        Some("Policy files changed...")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_and_files() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("cf_promises_validated");
        assert_eq!(validated_at(&m), 0);
        std::fs::write(&m, r#"{ "timestamp": 1700000000 }"#).unwrap();
        assert_eq!(validated_at(&m), 1_700_000_000);
        let f = d.path().join("p.cf").display().to_string();
        std::fs::write(&f, "a").unwrap();
        let a = fingerprint(&m, std::slice::from_ref(&f));
        assert_eq!(reason(&a, &a), None);
        std::fs::write(&f, "ab").unwrap();
        let b = fingerprint(&m, std::slice::from_ref(&f));
        assert_eq!(reason(&a, &b), Some("Policy files changed..."));
        std::fs::write(&m, r#"{ "timestamp": 1800000000 }"#).unwrap();
        let c = fingerprint(&m, std::slice::from_ref(&f));
        assert_eq!(reason(&b, &c), Some("New promises detected..."));
        assert_eq!(
            validated_file("/w", Some("./x.cf")),
            PathBuf::from("/w/state/validated___x_cf")
        );
    }
}
