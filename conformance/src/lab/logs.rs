//! Parse and normalize CFEngine log lines, to compare the real server's
//! log with ours (or the real agent's output across servers).

use regex::Regex;
use std::sync::OnceLock;

/// One log line, split the way CFEngine writes them:
/// `[<timestamp>]  <level>: [<peer>>       ]<message>` (server lines carry
/// the peer prefix, `-l` adds the timestamp), `R: <report>` for reports,
/// and `<peer>> <text>` for the remote output cf-runagent prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `2026-11-23T09:46:36+0000` when the tool ran with `-l`.
    pub timestamp: Option<String>,
    /// `error`, `warning`, `notice`, `info`, `verbose`, `debug`, `R` (report),
    /// or empty (plain output such as `Connected & authenticated ...`).
    pub level: String,
    /// `127.0.0.1` / `::1` for lines about one connection.
    pub peer: Option<String>,
    /// The rest, leading blanks removed (inner spacing kept, e.g.
    /// `Received:    STAT /path`).
    pub message: String,
}

fn line_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?:(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4})\s+)?\s*(?:(?P<level>critical|error|warning|notice|info|verbose|debug|R):\s?)?(?P<rest>.*)$",
        )
        .expect("log line regex")
    })
}

fn peer_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"^(?P<peer>\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]*:[0-9A-Fa-f:.]*)>\s*(?P<msg>.*)$",
        )
        .expect("peer regex")
    })
}

impl LogLine {
    /// Split one line (never fails: unknown shapes land in `message`).
    pub fn parse(line: &str) -> LogLine {
        let c = line_re().captures(line).expect("regex matches everything");
        let rest = c.name("rest").map_or("", |m| m.as_str());
        let (peer, message) = match peer_re().captures(rest) {
            Some(p) => (Some(p["peer"].to_string()), p["msg"].to_string()),
            None => (None, rest.trim_start().to_string()),
        };
        LogLine {
            timestamp: c.name("ts").map(|m| m.as_str().to_string()),
            level: c
                .name("level")
                .map_or(String::new(), |m| m.as_str().to_string()),
            peer,
            message,
        }
    }

    /// `level: message` with [`normalize`] applied: the part worth
    /// comparing across runs and implementations.
    pub fn key(&self) -> String {
        format!("{}: {}", self.level, normalize(&self.message))
    }
}

/// Parse every line of `text`.
pub fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines().map(LogLine::parse).collect()
}

/// Replace run-specific parts of a message: key digests (`MD5=<hex>` →
/// `MD5=<key>`, same for `SHA=`), lab temp dirs (`/tmp/rcf-lab-t3-srv-AbC123`
/// → `<lab:t3-srv>`), `SYNCH <digits>` → `SYNCH <time>`.
pub fn normalize(msg: &str) -> String {
    static RES: OnceLock<[(Regex, &'static str); 4]> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            (Regex::new(r"MD5=[0-9a-f]{32}").unwrap(), "MD5=<key>"),
            (Regex::new(r"SHA=[0-9a-f]{64}").unwrap(), "SHA=<key>"),
            (
                Regex::new(r"/tmp/rcf-lab-(?P<n>[A-Za-z0-9_.-]+?)-[A-Za-z0-9]{6}").unwrap(),
                "<lab:$n>",
            ),
            (Regex::new(r"SYNCH \d+").unwrap(), "SYNCH <time>"),
        ]
    });
    let mut s = msg.to_string();
    for (re, rep) in res {
        s = re.replace_all(&s, *rep).into_owned();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_agent_and_runagent_lines() {
        let l = LogLine::parse(
            "2026-11-23T09:46:36+0000  verbose: 127.0.0.1>            Received:    STAT /x",
        );
        assert_eq!(l.timestamp.as_deref(), Some("2026-11-23T09:46:36+0000"));
        assert_eq!(l.level, "verbose");
        assert_eq!(l.peer.as_deref(), Some("127.0.0.1"));
        assert_eq!(l.message, "Received:    STAT /x");
        let l =
            LogLine::parse("2026-11-23T09:46:36+0000     info: ::1>       Accepting connection");
        assert_eq!(
            (l.level.as_str(), l.peer.as_deref(), l.message.as_str()),
            ("info", Some("::1"), "Accepting connection")
        );
        let l = LogLine::parse(
            "   error: Can't stat file '/a' on '127.0.0.1' in files.copy_from promise",
        );
        assert_eq!((l.level.as_str(), l.peer.as_deref()), ("error", None));
        let l = LogLine::parse("127.0.0.1> (exit code: 0)");
        assert_eq!(
            (l.level.as_str(), l.peer.as_deref(), l.message.as_str()),
            ("", Some("127.0.0.1"), "(exit code: 0)")
        );
        let l = LogLine::parse("R: RCFLAB-OUTCOME 0 kept");
        assert_eq!(
            (l.level.as_str(), l.message.as_str()),
            ("R", "RCFLAB-OUTCOME 0 kept")
        );
        let l = LogLine::parse("Connected & authenticated successfully to '127.0.0.1:5308'");
        assert_eq!((l.level.as_str(), l.peer.as_deref()), ("", None));
    }

    #[test]
    fn normalizes_run_specific_bits() {
        assert_eq!(
            normalize("REFUSAL to user='root' of request: SYNCH 1795427196 STAT /tmp/rcf-lab-t3-srv-YUw6Ei/scratch/x MD5=b386653710d7f67ff92cc2cf33a743e8"),
            "REFUSAL to user='root' of request: SYNCH <time> STAT <lab:t3-srv>/scratch/x MD5=<key>"
        );
    }
}
