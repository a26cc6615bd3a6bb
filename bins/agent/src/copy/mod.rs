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

//!
//! The decisions (compare modes, type checks, purge, temporaries, transfer
//! checks) are [`rcf_core::client::copy_plan`]'s; this module asks the
//! filesystem and the server and follows them. The per-file transfer is in
//! `fetch`, the parallel transfer connections in `pool`, the summary in
//! `summary`, and `rcf-agent copy`'s command line in `cli`.

mod cli;
mod fetch;
mod link;
mod pool;
mod summary;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rcf_core::client::copy_plan::{self, FileVerdict, LocalFile, LocalKind, SourceAction};
use rcf_core::client::links::{self, LinkType, PatternVerdict};
use rcf_core::client::listing;
use rcf_core::client::select::{DirFilter, FileSelect, NamePatterns};
use rcf_core::client::Level;
use rcf_core::reply::{FileType, StatReply};
use rcf_fs::serve::ContentKey;
use rcf_smol::{ClassicOptions, Conn, ConnectOptions, Error as NetError};

use crate::output::Output;
use crate::ServerAddr;

pub use cli::run;
pub use copy_plan::Compare;
pub use fetch::md5_file;
use fetch::{fetch, temp_path, FetchOpts, Fetched};
use pool::{Job, Pool, Slot};
pub use summary::{RunError, Summary};

/// How many times a file whose source changed during the transfer is fetched again.
const MAX_ATTEMPTS: usize = 3;

/// `--parallel`'s default: the main connection plus up to 3 transfer connections.
pub const DEFAULT_PARALLEL: u16 = 4;

/// One extra transfer connection is opened per this many files waiting for
/// a GET (up to `--parallel` - 1 extras): a run that fetches a handful of
/// files never opens one.
const FILES_PER_CONNECTION: usize = 8;

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
    /// `force_update`.
    pub force_update: bool,
    /// `stealth`.
    pub stealth: bool,
    /// `collapse_destination_dir`: every file of the tree goes into the
    /// destination directory itself, no subdirectories are made.
    pub collapse: bool,
    /// Entry names never copied nor purged (bootstrap's `.git`, `.svn`…).
    pub exclude: Vec<Vec<u8>>,
    /// `depth_search`'s `exclude_dirs`/`include_dirs`: directories not
    /// entered (nor created, nor purged).
    pub dirs: DirFilter,
    /// `file_select`'s `leaf_name`/`path_name`/`file_result`: files not
    /// selected are neither copied nor purged.
    pub select: Option<FileSelect>,
    /// `depth_search`'s `xdev`: entries on another device than the source
    /// root are neither copied nor entered.
    pub xdev: bool,
    /// `link_type`: how a dangling source link (or a `linkcopy_patterns`
    /// file) is made at the destination.
    pub link_type: LinkType,
    /// `linkcopy_patterns`: files linked to instead of copied.
    pub linkcopy: Option<NamePatterns>,
    /// `copylink_patterns`.
    pub copylink: Option<NamePatterns>,
    /// `check_root`: the destination directory gets the source
    /// directory's attributes too (with `preserve`).
    pub check_root: bool,
    /// `copy_backup`.
    pub backup: copy_plan::Backup,
    /// `default_repository`.
    pub repository: Option<PathBuf>,
}

impl Default for CopyOpts {
    /// A `copy_from` with only `source` and `servers` set: cf-agent's
    /// defaults (ctime compare, `copy_backup => "true"`, no recursion).
    fn default() -> CopyOpts {
        CopyOpts {
            compare: Compare::Ctime,
            verify: false,
            recurse: false,
            depth: None,
            purge: false,
            preserve: false,
            missing_ok: false,
            type_check: false,
            force_update: false,
            stealth: false,
            collapse: false,
            exclude: Vec::new(),
            dirs: DirFilter::default(),
            select: None,
            xdev: false,
            link_type: LinkType::Symlink,
            linkcopy: None,
            copylink: None,
            check_root: false,
            backup: copy_plan::Backup::Plain,
            repository: None,
        }
    }
}

impl CopyOpts {
    /// What the transfers of this copy need.
    fn fetch_opts(&self) -> FetchOpts {
        FetchOpts {
            verify: self.verify,
            preserve: self.preserve,
            stealth: self.stealth,
            backup: copy_plan::effective_backup(self.backup, self.recurse && self.purge),
            repository: self.repository.as_deref().map(std::rc::Rc::from),
            start: START.with(|s| *s),
        }
    }
}

thread_local! {
    /// The agent's start time (cf-agent's `CFSTARTTIME`).
    static START: i64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
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
    /// During a recursive copy: the destination of the first name of each
    /// source inode with more than one link (cf-agent's `inode_cache`).
    inodes: HashMap<i64, PathBuf>,
    /// Destinations to make hard links to their inode's first copy once
    /// the transfers are done: (destination, first copy).
    hard_links: Vec<(PathBuf, PathBuf)>,
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
            inodes: HashMap::new(),
            hard_links: Vec::new(),
            out,
            summary: Summary::default(),
            dirs_to_sync: Default::default(),
            parallel: 1,
            pool: None,
            ex: Rc::new(smol::LocalExecutor::new()),
            workers: Vec::new(),
            fetch_opts: FetchOpts {
                verify: false,
                preserve: false,
                stealth: false,
                backup: copy_plan::Backup::No,
                repository: None,
                start: 0,
            },
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
            FileType::Dir if opts.recurse => {
                self.inodes.clear();
                let r = if self.parallel > 1 && self.classic.is_none() {
                    let ex = self.ex.clone();
                    ex.run(self.copy_tree_pooled(&src, dest, &st, opts)).await
                } else {
                    self.copy_tree(&src, dest, &st, opts).await
                };
                self.finish_hard_links();
                r
            }
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
                let _ = fs::remove_file(temp_path(dest));
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
        let outcome = match self.link_instead(src, dest, &st, opts) {
            Some(o) => o,
            None => match copy_plan::source_action(st.file_type, false, opts.depth, 1) {
                SourceAction::CopyFile => self.copy_file(src, dest, st, opts).await?,
                SourceAction::DanglingLink => self.dangling_link(src, dest, &st, opts),
                SourceAction::Descend | SourceAction::DirNotCopied | SourceAction::Special => {
                    self.out.log(
                        Level::Verbose,
                        &format!(
                            "Source '{}' is a special file ({:?}), not copied",
                            String::from_utf8_lossy(src),
                            st.file_type
                        ),
                    );
                    return Ok(());
                }
            },
        };
        match outcome {
            Outcome::Copied => self.record_copied(shown),
            Outcome::Kept => self.summary.kept += 1,
            Outcome::Failed(msg) => {
                self.out.log(Level::Error, &msg);
                self.record_failed(shown, msg);
            }
            Outcome::Queued => {}
        }
        Ok(())
    }

    /// `linkcopy_patterns` (and the loop with `copylink_patterns`): the
    /// outcome when the entry is linked or skipped instead of copied,
    /// `None` when it is copied as usual.
    fn link_instead(
        &mut self,
        src: &[u8],
        dest: &Path,
        st: &StatReply,
        opts: &CopyOpts,
    ) -> Option<Outcome> {
        if st.file_type == FileType::Dir {
            return None;
        }
        let leaf = src.rsplit(|&c| c == b'/').next().unwrap_or(src);
        match links::pattern_verdict(leaf, opts.linkcopy.as_ref(), opts.copylink.as_ref()) {
            PatternVerdict::Copy => None,
            PatternVerdict::Loop => {
                self.out.log(
                    Level::Info,
                    &format!(
                        "File {} matches both copylink_patterns and linkcopy_patterns - promise loop (skipping)!",
                        String::from_utf8_lossy(src)
                    ),
                );
                Some(Outcome::Kept)
            }
            PatternVerdict::Link => {
                self.out.log(
                    Level::Verbose,
                    &format!(
                        "Copy item '{}' marked for linking",
                        String::from_utf8_lossy(src)
                    ),
                );
                let target = (st.file_type == FileType::Link).then_some(st.link_target.as_slice());
                Some(link::link_copy(&self.out, src, target, dest, opts))
            }
        }
    }

    /// A source that is a dangling link on the server: made again at the
    /// destination as `link_type` says (cf-agent "always checks links"),
    /// unless `compare => "exists"` finds something there already.
    fn dangling_link(
        &mut self,
        src: &[u8],
        dest: &Path,
        st: &StatReply,
        opts: &CopyOpts,
    ) -> Outcome {
        if let Ok(m) = fs::symlink_metadata(dest) {
            if opts.compare == Compare::Exists {
                self.out.log(
                    Level::Verbose,
                    "Existence only is promised, no copying required",
                );
                return Outcome::Kept;
            }
            if opts.type_check && !m.file_type().is_symlink() {
                return Outcome::Failed(format!(
                    "Promised file copy {} exists but type mismatch with source '{}'",
                    dest.display(),
                    String::from_utf8_lossy(src)
                ));
            }
        }
        link::link_copy(&self.out, src, Some(&st.link_target), dest, opts)
    }

    /// Copy the directory `src` (STATed as `root`: its device for `xdev`,
    /// its mode for `check_root`) into `dest`.
    async fn copy_tree(
        &mut self,
        src: &[u8],
        dest: &Path,
        root: &StatReply,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        let root_dev = root.dev;
        // (source dir, destination, level, the source dir's STAT when its
        // attributes go to the destination dir)
        type Pending = (Vec<u8>, PathBuf, u32, Option<StatReply>);
        let mut stack: Vec<Pending> = vec![(src.to_vec(), dest.to_path_buf(), 1, None)];
        while let Some((dir, local, level, attrs)) = stack.pop() {
            let shown_dir = String::from_utf8_lossy(&dir).into_owned();
            if let Err(msg) = make_dir(&local, opts.type_check, &shown_dir) {
                self.out.log(Level::Error, &msg);
                self.record_failed(local.display().to_string(), msg);
                continue;
            }
            if let Some(st) = attrs {
                self.dir_attributes(&local, &st, opts);
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
            // Files a `file_select` leaves out are never hashed ahead.
            let selected: Vec<Vec<u8>> = match &opts.select {
                Some(sel) => names
                    .iter()
                    .filter(|n| sel.selects(n, &copy_plan::join_remote(&dir, n)))
                    .cloned()
                    .collect(),
                None => Vec::new(),
            };
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
                .map(|n| copy_plan::join_remote(&dir, n))
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
            if opts.compare.uses_digest() {
                let candidates = if opts.select.is_some() {
                    &selected
                } else {
                    &names
                };
                self.prefetch_md5(&dir, &local, candidates, opts.compare)
                    .await?;
            }
            let mut subdirs = Vec::new();
            for name in names {
                let child_src = copy_plan::join_remote(&dir, &name);
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
                if copy_plan::skips_device(opts.xdev, st.dev, root_dev) {
                    self.skipping("Skipping '{}' on different device", &child_src);
                    continue;
                }
                if st.file_type == FileType::Dir {
                    if !opts.dirs.enters(&child_src, &name) {
                        self.skipping("Skipping matched excluded directory '{}'", &child_src);
                        continue;
                    }
                    if copy_plan::source_action(FileType::Dir, true, opts.depth, level)
                        == SourceAction::Descend
                    {
                        // collapse_destination_dir: a subdirectory's files
                        // land in this directory's destination.
                        let (to, attrs) = if opts.collapse {
                            (local.clone(), None)
                        } else {
                            (child_dst, Some(st))
                        };
                        subdirs.push((child_src, to, level + 1, attrs));
                    }
                } else if opts
                    .select
                    .as_ref()
                    .is_some_and(|sel| !sel.selects(&name, &child_src))
                {
                    self.skipping("Skipping non-selected file '{}'", &child_src);
                } else if !self.hard_link_instead(&st, &child_dst) {
                    self.entry(&child_src, &child_dst, st, opts).await?;
                }
            }
            // Depth first, in name order.
            subdirs.reverse();
            stack.extend(subdirs);
        }
        if opts.check_root {
            self.dir_attributes(dest, root, opts);
        }
        Ok(())
    }

    /// Hard-link structure (`RegisterAHardLink`): a regular source file
    /// with several links whose inode was met before under another name is
    /// not copied; whatever is at its destination is removed, and it is made
    /// a hard link to the first name's copy when the transfers are done.
    /// Returns whether it was taken over so.
    fn hard_link_instead(&mut self, st: &StatReply, dest: &Path) -> bool {
        if !copy_plan::preserves_hard_link(st.file_type, st.nlink) {
            return false;
        }
        let first = match self.inodes.get(&st.ino) {
            None => {
                self.inodes.insert(st.ino, dest.to_path_buf());
                return false;
            }
            Some(first) if first == dest => return false,
            Some(first) => first.clone(),
        };
        if fs::symlink_metadata(dest).is_ok_and(|m| !m.is_dir()) {
            match fs::remove_file(dest) {
                Ok(()) => self.out.log(
                    Level::Info,
                    &format!(
                        "Removed old hard link '{}' to preserve structure",
                        dest.display()
                    ),
                ),
                Err(e) => {
                    let msg = format!("Couldn't remove '{}': {e}", dest.display());
                    self.out.log(Level::Error, &msg);
                    self.record_failed(dest.display().to_string(), msg);
                    return true;
                }
            }
        }
        self.hard_links.push((dest.to_path_buf(), first));
        true
    }

    /// Make the hard links [`Run::hard_link_instead`] put off.
    fn finish_hard_links(&mut self) {
        for (dest, first) in std::mem::take(&mut self.hard_links) {
            let shown = dest.display().to_string();
            match fs::hard_link(&first, &dest) {
                Ok(()) => {
                    self.out.log(
                        Level::Info,
                        &format!("Hard linked file '{shown}' -> '{}'", first.display()),
                    );
                    self.summary.copied.push(shown);
                }
                Err(e) => {
                    let msg = format!(
                        "Couldn't hard link '{}' to '{shown}'. (link: {e})",
                        first.display()
                    );
                    self.out.log(Level::Error, &msg);
                    self.summary.failed.push((shown, msg));
                }
            }
        }
    }

    /// A verbose line about a source entry the walk leaves out; `what`
    /// holds one `{}` for the path.
    fn skipping(&self, what: &str, path: &[u8]) {
        self.out.log(
            Level::Verbose,
            &what.replacen("{}", &String::from_utf8_lossy(path), 1),
        );
    }

    /// VerifyCopiedFileAttributes for a directory of the copy: with
    /// `preserve`, the source directory's permission bits (and owner and
    /// group, as root); without it (and no `perms`, which rcf-agent does
    /// not take) nothing changes.
    fn dir_attributes(&mut self, local: &Path, st: &StatReply, opts: &CopyOpts) {
        let Some(mode) = copy_plan::copied_dir_mode(opts.preserve, st) else {
            return;
        };
        if let Err(e) = fs::set_permissions(local, fs::Permissions::from_mode(mode)) {
            self.out.log(
                Level::Error,
                &format!("Can't set mode {mode:o} on '{}': {e}", local.display()),
            );
        }
        if rustix::process::geteuid().is_root() {
            let _ = std::os::unix::fs::chown(local, Some(st.uid), Some(st.gid));
        }
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
            let src = copy_plan::join_remote(dir, name);
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
            // Hash exactly the files the plan will ask about.
            if copy_plan::plan_file(Some(&local_file(&m)), st, compare, false)
                != FileVerdict::AskDigest
            {
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
            if !copy_plan::is_stale_temp(bytes, &|n| listed.contains(n)) {
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
        if !copy_plan::purge_allowed(local.as_os_str().as_encoded_bytes()) {
            self.out.log(
                Level::Error,
                &format!("Purge of '{}' denied - too dangerous!", local.display()),
            );
            return;
        }
        let Ok(rd) = fs::read_dir(local) else { return };
        for e in rd.flatten() {
            let name = e.file_name();
            if !copy_plan::purges(name.as_encoded_bytes(), &|n| listed.contains(n)) {
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

    async fn digest_differs(
        &mut self,
        src: &[u8],
        m: &fs::Metadata,
        dest: &Path,
    ) -> Result<bool, RunError> {
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
        let differs = copy_plan::md5_reply_differs(&answer);
        match answer {
            Ok(Ok(_)) => {}
            Ok(Err(text)) => {
                self.out.log(
                    Level::Verbose,
                    &format!(
                        "MD5 of '{}' refused by the server ({text}), treating as same",
                        String::from_utf8_lossy(src)
                    ),
                );
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
            }
        }
        Ok(differs)
    }

    async fn copy_file(
        &mut self,
        src: &[u8],
        dest: &Path,
        st: StatReply,
        opts: &CopyOpts,
    ) -> Result<Outcome, RunError> {
        let src_text = String::from_utf8_lossy(src).into_owned();
        let m = fs::symlink_metadata(dest).ok();
        let verdict = copy_plan::forced(
            copy_plan::plan_file(
                m.as_ref().map(local_file).as_ref(),
                &st,
                opts.compare,
                opts.type_check,
            ),
            opts.force_update,
        );
        let fetch_it = match (verdict, &m) {
            (FileVerdict::TypeMismatch, _) => {
                return Ok(Outcome::Failed(format!(
                    "Promised file copy {} exists but type mismatch with source '{src_text}'",
                    dest.display()
                )))
            }
            (FileVerdict::AskDigest, Some(m)) => self.digest_differs(src, m, dest).await?,
            (FileVerdict::UpToDate, _) => false,
            _ => true,
        };
        if !fetch_it {
            self.out.log(
                Level::Verbose,
                &format!("File '{}' is an up to date copy of source", dest.display()),
            );
            if opts.preserve {
                let _ = fs::set_permissions(
                    dest,
                    fs::Permissions::from_mode(copy_plan::preserved_mode(&st)),
                );
            }
            return Ok(Outcome::Kept);
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
        let fo = opts.fetch_opts();
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

    /// Close the cached connection (close_notify), as cf-agent does at exit.
    pub async fn finish(mut self) -> Summary {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        self.sync_dirs();
        std::mem::take(&mut self.summary)
    }
}

/// The destination as the copy plan sees it.
fn local_file(m: &fs::Metadata) -> LocalFile {
    let t = m.file_type();
    LocalFile {
        kind: if t.is_file() {
            LocalKind::File
        } else if t.is_dir() {
            LocalKind::Dir
        } else if t.is_symlink() {
            LocalKind::Symlink
        } else {
            LocalKind::Other
        },
        size: m.len(),
        mtime: m.mtime(),
        ctime: m.ctime(),
    }
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
