//! `rcf-serverd --check-config [-f FILE] [--workdir DIR]`: load and evaluate
//! the server policy like cf-serverd does at startup, print warnings and the
//! verbose access summary, and exit 0 — or print every error (`file:line`)
//! and exit 1.

use rcf_core::policy::{self, hostclasses, LoadOptions, ServerPolicy, Value};
use rcf_fs::hostinfo;
use rcf_fs::policy_source::FsPolicySource;

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
    if host.debug {
        hc.classes.insert("opt_debug".into());
    }
    for d in &host.define {
        for c in d.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            hc.classes.insert(hostclasses::canonify(c));
        }
    }
    hc
}

/// The `sys.*` variables, environment and hard classes the evaluator gets.
pub fn load_options(file: &str, workdir: &str, host: &HostOpts) -> LoadOptions {
    let hc = host_context(workdir, host);
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
    LoadOptions {
        file: file.to_string(),
        sys,
        env: std::env::vars().collect(),
        classes: hc.classes,
    }
}

/// Loads the policy the way `--check-config` does (exposed for tests and
/// for the server's own startup/reload).
pub fn load(
    file: Option<&str>,
    workdir: Option<&str>,
    host: &HostOpts,
) -> (String, Result<ServerPolicy, policy::PolicyErrors>) {
    let wd = resolve_workdir(workdir);
    let f = resolve_file(file, &wd);
    let opts = load_options(&f, &wd, host);
    (f.clone(), policy::load(&FsPolicySource, &opts))
}

/// Runs the check and returns the process exit code (0 valid, 1 invalid).
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
