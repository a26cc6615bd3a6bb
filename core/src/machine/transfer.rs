//! What both server machines do the same way when they serve a path: the
//! `GET` transfer (reads, the source-changed checks, the blocks and the
//! refusals it sends), the ownership rule, `denybadclocks` and the `STAT`
//! failure reply. The TLS session and the classic server each keep their
//! own request parsing, log wording and framing, and call these for the
//! steps that are one protocol rule.
//!
//! Each function returns what to send or ask ([`Event`]s, payloads, raw
//! blocks) instead of queueing it, so a machine keeps its own queues.

use super::io::{Event, OpenedFile};
use super::{Level, Now, GET_BLOCK};
use crate::reply;

/// The log line when a file changed while it was being sent.
pub const SOURCE_CHANGED: &str = "Aborting transfer of file due to source changes";

/// A file being sent: how far, and how much the client expects.
///
/// Contract: `target` is what the client was promised (its `STAT`'s size,
/// or the size at open when it made none), `size0` the size at open; the
/// transfer only moves forward, one [`Transfer::accept`] per read answer.
#[derive(Debug)]
pub struct Transfer {
    /// The adapter's handle, closed exactly once when the transfer ends.
    pub handle: u64,
    /// The canonical path, for the change message.
    pub path: Vec<u8>,
    /// Bytes the client expects.
    pub target: u64,
    /// Bytes sent so far.
    pub sent: u64,
    /// Size at open time (`size0` in `CfGetFile`).
    pub size0: u64,
}

/// Why a read answer ends the transfer early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceChanged;

impl Transfer {
    /// A transfer of the opened file `f` at `path` whose client expects `target` bytes.
    pub fn new(f: &OpenedFile, path: Vec<u8>, target: u64) -> Self {
        Transfer {
            handle: f.handle,
            path,
            target,
            sent: 0,
            size0: f.size,
        }
    }

    /// Bytes still owed to the client.
    pub fn remaining(&self) -> u64 {
        self.target.saturating_sub(self.sent)
    }

    /// The next read of at most `chunk` bytes, or `None` once all was sent
    /// (then [`Transfer::close`] it).
    #[must_use]
    pub fn next_read(&self, chunk: usize) -> Option<Event> {
        let left = self.remaining();
        (left > 0).then(|| Event::Read {
            handle: self.handle,
            offset: self.sent,
            len: chunk.min(usize::try_from(left).unwrap_or(usize::MAX)),
        })
    }

    /// Take the answer to [`Transfer::next_read`]: `bytes` read and the
    /// file's size now. An empty read, a size that moved since the open, or
    /// more bytes than owed mean the file changed under us: nothing is
    /// taken and the caller ends the transfer. On success returns the
    /// offset the bytes start at.
    #[must_use = "a changed source must end the transfer"]
    pub fn accept(&mut self, bytes: &[u8], current_size: u64) -> Result<u64, SourceChanged> {
        let len = bytes.len() as u64;
        if bytes.is_empty() || current_size != self.size0 || len > self.remaining() {
            return Err(SourceChanged);
        }
        let at = self.sent;
        self.sent += len;
        Ok(at)
    }

    /// `BAD: File changed while copying: <path>`.
    #[must_use]
    pub fn changed_message(&self) -> Vec<u8> {
        [&b"BAD: File changed while copying: "[..], &self.path].concat()
    }

    /// The change message as one raw block no longer than what the client
    /// still expects (nor than [`GET_BLOCK`]), so it reads it whole and
    /// stays in sync; `None` when nothing is owed.
    #[must_use]
    pub fn change_block(&self) -> Option<Vec<u8>> {
        let remaining = usize::try_from(self.remaining()).unwrap_or(usize::MAX);
        (remaining > 0).then(|| {
            let mut b = self.changed_message();
            b.resize(remaining.min(GET_BLOCK), 0);
            b
        })
    }

    /// Release the file.
    #[must_use]
    pub fn close(&self) -> Event {
        Event::Close {
            handle: self.handle,
        }
    }
}

/// Plain file data as the raw records a plain `GET` sends, [`GET_BLOCK`]
/// bytes each, as `CfGetFile` does.
pub fn raw_blocks(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    bytes.chunks(GET_BLOCK).map(<[u8]>::to_vec)
}

/// `TransferRights`: root (or a peer `maproot` maps to root) reads anything
/// the ACL admitted; others must own the file or find it world-readable.
pub fn may_read(uid: u32, maproot: bool, f: &OpenedFile) -> bool {
    uid == 0 || maproot || f.uid == uid || f.mode & 0o004 != 0
}

/// 3.21's `CfGetFile`/`CfEncryptGetFile` on a directory the ACL admitted:
/// `safe_open` succeeds, the first `read` fails with EISDIR, the loop
/// breaks and *nothing* is sent (no refusal, no data; the client waits).
/// The log line it writes; the caller closes the handle and sends nothing.
#[must_use]
pub fn directory_read_failed(encrypted: bool) -> Event {
    Event::Log {
        level: Level::Error,
        message: format!(
            "Read failed in {}GetFile. (read: Is a directory)",
            if encrypted { "Encrypt" } else { "" }
        ),
    }
}

/// Whether a failed open means the file could not be `stat`ed either (it
/// is missing, or a dangling link: `O_NOFOLLOW` gives ELOOP). 3.21's
/// `TransferRights` runs before the open, on the buffer the failed `stat`
/// left uninitialised, and refuses a peer that is not root (seen on the
/// real server: the framed refusal, then the block); rcf gives that peer
/// the same refusal, deterministically.
#[must_use]
pub fn unstatable(open_error: &str) -> bool {
    matches!(
        open_error,
        "No such file or directory" | "Too many levels of symbolic links" | "Not a directory"
    )
}

/// The two lines 3.21 logs when [`may_read`] refuses `user` the file at `path`.
#[must_use]
pub fn not_owner_logs(user: &str, path: &[u8]) -> [Event; 2] {
    [
        Event::Log {
            level: Level::Info,
            message: format!(
                "Remote user '{user}' is not owner of the file, access denied, consider maproot or making file world-readable"
            ),
        },
        Event::Log {
            level: Level::Info,
            message: format!("REFUSE access to file: {}", String::from_utf8_lossy(path)),
        },
    ]
}

/// The raw block a refused plain `GET` sends in place of data:
/// `BAD: ` padded with zeros (never stack contents, as 3.21 sends) to
/// exactly `len` bytes, so the client reads it as one block.
#[must_use]
pub fn refusal_block(len: usize) -> Vec<u8> {
    let mut b = reply::FAILED.to_vec();
    b.resize(len.max(reply::FAILED.len() + 1), 0);
    b.truncate(len);
    b
}

/// The `MD5` reply: `CFD_FALSE` ("not changed") when our digest of the
/// file equals the client's, `CFD_TRUE` otherwise. A file we could not
/// hash counts as the all-zero digest, as in 3.21 (`CompareLocalHash`
/// compares the zeroed buffer `HashFile` left untouched), so a client that
/// sends zeros hears "not changed" from both servers (issue 18).
#[must_use]
pub fn md5_reply(client: [u8; 16], mine: Option<[u8; 16]>) -> &'static [u8] {
    if mine.unwrap_or([0; 16]) == client {
        reply::CFD_FALSE
    } else {
        reply::CFD_TRUE
    }
}

/// The error line when the file the ACL admitted could not be opened.
#[must_use]
pub fn open_failed(path: &[u8], err: &str) -> Event {
    Event::Log {
        level: Level::Error,
        message: format!(
            "Open error of file '{}'. (open: {err})",
            String::from_utf8_lossy(path)
        ),
    }
}

/// `denybadclocks`: when the policy refuses skewed clocks and the client's
/// time is too far from ours, the log line and the reply to send instead
/// of the `STAT`.
#[must_use]
pub fn bad_clock(deny_bad_clocks: bool, now: Now, client_time: i64) -> Option<(Event, Vec<u8>)> {
    if !deny_bad_clocks || !reply::clock_skew_too_large(now.unix_s, client_time) {
        return None;
    }
    let msg = reply::clocks_unsynchronized(now.unix_s, client_time);
    let log = Event::Log {
        level: Level::Info,
        message: format!("denybadclocks {}", String::from_utf8_lossy(&msg)),
    };
    Some((log, msg))
}

/// A `STAT` whose `lstat` failed with `err`: the verbose log line and the
/// `BAD: unable to stat file` reply.
#[must_use]
pub fn stat_failed(path: &[u8], err: &str) -> (Event, Vec<u8>) {
    let log = Event::Log {
        level: Level::Verbose,
        message: format!(
            "BAD: unable to stat file {}. (lstat: {err})",
            String::from_utf8_lossy(path)
        ),
    };
    // The reply carries the path's own bytes, as 3.21's snprintf does.
    (log, [&b"BAD: unable to stat file "[..], path].concat())
}

/// An `OPENDIR` whose directory could not be opened (`err`): the info log
/// line and the `BAD: cfengine, couldn't open dir` reply, which carries the
/// path's own bytes (not UTF-8 replaced) as 3.21's does.
#[must_use]
pub fn opendir_failed(path: &[u8], err: &str) -> (Event, Vec<u8>) {
    let log = Event::Log {
        level: Level::Info,
        message: format!(
            "Couldn't open directory '{}' (DirOpen:{err})",
            String::from_utf8_lossy(path)
        ),
    };
    (
        log,
        [&b"BAD: cfengine, couldn't open dir "[..], path].concat(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> OpenedFile {
        OpenedFile {
            handle: 7,
            size,
            uid: 1000,
            mode: 0o640,
            is_dir: false,
        }
    }

    /// 3.21's `CompareLocalHash` compares the client's digest with the
    /// zeroed buffer `HashFile` leaves when it cannot read the file (a
    /// dangling link, a file gone): zeros are "not changed", anything else
    /// "changed" (issue 18: rcf answered `CFD_TRUE` to zeros).
    #[test]
    fn md5_of_an_unhashable_file_is_the_zero_digest() {
        assert_eq!(md5_reply([0; 16], None), reply::CFD_FALSE);
        assert_eq!(md5_reply([1; 16], None), reply::CFD_TRUE);
        assert_eq!(md5_reply([7; 16], Some([7; 16])), reply::CFD_FALSE);
        assert_eq!(md5_reply([0; 16], Some([7; 16])), reply::CFD_TRUE);
    }

    #[test]
    fn reads_in_chunks_until_the_target_then_stops() {
        let mut t = Transfer::new(&file(5000), b"/f".to_vec(), 5000);
        assert_eq!(
            t.next_read(4096),
            Some(Event::Read {
                handle: 7,
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(t.accept(&[1; 4096], 5000), Ok(0));
        assert_eq!(
            t.next_read(4096),
            Some(Event::Read {
                handle: 7,
                offset: 4096,
                len: 904
            })
        );
        assert_eq!(t.accept(&[1; 904], 5000), Ok(4096));
        assert_eq!(t.next_read(4096), None);
        assert_eq!(t.close(), Event::Close { handle: 7 });
    }

    #[test]
    fn a_changed_source_is_refused_and_nothing_taken() {
        let mut t = Transfer::new(&file(10), b"/f".to_vec(), 10);
        assert_eq!(t.accept(&[], 10), Err(SourceChanged));
        assert_eq!(t.accept(&[1; 3], 11), Err(SourceChanged));
        assert_eq!(t.accept(&[1; 11], 10), Err(SourceChanged));
        assert_eq!(t.sent, 0);
        let b = t.change_block().unwrap();
        assert_eq!(b.len(), 10, "never longer than what the client expects");
        assert!(b.starts_with(b"BAD: File changed while copying: /f"[..10].as_ref()));
        let mut big = Transfer::new(&file(100_000), b"/f".to_vec(), 100_000);
        assert_eq!(big.change_block().unwrap().len(), GET_BLOCK);
        assert_eq!(big.accept(&[0; 100_000], 100_000), Ok(0));
        assert_eq!(big.change_block(), None, "nothing owed, nothing sent");
    }

    #[test]
    fn ownership_rule() {
        let f = file(1);
        assert!(may_read(0, false, &f));
        assert!(may_read(5, true, &f));
        assert!(may_read(1000, false, &f));
        assert!(!may_read(5, false, &f));
        assert!(may_read(5, false, &OpenedFile { mode: 0o644, ..f }));
    }

    #[test]
    fn refusal_block_is_exactly_the_asked_length() {
        assert_eq!(refusal_block(2048).len(), 2048);
        assert!(refusal_block(2048).starts_with(reply::FAILED));
        assert_eq!(refusal_block(3), reply::FAILED[..3].to_vec());
        assert_eq!(refusal_block(1).len(), 1);
    }

    #[test]
    fn bad_clock_only_when_denied_and_skewed() {
        let now = Now {
            mono_ms: 0,
            unix_s: 1_000_000,
        };
        assert_eq!(bad_clock(false, now, 0), None);
        assert_eq!(bad_clock(true, now, 1_000_000), None);
        let (log, msg) = bad_clock(true, now, 0).unwrap();
        assert!(matches!(
            log,
            Event::Log {
                level: Level::Info,
                ..
            }
        ));
        assert!(!msg.is_empty());
    }
}
