//! The two core server machines behind one set of calls, so one serve loop
//! (`serve.rs`) drives either: a TLS [`Connection`] or a classic
//! [`ClassicServer`]. Each method forwards to the core; the only things
//! added here are what the core leaves to its caller: the classic key
//! exchange's randomness (the OS generator) and the trust-on-first-use
//! wrapper around a reloaded policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rcf_core::classic::ClassicServer;
use rcf_core::keys::RsaPrivateKey;
use rcf_core::machine::CallerError;
use rcf_core::policy::ServerPolicy;
use rcf_core::server::{Answer, Connection, Event, Now};

use crate::Shared;

/// One accepted connection's protocol machine.
pub(crate) enum Machine {
    /// Protocol 2/3 over TLS.
    Tls(Box<Connection>),
    /// Protocol 1 (`CAUTH`/`SAUTH`).
    Classic(Box<ClassicServer>),
}

impl Machine {
    /// A TLS machine for a peer at `ip`; the handshake deadline runs from
    /// `accepted`; the line to log when rustls cannot start a session.
    pub(crate) fn tls(
        shared: &Shared,
        policy: Arc<ServerPolicy>,
        ip: &str,
        accepted: Now,
    ) -> Result<Self, String> {
        let tls = shared
            .tls
            .accept()
            .map_err(|e| format!("Failed to accept TLS connection: {e}"))?;
        Ok(Machine::Tls(Box::new(Connection::new(
            tls,
            shared.cfg.clone(),
            rcf_core::server::tofu::gated_view(policy, shared.tofu.clone()),
            ip.to_string(),
            accepted,
        ))))
    }

    /// A classic machine for a peer at `ip` whose first bytes were `CAUTH`
    /// and whose address passed `allowlegacyconnects`.
    pub(crate) fn classic(
        shared: &Shared,
        policy: Arc<ServerPolicy>,
        key: Arc<RsaPrivateKey>,
        ip: &str,
        now: Now,
    ) -> Self {
        Machine::Classic(Box::new(ClassicServer::new(
            shared.cfg.clone(),
            rcf_core::classic::gated_policy(policy, shared.tofu.clone()),
            key,
            ip.to_string(),
            now,
        )))
    }

    /// Swap in a reloaded policy, behind the shared trust-on-first-use gate.
    pub(crate) fn set_policy(&mut self, shared: &Shared, p: Arc<ServerPolicy>) {
        match self {
            Machine::Tls(c) => {
                c.set_policy(rcf_core::server::tofu::gated_view(p, shared.tofu.clone()))
            }
            Machine::Classic(c) => {
                c.set_policy(rcf_core::classic::gated_policy(p, shared.tofu.clone()))
            }
        }
    }

    pub(crate) fn handle_input(&mut self, now: Now, bytes: &[u8]) {
        match self {
            Machine::Tls(c) => c.handle_input(now, bytes),
            Machine::Classic(c) => c.handle_input(now, bytes),
        }
    }

    pub(crate) fn handle_eof(&mut self, now: Now) {
        match self {
            Machine::Tls(c) => c.handle_eof(now),
            Machine::Classic(c) => c.handle_eof(now),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Now) {
        match self {
            Machine::Tls(c) => c.handle_timeout(now),
            Machine::Classic(c) => c.handle_timeout(now),
        }
    }

    /// The answer to the outstanding question; the classic key exchange
    /// draws from the OS generator.
    pub(crate) fn handle_answer(&mut self, now: Now, a: Answer) -> Result<(), CallerError> {
        match self {
            Machine::Tls(c) => c.handle_answer(now, a),
            Machine::Classic(c) => c.handle_answer(now, a, &mut rand_core::OsRng),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<u64> {
        match self {
            Machine::Tls(c) => c.poll_timeout(),
            Machine::Classic(c) => c.poll_timeout(),
        }
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match self {
            Machine::Tls(c) => c.poll_transmit(),
            Machine::Classic(c) => c.poll_transmit(),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        match self {
            Machine::Tls(c) => c.poll_event(),
            Machine::Classic(c) => c.poll_event(),
        }
    }

    /// Bytes produced and not yet taken by `poll_transmit`.
    pub(crate) fn pending_output(&self) -> usize {
        match self {
            Machine::Tls(c) => c.pending_output(),
            Machine::Classic(c) => c.pending_output(),
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        match self {
            Machine::Tls(c) => c.is_closing(),
            Machine::Classic(c) => c.is_closing(),
        }
    }

    /// The peer's key id once the session is established (TLS: WELCOME
    /// sent; classic: key exchange done), else `None`.
    pub(crate) fn established_key(&self) -> Option<&str> {
        match self {
            Machine::Tls(c) => c
                .session()
                .filter(|s| s.is_established())
                .map(|s| s.peer().key_id.as_str()),
            Machine::Classic(c) => c.is_authenticated().then(|| c.peer().key_id.as_str()),
        }
    }

    /// File bytes served so far.
    pub(crate) fn bytes_served(&self) -> u64 {
        match self {
            Machine::Tls(c) => c.session().map(|s| s.bytes_served()).unwrap_or(0),
            Machine::Classic(c) => c.bytes_served(),
        }
    }

    /// (requests read, the latest one's text) where the machine reports it
    /// (TLS), for the latency histograms.
    pub(crate) fn last_request(&self) -> Option<(u64, &[u8])> {
        match self {
            Machine::Tls(c) => c.session().map(|s| s.last_request()),
            Machine::Classic(_) => None,
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Machine::Tls(_))
    }
}

/// The host key, read once per key file (classic needs the private key
/// itself; TLS keeps it inside its rustls context).
pub(crate) fn host_key(shared: &Shared) -> Result<Arc<RsaPrivateKey>, String> {
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
