//! `rcf-serverd --check-config [-f FILE] [--workdir DIR]`: load and evaluate
//! the server policy like cf-serverd does at startup, print warnings and the
//! verbose access summary, and exit 0 — or print every error (`file:line`)
//! and exit 1.

use rcf_core::policy::augments::{self, Augmented};
use rcf_core::policy::{self, hostclasses, LoadOptions, ServerPolicy, Value};
use rcf_fs::hostinfo;
use rcf_fs::policy_source::FsPolicySource;
use std::collections::BTreeSet;

/// Default work directory of the Debian package.
pub const DEFAULT_WORKDIR: &str = "/var/lib/cfengine3";

/// The work directory: `--workdir`, else `$CFENGINE_TEST_OVERRIDE_WORKDIR`,
/// else `/var/lib/cfengine3` (cf-serverd's order).
pub fn resolve_workdir(cli: Option<&str>) -> String {
    if let Some(w) = cli {
        return w.to_string();
    }
    match std::env::var("CFENGINE_TEST_OVERRIDE_WORKDIR") {
        Ok(w) if !w.is_empty() => w,
        _ => DEFAULT_WORKDIR.to_string(),
    }
}

/// The policy file: `-f` if given (a path starting with `/` or `.` is used
/// as is, anything else is relative to `WORKDIR/inputs`, as in CFEngine),
/// else `WORKDIR/inputs/promises.cf`. Made absolute against the current
/// directory so `this.promise_dirname` and relative `inputs` work.
pub fn resolve_file(file: Option<&str>, workdir: &str) -> String {
    let f = match file {
        None => format!("{workdir}/inputs/promises.cf"),
        Some(f) if f.starts_with('/') || f.starts_with('.') => f.to_string(),
        Some(f) => format!("{workdir}/inputs/{f}"),
    };
    if f.starts_with('/') {
        f
    } else {
        let cwd = std::env::current_dir()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| ".".into());
        let rel = f.strip_prefix("./").unwrap_or(&f);
        format!("{cwd}/{rel}")
    }
}

/// What the command line adds to discovery: `-D` classes and the
/// log level classes (`verbose_mode`, `inform_mode`, `debug_mode`).
#[derive(Debug, Clone, Default)]
pub struct HostOpts {
    /// `-D`: classes to define (comma-separated lists allowed, as 3.21).
    /// (`-N` is not here: 3.21 applies it to persistent classes only,
    /// eval_context.c, and rcf-serverd loads none.)
    pub define: Vec<String>,
    /// `-v`.
    pub verbose: bool,
    /// `-I` (or higher).
    pub inform: bool,
    /// `-d`.
    pub debug: bool,
    /// `--ignore-preferred-augments`: read `def.json` even when
    /// `def_preferred.json` exists.
    pub ignore_preferred_augments: bool,
}

/// The hard classes and `sys.*` variables of this host, as 3.21 discovers
/// them for cf-serverd, plus `-D` classes.
pub fn host_context(workdir: &str, host: &HostOpts) -> hostclasses::HardContext {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let facts = hostinfo::gather(&hostinfo::Discover {
        workdir,
        agent_type: "server",
        verbose: host.verbose || host.debug,
        inform: host.inform || host.verbose || host.debug,
        debug: host.debug,
        now,
    });
    let mut hc = hostclasses::derive(&facts);
    for f in &facts.not_interpreted {
        hc.not_interpreted.push(format!(
            "{f}: 3.21 derives hard classes from this file and rcf does not; \
             policy guarded by those classes is evaluated without them"
        ));
    }
    if host.debug {
        hc.classes.insert("opt_debug".into());
    }
    if host.ignore_preferred_augments {
        hc.classes.insert("ignore_preferred_augments".into());
    }
    hc
}

/// The `-D` classes (comma-separated lists allowed, as 3.21), canonified.
/// 3.21 defines them soft, in the default namespace (`source=environment`):
/// inside another namespace only `default:name` sees them (checked with
/// `cf-promises -D`).
pub fn defined_classes(host: &HostOpts) -> BTreeSet<String> {
    host.define
        .iter()
        .flat_map(|d| d.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(hostclasses::canonify)
        .collect()
}

/// The `sys.*` variables, environment and hard classes the evaluator gets.
pub fn load_options(file: &str, workdir: &str, host: &HostOpts) -> LoadOptions {
    load_options_noting(file, workdir, host).0
}

/// [`load_options`] and the discovery warnings (inputs 3.21 reads that rcf
/// does not interpret).
fn load_options_noting(file: &str, workdir: &str, host: &HostOpts) -> (LoadOptions, Vec<String>) {
    let hc = host_context(workdir, host);
    let notes = hc.not_interpreted;
    let mut sys = hc.sys;
    let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    let dir = if dir.is_empty() { "/" } else { dir };
    sys.insert(
        "policy_entry_filename".into(),
        Value::Scalar(file.to_string()),
    );
    sys.insert(
        "policy_entry_dirname".into(),
        Value::Scalar(dir.to_string()),
    );
    sys.insert(
        "policy_entry_basename".into(),
        Value::Scalar(file.rsplit('/').next().unwrap_or(file).to_string()),
    );
    let opts = LoadOptions {
        file: file.to_string(),
        sys,
        env: std::env::vars().collect(),
        classes: hc.classes,
        soft_classes: defined_classes(host),
        vars: Default::default(),
        // discovery above is how 3.21 defines hard classes: an undefined
        // hard-class name is then false, as in 3.21, not unknown
        hard_classes_discovered: true,
    };
    (opts, notes)
}

/// The augments entry 3.21 reads for `file` (`LoadAugments`):
/// `def_preferred.json` next to it when that is a regular file and not
/// ignored, else `def.json`.
pub fn augments_entry(file: &str, ignore_preferred: bool) -> String {
    let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    let preferred = format!("{dir}/def_preferred.json");
    if !ignore_preferred && std::path::Path::new(&preferred).is_file() {
        preferred
    } else {
        format!("{dir}/def.json")
    }
}

/// [`load_options`] plus host-specific data and augments installed into
/// them; the augments report says what was read and what rcf refused,
/// and the last item lists discovery inputs rcf does not interpret.
pub fn prepare(
    file: &str,
    workdir: &str,
    host: &HostOpts,
) -> (LoadOptions, Augmented, Vec<String>) {
    let (mut opts, discovery) = load_options_noting(file, workdir, host);
    let mut pre_errors = Vec::new();
    let cmdb = match rcf_fs::augments::host_specific(workdir) {
        Ok(c) => c,
        Err(e) => {
            pre_errors.push(e);
            None
        }
    };
    let entry = augments_entry(file, host.ignore_preferred_augments);
    let mut aug = augments::load(
        &opts,
        cmdb.as_ref().map(|(p, j)| (p.as_str(), j)),
        &entry,
        &rcf_fs::augments::FsAugments,
    );
    aug.warnings.extend(pre_errors);
    // augments classes are soft, in the default namespace (not hard ones)
    opts.soft_classes.extend(aug.classes.iter().cloned());
    opts.vars.extend(aug.vars.clone());
    (opts, aug, discovery)
}

fn diag(file: &str, message: String) -> policy::Diagnostic {
    policy::Diagnostic {
        file: file.to_string(),
        line: 0,
        col: 0,
        message,
    }
}

/// Loads `file` with this host's classes, `sys.*`, host-specific data and
/// augments. Augments rcf cannot install exactly as 3.21 would make the
/// load fail (never a looser policy); augments warnings join the policy's.
pub fn load_with(
    src: &dyn policy::PolicySource,
    file: &str,
    workdir: &str,
    host: &HostOpts,
) -> Result<ServerPolicy, policy::PolicyErrors> {
    let (opts, aug, discovery) = prepare(file, workdir, host);
    let entry = augments_entry(file, host.ignore_preferred_augments);
    let mut warnings: Vec<policy::Diagnostic> = discovery
        .iter()
        .map(|w| match w.split_once(": ") {
            Some((f, m)) => diag(f, m.to_string()),
            None => diag("host discovery", w.clone()),
        })
        .collect();
    warnings.extend(aug.warnings.iter().map(|w| diag(&entry, w.clone())));
    if !aug.errors.is_empty() {
        return Err(policy::PolicyErrors {
            errors: aug.errors.iter().map(|e| diag(&entry, e.clone())).collect(),
            warnings,
        });
    }
    // cf-serverd runs cf-promises on its policy first: validate as it does
    match policy::validate(src, &opts) {
        Ok(mut p) => {
            let mut w = warnings;
            w.append(&mut p.warnings);
            p.warnings = w;
            Ok(p)
        }
        Err(mut e) => {
            let mut w = warnings;
            w.append(&mut e.warnings);
            e.warnings = w;
            Err(e)
        }
    }
}

/// Loads the policy without `cf-promises -c`'s extra checks (exposed for
/// the server's own startup/reload; `--check-config` uses
/// [`policy::validate`]).
#[allow(dead_code)]
pub fn load(
    file: Option<&str>,
    workdir: Option<&str>,
    host: &HostOpts,
) -> (String, Result<ServerPolicy, policy::PolicyErrors>) {
    let wd = resolve_workdir(workdir);
    let f = resolve_file(file, &wd);
    let res = load_with(&FsPolicySource, &f, &wd, host);
    (f, res)
}

/// Runs the check and returns the process exit code (0 valid, 1 invalid).
/// Validates as `cf-promises -c` does ([`policy::validate`]: bundlesequence,
/// undefined bodies, value types on top of what loading refuses), which is
/// what cf-serverd runs before it loads a policy.
pub fn run(file: Option<&str>, workdir: Option<&str>, host: &HostOpts) -> i32 {
    let (f, res) = load(file, workdir, host);
    match res {
        Ok(p) => {
            for n in &p.notes {
                eprintln!("rcf-serverd: info: {n}");
            }
            for w in &p.warnings {
                eprintln!("rcf-serverd: warning: {w}");
            }
            for line in p.summary_lines() {
                println!("{line}");
            }
            eprintln!(
                "rcf-serverd: policy '{f}' is valid ({} file(s) loaded)",
                p.files.len()
            );
            0
        }
        Err(e) => {
            for w in &e.warnings {
                eprintln!("rcf-serverd: warning: {w}");
            }
            for err in &e.errors {
                eprintln!("rcf-serverd: error: {err}");
            }
            eprintln!(
                "rcf-serverd: policy '{f}' is invalid ({} error(s))",
                e.errors.len()
            );
            1
        }
    }
}
