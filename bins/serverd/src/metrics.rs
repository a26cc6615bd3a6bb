//! rcf-serverd's optional Prometheus text-format endpoint (`GET /metrics`),
//! served by a tiny HTTP/1.1 handler: no framework, one request per
//! connection, bounded request size and time. It binds loopback addresses
//! only; put a real proxy in front of it to expose it further.
//!
//! What is exported (all names prefixed `rcf_serverd_`): connections
//! accepted and open, handshakes completed, refusals by reason, bytes
//! served, digest-cache hits and misses, per-command latency histograms,
//! trust-on-first-use decisions, policy reloads, how often one key was
//! seen from several IPs (cloned hosts sharing a `localhost.priv`), and in
//! cluster mode PROXY refusals and trust store outages.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcf_tokio::metrics::BUCKETS;
use rcf_tokio::Shared;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
        ("preauth_budget", ld(&st.evicted_pending)),
        ("trustkeysfrom", tofu.refused_policy),
        ("trust_budget_closed", tofu.refused_closed),
        ("access_denied", ld(&st.denied_requests)),
        // Cluster mode (docs/cluster.md): a PROXY header refused, or the
        // trust store not answering a new (uncached) key.
        ("proxy_header", ld(&shared.cluster.refused_proxy)),
        (
            "trust_store_unavailable",
            ld(&shared.cluster.store_unavailable),
        ),
    ] {
        let _ = writeln!(o, "rcf_serverd_refusals_total{{reason=\"{reason}\"}} {v}");
    }
    counter(
        &mut o,
        "keys_trusted_from_cache_total",
        "Cluster mode: known keys trusted from the replica's cache while the trust store was unreachable.",
        ld(&shared.cluster.trusted_from_cache),
    );
    counter(
        &mut o,
        "keys_trusted_total",
        "New or changed keys trusted on first use.",
        tofu.granted,
    );
    let b = tofu.budget();
    gauge(&mut o, "trust_budget_open", "1 while trust on first use is still open (policy permitting), 0 once the budget closed it.", i64::from(b.check(unix_now()).is_ok()));
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
    let (multi, conflicts) = shared.stats.detail.key_sightings();
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
    let hist = shared.stats.detail.latency();
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
