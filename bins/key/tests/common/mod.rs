//! Shared helpers for the rcf-key integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RCF_KEY: &str = env!("CARGO_BIN_EXE_rcf-key");

/// Result of running a command: exit code, stdout, stderr.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Both streams, for one-line checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Run rcf-key with WORKDIR moved to `workdir` through the CFEngine variable.
pub fn rcf_key(workdir: &Path, args: &[&str]) -> Run {
    Command::new(RCF_KEY)
        .args(args)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", workdir)
        .output()
        .expect("run rcf-key")
        .into()
}

/// Absolute path of a required system tool; panics (test FAILS) when missing.
pub fn require(tool: &str, hint: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("required tool '{tool}' not found; {hint}");
}

pub fn cf_key_bin() -> PathBuf {
    require("cf-key", "install CFEngine 3.21: apt-get install cfengine3")
}

/// Run the real cf-key with its work dir at `workdir`.
pub fn cf_key(workdir: &Path, args: &[&str]) -> Run {
    Command::new(cf_key_bin())
        .args(args)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", workdir)
        .output()
        .expect("run cf-key")
        .into()
}

/// Run openssl (must be installed: apt-get install openssl).
pub fn openssl(args: &[&str]) -> Run {
    let bin = require("openssl", "apt-get install openssl");
    let r: Run = Command::new(bin)
        .args(args)
        .output()
        .expect("run openssl")
        .into();
    assert_eq!(r.code, 0, "openssl {args:?} failed: {}", r.all());
    r
}

/// A recursive snapshot of a directory tree: path -> (mode, symlink target
/// or contents). Used to prove that a failing command changed nothing.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let mode = m.permissions().mode();
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    (
                        mode,
                        fs::read_link(&p)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes(),
                    ),
                );
            } else if m.is_dir() {
                out.insert(rel, (mode, b"<dir>".to_vec()));
                walk(root, &p, out);
            } else {
                out.insert(rel, (mode, fs::read(&p).unwrap()));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

pub fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}
