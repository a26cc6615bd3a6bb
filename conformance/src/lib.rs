//! rcf-conformance: recorded CFEngine 3.21 transcripts, a loader for them,
//! and runners that hold an implementation to them.
//!
//! * [`transcript`] reads the `cfe-transcript 1` files in `shared/interop/vectors/`.
//! * [`runner`] replays them through rcf-core's codecs (framing, banner,
//!   IDENTITY, request parsing, fixed replies).

pub mod runner;
pub mod transcript;
