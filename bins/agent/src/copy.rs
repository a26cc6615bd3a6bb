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

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

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

/// `--parallel`'s default: the main connection plus up to 3 transfer connections.
pub const DEFAULT_PARALLEL: u16 = 4;

/// One extra transfer connection is opened per this many files waiting for
/// a GET (up to `--parallel` - 1 extras): a run that fetches a handful of
/// files never opens one.
const FILES_PER_CONNECTION: usize = 8;

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
    /// Handed to the transfer pool; the outcome is recorded when it is fetched.
    Queued,
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
    dirs_to_sync: BTreeSet<PathBuf>,
    /// `--parallel`: most connections fetching files at once (1 = every
    /// GET on the main connection, in walk order).
    parallel: usize,
    /// While a recursive copy with `parallel > 1` runs: the files waiting
    /// for a GET, shared with the transfer workers.
    pool: Option<Rc<RefCell<Pool>>>,
    /// Runs the transfer workers next to the walk (same thread).
    ex: Rc<smol::LocalExecutor<'static>>,
    workers: Vec<smol::Task<()>>,
    fetch_opts: FetchOpts,
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
            parallel: 1,
            pool: None,
            ex: Rc::new(smol::LocalExecutor::new()),
            workers: Vec::new(),
            fetch_opts: FetchOpts::default(),
        }
    }

    /// Fetch files over up to `n` connections (`--parallel`); 1 = one
    /// connection, every GET in walk order. The classic protocol always
    /// uses one.
    pub fn set_parallel(&mut self, n: usize) {
        self.parallel = n.max(1);
    }

    /// A copied file, in walk order (held in the pool's journal while
    /// transfers run, so the summary keeps walk order, not completion order).
    fn record_copied(&mut self, shown: String) {
        match &self.pool {
            Some(p) => p.borrow_mut().journal.push(Slot::Copied(shown)),
            None => self.summary.copied.push(shown),
        }
    }

    /// A failure, in walk order (see [`Run::record_copied`]).
    fn record_failed(&mut self, shown: String, msg: String) {
        match &self.pool {
            Some(p) => p.borrow_mut().journal.push(Slot::Failed(shown, msg)),
            None => self.summary.failed.push((shown, msg)),
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
            FileType::Dir if opts.recurse && self.parallel > 1 && self.classic.is_none() => {
                let ex = self.ex.clone();
                ex.run(self.copy_tree_pooled(&src, dest, opts)).await
            }
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
                Outcome::Copied => self.record_copied(shown),
                Outcome::Kept => self.summary.kept += 1,
                Outcome::Failed(msg) => {
                    self.out.log(Level::Error, &msg);
                    self.record_failed(shown, msg);
                }
                Outcome::Queued => {}
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
                self.record_failed(local.display().to_string(), msg);
                continue;
            }
            self.ensure(&shown_dir).await?;
            let listing = match self.client.as_mut().expect("ensured").opendir(&dir).await {
                Ok(Ok(names)) => names,
                Ok(Err(text)) => {
                    let msg = format!("Unable to list remote directory '{shown_dir}': {text}");
                    self.out.log(Level::Error, &msg);
                    self.record_failed(local.display().to_string(), msg);
                    continue;
                }
                Err(e) => {
                    let msg = format!("Connection error when checking '{shown_dir}': {e}");
                    self.out.log(Level::Error, &msg);
                    self.record_failed(local.display().to_string(), msg);
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
                self.record_failed(local.display().to_string(), msg);
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
                        self.record_failed(child_dst.display().to_string(), msg);
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
        st: StatReply,
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
        // cf-agent creates a copy's missing parent directories.
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = fs::create_dir_all(parent) {
                return Ok(Outcome::Failed(format!(
                    "Can't create directory '{}': {e}",
                    parent.display()
                )));
            }
        }
        let mut job = Job {
            seq: 0,
            src: src.to_vec(),
            dest: dest.to_path_buf(),
            st,
            restat: false,
            attempt: 1,
        };
        if let Some(pool) = self.pool.clone() {
            {
                let mut p = pool.borrow_mut();
                job.seq = p.journal.len();
                p.journal.push(Slot::Pending);
                p.queue.push_back(job);
                p.notify();
            }
            self.grow_pool();
            return Ok(Outcome::Queued);
        }
        let fo = FetchOpts {
            verify: opts.verify,
            preserve: opts.preserve,
        };
        let out = self.out.clone();
        match fetch(self, &mut job, fo, &out).await? {
            Fetched::Done(Outcome::Copied) => {
                self.copied_bytes(&job);
                Ok(Outcome::Copied)
            }
            Fetched::Done(o) => Ok(o),
            // The main connection reconnects or stops the run; it never hands a file back.
            Fetched::Requeue => Ok(Outcome::Failed(format!(
                "Connection error when copying '{}:{src_text}'",
                self.server_text()
            ))),
        }
    }

    fn copied_bytes(&mut self, job: &Job) {
        if let Some(dir) = job.dest.parent() {
            self.dirs_to_sync.insert(dir.to_path_buf());
        }
        self.summary.bytes += job.st.size;
    }

    /// A recursive copy with transfer connections: the walk runs on the
    /// main connection and hands every file that needs a GET to the pool;
    /// workers on extra connections (opened as files pile up) fetch them
    /// meanwhile, and once the walk is done the main connection fetches
    /// too until every file is done. Outcomes are recorded in walk order.
    async fn copy_tree_pooled(
        &mut self,
        src: &[u8],
        dest: &Path,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        let pool = Rc::new(RefCell::new(Pool {
            fetched: vec![0],
            ..Pool::default()
        }));
        self.pool = Some(pool.clone());
        self.fetch_opts = FetchOpts {
            verify: opts.verify,
            preserve: opts.preserve,
        };
        let mut r = self.copy_tree(src, dest, opts).await;
        {
            let mut p = pool.borrow_mut();
            p.walk_done = true;
            p.notify();
        }
        if r.is_ok() {
            self.grow_pool();
            r = self.drain().await;
        }
        {
            let mut p = pool.borrow_mut();
            p.stop = true;
            p.notify();
        }
        for t in std::mem::take(&mut self.workers) {
            t.await;
        }
        self.pool = None;
        let mut p = std::mem::take(&mut *pool.borrow_mut());
        for slot in p.journal.drain(..) {
            match slot {
                Slot::Copied(shown) => self.summary.copied.push(shown),
                Slot::Failed(shown, msg) => self.summary.failed.push((shown, msg)),
                // Not reached: the run stopped (lost the server) first.
                Slot::Pending => {}
            }
        }
        self.summary.bytes += p.bytes;
        self.dirs_to_sync.append(&mut p.dirs);
        let total: usize = p.fetched.iter().sum();
        if total > 0 || p.started > 0 {
            let used = p.fetched.iter().filter(|&&n| n > 0).count();
            let per = p
                .fetched
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join("+");
            self.out.log(
                Level::Verbose,
                &format!(
                    "Fetched {total} file(s) over {used} transfer connection(s) ({per}; {} parallel connection(s) opened, --parallel {})",
                    p.connected, self.parallel
                ),
            );
        }
        r
    }

    /// Open one more transfer connection when enough files wait for it:
    /// one per [`FILES_PER_CONNECTION`] queued files, at most
    /// `parallel - 1`, one at a time until the server has accepted one, and
    /// none after a refusal.
    fn grow_pool(&mut self) {
        let Some(pool) = self.pool.clone() else {
            return;
        };
        let Some(i) = self.chosen else { return };
        if self.classic.is_some() || self.parallel < 2 {
            return;
        }
        let id = {
            let mut p = pool.borrow_mut();
            let want = (p.queue.len() / FILES_PER_CONNECTION).min(self.parallel - 1);
            if p.refused || p.stop || p.started >= want || (p.connecting > 0 && p.connected == 0) {
                return;
            }
            p.started += 1;
            p.connecting += 1;
            p.fetched.push(0);
            p.started
        };
        let mut o = self.base.clone();
        o.host = self.servers[i].host.clone();
        o.port = self.servers[i].port;
        // The main connection trusted (and saved) the server's key: an extra
        // connection must present that same key, never trust a new one.
        o.trust_new = false;
        // A transfer connection's troubles (a refusal, a lost connection)
        // never change the run's outcome: they are verbose-level only.
        let log = o.log.clone();
        o.log = Arc::new(move |l, m| log(l.max(Level::Verbose), m));
        let task = worker(
            pool,
            id,
            o,
            self.servers[i].text.clone(),
            self.summary.server_key.clone(),
            self.out.clone(),
            self.fetch_opts,
        );
        self.workers.push(self.ex.spawn(task));
    }

    /// After the walk: the main connection fetches queued files too, until
    /// none is left and no worker holds one (a worker that loses its
    /// connection hands its file back).
    async fn drain(&mut self) -> Result<(), RunError> {
        let pool = self.pool.clone().expect("pooled copy");
        let out = self.out.clone();
        let fo = self.fetch_opts;
        loop {
            let next = {
                let mut p = pool.borrow_mut();
                match p.queue.pop_front() {
                    Some(j) => Ok(j),
                    None if p.busy == 0 => return Ok(()),
                    None => Err(p.gen),
                }
            };
            match next {
                Ok(mut job) => {
                    let o = match fetch(self, &mut job, fo, &out).await? {
                        Fetched::Done(o) => o,
                        Fetched::Requeue => Outcome::Failed(format!(
                            "Connection error when copying '{}:{}'",
                            self.server_text(),
                            String::from_utf8_lossy(&job.src)
                        )),
                    };
                    pool.borrow_mut().complete(&out, job, o, 0);
                }
                Err(seen) => changed(&pool, seen).await,
            }
        }
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

/// What the transfer of one file needs from the copy's options.
#[derive(Debug, Clone, Copy, Default)]
struct FetchOpts {
    verify: bool,
    preserve: bool,
}

/// A file the walk decided to fetch.
struct Job {
    /// Its place in the pool's journal (walk order).
    seq: usize,
    src: Vec<u8>,
    dest: PathBuf,
    st: StatReply,
    /// `st` is stale (the source changed and the connection that saw it
    /// went away): STAT again before the GET.
    restat: bool,
    /// The next attempt (1..=MAX_ATTEMPTS), kept when a file is handed back.
    attempt: usize,
}

/// A walk-ordered summary entry of a pooled copy.
enum Slot {
    Copied(String),
    Failed(String, String),
    Pending,
}

/// The files waiting for a GET and what the transfers did, shared (on
/// one thread) by the walk, the main connection and the workers. Never
/// borrowed across an await.
#[derive(Default)]
struct Pool {
    queue: VecDeque<Job>,
    journal: Vec<Slot>,
    /// Files a worker is fetching now.
    busy: usize,
    /// Extra connections started, still connecting, connected.
    started: usize,
    connecting: usize,
    connected: usize,
    /// An extra connection was refused or lost before fetching anything:
    /// no more are opened in this run.
    refused: bool,
    walk_done: bool,
    /// Stop taking files (the run ends).
    stop: bool,
    bytes: u64,
    dirs: BTreeSet<PathBuf>,
    /// Files fetched per connection (0 = the main one).
    fetched: Vec<usize>,
    gen: u64,
    waiters: Vec<Waker>,
}

impl Pool {
    fn notify(&mut self) {
        self.gen += 1;
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    /// Record a fetched file's outcome in its walk-order slot.
    fn complete(&mut self, out: &Output, job: Job, o: Outcome, conn: usize) {
        let shown = job.dest.display().to_string();
        let slot = match o {
            Outcome::Copied => {
                self.bytes += job.st.size;
                if let Some(dir) = job.dest.parent() {
                    self.dirs.insert(dir.to_path_buf());
                }
                self.fetched[conn] += 1;
                Slot::Copied(shown)
            }
            Outcome::Failed(msg) => {
                out.log(Level::Error, &msg);
                Slot::Failed(shown, msg)
            }
            Outcome::Kept | Outcome::Queued => Slot::Pending,
        };
        self.journal[job.seq] = slot;
        self.notify();
    }
}

/// Wait until the pool changed after generation `seen`.
async fn changed(pool: &Rc<RefCell<Pool>>, seen: u64) {
    smol::future::poll_fn(|cx| {
        let mut p = pool.borrow_mut();
        if p.gen != seen {
            Poll::Ready(())
        } else {
            p.waiters.push(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

/// A connection one file's transfer runs on: the run's main connection
/// (which reconnects, or stops the run) or a transfer worker's (which,
/// once gone, hands the file back to the pool).
trait Link {
    /// Whether a connection is ready for the next request, reconnecting if
    /// this link may; `false`: hand the file back.
    async fn ready(&mut self, what: &str) -> Result<bool, RunError>;
    /// The connection [`Link::ready`] made sure of.
    fn conn(&mut self) -> &mut Conn;
    fn usable(&self) -> bool;
    /// The connection failed: drop it.
    fn lost(&mut self);
    /// A fresh STAT of `src`; `None`: no connection left, hand the file back.
    async fn stat_again(
        &mut self,
        src: &[u8],
    ) -> Result<Option<Result<StatReply, String>>, RunError>;
    /// Update (or forget) the STAT cache entry of `src`.
    fn remember(&mut self, src: &[u8], st: Option<&StatReply>);
    fn server(&self) -> String;
    /// How a connection error during a transfer is logged.
    fn conn_error_level(&self) -> Level;
    /// Whether a file whose transfer failed with the connection goes back
    /// to the pool (a worker) rather than being retried here (the main
    /// connection, which reconnects).
    fn hands_back(&self) -> bool;
}

impl Link for Run {
    async fn ready(&mut self, what: &str) -> Result<bool, RunError> {
        self.ensure(what).await.map(|()| true)
    }
    fn conn(&mut self) -> &mut Conn {
        self.client.as_mut().expect("ensured")
    }
    fn usable(&self) -> bool {
        self.client.as_ref().is_some_and(|c| c.is_usable())
    }
    fn lost(&mut self) {
        self.drop_client();
    }
    async fn stat_again(
        &mut self,
        src: &[u8],
    ) -> Result<Option<Result<StatReply, String>>, RunError> {
        self.stat_fresh(src).await.map(Some)
    }
    fn remember(&mut self, src: &[u8], st: Option<&StatReply>) {
        match st {
            Some(st) => {
                self.stat_cache.insert(src.to_vec(), st.clone());
            }
            None => {
                self.stat_cache.remove(src);
            }
        }
    }
    fn server(&self) -> String {
        self.server_text()
    }
    fn conn_error_level(&self) -> Level {
        Level::Error
    }
    fn hands_back(&self) -> bool {
        false
    }
}

/// A transfer worker's connection.
struct Worker {
    id: usize,
    conn: Option<Conn>,
    server: String,
    out: Output,
}

impl Link for Worker {
    async fn ready(&mut self, _what: &str) -> Result<bool, RunError> {
        Ok(self.usable())
    }
    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("ready")
    }
    fn usable(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.is_usable())
    }
    fn lost(&mut self) {
        self.conn = None;
    }
    async fn stat_again(
        &mut self,
        src: &[u8],
    ) -> Result<Option<Result<StatReply, String>>, RunError> {
        if !self.usable() {
            self.conn = None;
            return Ok(None);
        }
        match self.conn().stat(src).await {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.out.log(
                    Level::Verbose,
                    &format!(
                        "Connection error on transfer connection {} when checking '{}': {e}",
                        self.id,
                        String::from_utf8_lossy(src)
                    ),
                );
                self.conn = None;
                Ok(None)
            }
        }
    }
    fn remember(&mut self, _src: &[u8], _st: Option<&StatReply>) {}
    fn server(&self) -> String {
        self.server.clone()
    }
    fn conn_error_level(&self) -> Level {
        Level::Verbose
    }
    fn hands_back(&self) -> bool {
        true
    }
}

/// One extra transfer connection: connect, then fetch queued files until
/// the walk is done and none is left (or the run stops). A connection
/// that fails hands its file back and ends this worker; one refused (or
/// lost before fetching anything) stops the pool from opening more.
async fn worker(
    pool: Rc<RefCell<Pool>>,
    id: usize,
    opts: ConnectOptions,
    server: String,
    key: Option<String>,
    out: Output,
    fo: FetchOpts,
) {
    let refused = |p: &mut Pool, why: &str| {
        p.refused = true;
        out.log(
            Level::Verbose,
            &format!("Parallel transfer connection to '{server}' refused ({why}): the server allows one connection per client address unless its allowallconnects lists this host; the remaining files are fetched on the open connection(s)"),
        );
    };
    // A connection still being made when the run ends is abandoned (it
    // holds no file), so a slow or silent server never delays the end.
    let stopped = async {
        loop {
            let seen = {
                let p = pool.borrow();
                if p.stop {
                    break;
                }
                p.gen
            };
            changed(&pool, seen).await;
        }
        None
    };
    let connected = smol::future::or(async { Some(Conn::connect(opts, None).await) }, stopped);
    let Some(connected) = connected.await else {
        pool.borrow_mut().connecting -= 1;
        return;
    };
    let conn = match connected {
        Ok(c) if c.server_key_id().map(str::to_string) == key => Some(c),
        Ok(c) => {
            c.close().await;
            None
        }
        Err(e) => {
            let mut p = pool.borrow_mut();
            p.connecting -= 1;
            refused(&mut p, &e.to_string());
            p.notify();
            return;
        }
    };
    {
        let mut p = pool.borrow_mut();
        p.connecting -= 1;
        if conn.is_none() {
            refused(&mut p, "the server presented another key");
            p.notify();
            return;
        }
        p.connected += 1;
        p.notify();
    }
    out.log(
        Level::Verbose,
        &format!("Opened parallel transfer connection {id} to '{server}'"),
    );
    let mut w = Worker {
        id,
        conn,
        server: server.clone(),
        out: out.clone(),
    };
    let mut fetched = 0usize;
    loop {
        let job = loop {
            let seen = {
                let mut p = pool.borrow_mut();
                if p.stop {
                    break None;
                }
                if let Some(j) = p.queue.pop_front() {
                    p.busy += 1;
                    break Some(j);
                }
                if p.walk_done {
                    break None;
                }
                p.gen
            };
            changed(&pool, seen).await;
        };
        let Some(mut job) = job else { break };
        let r = fetch(&mut w, &mut job, fo, &out).await;
        let mut p = pool.borrow_mut();
        p.busy -= 1;
        match r {
            Ok(Fetched::Done(o)) => {
                fetched += 1;
                p.complete(&out, job, o, id);
            }
            Ok(Fetched::Requeue) | Err(_) => {
                out.log(
                    Level::Verbose,
                    &format!(
                        "Transfer connection {id} to '{server}' lost; '{}' goes back to the queue",
                        String::from_utf8_lossy(&job.src)
                    ),
                );
                p.queue.push_front(job);
                p.notify();
            }
        }
        if !w.usable() {
            if fetched == 0 && !p.refused {
                refused(&mut p, "closed before its first transfer");
            }
            break;
        }
    }
    if let Some(c) = w.conn.take() {
        c.close().await;
    }
}

enum Fetched {
    Done(Outcome),
    /// The link's connection is gone: another connection takes the file.
    Requeue,
}

/// After a transfer the source changed under: STAT it again on `link` for
/// the next attempt. `Some` ends the file here (its connection is gone, so
/// another one takes it, or the source can no longer be STATed); `None`:
/// try again with the new STAT in `job`.
async fn restat<L: Link>(
    link: &mut L,
    job: &mut Job,
    src: &[u8],
    src_text: &str,
    server: &str,
) -> Result<Option<Fetched>, RunError> {
    Ok(match link.stat_again(src).await? {
        None => {
            job.restat = true;
            Some(Fetched::Requeue)
        }
        Some(Ok(st2)) => {
            job.st = st2;
            None
        }
        Some(Err(t)) => Some(Fetched::Done(Outcome::Failed(format!(
            "Can't stat file '{src_text}' on '{server}': {t}"
        )))),
    })
}

/// The safe per-file sequence, on any connection: `<dest>.cfnew` (O_EXCL,
/// 0600), GET exactly `st.size` bytes, fsync (off the executor thread,
/// while the source is re-STATed), compare, optional verify, rename; a
/// changed source or a lost connection is fetched again, up to
/// [`MAX_ATTEMPTS`] in all.
async fn fetch<L: Link>(
    link: &mut L,
    job: &mut Job,
    fo: FetchOpts,
    out: &Output,
) -> Result<Fetched, RunError> {
    let src = job.src.clone();
    let src = &src[..];
    let dest = job.dest.clone();
    let dest = &dest;
    let src_text = String::from_utf8_lossy(src).into_owned();
    let tmp = cfnew(dest);
    if job.restat {
        match link.stat_again(src).await? {
            None => return Ok(Fetched::Requeue),
            Some(Ok(st2)) => {
                job.st = st2;
                job.restat = false;
            }
            Some(Err(t)) => {
                return Ok(Fetched::Done(Outcome::Failed(format!(
                    "Can't stat file '{src_text}' on '{}': {t}",
                    link.server()
                ))))
            }
        }
    }
    let failed = |m: String| Ok(Fetched::Done(Outcome::Failed(m)));
    while job.attempt <= MAX_ATTEMPTS {
        let attempt = job.attempt;
        if !link.ready(&src_text).await? {
            return Ok(Fetched::Requeue);
        }
        job.attempt += 1;
        let st = job.st.clone();
        let _ = fs::remove_file(&tmp);
        let file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => f,
            Err(e) => {
                return failed(format!(
                    "Can't create temporary file '{}': {e}",
                    tmp.display()
                ))
            }
        };
        let mut w = BufWriter::with_capacity(64 * 1024, file);
        let mut done = 0u64;
        let total = st.size;
        let res = if st.size == 0 {
            Ok(Ok(()))
        } else {
            let name = src_text.clone();
            link.conn()
                .get(src, st.size, |b| {
                    w.write_all(b)?;
                    done += b.len() as u64;
                    out.progress(&name, done, total);
                    Ok(())
                })
                .await
        };
        let server = link.server();
        match res {
            Err(NetError::Io(e)) if link.usable() => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                return failed(format!("Failed to write '{}': {e}", tmp.display()));
            }
            Err(e) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                out.log(
                    link.conn_error_level(),
                    &format!("Connection error when copying '{server}:{src_text}': {e}"),
                );
                link.lost();
                if link.hands_back() {
                    // Not the source's fault: another connection tries it
                    // without spending an attempt.
                    job.attempt = attempt;
                    return Ok(Fetched::Requeue);
                }
                continue;
            }
            Ok(Err(GetFailure::Refused(_))) | Ok(Err(GetFailure::Denied)) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                return failed(format!("Network access to '{server}:{src_text}' denied"));
            }
            Ok(Err(GetFailure::Changed)) => {
                drop(w);
                let _ = fs::remove_file(&tmp);
                out.log(
                    Level::Notice,
                    &format!(
                        "Source '{server}:{src_text}' changed while copying (attempt {attempt})"
                    ),
                );
                link.lost();
                link.remember(src, None);
                if let Some(done) = restat(link, job, src, &src_text, &server).await? {
                    return Ok(done);
                }
                continue;
            }
            Ok(Ok(())) => {}
        }
        let file = match w.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return failed(format!(
                    "Failed to write '{}': {}",
                    tmp.display(),
                    e.error()
                ));
            }
        };
        // fsync on a blocking thread while the re-STAT below makes its
        // round trip: other transfers (and this STAT) go on meanwhile.
        let sync = smol::unblock(move || {
            file.sync_all()?;
            Ok::<u64, std::io::Error>(file.metadata().map(|m| m.len()).unwrap_or(u64::MAX))
        });
        // Did the source change between the STAT and the end of the GET?
        // (A file that grew desynchronises the stream; this STAT then
        // fails to parse and the connection is dropped.)
        let (synced, again) = smol::future::zip(sync, link.conn().stat(src)).await;
        let len = match synced {
            Ok(len) => len,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                if again.is_err() {
                    link.lost();
                }
                return failed(format!("Failed to fsync '{}': {e}", tmp.display()));
            }
        };
        if len != st.size {
            let _ = fs::remove_file(&tmp);
            if again.is_err() {
                link.lost();
            }
            return failed(format!(
                "New file '{}' seems to have been corrupted in transit, destination size ({len}) differs from the source size ({}), aborting.",
                dest.display(),
                st.size
            ));
        }
        let again = match again {
            Ok(r) => r,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                // (On a transfer worker this is usually its connection
                // going away: verbose, the file is fetched elsewhere.)
                out.log(
                    if link.hands_back() {
                        Level::Verbose
                    } else {
                        Level::Notice
                    },
                    &format!(
                        "Source '{server}:{src_text}' changed while copying ({e}), fetching again"
                    ),
                );
                link.lost();
                link.remember(src, None);
                if link.hands_back() {
                    // A desynchronised stream or a lost connection: the
                    // next connection STATs again, without spending an attempt.
                    job.attempt = attempt;
                    job.restat = true;
                    return Ok(Fetched::Requeue);
                }
                if let Some(done) = restat(link, job, src, &src_text, &server).await? {
                    return Ok(done);
                }
                continue;
            }
        };
        match again {
            Ok(st2) if st2.size != st.size || st2.mtime != st.mtime => {
                let _ = fs::remove_file(&tmp);
                out.log(Level::Notice, &format!("Source '{server}:{src_text}' changed while copying (attempt {attempt}), fetching again"));
                link.remember(src, Some(&st2));
                job.st = st2;
                continue;
            }
            Ok(_) => {}
            Err(t) => {
                let _ = fs::remove_file(&tmp);
                return failed(format!(
                    "Source '{server}:{src_text}' disappeared while copying: {t}"
                ));
            }
        }
        if fo.verify {
            let digest = match md5_file(&tmp) {
                Ok(d) => d,
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!("Can't read back '{}': {e}", tmp.display()));
                }
            };
            match link.conn().md5(src, digest).await {
                Ok(Ok(false)) => out.log(
                    Level::Verbose,
                    &format!(
                        "Verified '{}' against '{server}:{src_text}'",
                        dest.display()
                    ),
                ),
                Ok(Ok(true)) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!(
                        "Verification of '{}' against '{server}:{src_text}' failed: digests differ",
                        dest.display()
                    ));
                }
                Ok(Err(t)) => {
                    let _ = fs::remove_file(&tmp);
                    return failed(format!(
                        "Verification of '{}' refused by the server: {t}",
                        dest.display()
                    ));
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    link.lost();
                    return failed(format!(
                        "Connection error when verifying '{}': {e}",
                        dest.display()
                    ));
                }
            }
        }
        if fo.preserve {
            let _ = fs::set_permissions(&tmp, fs::Permissions::from_mode(st.mode & 0o7777));
            if rustix::process::geteuid().is_root() {
                let _ = std::os::unix::fs::chown(&tmp, Some(st.uid), Some(st.gid));
            }
        }
        if let Err(e) = fs::rename(&tmp, dest) {
            let _ = fs::remove_file(&tmp);
            return failed(format!(
                "Can't rename '{}' to '{}': {e}",
                tmp.display(),
                dest.display()
            ));
        }
        out.log(
            Level::Info,
            &format!(
                "Updated file '{}' from '{server}:{src_text}'",
                dest.display()
            ),
        );
        return Ok(Fetched::Done(Outcome::Copied));
    }
    let _ = fs::remove_file(&tmp);
    failed(format!(
        "Source '{}:{src_text}' kept changing while copying, giving up after {MAX_ATTEMPTS} attempts",
        link.server()
    ))
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
        run.set_parallel(usize::from(a.par.parallel));
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
