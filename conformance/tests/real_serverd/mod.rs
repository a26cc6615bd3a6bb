//! Shared by the policy-decision tests: run the real cf-serverd 3.21 on a
//! policy in a sandboxed work dir on loopback, ask it with the real cf-net,
//! and load the same policy into rcf.

#![allow(dead_code)]

use rcf_conformance::lab::{
    cf_key_trust_each_other, cf_net_stat, spawn_real_cf_serverd, wait_for_real_log,
};
use rcf_core::policy::{ConnFacts, LoadOptions, Protocol, Request, ServerPolicy, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const CF_SERVERD: &str = "/usr/bin/cf-serverd";
pub const CF_KEY: &str = "/usr/bin/cf-key";
pub const CF_NET: &str = "/usr/bin/cf-net";

/// Filesystem answers for the evaluator (conformance does not use rcf-fs).
pub use rcf_conformance::lab::PolicyFs as Fs;

/// A server and a client work dir with keys that trust each other.
pub struct Pair {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub srv: PathBuf,
    pub cli: PathBuf,
    /// The canonical `srv/data` directory.
    pub data: String,
    /// The client's key id as the server stores it.
    pub client_key: String,
}

fn workdir(wd: &Path) {
    for d in ["inputs", "ppkeys", "state", "outputs", "modules", "data"] {
        std::fs::create_dir_all(wd.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    for d in ["ppkeys", "inputs"] {
        std::fs::set_permissions(wd.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let out = Command::new(CF_KEY)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", wd)
        .output()
        .expect("run cf-key");
    assert!(out.status.success(), "cf-key failed");
    // cf-serverd validates with WORKDIR/bin/cf-promises
    let _ = std::fs::remove_dir_all(wd.join("bin"));
    std::os::unix::fs::symlink("/usr/bin", wd.join("bin")).unwrap();
}

impl Pair {
    /// Fails (never skips) when the real CFEngine is missing.
    pub fn new() -> Pair {
        for b in [CF_SERVERD, CF_KEY, CF_NET] {
            assert!(
                Path::new(b).exists(),
                "{b} missing: install the cfengine3 package"
            );
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let srv = root.join("srv");
        let cli = root.join("cli");
        workdir(&srv);
        workdir(&cli);
        let client_key = cf_key_trust_each_other(&srv, &cli);
        let data = std::fs::canonicalize(srv.join("data"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        Pair {
            _tmp: tmp,
            root,
            srv,
            cli,
            data,
            client_key,
        }
    }

    /// Writes `DATA/rel` (and its directories).
    pub fn file(&self, rel: &str) -> String {
        let p = Path::new(&self.data).join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "x\n").unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Writes `inputs/NAME`.
    pub fn input(&self, name: &str, text: &str) -> PathBuf {
        let p = self.srv.join("inputs").join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes `DATA/DIR/f` for each `(DIR, RULE)` case and renders its
    /// access promise, `"D/` in RULE standing for `"DATA/`: the promises as
    /// lines of an `access:` section, and the files' paths in case order.
    pub fn access_cases<'a>(
        &self,
        cases: impl IntoIterator<Item = (&'a str, String)>,
    ) -> (String, Vec<String>) {
        let mut access = String::new();
        let mut paths = Vec::new();
        for (dir, rule) in cases {
            paths.push(self.file(&format!("{dir}/f")));
            access.push_str(&format!(
                "    {}\n",
                rule.replace("\"D/", &format!("\"{}/", self.data))
            ));
        }
        (access, paths)
    }

    /// For each case (a label and 3.21's expected answer), in the order of
    /// `real` (the real server's answers) and `paths`: a line where the
    /// real answer is not the expected one, and one per `classic` mode
    /// where rcf's decision is not the real answer (with rcf's reason).
    pub fn disagreements(
        &self,
        pol: &ServerPolicy,
        cases: &[(String, bool)],
        real: &[bool],
        paths: &[String],
        classic_modes: &[bool],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for (((label, want), real_allowed), path) in cases.iter().zip(real).zip(paths) {
            if want != real_allowed {
                problems.push(format!(
                    "{label}: real cf-serverd answered {real_allowed}, expected {want}"
                ));
            }
            for &classic in classic_modes {
                let dec = pol.check(&self.facts(classic), Request::Path(path));
                if dec.allowed != *real_allowed {
                    problems.push(format!(
                        "{label} (classic: {classic}): rcf {}, real cf-serverd {real_allowed}: {}",
                        dec.allowed,
                        pol.explain(&dec)
                    ));
                }
            }
        }
        problems
    }

    /// Asks the real cf-serverd and rcf about `(DIR, COND, 3.21's answer)`
    /// cases, each an [`admit_if`] rule for `DATA/DIR/`, in a policy with
    /// `bundles` (policy text) before its `bundle server acl`: rcf's policy,
    /// the policy text, and the [`Pair::disagreements`] under each of
    /// `classic_modes`, labelled `DIR COND`.
    pub fn admit_if_cases(
        &self,
        cases: &[(&str, &str, bool)],
        bundles: &str,
        classic_modes: &[bool],
    ) -> (ServerPolicy, String, Vec<String>) {
        let (text, paths, real, pol) = self.decide_both(
            bundles,
            "",
            cases
                .iter()
                .map(|(dir, cond, _)| (*dir, admit_if(dir, cond))),
        );
        let labelled: Vec<(String, bool)> = cases
            .iter()
            .map(|(dir, cond, want)| (format!("{dir} {cond}"), *want))
            .collect();
        let problems = self.disagreements(&pol, &labelled, &real, &paths, classic_modes);
        (pol, text, problems)
    }

    /// The [`Pair::access_cases`] of `cases` in a policy with `bundles`
    /// (policy text) before its `bundle server acl`, whose `vars` section
    /// (if not empty) comes before `access:`: asked of the real cf-serverd
    /// (STAT with cf-net) and loaded by rcf. Returns the policy text, the
    /// files' paths, the real server's answers and rcf's policy.
    pub fn decide_both<'a>(
        &self,
        bundles: &str,
        vars: &str,
        cases: impl IntoIterator<Item = (&'a str, String)>,
    ) -> (String, Vec<String>, Vec<bool>, ServerPolicy) {
        let port = free_port();
        let (access, paths) = self.access_cases(cases);
        let vars = if vars.is_empty() {
            String::new()
        } else {
            format!("  vars:\n{vars}")
        };
        let text = format!(
            "{}{bundles}bundle server acl\n{{\n{vars}  access:\n{access}}}\n",
            header(port, &[])
        );
        let policy = self.input("promises.cf", &text);
        let real = self.real_stat(&policy, port, &paths);
        let pol = self.rcf_load(&policy);
        (text, paths, real, pol)
    }

    /// Starts the real cf-serverd on `policy` (which must bind 127.0.0.1 on
    /// `port`), STATs every path with cf-net, stops it, and returns whether
    /// each was admitted. Panics if cf-serverd went to failsafe.
    pub fn real_stat(&self, policy: &Path, port: u16, paths: &[String]) -> Vec<bool> {
        self.real_stat_with(policy, port, paths, &[])
    }

    /// [`Pair::real_stat`] with extra cf-serverd arguments (`-D`, ...).
    pub fn real_stat_with(
        &self,
        policy: &Path,
        port: u16,
        paths: &[String],
        extra: &[&str],
    ) -> Vec<bool> {
        let log_path = self.root.join("cf-serverd.log");
        let mut guard = spawn_real_cf_serverd(&self.srv, policy, extra, &[], &log_path);
        let text = wait_for_real_log(
            &mut guard,
            &log_path,
            "Listening for connections",
            Duration::from_secs(30),
            "cf-serverd did not start",
        );
        assert!(
            !text.contains("going to failsafe"),
            "cf-serverd rejected the policy:\n{text}"
        );
        let hostport = format!("127.0.0.1:{port}");
        let out = paths
            .iter()
            .map(|p| cf_net_stat(&self.cli, &hostport, p, 4))
            .collect();
        drop(guard);
        out
    }

    /// rcf's policy load, with only the classes rcf-serverd itself knows
    /// today (no host discovery).
    pub fn rcf_load(&self, policy: &Path) -> ServerPolicy {
        let w = self.srv.to_string_lossy().into_owned();
        let mut sys = BTreeMap::new();
        sys.insert("workdir".to_string(), Value::Scalar(w));
        let opts = LoadOptions {
            file: policy.to_string_lossy().into_owned(),
            sys,
            classes: ["linux", "debian", "cfengine", "community_edition"]
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>(),
            ..Default::default()
        };
        rcf_core::policy::load(&Fs, &opts).unwrap_or_else(|e| panic!("rcf refused:\n{e}"))
    }

    /// `rcf-serverd ARGS` on the server work dir: exit code, stdout, stderr.
    pub fn rcf_serverd(&self, args: &[&str]) -> (i32, String, String) {
        let bin = rcf_conformance::lab::rcf_binary("rcf-serverd").unwrap();
        let out = Command::new(bin)
            .arg("--workdir")
            .arg(&self.srv)
            .args(args)
            .output()
            .expect("run rcf-serverd");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// rcf-serverd's own decision for the client on `path` (`--explain`,
    /// a dry run with its discovery, augments and file answers): whether it
    /// is allowed, and the explanation; `Err` with stderr when it failed.
    pub fn rcf_serverd_allows(&self, policy: &Path, path: &str) -> Result<(bool, String), String> {
        self.rcf_serverd_allows_with(policy, path, &[])
    }

    /// [`Pair::rcf_serverd_allows`] with extra rcf-serverd arguments (`-D`, ...).
    pub fn rcf_serverd_allows_with(
        &self,
        policy: &Path,
        path: &str,
        extra: &[&str],
    ) -> Result<(bool, String), String> {
        let policy = policy.to_string_lossy();
        let mut args = extra.to_vec();
        args.extend([
            "--explain",
            "--ip",
            "127.0.0.1",
            "--key",
            &self.client_key,
            "-f",
            &policy,
            path,
        ]);
        match self.rcf_serverd(&args) {
            (0, why, _) => Ok((true, why)),
            (1, why, _) => Ok((false, why)),
            (code, _, err) => Err(format!("rcf-serverd --explain failed ({code}):\n{err}")),
        }
    }

    /// The client as rcf-serverd sees it, over TLS or classic.
    pub fn facts(&self, classic: bool) -> ConnFacts<'_> {
        ConnFacts {
            ip: "127.0.0.1",
            hostname: None,
            key: &self.client_key,
            username: "root",
            protocol: if classic {
                Protocol::Classic
            } else {
                Protocol::Tls
            },
            encrypted: true,
        }
    }
}

/// The number in environment variable `k`, else `d` (run sizes and seeds).
pub fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// The access promise admitting 127.0.0.1 to `DATA/DIR/` if `cond` holds,
/// as [`Pair::access_cases`] takes it.
pub fn admit_if(dir: &str, cond: &str) -> String {
    format!(r#""D/{dir}/" admit_ips => {{ "127.0.0.1" }}, if => {cond};"#)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The policy header every test policy starts with.
pub fn header(port: u16, inputs: &[&str]) -> String {
    let inputs = inputs
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"body common control {{ bundlesequence => {{ "noop" }}; inputs => {{ {inputs} }}; }}
bundle agent noop {{ vars: "x" string => "y"; }}
body server control {{ port => "{port}"; bindtointerface => "127.0.0.1"; allowconnects => {{ "127.0.0.1" }}; }}
"#
    )
}
