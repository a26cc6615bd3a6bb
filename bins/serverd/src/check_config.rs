//! `rcf-serverd --check-config [-f FILE] [--workdir DIR]`: load and evaluate
//! the server policy like cf-serverd does at startup, print warnings and the
//! verbose access summary, and exit 0 — or print every error (`file:line`)
//! and exit 1.

use rcf_core::policy::{self, LoadOptions, ServerPolicy, Value};
use rcf_fs::policy_source::FsPolicySource;
use std::collections::{BTreeMap, BTreeSet};

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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The host's own IPv4 addresses, from `/proc/net/fib_trie` (the
/// "/32 host LOCAL" entries), loopback included, sorted and deduplicated.
fn local_ipv4_addresses() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/net/fib_trie") else {
        return Vec::new();
    };
    let mut out = std::collections::BTreeSet::new();
    let mut last_ip: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.contains("/32 host LOCAL") {
            if let Some(ip) = last_ip {
                out.insert(ip.to_string());
            }
        } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
            last_ip = Some(t);
        }
    }
    out.into_iter().collect()
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

/// The `sys.*` variables, environment and hard classes the evaluator gets.
pub fn load_options(file: &str, workdir: &str) -> LoadOptions {
    let fq = hostname();
    let uq = fq.split('.').next().unwrap_or(&fq).to_string();
    let domain = fq
        .split_once('.')
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    let hub = std::fs::read_to_string(format!("{workdir}/policy_server.dat"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut sys = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        sys.insert(k.to_string(), Value::Scalar(v));
    };
    put("workdir", workdir.to_string());
    put("inputdir", format!("{workdir}/inputs"));
    put("masterdir", format!("{workdir}/masterfiles"));
    put("bindir", format!("{workdir}/bin"));
    put("statedir", format!("{workdir}/state"));
    put("piddir", workdir.to_string());
    put("logdir", workdir.to_string());
    put("sysconfdir", "/etc".into());
    put("libdir", format!("{workdir}/inputs/lib"));
    put("local_libdir", "lib".into());
    put("cf_agent", format!("{workdir}/bin/cf-agent"));
    put("cf_promises", format!("{workdir}/bin/cf-promises"));
    put("cf_serverd", format!("{workdir}/bin/cf-serverd"));
    put("cf_execd", format!("{workdir}/bin/cf-execd"));
    put("cf_key", format!("{workdir}/bin/cf-key"));
    put("cf_runagent", format!("{workdir}/bin/cf-runagent"));
    put("update_policy_path", format!("{workdir}/inputs/update.cf"));
    put(
        "default_policy_path",
        format!("{workdir}/inputs/promises.cf"),
    );
    put(
        "failsafe_policy_path",
        format!("{workdir}/inputs/failsafe.cf"),
    );
    put("inputdir", format!("{workdir}/inputs"));
    if !hub.is_empty() {
        // like CFEngine: sys.policy_hub only exists once bootstrapped
        put("policy_hub", hub.clone());
    }
    put("fqhost", fq.clone());
    put("uqhost", uq.clone());
    put("host", uq.clone());
    put("domain", domain);
    put("cf_version", "3.21.0".into());
    put("flavor", "debian_12".into());
    put("os", "linux".into());
    put("ostype", "linux_x86_64".into());
    put("class", "linux".into());
    let ips = local_ipv4_addresses();
    if let Some(first) = ips.iter().find(|ip| !ip.starts_with("127.")) {
        sys.insert("ipv4".into(), Value::Scalar(first.clone()));
    }
    sys.insert("ip_addresses".into(), Value::List(ips));
    let env = std::env::vars().collect();
    let mut classes: BTreeSet<String> = [
        "any",
        "server",
        "linux",
        "cfengine",
        "cfengine_3",
        "cfengine_3_21",
        "cfengine_3_21_0",
        "community_edition",
        "debian",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    classes.insert(canonify(&uq));
    classes.insert(canonify(&fq));
    if !hub.is_empty() {
        classes.insert(format!("policy_server_{}", canonify(&hub)));
    }
    LoadOptions {
        file: file.to_string(),
        sys,
        env,
        classes,
        ..Default::default()
    }
}

/// Loads the policy without `cf-promises -c`'s extra checks (exposed for
/// the server's own startup/reload; `--check-config` uses
/// [`policy::validate`]).
#[allow(dead_code)]
pub fn load(
    file: Option<&str>,
    workdir: Option<&str>,
) -> (String, Result<ServerPolicy, policy::PolicyErrors>) {
    let wd = resolve_workdir(workdir);
    let f = resolve_file(file, &wd);
    let opts = load_options(&f, &wd);
    (f.clone(), policy::load(&FsPolicySource, &opts))
}

/// Runs the check and returns the process exit code (0 valid, 1 invalid).
/// Validates as `cf-promises -c` does ([`policy::validate`]: bundlesequence,
/// undefined bodies, value types on top of what loading refuses), which is
/// what cf-serverd runs before it loads a policy.
pub fn run(file: Option<&str>, workdir: Option<&str>) -> i32 {
    let wd = resolve_workdir(workdir);
    let f = resolve_file(file, &wd);
    let opts = load_options(&f, &wd);
    let res = policy::validate(&FsPolicySource, &opts);
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
