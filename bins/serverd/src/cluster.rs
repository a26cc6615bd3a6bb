//! Wiring of the cluster flags (issue 20): `--proxy-from`, `--trust-store
//! postgresql://…`, `--migrate`, and where lastseen is recorded (3.21's
//! `state/cf_lastseen.lmdb` on a single node, the shared PostgreSQL
//! database in a cluster). The serve loops' side is `rcf_tokio::cluster`.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use rcf_core::keys::{DigestKind, KeyId};
use rcf_core::lastseen::{Direction, Seen};
use rcf_core::proxy::ProxyPolicy;
use rcf_core::server::Level;
use rcf_fs::lastseen::LmdbLastseen;
use rcf_pg::PgTrustStore;
use rcf_tokio::cluster::LastseenSink;
use rcf_tokio::{Logger, Shared};

/// How long the server waits for the database per statement before it
/// takes it as unreachable (and answers from its cache).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sightings waiting to be written; beyond this, new ones are dropped (and
/// counted in the log) rather than slowing connections down.
const LASTSEEN_QUEUE: usize = 8192;

/// After each write the recorder lets sightings gather this long before the
/// next: under connection churn that is ten transactions a second instead
/// of one per connection (each a disk write, a tenth of the server's CPU
/// per handshake when it was one per connection), well inside lastseen's
/// one-second resolution.
const LASTSEEN_WINDOW: Duration = Duration::from_millis(100);

/// `--proxy-from`'s list, checked before the server forks so a typo is
/// reported on the terminal. `None` when the flag is absent or empty.
pub fn proxy_policy(arg: Option<&str>) -> Result<Option<ProxyPolicy>, String> {
    let Some(list) = arg else { return Ok(None) };
    let p = ProxyPolicy::parse(list).map_err(|e| e.to_string())?;
    Ok((!p.networks().is_empty()).then_some(p))
}

/// `--trust-store` must name a PostgreSQL database (the ppkeys directory is
/// the default and needs no flag).
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("postgresql://") || url.starts_with("postgres://") {
        Ok(())
    } else {
        Err(format!(
            "--trust-store: '{url}' is not a postgresql:// URL (the ppkeys directory is the default, without --trust-store)"
        ))
    }
}

/// `rcf-serverd --trust-store URL --migrate`: create or upgrade the schema,
/// print what was done, exit code 0 (or 1 with the reason).
pub fn migrate(url: &str) -> i32 {
    if let Err(e) = check_url(url) {
        eprintln!("rcf-serverd: error: {e}");
        return 1;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcf-serverd: error: runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(rcf_pg::migrate(url)) {
        Ok(found) if found == rcf_pg::SCHEMA_VERSION => {
            println!(
                "rcf-serverd: trust store schema is already at version {}",
                rcf_pg::SCHEMA_VERSION
            );
            0
        }
        Ok(found) => {
            println!(
                "rcf-serverd: trust store schema migrated from version {found} to {}",
                rcf_pg::SCHEMA_VERSION
            );
            0
        }
        Err(e) => {
            eprintln!("rcf-serverd: error: {e}");
            1
        }
    }
}

/// Set the cluster options on `shared` (inside the server's runtime, after
/// any fork): the PROXY list, the PostgreSQL store (checked now: a wrong
/// schema stops the start; an unreachable database is logged and retried
/// at each connection, nothing being trusted until it answers), and the
/// lastseen recorder (PostgreSQL with a store, else `cf_lastseen.lmdb`; a
/// failure to open it is a warning, never a refusal to serve).
pub async fn wire(
    shared: &Arc<Shared>,
    proxy: Option<ProxyPolicy>,
    trust_store: Option<&str>,
    workdir: &str,
    logger: &Arc<Logger>,
) -> Result<(), String> {
    if let Some(p) = proxy {
        let list: Vec<String> = p.networks().iter().map(|n| n.to_string()).collect();
        shared.cluster.set_proxy(p).map_err(|e| e.to_string())?;
        logger.log(
            Level::Notice,
            None,
            &format!(
                "Reading PROXY headers from {} (client addresses decide)",
                list.join(", ")
            ),
        );
    }
    match trust_store {
        Some(url) => {
            check_url(url)?;
            let store = Arc::new(
                PgTrustStore::new(url, DigestKind::Md5, STORE_TIMEOUT)
                    .map_err(|e| e.to_string())?,
            );
            match store.check().await {
                Ok(()) => logger.log(
                    Level::Notice,
                    None,
                    "Trust store: PostgreSQL (keys, revocations and lastseen shared by replicas)",
                ),
                Err(e) if e.is_unavailable() => logger.log(
                    Level::Warning,
                    None,
                    &format!("{e}; serving on, retrying at each connection"),
                ),
                Err(e) => return Err(e.to_string()),
            }
            store.clone().listen_for_revocations(logger_hook(logger));
            shared
                .cluster
                .set_store(store.clone())
                .map_err(|e| e.to_string())?;
            let handle = tokio::runtime::Handle::current();
            let sink = Recorder::start(logger.clone(), move |batch| {
                for seen in batch {
                    handle
                        .block_on(store.record_lastseen(seen))
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            });
            shared
                .cluster
                .set_lastseen(Arc::new(sink))
                .map_err(|e| e.to_string())?;
        }
        None => match LmdbLastseen::open(std::path::Path::new(workdir)) {
            Ok(db) => {
                let sink = Recorder::start(logger.clone(), move |batch| {
                    db.record_all(batch).map_err(|e| e.to_string())
                });
                shared
                    .cluster
                    .set_lastseen(Arc::new(sink))
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => logger.log(
                Level::Warning,
                None,
                &format!("{e}; peers are not recorded as lastseen"),
            ),
        },
    }
    Ok(())
}

/// The store's log hook: its connection changes, as server log lines.
fn logger_hook(logger: &Arc<Logger>) -> impl Fn(&str) + Send + Sync + 'static {
    let logger = logger.clone();
    move |m: &str| logger.log(Level::Notice, None, m)
}

/// Records sightings on a thread of its own, so a connection never waits
/// for a disk or database write. Sightings queued together are written
/// once per key (the newest address), which bounds the writes under
/// connection churn (one second is lastseen's resolution anyway).
struct Recorder {
    tx: SyncSender<(String, String)>,
    dropped: std::sync::atomic::AtomicU64,
}

impl Recorder {
    /// Start the thread; `write` records one batch of incoming sightings
    /// (one transaction where the store has them), a failure is logged
    /// (verbose) on `logger`.
    fn start<F>(logger: Arc<Logger>, mut write: F) -> Recorder
    where
        F: FnMut(&[Seen<'_>]) -> Result<(), String> + Send + 'static,
    {
        let (tx, rx) = sync_channel(LASTSEEN_QUEUE);
        let _ = std::thread::Builder::new()
            .name("rcf-lastseen".into())
            .spawn(move || {
                Self::run(rx, &mut |batch: &[(KeyId, String)], now: i64| {
                    let seen: Vec<Seen<'_>> = batch
                        .iter()
                        .map(|(key, address)| Seen {
                            key,
                            address,
                            direction: Direction::Incoming,
                            now,
                        })
                        .collect();
                    if let Err(e) = write(&seen) {
                        logger.log(Level::Verbose, None, &format!("lastseen: {e}"));
                    }
                })
            });
        Recorder {
            tx,
            dropped: Default::default(),
        }
    }

    fn run(rx: Receiver<(String, String)>, write: &mut dyn FnMut(&[(KeyId, String)], i64)) {
        while let Ok(first) = rx.recv() {
            let mut batch: HashMap<String, String> = HashMap::new();
            batch.insert(first.0, first.1);
            while let Ok((k, a)) = rx.try_recv() {
                batch.insert(k, a);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let parsed: Vec<(KeyId, String)> = batch
                .into_iter()
                .filter_map(|(k, a)| k.parse::<KeyId>().ok().map(|id| (id, a)))
                .collect();
            if !parsed.is_empty() {
                write(&parsed, now);
            }
            std::thread::sleep(LASTSEEN_WINDOW);
        }
    }
}

impl LastseenSink for Recorder {
    fn seen(&self, key_id: &str, address: &str) {
        match self.tx.try_send((key_id.to_string(), address.to_string())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_list_is_checked_and_empty_means_off() {
        assert_eq!(proxy_policy(None).unwrap(), None);
        assert_eq!(proxy_policy(Some(" , ")).unwrap(), None);
        let p = proxy_policy(Some("127.0.0.1/32, ::1")).unwrap().unwrap();
        assert_eq!(p.networks().len(), 2);
        let e = proxy_policy(Some("127.0.0.1/33")).unwrap_err();
        assert!(e.contains("127.0.0.1/33"), "{e}");
    }

    #[test]
    fn trust_store_must_be_postgresql() {
        assert!(check_url("postgresql://rcf@127.0.0.1/rcf").is_ok());
        assert!(check_url("postgres://rcf@127.0.0.1/rcf").is_ok());
        let e = check_url("/var/lib/cfengine3/ppkeys").unwrap_err();
        assert!(e.contains("not a postgresql:// URL"), "{e}");
    }

    #[test]
    fn recorder_writes_each_key_once_per_batch() {
        let (tx, rx) = std::sync::mpsc::channel();
        let logger = Arc::new(Logger::stderr(Level::Error, false));
        let r = Recorder::start(logger, move |batch: &[Seen<'_>]| {
            for s in batch {
                tx.send((s.key.to_string(), s.address.to_string())).unwrap();
            }
            Ok(())
        });
        let id = "MD5=0123456789abcdef0123456789abcdef";
        r.seen(id, "127.0.0.2");
        r.seen("not a key", "127.0.0.9");
        let got = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(got, (id.to_string(), "127.0.0.2".to_string()));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }
}
