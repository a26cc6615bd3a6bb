//! The ppkeys trust store: is a peer's key trusted, trust it on first use,
//! list and remove trusted keys (SEMANTICS E.4, E.5).
//!
//! The decisions live here; the file access is behind [`PpkeysDir`], which
//! `rcf-fs` implements over a real directory (atomic, never-overwriting
//! writes) and tests implement in memory.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;

use rsa::RsaPublicKey;
use thiserror::Error;

use super::ppkeys::{self, NameError, PpkeysFile};
use super::{
    check_public_key, encode_public_pem, key_id, parse_public_pem, DigestKind, KeyError, KeyId,
};

/// File operations the trust store needs, on one flat directory. `name` is
/// always a single file name built by [`super::ppkeys`], never a path.
pub trait PpkeysDir {
    /// The storage's failure type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The contents of `name`, or `None` if it does not exist.
    /// Implementations should refuse (error) files larger than
    /// [`super::MAX_PEM_LEN`] rather than read them whole.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Create `name` holding `contents`, readable only by the owner, so that
    /// a crash never leaves a partial file, and never replacing an existing
    /// file: `Ok(false)` if `name` already existed (nothing written).
    fn create_new(&self, name: &str, contents: &[u8]) -> Result<bool, Self::Error>;

    /// Rename `from` to `to` without replacing `to`. `Ok(false)` if `to`
    /// already exists or `from` is gone (nothing changed).
    fn rename_new(&self, from: &str, to: &str) -> Result<bool, Self::Error>;

    /// Delete `name`; `Ok(false)` if it did not exist.
    fn remove(&self, name: &str) -> Result<bool, Self::Error>;

    /// Names of the files in the directory, in any order.
    fn list(&self) -> Result<Vec<String>, Self::Error>;
}

impl<T: PpkeysDir + ?Sized> PpkeysDir for &T {
    type Error = T::Error;
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        (**self).read(name)
    }
    fn create_new(&self, name: &str, contents: &[u8]) -> Result<bool, Self::Error> {
        (**self).create_new(name, contents)
    }
    fn rename_new(&self, from: &str, to: &str) -> Result<bool, Self::Error> {
        (**self).rename_new(from, to)
    }
    fn remove(&self, name: &str) -> Result<bool, Self::Error> {
        (**self).remove(name)
    }
    fn list(&self) -> Result<Vec<String>, Self::Error> {
        (**self).list()
    }
}

/// Why a trust operation failed.
#[derive(Debug, Error)]
pub enum TrustError<E: std::error::Error + 'static> {
    /// The storage behind [`PpkeysDir`] failed.
    #[error("ppkeys storage: {0}")]
    Store(#[source] E),
    /// The key to look up or trust is unusable (too small, bad exponent...).
    #[error("key refused: {0}")]
    Key(#[source] KeyError),
    /// The user name or address cannot form a key file name.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Caller error: a removal target that is neither a key id nor an address.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("'{0}' is neither a key id (MD5=…, SHA=…) nor an address")]
pub struct BadTarget(pub String);

/// The outcome of looking a presented key up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A stored key equal to the presented one was found in `file`.
    Trusted {
        /// The file holding it (always the new-style name).
        file: String,
    },
    /// No key is stored for this user and id (nor for the old-style
    /// user + address name).
    Unknown,
    /// A file was found under the presented key's name but holds another key,
    /// or cannot be read as a key (`stored` is then `None`). `file` is the
    /// file compared: the old-style `<user>-<ip>.pub` when that was the one
    /// found (it is left in place, unlike in CFEngine).
    Changed {
        /// The file that was compared.
        file: String,
        /// The id of the key actually in the file, if it parses.
        stored: Option<KeyId>,
    },
}

/// Full result of [`TrustStore::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The presented key's id (what to log and put in `$(connection.key)`).
    pub id: KeyId,
    /// Where the key is or would be stored: `<user>-<id>.pub`.
    pub file: String,
    /// The decision.
    pub verdict: Verdict,
    /// Set when an old-style `<user>-<ip>.pub` was renamed to `file` during
    /// this lookup (log INFO `Renaming old key from '%s' to '%s'`).
    pub renamed_from: Option<String>,
}

/// Result of [`TrustStore::trust`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The key's id.
    pub id: KeyId,
    /// `<user>-<id>.pub`.
    pub file: String,
    /// `false` if the file already existed and was left alone (CFEngine:
    /// `Public key file '%s' already exists, not rewriting`).
    pub written: bool,
}

/// Result of [`TrustStore::verify`]: the whole trust-on-first-use decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key was already trusted.
    Trusted(Lookup),
    /// The key was unknown or changed, the caller allowed trust on first use,
    /// and it is now stored (log NOTICE `Trusting new key: <id>`).
    NewlyTrusted(Lookup, Saved),
    /// The key is unknown or changed and the caller did not allow trusting it
    /// (server: `TRUST FAILED, peer presented an untrusted key`).
    Refused(Lookup),
}

/// One trusted key found in ppkeys by [`TrustStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file name.
    pub file: String,
    /// The user part of the name (may be empty).
    pub user: String,
    /// The key id: from the name for new-style files, from the contents for
    /// old-style files (`None` if those cannot be read).
    pub id: Option<KeyId>,
    /// The address, for old-style names only.
    pub ip: Option<String>,
}

/// What [`TrustStore::remove`] deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveTarget {
    /// Every trusted file of this id, whatever the user, and old-style files
    /// holding a key with this id.
    Key(KeyId),
    /// Every old-style file of this address, and the new-style files of the
    /// keys those held.
    Address(String),
}

impl core::str::FromStr for RemoveTarget {
    type Err = BadTarget;

    /// Read a `cf-key -r` argument: `MD5=`/`SHA=` prefixed text is a key id
    /// (and must be well formed), anything else an address literal (no
    /// hostname resolution, as in cf-key).
    fn from_str(s: &str) -> Result<Self, BadTarget> {
        if s.starts_with("MD5=") || s.starts_with("SHA=") {
            return s
                .parse()
                .map(RemoveTarget::Key)
                .map_err(|_| BadTarget(s.into()));
        }
        // Reuse the old-style name check to keep it a plain address.
        ppkeys::old_style_key_file("", s).map_err(|_| BadTarget(s.into()))?;
        Ok(RemoveTarget::Address(s.to_string()))
    }
}

/// Trust decisions over one ppkeys directory.
#[derive(Debug)]
pub struct TrustStore<D> {
    dir: D,
    kind: DigestKind,
}

impl<D: PpkeysDir> TrustStore<D> {
    /// A store naming keys with `kind` ids (Community: [`DigestKind::Md5`]).
    pub fn new(dir: D, kind: DigestKind) -> Self {
        TrustStore { dir, kind }
    }

    /// The underlying directory.
    pub fn dir(&self) -> &D {
        &self.dir
    }

    fn store<T>(r: Result<T, D::Error>) -> Result<T, TrustError<D::Error>> {
        r.map_err(TrustError::Store)
    }

    /// Look up the key a peer presented, as CFEngine's `HavePublicKey`:
    /// `<user>-<id>.pub` first; if missing and `ip` is given, the old-style
    /// `<user>-<ip>.pub`, which is compared and, only when it holds the
    /// presented key, renamed to the new name (CFEngine renames before
    /// comparing; see the comment inside for why we do not).
    ///
    /// The presented key is checked with [`check_public_key`] first: a peer
    /// key CFEngine could not use is an error, never "unknown".
    pub fn lookup(
        &self,
        user: &str,
        ip: Option<&str>,
        presented: &RsaPublicKey,
    ) -> Result<Lookup, TrustError<D::Error>> {
        check_public_key(presented).map_err(TrustError::Key)?;
        let id = key_id(presented, self.kind);
        let file = ppkeys::trusted_key_file(user, &id)?;
        let mut renamed_from = None;
        let mut compared = file.clone();
        let mut stored = Self::store(self.dir.read(&file))?;
        if stored.is_none() {
            if let Some(ip) = ip {
                // Deliberate deviation from 3.21 (SEMANTICS.md open question
                // 13): CFEngine renames the old-style file to the *presented*
                // key's id before comparing, so a spoofer from the same IP
                // moves the real key away and breaks trust for the real
                // peer. We compare first and rename only a matching key: an
                // untrusted peer never changes the trust store.
                let old = ppkeys::old_style_key_file(user, ip)?;
                if let Some(bytes) = Self::store(self.dir.read(&old))? {
                    let matches = parse_public_pem(&bytes)
                        .map(|k| &k == presented)
                        .unwrap_or(false);
                    if matches && Self::store(self.dir.rename_new(&old, &file))? {
                        renamed_from = Some(old);
                        stored = Self::store(self.dir.read(&file))?;
                    } else {
                        compared = old;
                        stored = Some(bytes);
                    }
                }
            }
        }
        let verdict = match stored {
            None => Verdict::Unknown,
            Some(bytes) => match parse_public_pem(&bytes) {
                Ok(k) if &k == presented && compared == file => {
                    Verdict::Trusted { file: file.clone() }
                }
                Ok(k) if &k == presented => Verdict::Trusted { file: compared },
                Ok(k) => Verdict::Changed {
                    file: compared,
                    stored: Some(key_id(&k, self.kind)),
                },
                Err(_) => Verdict::Changed {
                    file: compared,
                    stored: None,
                },
            },
        };
        Ok(Lookup {
            id,
            file,
            verdict,
            renamed_from,
        })
    }

    /// [`Self::lookup`] when the presented key's own file (`<user>-<id>.pub`)
    /// exists: one read, never a rename or a write, so a server may answer
    /// it without a blocking pool. `Ok(None)` when that file is missing:
    /// only the full lookup (with its old-style fallback) can decide.
    pub fn lookup_own_file(
        &self,
        user: &str,
        presented: &RsaPublicKey,
    ) -> Result<Option<Lookup>, TrustError<D::Error>> {
        check_public_key(presented).map_err(TrustError::Key)?;
        let id = key_id(presented, self.kind);
        let file = ppkeys::trusted_key_file(user, &id)?;
        let Some(bytes) = Self::store(self.dir.read(&file))? else {
            return Ok(None);
        };
        let verdict = match parse_public_pem(&bytes) {
            Ok(k) if &k == presented => Verdict::Trusted { file: file.clone() },
            Ok(k) => Verdict::Changed {
                file: file.clone(),
                stored: Some(key_id(&k, self.kind)),
            },
            Err(_) => Verdict::Changed {
                file: file.clone(),
                stored: None,
            },
        };
        Ok(Some(Lookup {
            id,
            file,
            verdict,
            renamed_from: None,
        }))
    }

    /// Store `key` as trusted for `user` (`<user>-<id>.pub`, PEM RSA PUBLIC
    /// KEY), never overwriting an existing file, like `SavePublicKey`.
    pub fn trust(&self, user: &str, key: &RsaPublicKey) -> Result<Saved, TrustError<D::Error>> {
        check_public_key(key).map_err(TrustError::Key)?;
        let id = key_id(key, self.kind);
        let file = ppkeys::trusted_key_file(user, &id)?;
        let pem = encode_public_pem(key).map_err(TrustError::Key)?;
        let written = Self::store(self.dir.create_new(&file, pem.as_bytes()))?;
        Ok(Saved { id, file, written })
    }

    /// The whole decision for one connection: [`Self::lookup`], then, if the
    /// key is not trusted and `allow_new` (server: the peer is in
    /// `trustkeysfrom`; client: `trustkey => "true"`), [`Self::trust`].
    /// A changed key is trusted under its new id too (CFEngine does so).
    pub fn verify(
        &self,
        user: &str,
        ip: Option<&str>,
        presented: &RsaPublicKey,
        allow_new: bool,
    ) -> Result<Outcome, TrustError<D::Error>> {
        let lookup = self.lookup(user, ip, presented)?;
        match lookup.verdict {
            Verdict::Trusted { .. } => Ok(Outcome::Trusted(lookup)),
            _ if allow_new => {
                let saved = self.trust(user, presented)?;
                Ok(Outcome::NewlyTrusted(lookup, saved))
            }
            _ => Ok(Outcome::Refused(lookup)),
        }
    }

    /// Every trusted-key file (new and old style), sorted by file name.
    /// The host's own pair and unrelated files are left out.
    pub fn list(&self) -> Result<Vec<Entry>, TrustError<D::Error>> {
        let mut names = Self::store(self.dir.list())?;
        names.sort();
        let mut out = Vec::new();
        for file in names {
            match ppkeys::classify(&file) {
                PpkeysFile::Trusted { user, id } => out.push(Entry {
                    file,
                    user,
                    id: Some(id),
                    ip: None,
                }),
                PpkeysFile::OldStyle { user, ip } => {
                    let id = self.id_of_file(&file)?;
                    out.push(Entry {
                        file,
                        user,
                        id,
                        ip: Some(ip.to_string()),
                    });
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn id_of_file(&self, file: &str) -> Result<Option<KeyId>, TrustError<D::Error>> {
        Ok(Self::store(self.dir.read(file))?
            .and_then(|b| parse_public_pem(&b).ok())
            .map(|k| key_id(&k, self.kind)))
    }

    /// Delete the files `target` designates (see [`RemoveTarget`]); returns
    /// the names removed, sorted. Without lastseen, the address ↔ key link
    /// `cf-key -r` follows is taken from old-style files' contents.
    pub fn remove(&self, target: &RemoveTarget) -> Result<Vec<String>, TrustError<D::Error>> {
        let entries = self.list()?;
        let mut ids: Vec<KeyId> = Vec::new();
        let mut doomed: BTreeMap<String, ()> = BTreeMap::new();
        match target {
            RemoveTarget::Key(id) => ids.push(id.clone()),
            RemoveTarget::Address(addr) => {
                for e in &entries {
                    if e.ip.as_deref() == Some(addr.as_str()) || ip_text_eq(e.ip.as_deref(), addr) {
                        doomed.insert(e.file.clone(), ());
                        if let Some(id) = &e.id {
                            ids.push(id.clone());
                        }
                    }
                }
            }
        }
        for e in &entries {
            if e.id.as_ref().is_some_and(|i| ids.contains(i)) {
                doomed.insert(e.file.clone(), ());
            }
        }
        let mut removed = Vec::new();
        for file in doomed.into_keys() {
            if Self::store(self.dir.remove(&file))? {
                removed.push(file);
            }
        }
        Ok(removed)
    }
}

/// Compare address text semantically when both parse (`::1` vs `0::1`).
fn ip_text_eq(a: Option<&str>, b: &str) -> bool {
    match (
        a.and_then(|a| a.parse::<core::net::IpAddr>().ok()),
        b.parse::<core::net::IpAddr>().ok(),
    ) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// An in-memory [`PpkeysDir`], for tests and for callers that keep trust in
/// memory (e.g. a short-lived client). Never fails.
#[derive(Debug, Default)]
pub struct MemDir {
    files: RefCell<BTreeMap<String, Vec<u8>>>,
}

/// [`MemDir`] never fails; this type has no values.
#[derive(Debug, Error)]
#[error("impossible")]
pub enum Never {}

impl MemDir {
    /// The map; every method holds it only within its own body, so the
    /// borrow never overlaps another.
    fn files(&self) -> RefMut<'_, BTreeMap<String, Vec<u8>>> {
        self.files.borrow_mut()
    }

    /// Put a file in place directly (replacing), for setting up scenarios.
    pub fn insert(&self, name: &str, contents: &[u8]) {
        self.files().insert(name.to_string(), contents.to_vec());
    }
}

impl PpkeysDir for MemDir {
    type Error = Never;
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, Never> {
        Ok(self.files().get(name).cloned())
    }
    fn create_new(&self, name: &str, contents: &[u8]) -> Result<bool, Never> {
        let mut f = self.files();
        if f.contains_key(name) {
            return Ok(false);
        }
        f.insert(name.to_string(), contents.to_vec());
        Ok(true)
    }
    fn rename_new(&self, from: &str, to: &str) -> Result<bool, Never> {
        let mut f = self.files();
        if f.contains_key(to) {
            return Ok(false);
        }
        match f.remove(from) {
            Some(c) => {
                f.insert(to.to_string(), c);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn remove(&self, name: &str) -> Result<bool, Never> {
        Ok(self.files().remove(name).is_some())
    }
    fn list(&self) -> Result<Vec<String>, Never> {
        Ok(self.files().keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::codec::tests::keys;

    fn pk(i: usize) -> RsaPublicKey {
        keys()[i].to_public_key()
    }
    fn pem(i: usize) -> Vec<u8> {
        encode_public_pem(&pk(i)).unwrap().into_bytes()
    }
    fn id(i: usize) -> KeyId {
        key_id(&pk(i), DigestKind::Md5)
    }

    #[test]
    fn unknown_then_trusted_on_first_use() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        let out = store
            .verify("root", Some("127.0.0.1"), &pk(0), false)
            .unwrap();
        assert!(matches!(&out, Outcome::Refused(l) if l.verdict == Verdict::Unknown));
        assert!(
            store.dir().list().unwrap().is_empty(),
            "refusal writes nothing"
        );

        let out = store
            .verify("root", Some("127.0.0.1"), &pk(0), true)
            .unwrap();
        let file = format!("root-{}.pub", id(0));
        match out {
            Outcome::NewlyTrusted(_, saved) => {
                assert!(saved.written);
                assert_eq!(saved.file, file);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(store.dir().read(&file).unwrap().unwrap(), pem(0));
        let out = store.verify("root", None, &pk(0), false).unwrap();
        assert_eq!(
            out,
            Outcome::Trusted(Lookup {
                id: id(0),
                file: file.clone(),
                verdict: Verdict::Trusted { file },
                renamed_from: None,
            })
        );
        // Another user is another relation.
        assert!(matches!(
            store.verify("bob", None, &pk(0), false).unwrap(),
            Outcome::Refused(_)
        ));
    }

    /// The read-only fast path agrees with the full lookup whenever the
    /// presented key's own file exists (same key, another key, garbage),
    /// defers when it is missing, and never touches the directory.
    #[test]
    fn own_file_lookup_agrees_with_the_full_lookup() {
        let file = format!("root-{}.pub", id(0));
        for contents in [
            Some(pem(0)),
            Some(pem(1)),
            Some(b"not a key".to_vec()),
            None,
        ] {
            let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
            if let Some(c) = &contents {
                store.dir().insert(&file, c);
            }
            // An old-style file only the full lookup may rename.
            store.dir().insert("root-10.0.0.1.pub", &pem(0));
            let before = {
                let mut l = store.dir().list().unwrap();
                l.sort();
                l
            };
            let quick = store.lookup_own_file("root", &pk(0)).unwrap();
            let after = {
                let mut l = store.dir().list().unwrap();
                l.sort();
                l
            };
            assert_eq!(before, after, "the fast path wrote nothing");
            match (contents, quick) {
                (None, None) => {}
                (Some(_), Some(q)) => {
                    assert_eq!(q, store.lookup("root", Some("10.0.0.1"), &pk(0)).unwrap())
                }
                (c, q) => panic!("{c:?} {q:?}"),
            }
        }
    }

    #[test]
    fn never_overwrites() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        let file = format!("root-{}.pub", id(0));
        store.dir().insert(&file, b"not a key");
        let l = store.lookup("root", None, &pk(0)).unwrap();
        assert_eq!(
            l.verdict,
            Verdict::Changed {
                file: file.clone(),
                stored: None
            }
        );
        let s = store.trust("root", &pk(0)).unwrap();
        assert!(!s.written);
        assert_eq!(store.dir().read(&file).unwrap().unwrap(), b"not a key");
    }

    #[test]
    fn old_style_is_renamed_then_compared() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        store.dir().insert("root-10.0.0.1.pub", &pem(0));
        let l = store.lookup("root", Some("10.0.0.1"), &pk(0)).unwrap();
        let file = format!("root-{}.pub", id(0));
        assert_eq!(l.renamed_from.as_deref(), Some("root-10.0.0.1.pub"));
        assert_eq!(l.verdict, Verdict::Trusted { file: file.clone() });
        assert_eq!(store.dir().list().unwrap(), vec![file]);
    }

    #[test]
    fn old_style_spoofer_cannot_rename_the_real_key() {
        // Regression (deliberate deviation from 3.21, which renames before
        // comparing): a peer from the same IP presenting another key is
        // refused and the real peer's old-style file stays where it was.
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        store.dir().insert("root-10.0.0.1.pub", &pem(0));
        let l = store.lookup("root", Some("10.0.0.1"), &pk(1)).unwrap();
        assert_eq!(
            l.verdict,
            Verdict::Changed {
                file: "root-10.0.0.1.pub".into(),
                stored: Some(id(0))
            }
        );
        assert_eq!(l.renamed_from, None);
        assert_eq!(
            store.dir().list().unwrap(),
            vec!["root-10.0.0.1.pub".to_string()]
        );
        // The real peer is still trusted, and only now is the file renamed.
        let l = store.lookup("root", Some("10.0.0.1"), &pk(0)).unwrap();
        assert_eq!(
            l.verdict,
            Verdict::Trusted {
                file: format!("root-{}.pub", id(0))
            }
        );
        assert_eq!(l.renamed_from.as_deref(), Some("root-10.0.0.1.pub"));
    }

    #[test]
    fn new_style_wins_over_old_style() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        store.dir().insert("root-10.0.0.1.pub", &pem(1));
        store.trust("root", &pk(0)).unwrap();
        let l = store.lookup("root", Some("10.0.0.1"), &pk(0)).unwrap();
        assert!(matches!(l.verdict, Verdict::Trusted { .. }));
        assert_eq!(l.renamed_from, None);
        assert!(store.dir().read("root-10.0.0.1.pub").unwrap().is_some());
    }

    #[test]
    fn hostile_names_and_keys_are_errors() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        assert!(matches!(
            store.lookup("../../etc", None, &pk(0)),
            Err(TrustError::Name(_))
        ));
        assert!(matches!(
            store.lookup("root", Some("../x"), &pk(0)),
            Err(TrustError::Name(_))
        ));
        let small = parse_public_pem(include_bytes!("testdata/small1024.pub"));
        assert!(small.is_err(), "1024-bit keys never even parse");
    }

    #[test]
    fn list_and_remove() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        store.trust("root", &pk(0)).unwrap();
        store.trust("bob", &pk(0)).unwrap();
        store.trust("root", &pk(1)).unwrap();
        store.dir().insert("alice-10.0.0.7.pub", &pem(2));
        store.dir().insert("root-2.2.2.2.pub", b"junk");
        store.dir().insert("localhost.pub", &pem(2));
        store.dir().insert("README", b"x");
        let list = store.list().unwrap();
        assert_eq!(list.len(), 5);
        let old = list
            .iter()
            .find(|e| e.file == "alice-10.0.0.7.pub")
            .unwrap();
        assert_eq!(
            (old.user.as_str(), old.id.clone(), old.ip.as_deref()),
            ("alice", Some(id(2)), Some("10.0.0.7"))
        );
        assert_eq!(
            list.iter()
                .find(|e| e.file == "root-2.2.2.2.pub")
                .unwrap()
                .id,
            None
        );

        // By id: every user's file of that id.
        let r = store.remove(&RemoveTarget::Key(id(0))).unwrap();
        assert_eq!(
            r,
            vec![format!("bob-{}.pub", id(0)), format!("root-{}.pub", id(0))]
        );
        // By address: the old-style file and the new-style files of its key.
        store.trust("carol", &pk(2)).unwrap();
        let r = store
            .remove(&"10.0.0.7".parse::<RemoveTarget>().unwrap())
            .unwrap();
        assert_eq!(
            r,
            vec![
                "alice-10.0.0.7.pub".to_string(),
                format!("carol-{}.pub", id(2))
            ]
        );
        assert!(store.remove(&RemoveTarget::Key(id(2))).unwrap().is_empty());
        assert_eq!(store.list().unwrap().len(), 2);
        assert!("MD5=zz".parse::<RemoveTarget>().is_err());
        assert!("../x".parse::<RemoveTarget>().is_err());
    }
}
