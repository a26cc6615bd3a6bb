//! What every protocol machine shares, whatever its role (server or
//! client) and protocol (TLS or classic): the clock reading it is handed,
//! the log levels it speaks, the server's questions and answers ([`io`]),
//! the server's configuration, and the error split.
//!
//! This module is neutral ground: `server/`, `classic/` and `client/` all
//! import it and none of them imports another role's module, so no import
//! runs back up (`.ci/arch-guard.sh` checks it).
//!
//! # Time and randomness
//! A machine never reads a clock or a global random source. Every
//! `handle_*` that may start or check a deadline takes a [`Now`]; a machine
//! that needs randomness (the classic key exchange) takes
//! `&mut (impl RngCore + CryptoRng)` in the call that uses it. Deadlines are
//! reported by `poll_timeout()` (monotonic milliseconds, `None` when the
//! machine waits on its caller, not on the peer) and fired by
//! `handle_timeout(now)`.
//!
//! # The error split (after h11)
//! Two kinds of failure, reported two ways, and never mixed:
//! * **The peer did something wrong** (bad bytes, a refused key, a
//!   timeout): the machine handles it in-protocol. It says why (an
//!   `Event::Log` for the servers, `client::Event::Failed` for the TLS
//!   client, `classic::ClientEvent::Failed` for the classic one), queues whatever refusal the protocol sends, and enters its
//!   closing state, which `is_closing()` reports. A peer error is never an
//!   `Err` from these three.
//! * **The caller did something wrong** (an answer that fits no question,
//!   a request while another is outstanding): the `handle_*` or request
//!   method returns `Err` ([`CallerError`] for the servers) and the state
//!   is unchanged. It is a bug in the adapter, not something a peer can
//!   provoke.

pub mod exec;
pub mod io;
pub mod transfer;

/// Log levels, named as cf-serverd names them in its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `error:`
    Error,
    /// `warning:`
    Warning,
    /// `notice:`
    Notice,
    /// `info:`
    Info,
    /// `verbose:`
    Verbose,
    /// `debug:`
    Debug,
}

impl Level {
    /// The prefix cf-serverd prints (`verbose`, `info`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Verbose => "verbose",
            Level::Debug => "debug",
        }
    }
}

/// The current time, as two clocks: deadlines must not jump with the wall
/// clock, while the `STAT` clock check needs wall-clock seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds from any fixed origin.
    pub mono_ms: u64,
    /// Wall-clock seconds since the Unix epoch.
    pub unix_s: i64,
}

/// GET data goes out in blocks of this size, whatever the client's bufsize,
/// as `CfGetFile` does; cf-agent reads one record at a time.
pub const GET_BLOCK: usize = 2048;
/// How much file data one [`Event::Read`] asks for.
pub const READ_CHUNK: usize = 32 * GET_BLOCK;
/// What a server machine (TLS or classic) enforces itself: deadlines,
/// through `poll_timeout`, and how much it bothers to log.
#[derive(Debug, Clone)]
pub struct Config {
    /// From accept to WELCOME (TLS handshake included by the wrapper).
    pub handshake_timeout_ms: u64,
    /// Between requests once identified (3.21: 600 s receive timeout).
    pub idle_timeout_ms: u64,
    /// The most detailed level the caller will print. Per-request lines
    /// above it (`Received: STAT …`, `verbose`) are not even formatted:
    /// building them cost a measurable share of the server's CPU under
    /// load. Lines at `info` and above are always emitted (cf-serverd's
    /// refusal lines); denials are counted from [`io::Event::Denied`].
    pub log_level: Level,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_timeout_ms: 30_000,
            idle_timeout_ms: 600_000,
            log_level: Level::Debug,
        }
    }
}

/// What the caller did wrong: the one error a machine's `handle_*` method
/// returns (see the module's error split). The peer's mistakes never come
/// back this way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// An answer arrived that does not fit the question outstanding.
    #[error("answer {got} does not match the outstanding question ({want})")]
    UnexpectedAnswer {
        /// What the session was waiting for.
        want: &'static str,
        /// What it got.
        got: String,
    },
}

/// Trust on first use, decided across connections: the one answer a server
/// machine's policy gives that depends on what other connections did (how
/// many new keys were trusted, and since when). The adapter implements it
/// over a shared [`crate::server::tofu::TofuGate`], reading its clock and
/// taking its lock there; both server machines' policies consult it through
/// a wrapper ([`crate::server::tofu::gated_view`],
/// [`crate::classic::gated_policy`]), so the budget holds whichever protocol
/// a new key arrives by.
pub trait NewKeyGate: Send + Sync {
    /// Whether a new or changed key from `ip` may be trusted, given whether
    /// the policy's `trustkeysfrom` admits `ip`. Never true when
    /// `policy_trusts` is false.
    fn admit_new_key(&self, ip: &str, policy_trusts: bool) -> bool;
}

impl CallerError {
    /// `answer` came while the machine waited for a `want` answer.
    pub fn unexpected(want: &'static str, answer: &io::Answer) -> Self {
        CallerError::UnexpectedAnswer {
            want,
            got: format!("{answer:?}").chars().take(80).collect(),
        }
    }
}

impl Config {
    /// The deadline for the peer's next request, once a request is done.
    pub fn idle_deadline(&self, now: Now) -> Option<u64> {
        Some(now.mono_ms + self.idle_timeout_ms)
    }
}

/// What a server machine's `poll_timeout` reports: its deadline, but none
/// while closing or while it waits on its caller (a slow disk is not the
/// peer's fault).
pub fn peer_deadline(closing: bool, waiting_on_caller: bool, deadline: Option<u64>) -> Option<u64> {
    if closing || waiting_on_caller {
        return None;
    }
    deadline
}

/// `handle_timeout`'s check: when `due` (from `poll_timeout`) has passed at
/// `now`, the line to log before closing, naming what the peer was slow at.
#[must_use]
pub fn timed_out(due: Option<u64>, now: Now, during: &str) -> Option<io::Event> {
    let d = due?;
    (now.mono_ms >= d).then(|| io::Event::Log {
        level: Level::Info,
        message: format!("Connection timed out during {during}, closing"),
    })
}

/// An answer that arrives after the machine decided to close: what it
/// holds is released (an opened file is closed), nothing else happens.
#[must_use]
pub fn late_answer(answer: io::Answer) -> Option<io::Event> {
    match answer {
        io::Answer::Opened(Ok(f)) => Some(io::Event::Close { handle: f.handle }),
        _ => None,
    }
}

/// cf-serverd's per-request `verbose` line (`      Received:     GET /path`),
/// the command word right-aligned to `width` as each protocol's 3.21 code
/// prints it (7 in the TLS loop, 8 in the classic one).
#[must_use]
pub fn received(cmd: &str, width: usize, path: &[u8]) -> io::Event {
    io::Event::Log {
        level: Level::Verbose,
        message: format!(
            "{:>14} {cmd:>width$} {}",
            "Received:",
            String::from_utf8_lossy(path)
        ),
    }
}

/// The line a server machine logs before it closes on bytes it cannot
/// frame (`e` from the transaction decoder).
#[must_use]
pub fn bad_input(e: &crate::frame::FrameError) -> io::Event {
    io::Event::Log {
        level: Level::Info,
        message: format!("Closing connection: {e}"),
    }
}
