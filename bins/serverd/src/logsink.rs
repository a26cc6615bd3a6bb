//! Where rcf-serverd's log lines go, in cf-serverd's shapes: `-l` prefixes
//! `2026-12-07T04:17:27+0000 ` (local time, `%Y-%m-%dT%H:%M:%S%z`, as
//! 3.21's logging does), and a daemonised server logs to syslog with the
//! `serverfacility` of `body server control`.
//!
//! The logger hands each sink one whole line per write (`  level: text\n`).

use std::ffi::CString;
use std::io::{self, Write};

/// Local time as cf-serverd prints it with `-l`.
pub fn cf_timestamp(now: i64) -> String {
    let t: libc::time_t = now as libc::time_t;
    // SAFETY: tm is plain data; localtime_r and strftime write only into
    // the buffers given, strftime at most buf.len() bytes.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return now.to_string();
        }
        let mut buf = [0u8; 64];
        let fmt = c"%Y-%m-%dT%H:%M:%S%z";
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            fmt.as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// Prefixes every line with [`cf_timestamp`].
pub struct Timestamped<W: Write>(pub W);

impl<W: Write> Write for Timestamped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut line = format!("{} ", cf_timestamp(now)).into_bytes();
        line.extend_from_slice(buf);
        self.0.write_all(&line)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The syslog facility for a `serverfacility` value (3.21's
/// `ParseFacility`); LOG_USER when unknown.
pub fn facility(name: &str) -> libc::c_int {
    match name {
        "LOG_DAEMON" => libc::LOG_DAEMON,
        "LOG_LOCAL0" => libc::LOG_LOCAL0,
        "LOG_LOCAL1" => libc::LOG_LOCAL1,
        "LOG_LOCAL2" => libc::LOG_LOCAL2,
        "LOG_LOCAL3" => libc::LOG_LOCAL3,
        "LOG_LOCAL4" => libc::LOG_LOCAL4,
        "LOG_LOCAL5" => libc::LOG_LOCAL5,
        "LOG_LOCAL6" => libc::LOG_LOCAL6,
        "LOG_LOCAL7" => libc::LOG_LOCAL7,
        _ => libc::LOG_USER,
    }
}

/// Sends each line to syslog, its priority taken from the level word.
pub struct Syslog;

impl Syslog {
    /// `openlog("rcf-serverd", LOG_PID|LOG_NOWAIT|LOG_ODELAY, facility)`.
    pub fn open(facility: libc::c_int) -> Self {
        // openlog keeps the pointer: the ident lives for the process.
        static IDENT: &std::ffi::CStr = c"rcf-serverd";
        // SAFETY: a static NUL-terminated ident; plain flags.
        unsafe {
            libc::openlog(
                IDENT.as_ptr(),
                libc::LOG_PID | libc::LOG_NOWAIT | libc::LOG_ODELAY,
                facility,
            )
        };
        Syslog
    }
}

/// (priority, message) for one logger line.
pub fn split_line(line: &str) -> (libc::c_int, String) {
    let t = line.trim_end_matches('\n').trim_start();
    let (word, rest) = t.split_once(": ").unwrap_or(("notice", t));
    let prio = match word {
        "error" => libc::LOG_ERR,
        "warning" => libc::LOG_WARNING,
        "notice" => libc::LOG_NOTICE,
        "info" => libc::LOG_INFO,
        "verbose" | "debug" => libc::LOG_DEBUG,
        _ => return (libc::LOG_NOTICE, t.to_string()),
    };
    (prio, rest.to_string())
}

impl Write for Syslog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (prio, msg) = split_line(line);
            let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
            // SAFETY: "%s" with one valid C string argument.
            unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let ts = cf_timestamp(1_796_615_862);
        assert_eq!(ts.len(), 24, "{ts}");
        assert_eq!(&ts[4..5], "-");
        assert_eq!(&ts[10..11], "T");
        assert!(ts[19..].starts_with('+') || ts[19..].starts_with('-'));
        assert_eq!(
            split_line("   error: it broke\n"),
            (libc::LOG_ERR, "it broke".to_string())
        );
        assert_eq!(
            split_line(" verbose: 127.0.0.1>       x"),
            (libc::LOG_DEBUG, "127.0.0.1>       x".to_string())
        );
        assert_eq!(facility("LOG_LOCAL3"), libc::LOG_LOCAL3);
        let mut out = Vec::new();
        Timestamped(&mut out).write_all(b"  notice: hi\n").unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.ends_with("   notice: hi\n") || s.ends_with(" notice: hi\n"),
            "{s}"
        );
    }
}
