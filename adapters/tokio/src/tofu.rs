//! The server's one trust-on-first-use gate, shared by every connection of
//! both protocols: the core's pure [`TofuGate`] behind a lock, fed the wall
//! clock here, with its refusals logged.

use std::sync::{Arc, Mutex, MutexGuard};

use rcf_core::machine::NewKeyGate;
use rcf_core::server::tofu::{Refused, TofuGate, TrustBudget};
use rcf_core::server::Level;

use crate::Logger;

/// [`TofuGate`] shared across connections (see the module doc).
pub struct SharedTofu {
    gate: Mutex<TofuGate>,
    logger: Arc<Logger>,
}

impl SharedTofu {
    /// An unlimited gate (CFEngine's behaviour) logging to `logger`.
    pub fn new(logger: Arc<Logger>) -> Self {
        SharedTofu {
            gate: Mutex::new(TofuGate::default()),
            logger,
        }
    }

    /// The gate; a panic elsewhere while holding it left whole counters,
    /// so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, TofuGate> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replace the budget (at startup, from the command line).
    pub fn set_budget(&self, b: TrustBudget) {
        self.lock().set_budget(b);
    }

    /// A copy of the gate as it stands (budget and counters), for metrics.
    pub fn snapshot(&self) -> TofuGate {
        self.lock().clone()
    }
}

impl NewKeyGate for SharedTofu {
    fn admit_new_key(&self, ip: &str, policy_trusts: bool) -> bool {
        let r = self.lock().decide(policy_trusts, crate::unix_now());
        match r {
            Ok(()) => true,
            Err(Refused::Policy) => false,
            Err(Refused::Closed(why)) => {
                self.logger.log(
                    Level::Notice,
                    Some(ip),
                    &format!("Not trusting new key: {why}"),
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_logs_refusals_by_the_budget_only() {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logger = Arc::new(Logger::to(Level::Debug, false, Box::new(W(buf.clone()))));
        let t = SharedTofu::new(logger);
        t.set_budget(TrustBudget::new(Some(1), None, 0));
        assert!(!t.admit_new_key("10.0.0.1", false));
        assert!(t.admit_new_key("10.0.0.2", true));
        assert!(!t.admit_new_key("10.0.0.3", true));
        let g = t.snapshot();
        assert_eq!((g.granted, g.refused_policy, g.refused_closed), (1, 1, 1));
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("10.0.0.3")
                && text.contains("Not trusting new key: trust on first use closed")
        );
    }
}
