//! Server policy: the CFEngine 3 policy language subset a server needs, and
//! the access-control engine that answers "may this peer have that?".
//!
//! Everything here is pure: policy text arrives through [`PolicySource`],
//! canonicalisation of path promisers is a question the caller answers, and
//! the loaded [`ServerPolicy`] is an immutable value a server swaps
//! atomically on reload (wrap it in an `Arc`; [`load`] never half-applies:
//! it returns a whole new policy or errors).
//!
//! # Pieces
//! - [`parse`]: nom parser for the whole policy language (any valid file,
//!   masterfiles included); errors are `file:line:col: expected ...`.
//! - [`eval`]: `inputs` (relative to the including file, loaded to a
//!   fixpoint, cycles refused), `bundle common` vars/classes, expansion,
//!   `sys.*`/`const.*`/`this.*`, a set of functions; `$(connection.*)` stays
//!   literal for per-request use. Namespaces as the real cf-serverd 3.21
//!   resolves them: `$(bundle.var)` without `ns:` is the default
//!   namespace's, except in vars values and promisers (current namespace
//!   first) and in iteration wheels (current namespace only); `$(var)` is
//!   the current bundle's; an unqualified soft class is the current
//!   namespace's (augments and `-D` classes are soft, in the default
//!   namespace), hard classes are seen everywhere.
//! - [`server`]: `body server control` with 3.21's defaults, `access:` and
//!   `roles:` into the TLS tables and the classic lists ([`load`]).
//! - [`acl`]: the decision ([`ServerPolicy::check`]), connection lists,
//!   shortcuts, [`ServerPolicy::explain`].
//! - [`summary`]: the verbose `=== BEGIN summary of access promises ===` dump.
//! - [`json`]: 3.21's JSON (its lenient parser, writers, `JsonSelect`),
//!   the value of data containers; `eval`'s `data` submodule evaluates
//!   them (`parsejson`, `readjson`, `mergedata`, `$(d[k])`, iteration).
//!
//! # Where rcf deliberately differs from 3.21 (all fail closed)
//! - A failed or disabled reverse lookup with `deny_hostnames` on the
//!   deciding entry denies ([`Reason::HostnameUnverifiable`]); 3.21 skips the
//!   rule and admits (SEMANTICS.md B.8, B.10 #7).
//! - A deny list holding an unresolved variable makes its entry deny every
//!   request it decides ([`Reason::UnresolvedDenyRule`]); 3.21 keeps the
//!   literal text, which never matches. An unresolved promiser drops the
//!   promise with a warning. Unresolved admit entries are kept literally
//!   (they never match), as in 3.21, so the summary stays identical.
//! - An unconvertible hostname regex as the *last* legacy `admit`/`deny`
//!   element is a load error; 3.21 crashes (`StrList_Append`, exit 255, seen
//!   live). Elsewhere in the list it is dropped from the TLS tables with a
//!   warning, as 3.21 silently does.
//! - Invalid CIDRs/IPs/address regexes in access lists are warnings with
//!   `file:line` (3.21 logs them at match time): kept in the lists (and the
//!   summary) but never matched, as in 3.21; in a deny list the rule then
//!   denies every request it covers. Unknown attributes are load errors.
//!   Hex-letter names like `bad.cafe` in legacy `admit` are classified as
//!   IPs, as 3.21 does, with a warning.
//! - Whatever rcf cannot evaluate (an unsupported function, a hard class
//!   the caller has not discovered, see [`hardclass`], a variable or class
//!   depending on either) is [`Tri::Unknown`]; an access promise of unknown
//!   applicability keeps only its deny rules (issue 18: never looser).
//! - Regexes use `fancy-regex` ([`addr::compile`]: PCRE's MULTILINE and
//!   DOTALL, look-around, back-references, atomic groups; a backtracking
//!   limit where PCRE has its match limit); anchoring as 3.21 (full match
//!   for rule entries, `regcmp`, `classmatch`). A pattern that does not
//!   compile never matches, and is a load error where the pattern is a
//!   resource name (context, bundle, roles).

pub mod acl;
pub mod addr;
pub mod ast;
pub mod augments;
pub mod eval;
pub mod hardclass;
pub mod hostclasses;
pub mod json;
pub mod parse;
pub mod policy_server;
pub mod server;
pub mod summary;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unknown_tests;
pub mod validate;

pub use acl::{ConnFacts, Decision, Protocol, Reason, Request};
pub use eval::{LoadOptions, Tri, Value};
pub use parse::{parse_policy, SyntaxError};
pub use server::{load, AclTables, Resource, ServerControl, ServerPolicy, TlsMinVersion};
pub use validate::validate;

/// What the filesystem says about a path promiser (SEMANTICS.md B.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Canon {
    /// `realpath()` succeeded; `is_dir` tells whether the result is a directory.
    Resolved {
        /// The real path (symlinks resolved, `.`/`..` removed).
        path: String,
        /// Whether the real path is a directory.
        is_dir: bool,
    },
    /// ENOENT: the path (or a link target) does not exist.
    Missing,
    /// Any other failure (EACCES, ENOTDIR, ELOOP, ...), with its text.
    Failed(String),
}

/// The evaluator's window on the outside world. Implemented over the real
/// filesystem by `rcf-fs` (`policy_source::FsPolicySource`) and over maps in tests.
///
/// Paths in and out are [`crate::bytestr`] encodings: a path promiser
/// holding bytes that are not UTF-8 names those bytes on disk (decode
/// before touching the filesystem, encode what `realpath` returns).
pub trait PolicySource {
    /// The bytes of a policy file, or a human-readable reason it cannot be read.
    fn read(&self, path: &str) -> Result<Vec<u8>, String>;
    /// `realpath()` plus "is it a directory", as used for path promisers.
    fn canonicalize(&self, path: &str) -> Canon;
    /// Whether anything exists at `path` (for `fileexists()`).
    fn exists(&self, path: &str) -> bool;
    /// Whether `path` itself is a symlink (used to tell a dangling link
    /// from a missing file in log messages).
    fn is_symlink(&self, _path: &str) -> bool {
        false
    }
    /// `lstat()` of `path`, for `filestat()`: `Some(Ok(..))`, `Some(Err(why))`
    /// when it fails (3.21's function fails then too), `None` when this
    /// source cannot answer (the call is then unknown, never guessed).
    fn lstat(&self, _path: &str) -> Option<Result<FileStat, String>> {
        None
    }
    /// `host2ip()`: the first address the resolver gives for `name`
    /// (`Some(None)` when it does not resolve), `None` when this source
    /// cannot resolve names (unknown).
    fn host_to_ip(&self, _name: &str) -> Option<Option<String>> {
        None
    }
    /// 3.21's `IsExecutable` (`stat()` follows links: a regular file
    /// with an execute bit), `None` when this source cannot answer.
    fn is_executable(&self, _path: &str) -> Option<bool> {
        None
    }
    /// Runs a command for `execresult()`/`returnszero()` (stdin from
    /// /dev/null), capturing what `capture` says. `Some(Err(..))` when it
    /// could not be run to its end (the call is then unknown), `None` when
    /// this source does not run commands (unknown).
    fn execute(
        &self,
        _req: &ExecRequest,
        _capture: Capture,
    ) -> Option<Result<ExecOutcome, String>> {
        None
    }
}

/// A command `execresult()` or `returnszero()` runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExecRequest {
    /// `noshell`: the program (an absolute path) and its arguments, as
    /// 3.21's `ArgSplitCommand` splits the command.
    Argv(Vec<String>),
    /// `useshell`: `/bin/sh -c COMMAND`.
    Shell(String),
}

/// Which output of a command is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capture {
    /// stdout and stderr through one pipe (`execresult`'s default).
    Both,
    /// stdout only (stderr discarded).
    Stdout,
    /// Neither (`returnszero`).
    Nothing,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// The captured bytes.
    pub output: Vec<u8>,
}

/// What `lstat()` says about a path (the fields `filestat()` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStat {
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_uid`.
    pub uid: u32,
    /// `st_gid`.
    pub gid: u32,
    /// `st_ino`.
    pub ino: u64,
    /// `st_nlink`.
    pub nlink: u64,
    /// `st_dev`.
    pub dev: u64,
    /// `st_atime` (seconds).
    pub atime: i64,
    /// `st_mtime` (seconds).
    pub mtime: i64,
    /// `st_ctime` (seconds).
    pub ctime: i64,
}

/// A warning or error tied to a place in the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Policy file.
    pub file: String,
    /// 1-based line (0 when not tied to a line; then none is printed).
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub col: u32,
    /// The message.
    pub message: String,
}

impl core::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.line == 0 {
            // not tied to a line (augments, whole-file problems): no ":0"
            write!(f, "{}: {}", self.file, self.message)
        } else if self.col > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// Why a policy load failed: every error found, each with `file:line`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct PolicyErrors {
    /// The errors, in the order found.
    pub errors: Vec<Diagnostic>,
    /// Warnings gathered before the failure.
    pub warnings: Vec<Diagnostic>,
}
