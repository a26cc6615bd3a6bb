//! Connection admission, decided before any per-connection state is built
//! (SEMANTICS.md 0.2 steps 2-7): `allowconnects`, `denyconnects`, one
//! connection per IP unless `allowallconnects`, and `maxconnections`; then
//! the pre-authentication budget ([`PendingLimits`]), which bounds the
//! connections that have not yet identified, per address and in all.

use std::collections::HashMap;

use crate::policy::ServerControl;

/// Why a connection was refused; the server closes it without a byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `allowconnects` is set and the IP matches none of it.
    #[error("Remote host '{0}' not in allowconnects, denying connection")]
    NotAllowed(String),
    /// The IP matches `denyconnects`.
    #[error("Remote host '{0}' is in denyconnects, denying connection")]
    Denied(String),
    /// A second simultaneous connection from an IP not in `allowallconnects`.
    #[error(
        "Remote host '{0}' is not in allowallconnects, denying second simultaneous connection"
    )]
    Second(String),
    /// `maxconnections` connections are already being served.
    #[error(
        "Too many threads ({active} > {max}), dropping connection! Increase server maxconnections?"
    )]
    TooMany {
        /// Connections being served.
        active: usize,
        /// The cap.
        max: usize,
    },
}

/// A socket peer's address as the access rules see it: an IPv4-mapped IPv6
/// peer (`::ffff:1.2.3.4`) becomes plain IPv4; anything else is kept.
///
/// Stricter than the policy's [`crate::policy::addr::map_address`] (3.21's
/// `MapAddress`, which drops any leading `::ffff:`): the prefix only goes
/// when a dotted IPv4 address follows, so a hex-form IPv6 peer such as
/// `::ffff:abcd` is never turned into a bogus name. For the addresses a
/// socket reports (mapped peers print dotted) both give the same answer.
pub fn unmap_ipv4_peer(ip: &str) -> &str {
    ip.strip_prefix("::ffff:")
        .filter(|rest| rest.contains('.'))
        .unwrap_or(ip)
}

/// How many connections may wait in the pre-authentication stage (accepted,
/// not yet through the handshake and IDENTITY): from one address, and in
/// all. This budget is separate from `maxconnections`, which counts
/// identified sessions, so connections that never identify cannot keep
/// identified clients out, whatever `allowallconnects` says (issue 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingLimits {
    /// Most pending connections from one address (at least 1).
    pub per_address: usize,
    /// Most pending connections in all (at least 1).
    pub total: usize,
}

impl Default for PendingLimits {
    /// 32 from one address (room for `rcf-agent --parallel` and a NAT'd
    /// group of hosts), 256 in all.
    fn default() -> Self {
        PendingLimits {
            per_address: 32,
            total: 256,
        }
    }
}

/// One admitted connection, as [`Admission`] knows it. Ids grow with
/// acceptance, so a smaller id is an older connection.
pub type ConnId = u64;

/// What [`Admission::admit`] decided for a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Admitted {
    /// The new connection's id, for [`Admission::identify`] and
    /// [`Admission::release`].
    pub id: ConnId,
    /// Pending connections to drop now, oldest first: the pre-authentication
    /// budget was full. Their slots are already given back; the caller only
    /// closes them (and still calls `release` when each task ends).
    pub evict: Vec<ConnId>,
}

/// The pre-authentication budget: which connections are pending, and from
/// where. Pure bookkeeping; the adapter holds the sockets.
#[derive(Debug, Default)]
struct Pending {
    /// Pending ids per address, oldest first (ids are increasing).
    by_ip: HashMap<String, std::collections::BTreeSet<ConnId>>,
    total: usize,
}

impl Pending {
    fn insert(&mut self, ip: &str, id: ConnId) {
        self.by_ip.entry(ip.to_string()).or_default().insert(id);
        self.total += 1;
    }

    fn remove(&mut self, ip: &str, id: ConnId) -> bool {
        let Some(set) = self.by_ip.get_mut(ip) else {
            return false;
        };
        let removed = set.remove(&id);
        if set.is_empty() {
            self.by_ip.remove(ip);
        }
        if removed {
            self.total -= 1;
        }
        removed
    }

    fn count(&self, ip: &str) -> usize {
        self.by_ip.get(ip).map_or(0, |s| s.len())
    }

    /// The connection to drop when the total budget is full: the oldest
    /// pending connection of the address with the most pending; between
    /// equally busy addresses, the one whose oldest connection is older.
    fn victim(&self) -> Option<(String, ConnId)> {
        self.by_ip
            .iter()
            .filter_map(|(ip, set)| set.first().map(|&oldest| (set.len(), oldest, ip)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(_, oldest, ip)| (ip.clone(), oldest))
    }
}

/// Open connections: per IP (for the one-per-IP rule), the identified
/// sessions (for `maxconnections`) and the pending ones (for the
/// pre-authentication budget).
#[derive(Debug, Default)]
pub struct Admission {
    per_ip: HashMap<String, usize>,
    /// Ids of identified sessions with their address.
    identified: HashMap<ConnId, String>,
    /// Address of every open connection, by id.
    open: HashMap<ConnId, String>,
    pending: Pending,
    limits: PendingLimits,
    next: ConnId,
}

impl Admission {
    /// An empty table with the default pre-authentication budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with the given pre-authentication budget (each
    /// limit at least 1).
    pub fn with_limits(limits: PendingLimits) -> Self {
        Admission {
            limits: PendingLimits {
                per_address: limits.per_address.max(1),
                total: limits.total.max(1),
            },
            ..Self::default()
        }
    }

    /// Admit a new connection from `ip` (already mapped), or say why not.
    ///
    /// The checks are 3.21's, in its order: `allowconnects`, `denyconnects`,
    /// a second connection from an address not in `allowallconnects`, and
    /// `maxconnections`, which counts identified sessions: at most that
    /// many are served at once (3.21 lets one more in and commits apoptosis
    /// after repeated drops; we do neither). An admitted connection is
    /// pending until [`identify`](Admission::identify); when that makes the
    /// pre-authentication budget overflow, the oldest pending connection of
    /// the busiest address (this one's, first, when its own address is
    /// over its share) is named in [`Admitted::evict`]. On `Ok`, call
    /// [`release`](Admission::release) when the connection ends.
    pub fn admit(&mut self, ip: &str, control: &ServerControl) -> Result<Admitted, Refusal> {
        if !control.allowconnects.is_empty() && !control.allowconnects.contains(ip) {
            return Err(Refusal::NotAllowed(ip.to_string()));
        }
        if control.denyconnects.contains(ip) {
            return Err(Refusal::Denied(ip.to_string()));
        }
        let open = self.per_ip.get(ip).copied().unwrap_or(0);
        if open > 0 && !control.allowallconnects.contains(ip) {
            return Err(Refusal::Second(ip.to_string()));
        }
        let max = control.maxconnections as usize;
        if self.identified.len() >= max {
            return Err(Refusal::TooMany {
                active: self.identified.len() + 1,
                max,
            });
        }
        let id = self.next;
        self.next += 1;
        *self.per_ip.entry(ip.to_string()).or_insert(0) += 1;
        self.open.insert(id, ip.to_string());
        self.pending.insert(ip, id);
        let mut evict = Vec::new();
        while self.pending.count(ip) > self.limits.per_address {
            let oldest = self.pending.by_ip[ip].first().copied();
            match oldest {
                Some(old) => {
                    self.pending.remove(ip, old);
                    evict.push(old);
                }
                None => break,
            }
        }
        while self.pending.total > self.limits.total {
            let Some((vip, old)) = self.pending.victim() else {
                break;
            };
            self.pending.remove(&vip, old);
            evict.push(old);
        }
        Ok(Admitted { id, evict })
    }

    /// Connection `id` finished the handshake and IDENTITY: it leaves the
    /// pre-authentication budget and becomes one of the `maxconnections`
    /// identified sessions, or, when those are all taken (pending
    /// connections identified at once), is refused: close it.
    pub fn identify(&mut self, id: ConnId, control: &ServerControl) -> Result<(), Refusal> {
        let Some(ip) = self.open.get(&id).cloned() else {
            return Ok(());
        };
        if self.identified.contains_key(&id) {
            return Ok(());
        }
        self.pending.remove(&ip, id);
        let max = control.maxconnections as usize;
        if self.identified.len() >= max {
            return Err(Refusal::TooMany {
                active: self.identified.len() + 1,
                max,
            });
        }
        self.identified.insert(id, ip);
        Ok(())
    }

    /// Connection `id` ended (however: closed, refused at identification,
    /// evicted).
    pub fn release(&mut self, id: ConnId) {
        let Some(ip) = self.open.remove(&id) else {
            return;
        };
        self.pending.remove(&ip, id);
        self.identified.remove(&id);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Identified sessions being served (what `maxconnections` caps).
    pub fn active(&self) -> usize {
        self.identified.len()
    }

    /// Connections in the pre-authentication stage.
    pub fn pending(&self) -> usize {
        self.pending.total
    }

    /// Pending connections from `ip`.
    pub fn pending_from(&self, ip: &str) -> usize {
        self.pending.count(ip)
    }

    /// Open connections (pending and identified).
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::addr::ConnList;

    fn control(allow: &[&str], deny: &[&str], all: &[&str], max: u32) -> ServerControl {
        ServerControl {
            allowconnects: ConnList::from_policy_order(allow.iter().copied()),
            denyconnects: ConnList::from_policy_order(deny.iter().copied()),
            allowallconnects: ConnList::from_policy_order(all.iter().copied()),
            maxconnections: max,
            ..Default::default()
        }
    }

    /// Admit and identify at once (an identified session).
    fn session(a: &mut Admission, ip: &str, c: &ServerControl) -> Result<ConnId, Refusal> {
        let t = a.admit(ip, c)?;
        assert!(t.evict.is_empty());
        a.identify(t.id, c)?;
        Ok(t.id)
    }

    #[test]
    fn order_of_checks_and_messages() {
        let c = control(&["127.0.0.0/8"], &["127.0.0.9"], &["127.0.0.2"], 3);
        let mut a = Admission::new();
        assert_eq!(
            a.admit("10.0.0.1", &c),
            Err(Refusal::NotAllowed("10.0.0.1".into()))
        );
        assert_eq!(
            a.admit("127.0.0.9", &c),
            Err(Refusal::Denied("127.0.0.9".into()))
        );
        let first = session(&mut a, "127.0.0.1", &c).unwrap();
        assert_eq!(
            a.admit("127.0.0.1", &c).unwrap_err().to_string(),
            "Remote host '127.0.0.1' is not in allowallconnects, denying second simultaneous connection"
        );
        session(&mut a, "127.0.0.2", &c).unwrap();
        session(&mut a, "127.0.0.2", &c).unwrap();
        assert!(matches!(
            a.admit("127.0.0.3", &c),
            Err(Refusal::TooMany { max: 3, .. })
        ));
        a.release(first);
        session(&mut a, "127.0.0.1", &c).unwrap();
        assert_eq!(a.active(), 3);
    }

    #[test]
    fn empty_allowconnects_admits_everyone_and_ipv4_rules_never_match_ipv6() {
        let c = control(&[], &["0.0.0.0/0"], &[], 30);
        let mut a = Admission::new();
        assert!(a.admit("::1", &c).is_ok());
        assert!(a.admit("127.0.0.1", &c).is_err());
        assert_eq!(unmap_ipv4_peer("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(unmap_ipv4_peer("::1"), "::1");
    }

    /// Pending connections do not count against `maxconnections` (issue 18
    /// starvation): idle connections from an `allowallconnects` address
    /// leave room for identified clients from elsewhere; the cap then holds
    /// at identification.
    #[test]
    fn pending_connections_are_outside_maxconnections() {
        let c = control(&[], &[], &["127.0.0.2"], 2);
        let mut a = Admission::new();
        let idle: Vec<ConnId> = (0..10)
            .map(|_| a.admit("127.0.0.2", &c).unwrap().id)
            .collect();
        assert_eq!((a.pending(), a.active()), (10, 0));
        session(&mut a, "127.0.0.3", &c).unwrap();
        let t = a.admit("127.0.0.4", &c).unwrap();
        // Two pending identify at once with one slot left: the second is refused.
        a.identify(idle[0], &c).unwrap();
        assert!(matches!(
            a.identify(t.id, &c),
            Err(Refusal::TooMany { max: 2, .. })
        ));
        a.release(t.id);
        assert_eq!((a.pending(), a.active(), a.open()), (9, 2, 11));
        assert!(matches!(
            a.admit("127.0.0.5", &c),
            Err(Refusal::TooMany { .. })
        ));
    }

    /// Over its own share, an address loses its oldest pending connection;
    /// over the total, the busiest address does; identified sessions are
    /// never named.
    #[test]
    fn the_oldest_pending_of_the_busiest_address_goes_first() {
        let c = control(&[], &[], &["127.0.0.0/8"], 100);
        let mut a = Admission::with_limits(PendingLimits {
            per_address: 3,
            total: 5,
        });
        let x: Vec<ConnId> = (0..3)
            .map(|_| a.admit("127.0.0.2", &c).unwrap().id)
            .collect();
        let t = a.admit("127.0.0.2", &c).unwrap();
        assert_eq!(
            t.evict,
            vec![x[0]],
            "its own oldest, over the per-address share"
        );
        let y = a.admit("127.0.0.3", &c).unwrap();
        assert!(y.evict.is_empty());
        let z = a.admit("127.0.0.4", &c).unwrap();
        assert!(z.evict.is_empty());
        assert_eq!(a.pending(), 5);
        // Total full: 127.0.0.2 holds 3 (x1, x2, t): x1 goes, not y or z.
        let w = a.admit("127.0.0.5", &c).unwrap();
        assert_eq!(w.evict, vec![x[1]]);
        // Equally busy (2, 1, 1, 1 → after identify of x2: 1, 1, 1, 1):
        // the oldest of all goes.
        a.identify(x[2], &c).unwrap();
        let v = a.admit("127.0.0.6", &c).unwrap();
        assert!(v.evict.is_empty(), "x2 left the budget: {v:?}");
        let u = a.admit("127.0.0.7", &c).unwrap();
        assert_eq!(u.evict, vec![t.id], "oldest among equally busy");
        assert_eq!(a.pending_from("127.0.0.2"), 0);
        assert_eq!(a.active(), 1);
        // Evicted connections are still open until their tasks release them.
        for id in [x[0], x[1], t.id] {
            a.release(id);
        }
        assert_eq!(a.open(), 6);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(u8),
        Identify(u8),
        Release(u8),
    }

    impl quickcheck::Arbitrary for Op {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            let n = u8::arbitrary(g);
            match u8::arbitrary(g) % 4 {
                0 | 1 => Op::Admit(n % 5),
                2 => Op::Identify(n),
                _ => Op::Release(n),
            }
        }
    }

    /// Whatever the sequence: the pending budget holds per address and in
    /// all; only pending connections are evicted, never the new one; each
    /// eviction for the total takes the oldest of an address that was the
    /// busiest; `maxconnections` caps identified sessions.
    #[quickcheck_macros::quickcheck]
    fn the_budget_holds_and_evicts_by_the_rule(ops: Vec<Op>, per: u8, total: u8) -> bool {
        let limits = PendingLimits {
            per_address: usize::from(per % 4) + 1,
            total: usize::from(total % 8) + 1,
        };
        let c = control(&[], &[], &["127.0.0.0/8"], 4);
        let mut a = Admission::with_limits(limits);
        // The model: pending ids per address, identified ids, open ids.
        let mut pending: HashMap<String, Vec<ConnId>> = HashMap::new();
        let mut identified: Vec<ConnId> = Vec::new();
        let mut open: Vec<(ConnId, String)> = Vec::new();
        for op in ops {
            match op {
                Op::Admit(n) => {
                    let ip = format!("127.0.0.{n}");
                    let Ok(t) = a.admit(&ip, &c) else {
                        if identified.len() < 4 {
                            return false;
                        }
                        continue;
                    };
                    pending.entry(ip.clone()).or_default().push(t.id);
                    open.push((t.id, ip.clone()));
                    for e in &t.evict {
                        if *e == t.id || identified.contains(e) {
                            return false;
                        }
                        let (eip, ids) = pending
                            .iter()
                            .find(|(_, v)| v.contains(e))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .expect("an evicted id was pending");
                        let busiest = pending.values().map(Vec::len).max().unwrap_or(0);
                        let own_over = eip == ip && ids.len() > limits.per_address;
                        if ids.first() != Some(e) || !(own_over || ids.len() == busiest) {
                            return false;
                        }
                        pending.get_mut(&eip).unwrap().retain(|x| x != e);
                    }
                }
                Op::Identify(i) => {
                    if open.is_empty() {
                        continue;
                    }
                    let (id, ip) = open[usize::from(i) % open.len()].clone();
                    let r = a.identify(id, &c);
                    if let Some(v) = pending.get_mut(&ip) {
                        v.retain(|x| *x != id);
                    }
                    if identified.contains(&id) {
                        continue;
                    }
                    match r {
                        Ok(()) => identified.push(id),
                        Err(_) if identified.len() >= 4 => {}
                        Err(_) => return false,
                    }
                }
                Op::Release(i) => {
                    if open.is_empty() {
                        continue;
                    }
                    let (id, ip) = open.remove(usize::from(i) % open.len());
                    a.release(id);
                    identified.retain(|x| *x != id);
                    if let Some(v) = pending.get_mut(&ip) {
                        v.retain(|x| *x != id);
                    }
                }
            }
            pending.retain(|_, v| !v.is_empty());
            let total: usize = pending.values().map(Vec::len).sum();
            if total != a.pending()
                || total > limits.total
                || pending
                    .iter()
                    .any(|(ip, v)| v.len() > limits.per_address || v.len() != a.pending_from(ip))
                || identified.len() != a.active()
                || a.active() > 4
                || open.len() != a.open()
            {
                return false;
            }
        }
        true
    }

    /// The two unmappings agree on what sockets report and differ only on
    /// a hex-form `::ffff:` address, which only the policy's (3.21's
    /// `MapAddress`) strips.
    #[test]
    fn peer_unmapping_versus_the_policys_map_address() {
        use crate::policy::addr::map_address;
        for ip in ["::ffff:10.1.2.3", "10.1.2.3", "::1", "fe80::1", ""] {
            assert_eq!(unmap_ipv4_peer(ip), map_address(ip), "{ip}");
        }
        assert_eq!(unmap_ipv4_peer("::ffff:abcd"), "::ffff:abcd");
        assert_eq!(map_address("::ffff:abcd"), "abcd");
        // What the socket layer prints for a mapped peer is dotted.
        let mapped = core::net::Ipv4Addr::new(192, 0, 2, 7)
            .to_ipv6_mapped()
            .to_string();
        assert_eq!(unmap_ipv4_peer(&mapped), "192.0.2.7");
    }
}
