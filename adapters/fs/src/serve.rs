//! Answers to a server session's questions, from the real filesystem.
//!
//! Blocking calls, meant to run on a blocking pool (`spawn_blocking`). The
//! safety argument for file service: the session authorises a *canonical*
//! path (no symlinks, no `..`); [`Files::open`] then opens that path without
//! following a final symlink and checks, through `/proc/self/fd`, that the
//! file it got is still the authorised path, so a component swapped for a
//! symlink between the check and the open is refused like a missing file.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use md5::Digest as _;
use rcf_core::reply::{FileType, StatReply};
use rcf_core::server::io::{Canonical, FileStat, OpenedFile};
use rcf_core::server::{Answer, Event, KeyStatus};

/// Entries the digest cache keeps before it starts over.
const DIGEST_CACHE_MAX: usize = 100_000;

/// The error text CFEngine logs (`strerror`), without Rust's `(os error N)`.
pub fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn os(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// Open an authorised canonical path for `stat`, `readdir` or reading
/// without following a final symlink, and make sure the object opened is
/// still that path: a component swapped for a symlink since the session
/// checked it is refused like a missing file (`ENOENT`) instead of leaking
/// metadata, names or a digest from outside.
///
/// Where the kernel has `openat2` this is one lookup that refuses any
/// symlink on the way (a canonical path has none; the final component may
/// be a link only for `O_PATH`, which then names the link itself). Older
/// kernels open with `O_NOFOLLOW` and check the result through
/// `/proc/self/fd`.
fn open_exact(path: &[u8], flags: i32) -> io::Result<File> {
    // A directory may be asked for with one trailing `/` (the kernel then
    // also requires a directory).
    let bare = match path {
        [rest @ .., b'/'] if rest.len() > 1 => rest,
        _ => path,
    };
    if is_clean_absolute(bare) {
        match open_no_symlinks(path, flags) {
            Some(Ok(f)) => return Ok(f),
            Some(Err(e)) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    open_checked_via_proc(path, flags)
}

/// The `openat2`-less way: open with `O_NOFOLLOW`, then check through
/// `/proc/self/fd` that the descriptor still names `path`.
fn open_checked_via_proc(path: &[u8], flags: i32) -> io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | flags)
        .open(os(path))?;
    if !still_names(&f, path) {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    Ok(f)
}

/// Whether `path` is absolute with no empty, `.` or `..` component and no
/// trailing slash: then, if no component is a symlink, it is its own
/// `realpath` (the root `/` included).
fn is_clean_absolute(path: &[u8]) -> bool {
    if path == b"/" {
        return true;
    }
    path.first() == Some(&b'/')
        && path[1..]
            .split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Whether this kernel lacks `openat2` (or a sandbox forbids it); learned
/// once, then the `/proc` check is used.
static NO_OPENAT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `openat2(path, O_NOFOLLOW|flags, RESOLVE_NO_SYMLINKS)`: `ELOOP` when any
/// component (or, without `O_PATH`, the final one) is a symlink. `None`
/// when the kernel cannot do it.
fn open_no_symlinks(path: &[u8], flags: i32) -> Option<io::Result<File>> {
    use std::os::fd::FromRawFd;
    use std::sync::atomic::Ordering::Relaxed;
    if NO_OPENAT2.load(Relaxed) {
        return None;
    }
    let Ok(c) = std::ffi::CString::new(path) else {
        return Some(Err(io::Error::from_raw_os_error(libc::ENOENT)));
    };
    // O_RDONLY is 0: read access unless O_PATH is asked for.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // openat2 refuses (EINVAL) what plain open ignores: O_PATH takes no
    // O_NONBLOCK.
    let nonblock = if flags & libc::O_PATH != 0 {
        0
    } else {
        libc::O_NONBLOCK
    };
    how.flags = (libc::O_NOFOLLOW | nonblock | libc::O_CLOEXEC | flags) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `c` is a NUL-terminated string and `how` a fully initialised
    // `open_how` whose size is passed; the kernel only reads both.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG) | Some(libc::EINVAL) => {
                NO_OPENAT2.store(true, Relaxed);
                None
            }
            Some(libc::EAGAIN) => None,
            _ => Some(Err(e)),
        };
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    Some(Ok(unsafe { File::from_raw_fd(fd as i32) }))
}

/// Whether the open `f` is reached by `path` (trailing `/` ignored). Without
/// `/proc` only `O_NOFOLLOW` protects, as in [`Files::open`].
fn still_names(f: &File, path: &[u8]) -> bool {
    let mut want = path;
    while want.len() > 1 && want.last() == Some(&b'/') {
        want = &want[..want.len() - 1];
    }
    match fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(f)
    )) {
        Ok(real) => real.as_os_str().as_bytes() == want,
        Err(_) => true,
    }
}

/// `realpath()` with 3.21's exception: a dangling symlink is kept as the
/// link's own (parent-canonicalised) path.
pub fn canonicalize(path: &[u8]) -> Result<Canonical, String> {
    canonicalize_seen(path).0
}

/// [`canonicalize`], plus the `lstat` of the result when the fast path got
/// it for free: an object reached with no symlink on the way, so exactly
/// the canonical path (never a symlink itself).
fn canonicalize_seen(path: &[u8]) -> (Result<Canonical, String>, Option<Lstat>) {
    let p = os(path);
    // Fast path, the common case: a clean absolute path without symlinks is
    // its own realpath; one `openat2` proves it, instead of realpath's
    // `readlink` per component (each a walk from the root).
    if is_clean_absolute(path) {
        if let Some(Ok(f)) = open_no_symlinks(path, libc::O_PATH) {
            if let Ok(m) = f.metadata() {
                if !m.file_type().is_symlink() {
                    return (
                        Ok(Canonical {
                            path: path.to_vec(),
                            is_dir: m.is_dir(),
                        }),
                        Some(Lstat::from(&m)),
                    );
                }
            }
        }
    }
    (canonicalize_slow(p), None)
}

/// [`canonicalize_seen`] for a connection, through its burst's directory
/// memo ([`Files::end_burst`]): a pipelined batch asks about many entries
/// of one directory, and proving the directory symlink-free once (one
/// `openat2`), then taking each entry's `lstat` relative to it (one
/// `fstatat` of one component) replaced three syscalls and a full path
/// walk per request. A final component that is a symlink, and anything
/// not clean and absolute, take the general path.
fn canonicalize_in(files: &mut Files, path: &[u8]) -> (Result<Canonical, String>, Option<Lstat>) {
    if path.len() > 1 && is_clean_absolute(path) {
        let cut = path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        let (dir, name) = (&path[..cut.max(1)], &path[cut + 1..]);
        if let Some(dirfd) = files.dir_fd(dir) {
            match fstatat_nofollow(dirfd, name) {
                Ok(l) if !l.is_symlink() => {
                    return (
                        Ok(Canonical {
                            path: path.to_vec(),
                            is_dir: l.is_dir(),
                        }),
                        Some(l),
                    )
                }
                // A final symlink (resolve it), or gone: realpath says which.
                _ => return (canonicalize_slow(os(path)), None),
            }
        }
        // The directory could not be proven symlink-free (a link on the
        // way, missing, no openat2): a whole-path openat2 would fail the
        // same way, so go straight to realpath.
        return (canonicalize_slow(os(path)), None);
    }
    canonicalize_seen(path)
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)` of one path component.
fn fstatat_nofollow(dirfd: std::os::fd::BorrowedFd<'_>, name: &[u8]) -> io::Result<Lstat> {
    use std::os::fd::AsRawFd;
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::ENOENT))?;
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: `dirfd` is an open descriptor, `c` NUL-terminated and `st` a
    // writable stat64 the kernel fills in.
    let r = unsafe {
        libc::fstatat64(
            dirfd.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Lstat::from_stat(&st))
}

/// The `lstat` fields the server answers from (a STAT reply, a digest-cache
/// key), whether they came from `std::fs` or from a raw `fstatat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lstat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    atime: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    nlink: u64,
    dev: u64,
}

impl From<&fs::Metadata> for Lstat {
    fn from(m: &fs::Metadata) -> Lstat {
        Lstat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            atime: m.atime(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            nlink: m.nlink(),
            dev: m.dev(),
        }
    }
}

impl Lstat {
    fn from_stat(st: &libc::stat64) -> Lstat {
        Lstat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: st.st_atime,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
            ino: st.st_ino,
            nlink: st.st_nlink,
            dev: st.st_dev,
        }
    }
    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    fn is_symlink(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
    fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }
    fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }
}

/// realpath(3) and the dangling-link exception.
fn canonicalize_slow(p: &Path) -> Result<Canonical, String> {
    match fs::canonicalize(p) {
        Ok(c) => {
            let is_dir = fs::metadata(&c).map(|m| m.is_dir()).unwrap_or(false);
            Ok(Canonical {
                path: c.into_os_string().into_vec(),
                is_dir,
            })
        }
        Err(e) => {
            if let Ok(m) = fs::symlink_metadata(p) {
                if m.file_type().is_symlink() {
                    if let (Some(parent), Some(name)) = (p.parent(), p.file_name()) {
                        if let Ok(cp) = fs::canonicalize(parent) {
                            return Ok(Canonical {
                                path: cp.join(name).into_os_string().into_vec(),
                                is_dir: false,
                            });
                        }
                    }
                }
            }
            Err(strerror(&e))
        }
    }
}

/// The reply fields an `lstat` gives (a symlink's lmode and target are
/// filled in by the caller).
fn stat_reply(l: &Lstat) -> StatReply {
    let file_type = match l.kind() {
        libc::S_IFDIR => FileType::Dir,
        libc::S_IFLNK => FileType::Link,
        libc::S_IFREG => FileType::Regular,
        libc::S_IFBLK => FileType::Block,
        libc::S_IFCHR => FileType::Char,
        libc::S_IFIFO => FileType::Fifo,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::Regular,
    };
    StatReply {
        file_type,
        mode: l.mode & 0o7777,
        lmode: 0,
        uid: l.uid,
        gid: l.gid,
        size: l.size,
        atime: l.atime,
        mtime: l.mtime.0,
        ctime: l.ctime.0,
        makeholes: l.size > l.blocks * 512,
        ino: i64::from(l.ino as i32),
        nlink: i64::from(l.nlink as i32),
        dev: l.dev,
        link_target: Vec::new(),
    }
}

/// `StatFile` for a canonical path: `lstat` (through a descriptor checked
/// to still be that path). A symlink is reported as itself when dangling;
/// one that resolves is refused (see the comment inside).
pub fn stat(path: &[u8]) -> Result<FileStat, String> {
    let p = os(path);
    // lstat through an O_PATH descriptor checked to still be `path`.
    let l = open_exact(path, libc::O_PATH)
        .and_then(|f| f.metadata())
        .map_err(|e| strerror(&e))?;
    let mut reply = stat_reply(&Lstat::from(&l));
    if l.file_type().is_symlink() {
        reply.lmode = l.mode() & 0o7777;
        reply.link_target = fs::read_link(p)
            .map_err(|e| strerror(&e))?
            .into_os_string()
            .into_vec();
        // The session hands over a symlink as a canonical path only when it
        // did not resolve (dangling, or a loop: 3.21 then reports the link
        // itself). One that resolves now was swapped in after the check and
        // may point anywhere: refuse it like a missing file rather than
        // merge its target's type, size and times into the reply.
        if fs::metadata(p).is_ok() {
            return Err("No such file or directory".into());
        }
    }
    Ok(FileStat { reply })
}

/// Classic `STAT` of a requested path (see `Event::StatLink`): a symlink is
/// reported as one, with its target's type, mode, owners, size and times
/// merged in as `StatFile` does, and the link's own lmode, atime, inode,
/// link count and blocks, but only while it still resolves to `resolved`,
/// the real path the ACL approved. A link repointed since is refused like
/// a missing file.
pub fn stat_link(path: &[u8], resolved: &[u8]) -> Result<FileStat, String> {
    let p = os(path);
    let l = fs::symlink_metadata(p).map_err(|e| strerror(&e))?;
    if !l.file_type().is_symlink() {
        return stat(resolved);
    }
    let link_target = fs::read_link(p)
        .map_err(|e| strerror(&e))?
        .into_os_string()
        .into_vec();
    let mut reply = match fs::canonicalize(p) {
        Ok(real) if real.as_os_str().as_bytes() == resolved => stat(resolved)?.reply,
        Ok(_) => return Err("No such file or directory".into()),
        // Dangling: `resolved` is the link itself, reported as a link.
        Err(_) => return stat(resolved),
    };
    reply.lmode = l.mode() & 0o7777;
    reply.atime = l.atime();
    reply.ino = i64::from(l.ino() as i32);
    reply.nlink = i64::from(l.nlink() as i32);
    reply.dev = l.dev();
    reply.makeholes = reply.size > l.blocks() * 512;
    reply.link_target = link_target;
    Ok(FileStat { reply })
}

/// Directory entries exactly in readdir order, `.` and `..` where readdir
/// puts them (std hides them; clients skip them; 3.21 sends the names as
/// its DirRead loop gets them, unsorted, dots included).
pub fn list_dir(path: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use std::os::fd::IntoRawFd;
    let d = open_exact(path, libc::O_DIRECTORY).map_err(|e| strerror(&e))?;
    // Read the directory we checked, through its descriptor (no second
    // lookup of the path, which could have been swapped meanwhile).
    let fd = d.into_raw_fd();
    // SAFETY: `fd` is an open directory descriptor we own; on success
    // `fdopendir` takes it over and `closedir` below releases both.
    let dir = unsafe { libc::fdopendir(fd) };
    if dir.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(strerror(&e));
    }
    let mut v = Vec::new();
    let r = loop {
        // SAFETY: errno is thread-local; zero it so end-of-directory (NULL,
        // errno unchanged) is told from an error (NULL, errno set).
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir` is a valid, open DIR* used by this thread only.
        let ent = unsafe { libc::readdir64(dir) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(strerror(&e))
            };
        }
        // SAFETY: readdir returned an entry whose d_name is NUL-terminated
        // and valid until the next readdir/closedir on `dir`.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        v.push(name.to_vec());
    };
    // SAFETY: `dir` came from fdopendir and is closed exactly once.
    unsafe { libc::closedir(dir) };
    r.map(|()| v)
}

/// What identifies a file's content without reading it: it was not
/// replaced (device, inode) nor written (size, mtime, ctime). The server's
/// digest cache and rcf-agent's cached MD5 verdicts both key on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl ContentKey {
    /// The key of the file `m` describes.
    pub fn of(m: &fs::Metadata) -> ContentKey {
        ContentKey::of_lstat(&Lstat::from(m))
    }

    /// The same key from an [`Lstat`] (a raw `fstatat` gives the same
    /// fields as `std::fs`, so both spellings of one file agree).
    pub fn of_lstat(l: &Lstat) -> ContentKey {
        ContentKey {
            dev: l.dev,
            ino: l.ino,
            size: l.size,
            mtime: l.mtime,
            ctime: l.ctime,
        }
    }
}

/// A multiply-xor hasher for [`ContentKey`]: its fields are local file
/// metadata, not chosen by peers, so SipHash's flood resistance buys
/// nothing here and it showed in the per-request profile.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

/// MD5 digests keyed by (dev, inode, size, mtime, ctime): a file is hashed
/// again only when one of those changed. Shared by all sessions.
#[derive(Debug, Default)]
pub struct DigestCache {
    map: Mutex<HashMap<ContentKey, [u8; 16], std::hash::BuildHasherDefault<KeyHasher>>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl DigestCache {
    /// The MD5 of a file's content, `None` when it cannot be read (3.21
    /// then compares an all-zero digest, which always "differs").
    pub fn digest(&self, path: &[u8]) -> Option<[u8; 16]> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut f = open_exact(path, 0).ok()?;
        let m = f.metadata().ok()?;
        let key = ContentKey::of(&m);
        if let Some(d) = self.map.lock().ok()?.get(&key) {
            self.hits.fetch_add(1, Relaxed);
            return Some(*d);
        }
        self.misses.fetch_add(1, Relaxed);
        let mut h = md5::Md5::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // 3.21's HashFile stops at a failed read and digests what
                // it got (a directory: the empty digest); not cached.
                Err(_) => return Some(h.finalize().into()),
            }
        }
        let d: [u8; 16] = h.finalize().into();
        let mut map = self.map.lock().ok()?;
        if map.len() >= DIGEST_CACHE_MAX {
            map.clear();
        }
        map.insert(key, d);
        Some(d)
    }

    /// The digest if the cache holds it for the file as it is now, without
    /// hashing anything (one `stat`): cheap enough to call inline.
    pub fn peek(&self, path: &[u8]) -> Option<[u8; 16]> {
        // The same no-follow, still-the-authorised-path lookup as `digest`;
        // `O_PATH` because nothing is read (a final symlink then names the
        // link, whose key is never in the map).
        let m = open_exact(path, libc::O_PATH).ok()?.metadata().ok()?;
        self.peek_metadata(&Lstat::from(&m))
    }

    /// The cached digest for a file whose `lstat` (taken through an exact,
    /// no-symlink lookup of the authorised path) is `m`.
    pub fn peek_metadata(&self, m: &Lstat) -> Option<[u8; 16]> {
        use std::sync::atomic::Ordering::Relaxed;
        if !m.is_file() {
            return None;
        }
        let key = ContentKey::of_lstat(m);
        let d = *self.map.lock().ok()?.get(&key)?;
        self.hits.fetch_add(1, Relaxed);
        Some(d)
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// Open files of one connection, and what its last `Canonicalize` saw.
#[derive(Debug, Default)]
pub struct Files {
    open: HashMap<u64, File>,
    next: u64,
    /// The canonical path and `lstat` the last `Canonicalize` got from its
    /// exact lookup. The session asks `Stat`/`Digest` of that very path
    /// right after its ACL check; answering from this saves a second
    /// lookup per request. Consumed by the next question, whatever it is,
    /// so it is never older than one ACL decision.
    seen: Option<(Vec<u8>, Lstat)>,
    /// A directory proven symlink-free during the current burst (its
    /// canonical path and an `O_PATH` descriptor of it), for
    /// [`canonicalize_in`]. Dropped by [`Files::end_burst`], so it is never
    /// older than the batch of requests that arrived together: a directory
    /// replaced or renamed afterwards is looked up afresh.
    dir: Option<(Vec<u8>, std::os::fd::OwnedFd)>,
}

impl Files {
    /// The `lstat` the previous `Canonicalize` saw of `path`, if that was
    /// the previous question; forgets it either way.
    fn take_seen(&mut self, path: &[u8]) -> Option<Lstat> {
        match self.seen.take() {
            Some((p, m)) if p == path => Some(m),
            _ => None,
        }
    }

    /// The runtime has answered everything that arrived together and is
    /// about to wait for the peer: forget the burst's directory, so the
    /// next request's lookups see the filesystem as it is then, and an idle
    /// session holds no descriptor.
    pub fn end_burst(&mut self) {
        self.dir = None;
    }

    /// The burst's descriptor of `dir` (a canonical directory path), opened
    /// with no symlink on the way when it is not the one already held.
    /// `None` when that cannot be proven (a symlink in it, not a directory,
    /// gone, or no `openat2`): the caller takes the general path.
    fn dir_fd(&mut self, dir: &[u8]) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        if self.dir.as_ref().is_none_or(|(p, _)| p != dir) {
            self.dir = None;
            let f = open_no_symlinks(dir, libc::O_PATH | libc::O_DIRECTORY)?.ok()?;
            self.dir = Some((dir.to_vec(), f.into()));
        }
        self.dir.as_ref().map(|(_, fd)| fd.as_fd())
    }
}

impl Files {
    /// Open a canonical path for reading, refusing anything but the
    /// authorised regular file (see the module docs).
    pub fn open(&mut self, path: &[u8]) -> Result<OpenedFile, String> {
        // No final symlink followed, and the file opened must still be the
        // authorised path (no component swapped for a symlink since).
        let f = open_exact(path, 0).map_err(|e| strerror(&e))?;
        let m = f.metadata().map_err(|e| strerror(&e))?;
        // A directory opens (3.21's safe_open does; the machine then sends
        // nothing, as 3.21's failed read does); devices, FIFOs and
        // sockets are refused.
        if !m.is_file() && !m.is_dir() {
            return Err("Not a regular file".into());
        }
        self.next += 1;
        let handle = self.next;
        self.open.insert(handle, f);
        Ok(OpenedFile {
            handle,
            size: m.size(),
            uid: m.uid(),
            mode: m.mode() & 0o7777,
            is_dir: m.is_dir(),
        })
    }

    /// Read up to `len` bytes at `offset`, reporting the size now.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Answer {
        let Some(f) = self.open.get_mut(&handle) else {
            return Answer::ReadFailed("bad handle".into());
        };
        let mut buf = vec![0u8; len];
        let r = f.seek(SeekFrom::Start(offset)).and_then(|_| {
            let mut got = 0;
            while got < len {
                match f.read(&mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(got)
        });
        match r {
            Ok(n) => {
                buf.truncate(n);
                let current_size = f.metadata().map(|m| m.size()).unwrap_or(0);
                Answer::Data {
                    bytes: buf,
                    current_size,
                }
            }
            Err(e) => Answer::ReadFailed(strerror(&e)),
        }
    }

    /// Release a handle.
    pub fn close(&mut self, handle: u64) {
        self.open.remove(&handle);
    }
}

/// Everything a server connection needs answered, from one host's disk.
#[derive(Debug)]
pub struct ServerFs {
    /// `WORKDIR/ppkeys`.
    pub ppkeys: PathBuf,
    /// Shared digest cache.
    pub digests: std::sync::Arc<DigestCache>,
    /// Trusted keys as read from their own ppkeys files (see
    /// [`ServerFs::quick_key`]).
    pub keys: KeyCache,
}

impl ServerFs {
    /// A server's disk answers for `WORKDIR/ppkeys`, with empty caches.
    pub fn new(ppkeys: PathBuf) -> ServerFs {
        ServerFs {
            ppkeys,
            digests: Default::default(),
            keys: Default::default(),
        }
    }
}

/// Most key files [`KeyCache`] remembers before it starts over.
const KEY_CACHE_MAX: usize = 10_000;

/// Parsed keys of ppkeys files, each valid only while its file is exactly
/// as it was read (same [`ContentKey`]): every connection's key check
/// still looks at the file (one `stat`), so a deleted (revoked) or
/// replaced key takes effect at the next connection, but the file is not
/// opened, read and PEM-parsed every time.
#[derive(Debug, Default)]
pub struct KeyCache {
    map: Mutex<HashMap<String, (ContentKey, rcf_core::keys::RsaPublicKey)>>,
}

/// What the adapter should log after a key was stored (or failed to be).
pub type Note = Option<(rcf_core::server::Level, String)>;

impl ServerFs {
    /// Questions answered from metadata alone, in microseconds: a runtime
    /// may answer these on its own thread instead of a blocking pool.
    pub fn is_quick(ev: &Event) -> bool {
        matches!(
            ev,
            Event::Log { .. }
                | Event::Denied { .. }
                | Event::Canonicalize { .. }
                | Event::Stat { .. }
                | Event::StatLink { .. }
                | Event::ListDir { .. }
                | Event::Open { .. }
                | Event::Close { .. }
                | Event::LookupUser { .. }
        )
    }

    /// The key lookup when the presented key's own ppkeys file exists: one
    /// small read (like `Open`), never a rename or a write, so a runtime may
    /// answer it on its own thread; handing it to a blocking pool was two
    /// thread switches per connection. `None`: ask [`ServerFs::answer`].
    pub fn quick_key(&self, ev: &Event) -> Option<Answer> {
        use rcf_core::keys::trust::{TrustStore, Verdict};
        let Event::LookupKey {
            user, key, key_id, ..
        } = ev
        else {
            return None;
        };
        use rcf_core::keys::{check_public_key, ppkeys, DigestKind, KeyId};
        check_public_key(key).ok()?;
        // The session computed the presented key's id already.
        let id: KeyId = key_id.parse().ok()?;
        let file = ppkeys::trusted_key_file(user, &id).ok()?;
        // The state of the file before it is read: if it changes while
        // being read, the entry is stale at once and read again next time.
        let state = ContentKey::of(&fs::metadata(self.ppkeys.join(&file)).ok()?);
        if let Some((seen, stored)) = self.keys.map.lock().ok()?.get(&file) {
            if *seen == state {
                return Some(Answer::Key(if stored == key {
                    KeyStatus::Trusted
                } else {
                    KeyStatus::Different
                }));
            }
        }
        let store = TrustStore::new(crate::ppkeys::FsPpkeys::new(&self.ppkeys), DigestKind::Md5);
        let l = store.lookup_own_file(user, key).ok()??;
        Some(Answer::Key(match l.verdict {
            Verdict::Trusted { .. } => {
                if let Ok(mut m) = self.keys.map.lock() {
                    if m.len() >= KEY_CACHE_MAX {
                        m.clear();
                    }
                    m.insert(file, (state, key.clone()));
                }
                KeyStatus::Trusted
            }
            Verdict::Unknown => KeyStatus::Missing,
            Verdict::Changed { .. } => KeyStatus::Different,
        }))
    }

    /// A digest-cache hit for `path` without hashing (`None`: ask
    /// [`ServerFs::answer`] on a blocking thread). Uses what the previous
    /// `Canonicalize` saw of the path when that was the last question.
    pub fn peek_digest(&self, files: &mut Files, path: &[u8]) -> Option<[u8; 16]> {
        match files.take_seen(path) {
            Some(m) => self.digests.peek_metadata(&m),
            None => self.digests.peek(path),
        }
    }

    /// Answer `ev` for a connection whose open files are `files`.
    /// Returns the answer (if the event needs one) and a log note.
    pub fn answer(&self, files: &mut Files, ev: &Event) -> (Option<Answer>, Note) {
        use rcf_core::keys::trust::{TrustStore, Verdict};
        use rcf_core::keys::DigestKind;
        use rcf_core::server::Level;
        let store = || TrustStore::new(crate::ppkeys::FsPpkeys::new(&self.ppkeys), DigestKind::Md5);
        let seen = match ev {
            Event::Stat { path } => files.take_seen(path),
            _ => {
                files.seen = None;
                None
            }
        };
        match ev {
            Event::Log { .. } | Event::Denied { .. } => (None, None),
            Event::LookupKey { user, key, ip, .. } => match store().lookup(user, Some(ip), key) {
                Ok(l) => {
                    let note = l.renamed_from.as_ref().map(|old| {
                        (
                            Level::Info,
                            format!("Renaming old key from '{old}' to '{}'", l.file),
                        )
                    });
                    let status = match l.verdict {
                        Verdict::Trusted { .. } => KeyStatus::Trusted,
                        Verdict::Unknown => KeyStatus::Missing,
                        Verdict::Changed { .. } => KeyStatus::Different,
                    };
                    (Some(Answer::Key(status)), note)
                }
                Err(e) => (
                    Some(Answer::Key(KeyStatus::Missing)),
                    Some((Level::Error, format!("ppkeys lookup failed: {e}"))),
                ),
            },
            Event::SaveKey { user, key, ip, .. } => match store().trust(user, key) {
                Ok(s) if s.written => (
                    None,
                    Some((
                        Level::Notice,
                        format!(
                            "Saved trusted key {} for user '{user}' from {ip} as '{}'",
                            s.id, s.file
                        ),
                    )),
                ),
                Ok(s) => (
                    None,
                    Some((
                        Level::Verbose,
                        format!("Public key file '{}' already exists, not rewriting", s.file),
                    )),
                ),
                Err(e) => (
                    None,
                    Some((Level::Error, format!("Failed to save trusted key: {e}"))),
                ),
            },
            Event::LookupUser { user } => (Some(Answer::User(lookup_uid(user))), None),
            Event::ReverseLookup { ip } => (Some(Answer::Hostname(reverse_lookup(ip))), None),
            Event::Canonicalize { path } => {
                let (r, m) = canonicalize_in(files, path);
                if let (Ok(c), Some(m)) = (&r, m) {
                    files.seen = Some((c.path.clone(), m));
                }
                (Some(Answer::Canonical(r)), None)
            }
            Event::Stat { path } => match seen {
                Some(m) => (
                    Some(Answer::Stat(Ok(FileStat {
                        reply: stat_reply(&m),
                    }))),
                    None,
                ),
                None => (Some(Answer::Stat(stat(path))), None),
            },
            Event::StatLink { path, resolved } => {
                (Some(Answer::Stat(stat_link(path, resolved))), None)
            }
            Event::Open { path } => (Some(Answer::Opened(files.open(path))), None),
            Event::Read {
                handle,
                offset,
                len,
            } => (Some(files.read(*handle, *offset, *len)), None),
            Event::Close { handle } => {
                files.close(*handle);
                (None, None)
            }
            Event::ListDir { path } => (Some(Answer::Listing(list_dir(path))), None),
            Event::Digest { path } => (Some(Answer::Digest(self.digests.digest(path))), None),
            // Programs are run by the runtime adapter, which owns the child
            // processes and their timeouts; reaching here is a wiring bug.
            Event::ExecStart { .. } => (
                Some(Answer::ExecStarted(Err(
                    "EXEC is not handled by rcf-fs".into()
                ))),
                None,
            ),
            Event::ExecRead { .. } => (
                Some(Answer::ExecOutput(rcf_core::server::io::ExecChunk::Exit(
                    None,
                ))),
                None,
            ),
            Event::ExecKill { .. } => (None, None),
        }
    }
}

/// `getpwnam(user)->pw_uid`, reading `/etc/passwd` (no NSS modules).
pub fn lookup_uid(user: &str) -> Option<u32> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user)
            .then(|| f.nth(1)?.parse().ok())
            .flatten()
    })
}

/// Reverse DNS as `getnameinfo(NI_NAMEREQD)`: `None` when there is no name.
pub fn reverse_lookup(ip: &str) -> Option<String> {
    let addr: std::net::IpAddr = ip.parse().ok()?;
    let name = dns_lookup::lookup_addr(&addr).ok()?;
    // getnameinfo without NI_NAMEREQD hands back the numeric form; that is "no name".
    (name != ip).then_some(name)
}

/// The standard locations under a workdir.
pub fn workdir_paths(workdir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        workdir.join("ppkeys"),
        workdir.join("inputs"),
        workdir.join("masterfiles"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_keeps_dangling_links_and_resolves_live_ones() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::write(root.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", root.join("live")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
        let live = canonicalize(root.join("live").as_os_str().as_bytes()).unwrap();
        assert_eq!(live.path, root.join("f").as_os_str().as_bytes());
        let dang = canonicalize(root.join("dangling").as_os_str().as_bytes()).unwrap();
        assert_eq!(dang.path, root.join("dangling").as_os_str().as_bytes());
        let st = stat(&dang.path).unwrap().reply;
        assert_eq!(
            (st.file_type, st.mode, st.lmode),
            (FileType::Link, 0o777, 0o777)
        );
        assert_eq!(st.link_target, b"/nonexistent/target");
        assert_eq!(
            canonicalize(b"/nonexistent/x").unwrap_err(),
            "No such file or directory"
        );
    }

    #[test]
    fn clean_absolute_paths_are_recognised() {
        for ok in [&b"/"[..], b"/a", b"/a/b.c/..d", b"/a/.x"] {
            assert!(is_clean_absolute(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b"a/b",
            b"/a/",
            b"//a",
            b"/a//b",
            b"/a/./b",
            b"/a/../b",
            b"/a/.",
            b"/..",
        ] {
            assert!(
                !is_clean_absolute(bad),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// The fast path (`openat2`) and the slow one (realpath) agree: a clean
    /// path without links is itself, anything with a link or `..` is
    /// resolved, a dangling final link is kept.
    #[test]
    fn canonicalize_fast_path_agrees_with_realpath() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("la")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("a/dang")).unwrap();
        let b = |rel: &str| root.join(rel).as_os_str().as_bytes().to_vec();
        let c = |p: &[u8]| canonicalize(p).unwrap();
        assert_eq!(
            c(&b("a/b/f")),
            Canonical {
                path: b("a/b/f"),
                is_dir: false
            }
        );
        assert_eq!(
            c(&b("a/b")),
            Canonical {
                path: b("a/b"),
                is_dir: true
            }
        );
        assert_eq!(
            c(&b("la/b/f")),
            Canonical {
                path: b("a/b/f"),
                is_dir: false
            }
        );
        assert_eq!(
            c(&b("a/b/../b/f")),
            Canonical {
                path: b("a/b/f"),
                is_dir: false
            }
        );
        assert_eq!(
            c(&b("a/dang")),
            Canonical {
                path: b("a/dang"),
                is_dir: false
            }
        );
        assert_eq!(
            canonicalize(&b("a/missing")).unwrap_err(),
            "No such file or directory"
        );
        assert_eq!(canonicalize(&b("a/b/f/x")).unwrap_err(), "Not a directory");
    }

    /// `outside/f` ("secret"), `in` -> `outside` and `lf` -> `outside/f`:
    /// an authorised path's directory, and a file, swapped for symlinks.
    #[test]
    fn fstatat_and_std_metadata_agree() {
        use std::os::fd::AsFd;
        let (_d, root) = swapped_tree();
        let dir = fs::File::open(&root).unwrap();
        for name in ["outside", "outside/f", "in", "lf"] {
            let raw = fstatat_nofollow(dir.as_fd(), name.as_bytes()).unwrap();
            let std = Lstat::from(&fs::symlink_metadata(root.join(name)).unwrap());
            assert_eq!(raw, std, "{name}");
            assert_eq!(stat_reply(&raw), stat_reply(&std));
        }
    }

    #[test]
    fn burst_directory_memo_is_exact_and_forgotten_between_bursts() {
        let (_d, root) = swapped_tree();
        fs::create_dir(root.join("real")).unwrap();
        fs::write(root.join("real/a"), b"a").unwrap();
        std::os::unix::fs::symlink(root.join("outside/f"), root.join("real/l")).unwrap();
        let b = |p: PathBuf| p.into_os_string().into_vec();
        let mut files = Files::default();
        let canon = |files: &mut Files, p: &PathBuf| {
            canonicalize_in(files, p.as_os_str().as_bytes())
                .0
                .map(|c| c.path)
        };
        // Entries of one directory: one descriptor, exact answers.
        assert_eq!(
            canon(&mut files, &root.join("real/a")),
            Ok(b(root.join("real/a")))
        );
        assert!(files.dir.is_some());
        // A final symlink is resolved like realpath (the ACL then sees where it points).
        assert_eq!(
            canon(&mut files, &root.join("real/l")),
            Ok(b(root.join("outside/f")))
        );
        // A symlinked directory on the way is never taken as canonical.
        assert_eq!(
            canon(&mut files, &root.join("in/f")),
            Ok(b(root.join("outside/f")))
        );
        assert!(canon(&mut files, &root.join("real/missing")).is_err());
        // The directory is swapped for a symlink between bursts: the next
        // burst looks it up afresh and follows the link to its real path.
        canon(&mut files, &root.join("real/a")).unwrap();
        files.end_burst();
        assert!(files.dir.is_none(), "an idle session holds no descriptor");
        fs::rename(root.join("real"), root.join("old")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("real")).unwrap();
        fs::write(root.join("outside/a"), b"elsewhere").unwrap();
        assert_eq!(
            canon(&mut files, &root.join("real/a")),
            Ok(b(root.join("outside/a")))
        );
        // and the lstat handed on is the real file's
        let (_, seen) = canonicalize_in(&mut files, root.join("old/a").as_os_str().as_bytes());
        assert_eq!(seen.unwrap().size, 1);
    }

    #[test]
    fn trusted_key_cache_follows_the_file() {
        use rcf_core::keys::{encode_public_pem, generate, key_id, ppkeys, DigestKind};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ppkeys");
        fs::create_dir(&dir).unwrap();
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let a = generate(&mut rng, 2048).unwrap().to_public_key();
        let b = generate(&mut rng, 2048).unwrap().to_public_key();
        let file =
            dir.join(ppkeys::trusted_key_file("root", &key_id(&a, DigestKind::Md5)).unwrap());
        let sfs = ServerFs::new(dir.clone());
        let ask = |k: &rcf_core::keys::RsaPublicKey| {
            let ev = Event::LookupKey {
                user: "root".into(),
                key_id: key_id(k, DigestKind::Md5).to_string(),
                key: k.clone(),
                ip: "127.0.0.1".into(),
            };
            match sfs.quick_key(&ev) {
                Some(Answer::Key(s)) => Some(s),
                None => None,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(ask(&a), None, "no file: the full lookup decides");
        fs::write(&file, encode_public_pem(&a).unwrap()).unwrap();
        assert_eq!(ask(&a), Some(KeyStatus::Trusted));
        assert_eq!(sfs.keys.map.lock().unwrap().len(), 1);
        assert_eq!(ask(&a), Some(KeyStatus::Trusted), "from the cache");
        // The file is replaced by another key under the same name: seen at once.
        std::thread::sleep(std::time::Duration::from_millis(5));
        fs::write(&file, encode_public_pem(&b).unwrap()).unwrap();
        assert_eq!(ask(&a), Some(KeyStatus::Different));
        // Revoked (deleted): no longer trusted from the cache.
        fs::remove_file(&file).unwrap();
        assert_eq!(ask(&a), None);
    }

    fn swapped_tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::create_dir(root.join("outside")).unwrap();
        fs::write(root.join("outside/f"), b"secret").unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("outside/f"), root.join("lf")).unwrap();
        (d, root)
    }

    /// Both ways of opening an authorised path refuse one whose directory
    /// was swapped for a symlink, and a final symlink unless `O_PATH`.
    #[test]
    fn both_exact_opens_refuse_a_swapped_component() {
        let (_d, root) = swapped_tree();
        let b = |rel: &str| root.join(rel).as_os_str().as_bytes().to_vec();
        for open in [
            open_exact as fn(&[u8], i32) -> io::Result<File>,
            open_checked_via_proc,
        ] {
            assert_eq!(
                open(&b("in/f"), 0).unwrap_err().raw_os_error(),
                Some(libc::ENOENT)
            );
            assert_eq!(
                open(&b("in/f"), libc::O_PATH).unwrap_err().raw_os_error(),
                Some(libc::ENOENT)
            );
            assert!(open(&b("lf"), 0).is_err());
            assert!(open(&b("lf"), libc::O_PATH)
                .unwrap()
                .metadata()
                .unwrap()
                .file_type()
                .is_symlink());
            let mut s = String::new();
            open(&b("outside/f"), 0)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "secret");
        }
    }

    /// `Stat` and the digest peek right after `Canonicalize` of the same
    /// path answer from what it saw; any other question in between, or
    /// another path, forgets it (then the file is looked at again).
    #[test]
    fn stat_after_canonicalize_reuses_its_lookup_once() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::write(root.join("f"), b"abc").unwrap();
        fs::write(root.join("g"), b"x").unwrap();
        let f = root.join("f").as_os_str().as_bytes().to_vec();
        let g = root.join("g").as_os_str().as_bytes().to_vec();
        let sfs = ServerFs::new(root.join("ppkeys"));
        let mut files = Files::default();
        let canon = |files: &mut Files, p: &[u8]| {
            sfs.answer(files, &Event::Canonicalize { path: p.to_vec() })
                .0
        };
        let stat_ev = |files: &mut Files, p: &[u8]| match sfs
            .answer(files, &Event::Stat { path: p.to_vec() })
            .0
        {
            Some(Answer::Stat(Ok(s))) => s.reply,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            canon(&mut files, &f),
            Some(Answer::Canonical(Ok(_)))
        ));
        assert!(files.seen.is_some());
        assert_eq!(stat_ev(&mut files, &f), stat(&f).unwrap().reply);
        assert!(files.seen.is_none(), "consumed");
        // another path in between: looked at afresh
        canon(&mut files, &f);
        assert_eq!(stat_ev(&mut files, &g).size, 1);
        assert!(files.seen.is_none());
        // the digest peek: a miss until hashed, then a hit from the memo
        canon(&mut files, &f);
        assert_eq!(sfs.peek_digest(&mut files, &f), None);
        let want: [u8; 16] = md5::Md5::digest(b"abc").into();
        assert_eq!(sfs.digests.digest(&f), Some(want));
        canon(&mut files, &f);
        assert_eq!(sfs.peek_digest(&mut files, &f), Some(want));
        assert!(files.seen.is_none());
        // a changed file is not served from the old entry
        fs::write(root.join("f"), b"abcd").unwrap();
        canon(&mut files, &f);
        assert_eq!(sfs.peek_digest(&mut files, &f), None);
    }

    /// The listing read through the checked descriptor has every entry
    /// once, `.` and `..` included, in readdir order (std's `read_dir` is
    /// readdir without the dots: the same order), with or without a
    /// trailing `/`; a file is refused.
    #[test]
    fn list_dir_reads_every_entry() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        let mut want: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("entry-{i:04}").into_bytes())
            .collect();
        for n in &want {
            fs::write(root.join(OsStr::from_bytes(n)), b"").unwrap();
        }
        let r = root.as_os_str().as_bytes().to_vec();
        for p in [r.clone(), [r.clone(), b"/".to_vec()].concat()] {
            let got = list_dir(&p).unwrap();
            let dots = |n: &Vec<u8>| n == b"." || n == b"..";
            assert_eq!(got.iter().filter(|n| dots(n)).count(), 2);
            let rest: Vec<Vec<u8>> = got.iter().filter(|n| !dots(n)).cloned().collect();
            let std_order: Vec<Vec<u8>> = fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_vec())
                .collect();
            assert_eq!(rest, std_order, "not in readdir order");
            let mut sorted = rest.clone();
            sorted.sort();
            want.sort();
            assert_eq!(sorted, want);
        }
        assert_eq!(
            list_dir(root.join("entry-0001").as_os_str().as_bytes()).unwrap_err(),
            "Not a directory"
        );
    }

    #[test]
    fn open_refuses_symlinks_and_flags_directories() {
        let d = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(d.path()).unwrap();
        fs::write(root.join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("l")).unwrap();
        let mut files = Files::default();
        assert!(files.open(root.join("l").as_os_str().as_bytes()).is_err());
        assert!(files.open(root.as_os_str().as_bytes()).unwrap().is_dir);
        let f = files.open(root.join("f").as_os_str().as_bytes()).unwrap();
        assert_eq!((f.size, f.is_dir), (5, false));
        assert_eq!(
            files.read(f.handle, 1, 100),
            Answer::Data {
                bytes: b"ello".to_vec(),
                current_size: 5
            }
        );
    }

    #[test]
    fn digest_cache_hits_until_the_file_changes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"abc").unwrap();
        let c = DigestCache::default();
        let pb = p.as_os_str().as_bytes();
        let d1 = c.digest(pb).unwrap();
        assert_eq!(c.digest(pb).unwrap(), d1);
        assert_eq!(c.stats(), (1, 1));
        fs::write(&p, b"abcd").unwrap();
        assert_ne!(c.digest(pb).unwrap(), d1);
        assert_eq!(c.digest(b"/nonexistent"), None);
    }

    /// Regression: a component of an authorised path swapped for a symlink
    /// to outside after the check. `stat`, `list_dir` and `digest` used to
    /// follow it (leaking metadata, names and a content oracle); like
    /// `Files::open` they now refuse it as a missing file.
    #[test]
    fn stat_listing_and_digest_refuse_a_component_swapped_for_a_symlink() {
        let (_d, root) = swapped_tree();
        let b = |rel: &str| root.join(rel).as_os_str().as_bytes().to_vec();
        let enoent = "No such file or directory".to_string();
        assert_eq!(stat(&b("in/f")).unwrap_err(), enoent);
        assert_eq!(
            list_dir(&[b("in"), b"/".to_vec()].concat()).unwrap_err(),
            enoent
        );
        assert!(list_dir(&b("in")).is_err());
        assert_eq!(DigestCache::default().digest(&b("in/f")), None);
        assert_eq!(DigestCache::default().digest(&b("lf")), None);
        // The real paths still work.
        assert_eq!(stat(&b("outside/f")).unwrap().reply.size, 6);
        assert!(list_dir(&[b("outside"), b"/".to_vec()].concat())
            .unwrap()
            .contains(&b"f".to_vec()));
        assert!(DigestCache::default().digest(&b("outside/f")).is_some());
        // A symlink at a canonical path that resolves was swapped in after
        // the check: refused, never merged with its target's metadata. A
        // dangling one is still reported as a link.
        assert_eq!(stat(&b("lf")).unwrap_err(), enoent);
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dl")).unwrap();
        assert_eq!(stat(&b("dl")).unwrap().reply.lmode, 0o777);
    }

    #[test]
    fn listing_includes_dot_entries() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a"), b"").unwrap();
        let l = list_dir(d.path().as_os_str().as_bytes()).unwrap();
        assert!(l.contains(&b".".to_vec()) && l.contains(&b"..".to_vec()));
        assert!(l.contains(&b"a".to_vec()));
    }

    #[test]
    fn uid_lookup_reads_passwd() {
        assert_eq!(lookup_uid("root"), Some(0));
        assert_eq!(lookup_uid("no-such-user-rcf"), None);
    }
}
