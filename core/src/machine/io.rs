//! What a server machine (TLS [`crate::server::Session`] or
//! [`crate::classic::ClassicServer`]) asks of its environment, and the
//! answers it takes.
//!
//! The session never touches the filesystem, the key store or DNS itself.
//! It emits one question at a time as an [`Event`] and waits for the matching
//! [`Answer`]; the adapter answers from the real world (`rcf-fs`) or from a
//! test double. Questions are strictly one at a time because the protocol is
//! lock-step: one request is served completely before the next is read.

pub use super::{Level, Now};

/// Where the peer's key stands in `ppkeys/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// `<user>-<id>.pub` (or the old `<user>-<ip>.pub`) holds this very key.
    Trusted,
    /// No stored key for this user and id.
    Missing,
    /// A stored key exists but differs from the presented one.
    Different,
}

/// The filesystem's view of a canonicalised path (`realpath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// The real path: symlinks resolved, no `.`/`..`, no doubled `/`. A
    /// dangling symlink is kept as the link's own path, as 3.21 does.
    pub path: Vec<u8>,
    /// Whether it is a directory.
    pub is_dir: bool,
}

/// `lstat` of a canonical path, merged with `stat` of a link target as
/// `StatFile` merges them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    /// The reply fields (type, modes, owners, size, times, inode…).
    pub reply: crate::reply::StatReply,
}

/// An open file ready to be served: a regular file, or a directory (3.21's
/// `safe_open` opens one and its first `read` fails with EISDIR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFile {
    /// The adapter's handle for later reads and the close.
    pub handle: u64,
    /// Size at open time (`size0` in `CfGetFile`).
    pub size: u64,
    /// Owner uid, for the ownership rule.
    pub uid: u32,
    /// Permission bits, for the world-readable test.
    pub mode: u32,
    /// A directory: nothing is read or sent (see [`crate::machine::transfer::directory_read_failed`]).
    pub is_dir: bool,
}

/// A question for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Write a log line (the adapter adds the IP prefix and level).
    Log {
        /// Level.
        level: Level,
        /// Text, exactly as CFEngine users grep for it.
        message: String,
    },
    /// The access rules refused a request: emitted where the machine
    /// decides it (an ACL denial; a missing file refused alike on the wire
    /// is not one), next to cf-serverd's log line. No answer; adapters
    /// count these instead of matching log text.
    Denied {
        /// The request's metric label ([`crate::request::metric_label`]:
        /// `STAT`, `GET`, `OPENDIR`, `MD5`, `VAR`, …).
        request: &'static str,
        /// What was refused, as the log line names it (the path, variable
        /// or query).
        what: String,
        /// The deciding rule and why it refused, where the policy gives one.
        reason: String,
    },
    /// Is this key trusted for this user? Answer: [`Answer::Key`].
    LookupKey {
        /// IDENTITY username (may be empty).
        user: String,
        /// `MD5=…` id of the presented key.
        key_id: String,
        /// The presented key, to compare with the stored file's contents.
        key: rsa::RsaPublicKey,
        /// Peer IP, for the old `<user>-<ip>.pub` fallback.
        ip: String,
    },
    /// Store the presented key as trusted (trust on first use). No answer.
    SaveKey {
        /// IDENTITY username.
        user: String,
        /// Its id.
        key_id: String,
        /// The key to store as `<user>-<id>.pub`.
        key: rsa::RsaPublicKey,
        /// Peer IP, for the log line naming who was trusted.
        ip: String,
    },
    /// Resolve a username to a uid on this host. Answer: [`Answer::User`].
    LookupUser {
        /// The name.
        user: String,
    },
    /// Reverse-resolve the peer (only when host-name rules exist). Answer: [`Answer::Hostname`].
    ReverseLookup {
        /// Peer IP.
        ip: String,
    },
    /// `realpath`. Answer: [`Answer::Canonical`].
    Canonicalize {
        /// Absolute request path after shortcut expansion.
        path: Vec<u8>,
    },
    /// `lstat` of a canonical path. A symlink there resolves only if it was
    /// swapped in after the ACL check, so it is refused. Answer: [`Answer::Stat`].
    Stat {
        /// Canonical path.
        path: Vec<u8>,
    },
    /// Classic `STAT` of the path as requested, reported as a link when it
    /// is one, with its target's type, mode, owners, size and times merged
    /// in as `StatFile` does, but only while it resolves to `resolved`.
    /// Answer: [`Answer::Stat`].
    StatLink {
        /// The requested (absolute, shortcut-expanded) path.
        path: Vec<u8>,
        /// Its real path, as the ACL approved it.
        resolved: Vec<u8>,
    },
    /// Open a canonical path for reading, refusing to follow a symlink that
    /// appeared since canonicalisation. Answer: [`Answer::Opened`].
    Open {
        /// Canonical path.
        path: Vec<u8>,
    },
    /// Read from an open file. Answer: [`Answer::Data`].
    Read {
        /// From [`OpenedFile::handle`].
        handle: u64,
        /// Byte offset.
        offset: u64,
        /// Most bytes wanted.
        len: usize,
    },
    /// Release an open file. No answer.
    Close {
        /// The handle.
        handle: u64,
    },
    /// List a directory, in readdir order, `.` and `..` included. Answer: [`Answer::Listing`].
    ListDir {
        /// Canonical directory path.
        path: Vec<u8>,
    },
    /// MD5 of a file's content. Answer: [`Answer::Digest`].
    Digest {
        /// Canonical path.
        path: Vec<u8>,
    },
    /// Run a program without a shell, stdout and stderr merged, bounded by
    /// the adapter's timeout and concurrency limit. Answer: [`Answer::ExecStarted`].
    ExecStart {
        /// Program and arguments, exactly (see `machine::exec`).
        argv: Vec<String>,
    },
    /// The next output line of a running program. Answer: [`Answer::ExecOutput`].
    ExecRead {
        /// From [`Answer::ExecStarted`].
        handle: u64,
    },
    /// Kill and reap a program whose connection ended. No answer.
    ExecKill {
        /// The handle.
        handle: u64,
    },
}

/// One step of a running program's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecChunk {
    /// A line, without its newline.
    Line(Vec<u8>),
    /// The program ended: its exit code, or `None` when killed by a signal
    /// (including the adapter's timeout).
    Exit(Option<i32>),
}

/// The adapter's answer to the last question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For [`Event::LookupKey`].
    Key(KeyStatus),
    /// For [`Event::LookupUser`]: the uid, or `None` for an unknown user.
    User(Option<u32>),
    /// For [`Event::ReverseLookup`]: the name, or `None` when lookup failed.
    Hostname(Option<String>),
    /// For [`Event::Canonicalize`]: the real path, or the error text (`No such file or directory`).
    Canonical(Result<Canonical, String>),
    /// For [`Event::Stat`].
    Stat(Result<FileStat, String>),
    /// For [`Event::Open`].
    Opened(Result<OpenedFile, String>),
    /// For [`Event::Read`]: the bytes (empty at EOF) and the file's size now.
    Data {
        /// Bytes read.
        bytes: Vec<u8>,
        /// `fstat` size after the read, to detect a file changing under us.
        current_size: u64,
    },
    /// For [`Event::Read`] when reading failed.
    ReadFailed(String),
    /// For [`Event::ListDir`].
    Listing(Result<Vec<Vec<u8>>, String>),
    /// For [`Event::Digest`]: `None` when the file could not be read.
    Digest(Option<[u8; 16]>),
    /// For [`Event::ExecStart`]: a handle, or why the program could not start.
    ExecStarted(Result<u64, String>),
    /// For [`Event::ExecRead`].
    ExecOutput(ExecChunk),
}
