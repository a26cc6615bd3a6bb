//! A sandboxed CFEngine work dir in a temp dir.

use super::client::run_tool;
use super::{keep_dirs, require_cfengine, CfeBins, LabError, TOOL_TIMEOUT};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throw-away CFEngine work dir, for a server or a client.
///
/// Layout of the temp dir `rcf-lab-<name>-XXXXXX/`:
/// ```text
/// work/            the work dir (CFENGINE_TEST_OVERRIDE_WORKDIR)
///   bin -> /usr/bin  required: daemons validate policy with WORKDIR/bin/cf-promises
///   ppkeys/ (0700) inputs/ (0700) outputs/ state/ modules/
///   lab-logs/      our logs: cf-serverd-N.log, tool runs, generated policies
/// scratch/         free for the test: data trees, copy destinations, scripts
/// ```
/// Removed on drop unless `RCF_LAB_KEEP=1`, or unless the thread is
/// panicking (a failing test): then it is kept and its path printed.
#[derive(Debug)]
pub struct Workdir {
    tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    work: PathBuf,
    name: String,
    bins: CfeBins,
    key_id: std::sync::OnceLock<String>,
}

fn mkdir(p: &Path, mode: Option<u32>) -> Result<(), LabError> {
    std::fs::create_dir_all(p).map_err(|e| LabError::io(format!("mkdir {}", p.display()), e))?;
    if let Some(m) = mode {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m))
            .map_err(|e| LabError::io(format!("chmod {}", p.display()), e))?;
    }
    Ok(())
}

impl Workdir {
    /// Create the dirs (no keys yet: see [`Workdir::cf_key`]). Fails if the
    /// CFEngine binaries are missing.
    pub fn new(name: &str) -> Result<Workdir, LabError> {
        let bins = require_cfengine()?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rcf-lab-{name}-"))
            .tempdir()
            .map_err(|e| LabError::io("create temp dir", e))?;
        let root = tmp.path().to_path_buf();
        let tmp = if keep_dirs() {
            eprintln!("rcf lab: keeping {}", root.display());
            let _ = tmp.keep();
            None
        } else {
            Some(tmp)
        };
        let work = root.join("work");
        let wd = Workdir {
            tmp,
            root,
            work,
            name: name.to_string(),
            bins,
            key_id: Default::default(),
        };
        for d in ["inputs", "ppkeys"] {
            mkdir(&wd.work.join(d), Some(0o700))?;
        }
        for d in ["outputs", "state", "modules", "lab-logs"] {
            mkdir(&wd.work.join(d), None)?;
        }
        mkdir(&wd.scratch(), None)?;
        wd.ensure_bin_link()?;
        Ok(wd)
    }

    fn ensure_bin_link(&self) -> Result<(), LabError> {
        let bin = self.work.join("bin");
        if std::fs::symlink_metadata(&bin).is_ok_and(|m| m.file_type().is_symlink()) {
            return Ok(());
        }
        let _ = std::fs::remove_dir(&bin);
        std::os::unix::fs::symlink(&self.bins.dir, &bin)
            .map_err(|e| LabError::io(format!("symlink {}", bin.display()), e))
    }

    /// The work dir (what `CFENGINE_TEST_OVERRIDE_WORKDIR` points to).
    pub fn path(&self) -> &Path {
        &self.work
    }

    /// A free dir next to the work dir, for data, destinations, scripts.
    pub fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// `work/ppkeys`.
    pub fn ppkeys(&self) -> PathBuf {
        self.work.join("ppkeys")
    }

    /// `work/inputs`.
    pub fn inputs(&self) -> PathBuf {
        self.work.join("inputs")
    }

    /// `work/lab-logs`: server logs, tool logs, generated client policies.
    pub fn logs(&self) -> PathBuf {
        self.work.join("lab-logs")
    }

    /// The name given to [`Workdir::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CFEngine binaries this work dir uses.
    pub fn bins(&self) -> &CfeBins {
        &self.bins
    }

    /// Start `cf-serverd` through `program` instead (a wrapper that ends
    /// in `exec cf-serverd "$@"`, so the PID stays the server's).
    pub fn set_serverd(&mut self, program: PathBuf) {
        self.bins.serverd = program;
    }

    /// `ppkeys/localhost.pub`.
    pub fn pubkey_path(&self) -> PathBuf {
        self.ppkeys().join("localhost.pub")
    }

    /// `ppkeys/localhost.priv`.
    pub fn privkey_path(&self) -> PathBuf {
        self.ppkeys().join("localhost.priv")
    }

    /// A `Command` for `program` with the sandbox environment: cleared env,
    /// `PATH`, `HOME` = work dir, `LC_ALL=C`,
    /// `CFENGINE_TEST_OVERRIDE_WORKDIR` = work dir, cwd = work dir.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &self.work)
            .env("LC_ALL", "C")
            .env("CFENGINE_TEST_OVERRIDE_WORKDIR", &self.work)
            .current_dir(&self.work);
        c
    }

    /// Generate the host key with the real `cf-key` (2048-bit RSA, written
    /// to `ppkeys/localhost.{priv,pub}`) unless one exists; returns its id
    /// (`MD5=<hex>`).
    pub fn cf_key(&self) -> Result<String, LabError> {
        if !self.privkey_path().exists() {
            let run = run_tool(self, &self.bins.key, &[], None, TOOL_TIMEOUT)?;
            if !run.success() || !self.pubkey_path().exists() {
                return Err(LabError::failed("cf-key failed", run.output));
            }
            // cf-key may have replaced our bin symlink with a directory
            self.ensure_bin_link()?;
        }
        self.key_id()
    }

    /// The id of `ppkeys/localhost.pub` as `cf-key -p` prints it
    /// (`MD5=<hex>`); computed once, then cached (replace the key files
    /// behind its back and the cache is stale).
    pub fn key_id(&self) -> Result<String, LabError> {
        if let Some(id) = self.key_id.get() {
            return Ok(id.clone());
        }
        let id = key_id_of(self, &self.pubkey_path())?;
        let _ = self.key_id.set(id.clone());
        Ok(id)
    }

    /// Trust `other`'s host key for `user`, as `cf-key -t` does for root:
    /// copy its `localhost.pub` to `ppkeys/<user>-<id>.pub` (mode 0600).
    /// Returns the installed path.
    pub fn trust(&self, other: &Workdir, user: &str) -> Result<PathBuf, LabError> {
        let id = other.key_id()?;
        install_key(
            &other.pubkey_path(),
            &self.ppkeys().join(format!("{user}-{id}.pub")),
        )
    }

    /// Trust any PEM public key file (e.g. one made by `rcf-key`) for `user`.
    pub fn trust_key_file(&self, pubkey: &Path, user: &str) -> Result<PathBuf, LabError> {
        let id = key_id_of(self, pubkey)?;
        install_key(pubkey, &self.ppkeys().join(format!("{user}-{id}.pub")))
    }
    /// The peer keys currently trusted: file names in `ppkeys/` other than
    /// `localhost.*` (e.g. `root-MD5=<hex>.pub`), sorted.
    pub fn trusted_keys(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.ppkeys())
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".pub") && !n.starts_with("localhost."))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Forget every peer key (ppkeys other than localhost.*) and the
    /// lastseen database.
    pub fn untrust_all(&self) {
        for n in self.trusted_keys() {
            let _ = std::fs::remove_file(self.ppkeys().join(n));
        }
        if let Ok(rd) = std::fs::read_dir(self.work.join("state")) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("cf_lastseen") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// A fresh numbered path `lab-logs/<stem>-<n>.<ext>` (never reused).
    /// Only a name already taken moves on to the next number; any other
    /// error (the work dir removed under the test) returns that path, so
    /// the caller's own open fails with it instead of counting forever.
    pub(crate) fn next_log(&self, stem: &str, ext: &str) -> PathBuf {
        let mut n = 1u64;
        loop {
            let p = self.logs().join(format!("{stem}-{n}.{ext}"));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
            {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                _ => return p,
            }
        }
    }
}

fn install_key(pubkey: &Path, dest: &Path) -> Result<PathBuf, LabError> {
    std::fs::copy(pubkey, dest).map_err(|e| {
        LabError::io(
            format!("copy {} to {}", pubkey.display(), dest.display()),
            e,
        )
    })?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| LabError::io(format!("chmod {}", dest.display()), e))?;
    Ok(dest.to_path_buf())
}

fn key_id_of(wd: &Workdir, pubkey: &Path) -> Result<String, LabError> {
    let p = pubkey.to_string_lossy();
    let run = run_tool(wd, &wd.bins.key, &["-p", &p], None, TOOL_TIMEOUT)?;
    let id = run
        .output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("MD5=") || l.starts_with("SHA="));
    match id {
        Some(id) if run.success() => Ok(id.to_string()),
        _ => Err(LabError::failed(format!("cf-key -p {p}"), run.output)),
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(t) = self.tmp.take() {
                let p = t.keep();
                eprintln!(
                    "rcf lab: test failed, keeping work dir {} for post-mortem",
                    p.display()
                );
            }
        }
    }
}
