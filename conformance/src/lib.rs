//! rcf-conformance: recorded CFEngine 3.21 transcripts, a loader for them,
//! runners that hold an implementation to them, and the interop lab.
//!
//! * [`transcript`] reads the `cfe-transcript 1` files in `shared/interop/vectors/`.
//! * [`runner`] replays them through rcf-core's codecs (framing, banner,
//!   IDENTITY, request parsing, fixed replies).
//! * [`session_replay`] feeds the client side to the core server session
//!   and compares every byte it sends with the recorded server.
//! * [`world`] is the in-memory file/key/policy world that answers a
//!   session's questions in those replays and in the session tests.
//! * [`lab`] runs the real CFEngine 3.21 binaries (and ours) sandboxed on
//!   loopback for the interop tests.
//! * [`policygen`] generates server policies for the differential runs.

pub mod lab;
pub mod policygen;
pub mod runner;
pub mod session_replay;
pub mod transcript;
pub mod world;
