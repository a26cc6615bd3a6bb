//! Conformance: transcript loader and runner.
pub mod lab;
