//! PostgreSQL trust store for rcf-serverd replicas (`--trust-store
//! postgresql://…`): trusted keys, the time and address each was trusted
//! from, and revocations, shared by every replica behind a load balancer.
//!
//! * Trust on first use is one `INSERT … ON CONFLICT DO NOTHING` (one
//!   transaction): two replicas accepting the same new host at the same
//!   moment store one key, and a unique index on (user, address) among
//!   unrevoked keys refuses a second key for a host already trusted.
//! * A replica LISTENs on [`CHANNEL`] ([`PgTrustStore::listen_for_revocations`]);
//!   a trigger announces every change to a trusted key there. While that
//!   listening connection is up, a key this replica saw trusted since it
//!   started listening is answered from its cache without a round trip
//!   (a notification drops it first, so a revocation made anywhere takes
//!   effect at the next connection on every replica, milliseconds later).
//!   Any other lookup, and every lookup while not listening, asks the
//!   database.
//! * Each replica caches the keys it has seen trusted. When the database is
//!   unreachable (or does not answer within the timeout), those keys are
//!   still served (`Decision::Trusted { cached: true }`); anything else, new
//!   TOFU included, fails with [`PgError::Unavailable`]. The next call
//!   reconnects: no restart is needed when the database returns.
//! * [`migrate`] creates or upgrades the schema (`rcf-serverd --trust-store
//!   … --migrate`); the store itself never changes the schema.
//!
//! Connections use no TLS: point the URL at a local socket, loopback, or a
//! network the database is already protected on.

#[cfg(feature = "scratch-server")]
pub mod scratch;

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rcf_core::keys::backend::{Decision, Refused, TrustBackend, TrustedKey};
use rcf_core::keys::trust::RemoveTarget;
use rcf_core::keys::{
    check_public_key, encode_public_pem, key_id, parse_public_pem, DigestKind, KeyError, KeyId,
    RsaPublicKey,
};
use rcf_core::lastseen::{check_address, Direction, Quality, Seen};
use thiserror::Error;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// How long one connection attempt or statement may take by default before
/// the database is taken as unreachable.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a replica waits after a failed connection attempt before the
/// next one (meanwhile it answers from its cache at once).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(1);

/// The schema, one step per version; [`migrate`] applies those not yet
/// recorded in `rcf_schema`. Never edit a released step: append one.
const MIGRATIONS: &[&str] = &[
    // 1: trusted keys and revocations.
    "CREATE TABLE rcf_trust (
        username     text        NOT NULL,
        key_id       text        NOT NULL,
        public_pem   text        NOT NULL,
        trusted_from text,
        trusted_at   timestamptz NOT NULL DEFAULT now(),
        revoked_at   timestamptz,
        PRIMARY KEY (username, key_id)
     );
     CREATE UNIQUE INDEX rcf_trust_one_key_per_host
        ON rcf_trust (username, trusted_from)
        WHERE revoked_at IS NULL AND trusted_from IS NOT NULL;
     CREATE INDEX rcf_trust_by_key ON rcf_trust (key_id);",
    // 2: lastseen, as 3.21's cf_lastseen.lmdb holds it: one quality record
    // per key and direction, the key's last address.
    "CREATE TABLE rcf_lastseen (
        key_id    text             NOT NULL,
        direction \"char\"           NOT NULL CHECK (direction IN ('i', 'o')),
        address   text             NOT NULL,
        lastseen  bigint           NOT NULL,
        q         double precision NOT NULL,
        expect    double precision NOT NULL,
        var       double precision NOT NULL,
        dq        double precision NOT NULL,
        PRIMARY KEY (key_id, direction)
     );
     CREATE INDEX rcf_lastseen_by_address ON rcf_lastseen (address);",
    // 3: every change to a trusted key (a revocation by rcf-key -r, a hand
    // edit, a delete) is announced on channel `rcf_trust` with the key id
    // as payload (`*` for a TRUNCATE), so replicas drop it from their cache
    // at once instead of asking the database on every connection.
    "CREATE FUNCTION rcf_trust_notify() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            PERFORM pg_notify('rcf_trust', '*');
        ELSE
            PERFORM pg_notify('rcf_trust', OLD.key_id);
        END IF;
        RETURN NULL;
     END $$;
     CREATE TRIGGER rcf_trust_changed AFTER UPDATE OR DELETE ON rcf_trust
        FOR EACH ROW EXECUTE FUNCTION rcf_trust_notify();
     CREATE TRIGGER rcf_trust_truncated AFTER TRUNCATE ON rcf_trust
        FOR EACH STATEMENT EXECUTE FUNCTION rcf_trust_notify();",
];

/// The channel replicas LISTEN on for changed keys (see migration 3).
pub const CHANNEL: &str = "rcf_trust";

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Why a PostgreSQL trust operation failed.
#[derive(Debug, Error)]
pub enum PgError {
    /// The URL is not a usable PostgreSQL connection string.
    #[error("--trust-store: bad PostgreSQL URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    /// The database cannot be reached or stopped answering; only keys in
    /// this replica's cache can be answered until it returns.
    #[error("PostgreSQL trust store unreachable ({0}); only cached keys are trusted, new keys are refused")]
    Unavailable(String),
    /// The tables are missing or from another version.
    #[error("PostgreSQL trust store schema is {found}, this build needs {SCHEMA_VERSION}: run rcf-serverd --trust-store … --migrate")]
    Schema {
        /// The version found (0: no schema).
        found: i32,
    },
    /// The database refused a statement.
    #[error("PostgreSQL trust store: {0}")]
    Db(#[source] tokio_postgres::Error),
    /// A key to look up or trust is unusable.
    #[error("key refused: {0}")]
    Key(#[source] KeyError),
    /// A lastseen address that cannot be stored.
    #[error(transparent)]
    Address(#[from] rcf_core::lastseen::BadAddress),
    /// The database holds a key that does not parse (hand-edited rows).
    #[error("PostgreSQL trust store holds an unreadable key for {user}/{id}")]
    Corrupt {
        /// The row's user.
        user: String,
        /// The row's key id.
        id: String,
    },
}

impl PgError {
    fn from_db(e: tokio_postgres::Error) -> PgError {
        match e.code() {
            Some(c) if *c == SqlState::UNDEFINED_TABLE => PgError::Schema { found: 0 },
            // Class 08 (connection exception) and 57 (operator intervention:
            // shutdown, cannot connect now) mean "not reachable right now".
            Some(c) if c.code().starts_with("08") || c.code().starts_with("57") => {
                PgError::Unavailable(e.to_string())
            }
            Some(_) => PgError::Db(e),
            None => PgError::Unavailable(e.to_string()),
        }
    }

    /// Whether this failure means the database could not be asked (the
    /// cache may answer); other failures are answers.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, PgError::Unavailable(_))
    }
}

/// Parse `postgresql://…` (or a key=value string) with `timeout` as the
/// connect timeout.
pub fn config(url: &str, timeout: Duration) -> Result<Config, PgError> {
    let mut c = Config::from_str(url).map_err(PgError::Url)?;
    c.connect_timeout(timeout);
    if c.get_application_name().is_none() {
        c.application_name("rcf");
    }
    Ok(c)
}

async fn connect(config: &Config, timeout: Duration) -> Result<Client, PgError> {
    let (client, conn) = tokio::time::timeout(timeout, config.connect(NoTls))
        .await
        .map_err(|_| PgError::Unavailable(format!("no connection within {timeout:?}")))?
        .map_err(PgError::from_db)?;
    // The connection task ends when the client is dropped or the server
    // goes away; the client then reports closed and we reconnect.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Create or upgrade the schema to [`SCHEMA_VERSION`], in one transaction
/// under an advisory lock (replicas started together migrate once).
/// Returns the version found before.
pub async fn migrate(url: &str) -> Result<i32, PgError> {
    let cfg = config(url, DEFAULT_TIMEOUT)?;
    let mut client = connect(&cfg, DEFAULT_TIMEOUT).await?;
    let tx = client.transaction().await.map_err(PgError::from_db)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7263000020);
         CREATE TABLE IF NOT EXISTS rcf_schema (version integer NOT NULL);",
    )
    .await
    .map_err(PgError::from_db)?;
    let found: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM rcf_schema", &[])
        .await
        .map_err(PgError::from_db)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(PgError::Schema { found });
    }
    for step in &MIGRATIONS[found as usize..] {
        tx.batch_execute(step).await.map_err(PgError::from_db)?;
    }
    tx.execute("DELETE FROM rcf_schema", &[])
        .await
        .map_err(PgError::from_db)?;
    tx.execute("INSERT INTO rcf_schema VALUES ($1)", &[&SCHEMA_VERSION])
        .await
        .map_err(PgError::from_db)?;
    tx.commit().await.map_err(PgError::from_db)?;
    Ok(found)
}

/// Address text as stored: canonical when it parses (`::ffff:1.2.3.4` as
/// `1.2.3.4`, `0::1` as `::1`), so lookups by address compare equal.
fn canonical_addr(a: &str) -> String {
    match a.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        Ok(v4) => v4.to_string(),
        Err(_) => a.to_string(),
    }
}

/// The PostgreSQL trust store of one replica: a connection (re-made when
/// lost) and a cache of the keys it has seen trusted.
pub struct PgTrustStore {
    config: Config,
    kind: DigestKind,
    timeout: Duration,
    client: Mutex<Option<Arc<Client>>>,
    cache: RwLock<HashMap<(String, KeyId), Cached>>,
    /// The LISTEN connection is up (cache entries marked fresh may answer).
    listening: AtomicBool,
    /// Bumped by every notification and every change of `listening`: an
    /// answer read from the database is cached as fresh only if no
    /// invalidation arrived while it was read.
    invalidations: AtomicU64,
    /// Key checks answered from the fresh cache (metrics, tests).
    cache_hits: AtomicU64,
    retry: Duration,
    down_since: Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for PgTrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTrustStore")
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

struct Row {
    pem: String,
    revoked: bool,
}

/// A key this replica saw trusted.
struct Cached {
    key: RsaPublicKey,
    /// Read while listening for changes, and none arrived since: may be
    /// answered without asking the database.
    fresh: bool,
}

impl PgTrustStore {
    /// A store for `url`, naming keys with `kind` ids. Connects lazily: a
    /// replica starts even while the database is down (cache empty, so
    /// nothing is trusted until it answers). `timeout` bounds each connect
    /// and statement.
    pub fn new(url: &str, kind: DigestKind, timeout: Duration) -> Result<Self, PgError> {
        Ok(PgTrustStore {
            config: config(url, timeout)?,
            kind,
            timeout,
            client: Mutex::new(None),
            cache: RwLock::new(HashMap::new()),
            listening: AtomicBool::new(false),
            invalidations: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            retry: DEFAULT_RETRY,
            down_since: Mutex::new(None),
        })
    }

    /// After a failed connection attempt, answer "unavailable" at once for
    /// `retry` instead of trying again on every connection: a database
    /// that drops packets would otherwise cost each connection the whole
    /// timeout while cached keys could be served immediately.
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// Connect now and check the schema version, so a start-up with a
    /// wrong URL or an unmigrated database fails loudly.
    pub async fn check(&self) -> Result<(), PgError> {
        let found: i32 = self
            .run(|c| async move {
                c.query_one("SELECT coalesce(max(version), 0) FROM rcf_schema", &[])
                    .await
            })
            .await?
            .get(0);
        if found != SCHEMA_VERSION {
            return Err(PgError::Schema { found });
        }
        Ok(())
    }

    /// Number of keys in this replica's cache.
    pub fn cached(&self) -> usize {
        self.cache.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn client(&self) -> Result<Arc<Client>, PgError> {
        if let Some(c) = self.lock_client().as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let last_failure = *self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last_failure {
            if t.elapsed() < self.retry {
                return Err(PgError::Unavailable(format!(
                    "down, next connection attempt within {:?}",
                    self.retry
                )));
            }
        }
        match connect(&self.config, self.timeout).await {
            Ok(c) => {
                let c = Arc::new(c);
                *self.lock_client() = Some(c.clone());
                *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(c)
            }
            Err(e) => {
                if e.is_unavailable() {
                    *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(tokio::time::Instant::now());
                }
                Err(e)
            }
        }
    }

    fn lock_client(&self) -> std::sync::MutexGuard<'_, Option<Arc<Client>>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one statement (or a few) on the shared connection, bounded by the
    /// timeout; an unreachable database drops the connection so the next
    /// call makes a new one.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, PgError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let c = self.client().await?;
        let r = match tokio::time::timeout(self.timeout, f(c)).await {
            Ok(r) => r.map_err(PgError::from_db),
            Err(_) => Err(PgError::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        };
        if matches!(r, Err(PgError::Unavailable(_))) {
            *self.lock_client() = None;
        }
        r
    }

    fn cache_put(&self, user: &str, id: &KeyId, key: &RsaPublicKey) {
        self.cache_put_read(user, id, key, None);
    }

    /// Cache `key` as trusted; `read_at` is the invalidation count taken
    /// before the database was read (`None`: not read from the database
    /// just now), which decides whether the entry is fresh.
    fn cache_put_read(&self, user: &str, id: &KeyId, key: &RsaPublicKey, read_at: Option<u64>) {
        let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the cache's lock, which `invalidate` also takes: a
        // notification handled after this cannot be missed.
        let fresh = read_at.is_some_and(|g| {
            self.listening.load(Ordering::Acquire)
                && self.invalidations.load(Ordering::Acquire) == g
        });
        c.insert(
            (user.to_string(), id.clone()),
            Cached {
                key: key.clone(),
                fresh,
            },
        );
    }

    /// The fast path: `key` is cached as fresh and the LISTEN connection is
    /// up, so no change to it was announced since it was read.
    fn cache_fresh(&self, user: &str, id: &KeyId, key: &RsaPublicKey) -> bool {
        self.listening.load(Ordering::Acquire)
            && self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(user.to_string(), id.clone()))
                .is_some_and(|c| c.fresh && &c.key == key)
    }

    /// A change to key `payload` (or to every key, `*`) was announced, or
    /// the listening state changed (`None`): forget the key, or mark every
    /// entry as needing the database again (they stay as the fallback for
    /// an unreachable database).
    fn invalidate(&self, payload: Option<&str>) {
        let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        match payload {
            Some("*") => c.clear(),
            Some(id) => c.retain(|(_, k), _| k.to_string() != id),
            None => c.values_mut().for_each(|e| e.fresh = false),
        }
    }

    /// Key checks answered from the fresh cache without a database round
    /// trip, since start.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Whether the LISTEN connection is up (the fast path is on).
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::Release);
        self.invalidate(None);
    }

    /// Keep a LISTEN connection on [`CHANNEL`] for as long as the runtime
    /// runs, reconnecting after the retry delay whenever it is lost; `note`
    /// is told when listening starts and stops (for the server's log).
    /// Without it the store is correct but asks the database every time.
    pub fn listen_for_revocations(
        self: Arc<Self>,
        note: impl Fn(&str) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Log a failure to (re)connect once, not at every retry.
            let mut quiet = false;
            loop {
                let r = self.listen_once(&note).await;
                if self.is_listening() {
                    self.set_listening(false);
                    quiet = false;
                }
                match r {
                    Err(e) if !quiet => {
                        note(&format!(
                            "Trust store: not listening for revocations ({e}); every key check asks the database"
                        ));
                        quiet = true;
                    }
                    Err(_) => {}
                    Ok(()) => note(
                        "Trust store: the listening connection ended; every key check asks the database until it is back",
                    ),
                }
                tokio::time::sleep(self.retry).await;
            }
        })
    }

    async fn listen_once(&self, note: &(impl Fn(&str) + Send + Sync)) -> Result<(), PgError> {
        let mut cfg = self.config.clone();
        cfg.keepalives_idle(Duration::from_secs(5));
        let (client, mut conn) = tokio::time::timeout(self.timeout, cfg.connect(NoTls))
            .await
            .map_err(|_| PgError::Unavailable(format!("no connection within {:?}", self.timeout)))?
            .map_err(PgError::from_db)?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
        });
        let listen = tokio::time::timeout(self.timeout, client.batch_execute("LISTEN rcf_trust"))
            .await
            .map_err(|_| PgError::Unavailable("LISTEN not answered".into()))
            .and_then(|r| r.map_err(PgError::from_db));
        if let Err(e) = listen {
            driver.abort();
            return Err(e);
        }
        self.set_listening(true);
        note("Trust store: listening for revocations; trusted keys are answered from the cache");
        while let Some(p) = rx.recv().await {
            self.invalidate(Some(&p));
        }
        drop(client);
        Ok(())
    }

    fn cache_drop(&self, user: &str, id: &KeyId) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(user.to_string(), id.clone()));
    }

    fn cache_has(&self, user: &str, id: &KeyId, key: &RsaPublicKey) -> bool {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(user.to_string(), id.clone()))
            .is_some_and(|c| &c.key == key)
    }

    async fn row(&self, user: &str, id: &str) -> Result<Option<Row>, PgError> {
        let (user, id) = (user.to_string(), id.to_string());
        let r = self
            .run(|c| async move {
                c.query_opt(
                    "SELECT public_pem, revoked_at IS NOT NULL FROM rcf_trust
                     WHERE username = $1 AND key_id = $2",
                    &[&user, &id],
                )
                .await
            })
            .await?;
        Ok(r.map(|r| Row {
            pem: r.get(0),
            revoked: r.get(1),
        }))
    }

    fn same_key(
        &self,
        row: &Row,
        user: &str,
        id: &KeyId,
        presented: &RsaPublicKey,
    ) -> Result<bool, PgError> {
        // The common case, cheaply: the row holds exactly what we write.
        if encode_public_pem(presented).is_ok_and(|p| p == row.pem) {
            return Ok(true);
        }
        parse_public_pem(row.pem.as_bytes())
            .map(|k| &k == presented)
            .map_err(|_| PgError::Corrupt {
                user: user.to_string(),
                id: id.to_string(),
            })
    }

    async fn verify_inner(
        &self,
        user: &str,
        from: Option<&str>,
        presented: &RsaPublicKey,
        allow_new: bool,
    ) -> Result<Decision, PgError> {
        check_public_key(presented).map_err(PgError::Key)?;
        let id = key_id(presented, self.kind);
        if self.cache_fresh(user, &id, presented) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Decision::Trusted { id, cached: false });
        }
        let ids = id.to_string();
        let read_at = self.invalidations.load(Ordering::Acquire);
        let row = match self.row(user, &ids).await {
            Ok(r) => r,
            Err(e) if e.is_unavailable() && self.cache_has(user, &id, presented) => {
                return Ok(Decision::Trusted { id, cached: true });
            }
            Err(e) => return Err(e),
        };
        match row {
            Some(r) if r.revoked => {
                self.cache_drop(user, &id);
                return Ok(Decision::Refused {
                    id,
                    why: Refused::Revoked,
                });
            }
            Some(r) if self.same_key(&r, user, &id, presented)? => {
                self.cache_put_read(user, &id, presented, Some(read_at));
                return Ok(Decision::Trusted { id, cached: false });
            }
            Some(_) => {
                // Same id, other key: a digest collision or a hand edit.
                return Ok(Decision::Refused {
                    id: id.clone(),
                    why: Refused::Changed { stored: Some(id) },
                });
            }
            None if !allow_new => {
                return Ok(Decision::Refused {
                    id,
                    why: Refused::Unknown,
                })
            }
            None => {}
        }
        // Trust on first use: one statement, atomic against every replica.
        let pem = encode_public_pem(presented).map_err(PgError::Key)?;
        let from = from.map(canonical_addr);
        let (u, i, f) = (user.to_string(), ids.clone(), from.clone());
        let inserted = self
            .run(|c| async move {
                c.query_opt(
                    "INSERT INTO rcf_trust (username, key_id, public_pem, trusted_from)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
                    &[&u, &i, &pem, &f],
                )
                .await
            })
            .await?;
        if inserted.is_some() {
            self.cache_put_read(user, &id, presented, Some(read_at));
            return Ok(Decision::NewlyTrusted { id });
        }
        // A conflict: the same key stored meanwhile by another replica, or
        // this host already holds another key.
        match self.row(user, &ids).await? {
            Some(r) if r.revoked => Ok(Decision::Refused {
                id,
                why: Refused::Revoked,
            }),
            Some(r) if self.same_key(&r, user, &id, presented)? => {
                self.cache_put(user, &id, presented);
                Ok(Decision::NewlyTrusted { id })
            }
            Some(_) => Ok(Decision::Refused {
                id: id.clone(),
                why: Refused::Changed { stored: Some(id) },
            }),
            None => {
                let (u, f) = (user.to_string(), from);
                let stored = self
                    .run(|c| async move {
                        c.query_opt(
                            "SELECT key_id FROM rcf_trust WHERE username = $1
                             AND trusted_from = $2 AND revoked_at IS NULL",
                            &[&u, &f],
                        )
                        .await
                    })
                    .await?
                    .and_then(|r| r.get::<_, String>(0).parse().ok());
                Ok(Decision::Refused {
                    id,
                    why: Refused::Changed { stored },
                })
            }
        }
    }

    async fn trust_inner(
        &self,
        user: &str,
        key: &RsaPublicKey,
        from: Option<&str>,
    ) -> Result<bool, PgError> {
        check_public_key(key).map_err(PgError::Key)?;
        let id = key_id(key, self.kind);
        let pem = encode_public_pem(key).map_err(PgError::Key)?;
        let (u, i, f) = (user.to_string(), id.to_string(), from.map(canonical_addr));
        let changed = self
            .run(|c| async move {
                c.query_opt(
                    "INSERT INTO rcf_trust AS t (username, key_id, public_pem, trusted_from)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (username, key_id) DO UPDATE
                        SET revoked_at = NULL, trusted_at = now(),
                            trusted_from = coalesce(EXCLUDED.trusted_from, t.trusted_from)
                        WHERE t.revoked_at IS NOT NULL
                     RETURNING 1",
                    &[&u, &i, &pem, &f],
                )
                .await
            })
            .await?
            .is_some();
        self.cache_put(user, &id, key);
        Ok(changed)
    }

    async fn revoke_inner(&self, target: &RemoveTarget) -> Result<Vec<String>, PgError> {
        let (sql, arg) = match target {
            RemoveTarget::Key(id) => (
                "UPDATE rcf_trust SET revoked_at = now()
                 WHERE key_id = $1 AND revoked_at IS NULL RETURNING username, key_id",
                id.to_string(),
            ),
            RemoveTarget::Address(a) => (
                "UPDATE rcf_trust SET revoked_at = now()
                 WHERE trusted_from = $1 AND revoked_at IS NULL RETURNING username, key_id",
                canonical_addr(a),
            ),
        };
        let rows = self
            .run(|c| async move { c.query(sql, &[&arg]).await })
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let (user, id): (String, String) = (r.get(0), r.get(1));
            if let Ok(k) = id.parse::<KeyId>() {
                self.cache_drop(&user, &k);
            }
            out.push(format!("{user}/{id}"));
        }
        out.sort();
        Ok(out)
    }

    async fn list_inner(&self) -> Result<Vec<TrustedKey>, PgError> {
        let rows = self
            .run(|c| async move {
                c.query(
                    "SELECT username, key_id, public_pem, trusted_from,
                            extract(epoch FROM trusted_at)::bigint,
                            extract(epoch FROM revoked_at)::bigint
                     FROM rcf_trust ORDER BY username, key_id",
                    &[],
                )
                .await
            })
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let (user, id): (String, String) = (r.get(0), r.get(1));
            let Ok(kid) = id.parse::<KeyId>() else {
                return Err(PgError::Corrupt { user, id });
            };
            let pem: String = r.get(2);
            out.push(TrustedKey {
                user,
                id: kid,
                key: parse_public_pem(pem.as_bytes()).ok(),
                from: r.get(3),
                trusted_at: r.get(4),
                revoked_at: r.get(5),
            });
        }
        Ok(out)
    }
}

/// One lastseen record of the fleet, as [`PgTrustStore::lastseen`] lists.
#[derive(Debug, Clone, PartialEq)]
pub struct LastseenEntry {
    /// The peer's key id.
    pub key: KeyId,
    /// Its last address (the same for both directions, as in 3.21).
    pub address: String,
    /// Who opened the connections.
    pub direction: Direction,
    /// Last time and interval statistics.
    pub quality: Quality,
}

fn letter(d: Direction) -> i8 {
    d.letter() as i8
}

impl PgTrustStore {
    /// Record a sighting as 3.21's `UpdateLastSawHost` does, in one
    /// statement per row so replicas recording the same peer at once never
    /// lose an update: the quality row is inserted or averaged in place
    /// (same rule as [`Quality::next`]), and the key's other direction
    /// takes the new address too.
    pub async fn record_lastseen(&self, seen: &Seen<'_>) -> Result<Quality, PgError> {
        check_address(seen.address)?;
        let (k, d, a, t) = (
            seen.key.to_string(),
            letter(seen.direction),
            canonical_addr(seen.address),
            seen.now,
        );
        let row = self
            .run(|c| async move {
                let r = c
                    .query_one(
                        "INSERT INTO rcf_lastseen AS l
                            (key_id, direction, address, lastseen, q, expect, var, dq)
                         VALUES ($1, $2, $3, $4, 0, 0, 0, 0)
                         ON CONFLICT (key_id, direction) DO UPDATE SET
                            address = EXCLUDED.address,
                            lastseen = EXCLUDED.lastseen,
                            q = (EXCLUDED.lastseen - l.lastseen)::double precision,
                            expect = 0.4 * (EXCLUDED.lastseen - l.lastseen) + 0.6 * l.expect,
                            var = 0.4 * ((EXCLUDED.lastseen - l.lastseen) - l.expect) ^ 2
                                  + 0.6 * l.var,
                            dq = (EXCLUDED.lastseen - l.lastseen) - l.q
                         RETURNING lastseen, q, expect, var, dq",
                        &[&k, &d, &a, &t],
                    )
                    .await?;
                c.execute(
                    "UPDATE rcf_lastseen SET address = $3
                     WHERE key_id = $1 AND direction <> $2 AND address <> $3",
                    &[&k, &d, &a],
                )
                .await?;
                Ok(r)
            })
            .await?;
        Ok(Quality {
            lastseen: row.get(0),
            q: row.get(1),
            expect: row.get(2),
            var: row.get(3),
            dq: row.get(4),
        })
    }

    /// The fleet's lastseen records, by key then direction (incoming first).
    pub async fn lastseen(&self) -> Result<Vec<LastseenEntry>, PgError> {
        let rows = self
            .run(|c| async move {
                c.query(
                    "SELECT key_id, direction, address, lastseen, q, expect, var, dq
                     FROM rcf_lastseen ORDER BY key_id, direction",
                    &[],
                )
                .await
            })
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let id: String = r.get(0);
            let Ok(key) = id.parse::<KeyId>() else {
                return Err(PgError::Corrupt {
                    user: "(lastseen)".into(),
                    id,
                });
            };
            let direction = if r.get::<_, i8>(1) == b'i' as i8 {
                Direction::Incoming
            } else {
                Direction::Outgoing
            };
            out.push(LastseenEntry {
                key,
                address: r.get(2),
                direction,
                quality: Quality {
                    lastseen: r.get(3),
                    q: r.get(4),
                    expect: r.get(5),
                    var: r.get(6),
                    dq: r.get(7),
                },
            });
        }
        Ok(out)
    }

    /// Delete the lastseen records of a key or an address (`rcf-key -r`);
    /// returns how many rows went.
    pub async fn forget_lastseen(&self, target: &RemoveTarget) -> Result<u64, PgError> {
        let (sql, arg) = match target {
            RemoveTarget::Key(id) => ("DELETE FROM rcf_lastseen WHERE key_id = $1", id.to_string()),
            RemoveTarget::Address(a) => (
                "DELETE FROM rcf_lastseen WHERE address = $1",
                canonical_addr(a),
            ),
        };
        self.run(|c| async move { c.execute(sql, &[&arg]).await })
            .await
    }
}

impl TrustBackend for PgTrustStore {
    type Error = PgError;

    fn verify(
        &self,
        user: &str,
        from: Option<&str>,
        presented: &RsaPublicKey,
        allow_new: bool,
    ) -> impl Future<Output = Result<Decision, PgError>> + Send {
        self.verify_inner(user, from, presented, allow_new)
    }

    fn trust(
        &self,
        user: &str,
        key: &RsaPublicKey,
        from: Option<&str>,
    ) -> impl Future<Output = Result<bool, PgError>> + Send {
        self.trust_inner(user, key, from)
    }

    fn revoke(
        &self,
        target: &RemoveTarget,
    ) -> impl Future<Output = Result<Vec<String>, PgError>> + Send {
        self.revoke_inner(target)
    }

    fn list(&self) -> impl Future<Output = Result<Vec<TrustedKey>, PgError>> + Send {
        self.list_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_canonical() {
        assert_eq!(canonical_addr("::ffff:127.0.0.2"), "127.0.0.2");
        assert_eq!(canonical_addr("0::1"), "::1");
        assert_eq!(canonical_addr("10.0.0.1"), "10.0.0.1");
        assert_eq!(canonical_addr("host"), "host");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            PgTrustStore::new("postgresql://[::1", DigestKind::Md5, DEFAULT_TIMEOUT),
            Err(PgError::Url(_))
        ));
        assert!(PgTrustStore::new(
            "postgresql://rcf@127.0.0.1:5432/rcf",
            DigestKind::Md5,
            DEFAULT_TIMEOUT
        )
        .is_ok());
    }

    #[tokio::test]
    async fn unreachable_database_is_unavailable_not_a_hang() {
        // A port nothing listens on (bound then dropped).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = PgTrustStore::new(
            &format!("postgresql://rcf@127.0.0.1:{port}/rcf"),
            DigestKind::Md5,
            Duration::from_secs(2),
        )
        .unwrap();
        let e = s.check().await.unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(e.to_string().contains("new keys are refused"), "{e}");
    }
}
