//! 3.21's own lastseen database, `WORKDIR/state/cf_lastseen.lmdb`, written
//! so that the real `cf-key -s` (and cf-agent, cf-serverd, cf-check) see
//! rcf's peers.
//!
//! Written through the host's own LMDB library (`liblmdb.so.0`, the one
//! Debian's CFEngine links), loaded at run time: LMDB's file format and its
//! single-writer lock (a process-shared mutex in `cf_lastseen.lmdb-lock`)
//! are only guaranteed compatible between processes using the same LMDB
//! build, and cf-agent and cf-key on this host write and read the same
//! file at the same time. A re-implementation of LMDB, or another LMDB
//! version linked in, could corrupt it or take a lock the others do not
//! see. An LMDB of another lock format is refused by LMDB itself
//! (`MDB_VERSION_MISMATCH`) instead of being used.
//!
//! The environment is opened like CFEngine's `dbm_lmdb.c` does
//! (`MDB_NOSUBDIR`, map size 100 MiB, mode 0600; on a policy hub, i.e. when
//! `state/am_policy_hub` exists, also `MDB_NOSYNC`, as 3.21 opens lastseen
//! there: no fsync per commit), once per process (LMDB
//! forbids opening one file twice in a process): keep one
//! [`LmdbLastseen`] per work directory.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use rcf_core::keys::KeyId;
use rcf_core::lastseen::{
    address_key, check_address, host_key, quality_key, text_value, BadAddress, Direction,
    LastseenStore, Quality, Seen, VERSION_KEY, VERSION_VALUE,
};
use thiserror::Error;

/// The file, relative to WORKDIR.
pub const LASTSEEN_FILE: &str = "state/cf_lastseen.lmdb";
/// The shared library loaded (Debian's liblmdb0 package).
pub const LMDB_LIBRARY: &str = "liblmdb.so.0";
/// CFEngine's `LMDB_MAXSIZE`.
const MAP_SIZE: usize = 104_857_600;
const MDB_NOSUBDIR: c_uint = 0x4000;
const MDB_RDONLY: c_uint = 0x20000;
/// lmdb.h's `MDB_NOSYNC`: commits are not flushed to disk (3.21 sets it for
/// lastseen on policy hubs, `dbm_lmdb.c` `DBPrivOpenDB`).
const MDB_NOSYNC: c_uint = 0x10000;
const MDB_NOTFOUND: c_int = -30798;

#[repr(C)]
struct MdbVal {
    size: usize,
    data: *mut c_void,
}

type Env = c_void;
type Txn = c_void;
type Cursor = c_void;
/// `MDB_FIRST` and `MDB_NEXT` of lmdb.h's `MDB_cursor_op`.
const MDB_FIRST: c_uint = 0;
const MDB_NEXT: c_uint = 8;

/// The LMDB entry points used, resolved once from [`LMDB_LIBRARY`].
struct Lmdb {
    _lib: libloading::Library,
    env_create: unsafe extern "C" fn(*mut *mut Env) -> c_int,
    env_set_mapsize: unsafe extern "C" fn(*mut Env, usize) -> c_int,
    env_open: unsafe extern "C" fn(*mut Env, *const c_char, c_uint, u32) -> c_int,
    env_close: unsafe extern "C" fn(*mut Env),
    env_get_flags: unsafe extern "C" fn(*mut Env, *mut c_uint) -> c_int,
    txn_begin: unsafe extern "C" fn(*mut Env, *mut Txn, c_uint, *mut *mut Txn) -> c_int,
    txn_commit: unsafe extern "C" fn(*mut Txn) -> c_int,
    txn_abort: unsafe extern "C" fn(*mut Txn),
    dbi_open: unsafe extern "C" fn(*mut Txn, *const c_char, c_uint, *mut c_uint) -> c_int,
    get: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal) -> c_int,
    put: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal, c_uint) -> c_int,
    del: unsafe extern "C" fn(*mut Txn, c_uint, *mut MdbVal, *mut MdbVal) -> c_int,
    cursor_open: unsafe extern "C" fn(*mut Txn, c_uint, *mut *mut Cursor) -> c_int,
    cursor_get: unsafe extern "C" fn(*mut Cursor, *mut MdbVal, *mut MdbVal, c_uint) -> c_int,
    cursor_close: unsafe extern "C" fn(*mut Cursor),
    strerror: unsafe extern "C" fn(c_int) -> *const c_char,
}

fn lmdb() -> Result<&'static Lmdb, LastseenError> {
    static LIB: OnceLock<Result<Lmdb, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: loading the system LMDB runs no initialisers with
        // preconditions; each symbol is given LMDB 0.9's documented C
        // signature (lmdb.h), which is stable across 0.9.x.
        unsafe {
            let lib = libloading::Library::new(LMDB_LIBRARY).map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get(concat!($name, "\0").as_bytes())
                        .map_err(|e| e.to_string())?
                };
            }
            Ok(Lmdb {
                env_create: sym!("mdb_env_create"),
                env_set_mapsize: sym!("mdb_env_set_mapsize"),
                env_open: sym!("mdb_env_open"),
                env_close: sym!("mdb_env_close"),
                env_get_flags: sym!("mdb_env_get_flags"),
                txn_begin: sym!("mdb_txn_begin"),
                txn_commit: sym!("mdb_txn_commit"),
                txn_abort: sym!("mdb_txn_abort"),
                dbi_open: sym!("mdb_dbi_open"),
                get: sym!("mdb_get"),
                put: sym!("mdb_put"),
                del: sym!("mdb_del"),
                cursor_open: sym!("mdb_cursor_open"),
                cursor_get: sym!("mdb_cursor_get"),
                cursor_close: sym!("mdb_cursor_close"),
                strerror: sym!("mdb_strerror"),
                _lib: lib,
            })
        }
    })
    .as_ref()
    .map_err(|e| LastseenError::NoLibrary(e.clone()))
}

/// Why lastseen could not be written.
#[derive(Debug, Error)]
pub enum LastseenError {
    /// The system LMDB library could not be loaded.
    #[error("lastseen: cannot load {LMDB_LIBRARY} ({0}); install liblmdb0")]
    NoLibrary(String),
    /// An LMDB call failed.
    #[error("lastseen: {op} on '{path}': {msg}")]
    Lmdb {
        /// The LMDB function.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// LMDB's message.
        msg: String,
    },
    /// The state directory could not be made.
    #[error("lastseen: cannot create '{path}': {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The address cannot be stored.
    #[error(transparent)]
    Address(#[from] BadAddress),
}

/// 3.21's lastseen database of one work directory, open for writing.
pub struct LmdbLastseen {
    lib: &'static Lmdb,
    env: *mut Env,
    path: PathBuf,
    /// One transaction at a time from this process (LMDB allows one writer;
    /// this keeps our threads from queueing inside LMDB's lock).
    lock: Mutex<()>,
}

// SAFETY: the environment handle may be used from any thread; every
// transaction is begun, used and ended inside one call, under `lock`.
unsafe impl Send for LmdbLastseen {}
// SAFETY: as above.
unsafe impl Sync for LmdbLastseen {}

impl std::fmt::Debug for LmdbLastseen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbLastseen")
            .field("path", &self.path)
            .finish()
    }
}

impl LmdbLastseen {
    /// Open (creating if needed) `WORKDIR/state/cf_lastseen.lmdb`; the
    /// state directory is made 0700 when missing, as CFEngine makes it.
    /// On a policy hub (`WORKDIR/state/am_policy_hub` exists) commits are
    /// not fsync'ed (`MDB_NOSYNC`), exactly when 3.21 does the same: a hub
    /// records a sighting per connection, and an fsync each was a tenth of
    /// rcf-serverd's CPU per handshake. A crash of the process loses
    /// nothing (the pages are in the page cache); a crash of the machine
    /// may lose the last sightings, as with 3.21.
    pub fn open(workdir: &Path) -> Result<Self, LastseenError> {
        let path = workdir.join(LASTSEEN_FILE);
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|source| LastseenError::Dir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        let hub = workdir.join("state").join("am_policy_hub").exists();
        Self::open_with(&path, if hub { MDB_NOSYNC } else { 0 })
    }

    /// Open (creating if needed) the database file `path`; every commit is
    /// flushed to disk.
    pub fn open_file(path: &Path) -> Result<Self, LastseenError> {
        Self::open_with(path, 0)
    }

    /// [`LmdbLastseen::open_file`] with extra `mdb_env_open` flags.
    fn open_with(path: &Path, flags: c_uint) -> Result<Self, LastseenError> {
        let lib = lmdb()?;
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| LastseenError::Lmdb {
            op: "open",
            path: path.to_path_buf(),
            msg: "path holds a NUL byte".into(),
        })?;
        let mut env: *mut Env = std::ptr::null_mut();
        let me_err = |op, rc| Self::err_of(lib, op, path, rc);
        // SAFETY: LMDB's documented call sequence; `env` is closed on every
        // failure path after creation.
        unsafe {
            let rc = (lib.env_create)(&mut env);
            if rc != 0 {
                return Err(me_err("mdb_env_create", rc));
            }
            let rc = (lib.env_set_mapsize)(env, MAP_SIZE);
            if rc != 0 {
                (lib.env_close)(env);
                return Err(me_err("mdb_env_set_mapsize", rc));
            }
            let rc = (lib.env_open)(env, cpath.as_ptr(), MDB_NOSUBDIR | flags, 0o600);
            if rc != 0 {
                (lib.env_close)(env);
                return Err(me_err("mdb_env_open", rc));
            }
        }
        Ok(LmdbLastseen {
            lib,
            env,
            path: path.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    /// Whether each commit is flushed to disk (false on a policy hub, as
    /// with 3.21; see [`LmdbLastseen::open`]).
    pub fn syncs(&self) -> Result<bool, LastseenError> {
        let mut flags: c_uint = 0;
        // SAFETY: `env` is open for the life of `self`; LMDB only reads it.
        let rc = unsafe { (self.lib.env_get_flags)(self.env, &mut flags) };
        if rc != 0 {
            return Err(self.err("mdb_env_get_flags", rc));
        }
        Ok(flags & MDB_NOSYNC == 0)
    }

    fn err_of(lib: &Lmdb, op: &'static str, path: &Path, rc: c_int) -> LastseenError {
        // SAFETY: mdb_strerror returns a static NUL-terminated string.
        let msg = unsafe { CStr::from_ptr((lib.strerror)(rc)) }
            .to_string_lossy()
            .into_owned();
        LastseenError::Lmdb {
            op,
            path: path.to_path_buf(),
            msg,
        }
    }

    fn err(&self, op: &'static str, rc: c_int) -> LastseenError {
        Self::err_of(self.lib, op, &self.path, rc)
    }

    /// Run `f` in one transaction (read-only or not); aborted on error.
    fn txn<T>(
        &self,
        write: bool,
        f: impl FnOnce(&TxnRef<'_>) -> Result<T, LastseenError>,
    ) -> Result<T, LastseenError> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut txn: *mut Txn = std::ptr::null_mut();
        let flags = if write { 0 } else { MDB_RDONLY };
        // SAFETY: begin/commit/abort pair on this thread, inside the lock.
        unsafe {
            let rc = (self.lib.txn_begin)(self.env, std::ptr::null_mut(), flags, &mut txn);
            if rc != 0 {
                return Err(self.err("mdb_txn_begin", rc));
            }
            let mut dbi: c_uint = 0;
            let rc = (self.lib.dbi_open)(txn, std::ptr::null(), 0, &mut dbi);
            if rc != 0 {
                (self.lib.txn_abort)(txn);
                return Err(self.err("mdb_dbi_open", rc));
            }
            let t = TxnRef { s: self, txn, dbi };
            match f(&t) {
                Ok(v) => {
                    let rc = (self.lib.txn_commit)(txn);
                    if rc != 0 {
                        return Err(self.err("mdb_txn_commit", rc));
                    }
                    Ok(v)
                }
                Err(e) => {
                    (self.lib.txn_abort)(txn);
                    Err(e)
                }
            }
        }
    }

    /// The stored quality record of `key` in `direction`, if any (a record
    /// of the wrong size reads as none).
    pub fn quality(
        &self,
        key: &KeyId,
        direction: Direction,
    ) -> Result<Option<Quality>, LastseenError> {
        self.txn(false, |t| {
            Ok(t.get(&quality_key(direction, key))?
                .and_then(|b| Quality::decode(&b)))
        })
    }

    /// The address stored for `key` (`k` entry), without its NUL.
    pub fn address(&self, key: &KeyId) -> Result<Option<String>, LastseenError> {
        self.txn(false, |t| {
            Ok(t.get(&host_key(key))?.map(|mut v| {
                if v.last() == Some(&0) {
                    v.pop();
                }
                String::from_utf8_lossy(&v).into_owned()
            }))
        })
    }
}

/// One peer as `cf-key -s` lists it: a quality entry and its key's address.
#[derive(Debug, Clone, PartialEq)]
pub struct LastseenRow {
    /// The peer's key.
    pub key: KeyId,
    /// Who opened the connections.
    pub direction: Direction,
    /// The key's address (`k<key>` entry).
    pub address: String,
    /// Last time and interval statistics.
    pub quality: Quality,
}

impl LmdbLastseen {
    /// Every quality entry with its key's address, in the file's order
    /// (what 3.21's `ScanLastSeenQuality` walks for `cf-key -s`); entries
    /// whose key has no address or no readable record are skipped, as
    /// there.
    pub fn entries(&self) -> Result<Vec<LastseenRow>, LastseenError> {
        self.txn(false, |t| {
            let mut rows = Vec::new();
            for (k, v) in t.all()? {
                let Some(rest) = k.strip_prefix(b"q") else {
                    continue;
                };
                let (direction, id) = match rest.split_first() {
                    Some((b'i', id)) => (Direction::Incoming, id),
                    Some((b'o', id)) => (Direction::Outgoing, id),
                    _ => continue,
                };
                let id = id.strip_suffix(b"\0").unwrap_or(id);
                let Some(key) = std::str::from_utf8(id)
                    .ok()
                    .and_then(|s| s.parse::<KeyId>().ok())
                else {
                    continue;
                };
                let (Some(quality), Some(mut address)) =
                    (Quality::decode(&v), t.get(&host_key(&key))?)
                else {
                    continue;
                };
                if address.last() == Some(&0) {
                    address.pop();
                }
                rows.push(LastseenRow {
                    key,
                    direction,
                    address: String::from_utf8_lossy(&address).into_owned(),
                    quality,
                });
            }
            Ok(rows)
        })
    }

    /// Forget a key (`cf-key -r MD5=…`) or an address (`cf-key -r IP`): the
    /// key's quality entries, its `k` entry and its address's `a` entry, in
    /// one transaction. Returns the keys forgotten (none when nothing
    /// matched).
    pub fn forget(
        &self,
        key: Option<&KeyId>,
        address: Option<&str>,
    ) -> Result<Vec<KeyId>, LastseenError> {
        self.txn(true, |t| {
            let key = match (key, address) {
                (Some(k), _) => k.clone(),
                (None, Some(a)) => {
                    let Some(mut v) = t.get(&address_key(a))? else {
                        return Ok(Vec::new());
                    };
                    if v.last() == Some(&0) {
                        v.pop();
                    }
                    match std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.parse::<KeyId>().ok())
                    {
                        Some(k) => k,
                        None => return Ok(Vec::new()),
                    }
                }
                (None, None) => return Ok(Vec::new()),
            };
            let mut found = false;
            if let Some(mut a) = t.get(&host_key(&key))? {
                if a.last() == Some(&0) {
                    a.pop();
                }
                found |= t.del(&address_key(&String::from_utf8_lossy(&a)))?;
            }
            found |= t.del(&host_key(&key))?;
            for d in [Direction::Incoming, Direction::Outgoing] {
                found |= t.del(&quality_key(d, &key))?;
            }
            if let Some(a) = address {
                found |= t.del(&address_key(a))?;
            }
            Ok(if found { vec![key] } else { Vec::new() })
        })
    }
}

struct TxnRef<'a> {
    s: &'a LmdbLastseen,
    txn: *mut Txn,
    dbi: c_uint,
}

impl TxnRef<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LastseenError> {
        let mut k = MdbVal {
            size: key.len(),
            data: key.as_ptr() as *mut c_void,
        };
        let mut v = MdbVal {
            size: 0,
            data: std::ptr::null_mut(),
        };
        // SAFETY: `k` points to `key` for the call; LMDB's answer points
        // into the map, valid until the transaction ends: copied at once.
        unsafe {
            let rc = (self.s.lib.get)(self.txn, self.dbi, &mut k, &mut v);
            if rc == MDB_NOTFOUND {
                return Ok(None);
            }
            if rc != 0 {
                return Err(self.s.err("mdb_get", rc));
            }
            Ok(Some(
                std::slice::from_raw_parts(v.data as *const u8, v.size).to_vec(),
            ))
        }
    }

    /// Delete `key`; false when it was not there.
    fn del(&self, key: &[u8]) -> Result<bool, LastseenError> {
        let mut k = MdbVal {
            size: key.len(),
            data: key.as_ptr() as *mut c_void,
        };
        // SAFETY: `k` points to a live slice for the call; NULL data deletes
        // every value of the key (there is one: no MDB_DUPSORT).
        let rc = unsafe { (self.s.lib.del)(self.txn, self.dbi, &mut k, std::ptr::null_mut()) };
        match rc {
            0 => Ok(true),
            MDB_NOTFOUND => Ok(false),
            rc => Err(self.s.err("mdb_del", rc)),
        }
    }

    /// Every (key, value) pair, in the database's order, copied out.
    fn all(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>, LastseenError> {
        let mut cur: *mut Cursor = std::ptr::null_mut();
        // SAFETY: the cursor is opened, used and closed inside this
        // transaction; each returned pair points into the map and is
        // copied before the next call.
        unsafe {
            let rc = (self.s.lib.cursor_open)(self.txn, self.dbi, &mut cur);
            if rc != 0 {
                return Err(self.s.err("mdb_cursor_open", rc));
            }
            let mut out = Vec::new();
            let mut op = MDB_FIRST;
            loop {
                let mut k = MdbVal {
                    size: 0,
                    data: std::ptr::null_mut(),
                };
                let mut v = MdbVal {
                    size: 0,
                    data: std::ptr::null_mut(),
                };
                let rc = (self.s.lib.cursor_get)(cur, &mut k, &mut v, op);
                if rc == MDB_NOTFOUND {
                    break;
                }
                if rc != 0 {
                    (self.s.lib.cursor_close)(cur);
                    return Err(self.s.err("mdb_cursor_get", rc));
                }
                out.push((
                    std::slice::from_raw_parts(k.data as *const u8, k.size).to_vec(),
                    std::slice::from_raw_parts(v.data as *const u8, v.size).to_vec(),
                ));
                op = MDB_NEXT;
            }
            (self.s.lib.cursor_close)(cur);
            Ok(out)
        }
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), LastseenError> {
        let mut k = MdbVal {
            size: key.len(),
            data: key.as_ptr() as *mut c_void,
        };
        let mut v = MdbVal {
            size: value.len(),
            data: value.as_ptr() as *mut c_void,
        };
        // SAFETY: both point to live slices for the call; LMDB copies them.
        let rc = unsafe { (self.s.lib.put)(self.txn, self.dbi, &mut k, &mut v, 0) };
        if rc != 0 {
            return Err(self.s.err("mdb_put", rc));
        }
        Ok(())
    }
}

impl Drop for LmdbLastseen {
    fn drop(&mut self) {
        // SAFETY: no transaction is open outside `txn`, which holds `self`.
        unsafe { (self.lib.env_close)(self.env) };
    }
}

impl LastseenStore for LmdbLastseen {
    type Error = LastseenError;

    /// `UpdateLastSawHost` in one write transaction: quality entry (read,
    /// averaged, written), `k<key>` → address, `a<address>` → key, and the
    /// schema `version` entry when missing (so CFEngine does not try to
    /// migrate a file we created).
    fn record(&self, seen: &Seen<'_>) -> Result<Quality, LastseenError> {
        check_address(seen.address)?;
        self.txn(true, |t| put_seen(t, seen))
    }
}

impl LmdbLastseen {
    /// [`LastseenStore::record`] for several sightings in one transaction:
    /// one commit (and, outside a hub, one fsync) for a whole batch, so a
    /// busy server does not pay a disk sync per connection. A sighting with
    /// an unusable address is not recorded, the others still are; the
    /// first such address is then the error, as `record` would have
    /// returned it for that sighting alone.
    pub fn record_all(&self, seen: &[Seen<'_>]) -> Result<(), LastseenError> {
        let mut refused = None;
        let mut usable = Vec::with_capacity(seen.len());
        for s in seen {
            match check_address(s.address) {
                Ok(()) => usable.push(s),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
        if !usable.is_empty() {
            self.txn(true, |t| {
                for s in usable {
                    put_seen(t, s)?;
                }
                Ok(())
            })?;
        }
        refused.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// One sighting's entries, as [`LastseenStore::record`] documents them.
fn put_seen(t: &TxnRef<'_>, seen: &Seen<'_>) -> Result<Quality, LastseenError> {
    if t.get(VERSION_KEY)?.is_none() {
        t.put(VERSION_KEY, VERSION_VALUE)?;
    }
    let qk = quality_key(seen.direction, seen.key);
    let old = t.get(&qk)?.and_then(|b| Quality::decode(&b));
    let q = Quality::update(old.as_ref(), seen.now);
    t.put(&qk, &q.encode())?;
    t.put(&host_key(seen.key), &text_value(seen.address))?;
    t.put(
        &address_key(seen.address),
        &text_value(&seen.key.to_string()),
    )?;
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3.21 skips the fsync of lastseen commits on a policy hub only
    /// (`dbm_lmdb.c`: `GetAmPolicyHub() && id == dbid_lastseen`).
    #[test]
    fn commits_are_synced_except_on_a_policy_hub() {
        let plain = tempfile::tempdir().unwrap();
        assert!(LmdbLastseen::open(plain.path()).unwrap().syncs().unwrap());
        let hub = tempfile::tempdir().unwrap();
        std::fs::create_dir(hub.path().join("state")).unwrap();
        std::fs::write(hub.path().join("state/am_policy_hub"), b"").unwrap();
        assert!(!LmdbLastseen::open(hub.path()).unwrap().syncs().unwrap());
    }

    /// A batch records every usable sighting in one transaction and still
    /// reports an unusable address, as `record` does for it alone.
    #[test]
    fn a_batch_records_the_usable_sightings_and_reports_a_bad_address() {
        let wd = tempfile::tempdir().unwrap();
        let db = LmdbLastseen::open(wd.path()).unwrap();
        let a: KeyId = "MD5=0123456789abcdef0123456789abcdef".parse().unwrap();
        let b: KeyId = "MD5=fedcba9876543210fedcba9876543210".parse().unwrap();
        let seen = |key, address| Seen {
            key,
            address,
            direction: Direction::Incoming,
            now: 1_700_000_000,
        };
        let bad = "";
        assert!(db.record(&seen(&b, bad)).is_err());
        let batch = [seen(&a, "127.0.0.2"), seen(&b, bad)];
        assert!(db.record_all(&batch).is_err());
        let rows = db.entries().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].key, a);
        assert_eq!(rows[0].address, "127.0.0.2");
        assert_eq!(db.address(&a).unwrap().as_deref(), Some("127.0.0.2"));
    }
}
