//! A recursive copy's transfer connections: the walk queues files that
//! need a GET, workers on extra authenticated connections fetch them, and
//! the outcomes are recorded in walk order.

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use rcf_core::client::Level;
use rcf_core::reply::StatReply;
use rcf_smol::{Conn, ConnectOptions};

use super::fetch::{fetch, FetchOpts, Fetched, Link};
use super::{CopyOpts, Outcome, Run, RunError, FILES_PER_CONNECTION};
use crate::output::Output;

/// A file the walk decided to fetch.
pub(super) struct Job {
    /// Its place in the pool's journal (walk order).
    pub(super) seq: usize,
    pub(super) src: Vec<u8>,
    pub(super) dest: PathBuf,
    pub(super) st: StatReply,
    /// `st` is stale (the source changed and the connection that saw it
    /// went away): STAT again before the GET.
    pub(super) restat: bool,
    /// The next attempt (1..=MAX_ATTEMPTS), kept when a file is handed back.
    pub(super) attempt: usize,
}

/// A walk-ordered summary entry of a pooled copy.
pub(super) enum Slot {
    Copied(String),
    Failed(String, String),
    Pending,
}

/// The files waiting for a GET and what the transfers did, shared (on
/// one thread) by the walk, the main connection and the workers. Never
/// borrowed across an await.
#[derive(Default)]
pub(super) struct Pool {
    pub(super) queue: VecDeque<Job>,
    pub(super) journal: Vec<Slot>,
    /// Files a worker is fetching now.
    pub(super) busy: usize,
    /// Extra connections started, still connecting, connected.
    pub(super) started: usize,
    pub(super) connecting: usize,
    pub(super) connected: usize,
    /// An extra connection was refused or lost before fetching anything:
    /// no more are opened in this run.
    pub(super) refused: bool,
    pub(super) walk_done: bool,
    /// Stop taking files (the run ends).
    pub(super) stop: bool,
    pub(super) bytes: u64,
    pub(super) dirs: BTreeSet<PathBuf>,
    /// Files fetched per connection (0 = the main one).
    pub(super) fetched: Vec<usize>,
    pub(super) gen: u64,
    pub(super) waiters: Vec<Waker>,
}

impl Pool {
    pub(super) fn notify(&mut self) {
        self.gen += 1;
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    /// Record a fetched file's outcome in its walk-order slot.
    pub(super) fn complete(&mut self, out: &Output, job: Job, o: Outcome, conn: usize) {
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
pub(super) async fn changed(pool: &Rc<RefCell<Pool>>, seen: u64) {
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
        let r = fetch(&mut w, &mut job, fo.clone(), &out).await;
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

impl Run {
    /// A recursive copy with transfer connections: the walk runs on the
    /// main connection and hands every file that needs a GET to the pool;
    /// workers on extra connections (opened as files pile up) fetch them
    /// meanwhile, and once the walk is done the main connection fetches
    /// too until every file is done. Outcomes are recorded in walk order.
    pub(super) async fn copy_tree_pooled(
        &mut self,
        src: &[u8],
        dest: &Path,
        root: &StatReply,
        opts: &CopyOpts,
    ) -> Result<(), RunError> {
        let pool = Rc::new(RefCell::new(Pool {
            fetched: vec![0],
            ..Pool::default()
        }));
        self.pool = Some(pool.clone());
        self.fetch_opts = opts.fetch_opts();
        let mut r = self.copy_tree(src, dest, root, opts).await;
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
    pub(super) fn grow_pool(&mut self) {
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
            self.fetch_opts.clone(),
        );
        self.workers.push(self.ex.spawn(task));
    }

    /// After the walk: the main connection fetches queued files too, until
    /// none is left and no worker holds one (a worker that loses its
    /// connection hands its file back).
    async fn drain(&mut self) -> Result<(), RunError> {
        let pool = self.pool.clone().expect("pooled copy");
        let out = self.out.clone();
        let fo = self.fetch_opts.clone();
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
                    let o = match fetch(self, &mut job, fo.clone(), &out).await? {
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
}
