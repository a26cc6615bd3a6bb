//! One interface over the places trusted keys can live: the ppkeys
//! directory (the default, [`super::trust::TrustStore`]) and a shared
//! database (`rcf-pg`'s PostgreSQL store, for replicas behind a load
//! balancer).
//!
//! The interface is asynchronous because a database answers over the
//! network; it names no runtime (the futures are plain `Future + Send`), so
//! rcf-core stays runtime-free. The ppkeys implementation answers at once
//! (its futures are ready on first poll) and does blocking file I/O, as it
//! always has: a server calls it where it called [`super::trust::TrustStore`].

use core::future::{ready, Future};

use rsa::RsaPublicKey;

use super::trust::{Outcome, PpkeysDir, RemoveTarget, TrustError, TrustStore, Verdict};
use super::{parse_public_pem, KeyId};

/// Why a presented key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The key is not trusted and trust on first use was not allowed
    /// (server: `TRUST FAILED, peer presented an untrusted key`).
    Unknown,
    /// The host (same user, same address) is already trusted with another
    /// key; a shared store refuses to trust a second one on first use.
    Changed {
        /// The key already trusted for that host, when known.
        stored: Option<KeyId>,
    },
    /// The key was revoked (`rcf-key -r`); only an explicit
    /// [`TrustBackend::trust`] re-admits it, never trust on first use.
    Revoked,
}

/// The decision on one presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The key is trusted. `cached` is set when the store was unreachable
    /// and the answer came from the replica's cache of trusted keys.
    Trusted {
        /// The key's id.
        id: KeyId,
        /// Answered from the cache because the store was unreachable.
        cached: bool,
    },
    /// The key was unknown, trust on first use was allowed, and it is now
    /// stored (log NOTICE `Trusting new key: <id>`). When two callers race
    /// on the same new key, both get this and one key is stored.
    NewlyTrusted {
        /// The key's id.
        id: KeyId,
    },
    /// The key is not accepted.
    Refused {
        /// The key's id.
        id: KeyId,
        /// Why.
        why: Refused,
    },
}

/// One trusted (or revoked) key, as listed by [`TrustBackend::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The user the key is trusted for (CFEngine: the connecting user,
    /// normally `root`; may be empty).
    pub user: String,
    /// The key id.
    pub id: KeyId,
    /// The key itself, when the store holds a readable copy.
    pub key: Option<RsaPublicKey>,
    /// The address it was first trusted from, when recorded.
    pub from: Option<String>,
    /// When it was trusted, seconds since the epoch, when recorded.
    pub trusted_at: Option<i64>,
    /// When it was revoked, seconds since the epoch; `None` while trusted.
    pub revoked_at: Option<i64>,
}

/// A store of trusted host keys.
pub trait TrustBackend {
    /// The store's failure type (I/O, database unreachable...).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The whole decision for one connection from `user` at address `from`
    /// presenting `presented`: trusted, newly trusted (only when `allow_new`,
    /// i.e. the peer is in `trustkeysfrom`), or refused. Newly trusting is
    /// atomic: a crash or a concurrent caller never leaves a partial key.
    fn verify(
        &self,
        user: &str,
        from: Option<&str>,
        presented: &RsaPublicKey,
        allow_new: bool,
    ) -> impl Future<Output = Result<Decision, Self::Error>> + Send;

    /// Trust `key` for `user` by an administrator's decision (import,
    /// `rcf-key` commands), recording `from` if given. Clears a revocation.
    /// `Ok(false)` when it was already trusted (nothing changed).
    fn trust(
        &self,
        user: &str,
        key: &RsaPublicKey,
        from: Option<&str>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Revoke what `target` designates (`cf-key -r`); returns a description
    /// of each entry revoked (file names for ppkeys, `user/id` otherwise).
    fn revoke(
        &self,
        target: &RemoveTarget,
    ) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send;

    /// Every key the store knows, revoked ones included where the store
    /// keeps them, sorted by user then id.
    fn list(&self) -> impl Future<Output = Result<Vec<TrustedKey>, Self::Error>> + Send;
}

/// The ppkeys directory as a [`TrustBackend`]: exactly
/// [`TrustStore::verify`]'s behaviour (a changed key is trusted under its
/// new id when allowed, as CFEngine does); revocation deletes the files, as
/// `cf-key -r` does, so nothing records it.
impl<D: PpkeysDir> TrustBackend for TrustStore<D> {
    type Error = TrustError<D::Error>;

    fn verify(
        &self,
        user: &str,
        from: Option<&str>,
        presented: &RsaPublicKey,
        allow_new: bool,
    ) -> impl Future<Output = Result<Decision, Self::Error>> + Send {
        let r = TrustStore::verify(self, user, from, presented, allow_new).map(|o| match o {
            Outcome::Trusted(l) => Decision::Trusted {
                id: l.id,
                cached: false,
            },
            Outcome::NewlyTrusted(l, _) => Decision::NewlyTrusted { id: l.id },
            Outcome::Refused(l) => {
                let why = match l.verdict {
                    Verdict::Changed { stored, .. } => Refused::Changed { stored },
                    _ => Refused::Unknown,
                };
                Decision::Refused { id: l.id, why }
            }
        });
        ready(r)
    }

    fn trust(
        &self,
        user: &str,
        key: &RsaPublicKey,
        _from: Option<&str>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        ready(TrustStore::trust(self, user, key).map(|s| s.written))
    }

    fn revoke(
        &self,
        target: &RemoveTarget,
    ) -> impl Future<Output = Result<Vec<String>, Self::Error>> + Send {
        ready(TrustStore::remove(self, target))
    }

    fn list(&self) -> impl Future<Output = Result<Vec<TrustedKey>, Self::Error>> + Send {
        ready(self.list_keys())
    }
}

impl<D: PpkeysDir> TrustStore<D> {
    /// [`TrustStore::list`] with each key read, as [`TrustedKey`]s: the
    /// files' entries that have an id (unreadable old-style files are left
    /// out), old-style files' address as `from`.
    fn list_keys(&self) -> Result<Vec<TrustedKey>, TrustError<D::Error>> {
        let mut out = Vec::new();
        for e in self.list()? {
            let Some(id) = e.id else { continue };
            let key = self
                .dir()
                .read(&e.file)
                .map_err(TrustError::Store)?
                .and_then(|b| parse_public_pem(&b).ok());
            out.push(TrustedKey {
                user: e.user,
                id,
                key,
                from: e.ip,
                trusted_at: None,
                revoked_at: None,
            });
        }
        out.sort_by(|a, b| (&a.user, &a.id).cmp(&(&b.user, &b.id)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::trust::MemDir;
    use crate::keys::{generate, DigestKind};
    use rand_chacha::rand_core::SeedableRng;
    use std::sync::OnceLock;

    fn key(n: u64) -> RsaPublicKey {
        static K: OnceLock<Vec<RsaPublicKey>> = OnceLock::new();
        K.get_or_init(|| {
            (0..2)
                .map(|i| {
                    generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(100 + i), 2048)
                        .unwrap()
                        .to_public_key()
                })
                .collect()
        })[n as usize]
            .clone()
    }

    /// Poll a future that must be ready at once (the ppkeys backend's).
    fn now<F: Future>(f: F) -> F::Output {
        let mut f = core::pin::pin!(f);
        let mut cx = core::task::Context::from_waker(core::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            core::task::Poll::Ready(v) => v,
            core::task::Poll::Pending => panic!("ppkeys backend futures are ready at once"),
        }
    }

    #[test]
    fn ppkeys_backend_keeps_trust_store_behaviour() {
        let store = TrustStore::new(MemDir::default(), DigestKind::Md5);
        let id = crate::keys::key_id(&key(0), DigestKind::Md5);
        let d = now(TrustBackend::verify(
            &store,
            "root",
            Some("10.0.0.1"),
            &key(0),
            false,
        ))
        .unwrap();
        assert_eq!(
            d,
            Decision::Refused {
                id: id.clone(),
                why: Refused::Unknown
            }
        );
        let d = now(TrustBackend::verify(&store, "root", None, &key(0), true)).unwrap();
        assert_eq!(d, Decision::NewlyTrusted { id: id.clone() });
        let d = now(TrustBackend::verify(&store, "root", None, &key(0), false)).unwrap();
        assert_eq!(
            d,
            Decision::Trusted {
                id: id.clone(),
                cached: false
            }
        );
        assert!(!now(TrustBackend::trust(&store, "root", &key(0), None)).unwrap());
        assert!(now(TrustBackend::trust(&store, "bob", &key(1), None)).unwrap());
        let l = now(TrustBackend::list(&store)).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].user, "bob");
        assert_eq!(l[1].key.as_ref(), Some(&key(0)));
        let gone = now(TrustBackend::revoke(&store, &RemoveTarget::Key(id.clone()))).unwrap();
        assert_eq!(gone, vec![format!("root-{id}.pub")]);
        let d = now(TrustBackend::verify(&store, "root", None, &key(0), false)).unwrap();
        assert!(matches!(
            d,
            Decision::Refused {
                why: Refused::Unknown,
                ..
            }
        ));
    }
}
