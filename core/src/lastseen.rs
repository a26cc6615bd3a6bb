//! lastseen: who connected to us (incoming) or we connected to (outgoing),
//! from which address, when, and how regularly, as CFEngine 3.21 records it
//! (`libpromises/lastseen.c`, `UpdateLastSawHost`).
//!
//! This module is the pure part: the entries of 3.21's lastseen database
//! (schema version 1) as keys and values, and the rolling average of the
//! interval between connections. The storage (3.21's own
//! `state/cf_lastseen.lmdb`, or PostgreSQL) is an adapter's.
//!
//! Entries, keys and values all NUL-terminated as CFEngine's `WriteDB`
//! stores them (`strlen + 1`):
//! * `version` → `1`
//! * `q` + `i`|`o` + hostkey → [`Quality`] (a `KeyHostSeen` C struct)
//! * `k` + hostkey → address
//! * `a` + address → hostkey

use crate::keys::KeyId;

/// Weight of the newest interval in the rolling average (`QAverage(…, 0.4)`).
pub const WEIGHT: f64 = 0.4;

/// Size of the `KeyHostSeen` record on LP64 Linux: `time_t` then a
/// `QPoint` of four doubles, naturally aligned, no padding.
pub const RECORD_LEN: usize = 40;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer connected to us (cf-serverd's `LAST_SEEN_ROLE_ACCEPT`).
    Incoming,
    /// We connected to the peer (cf-agent's `LAST_SEEN_ROLE_CONNECT`).
    Outgoing,
}

impl Direction {
    /// The letter after `q` in the quality key.
    pub fn letter(self) -> u8 {
        match self {
            Direction::Incoming => b'i',
            Direction::Outgoing => b'o',
        }
    }

    /// `Incoming` / `Outgoing`, as cf-key -s prints it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Incoming => "Incoming",
            Direction::Outgoing => "Outgoing",
        }
    }
}

/// One peer's connection quality (`KeyHostSeen`): the last time seen and
/// the rolling statistics of the interval between connections, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    /// Seconds since the epoch of the last connection.
    pub lastseen: i64,
    /// The last interval.
    pub q: f64,
    /// Rolling average of the interval.
    pub expect: f64,
    /// Rolling variance of the interval.
    pub var: f64,
    /// Change of the interval from the previous one.
    pub dq: f64,
}

impl Quality {
    /// The record for a peer never seen before (`QDefinite(0)`).
    pub fn first(now: i64) -> Quality {
        Quality {
            lastseen: now,
            q: 0.0,
            expect: 0.0,
            var: 0.0,
            dq: 0.0,
        }
    }

    /// The record after seeing the peer again at `now` (`QAverage` over the
    /// interval since `self.lastseen`, weight [`WEIGHT`]).
    pub fn next(&self, now: i64) -> Quality {
        let q = (now - self.lastseen) as f64;
        let dev = (q - self.expect) * (q - self.expect);
        Quality {
            lastseen: now,
            q,
            expect: WEIGHT * q + (1.0 - WEIGHT) * self.expect,
            var: WEIGHT * dev + (1.0 - WEIGHT) * self.var,
            dq: q - self.q,
        }
    }

    /// [`Self::next`] of a stored record, or [`Self::first`] without one.
    pub fn update(old: Option<&Quality>, now: i64) -> Quality {
        match old {
            Some(o) => o.next(now),
            None => Quality::first(now),
        }
    }

    /// The C struct's bytes (native byte order, as the C code writes it).
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..8].copy_from_slice(&self.lastseen.to_ne_bytes());
        for (i, v) in [self.q, self.expect, self.var, self.dq].iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Read a stored record; `None` unless exactly [`RECORD_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Option<Quality> {
        if b.len() != RECORD_LEN {
            return None;
        }
        let f = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[8 + 8 * i..16 + 8 * i]);
            f64::from_ne_bytes(a)
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[0..8]);
        Some(Quality {
            lastseen: i64::from_ne_bytes(t),
            q: f(0),
            expect: f(1),
            var: f(2),
            dq: f(3),
        })
    }
}

fn cstr(parts: &[&[u8]]) -> Vec<u8> {
    let mut v: Vec<u8> = parts.concat();
    v.push(0);
    v
}

/// `version\0`.
pub const VERSION_KEY: &[u8] = b"version\0";
/// `1\0`.
pub const VERSION_VALUE: &[u8] = b"1\0";

/// `q<i|o><hostkey>\0`.
pub fn quality_key(dir: Direction, key: &KeyId) -> Vec<u8> {
    cstr(&[&[b'q', dir.letter()], key.to_string().as_bytes()])
}

/// `k<hostkey>\0`.
pub fn host_key(key: &KeyId) -> Vec<u8> {
    cstr(&[b"k", key.to_string().as_bytes()])
}

/// `a<address>\0`.
pub fn address_key(address: &str) -> Vec<u8> {
    cstr(&[b"a", address.as_bytes()])
}

/// A NUL-terminated value (address or hostkey text).
pub fn text_value(s: &str) -> Vec<u8> {
    cstr(&[s.as_bytes()])
}

/// Why an address cannot be recorded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BadAddress {
    /// Empty, or holding a NUL (would cut the C string).
    #[error("lastseen: address {0:?} cannot be recorded")]
    Unusable(String),
}

/// Check an address before recording it: CFEngine skips empty ones (and
/// a NUL would truncate the C string its readers see).
pub fn check_address(a: &str) -> Result<(), BadAddress> {
    if a.is_empty() || a.contains('\0') || a.len() > 1000 {
        return Err(BadAddress::Unusable(a.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn keys_are_cfengines() {
        let id: KeyId = "MD5=0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(
            quality_key(Direction::Incoming, &id),
            b"qiMD5=0123456789abcdef0123456789abcdef\0"
        );
        assert_eq!(quality_key(Direction::Outgoing, &id)[..2], *b"qo");
        assert_eq!(host_key(&id)[..5], *b"kMD5=");
        assert_eq!(address_key("127.0.0.2"), b"a127.0.0.2\0");
        assert_eq!(text_value("x"), b"x\0");
        assert!(check_address("").is_err());
        assert!(check_address("a\0b").is_err());
        assert!(check_address("::1").is_ok());
    }

    #[test]
    fn rolling_average_as_qaverage() {
        let a = Quality::first(1000);
        assert_eq!((a.q, a.expect, a.var, a.dq), (0.0, 0.0, 0.0, 0.0));
        let b = a.next(1300);
        assert_eq!(b.lastseen, 1300);
        assert_eq!(b.q, 300.0);
        assert!((b.expect - 120.0).abs() < 1e-9);
        assert!((b.var - 0.4 * 300.0 * 300.0).abs() < 1e-6);
        assert_eq!(b.dq, 300.0);
        let c = b.next(1400);
        assert!((c.expect - (0.4 * 100.0 + 0.6 * 120.0)).abs() < 1e-9);
        assert_eq!(c.dq, -200.0);
        assert_eq!(Quality::update(None, 5), Quality::first(5));
    }

    #[quickcheck]
    fn record_round_trips(t: i64, q: f64, e: f64) {
        let r = Quality {
            lastseen: t,
            q,
            expect: e,
            var: 1.5,
            dq: -2.0,
        };
        let back = Quality::decode(&r.encode()).unwrap();
        assert_eq!(back.encode(), r.encode());
    }

    #[quickcheck]
    fn decode_never_panics(b: Vec<u8>) {
        let _ = Quality::decode(&b);
    }
}

/// One sighting of a peer, to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen<'a> {
    /// The peer's key id.
    pub key: &'a KeyId,
    /// The peer's address (for a proxied connection, the client's).
    pub address: &'a str,
    /// Who opened the connection.
    pub direction: Direction,
    /// Seconds since the epoch.
    pub now: i64,
}

/// Where lastseen is recorded: 3.21's LMDB file on a single node, the
/// shared database in a cluster.
pub trait LastseenStore {
    /// The storage's failure type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Record `seen` as `UpdateLastSawHost` does (quality entry updated,
    /// forward and reverse address entries replaced), atomically; returns
    /// the new quality record.
    fn record(&self, seen: &Seen<'_>) -> Result<Quality, Self::Error>;
}
