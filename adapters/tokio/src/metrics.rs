//! What the serve loops record for metrics beyond plain counters: per
//! command latency histograms (labels from `rcf_core::request`) and key
//! sightings from several IPs. The exposition endpoint that renders them
//! is the `rcf-serverd` binary's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commands timed separately (the core's bounded label set).
use rcf_core::request::METRIC_LABELS as COMMANDS;

/// Most key ids tracked for the cloned-host counter, and IPs kept per key.
const MAX_KEYS: usize = 100_000;
const MAX_IPS_PER_KEY: usize = 8;

/// One command's latency histogram (cumulative buckets over [`BUCKETS`]).
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Observations at or below each bucket's bound.
    pub counts: [u64; BUCKETS.len()],
    /// Observations in all.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum: f64,
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
    /// The latency histograms recorded so far, by command label, sorted.
    pub fn latency(&self) -> Vec<(&'static str, Histogram)> {
        match self.latency.lock() {
            Ok(h) => {
                let mut v: Vec<_> = h.iter().map(|(k, v)| (*k, v.clone())).collect();
                v.sort_by_key(|(k, _)| *k);
                v
            }
            Err(_) => Vec::new(),
        }
    }

    /// Key ids seen from several IPs, and handshakes that presented a key
    /// already seen from another IP.
    pub fn key_sightings(&self) -> (u64, u64) {
        self.sightings
            .lock()
            .map(|s| (s.multi, s.conflicts))
            .unwrap_or((0, 0))
    }

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
}
