//! An optional Prometheus text-format endpoint (`GET /metrics`), served by a
//! tiny HTTP/1.1 handler: no framework, one request per connection, bounded
//! request size and time. It binds loopback addresses only; put a real
//! proxy in front of it to expose it further.
//!
//! What is exported (all names prefixed `rcf_serverd_`): connections
//! accepted and open, handshakes completed, refusals by reason, bytes
//! served, digest-cache hits and misses, per-command latency histograms,
//! trust-on-first-use decisions, policy reloads, and how often one key was
//! seen from several IPs (cloned hosts sharing a `localhost.priv`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Shared;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commands timed separately (the core's bounded label set).
use rcf_core::request::METRIC_LABELS as COMMANDS;

/// Most key ids tracked for the cloned-host counter, and IPs kept per key.
const MAX_KEYS: usize = 100_000;
const MAX_IPS_PER_KEY: usize = 8;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.count += o.count;
        self.sum += o.sum;
    }
}

#[derive(Debug, Default)]
struct Sightings {
    ips: HashMap<String, Vec<String>>,
    multi: u64,
    conflicts: u64,
}

/// Histograms and key sightings (the plain counters live in [`crate::Stats`]).
#[derive(Debug, Default)]
pub struct Metrics {
    latency: Mutex<HashMap<&'static str, Histogram>>,
    sightings: Mutex<Sightings>,
}

/// One connection's latency observations, merged into [`Metrics`] in
/// batches: a shared lock and map lookup per request showed in profiles.
#[derive(Debug, Default)]
pub struct LocalLatency {
    hist: [Histogram; COMMANDS.len()],
    pending: u32,
}

/// Observations a connection keeps before merging them.
const LOCAL_BATCH: u32 = 64;

impl LocalLatency {
    /// Record how long one command took; merges into `into` every
    /// [`LOCAL_BATCH`] observations.
    pub fn observe(&mut self, command: &'static str, took: Duration, into: &Metrics) {
        let i = COMMANDS
            .iter()
            .position(|c| *c == command)
            .unwrap_or(COMMANDS.len() - 1);
        self.hist[i].observe(took.as_secs_f64());
        self.pending += 1;
        if self.pending >= LOCAL_BATCH {
            self.flush(into);
        }
    }

    /// Merge what is held into `into` (call when the connection ends).
    pub fn flush(&mut self, into: &Metrics) {
        if self.pending == 0 {
            return;
        }
        if let Ok(mut h) = into.latency.lock() {
            for (c, local) in COMMANDS.iter().zip(self.hist.iter_mut()) {
                if local.count > 0 {
                    h.entry(c).or_default().merge(local);
                    *local = Histogram::default();
                }
            }
        }
        self.pending = 0;
    }
}

impl Metrics {
    /// Record how long one command took.
    pub fn observe(&self, command: &'static str, took: Duration) {
        if let Ok(mut h) = self.latency.lock() {
            h.entry(command).or_default().observe(took.as_secs_f64());
        }
    }

    /// Record that `key_id` completed a handshake from `ip`. Returns the
    /// other IPs it was seen from when this IP is new for an already seen
    /// key (a cloned host, or a host that moved) and still among the key's
    /// first `MAX_IPS_PER_KEY` addresses, else `None`.
    pub fn saw_key(&self, key_id: &str, ip: &str) -> Option<Vec<String>> {
        let mut s = self.sightings.lock().ok()?;
        if !s.ips.contains_key(key_id) && s.ips.len() >= MAX_KEYS {
            return None;
        }
        let ips = s.ips.entry(key_id.to_string()).or_default();
        if ips.iter().any(|i| i == ip) {
            return None;
        }
        let others = ips.clone();
        // Reported (logged) for a key's first few addresses only: a key
        // shared by a whole fleet would otherwise log on every connection.
        // Counted always.
        let recorded = ips.len() < MAX_IPS_PER_KEY;
        if recorded {
            ips.push(ip.to_string());
        }
        if others.is_empty() {
            return None;
        }
        if others.len() == 1 {
            s.multi += 1;
        }
        s.conflicts += 1;
        recorded.then_some(others)
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP rcf_serverd_{name} {help}\n# TYPE rcf_serverd_{name} counter\nrcf_serverd_{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: i64) {
    let _ = writeln!(
        out,
        "# HELP rcf_serverd_{name} {help}\n# TYPE rcf_serverd_{name} gauge\nrcf_serverd_{name} {v}"
    );
}

/// The exposition text (Prometheus text format 0.0.4).
pub fn render(shared: &Shared) -> String {
    let st = &shared.stats;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# HELP rcf_serverd_build_info rcf-serverd version.\n# TYPE rcf_serverd_build_info gauge\nrcf_serverd_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    counter(
        &mut o,
        "connections_accepted_total",
        "Connections admitted (allowconnects, denyconnects, per-IP and maxconnections passed).",
        ld(&st.accepted),
    );
    gauge(
        &mut o,
        "sessions_open",
        "Connections being served now.",
        st.open.load(Ordering::Relaxed),
    );
    counter(
        &mut o,
        "handshakes_total",
        "Sessions that reached WELCOME (TLS handshake, identification and key trust done).",
        ld(&st.established),
    );
    counter(
        &mut o,
        "handshake_failures_total",
        "TLS connections closed before WELCOME.",
        ld(&st.not_established),
    );
    counter(
        &mut o,
        "classic_connections_total",
        "Connections that spoke the classic (pre-TLS) protocol.",
        ld(&st.classic),
    );
    let _ = writeln!(o, "# HELP rcf_serverd_refusals_total Connections, keys or requests refused, by reason.\n# TYPE rcf_serverd_refusals_total counter");
    let tofu = shared.tofu.snapshot();
    for (reason, v) in [
        ("allowconnects", ld(&st.refused_not_allowed)),
        ("denyconnects", ld(&st.refused_denied)),
        ("allowallconnects", ld(&st.refused_second)),
        ("maxconnections", ld(&st.refused_too_many)),
        ("trustkeysfrom", tofu.refused_policy),
        ("trust_budget_closed", tofu.refused_closed),
        ("access_denied", ld(&st.denied_requests)),
    ] {
        let _ = writeln!(o, "rcf_serverd_refusals_total{{reason=\"{reason}\"}} {v}");
    }
    counter(
        &mut o,
        "keys_trusted_total",
        "New or changed keys trusted on first use.",
        tofu.granted,
    );
    let b = tofu.budget();
    gauge(&mut o, "trust_budget_open", "1 while trust on first use is still open (policy permitting), 0 once the budget closed it.", i64::from(b.check(crate::unix_now()).is_ok()));
    counter(
        &mut o,
        "bytes_served_total",
        "File bytes sent by GET.",
        ld(&st.bytes_served),
    );
    let (hits, misses) = shared.fs.digests.stats();
    counter(
        &mut o,
        "digest_cache_hits_total",
        "MD5 requests answered from the digest cache.",
        hits,
    );
    counter(
        &mut o,
        "digest_cache_misses_total",
        "MD5 requests that read the file.",
        misses,
    );
    counter(
        &mut o,
        "policy_reloads_total",
        "Successful policy reloads (SIGHUP).",
        ld(&st.reloads),
    );
    counter(
        &mut o,
        "policy_reload_failures_total",
        "Reloads rejected because the new policy had errors (the old one stays).",
        ld(&st.reload_failures),
    );
    let (multi, conflicts) = shared
        .stats
        .detail
        .sightings
        .lock()
        .map(|s| (s.multi, s.conflicts))
        .unwrap_or((0, 0));
    gauge(
        &mut o,
        "keys_seen_from_several_ips",
        "Key ids that completed handshakes from more than one IP (cloned hosts?).",
        multi as i64,
    );
    counter(
        &mut o,
        "key_ip_conflicts_total",
        "Handshakes presenting a key already seen from another IP.",
        conflicts,
    );
    let _ = writeln!(o, "# HELP rcf_serverd_command_duration_seconds Time from reading a request to having answered it.\n# TYPE rcf_serverd_command_duration_seconds histogram");
    let hist: Vec<(&'static str, Histogram)> = match shared.stats.detail.latency.lock() {
        Ok(h) => {
            let mut v: Vec<_> = h.iter().map(|(k, v)| (*k, v.clone())).collect();
            v.sort_by_key(|(k, _)| *k);
            v
        }
        Err(_) => Vec::new(),
    };
    for (cmd, h) in hist {
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "rcf_serverd_command_duration_seconds_bucket{{command=\"{cmd}\",le=\"{b}\"}} {}",
                h.counts[i]
            );
        }
        let _ = writeln!(
            o,
            "rcf_serverd_command_duration_seconds_bucket{{command=\"{cmd}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            o,
            "rcf_serverd_command_duration_seconds_sum{{command=\"{cmd}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            o,
            "rcf_serverd_command_duration_seconds_count{{command=\"{cmd}\"}} {}",
            h.count
        );
    }
    o
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address is not a loopback address.
    #[error("metrics address {0} is not a loopback address (127.0.0.0/8 or ::1); refusing to expose metrics")]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("cannot bind metrics address {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Bind the endpoint; only loopback addresses are accepted.
pub fn bind_loopback(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    let l = std::net::TcpListener::bind(addr).map_err(|e| MetricsError::Bind(addr, e))?;
    l.set_nonblocking(true)
        .map_err(|e| MetricsError::Bind(addr, e))?;
    Ok(l)
}

/// Serve `GET /metrics` on `listener` until the task is dropped.
pub async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(&mut s, &shared)).await;
        });
    }
}

async fn answer(s: &mut tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            return reply(
                s,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            )
            .await;
        }
    }
    let line = String::from_utf8_lossy(buf.split(|b| *b == b'\n').next().unwrap_or(b""))
        .trim_end()
        .to_string();
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") => {
            let body = render(shared);
            let body = if method == "HEAD" {
                String::new()
            } else {
                body
            };
            reply(
                s,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        ("GET", _) | ("HEAD", _) => reply(s, "404 Not Found", "text/plain", "try /metrics\n").await,
        _ => reply(s, "405 Method Not Allowed", "text/plain", "GET only\n").await,
    }
}

async fn reply(
    s: &mut tokio::net::TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_count_cloned_keys_once_per_new_ip() {
        let m = Metrics::default();
        assert_eq!(m.saw_key("MD5=a", "10.0.0.1"), None);
        assert_eq!(m.saw_key("MD5=a", "10.0.0.1"), None);
        assert_eq!(
            m.saw_key("MD5=a", "10.0.0.2"),
            Some(vec!["10.0.0.1".into()])
        );
        assert_eq!(m.saw_key("MD5=a", "10.0.0.3").map(|v| v.len()), Some(2));
        {
            let s = m.sightings.lock().unwrap();
            assert_eq!((s.multi, s.conflicts), (1, 2));
        }
        // Past MAX_IPS_PER_KEY addresses a key is still counted, no longer
        // reported (no log line per connection for a fleet sharing a key).
        let reported = (4..40)
            .filter(|i| m.saw_key("MD5=a", &format!("10.0.0.{i}")).is_some())
            .count();
        assert_eq!(reported, MAX_IPS_PER_KEY - 3);
        assert_eq!(m.sightings.lock().unwrap().conflicts, 2 + 36);
    }

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.003);
        h.observe(20.0);
        assert_eq!(h.counts[2], 0);
        assert_eq!(h.counts[3], 1);
        assert_eq!(h.counts[BUCKETS.len() - 1], 1);
        assert_eq!(h.count, 2);
    }

    #[test]
    fn non_loopback_is_refused() {
        assert!(matches!(
            bind_loopback("0.0.0.0:0".parse().unwrap()),
            Err(MetricsError::NotLoopback(_))
        ));
        assert!(matches!(
            bind_loopback("[::]:0".parse().unwrap()),
            Err(MetricsError::NotLoopback(_))
        ));
        assert!(bind_loopback("127.0.0.1:0".parse().unwrap()).is_ok());
    }
}
