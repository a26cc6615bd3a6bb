//! Conformance: transcript loader and runner.
