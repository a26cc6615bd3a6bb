//! Blocking filesystem answers for rcf-core, used by both runtime adapters and the bins.
pub mod policy_source;
