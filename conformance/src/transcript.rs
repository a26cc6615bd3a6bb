//! Loader for the `cfe-transcript 1` format of `shared/interop/vectors/`.
//!
//! One record per line, in the order the bytes were seen; see the vectors'
//! README for the grammar. Loading is strict: an unknown record kind or a
//! bad escape is an error naming the line, so a corrupt vector can never
//! silently weaken a conformance check.

use std::path::{Path, PathBuf};

/// Who sent a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// `C>`: client to server.
    Client,
    /// `S>`: server to client.
    Server,
}

/// What a record carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An identification-phase line, `\n` included.
    Line(Vec<u8>),
    /// One transaction: the exact 8-byte header and the payload.
    Txn { header: [u8; 8], payload: Vec<u8> },
    /// Unframed stream bytes (GET data).
    Raw(Vec<u8>),
    /// An incomplete line or header seen just before the peer closed.
    Partial(Vec<u8>),
    /// The peer closed TCP without a TLS close_notify.
    Eof,
    /// The peer sent a TLS close_notify.
    CloseNotify,
}

/// One record with its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Direction.
    pub dir: Dir,
    /// Content.
    pub kind: Kind,
    /// `~ <regex>` the escaped payload matches on every run, if given.
    pub regex: Option<String>,
    /// `# varies:` notes attached to this record.
    pub varies: Vec<String>,
    /// 1-based line number in the file, for error messages.
    pub line: usize,
}

/// A whole transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// The `# name:` value, else the file stem.
    pub name: String,
    /// All `# key: value` metadata lines before the first record.
    pub meta: Vec<(String, String)>,
    /// The records in order.
    pub records: Vec<Record>,
}

impl Transcript {
    /// A metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the session ran inside TLS (`# tls:` is not `none…`).
    pub fn is_tls(&self) -> bool {
        !self.meta("tls").unwrap_or("").starts_with("none")
    }

    /// Whether the server side was the real cf-serverd, so its bytes are normative.
    pub fn server_is_authoritative(&self) -> bool {
        self.meta("roles")
            .map(|r| r.contains("S = cf-serverd"))
            .unwrap_or(false)
    }
}

/// A transcript that does not follow the format.
#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The first line is not `# cfe-transcript 1`.
    #[error("{0}: not a cfe-transcript 1 file")]
    BadMagic(String),
    /// A record line does not parse.
    #[error("{file}:{line}: {why}")]
    Syntax {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        why: String,
    },
}

/// Undo the vectors' string escaping (`\\ \" \n \r \t \0 \xHH`).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1).ok_or("dangling backslash")?;
        i += 2;
        match c {
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'x' => {
                let h = s.get(i..i + 2).ok_or("short \\x escape")?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| format!("bad \\x escape {h:?}"))?);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
    }
    Ok(out)
}

/// Escape bytes the way the vectors do, so a payload can be matched
/// against a record's `~` regex.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0 => s.push_str("\\0"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Split `"a" "b"` into quoted strings (unescaped).
fn quoted_strings(s: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        if b[i] != b'"' {
            return Err(format!("expected a quoted string at {:?}", &s[i..]));
        }
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        if j >= b.len() {
            return Err("unterminated string".into());
        }
        out.push(unescape(&s[start..j])?);
        i = j + 1;
    }
}

/// Parse transcript text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Transcript, TranscriptError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim() == "# cfe-transcript 1" => {}
        _ => return Err(TranscriptError::BadMagic(file.to_string())),
    }
    let syntax = |line: usize, why: String| TranscriptError::Syntax {
        file: file.to_string(),
        line,
        why,
    };
    let mut meta = Vec::new();
    let mut records: Vec<Record> = Vec::new();
    for (idx, raw) in lines {
        let n = idx + 1;
        let l = raw.trim_end();
        if l.is_empty() {
            continue;
        }
        if let Some(rx) = l.strip_prefix("~ ") {
            let r = records
                .last_mut()
                .ok_or_else(|| syntax(n, "annotation before any record".into()))?;
            r.regex = Some(rx.to_string());
            continue;
        }
        if let Some(c) = l.strip_prefix("# ") {
            if let Some(v) = c.strip_prefix("varies: ") {
                if let Some(r) = records.last_mut() {
                    r.varies.push(v.to_string());
                    continue;
                }
            }
            if records.is_empty() {
                if let Some((k, v)) = c.split_once(": ") {
                    meta.push((k.trim().to_string(), v.to_string()));
                }
            }
            continue;
        }
        let (dir, rest) = if let Some(r) = l.strip_prefix("C> ") {
            (Dir::Client, r)
        } else if let Some(r) = l.strip_prefix("S> ") {
            (Dir::Server, r)
        } else {
            return Err(syntax(n, format!("unknown line {l:?}")));
        };
        let (word, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let strings = || quoted_strings(args).map_err(|e| syntax(n, e));
        let kind = match word {
            "EOF" => Kind::Eof,
            "CLOSE_NOTIFY" => Kind::CloseNotify,
            "LINE" => Kind::Line(one(strings()?, n, file)?),
            "PARTIAL" => Kind::Partial(one(strings()?, n, file)?),
            "TXN" => {
                let s = strings()?;
                if s.len() != 2 || s[0].len() != 8 {
                    return Err(syntax(n, "TXN needs an 8-byte header and a payload".into()));
                }
                let mut header = [0u8; 8];
                header.copy_from_slice(&s[0]);
                Kind::Txn {
                    header,
                    payload: s[1].clone(),
                }
            }
            "RAW" => {
                let (count, data) = args
                    .split_once(' ')
                    .ok_or_else(|| syntax(n, "RAW needs a count".into()))?;
                let count: usize = count
                    .parse()
                    .map_err(|_| syntax(n, "bad RAW count".into()))?;
                let bytes = one(quoted_strings(data).map_err(|e| syntax(n, e))?, n, file)?;
                if bytes.len() != count {
                    return Err(syntax(
                        n,
                        format!("RAW says {count} bytes but holds {}", bytes.len()),
                    ));
                }
                Kind::Raw(bytes)
            }
            other => return Err(syntax(n, format!("unknown record kind {other}"))),
        };
        records.push(Record {
            dir,
            kind,
            regex: None,
            varies: Vec::new(),
            line: n,
        });
    }
    let name = meta
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| file.to_string());
    Ok(Transcript {
        name,
        meta,
        records,
    })
}

fn one(mut v: Vec<Vec<u8>>, line: usize, file: &str) -> Result<Vec<u8>, TranscriptError> {
    if v.len() != 1 {
        return Err(TranscriptError::Syntax {
            file: file.into(),
            line,
            why: "expected one quoted string".into(),
        });
    }
    Ok(v.remove(0))
}

/// Load one transcript file.
pub fn load(path: &Path) -> Result<Transcript, TranscriptError> {
    let text = std::fs::read_to_string(path).map_err(|source| TranscriptError::Io {
        path: path.into(),
        source,
    })?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse(&file, &text)
}

/// Where the recorded vectors live: `$RCF_VECTORS`, else `shared/interop/vectors`
/// beside the workspace (how CI lays it out).
pub fn vectors_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RCF_VECTORS") {
        return d.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/interop/vectors")
}

/// Load every `*.txt` transcript in `dir` (the README is skipped), sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Transcript>, TranscriptError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TranscriptError::Io {
        path: dir.into(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().map(|e| e == "txt").unwrap_or(false))
        .collect();
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&all)).unwrap(), all);
        assert!(unescape("\\q").is_err());
        assert!(unescape("\\x4").is_err());
    }

    #[test]
    fn parses_records_and_annotations() {
        let t = parse(
            "x",
            "# cfe-transcript 1\n# name: demo\n# tls: none\nC> TXN \"t 7\\0\\0\\0\\0\\0\" \"VERSION\"\n~ ^VERSION$\n# varies: nothing\nS> RAW 2 \"hi\"\nS> EOF\n",
        )
        .unwrap();
        assert_eq!(t.name, "demo");
        assert!(!t.is_tls());
        assert_eq!(t.records.len(), 3);
        assert_eq!(t.records[0].regex.as_deref(), Some("^VERSION$"));
        assert_eq!(t.records[0].varies, vec!["nothing".to_string()]);
        assert_eq!(t.records[1].kind, Kind::Raw(b"hi".to_vec()));
        assert!(parse("x", "# cfe-transcript 1\nS> RAW 3 \"hi\"\n").is_err());
        assert!(parse("x", "hello\n").is_err());
    }
}
