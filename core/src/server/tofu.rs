//! A budget for trust on first use, beside CFEngine's `trustkeysfrom`.
//!
//! `trustkeysfrom` alone trusts every new key from the listed addresses for
//! as long as the policy says so; admins are told to empty it after
//! bootstrap, and often forget. A [`TrustBudget`] closes it by itself:
//! after `max_new` newly trusted keys, or once `window_s` seconds have
//! passed since the budget was opened, whichever comes first. While closed,
//! a new or changed key is refused exactly as if the peer were not in
//! `trustkeysfrom` (`TRUST FAILED…`).
//!
//! The budget and its [`TofuGate`] are pure: the caller passes the time in
//! (wall-clock or monotonic seconds, as long as it is one clock) and, to
//! share one gate across connections, keeps it behind its own lock and
//! hands the sessions a [`NewKeyGate`]. Keys already trusted never consult it.

/// Why the budget refused a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// `max_new` keys were already trusted.
    #[error("trust on first use closed: {0} new key(s) already trusted (--trust-max-new)")]
    Exhausted(u32),
    /// The window has passed.
    #[error("trust on first use closed: the {0} s window after start has passed (--trust-window)")]
    WindowOver(u64),
}

/// How many new keys may still be trusted, and until when.
///
/// Contract: [`TrustBudget::try_take`] is the only way a key gets
/// trusted while a limit is set; it is called only for keys `trustkeysfrom`
/// already admits (the IP check is the policy's, not the budget's). With no
/// limit set the budget never closes and the behaviour is CFEngine's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBudget {
    max_new: Option<u32>,
    window_s: Option<u64>,
    opened_s: u64,
    granted: u32,
}

impl TrustBudget {
    /// A budget opened at `now_s`. `None` means no limit of that kind.
    pub fn new(max_new: Option<u32>, window_s: Option<u64>, now_s: u64) -> Self {
        TrustBudget {
            max_new,
            window_s,
            opened_s: now_s,
            granted: 0,
        }
    }

    /// A budget that never closes (CFEngine's behaviour).
    pub fn unlimited() -> Self {
        Self::new(None, None, 0)
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.max_new.is_some() || self.window_s.is_some()
    }

    /// Keys granted so far.
    pub fn granted(&self) -> u32 {
        self.granted
    }

    /// Whether a new key may be trusted at `now_s`, without taking it.
    /// A clock that went backwards counts as no time passed.
    pub fn check(&self, now_s: u64) -> Result<(), Closed> {
        if let Some(w) = self.window_s {
            if now_s.saturating_sub(self.opened_s) >= w {
                return Err(Closed::WindowOver(w));
            }
        }
        if let Some(m) = self.max_new {
            if self.granted >= m {
                return Err(Closed::Exhausted(m));
            }
        }
        Ok(())
    }

    /// Take one new key from the budget at `now_s`, or say why not.
    pub fn try_take(&mut self, now_s: u64) -> Result<(), Closed> {
        self.check(now_s)?;
        self.granted = self.granted.saturating_add(1);
        Ok(())
    }
}

use std::sync::Arc;

use crate::machine::NewKeyGate;

use super::view::{Peer, PolicyView, ResourceKind, Verdict};

/// Why [`TofuGate::decide`] refused a new or changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The peer's IP is not in `trustkeysfrom`.
    #[error("not in trustkeysfrom")]
    Policy,
    /// `trustkeysfrom` admits it, but the budget is closed.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// One [`TrustBudget`] with counters for metrics: the whole trust-on-first-use
/// decision, pure and single-owner. A server that shares one gate across its
/// connections keeps it behind its own lock, in the adapter, and hands the
/// sessions a [`NewKeyGate`] that reads its clock and calls
/// [`TofuGate::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TofuGate {
    budget: TrustBudget,
    /// New keys trusted (policy and budget agreed).
    pub granted: u64,
    /// New keys refused because the IP is not in `trustkeysfrom`.
    pub refused_policy: u64,
    /// New keys refused because the budget is closed.
    pub refused_closed: u64,
}

impl Default for TofuGate {
    fn default() -> Self {
        Self::new(TrustBudget::unlimited())
    }
}

impl TofuGate {
    /// A gate over `budget`, nothing counted yet.
    pub fn new(budget: TrustBudget) -> Self {
        TofuGate {
            budget,
            granted: 0,
            refused_policy: 0,
            refused_closed: 0,
        }
    }

    /// Replace the budget (at startup, from the command line); the counters stay.
    pub fn set_budget(&mut self, b: TrustBudget) {
        self.budget = b;
    }

    /// The budget as it stands.
    pub fn budget(&self) -> &TrustBudget {
        &self.budget
    }

    /// The trust decision for a new or changed key at `now_s` (the budget's
    /// clock), given what the policy (`trustkeysfrom`) says: both must
    /// agree. Takes one key from the budget when they do, and counts the
    /// outcome either way.
    #[must_use = "a refused key must not be trusted"]
    pub fn decide(&mut self, policy_trusts: bool, now_s: u64) -> Result<(), Refused> {
        if !policy_trusts {
            self.refused_policy += 1;
            return Err(Refused::Policy);
        }
        match self.budget.try_take(now_s) {
            Ok(()) => {
                self.granted += 1;
                Ok(())
            }
            Err(why) => {
                self.refused_closed += 1;
                Err(Refused::Closed(why))
            }
        }
    }
}

/// `inner` with its `trusts_keys_from` answered through `gate` as well.
pub fn gated_view(inner: Arc<dyn PolicyView>, gate: Arc<dyn NewKeyGate>) -> Arc<dyn PolicyView> {
    Arc::new(Gated { inner, gate })
}

/// A policy whose key-trust answer also consults the gate. Every other
/// method is delegated unchanged (a method added to [`PolicyView`] must be
/// delegated here too).
struct Gated {
    inner: Arc<dyn PolicyView>,
    gate: Arc<dyn NewKeyGate>,
}

impl PolicyView for Gated {
    fn expand_shortcut(&self, path: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        self.inner.expand_shortcut(path, peer)
    }
    fn check_path(&self, path: &[u8], peer: &Peer) -> Verdict {
        self.inner.check_path(path, peer)
    }
    fn check_name(&self, resource: ResourceKind, name: &[u8], peer: &Peer) -> Verdict {
        self.inner.check_name(resource, name, peer)
    }
    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.gate.admit_new_key(ip, self.inner.trusts_keys_from(ip))
    }
    fn deny_bad_clocks(&self) -> bool {
        self.inner.deny_bad_clocks()
    }
    fn needs_reverse_dns(&self) -> bool {
        self.inner.needs_reverse_dns()
    }
    fn cfruncommand(&self) -> &str {
        self.inner.cfruncommand()
    }
    fn user_may_exec(&self, user: &str) -> bool {
        self.inner.user_may_exec(user)
    }
    fn class_defined(&self, name: &str) -> bool {
        self.inner.class_defined(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_closes() {
        let mut b = TrustBudget::unlimited();
        for t in 0..1000 {
            assert_eq!(b.try_take(t * 1_000_000), Ok(()));
        }
        assert!(!b.is_limited());
    }

    #[test]
    fn closes_after_n_keys() {
        let mut b = TrustBudget::new(Some(2), None, 100);
        assert_eq!(b.try_take(100), Ok(()));
        assert_eq!(b.try_take(101), Ok(()));
        assert_eq!(b.try_take(102), Err(Closed::Exhausted(2)));
        assert_eq!(b.granted(), 2);
    }

    #[test]
    fn closes_after_window_and_tolerates_clock_going_back() {
        let mut b = TrustBudget::new(None, Some(60), 1000);
        assert_eq!(b.try_take(1059), Ok(()));
        assert_eq!(b.try_take(999), Ok(()));
        assert_eq!(b.try_take(1060), Err(Closed::WindowOver(60)));
        assert_eq!(b.check(5000), Err(Closed::WindowOver(60)));
    }

    #[test]
    fn zero_means_closed_from_the_start() {
        assert_eq!(
            TrustBudget::new(Some(0), None, 0).check(0),
            Err(Closed::Exhausted(0))
        );
        assert_eq!(
            TrustBudget::new(None, Some(0), 0).check(0),
            Err(Closed::WindowOver(0))
        );
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    struct P(bool);
    impl PolicyView for P {
        fn expand_shortcut(&self, _: &[u8], _: &Peer) -> Option<Vec<u8>> {
            None
        }
        fn check_path(&self, _: &[u8], _: &Peer) -> Verdict {
            Verdict::no_rule()
        }
        fn check_name(&self, _: ResourceKind, _: &[u8], _: &Peer) -> Verdict {
            Verdict::no_rule()
        }
        fn trusts_keys_from(&self, _: &str) -> bool {
            self.0
        }
        fn deny_bad_clocks(&self) -> bool {
            true
        }
        fn needs_reverse_dns(&self) -> bool {
            false
        }
        fn cfruncommand(&self) -> &str {
            "/bin/true"
        }
        fn user_may_exec(&self, u: &str) -> bool {
            u == "root"
        }
        fn class_defined(&self, c: &str) -> bool {
            c == "any"
        }
    }

    /// A stateless gate: refuses 10.0.0.3 whatever the policy says, so the
    /// tests see which IP and which policy answer reach it. (The shared,
    /// locked gate is the adapter's; its counting is [`TofuGate::decide`]'s.)
    struct NotThree;
    impl NewKeyGate for NotThree {
        fn admit_new_key(&self, ip: &str, policy_trusts: bool) -> bool {
            policy_trusts && ip != "10.0.0.3"
        }
    }

    #[test]
    fn the_gate_forwards_everything_but_trust_unchanged() {
        let v = gated_view(Arc::new(P(true)), Arc::new(NotThree));
        assert_eq!(v.cfruncommand(), "/bin/true");
        assert!(v.user_may_exec("root") && !v.user_may_exec("bob"));
        assert!(v.class_defined("any") && !v.class_defined("none"));
        assert!(v.deny_bad_clocks() && !v.needs_reverse_dns());
    }

    #[test]
    fn decide_needs_policy_and_budget_and_counts() {
        let mut g = TofuGate::new(TrustBudget::new(Some(1), Some(100), 10));
        assert_eq!(g.decide(false, 10), Err(Refused::Policy));
        assert_eq!(g.decide(true, 10), Ok(()));
        assert_eq!(
            g.decide(true, 11),
            Err(Refused::Closed(Closed::Exhausted(1)))
        );
        assert_eq!((g.granted, g.refused_policy, g.refused_closed), (1, 1, 1));
        // the window also closes it, at the time passed in
        g.set_budget(TrustBudget::new(None, Some(100), 10));
        assert_eq!(g.decide(true, 109), Ok(()));
        assert_eq!(
            g.decide(true, 110),
            Err(Refused::Closed(Closed::WindowOver(100)))
        );
        assert_eq!(g.granted, 2);
    }

    #[test]
    fn the_gate_needs_the_policy_and_its_own_yes() {
        let open = gated_view(Arc::new(P(true)), Arc::new(NotThree));
        let shut = gated_view(Arc::new(P(false)), Arc::new(NotThree));
        assert!(!shut.trusts_keys_from("10.0.0.1"));
        assert!(open.trusts_keys_from("10.0.0.2"));
        assert!(!open.trusts_keys_from("10.0.0.3"));
    }
}
