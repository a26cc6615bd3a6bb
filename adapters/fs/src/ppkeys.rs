//! The ppkeys directory on disk.
//!
//! Every write is atomic and never replaces an existing file: the contents go
//! to a temporary file in the same directory (mode 0600, `O_EXCL`), are
//! fsynced, then hard-linked to the final name (which fails if the name
//! exists), and the directory is fsynced. A crash leaves either no file or
//! the whole file, never half a key, and never a clobbered trusted key.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcf_core::keys::ppkeys::{PPKEYS_DIR, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};
use rcf_core::keys::trust::PpkeysDir;
use rcf_core::keys::{
    key_id, parse_private_pem, parse_public_pem, DigestKind, KeyError, KeyId, RsaPrivateKey,
    RsaPublicKey, MAX_PEM_LEN,
};
use thiserror::Error;

/// A filesystem failure, with the operation and path that failed.
#[derive(Debug, Error)]
pub enum FsError {
    /// A system call failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done (`open`, `write`, `rename`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file is larger than a key file can be; it was not read.
    #[error("'{path}' is larger than {max} bytes, not a key file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// Caller error: a name that is not a single plain file name.
    #[error("'{0}' is not a plain file name")]
    BadName(String),
    /// The key directory is accessible by group or others (CFEngine refuses
    /// to run then).
    #[error("UNTRUSTED: Private key directory {path} (mode {mode:o}) was not private!")]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl FsError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
        move |source| FsError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The underlying OS error kind, if this is an I/O failure.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            FsError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Read a whole file of at most `max` bytes, refusing bigger ones without
/// reading them (a key path pointing at /dev/zero must not eat memory).
pub fn read_limited(path: &Path, max: usize) -> Result<Vec<u8>, FsError> {
    let f = File::open(path).map_err(FsError::io("open", path))?;
    // Room for the whole (small) file up front: one read and the EOF read,
    // instead of read_to_end's growing 32, 64, 128... byte reads (six
    // syscalls per key lookup, once per connection).
    let mut buf = Vec::with_capacity(max.saturating_add(1).min(8 * 1024));
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(FsError::io("read", path))?;
    if buf.len() > max {
        return Err(FsError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(buf)
}

/// Like [`read_limited`] with the key-file limit, but a missing file is
/// `Ok(None)`.
pub fn read_key_file(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match read_limited(path, MAX_PEM_LEN) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Create `dir` (and missing parents) with mode 0700 if it does not exist.
/// An existing directory is left as it is; see [`check_private_dir`].
pub fn ensure_private_dir(dir: &Path) -> Result<(), FsError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(FsError::io("mkdir", dir))
}

/// CFEngine's check on ppkeys: no group or other permission bits. A missing
/// directory passes (it will be created 0700).
pub fn check_private_dir(dir: &Path) -> Result<(), FsError> {
    match fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(FsError::NotPrivate {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::Io {
            op: "stat",
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FsError::io("fsync", dir))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(dir: &Path, name: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Create a fresh temporary file next to `name` (0600 until chmod), trying
/// a few names in case a crashed process with our PID left one behind.
fn create_temp(dir: &Path, name: &str, mode: u32) -> Result<(PathBuf, File), FsError> {
    let mut last = None;
    for _ in 0..16 {
        let tmp = temp_path(dir, name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((tmp, e)),
            Err(e) => {
                return Err(FsError::Io {
                    op: "create",
                    path: tmp,
                    source: e,
                })
            }
        }
    }
    let (path, source) = last.expect("loop ran");
    Err(FsError::Io {
        op: "create",
        path,
        source,
    })
}

fn split(path: &Path) -> Result<(&Path, &str), FsError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FsError::BadName(path.display().to_string()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Atomically create `path` with `contents` and permission `mode`, never
/// replacing an existing file. `Ok(false)` means `path` already existed and
/// nothing was changed.
pub fn write_new_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<bool, FsError> {
    let (dir, name) = split(path)?;
    let (tmp, mut f) = create_temp(dir, name, mode)?;
    let result = (|| {
        // The umask may have removed bits; set exactly what was asked.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(FsError::io("chmod", &tmp))?;
        f.write_all(contents).map_err(FsError::io("write", &tmp))?;
        f.sync_all().map_err(FsError::io("fsync", &tmp))?;
        drop(f);
        let created = link_no_replace(&tmp, path)?;
        if created {
            fsync_dir(dir)?;
        }
        Ok(created)
    })();
    // Whatever happened, the temporary name must go (ignore "not found").
    let _ = fs::remove_file(&tmp);
    result
}

/// Atomically replace (or create) `path` with `contents` and permission
/// `mode`: temp file, fsync, rename over, fsync the directory. For files
/// that are meant to be rewritten, such as `WORKDIR/randseed`.
pub fn write_replace_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    let (dir, name) = split(path)?;
    let (tmp, mut f) = create_temp(dir, name, mode)?;
    let result = (|| {
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(FsError::io("chmod", &tmp))?;
        f.write_all(contents).map_err(FsError::io("write", &tmp))?;
        f.sync_all().map_err(FsError::io("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(FsError::io("rename", path))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Give `from`'s file the name `to` unless `to` exists. Hard link first (it
/// refuses an existing target atomically); where links are unsupported, fall
/// back to check-then-rename.
fn link_no_replace(from: &Path, to: &Path) -> Result<bool, FsError> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(FsError::Io {
            op: "link",
            path: from.to_path_buf(),
            source: e,
        }),
        Err(_) => {
            if fs::symlink_metadata(to).is_ok() {
                return Ok(false);
            }
            fs::rename(from, to).map_err(FsError::io("rename", from))?;
            Ok(true)
        }
    }
}

/// The host's own key pair, loaded from `WORKDIR/ppkeys`.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// `localhost.priv`: signs the TLS handshake.
    pub private: RsaPrivateKey,
    /// `localhost.pub` (identical to the private key's public half).
    pub public: RsaPublicKey,
    /// The host's key id, as peers will compute it.
    pub id: KeyId,
}

/// Why the host key pair could not be loaded. Messages follow CFEngine's
/// (`LoadSecretKeys`) and always name the file.
#[derive(Debug, Error)]
pub enum HostKeyError {
    /// `WORKDIR/ppkeys` is group/other accessible: CFEngine refuses to run.
    #[error(transparent)]
    NotPrivate(FsError),
    /// A key file is missing or unreadable.
    #[error("Couldn't find a {which} key at '{path}', use cf-key to get one. ({source})")]
    Missing {
        /// `private` or `public`.
        which: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: FsError,
    },
    /// A key file does not hold a usable key.
    #[error("Error reading {which} key at '{path}' ({source})")]
    BadKey {
        /// `private` or `public`.
        which: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// The two files hold different keys (CFEngine would run with a broken
    /// identity; we refuse).
    #[error("public key '{public}' does not belong to private key '{private}'")]
    Mismatch {
        /// `localhost.pub`.
        public: PathBuf,
        /// `localhost.priv`.
        private: PathBuf,
    },
}

/// Load and check the host key pair of `workdir`, as cf-serverd and
/// cf-agent do at start: ppkeys must be private, `localhost.priv` (plain or
/// legacy-encrypted) and `localhost.pub` must parse, pass the key checks and
/// match each other.
pub fn load_host_key(workdir: &Path, kind: DigestKind) -> Result<HostKey, HostKeyError> {
    let dir = workdir.join(PPKEYS_DIR);
    check_private_dir(&dir).map_err(HostKeyError::NotPrivate)?;
    let read = |which: &'static str, path: &Path| {
        read_limited(path, MAX_PEM_LEN).map_err(|source| HostKeyError::Missing {
            which,
            path: path.to_path_buf(),
            source,
        })
    };
    let (priv_path, pub_path) = (dir.join(PRIVATE_KEY_FILE), dir.join(PUBLIC_KEY_FILE));
    let private = parse_private_pem(&read("private", &priv_path)?).map_err(|source| {
        HostKeyError::BadKey {
            which: "private",
            path: priv_path.clone(),
            source,
        }
    })?;
    let public =
        parse_public_pem(&read("public", &pub_path)?).map_err(|source| HostKeyError::BadKey {
            which: "public",
            path: pub_path.clone(),
            source,
        })?;
    if private.to_public_key() != public {
        return Err(HostKeyError::Mismatch {
            public: pub_path,
            private: priv_path,
        });
    }
    let id = key_id(&public, kind);
    Ok(HostKey {
        private,
        public,
        id,
    })
}

/// Why a new host key pair could not be stored.
#[derive(Debug, Error)]
pub enum NewHostKeyError {
    /// The key could not be PEM-encoded.
    #[error(transparent)]
    Encode(#[from] KeyError),
    /// The ppkeys directory or a key file could not be made or written.
    #[error(transparent)]
    Write(#[from] FsError),
}

/// Stores a freshly made host `key` in the `ppkeys` directory (created,
/// and made private, when needed) as `localhost.priv`, then
/// `localhost.pub`, each created new with mode 0600: the quick-start key
/// pair rcf-serverd and rcf-agent make when a host has none. A key file
/// that already exists is never replaced ([`write_new_atomic`]).
pub fn write_new_host_key(ppkeys: &Path, key: &RsaPrivateKey) -> Result<(), NewHostKeyError> {
    let pub_pem = rcf_core::keys::encode_public_pem(&key.to_public_key())?;
    let priv_pem = rcf_core::keys::encode_private_pem(key)?;
    ensure_private_dir(ppkeys)?;
    write_new_atomic(&ppkeys.join(PRIVATE_KEY_FILE), priv_pem.as_bytes(), 0o600)?;
    write_new_atomic(&ppkeys.join(PUBLIC_KEY_FILE), pub_pem.as_bytes(), 0o600)?;
    Ok(())
}

/// A ppkeys directory on disk.
#[derive(Debug, Clone)]
pub struct FsPpkeys {
    dir: PathBuf,
}

impl FsPpkeys {
    /// Use `dir` (normally `WORKDIR/ppkeys`); it need not exist yet, it is
    /// created 0700 on the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FsPpkeys { dir: dir.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self, name: &str) -> Result<PathBuf, FsError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(FsError::BadName(name.to_string()));
        }
        Ok(self.dir.join(name))
    }
}

impl PpkeysDir for FsPpkeys {
    type Error = FsError;

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FsError> {
        read_key_file(&self.file(name)?)
    }

    fn create_new(&self, name: &str, contents: &[u8]) -> Result<bool, FsError> {
        let path = self.file(name)?;
        ensure_private_dir(&self.dir)?;
        write_new_atomic(&path, contents, 0o600)
    }

    fn rename_new(&self, from: &str, to: &str) -> Result<bool, FsError> {
        let (from, to) = (self.file(from)?, self.file(to)?);
        match link_no_replace(&from, &to) {
            Ok(true) => {
                fs::remove_file(&from).map_err(FsError::io("unlink", &from))?;
                fsync_dir(&self.dir)?;
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) if e.io_kind() == Some(io::ErrorKind::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, name: &str) -> Result<bool, FsError> {
        let path = self.file(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                fsync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(FsError::Io {
                op: "unlink",
                path,
                source: e,
            }),
        }
    }

    fn list(&self) -> Result<Vec<String>, FsError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(FsError::Io {
                    op: "opendir",
                    path: self.dir.clone(),
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(FsError::io("readdir", &self.dir))?;
            // Names that are not UTF-8 cannot be key files we wrote.
            if let Ok(name) = ent.file_name().into_string() {
                out.push(name);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rcf_core::keys::trust::{Outcome, TrustStore, Verdict};
    use rcf_core::keys::{encode_public_pem, generate, DigestKind, RsaPublicKey};
    use std::sync::OnceLock;

    fn key() -> &'static RsaPublicKey {
        static K: OnceLock<RsaPublicKey> = OnceLock::new();
        K.get_or_init(|| {
            generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), 2048)
                .unwrap()
                .to_public_key()
        })
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn create_new_is_0600_in_a_0700_dir_and_never_overwrites() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work/ppkeys");
        let d = FsPpkeys::new(&dir);
        assert!(d.list().unwrap().is_empty(), "missing dir lists empty");
        assert!(d.create_new("a.pub", b"one").unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("a.pub")), 0o600);
        assert!(!d.create_new("a.pub", b"two").unwrap());
        assert_eq!(fs::read(dir.join("a.pub")).unwrap(), b"one");
        assert_eq!(
            d.list().unwrap(),
            vec!["a.pub".to_string()],
            "no temp files left"
        );
    }

    /// A new host key pair is stored where `load_host_key` finds it, private,
    /// and a second write replaces neither file.
    #[test]
    fn write_new_host_key_then_load() {
        let tmp = tempfile::tempdir().unwrap();
        let ppkeys = tmp.path().join(PPKEYS_DIR);
        let key = generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(2), 2048).unwrap();
        write_new_host_key(&ppkeys, &key).unwrap();
        assert_eq!(mode(&ppkeys), 0o700);
        for f in [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE] {
            assert_eq!(mode(&ppkeys.join(f)), 0o600, "{f}");
        }
        let loaded = load_host_key(tmp.path(), DigestKind::Md5).unwrap();
        assert!(loaded.private == key);
        assert_eq!(loaded.public, key.to_public_key());
        let before = fs::read(ppkeys.join(PRIVATE_KEY_FILE)).unwrap();
        let other = generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(3), 2048).unwrap();
        write_new_host_key(&ppkeys, &other).unwrap();
        assert_eq!(fs::read(ppkeys.join(PRIVATE_KEY_FILE)).unwrap(), before);
        let again = load_host_key(tmp.path(), DigestKind::Md5).unwrap();
        assert_eq!(again.public, key.to_public_key());
    }

    #[test]
    fn rename_new_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let d = FsPpkeys::new(tmp.path());
        d.create_new("old.pub", b"k").unwrap();
        d.create_new("taken.pub", b"t").unwrap();
        assert!(!d.rename_new("old.pub", "taken.pub").unwrap());
        assert!(d.rename_new("old.pub", "new.pub").unwrap());
        assert!(!d.rename_new("old.pub", "new2.pub").unwrap(), "source gone");
        assert_eq!(d.read("new.pub").unwrap().unwrap(), b"k");
        assert_eq!(d.read("old.pub").unwrap(), None);
        assert!(d.remove("new.pub").unwrap());
        assert!(!d.remove("new.pub").unwrap());
    }

    #[test]
    fn bad_names_and_big_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = FsPpkeys::new(tmp.path());
        for n in ["", ".", "..", "../x", "a/b", "a\0b"] {
            assert!(matches!(d.read(n), Err(FsError::BadName(_))), "{n:?}");
            assert!(
                matches!(d.create_new(n, b"x"), Err(FsError::BadName(_))),
                "{n:?}"
            );
        }
        fs::write(tmp.path().join("big.pub"), vec![b'x'; MAX_PEM_LEN + 1]).unwrap();
        assert!(matches!(d.read("big.pub"), Err(FsError::TooLarge { .. })));
    }

    #[test]
    fn replace_atomic_rewrites() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("randseed");
        write_replace_atomic(&p, b"one", 0o600).unwrap();
        write_replace_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn host_key_loading() {
        let tmp = tempfile::tempdir().unwrap();
        let pp = tmp.path().join("ppkeys");
        ensure_private_dir(&pp).unwrap();
        // Missing.
        let e = load_host_key(tmp.path(), DigestKind::Md5).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Couldn't find a private key at '"),
            "{e}"
        );
        assert!(e.to_string().contains("localhost.priv"));
        // cf-key's own files (legacy-encrypted private key).
        fs::write(
            pp.join("localhost.priv"),
            include_bytes!("../../../core/src/keys/testdata/cfkey-legacy.priv"),
        )
        .unwrap();
        fs::write(
            pp.join("localhost.pub"),
            include_bytes!("../../../core/src/keys/testdata/cfkey.pub"),
        )
        .unwrap();
        let k = load_host_key(tmp.path(), DigestKind::Md5).unwrap();
        assert_eq!(
            format!("{}\n", k.id),
            include_str!("../../../core/src/keys/testdata/cfkey.id")
        );
        // A public key of another pair.
        fs::write(pp.join("localhost.pub"), encode_public_pem(key()).unwrap()).unwrap();
        assert!(matches!(
            load_host_key(tmp.path(), DigestKind::Md5),
            Err(HostKeyError::Mismatch { .. })
        ));
        // A bad public key names its file.
        fs::write(pp.join("localhost.pub"), b"junk").unwrap();
        let e = load_host_key(tmp.path(), DigestKind::Md5).unwrap_err();
        assert!(e.to_string().contains("localhost.pub"), "{e}");
        // Non-private directory.
        fs::set_permissions(&pp, fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            load_host_key(tmp.path(), DigestKind::Md5),
            Err(HostKeyError::NotPrivate(_))
        ));
    }

    #[test]
    fn private_dir_check() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pp");
        assert!(check_private_dir(&p).is_ok());
        ensure_private_dir(&p).unwrap();
        assert!(check_private_dir(&p).is_ok());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_private_dir(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "UNTRUSTED: Private key directory {} (mode 755) was not private!",
                p.display()
            )
        );
    }

    #[test]
    fn trust_store_over_a_real_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ppkeys");
        let store = TrustStore::new(FsPpkeys::new(&dir), DigestKind::Md5);
        // Old-style file from an old installation.
        ensure_private_dir(&dir).unwrap();
        fs::write(
            dir.join("root-192.0.2.5.pub"),
            encode_public_pem(key()).unwrap(),
        )
        .unwrap();
        let out = store
            .verify("root", Some("192.0.2.5"), key(), false)
            .unwrap();
        let Outcome::Trusted(l) = out else {
            panic!("{out:?}")
        };
        assert_eq!(l.renamed_from.as_deref(), Some("root-192.0.2.5.pub"));
        assert!(matches!(l.verdict, Verdict::Trusted { .. }));
        assert!(dir.join(&l.file).exists());
        assert!(!dir.join("root-192.0.2.5.pub").exists());
        // Trust on first use for another user writes a 0600 file.
        let out = store.verify("bob", None, key(), true).unwrap();
        let Outcome::NewlyTrusted(_, saved) = out else {
            panic!("{out:?}")
        };
        assert!(saved.written);
        assert_eq!(mode(&dir.join(&saved.file)), 0o600);
        assert_eq!(store.list().unwrap().len(), 2);
    }
}
