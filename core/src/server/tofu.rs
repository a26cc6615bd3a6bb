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
//! The budget is pure: the caller passes the time in (wall-clock or
//! monotonic seconds, as long as it is one clock) and shares one budget
//! across connections behind a lock. Keys already trusted never consult it.

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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::view::{Decision, Peer, PolicyView, Resource};

/// The time source a [`TofuGate`] reads, in seconds (supplied by the adapter).
pub type Clock = Box<dyn Fn() -> u64 + Send + Sync>;
/// Told about every key the budget refused: the peer IP and why.
pub type Notify = Box<dyn Fn(&str, &Closed) + Send + Sync>;

/// One [`TrustBudget`] shared by every connection of a server, with
/// counters for metrics. The adapter builds one, supplies the clock, and
/// wraps each policy it hands a session with [`TofuGate::view`].
pub struct TofuGate {
    budget: Mutex<TrustBudget>,
    clock: Clock,
    notify: Notify,
    /// New keys trusted (policy and budget agreed).
    pub granted: AtomicU64,
    /// New keys refused because the IP is not in `trustkeysfrom`.
    pub refused_policy: AtomicU64,
    /// New keys refused because the budget is closed.
    pub refused_closed: AtomicU64,
}

impl std::fmt::Debug for TofuGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TofuGate")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl TofuGate {
    /// A gate with an unlimited budget; see [`TofuGate::set_budget`].
    pub fn new(clock: Clock, notify: Notify) -> Self {
        TofuGate {
            budget: Mutex::new(TrustBudget::unlimited()),
            clock,
            notify,
            granted: AtomicU64::new(0),
            refused_policy: AtomicU64::new(0),
            refused_closed: AtomicU64::new(0),
        }
    }

    /// Replace the budget (at startup, from the command line).
    pub fn set_budget(&self, b: TrustBudget) {
        if let Ok(mut g) = self.budget.lock() {
            *g = b;
        }
    }

    /// A copy of the budget as it stands.
    pub fn budget(&self) -> TrustBudget {
        self.budget
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The trust decision for a new or changed key from `ip`, given what
    /// the policy (`trustkeysfrom`) says: both must agree. Takes one key
    /// from the budget when it does.
    pub fn decide(&self, ip: &str, policy_trusts: bool) -> bool {
        if !policy_trusts {
            self.refused_policy.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let now = (self.clock)();
        let r = match self.budget.lock() {
            Ok(mut b) => b.try_take(now),
            Err(p) => p.into_inner().try_take(now),
        };
        match r {
            Ok(()) => {
                self.granted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(why) => {
                self.refused_closed.fetch_add(1, Ordering::Relaxed);
                (self.notify)(ip, &why);
                false
            }
        }
    }

    /// `inner` with its `trusts_keys_from` answered through this gate.
    pub fn view(self: &Arc<Self>, inner: Arc<dyn PolicyView>) -> Arc<dyn PolicyView> {
        Arc::new(Gated {
            inner,
            gate: self.clone(),
        })
    }

    /// The same gate for a classic-protocol session's policy, so the budget
    /// holds whichever protocol a new key arrives by.
    pub fn classic_view(
        self: &Arc<Self>,
        inner: Arc<dyn crate::classic::ClassicPolicy>,
    ) -> Arc<dyn crate::classic::ClassicPolicy> {
        Arc::new(GatedClassic {
            inner,
            gate: self.clone(),
        })
    }
}

struct GatedClassic {
    inner: Arc<dyn crate::classic::ClassicPolicy>,
    gate: Arc<TofuGate>,
}

impl crate::classic::ClassicPolicy for GatedClassic {
    fn legacy_allowed(&self, ip: &str) -> bool {
        self.inner.legacy_allowed(ip)
    }
    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.gate.decide(ip, self.inner.trusts_keys_from(ip))
    }
    fn deny_bad_clocks(&self) -> bool {
        self.inner.deny_bad_clocks()
    }
    fn expand_shortcut(&self, path: &[u8], peer: &crate::classic::ClassicPeer) -> Option<Vec<u8>> {
        self.inner.expand_shortcut(path, peer)
    }
    fn check_path(
        &self,
        path: &[u8],
        peer: &crate::classic::ClassicPeer,
        encrypted: bool,
    ) -> crate::classic::ClassicDecision {
        self.inner.check_path(path, peer, encrypted)
    }
    fn check_literal(
        &self,
        name: &[u8],
        peer: &crate::classic::ClassicPeer,
        encrypted: bool,
    ) -> bool {
        self.inner.check_literal(name, peer, encrypted)
    }
}

/// A policy whose key-trust answer also consults the gate. Every other
/// method is delegated unchanged (a method added to [`PolicyView`] must be
/// delegated here too).
struct Gated {
    inner: Arc<dyn PolicyView>,
    gate: Arc<TofuGate>,
}

impl PolicyView for Gated {
    fn expand_shortcut(&self, path: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        self.inner.expand_shortcut(path, peer)
    }
    fn check_path(&self, path: &[u8], peer: &Peer) -> Decision {
        self.inner.check_path(path, peer)
    }
    fn check_name(&self, resource: Resource, name: &[u8], peer: &Peer) -> Decision {
        self.inner.check_name(resource, name, peer)
    }
    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.gate.decide(ip, self.inner.trusts_keys_from(ip))
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
    use std::sync::atomic::AtomicU64;

    struct P(bool);
    impl PolicyView for P {
        fn expand_shortcut(&self, _: &[u8], _: &Peer) -> Option<Vec<u8>> {
            None
        }
        fn check_path(&self, _: &[u8], _: &Peer) -> Decision {
            Decision::no_rule()
        }
        fn check_name(&self, _: Resource, _: &[u8], _: &Peer) -> Decision {
            Decision::no_rule()
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

    #[test]
    fn the_gate_forwards_everything_but_trust_unchanged() {
        let gate = Arc::new(TofuGate::new(Box::new(|| 0), Box::new(|_, _| {})));
        let v = gate.view(Arc::new(P(true)));
        assert_eq!(v.cfruncommand(), "/bin/true");
        assert!(v.user_may_exec("root") && !v.user_may_exec("bob"));
        assert!(v.class_defined("any") && !v.class_defined("none"));
        assert!(v.deny_bad_clocks() && !v.needs_reverse_dns());
    }

    #[test]
    fn gate_needs_policy_and_budget_and_counts() {
        let t = Arc::new(AtomicU64::new(10));
        let t2 = t.clone();
        let told = Arc::new(Mutex::new(Vec::new()));
        let told2 = told.clone();
        let gate = Arc::new(TofuGate::new(
            Box::new(move || t2.load(Ordering::Relaxed)),
            Box::new(move |ip, why| told2.lock().unwrap().push(format!("{ip}: {why}"))),
        ));
        gate.set_budget(TrustBudget::new(Some(1), Some(100), 10));
        let open = gate.view(Arc::new(P(true)));
        let shut = gate.view(Arc::new(P(false)));
        assert_eq!(open.cfruncommand(), "/bin/true");
        assert!(!shut.trusts_keys_from("10.0.0.1"));
        assert!(open.trusts_keys_from("10.0.0.2"));
        assert!(!open.trusts_keys_from("10.0.0.3"));
        assert_eq!(gate.granted.load(Ordering::Relaxed), 1);
        assert_eq!(gate.refused_policy.load(Ordering::Relaxed), 1);
        assert_eq!(gate.refused_closed.load(Ordering::Relaxed), 1);
        assert_eq!(told.lock().unwrap().len(), 1);
        assert!(
            told.lock().unwrap()[0].starts_with("10.0.0.3: trust on first use closed: 1 new key")
        );
        // the window also closes it
        gate.set_budget(TrustBudget::new(None, Some(100), 10));
        assert!(open.trusts_keys_from("10.0.0.4"));
        t.store(110, Ordering::Relaxed);
        assert!(!open.trusts_keys_from("10.0.0.4"));
    }
}
