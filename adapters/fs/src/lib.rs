//! Blocking filesystem answers for rcf-core, used by both runtime adapters and the bins.
//!
//! * [`ppkeys`]: the ppkeys trust directory ([`ppkeys::FsPpkeys`] implements
//!   `rcf_core::keys::trust::PpkeysDir`) and the atomic, never-overwriting
//!   file writes keys need.
//! * [`augments`]: def.json and host_specific.json parsed for the policy loader.
//! * [`hostinfo`]: the host facts hard classes and `sys.*` are derived from.
//! * [`policy_source`]: policy files and path promisers for the policy loader.
//! * [`serve`]: answers to a server session's questions (realpath, stat,
//!   no-follow open and read, listings, the shared digest cache, keys).

pub mod augments;
pub mod hostinfo;
pub mod lastseen;
pub mod policy_source;
pub mod ppkeys;
pub mod serve;
