//! The classic protocol (v1, pre-TLS) in both roles (PROTOCOL.md §7).
//!
//! * [`crypto`]: MPIs, nonces, MD5 digests, RSA PKCS#1 v1.5 (all RSA
//!   decryption behind the one [`crypto::rsa_decrypt`]), the Blowfish-CBC
//!   session cipher.
//! * [`wire`]: the `CAUTH`, `SAUTH` and `S*` request layouts.
//! * [`server`]: [`ClassicServer`], the cf-serverd side (key exchange,
//!   legacy ACLs, the classic command loop), answering the same
//!   [`crate::machine::io::Event`]s as the TLS session.
//! * [`client`]: [`ClassicClient`], the cf-agent side (key exchange,
//!   `STAT`/`GET`/`OPENDIR`/`MD5`/`VERSION`, plain or encrypted).
//!
//! Randomness is always an argument (`&mut (impl RngCore + CryptoRng)`),
//! so a run can be replayed with recorded randomness.

pub mod client;
pub mod crypto;
pub mod server;
pub mod wire;

#[cfg(test)]
mod tests;

pub use client::{ClassicClient, ClassicClientError, ClientConfig, ClientEvent};
/// Re-exported so adapters and fuzzers can name the RNG traits the
/// machines take without depending on `rand_core` themselves.
pub use rand_core::{CryptoRng, Error as RngError, RngCore};
pub use server::{gated_policy, ClassicDecision, ClassicPeer, ClassicPolicy, ClassicServer};
