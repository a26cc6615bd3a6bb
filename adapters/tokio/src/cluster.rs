//! Cluster mode's hooks into the serve loops (issue 20): replicas behind a
//! TCP load balancer that sends PROXY headers, sharing one trust store and
//! one lastseen database. Off by default: with nothing configured every hook
//! returns at once and the single-node behaviour is unchanged (ppkeys
//! answered by `rcf-fs`, lastseen not recorded unless a sink is set).
//!
//! The serve loops call exactly three things, each on one line:
//! * [`at_accept`] when a TCP connection is accepted: with `--proxy-from`, the
//!   connection is handed to a task that reads the PROXY header (a listed
//!   proxy must send one, anyone else must not) before admission, so the
//!   client address it carries is the one every later decision uses
//!   (allowconnects, denyconnects, one connection per address, `admit_ips`,
//!   `$(connection.ip)`, `trustkeysfrom`, the TOFU budget, log lines,
//!   metrics and lastseen all read the `ip` the connection is served as).
//! * [`answer_key`] for every question a machine asks: key lookups and
//!   saves go to the shared trust store when one is configured.
//! * [`established`] once a session is authenticated: records lastseen.
//!
//! No protocol is decided here: the PROXY framing and its refusals are
//! `rcf_core::proxy`'s, the trust decision is the store's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcf_core::keys::backend::{Decision, Refused, TrustBackend};
use rcf_core::keys::RsaPublicKey;
use rcf_core::proxy::{Proxied, ProxyDecoder, ProxyPolicy, Refusal, Step, V2_MAX_LEN};
use rcf_core::server::admission::unmap_ipv4_peer;
use rcf_core::server::{Answer, Event, Level, Now};
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::Shared;

/// A trust store the serve loops can ask, whatever its backend (the
/// object-safe face of [`TrustBackend`], which every backend gets through
/// the blanket implementation below).
pub trait KeyStore: Send + Sync {
    /// [`TrustBackend::verify`] for `user` at `from` presenting `key`;
    /// `allow_new` when the policy and the TOFU budget admit a new key.
    fn verify<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        key: &'a RsaPublicKey,
        allow_new: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, String>> + Send + 'a>>;
}

impl<T> KeyStore for T
where
    T: TrustBackend + Send + Sync,
{
    fn verify<'a>(
        &'a self,
        user: &'a str,
        from: &'a str,
        key: &'a RsaPublicKey,
        allow_new: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Decision, String>> + Send + 'a>> {
        Box::pin(async move {
            TrustBackend::verify(self, user, Some(from), key, allow_new)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Where established sessions are recorded as lastseen (3.21's
/// `LastSaw1(ip, key, LAST_SEEN_ROLE_ACCEPT)`). Called on the connection's
/// thread: an implementation must only queue the sighting, never block.
pub trait LastseenSink: Send + Sync {
    /// `key_id` (`MD5=…`) was seen connecting from `address`.
    fn seen(&self, key_id: &str, address: &str);
}

/// The cluster settings of one server; each is set once at start-up.
#[derive(Default)]
pub struct Cluster {
    proxy: OnceLock<ProxyPolicy>,
    store: OnceLock<Arc<dyn KeyStore>>,
    lastseen: OnceLock<Arc<dyn LastseenSink>>,
    /// Connections refused at the PROXY header (metrics).
    pub refused_proxy: AtomicU64,
    /// Key checks answered from a replica's cache while the store was
    /// unreachable (metrics).
    pub trusted_from_cache: AtomicU64,
    /// Connections closed because the store could not be asked (metrics).
    pub store_unavailable: AtomicU64,
}

/// A setting was given twice (a wiring bug at start-up).
#[derive(Debug, Error)]
#[error("cluster setting '{0}' is already set")]
pub struct AlreadySet(&'static str);

impl Cluster {
    /// Only the peers in `policy` may, and must, open with a PROXY header.
    /// An empty list leaves connections as they are (no header expected).
    pub fn set_proxy(&self, policy: ProxyPolicy) -> Result<(), AlreadySet> {
        if policy.networks().is_empty() {
            return Ok(());
        }
        self.proxy.set(policy).map_err(|_| AlreadySet("proxy-from"))
    }

    /// Answer key lookups and saves from `store` instead of `ppkeys/`.
    pub fn set_store(&self, store: Arc<dyn KeyStore>) -> Result<(), AlreadySet> {
        self.store.set(store).map_err(|_| AlreadySet("trust-store"))
    }

    /// Record established sessions in `sink`.
    pub fn set_lastseen(&self, sink: Arc<dyn LastseenSink>) -> Result<(), AlreadySet> {
        self.lastseen.set(sink).map_err(|_| AlreadySet("lastseen"))
    }

    /// The `--proxy-from` list, when set.
    pub fn proxy(&self) -> Option<&ProxyPolicy> {
        self.proxy.get()
    }
}

/// Why a connection was closed before anything was parsed as protocol.
#[derive(Debug, Error)]
pub enum ProxyClose {
    /// `rcf_core::proxy` refused the start of the connection.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A listed proxy (or a peer that must show it sends no header) sent
    /// too little within the handshake deadline.
    #[error("no complete PROXY decision within {0:?}")]
    Timeout(Duration),
    /// The socket failed while the header was read.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// Called by the accept loop for each connection. Without `--proxy-from`
/// the stream is handed back untouched (the caller serves it as before).
/// With it, a task takes the connection over: it reads the PROXY decision
/// ([`read_proxy`]); a refusal is one log line naming the TCP peer and the
/// connection is closed; otherwise the connection is admitted and served as
/// the client address the header carried. `None` means taken over.
pub(crate) fn at_accept(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    accepted: Now,
) -> Option<TcpStream> {
    let Some(policy) = shared.cluster.proxy().cloned() else {
        return Some(stream);
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut stream = stream;
        let deadline = Duration::from_millis(shared.cfg.handshake_timeout_ms);
        match read_proxy(&mut stream, addr, &policy, deadline).await {
            Ok(p) => {
                let ip = unmap_ipv4_peer(&p.client.ip().to_string()).to_string();
                if let Some(release) = crate::admit(&shared, ip) {
                    crate::serve_admitted(stream, release, accepted).await;
                }
            }
            Err(why) => {
                shared.cluster.refused_proxy.fetch_add(1, Ordering::Relaxed);
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                let peer = unmap_ipv4_peer(&addr.ip().to_string()).to_string();
                shared.logger.log(
                    Level::Error,
                    Some(&peer),
                    &format!("Refusing connection before the protocol: {why}"),
                );
            }
        }
    });
    None
}

/// Read the optional PROXY header at the start of `stream` from TCP peer
/// `peer`, consuming exactly the header's bytes (whatever follows stays in
/// the socket for the protocol sniffing and the machines), bounded by
/// `deadline` and by the header's maximum size.
///
/// Peeks until `rcf_core::proxy` decides. A listed proxy's bytes are
/// consumed as they come while the decision needs more (they can only be
/// header bytes: a header, or a refusal), so a stalled or closed proxy is
/// seen waiting or at EOF. A peer that needs no header loses no byte: its
/// undecided bytes (a prefix of a signature) stay in the socket.
pub async fn read_proxy(
    stream: &mut TcpStream,
    peer: SocketAddr,
    policy: &ProxyPolicy,
    deadline: Duration,
) -> Result<Proxied, ProxyClose> {
    let mut buf = vec![0u8; V2_MAX_LEN + 1];
    let end = tokio::time::Instant::now() + deadline;
    let timeout = || ProxyClose::Timeout(deadline);
    // Header bytes already taken out of the socket (listed proxies only).
    let mut taken: Vec<u8> = Vec::new();
    loop {
        if tokio::time::Instant::now() >= end {
            return Err(timeout());
        }
        let room = buf.len() - taken.len();
        let n = tokio::time::timeout_at(end, stream.peek(&mut buf[..room]))
            .await
            .map_err(|_| timeout())??;
        let mut d = ProxyDecoder::new(peer, policy);
        let step = match (taken.is_empty(), n) {
            (true, 0) => d.closed().map(Step::Ready),
            (false, 0) => {
                d.push(&taken)?;
                d.closed().map(Step::Ready)
            }
            _ => d.push(&[&taken[..], &buf[..n]].concat()),
        }?;
        match step {
            Step::Ready(p) => {
                let header = (taken.len() + n).saturating_sub(p.rest.len());
                let more = header.saturating_sub(taken.len());
                if more > 0 {
                    let mut skip = vec![0u8; more];
                    tokio::time::timeout_at(end, stream.read_exact(&mut skip))
                        .await
                        .map_err(|_| timeout())??;
                }
                return Ok(p);
            }
            Step::NeedMore if d.expect() == rcf_core::proxy::Expect::Header => {
                // All of it is header (or refused later): take it, so the
                // next peek waits for new bytes or sees the close.
                let mut more = vec![0u8; n];
                tokio::time::timeout_at(end, stream.read_exact(&mut more))
                    .await
                    .map_err(|_| timeout())??;
                taken.extend_from_slice(&more);
            }
            Step::NeedMore => {
                // A prefix of a signature from a peer that needs no header:
                // leave it in the socket and look again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// What [`answer_key`] did with a question.
pub(crate) enum Keyed {
    /// Not a key question, or no trust store configured: answer it as before.
    Other(Event),
    /// Answered by the trust store: hand this to the machine (`None` for a
    /// save, which takes no answer).
    Answer(Option<Answer>),
    /// Refused by the store, or it could not be asked: the reason was
    /// logged; close the connection without another byte.
    Close,
}

/// Whether [`answer_key`] answers `ev`: a key question while a shared
/// trust store is set.
pub(crate) fn takes(shared: &Shared, ev: &Event) -> bool {
    matches!(ev, Event::LookupKey { .. } | Event::SaveKey { .. })
        && shared.cluster.store.get().is_some()
}

/// Answer a key lookup (`LookupKey`) or a trust-on-first-use save
/// (`SaveKey`) from the shared trust store, when one is set. A lookup is
/// `Trusted` only when the store (or, while it is unreachable, this
/// replica's cache) holds this very key; unknown keys are `Missing` so the
/// machine applies `trustkeysfrom` and the TOFU budget as always, and its
/// save is then the store's one-transaction TOFU. A revoked key, a
/// different key for an already trusted host, and a store that cannot be
/// asked close the connection with one log line: never looser than the
/// ppkeys path.
pub(crate) async fn answer_key(shared: &Shared, ev: Event) -> Keyed {
    let Some(store) = shared.cluster.store.get() else {
        return Keyed::Other(ev);
    };
    let log = |level, ip: &str, msg: String| shared.logger.log(level, Some(ip), &msg);
    match ev {
        Event::LookupKey { user, key, ip, .. } => {
            match store.verify(&user, &ip, &key, false).await {
                Ok(Decision::Trusted { cached, id }) => {
                    if cached {
                        shared
                            .cluster
                            .trusted_from_cache
                            .fetch_add(1, Ordering::Relaxed);
                        log(
                            Level::Info,
                            &ip,
                            format!("Trust store unreachable: key {id} trusted from this replica's cache"),
                        );
                    }
                    Keyed::Answer(Some(Answer::Key(rcf_core::server::KeyStatus::Trusted)))
                }
                Ok(Decision::NewlyTrusted { .. }) => {
                    Keyed::Answer(Some(Answer::Key(rcf_core::server::KeyStatus::Trusted)))
                }
                Ok(Decision::Refused {
                    why: Refused::Unknown,
                    ..
                }) => Keyed::Answer(Some(Answer::Key(rcf_core::server::KeyStatus::Missing))),
                Ok(Decision::Refused {
                    why: Refused::Changed { .. },
                    ..
                }) => Keyed::Answer(Some(Answer::Key(rcf_core::server::KeyStatus::Different))),
                Ok(Decision::Refused {
                    id,
                    why: Refused::Revoked,
                }) => {
                    log(
                        Level::Notice,
                        &ip,
                        format!("TRUST FAILED, key {id} was revoked in the trust store, dropping connection!"),
                    );
                    Keyed::Close
                }
                Err(e) => unavailable(
                    shared,
                    &ip,
                    format!("Key lookup failed, dropping connection: {e}"),
                ),
            }
        }
        Event::SaveKey {
            user,
            key,
            ip,
            key_id,
        } => match store.verify(&user, &ip, &key, true).await {
            Ok(Decision::Trusted { cached: false, .. } | Decision::NewlyTrusted { .. }) => {
                Keyed::Answer(None)
            }
            Ok(Decision::Trusted { cached: true, .. }) => Keyed::Answer(None),
            Ok(Decision::Refused { why, .. }) => {
                let why = match why {
                    Refused::Revoked => "it was revoked".to_string(),
                    Refused::Changed { stored: Some(s) } => {
                        format!("this host is already trusted with key {s}")
                    }
                    Refused::Changed { stored: None } => {
                        "this host is already trusted with another key".to_string()
                    }
                    Refused::Unknown => "the trust store refused it".to_string(),
                };
                log(
                    Level::Notice,
                    &ip,
                    format!("Not trusting new key {key_id}: {why}; dropping connection"),
                );
                Keyed::Close
            }
            Err(e) => unavailable(
                shared,
                &ip,
                format!("Not trusting new key {key_id}, dropping connection: {e}"),
            ),
        },
        other => Keyed::Other(other),
    }
}

/// The store could not be asked: count it, log `msg`, close.
fn unavailable(shared: &Shared, ip: &str, msg: String) -> Keyed {
    shared
        .cluster
        .store_unavailable
        .fetch_add(1, Ordering::Relaxed);
    shared.logger.log(Level::Error, Some(ip), &msg);
    Keyed::Close
}

/// A session from `ip` authenticated with key `key_id`: record it as
/// lastseen (incoming), when a sink is set. Never blocks.
pub(crate) fn established(shared: &Shared, ip: &str, key_id: &str) {
    if let Some(s) = shared.cluster.lastseen.get() {
        s.seen(key_id, ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair on loopback: (client side, server side, the
    /// server's view of the client's address).
    async fn pair() -> (TcpStream, TcpStream, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, peer) = l.accept().await.unwrap();
        (c, s, peer)
    }

    const V1: &[u8] = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 5308\r\n";

    #[tokio::test]
    async fn a_listed_proxy_header_is_consumed_exactly_and_the_rest_is_left() {
        let policy = ProxyPolicy::parse("127.0.0.1/32").unwrap();
        let (mut c, mut s, peer) = pair().await;
        // Split inside the header: the reader waits for the rest.
        c.write_all(&V1[..10]).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(&[&V1[10..], b"CAUTH x"].concat())
                .await
                .unwrap();
            c
        });
        let p = read_proxy(&mut s, peer, &policy, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p.client, "192.0.2.7:40000".parse().unwrap());
        let _c = writer.await.unwrap();
        let mut rest = [0u8; 7];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"CAUTH x", "the protocol bytes stay in the socket");
    }

    #[tokio::test]
    async fn a_peer_that_needs_no_header_loses_no_byte() {
        let policy = ProxyPolicy::parse("10.0.0.0/8").unwrap();
        let (mut c, mut s, peer) = pair().await;
        c.write_all(b"CAUTH 127.0.0.1").await.unwrap();
        let p = read_proxy(&mut s, peer, &policy, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(p.client, peer);
        let mut first = [0u8; 5];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"CAUTH");
    }

    #[tokio::test]
    async fn headers_from_others_headerless_proxies_and_silence_are_refused() {
        let listed = ProxyPolicy::parse("127.0.0.1/32").unwrap();
        let unlisted = ProxyPolicy::parse("10.0.0.0/8").unwrap();
        let (mut c, mut s, peer) = pair().await;
        c.write_all(V1).await.unwrap();
        let e = read_proxy(&mut s, peer, &unlisted, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not in --proxy-from"), "{e}");

        let (mut c, mut s, peer) = pair().await;
        c.write_all(b"CAUTH 127.0.0.1").await.unwrap();
        let e = read_proxy(&mut s, peer, &listed, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("did not send a PROXY header"), "{e}");

        let (_c, mut s, peer) = pair().await;
        let e = read_proxy(&mut s, peer, &listed, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(e, ProxyClose::Timeout(_)), "{e}");

        let (mut c, mut s, peer) = pair().await;
        c.write_all(&V1[..20]).await.unwrap();
        drop(c);
        let e = read_proxy(&mut s, peer, &listed, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("closed inside the PROXY header"),
            "{e}"
        );
    }
}
