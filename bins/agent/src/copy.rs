//! `copy_from` for one source: STAT, compare, GET into `<dest>.cfnew`,
//! fsync, check, rename (SEMANTICS F2.3, F2.4), over one cached connection
//! per run, with connect-time failover across the server list (F2.1).
//!
//! Safety rules every path follows:
//! * the destination is only ever replaced by a `rename` of a complete,
//!   fsynced temporary file whose size matched the STAT and whose source
//!   was re-STATed unchanged afterwards; an aborted or changed transfer
//!   leaves the old destination untouched and the temp file removed;
//! * an `MD5` verdict fetched ahead of time (pipelined per directory) is
//!   used only while the local file is exactly as it was when hashed (same
//!   inode, size, mtime and ctime); otherwise the file is hashed and asked
//!   about again;
//! * names from an `OPENDIR` listing are checked
//!   ([`rcf_core::client::listing`]) before they touch a local path.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use rcf_core::client::listing;
use rcf_core::client::{GetFailure, Level};
use rcf_core::reply::{FileType, StatReply};
use rcf_fs::serve::ContentKey;
use rcf_smol::{ClassicOptions, Conn, ConnectOptions, Error as NetError};

use crate::output::{json_str, Output};
use crate::{CopyArgs, ServerAddr};

/// How many times a file whose source changed during the transfer is fetched again.
const MAX_ATTEMPTS: usize = 3;

/// `compare` of `body copy_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Copy when the destination is older (mtime).
    Mtime,
    /// Copy when ctime or mtime is older (the default).
    Ctime,
    /// The ctime rule, or a digest difference.
    Atime,
    /// Copy when sizes or the server's MD5 verdict differ (digest, hash, binary).
    Digest,
    /// Never overwrite an existing destination.
    Exists,
}

impl Compare {
    /// From the CLI spelling.
    pub fn parse(s: &str) -> Compare {
        match s {
            "mtime" => Compare::Mtime,
            "atime" => Compare::Atime,
            "digest" | "hash" | "binary" => Compare::Digest,
            "exists" => Compare::Exists,
            _ => Compare::Ctime,
        }
    }
}

/// What one copy does besides the transfer itself.
#[derive(Debug, Clone)]
pub struct CopyOpts {
    pub compare: Compare,
    pub verify: bool,
    pub recurse: bool,
    pub depth: Option<u32>,
    pub purge: bool,
    pub preserve: bool,
    pub missing_ok: bool,
    pub type_check: bool,
    /// Entry names never copied nor purged (bootstrap's `.git`, `.svn`…).
    pub exclude: Vec<Vec<u8>>,
}

/// Why a whole run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No server in the list connected and authenticated.
    #[error("No suitable server found for '{0}'")]
    NoServer(String),
    /// The chosen server went away and could not be reached again.
    #[error("Lost connection to '{server}' and could not reconnect: {detail}")]
    Lost {
        /// The server as written.
        server: String,
        /// The last error.
        detail: String,
    },
}

/// What happened, for the summary and `--json`.
#[derive(Debug, Default)]
pub struct Summary {
    pub server: Option<String>,
    pub server_key: Option<String>,
    pub copied: Vec<String>,
    pub kept: u64,
    pub failed: Vec<(String, String)>,
    pub purged: Vec<String>,
    pub bytes: u64,
}

impl Summary {
    /// The `--json` document.
    pub fn to_json(&self, ok: bool, error: Option<&str>) -> String {
        let list = |v: &Vec<String>| v.iter().map(|s| json_str(s)).collect::<Vec<_>>().join(",");
        let failed = self
            .failed
            .iter()
            .map(|(p, e)| format!("{{\"path\":{},\"error\":{}}}", json_str(p), json_str(e)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"ok\":{ok},\"server\":{},\"server_key\":{},\"copied\":[{}],\"kept\":{},\"failed\":[{failed}],\"purged\":[{}],\"bytes\":{},\"error\":{}}}",
            self.server.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            self.server_key.as_deref().map(json_str).unwrap_or_else(|| "null".into()),
            list(&self.copied),
            self.kept,
            list(&self.purged),
            self.bytes,
            error.map(json_str).unwrap_or_else(|| "null".into()),
        )
    }
}

enum Outcome {
    Copied,
    Kept,
    Failed(String),
}

/// One agent run's connections: the server chosen at first connect, its
/// cached connection, and the per-connection STAT cache.
pub struct Run {
    servers: Vec<ServerAddr>,
    base: ConnectOptions,
    chosen: Option<usize>,
    client: Option<Conn>,
    /// Set for `--protocol classic`: connections speak protocol 1.
    classic: Option<ClassicOptions>,
    stat_cache: HashMap<Vec<u8>, StatReply>,
    /// `MD5` verdicts asked ahead of time for a directory's files, with the
    /// state of the local file they were computed from.
    md5_cache: HashMap<Vec<u8>, (ContentKey, Result<bool, String>)>,
    out: Output,
    pub summary: Summary,
    /// Directories that had a file renamed into them, fsynced once each at
    /// the end of the run (or when the run is dropped) rather than after
    /// every file: per-file directory fsyncs were half the agent's time on a
    /// local full copy. A killed agent leaves each file old or new either
    /// way (rename is atomic); this only moves when the renames become
    /// durable across a power loss.
    dirs_to_sync: std::collections::BTreeSet<PathBuf>,
}

impl Drop for Run {
    fn drop(&mut self) {
        self.sync_dirs();
    }
}

impl Run {
    fn sync_dirs(&mut self) {
        for dir in std::mem::take(&mut self.dirs_to_sync) {
            let _ = fs::File::open(&dir).and_then(|d| d.sync_all());
        }
    }

    pub fn new(servers: Vec<ServerAddr>, base: ConnectOptions, out: Output) -> Run {
        Run {
            servers,
            base,
            chosen: None,
            client: None,
            classic: None,
            stat_cache: HashMap::new(),
            md5_cache: HashMap::new(),
            out,
            summary: Summary::default(),
            dirs_to_sync: Default::default(),
        }
    }

    /// Speak the classic protocol (v1) instead of TLS.
    pub fn use_classic(&mut self, c: ClassicOptions) {
        self.classic = Some(c);
    }

    fn server_text(&self) -> String {
        self.chosen
            .map(|i| self.servers[i].text.clone())
            .unwrap_or_default()
    }

    async fn connect_to(&self, i: usize) -> Result<Conn, NetError> {
        let mut o = self.base.clone();
        o.host = self.servers[i].host.clone();
        o.port = self.servers[i].port;
        Conn::connect(o, self.classic.clone()).await
    }

    /// A usable connection: the cached one, a new one to the chosen server,
    /// or the first server of the list that connects and authenticates.
    async fn ensure(&mut self, what: &str) -> Result<(), RunError> {
        if self.client.as_ref().is_some_and(|c| c.is_usable()) {
            return Ok(());
        }
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        if let Some(i) = self.chosen {
            return match self.connect_to(i).await {
                Ok(c) => {
                    self.out.log(
                        Level::Verbose,
                        &format!("Reconnected to '{}'", self.servers[i].text),
                    );
                    self.client = Some(c);
                    self.stat_cache.clear();
                    self.md5_cache.clear();
                    Ok(())
                }
                Err(e) => Err(RunError::Lost {
                    server: self.servers[i].text.clone(),
                    detail: e.to_string(),
                }),
            };
        }
        for i in 0..self.servers.len() {
            match self.connect_to(i).await {
                Ok(c) => {
                    self.out.log(
                        Level::Verbose,
                        &format!(
                            "Connected & authenticated successfully to '{}'",
                            self.servers[i].text
                        ),
                    );
                    self.summary.server = Some(self.servers[i].text.clone());
                    self.summary.server_key = c.server_key_id().map(str::to_string);
                    self.chosen = Some(i);
                    self.client = Some(c);
                    return Ok(());
                }
                Err(e) => {
                    match &e {
                        NetError::Connect { .. } => self.out.log(Level::Verbose, &e.to_string()),
                        _ => {
                            // Reached, but TLS, trust or identification failed:
                            // the wording CFEngine's FAQ documents.
                            self.out.log(Level::Error, &e.to_string());
                            self.out.log(
                                Level::Error,
                                &format!(
                                    "Authentication dialogue with '{}' failed",
                                    self.servers[i].text
                                ),
                            );
                        }
                    }
                    self.out.log(
                        Level::Info,
                        &format!(
                            "Unable to establish connection to '{}'",
                            self.servers[i].text
                        ),
                    );
                }
            }
        }
        Err(RunError::NoServer(what.to_string()))
    }

    fn drop_client(&mut self) {
        // Dropping the socket without close_notify is fine after an error.
        self.client = None;
    }

    /// STAT through the per-connection cache (a path STATed twice in a run
    /// gives the first answer, as cf-agent's stat cache does).
    async fn stat(&mut self, path: &[u8]) -> Result<Result<StatReply, String>, RunError> {
        if let Some(st) = self.stat_cache.get(path) {
            return Ok(Ok(st.clone()));
        }
        let r = self.stat_fresh(path).await?;
        if let Ok(st) = &r {
            self.stat_cache.insert(path.to_vec(), st.clone());
        }
        Ok(r)
    }

    async fn stat_fresh(&mut self, path: &[u8]) -> Result<Result<StatReply, String>, RunError> {
        for _ in 0..2 {
            self.ensure(&String::from_utf8_lossy(path)).await?;
            match self.client.as_mut().expect("ensured").stat(path).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.out.log(
                        Level::Error,
                        &format!(
                            "Connection error when checking '{}': {e}",
                            String::from_utf8_lossy(path)
                        ),
                    );
                    self.drop_client();
                }
            }
        }
        Ok(Err("connection error".into()))
    }

    /// Copy `source` (remote) to `dest` (local). Per-file failures are
    /// logged and counted in the summary; only losing every server stops
    /// the run.
    pub async fn copy(
        &mut self,
        source: &str,
        dest: &Path,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        self.ensure(source).await?;
        let src = source.as_bytes().to_vec();
        let st = match self.stat(&src).await? {
            Ok(st) => st,
            Err(text) => {
                if opts.missing_ok {
                    self.out.log(
                        Level::Info,
                        &format!("Can't stat file '{source}' on '{}' but promise is kept because of 'missing_ok' in files.copy_from promise", self.server_text()),
                    );
                    self.summary.kept += 1;
                    return Ok(());
                }
                self.out
                    .log(Level::Error, &format!("Server returned error: {text}"));
                let msg = format!("Can't stat file '{source}' on '{}'", self.server_text());
                self.out.log(Level::Error, &msg);
                self.summary.failed.push((dest.display().to_string(), msg));
                return Ok(());
            }
        };
        match st.file_type {
            FileType::Dir if opts.recurse => self.copy_tree(&src, dest, opts).await,
            FileType::Dir => {
                let msg = format!("Source '{source}' is a directory; use --recurse to copy it (maximum recursion level reached at '{source}')");
                self.out.log(Level::Error, &msg);
                self.summary.failed.push((dest.display().to_string(), msg));
                Ok(())
            }
            _ => {
                self.entry(&src, dest, st, opts).await?;
                // A single-file copy has no directory sweep: drop a
                // temporary an interrupted run left (ENOENT otherwise; a
                // copy that ran renamed or removed its own already).
                let _ = fs::remove_file(cfnew(dest));
                Ok(())
            }
        }
    }

    async fn entry(
        &mut self,
        src: &[u8],
        dest: &Path,
        st: StatReply,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        let shown = dest.display().to_string();
        match st.file_type {
            FileType::Regular => match self.copy_file(src, dest, st, opts).await? {
                Outcome::Copied => self.summary.copied.push(shown),
                Outcome::Kept => self.summary.kept += 1,
                Outcome::Failed(msg) => {
                    self.out.log(Level::Error, &msg);
                    self.summary.failed.push((shown, msg));
                }
            },
            FileType::Link => self.out.log(
                Level::Warning,
                &format!(
                    "Source '{}' is a dangling symbolic link on the server, not copied",
                    String::from_utf8_lossy(src)
                ),
            ),
            other => self.out.log(
                Level::Verbose,
                &format!(
                    "Source '{}' is a special file ({other:?}), not copied",
                    String::from_utf8_lossy(src)
                ),
            ),
        }
        Ok(())
    }

    async fn copy_tree(
        &mut self,
        src: &[u8],
        dest: &Path,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        let mut stack: Vec<(Vec<u8>, PathBuf, u32)> = vec![(src.to_vec(), dest.to_path_buf(), 1)];
        while let Some((dir, local, level)) = stack.pop() {
            let shown_dir = String::from_utf8_lossy(&dir).into_owned();
            if let Err(msg) = make_dir(&local, opts.type_check, &shown_dir) {
                self.out.log(Level::Error, &msg);
                self.summary.failed.push((local.display().to_string(), msg));
                continue;
            }
            self.ensure(&shown_dir).await?;
            let listing = match self.client.as_mut().expect("ensured").opendir(&dir).await {
                Ok(Ok(names)) => names,
                Ok(Err(text)) => {
                    let msg = format!("Unable to list remote directory '{shown_dir}': {text}");
                    self.out.log(Level::Error, &msg);
                    self.summary.failed.push((local.display().to_string(), msg));
                    continue;
                }
                Err(e) => {
                    let msg = format!("Connection error when checking '{shown_dir}': {e}");
                    self.out.log(Level::Error, &msg);
                    self.summary.failed.push((local.display().to_string(), msg));
                    self.drop_client();
                    continue;
                }
            };
            let (names, refused) = listing::usable(&listing);
            for r in refused {
                let msg = format!(
                    "Refusing suspicious file name {:?} in the server's listing of '{shown_dir}'",
                    String::from_utf8_lossy(&r)
                );
                self.out.log(Level::Error, &msg);
                self.summary.failed.push((local.display().to_string(), msg));
            }
            let names: Vec<Vec<u8>> = names
                .into_iter()
                .filter(|n| !opts.exclude.contains(n))
                .collect();
            {
                let listed: HashSet<&[u8]> = listing.iter().map(|n| n.as_slice()).collect();
                if opts.purge {
                    self.purge(&local, &listed);
                }
                self.sweep_stale_temps(&local, &listed);
            }
            // STAT every entry of the directory in one pipelined batch
            // (one round trip instead of one per entry).
            let wanted: Vec<Vec<u8>> = names
                .iter()
                .map(|n| join_remote(&dir, n))
                .filter(|p| !self.stat_cache.contains_key(p))
                .collect();
            if !wanted.is_empty() {
                self.ensure(&shown_dir).await?;
                match self
                    .client
                    .as_mut()
                    .expect("ensured")
                    .stat_many(&wanted)
                    .await
                {
                    Ok(results) => {
                        for (p, r) in wanted.into_iter().zip(results) {
                            if let Ok(st) = r {
                                self.stat_cache.insert(p, st);
                            }
                        }
                    }
                    Err(e) => {
                        self.out.log(
                            Level::Verbose,
                            &format!(
                                "Pipelined STAT of '{shown_dir}' failed ({e}); going one by one"
                            ),
                        );
                        self.drop_client();
                    }
                }
            }
            if matches!(opts.compare, Compare::Digest | Compare::Atime) {
                self.prefetch_md5(&dir, &local, &names, opts.compare)
                    .await?;
            }
            let mut subdirs = Vec::new();
            for name in names {
                let child_src = join_remote(&dir, &name);
                let child_dst =
                    local.join(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(&name));
                let st = match self.stat(&child_src).await? {
                    Ok(st) => st,
                    Err(text) => {
                        let msg = format!(
                            "Can't stat file '{}' on '{}': {text}",
                            String::from_utf8_lossy(&child_src),
                            self.server_text()
                        );
                        self.out.log(Level::Error, &msg);
                        self.summary
                            .failed
                            .push((child_dst.display().to_string(), msg));
                        continue;
                    }
                };
                if st.file_type == FileType::Dir {
                    if opts.depth.is_none() || opts.depth > Some(level) {
                        subdirs.push((child_src, child_dst, level + 1));
                    }
                } else {
                    self.entry(&child_src, &child_dst, st, opts).await?;
                }
            }
            // Depth first, in name order.
            subdirs.reverse();
            stack.extend(subdirs);
        }
        Ok(())
    }

    /// Ask the server about every file of a directory whose local copy
    /// `needs_copy` would hash (a regular file of the source's size; for
    /// `atime`, not older), in one pipelined batch instead of one round
    /// trip per file; `digest_differs` then takes the verdicts from
    /// `md5_cache`. A connection error drops the batch (and the
    /// connection): the files are then asked about one by one.
    async fn prefetch_md5(
        &mut self,
        dir: &[u8],
        local: &Path,
        names: &[Vec<u8>],
        compare: Compare,
    ) -> Result<(), RunError> {
        let mut items = Vec::new();
        let mut states = Vec::new();
        for name in names {
            let src = join_remote(dir, name);
            let Some(st) = self.stat_cache.get(&src) else {
                continue;
            };
            if st.file_type != FileType::Regular {
                continue;
            }
            let dest = local.join(std::ffi::OsStr::from_encoded_bytes_unchecked_safe(name));
            let Ok(m) = fs::symlink_metadata(&dest) else {
                continue;
            };
            if !m.is_file() || m.len() != st.size {
                continue;
            }
            if compare == Compare::Atime && (m.ctime() < st.ctime || m.mtime() < st.mtime) {
                continue;
            }
            let Ok(digest) = md5_file(&dest) else {
                continue;
            };
            // hashed from this state (re-read: the hash took time)
            let Ok(m2) = fs::symlink_metadata(&dest) else {
                continue;
            };
            let state = ContentKey::of(&m2);
            if state != ContentKey::of(&m) {
                continue;
            }
            items.push((src, digest));
            states.push(state);
        }
        if items.is_empty() {
            return Ok(());
        }
        self.ensure(&String::from_utf8_lossy(dir)).await?;
        match self
            .client
            .as_mut()
            .expect("ensured")
            .md5_many(&items)
            .await
        {
            Ok(results) => {
                for (((src, _), state), r) in items.into_iter().zip(states).zip(results) {
                    self.md5_cache.insert(src, (state, r));
                }
            }
            Err(e) => {
                self.out.log(
                    Level::Verbose,
                    &format!(
                        "Pipelined MD5 of '{}' failed ({e}); going one by one",
                        String::from_utf8_lossy(dir)
                    ),
                );
                self.drop_client();
            }
        }
        Ok(())
    }

    /// Remove `<name>.cfnew` files that an interrupted earlier run left
    /// next to a listed `<name>`: a file that is now up to date is never
    /// rewritten, so without this its stale temporary would stay forever.
    /// One directory read per directory (not a syscall per file); only
    /// regular files are touched, and a `.cfnew` the server itself lists
    /// is a real entry, not ours.
    fn sweep_stale_temps(&mut self, local: &Path, listed: &HashSet<&[u8]>) {
        let Ok(rd) = fs::read_dir(local) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            let bytes = name.as_encoded_bytes();
            let Some(base) = bytes.strip_suffix(b".cfnew") else {
                continue;
            };
            if base.is_empty() || !listed.contains(base) || listed.contains(bytes) {
                continue;
            }
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let p = e.path();
            match fs::remove_file(&p) {
                Ok(()) => self.out.log(
                    Level::Verbose,
                    &format!("Removed '{}', left by an interrupted copy", p.display()),
                ),
                Err(err) => self.out.log(
                    Level::Warning,
                    &format!(
                        "Could not remove stale temporary file '{}': {err}",
                        p.display()
                    ),
                ),
            }
        }
    }

    fn purge(&mut self, local: &Path, listed: &HashSet<&[u8]>) {
        if local.as_os_str().len() < 2 {
            self.out.log(
                Level::Error,
                &format!("Purge of '{}' denied - too dangerous!", local.display()),
            );
            return;
        }
        let Ok(rd) = fs::read_dir(local) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            if listed.contains(name.as_encoded_bytes()) {
                continue;
            }
            let p = e.path();
            let r = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
            match r {
                Ok(()) => {
                    self.out.log(
                        Level::Info,
                        &format!("Purged '{}' (not on the server)", p.display()),
                    );
                    self.summary.purged.push(p.display().to_string());
                }
                Err(e) => self.out.log(
                    Level::Error,
                    &format!("Could not purge '{}': {e}", p.display()),
                ),
            }
        }
    }

    /// Whether an existing destination must be replaced.
    async fn needs_copy(
        &mut self,
        src: &[u8],
        m: &fs::Metadata,
        dest: &Path,
        st: &StatReply,
        compare: Compare,
    ) -> Result<bool, RunError> {
        let older = m.ctime() < st.ctime || m.mtime() < st.mtime;
        Ok(match compare {
            Compare::Exists => false,
            Compare::Mtime => m.mtime() < st.mtime,
            Compare::Ctime => older,
            Compare::Atime => older || self.digest_differs(src, m, dest, st).await?,
            Compare::Digest => self.digest_differs(src, m, dest, st).await?,
        })
    }

    async fn digest_differs(
        &mut self,
        src: &[u8],
        m: &fs::Metadata,
        dest: &Path,
        st: &StatReply,
    ) -> Result<bool, RunError> {
        if m.len() != st.size {
            return Ok(true);
        }
        let cached = match self.md5_cache.remove(src) {
            Some((state, r)) if state == ContentKey::of(m) => Some(r),
            _ => None,
        };
        let answer = match cached {
            Some(r) => Ok(r),
            None => {
                let Ok(digest) = md5_file(dest) else {
                    return Ok(true);
                };
                self.ensure(&String::from_utf8_lossy(src)).await?;
                self.client
                    .as_mut()
                    .expect("ensured")
                    .md5(src, digest)
                    .await
            }
        };
        match answer {
            Ok(Ok(d)) => Ok(d),
            // cf-agent reads anything but CFD_TRUE as "same".
            Ok(Err(text)) => {
                self.out.log(
                    Level::Verbose,
                    &format!(
                        "MD5 of '{}' refused by the server ({text}), treating as same",
                        String::from_utf8_lossy(src)
                    ),
                );
                Ok(false)
            }
            Err(e) => {
                self.out.log(
                    Level::Error,
                    &format!(
                        "Connection error when checking '{}': {e}",
                        String::from_utf8_lossy(src)
                    ),
                );
                self.drop_client();
                Ok(true)
            }
        }
    }

    async fn copy_file(
        &mut self,
        src: &[u8],
        dest: &Path,
        mut st: StatReply,
        opts: &CopyOpts,
    ) -> Result<Outcome, RunError> {
        let src_text = String::from_utf8_lossy(src).into_owned();
        if let Ok(m) = fs::symlink_metadata(dest) {
            if !m.is_file() {
                if opts.type_check || m.is_dir() {
                    return Ok(Outcome::Failed(format!(
                        "Promised file copy {} exists but type mismatch with source '{src_text}'",
                        dest.display()
                    )));
                }
            } else if !self.needs_copy(src, &m, dest, &st, opts.compare).await? {
                self.out.log(
                    Level::Verbose,
                    &format!("File '{}' is an up to date copy of source", dest.display()),
                );

                if opts.preserve {
                    let _ = fs::set_permissions(dest, fs::Permissions::from_mode(st.mode & 0o7777));
                }
                return Ok(Outcome::Kept);
            }
        }
        let tmp = cfnew(dest);
        // cf-agent creates a copy's missing parent directories.
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = fs::create_dir_all(parent) {
                return Ok(Outcome::Failed(format!(
                    "Can't create directory '{}': {e}",
                    parent.display()
                )));
            }
        }
        for attempt in 1..=MAX_ATTEMPTS {
            self.ensure(&src_text).await?;
            let _ = fs::remove_file(&tmp);
            let file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
            {
                Ok(f) => f,
                Err(e) => {
                    return Ok(Outcome::Failed(format!(
                        "Can't create temporary file '{}': {e}",
                        tmp.display()
                    )))
                }
            };
            let mut w = BufWriter::with_capacity(64 * 1024, file);
            let mut done = 0u64;
            let out = self.out.clone();
            let total = st.size;
            let name = src_text.clone();
            let res = if st.size == 0 {
                Ok(Ok(()))
            } else {
                self.client
                    .as_mut()
                    .expect("ensured")
                    .get(src, st.size, |b| {
                        w.write_all(b)?;
                        done += b.len() as u64;
                        out.progress(&name, done, total);
                        Ok(())
                    })
                    .await
            };
            let server = self.server_text();
            match res {
                Err(NetError::Io(e)) if self.client.as_ref().is_some_and(|c| c.is_usable()) => {
                    drop(w);
                    let _ = fs::remove_file(&tmp);
                    return Ok(Outcome::Failed(format!(
                        "Failed to write '{}': {e}",
                        tmp.display()
                    )));
                }
                Err(e) => {
                    drop(w);
                    let _ = fs::remove_file(&tmp);
                    self.out.log(
                        Level::Error,
                        &format!("Connection error when copying '{server}:{src_text}': {e}"),
                    );
                    self.drop_client();
                    continue;
                }
                Ok(Err(GetFailure::Refused(_))) | Ok(Err(GetFailure::Denied)) => {
                    drop(w);
                    let _ = fs::remove_file(&tmp);
                    return Ok(Outcome::Failed(format!(
                        "Network access to '{server}:{src_text}' denied"
                    )));
                }
                Ok(Err(GetFailure::Changed)) => {
                    drop(w);
                    let _ = fs::remove_file(&tmp);
                    self.out.log(Level::Notice, &format!("Source '{server}:{src_text}' changed while copying (attempt {attempt})"));
                    self.drop_client();
                    self.stat_cache.remove(src);
                    match self.stat_fresh(src).await? {
                        Ok(st2) => st = st2,
                        Err(t) => {
                            return Ok(Outcome::Failed(format!(
                                "Can't stat file '{src_text}' on '{server}': {t}"
                            )))
                        }
                    }
                    continue;
                }
                Ok(Ok(())) => {}
            }
            let file = match w.into_inner() {
                Ok(f) => f,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Ok(Outcome::Failed(format!(
                        "Failed to write '{}': {}",
                        tmp.display(),
                        e.error()
                    )));
                }
            };
            if let Err(e) = file.sync_all() {
                let _ = fs::remove_file(&tmp);
                return Ok(Outcome::Failed(format!(
                    "Failed to fsync '{}': {e}",
                    tmp.display()
                )));
            }
            let len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
            drop(file);
            if len != st.size {
                let _ = fs::remove_file(&tmp);
                return Ok(Outcome::Failed(format!(
                    "New file '{}' seems to have been corrupted in transit, destination size ({len}) differs from the source size ({}), aborting.",
                    dest.display(),
                    st.size
                )));
            }
            // Did the source change between the STAT and the end of the GET?
            // (A file that grew desynchronises the stream; this STAT then
            // fails to parse and the connection is dropped.)
            let again = match self.client.as_mut().expect("ensured").stat(src).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    self.out.log(Level::Notice, &format!("Source '{server}:{src_text}' changed while copying ({e}), fetching again"));
                    self.drop_client();
                    self.stat_cache.remove(src);
                    match self.stat_fresh(src).await? {
                        Ok(st2) => st = st2,
                        Err(t) => {
                            return Ok(Outcome::Failed(format!(
                                "Can't stat file '{src_text}' on '{server}': {t}"
                            )))
                        }
                    }
                    continue;
                }
            };
            match again {
                Ok(st2) if st2.size != st.size || st2.mtime != st.mtime => {
                    let _ = fs::remove_file(&tmp);
                    self.out.log(Level::Notice, &format!("Source '{server}:{src_text}' changed while copying (attempt {attempt}), fetching again"));
                    self.stat_cache.insert(src.to_vec(), st2.clone());
                    st = st2;
                    continue;
                }
                Ok(_) => {}
                Err(t) => {
                    let _ = fs::remove_file(&tmp);
                    return Ok(Outcome::Failed(format!(
                        "Source '{server}:{src_text}' disappeared while copying: {t}"
                    )));
                }
            }
            if opts.verify {
                let digest = match md5_file(&tmp) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        return Ok(Outcome::Failed(format!(
                            "Can't read back '{}': {e}",
                            tmp.display()
                        )));
                    }
                };
                match self
                    .client
                    .as_mut()
                    .expect("ensured")
                    .md5(src, digest)
                    .await
                {
                    Ok(Ok(false)) => self.out.log(
                        Level::Verbose,
                        &format!(
                            "Verified '{}' against '{server}:{src_text}'",
                            dest.display()
                        ),
                    ),
                    Ok(Ok(true)) => {
                        let _ = fs::remove_file(&tmp);
                        return Ok(Outcome::Failed(format!("Verification of '{}' against '{server}:{src_text}' failed: digests differ", dest.display())));
                    }
                    Ok(Err(t)) => {
                        let _ = fs::remove_file(&tmp);
                        return Ok(Outcome::Failed(format!(
                            "Verification of '{}' refused by the server: {t}",
                            dest.display()
                        )));
                    }
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        self.drop_client();
                        return Ok(Outcome::Failed(format!(
                            "Connection error when verifying '{}': {e}",
                            dest.display()
                        )));
                    }
                }
            }
            if opts.preserve {
                let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(st.mode & 0o7777));
                if rustix::process::geteuid().is_root() {
                    let _ = std::os::unix::fs::chown(&tmp, Some(st.uid), Some(st.gid));
                }
            }
            if let Err(e) = fs::rename(&tmp, dest) {
                let _ = fs::remove_file(&tmp);
                return Ok(Outcome::Failed(format!(
                    "Can't rename '{}' to '{}': {e}",
                    tmp.display(),
                    dest.display()
                )));
            }
            if let Some(dir) = dest.parent() {
                self.dirs_to_sync.insert(dir.to_path_buf());
            }
            self.summary.bytes += st.size;
            self.out.log(
                Level::Info,
                &format!(
                    "Updated file '{}' from '{server}:{src_text}'",
                    dest.display()
                ),
            );
            return Ok(Outcome::Copied);
        }
        let _ = fs::remove_file(&tmp);
        Ok(Outcome::Failed(format!("Source '{}:{src_text}' kept changing while copying, giving up after {MAX_ATTEMPTS} attempts", self.server_text())))
    }

    /// Close the cached connection (close_notify), as cf-agent does at exit.
    pub async fn finish(mut self) -> Summary {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        self.sync_dirs();
        std::mem::take(&mut self.summary)
    }
}

/// `<dest>.cfnew`, cf-agent's temporary name.
fn cfnew(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".cfnew");
    PathBuf::from(s)
}

fn join_remote(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn make_dir(p: &Path, type_check: bool, src: &str) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            let _ = type_check;
            Err(format!(
                "Promised file copy {} exists but type mismatch with source '{src}'",
                p.display()
            ))
        }
        Err(_) => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(p)
            .map_err(|e| format!("Can't create directory '{}': {e}", p.display())),
    }
}

/// MD5 of a local file, streamed.
pub fn md5_file(p: &Path) -> std::io::Result<[u8; 16]> {
    let mut f = fs::File::open(p)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

trait OsStrFromBytes {
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr;
}

impl OsStrFromBytes for std::ffi::OsStr {
    /// Names were checked by `listing::usable` (no `/`, no NUL); on Unix
    /// any other byte string is a valid file name.
    fn from_encoded_bytes_unchecked_safe(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

/// `rcf-agent copy`.
pub fn run(workdir: &Path, a: &CopyArgs, out: &Output) -> u8 {
    let classic = rcf_core::banner::ProtocolVersion::from_policy_name(&a.conn.protocol)
        == Some(rcf_core::banner::ProtocolVersion::Classic);
    let version = if classic {
        rcf_core::banner::ProtocolVersion::Classic
    } else {
        match crate::protocol(&a.conn, out) {
            Ok(v) => v,
            Err(code) => return code,
        }
    };
    if a.encrypt && !classic {
        out.log(
            Level::Verbose,
            "encrypt is ignored over TLS (as cf-agent does)",
        );
    }
    let mut servers = Vec::new();
    for s in &a.servers {
        match crate::parse_host_port(s) {
            Ok(sa) => servers.push(sa),
            Err(e) => {
                out.log(Level::Error, &e);
                return 2;
            }
        }
    }
    let key = match crate::host_key(workdir, false, out) {
        Ok(k) => k,
        Err(e) => {
            out.log(Level::Error, &e);
            out.log(Level::Error, "No public/private key pair is loaded, please create one by running \"rcf-key\" or \"cf-key\"");
            return crate::EXIT_FAILED;
        }
    };
    let base = match crate::connect_options(workdir, &key, &a.conn, version, a.trustkey, out) {
        Ok(b) => b,
        Err(e) => {
            out.log(Level::Error, &e);
            return crate::EXIT_FAILED;
        }
    };
    let opts = CopyOpts {
        compare: Compare::parse(&a.compare),
        verify: a.verify,
        recurse: a.recurse,
        depth: a.depth,
        purge: a.purge,
        preserve: a.preserve,
        missing_ok: a.missing_ok,
        type_check: a.type_check,
        exclude: Vec::new(),
    };
    smol::block_on(async {
        let mut run = Run::new(servers, base, out.clone());
        if classic {
            run.use_classic(ClassicOptions {
                key: std::sync::Arc::new(key.clone()),
                encrypt: a.encrypt,
                state_dir: workdir.join("state"),
            });
        }
        let r = run.copy(&a.source, &a.dest, &opts).await;
        let summary = run.finish().await;
        let (code, err) = match &r {
            Ok(()) if summary.failed.is_empty() => (crate::EXIT_OK, None),
            Ok(()) => (crate::EXIT_FAILED, None),
            Err(e @ RunError::NoServer(_)) => (crate::EXIT_NO_SERVER, Some(e.to_string())),
            Err(e @ RunError::Lost { .. }) => (crate::EXIT_FAILED, Some(e.to_string())),
        };
        if let Some(e) = &err {
            out.log(Level::Error, e);
        }
        out.emit_json(&summary.to_json(code == 0, err.as_deref()));
        code
    })
}
