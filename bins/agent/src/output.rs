//! Where rcf-agent's words go. Like CFEngine, log lines go to stdout as
//! `<level>: <text>` (cf-net prints its results there too); with `--json`
//! stdout carries only the final JSON object and log lines go to stderr.
//! A progress line is drawn on stderr (with `indicatif`) only when both
//! stdout and stderr are terminals and `--json` is off: files done, bytes
//! copied and the rate in human units, and the file in flight with its
//! share and ETA. Log lines clear it and it is redrawn after them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rcf_core::client::Level;

/// Shared, cloneable output sink.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Inner>,
}

struct Inner {
    max: Level,
    json: bool,
    /// The progress display; `None` when it stays silent.
    progress: Option<Mutex<Progress>>,
}

/// What the progress line shows, and the bar that draws it.
struct Progress {
    bar: ProgressBar,
    started: Instant,
    files: u64,
    bytes: u64,
    /// Transfers in flight: name -> bytes done so far.
    in_flight: HashMap<String, u64>,
    /// When the line was last redrawn (at most every [`REDRAW`]).
    drawn: Option<Instant>,
}

/// The progress line is redrawn at most this often: a GET delivers a few
/// KiB at a time, and drawing each would cost more than the transfer.
const REDRAW: Duration = Duration::from_millis(100);

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(p) = &self.progress {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .bar
                .finish_and_clear();
        }
    }
}

impl Output {
    /// Print levels up to `max`; `json` moves logs to stderr.
    pub fn new(max: Level, json: bool) -> Self {
        let draw = shows_progress(
            json,
            std::io::stdout().is_terminal(),
            std::io::stderr().is_terminal(),
        );
        let progress = draw.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            Mutex::new(Progress {
                bar,
                started: Instant::now(),
                files: 0,
                bytes: 0,
                in_flight: HashMap::new(),
                drawn: None,
            })
        });
        Output {
            inner: Arc::new(Inner {
                max,
                json,
                progress,
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
        let line = format!("{:>8}: {msg}\n", level.as_str());
        self.above_progress(|| {
            if self.inner.json {
                let _ = std::io::stderr().write_all(line.as_bytes());
            } else {
                let mut o = std::io::stdout().lock();
                let _ = o.write_all(line.as_bytes());
                let _ = o.flush();
            }
        });
    }

    /// Run `f` (which prints) with the progress line out of the way.
    fn above_progress(&self, f: impl FnOnce()) {
        match &self.inner.progress {
            Some(p) => p.lock().unwrap_or_else(|e| e.into_inner()).bar.suspend(f),
            None => f(),
        }
    }

    /// A result line on stdout (cf-net's output); suppressed under `--json`.
    pub fn say(&self, line: &str) {
        if self.inner.json {
            return;
        }
        self.above_progress(|| {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        });
    }

    /// The final JSON document (only under `--json`).
    pub fn emit_json(&self, doc: &str) {
        if self.inner.json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{doc}");
            let _ = o.flush();
        }
    }

    /// Progress of the transfer of `name`: `done` of `total` bytes (a file
    /// counts as done when `done >= total`, so an empty one is reported
    /// once with 0 of 0). Drawn only on a terminal (see the module doc).
    pub fn progress(&self, name: &str, done: u64, total: u64) {
        let Some(p) = &self.inner.progress else {
            return;
        };
        let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
        let before = p.in_flight.get(name).copied().unwrap_or(0);
        p.bytes += done.saturating_sub(before);
        let shown = name.rsplit('/').find(|s| !s.is_empty()).unwrap_or(name);
        let current = if done >= total {
            p.in_flight.remove(name);
            p.files += 1;
            None
        } else {
            p.in_flight.insert(name.to_string(), done);
            Some((shown, done, total))
        };
        if p.drawn.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        p.drawn = Some(Instant::now());
        let line = status_line(p.files, p.bytes, p.started.elapsed(), current);
        p.bar.set_message(line);
        p.bar.tick();
    }
}

/// Whether the progress line is drawn: never with `--json`, and only
/// when both stdout and stderr are terminals (a pipe or a file gets the
/// log lines alone).
fn shows_progress(json: bool, stdout_tty: bool, stderr_tty: bool) -> bool {
    !json && stdout_tty && stderr_tty
}

/// The progress line: `12 files, 3.50 MiB at 1.17 MiB/s` and, for a
/// transfer in flight, `· big.bin 40% of 8.00 MiB, ETA 4 seconds` (the
/// ETA from the run's average rate; none before any byte has moved).
pub fn status_line(
    files: u64,
    bytes: u64,
    elapsed: Duration,
    current: Option<(&str, u64, u64)>,
) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    };
    let mut s = format!(
        "{files} file{}, {} at {}/s",
        if files == 1 { "" } else { "s" },
        HumanBytes(bytes),
        HumanBytes(rate)
    );
    if let Some((name, done, total)) = current {
        let pct = done.saturating_mul(100) / total.max(1);
        s.push_str(&format!(" · {name} {pct}% of {}", HumanBytes(total)));
        if let Some(left) = total.saturating_sub(done).checked_div(rate) {
            s.push_str(&format!(
                ", ETA {}",
                HumanDuration(Duration::from_secs(left))
            ));
        }
    }
    s
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
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(0, 0, Duration::ZERO, None),
            "0 files, 0 B at 0 B/s"
        );
        assert_eq!(
            status_line(1, 1024, Duration::from_secs(1), None),
            "1 file, 1.00 KiB at 1.00 KiB/s"
        );
        // 3.5 MiB in 3 s: 1.17 MiB/s; 4.8 MiB left of the file: 4 s
        assert_eq!(
            status_line(
                12,
                3_670_016,
                Duration::from_secs(3),
                Some(("big.bin", 3_355_444, 8_388_608))
            ),
            "12 files, 3.50 MiB at 1.17 MiB/s · big.bin 40% of 8.00 MiB, ETA 4 seconds"
        );
        // no byte yet: no rate, no ETA
        assert_eq!(
            status_line(0, 0, Duration::from_millis(5), Some(("a", 0, 10))),
            "0 files, 0 B at 0 B/s · a 0% of 10 B"
        );
    }

    #[test]
    fn silent_unless_both_are_terminals() {
        assert!(shows_progress(false, true, true));
        assert!(!shows_progress(true, true, true), "--json");
        assert!(!shows_progress(false, false, true), "stdout piped");
        assert!(!shows_progress(false, true, false), "stderr piped");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(
            super::json_str("a\"b\\c\n\u{1}"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
    }
}
