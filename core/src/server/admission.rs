//! Connection admission, decided before any per-connection state is built
//! (SEMANTICS.md 0.2 steps 2-7): `allowconnects`, `denyconnects`, one
//! connection per IP unless `allowallconnects`, and `maxconnections`.

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

/// Open connections, counted per IP and in total.
#[derive(Debug, Default)]
pub struct Admission {
    per_ip: HashMap<String, usize>,
    active: usize,
}

impl Admission {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admit a new connection from `ip` (already mapped), or say why not.
    ///
    /// `maxconnections` is a hard cap: at most that many are served at once
    /// (3.21 lets one more in and commits apoptosis after repeated drops;
    /// we do neither). On `Ok`, call [`release`](Admission::release) when
    /// the connection ends.
    pub fn admit(&mut self, ip: &str, control: &ServerControl) -> Result<(), Refusal> {
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
        if self.active >= max {
            return Err(Refusal::TooMany {
                active: self.active + 1,
                max,
            });
        }
        *self.per_ip.entry(ip.to_string()).or_insert(0) += 1;
        self.active += 1;
        Ok(())
    }

    /// A connection from `ip` ended.
    pub fn release(&mut self, ip: &str) {
        if let Some(n) = self.per_ip.get_mut(ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(ip);
            }
            self.active = self.active.saturating_sub(1);
        }
    }

    /// Connections being served.
    pub fn active(&self) -> usize {
        self.active
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
        assert_eq!(a.admit("127.0.0.1", &c), Ok(()));
        assert_eq!(
            a.admit("127.0.0.1", &c).unwrap_err().to_string(),
            "Remote host '127.0.0.1' is not in allowallconnects, denying second simultaneous connection"
        );
        assert_eq!(a.admit("127.0.0.2", &c), Ok(()));
        assert_eq!(a.admit("127.0.0.2", &c), Ok(()));
        assert!(matches!(
            a.admit("127.0.0.3", &c),
            Err(Refusal::TooMany { max: 3, .. })
        ));
        a.release("127.0.0.1");
        assert_eq!(a.admit("127.0.0.1", &c), Ok(()));
        assert_eq!(a.active(), 3);
    }

    #[test]
    fn empty_allowconnects_admits_everyone_and_ipv4_rules_never_match_ipv6() {
        let c = control(&[], &["0.0.0.0/0"], &[], 30);
        let mut a = Admission::new();
        assert_eq!(a.admit("::1", &c), Ok(()));
        assert!(a.admit("127.0.0.1", &c).is_err());
        assert_eq!(unmap_ipv4_peer("::ffff:127.0.0.1"), "127.0.0.1");
        assert_eq!(unmap_ipv4_peer("::1"), "::1");
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
