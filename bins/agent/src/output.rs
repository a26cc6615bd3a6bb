//! Where rcf-agent's words go. Like CFEngine, log lines go to stdout as
//! `<level>: <text>` (cf-net prints its results there too); with `--json`
//! stdout carries only the final JSON object and log lines go to stderr.
//! A progress bar is drawn on stderr only when it is a terminal and
//! `--json` is off.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rcf_core::client::Level;

/// Shared, cloneable output sink.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Inner>,
}

struct Inner {
    max: Level,
    json: bool,
    tty: bool,
    progress: Mutex<Option<Instant>>,
}

impl Output {
    /// Print levels up to `max`; `json` moves logs to stderr.
    pub fn new(max: Level, json: bool) -> Self {
        let tty = !json && std::io::stderr().is_terminal();
        Output {
            inner: Arc::new(Inner {
                max,
                json,
                tty,
                progress: Mutex::new(None),
            }),
        }
    }

    /// Whether `--json` is on.
    pub fn json(&self) -> bool {
        self.inner.json
    }

    /// A log line, formatted as CFEngine prints it (`   error: …`).
    pub fn log(&self, level: Level, msg: &str) {
        if level > self.inner.max {
            return;
        }
        self.clear_progress();
        let line = format!("{:>8}: {msg}\n", level.as_str());
        if self.inner.json {
            let _ = std::io::stderr().write_all(line.as_bytes());
        } else {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(line.as_bytes());
            let _ = o.flush();
        }
    }

    /// A result line on stdout (cf-net's output); suppressed under `--json`.
    pub fn say(&self, line: &str) {
        if self.inner.json {
            return;
        }
        self.clear_progress();
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }

    /// The final JSON document (only under `--json`).
    pub fn emit_json(&self, doc: &str) {
        if self.inner.json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{doc}");
            let _ = o.flush();
        }
    }

    /// Progress of one transfer, redrawn at most every 100 ms, only on a terminal.
    pub fn progress(&self, name: &str, done: u64, total: u64) {
        if !self.inner.tty || total < 1024 * 1024 {
            return;
        }
        let mut last = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(t) = *last {
            if t.elapsed().as_millis() < 100 && done < total {
                return;
            }
        }
        *last = Some(Instant::now());
        let pct = done * 100 / total.max(1);
        let width = 30u64;
        let filled = (pct * width / 100) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            "-".repeat(width as usize - filled)
        );
        let _ = write!(
            std::io::stderr(),
            "\r[{bar}] {pct:>3}% {done}/{total} {name}\x1b[K"
        );
        if done >= total {
            let _ = writeln!(std::io::stderr());
            *last = None;
        }
    }

    fn clear_progress(&self) {
        if !self.inner.tty {
            return;
        }
        let mut last = self
            .inner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.take().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_escapes() {
        assert_eq!(
            super::json_str("a\"b\\c\n\u{1}"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
    }
}
