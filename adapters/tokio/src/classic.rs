//! The classic (protocol v1) connection path: `allowlegacyconnects`, then
//! bytes pumped between the socket and an `rcf_core::classic::ClassicServer`,
//! its questions answered by `rcf_fs` on the blocking pool, exactly as the
//! TLS path in `lib.rs` does. No protocol logic lives here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rcf_core::classic::{ClassicPolicy, ClassicServer};
use rcf_core::keys::RsaPrivateKey;
use rcf_core::server::Level;
use rcf_fs::serve::Files;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Shared;

/// The host key, read once per key file (classic needs the private key
/// itself; TLS keeps it inside its rustls context).
fn host_key(shared: &Shared) -> Result<Arc<RsaPrivateKey>, String> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<RsaPrivateKey>>>> = OnceLock::new();
    let path = shared.fs.ppkeys.join("localhost.priv");
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(k) = cache.lock().ok().and_then(|c| c.get(&path).cloned()) {
        return Ok(k);
    }
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let key = Arc::new(
        rcf_core::keys::parse_private_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?,
    );
    if let Ok(mut c) = cache.lock() {
        c.insert(path, key.clone());
    }
    Ok(key)
}

/// Serve a peer whose first bytes were a `CAUTH` transaction.
pub(crate) async fn handle_classic(mut stream: TcpStream, ip: String, shared: Arc<Shared>) {
    let log = |l: Level, m: &str| shared.logger.log(l, Some(&ip), m);
    let mut policy_rx = shared.policy.subscribe();
    let policy = policy_rx.borrow_and_update().clone();
    if !ClassicPolicy::legacy_allowed(&*policy, &ip) {
        // 3.21 closes without a byte.
        log(
            Level::Info,
            "Connection is not using latest protocol, denying",
        );
        return;
    }
    let key = {
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || host_key(&s)).await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => {
                log(
                    Level::Error,
                    &format!("No public/private key pair exists, create one with cf-key ({e})"),
                );
                return;
            }
            Err(_) => return,
        }
    };
    let mut rng = rand_core::OsRng;
    // New keys arriving by classic spend the same trust-on-first-use budget.
    let gated = |p: Arc<rcf_core::policy::ServerPolicy>| {
        rcf_core::classic::gated_policy(p, shared.tofu.clone())
    };
    let mut conn = ClassicServer::new(
        shared.cfg.clone(),
        gated(policy),
        key,
        ip.clone(),
        shared.now(),
    );
    let mut files = Some(Files::default());
    let mut buf = vec![0u8; 16 * 1024];
    let mut established = false;
    let mut served = 0u64;
    loop {
        while let Some(bytes) = conn.poll_transmit() {
            match tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return log(Level::Info, crate::WRITE_STALLED),
            }
        }
        let mut progressed = false;
        while let Some(ev) = conn.poll_event() {
            progressed = true;
            let Some(ev) = crate::question(ev, &log) else {
                continue;
            };
            let ev = match crate::cluster::answer_key(&shared, ev).await {
                crate::cluster::Keyed::Other(ev) => ev,
                crate::cluster::Keyed::Answer(a) => {
                    if let Some(Err(e)) = a.map(|a| conn.handle_answer(shared.now(), a, &mut rng)) {
                        log(Level::Error, &format!("internal: {e}"));
                        return;
                    }
                    break;
                }
                crate::cluster::Keyed::Close => return,
            };
            let f = files.take().unwrap_or_default();
            let Some((answer, note)) = crate::answer_on_pool(&shared.fs, &mut files, f, ev).await
            else {
                return;
            };
            if let Some((level, msg)) = note {
                log(level, &msg);
            }
            if let Some(a) = answer {
                if let Err(e) = conn.handle_answer(shared.now(), a, &mut rng) {
                    log(Level::Error, &format!("internal: {e}"));
                    return;
                }
            }
            // Send what this answer produced before the next question, so a
            // large GET streams with bounded memory.
            break;
        }
        if progressed {
            continue;
        }
        if !established && conn.is_authenticated() {
            established = true;
            shared.stats.established.fetch_add(1, Ordering::Relaxed);
            crate::cluster::established(&shared, &ip, &conn.peer().key_id);
        }
        crate::add_since(&shared.stats.bytes_served, &mut served, conn.bytes_served());
        if conn.is_closing() {
            break;
        }
        if policy_rx.has_changed().unwrap_or(false) {
            let p = policy_rx.borrow_and_update().clone();
            conn.set_policy(gated(p));
        }
        // Everything that arrived together is answered: the next lookups
        // must see the filesystem afresh (see `Files::end_burst`).
        if let Some(f) = files.as_mut() {
            f.end_burst();
        }
        let sleep = conn
            .poll_timeout()
            .map(|ms| Duration::from_millis(ms.saturating_sub(shared.now().mono_ms)));
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => conn.handle_eof(shared.now()),
                Ok(n) => conn.handle_input(shared.now(), &buf[..n]),
            },
            _ = async { match sleep { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
                conn.handle_timeout(shared.now());
            }
            // `changed()` marks the value seen, so apply it here: the
            // `has_changed` check above would not fire for it any more.
            r = policy_rx.changed() => {
                if r.is_ok() {
                    let p = policy_rx.borrow_and_update().clone();
                    conn.set_policy(gated(p));
                }
            }
        }
    }
    while let Some(bytes) = conn.poll_transmit() {
        if tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes))
            .await
            .is_err()
        {
            break;
        }
    }
    log(Level::Info, "Closing connection, terminating thread");
}
