//! The filesystem answers the policy loader needs: reading policy files,
//! canonicalising path promisers (realpath + is-dir) and `fileexists()`;
//! `lstat()` for `filestat()`, name resolution for `host2ip()`, and the
//! commands of `execresult()`/`returnszero()`.

use rcf_core::bytestr;
use rcf_core::policy::{Canon, Capture, ExecOutcome, ExecRequest, FileStat, PolicySource};
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The bytes a [`bytestr`]-encoded policy path names.
fn fs_path(p: &str) -> PathBuf {
    Path::new(OsStr::from_bytes(&bytestr::decode(p))).to_path_buf()
}

/// Largest policy file read; larger files are refused, not truncated.
pub const MAX_POLICY_FILE: u64 = 16 * 1024 * 1024;

/// [`PolicySource`] over the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsPolicySource;

impl PolicySource for FsPolicySource {
    /// Reads at most [`MAX_POLICY_FILE`] bytes; a bigger file is an error so
    /// a huge or endless file (a FIFO, /dev/zero) cannot exhaust memory.
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        let f = std::fs::File::open(fs_path(path)).map_err(|e| e.to_string())?;
        let meta = f.metadata().map_err(|e| e.to_string())?;
        if meta.is_dir() {
            return Err("is a directory".into());
        }
        let mut buf = Vec::new();
        f.take(MAX_POLICY_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| e.to_string())?;
        if buf.len() as u64 > MAX_POLICY_FILE {
            return Err(format!("larger than {MAX_POLICY_FILE} bytes"));
        }
        Ok(buf)
    }

    /// `realpath()` like cf-serverd: ENOENT (including a dangling link)
    /// is `Missing`, anything else is `Failed`.
    fn canonicalize(&self, path: &str) -> Canon {
        match std::fs::canonicalize(fs_path(path)) {
            Ok(p) => {
                let is_dir = std::fs::metadata(&p).map(|m| m.is_dir()).unwrap_or(false);
                Canon::Resolved {
                    path: bytestr::encode(p.as_os_str().as_bytes()).into_owned(),
                    is_dir,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Canon::Missing,
            Err(e) => Canon::Failed(e.to_string()),
        }
    }

    fn exists(&self, path: &str) -> bool {
        std::fs::symlink_metadata(fs_path(path)).is_ok()
    }

    fn is_symlink(&self, path: &str) -> bool {
        std::fs::symlink_metadata(fs_path(path))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false)
    }

    fn lstat(&self, path: &str) -> Option<Result<FileStat, String>> {
        Some(lstat(path))
    }

    fn host_to_ip(&self, name: &str) -> Option<Option<String>> {
        Some(crate::hostinfo::resolve_first(name))
    }

    fn is_executable(&self, path: &str) -> Option<bool> {
        use std::os::unix::fs::PermissionsExt;
        Some(
            std::fs::metadata(fs_path(path))
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false),
        )
    }

    fn execute(&self, req: &ExecRequest, capture: Capture) -> Option<Result<ExecOutcome, String>> {
        Some(execute(req, capture, EXEC_TIMEOUT))
    }
}

/// Longest a policy command may run; 3.21 waits forever, rcf gives up and
/// treats the call as unknown rather than hang the load.
pub const EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Most output kept from a policy command (3.21 stops reading near its
/// `CF_MAXSIZE`); more is an error (unknown), not a truncation.
pub const MAX_EXEC_OUTPUT: usize = 16 * 1024 * 1024;

/// Runs a policy command as 3.21's `cf_popen_select` / `ShellCommandReturnsZero`
/// do: argv exec'd directly or `/bin/sh -c`, stdin from /dev/null, stdout
/// and stderr into one pipe for [`Capture::Both`]. Killed (by its PID,
/// through its `Child`) after `timeout`.
pub fn execute(
    req: &ExecRequest,
    capture: Capture,
    timeout: std::time::Duration,
) -> Result<ExecOutcome, String> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut cmd = match req {
        ExecRequest::Argv(v) => {
            let (prog, args) = v.split_first().ok_or("empty command")?;
            let mut c = Command::new(prog);
            c.args(args);
            c
        }
        ExecRequest::Shell(s) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
    };
    cmd.stdin(Stdio::null());
    let reader = match capture {
        Capture::Nothing => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            None
        }
        Capture::Stdout => {
            let (r, w) = std::io::pipe().map_err(|e| e.to_string())?;
            cmd.stdout(w).stderr(Stdio::null());
            Some(r)
        }
        Capture::Both => {
            let (r, w) = std::io::pipe().map_err(|e| e.to_string())?;
            let w2 = w.try_clone().map_err(|e| e.to_string())?;
            cmd.stdout(w).stderr(w2);
            Some(r)
        }
    };
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // the write ends live in `cmd`: drop it so the reader sees EOF
    drop(cmd);
    // read on a thread (a full pipe must not block the child); the answer
    // comes over a channel so a grandchild holding the pipe open cannot
    // hang the load past the timeout
    let collector = reader.map(|r| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let res = r.take(MAX_EXEC_OUTPUT as u64 + 1).read_to_end(&mut buf);
            let _ = tx.send(res.map(|_| buf));
        });
        rx
    });
    let start = std::time::Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(st) => break st,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {timeout:?}; killed"));
            }
            None => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    };
    let output = match collector {
        Some(rx) => rx
            .recv_timeout(timeout.saturating_sub(start.elapsed()))
            .map_err(|_| format!("output still open after {timeout:?}"))?
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    if output.len() > MAX_EXEC_OUTPUT {
        return Err(format!("more than {MAX_EXEC_OUTPUT} bytes of output"));
    }
    Ok(ExecOutcome {
        code: status.code(),
        output,
    })
}

/// `lstat()` as 3.21's `filestat()` calls it (the link itself, not its target).
pub fn lstat(path: &str) -> Result<FileStat, String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(fs_path(path)).map_err(|e| e.to_string())?;
    Ok(FileStat {
        mode: m.mode(),
        size: m.size(),
        uid: m.uid(),
        gid: m.gid(),
        ino: m.ino(),
        nlink: m.nlink(),
        dev: m.dev(),
        atime: m.atime(),
        mtime: m.mtime(),
        ctime: m.ctime(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_commands_as_policy_functions_do() {
        let t = std::time::Duration::from_secs(20);
        let argv = |v: &[&str]| ExecRequest::Argv(v.iter().map(|s| s.to_string()).collect());
        let o = execute(&argv(&["/bin/echo", "hi", "there"]), Capture::Both, t).unwrap();
        assert_eq!((o.code, o.output.as_slice()), (Some(0), &b"hi there\n"[..]));
        let sh = |s: &str| ExecRequest::Shell(s.to_string());
        let o = execute(&sh("echo out; echo err >&2; exit 3"), Capture::Both, t).unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(String::from_utf8_lossy(&o.output), "out\nerr\n");
        let o = execute(&sh("echo out; echo err >&2"), Capture::Stdout, t).unwrap();
        assert_eq!(o.output, b"out\n");
        let o = execute(&sh("exit 1"), Capture::Nothing, t).unwrap();
        assert_eq!(o.code, Some(1));
        // a command that outlives the timeout is an error, not a hang
        let short = std::time::Duration::from_millis(200);
        assert!(execute(&sh("sleep 5"), Capture::Both, short).is_err());
        assert_eq!(FsPolicySource.is_executable("/bin/sh"), Some(true));
        assert_eq!(FsPolicySource.is_executable("/etc/passwd"), Some(false));
    }

    #[test]
    fn canonicalises_like_realpath() {
        let d = std::env::temp_dir().join(format!("rcf-fs-policy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("dir")).unwrap();
        std::os::unix::fs::symlink(d.join("dir"), d.join("link")).unwrap();
        std::os::unix::fs::symlink(d.join("nowhere"), d.join("dead")).unwrap();
        let s = FsPolicySource;
        let real = std::fs::canonicalize(d.join("dir"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            s.canonicalize(&d.join("link").to_string_lossy()),
            Canon::Resolved {
                path: real,
                is_dir: true
            }
        );
        assert_eq!(
            s.canonicalize(&d.join("dead").to_string_lossy()),
            Canon::Missing
        );
        assert!(s.is_symlink(&d.join("dead").to_string_lossy()));
        assert_eq!(
            s.canonicalize(&d.join("missing").to_string_lossy()),
            Canon::Missing
        );
        assert!(s.read(&d.join("dir").to_string_lossy()).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
