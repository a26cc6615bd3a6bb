//! JSON as CFEngine 3.21 reads and writes it (libntech `json.c`): the value
//! type of data containers and augments, 3.21's own lenient parser, its
//! compact and pretty writers, `JsonSelect` and the conversions of
//! primitives to strings that policy evaluation uses.
//!
//! 3.21's parser is not RFC 8259: it accepts trailing commas, missing
//! commas, unquoted object keys (`^\w[-\w]*\s*:`) and anything after the
//! first complete value; it keeps `\uXXXX` escapes verbatim and decodes
//! the other escapes of a string twice (once while scanning, once in
//! `JsonDecodeString`). [`parse`] is a port of that parser, so a text
//! parses here exactly when it parses in 3.21, to the same value; the one
//! exception (unquoted `$(var)`/`@(var)` references, which 3.21 resolves
//! through a lookup callback in some callers) is an error here, and the
//! caller treats it as something rcf cannot evaluate.

use core::fmt::Write as _;

/// A JSON value with object keys in insertion order (3.21 iterates objects
/// in that order; a repeated key replaces the earlier one and moves to the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number, as written (a `.` makes it a real, as in 3.21).
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in insertion order.
    Obj(Vec<(String, Json)>),
}

/// Why 3.21's parser refuses a text (its `JsonParseErrorToString` wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(pub &'static str);

/// Deepest nesting [`parse`] follows (3.21 recurses without a limit; a
/// deeper text is refused rather than overflowing the stack).
pub const MAX_JSON_DEPTH: usize = 256;

impl Json {
    /// The value of `key` in an object (`None` for other values).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether this is a string, number, boolean or null.
    pub fn is_primitive(&self) -> bool {
        !matches!(self, Json::Arr(_) | Json::Obj(_))
    }

    /// Strings as is, numbers as written, booleans as `true`/`false`;
    /// `None` for null and containers (how augments install primitives).
    pub fn primitive(&self) -> Option<String> {
        match self {
            Json::Str(s) => Some(s.clone()),
            Json::Num(n) => Some(n.clone()),
            Json::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// An array of primitives as strings ([`Json::primitive`]); `None`
    /// when this is not an array or holds a container.
    pub fn primitives(&self) -> Option<Vec<String>> {
        match self {
            Json::Arr(a) if a.iter().all(Json::is_primitive) => {
                Some(a.iter().filter_map(Json::primitive).collect())
            }
            _ => None,
        }
    }

    /// Children of a container, in order (none for a primitive).
    pub fn children(&self) -> Vec<&Json> {
        match self {
            Json::Arr(a) => a.iter().collect(),
            Json::Obj(kv) => kv.iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        }
    }

    /// `JsonLength`: children of a container, 0 for a primitive.
    pub fn len(&self) -> usize {
        match self {
            Json::Arr(a) => a.len(),
            Json::Obj(kv) => kv.len(),
            _ => 0,
        }
    }

    /// Whether [`Json::len`] is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends to an object as `JsonObjectAppendElement` does: an existing
    /// `key` is removed first, so the key moves to the end.
    pub fn obj_insert(kv: &mut Vec<(String, Json)>, key: String, v: Json) {
        kv.retain(|(k, _)| *k != key);
        kv.push((key, v));
    }

    /// `JsonSelect`: walks object keys and array indices (an index is all
    /// ASCII digits, leading zeros allowed). `Err` where 3.21 would exit
    /// (an index too large for a `long`, or the empty index).
    pub fn select(&self, indices: &[String]) -> Result<Option<&Json>, JsonError> {
        let Some((first, rest)) = indices.split_first() else {
            return Ok(Some(self));
        };
        match self {
            Json::Obj(_) => match self.get(first) {
                Some(c) => c.select(rest),
                None => Ok(None),
            },
            Json::Arr(a) => {
                if !first.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(None);
                }
                let Ok(i) = first.parse::<u64>() else {
                    return Err(JsonError(
                        "array index 3.21 cannot convert (it exits on this)",
                    ));
                };
                match usize::try_from(i).ok().and_then(|i| a.get(i)) {
                    Some(c) => c.select(rest),
                    None => Ok(None),
                }
            }
            _ => Ok(None),
        }
    }

    /// `JsonCopy`, which every stored container goes through: integers
    /// re-printed as a `long`, reals as `%.4f`. `Err` where 3.21 exits
    /// (`StringToLongExitOnError`: an integer out of range or written
    /// with an exponent).
    pub fn normalised(&self) -> Result<Json, JsonError> {
        Ok(match self {
            Json::Num(n) => Json::Num(num_text(n, 4)?),
            Json::Arr(a) => Json::Arr(a.iter().map(Json::normalised).collect::<Result<_, _>>()?),
            Json::Obj(kv) => Json::Obj(
                kv.iter()
                    .map(|(k, v)| Ok((k.clone(), v.normalised()?)))
                    .collect::<Result<_, JsonError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// `JsonPrimitiveToString` (iteration, `getvalues`): booleans as
    /// `true`/`false`, integers as a `long`, reals as `%.2f`, strings as
    /// they are; `Ok(None)` for null and containers.
    pub fn to_scalar(&self) -> Result<Option<String>, JsonError> {
        Ok(match self {
            Json::Str(s) => Some(s.clone()),
            Json::Bool(b) => Some(b.to_string()),
            Json::Num(n) => Some(num_text(n, 2)?),
            _ => None,
        })
    }

    /// `ContainerToSeq`: what `$(var)` iterates over when `var` is a data
    /// container: a primitive is itself, a container its primitive
    /// children (not nested ones); null gives nothing.
    pub fn iteration_values(&self) -> Result<Vec<String>, JsonError> {
        let mut out = Vec::new();
        if self.is_primitive() {
            out.extend(self.to_scalar()?);
        } else {
            for c in self.children() {
                if c.is_primitive() {
                    out.extend(c.to_scalar()?);
                }
            }
        }
        Ok(out)
    }

    /// `CollectContainerValues` (`getvalues`): every primitive at any
    /// depth, in order, null skipped.
    pub fn all_values(&self, out: &mut Vec<String>) -> Result<(), JsonError> {
        if self.is_primitive() {
            out.extend(self.to_scalar()?);
        } else {
            for c in self.children() {
                c.all_values(out)?;
            }
        }
        Ok(())
    }

    /// `JsonWriteCompact`: no spaces, object keys sorted (3.21 sorts the
    /// object while writing it), string values escaped, keys written raw.
    pub fn to_compact(&self) -> String {
        let mut s = String::new();
        self.write_compact(&mut s);
        s
    }

    fn write_compact(&self, out: &mut String) {
        match self {
            Json::Arr(a) => {
                out.push('[');
                for (i, c) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    c.write_compact(out);
                }
                out.push(']');
            }
            Json::Obj(kv) => {
                out.push('{');
                for (i, (k, v)) in sorted(kv).into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "\"{k}\":");
                    v.write_compact(out);
                }
                out.push('}');
            }
            p => write_primitive(p, out),
        }
    }

    /// `JsonWrite` at indent 0 (`storejson`): two spaces per level,
    /// `"key": value`, object keys sorted.
    pub fn to_pretty(&self) -> String {
        let mut s = String::new();
        self.write_pretty(&mut s, 0);
        s
    }

    fn write_pretty(&self, out: &mut String, level: usize) {
        let indent = |out: &mut String, n: usize| out.extend(core::iter::repeat_n(' ', n * 2));
        match self {
            Json::Arr(a) if a.is_empty() => out.push_str("[]"),
            Json::Arr(a) => {
                out.push_str("[\n");
                for (i, c) in a.iter().enumerate() {
                    indent(out, level + 1);
                    c.write_pretty(out, level + 1);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                indent(out, level);
                out.push(']');
            }
            Json::Obj(kv) => {
                out.push_str("{\n");
                let kv = sorted(kv);
                for (i, (k, v)) in kv.iter().enumerate() {
                    indent(out, level + 1);
                    let _ = write!(out, "\"{k}\": ");
                    v.write_pretty(out, level + 1);
                    if i + 1 < kv.len() {
                        out.push(',');
                    }
                    out.push('\n');
                }
                indent(out, level);
                out.push('}');
            }
            p => write_primitive(p, out),
        }
    }
}

fn sorted(kv: &[(String, Json)]) -> Vec<&(String, Json)> {
    let mut v: Vec<_> = kv.iter().collect();
    // strcmp order: bytes
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

fn write_primitive(p: &Json, out: &mut String) {
    match p {
        Json::Str(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Json::Num(n) => out.push_str(n),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => out.push_str("null"),
    }
}

/// A number's text: integers (no `.`) through `strtol` (range and full
/// consumption checked, as `StringToLongExitOnError`), reals through
/// `strtod` printed with `decimals` places.
fn num_text(n: &str, decimals: usize) -> Result<String, JsonError> {
    if n.contains('.') {
        let x: f64 = n
            .parse()
            .map_err(|_| JsonError("a real 3.21 cannot convert"))?;
        Ok(format!("{x:.decimals$}"))
    } else {
        let x: i64 = n
            .parse()
            .map_err(|_| JsonError("an integer 3.21 cannot convert (it exits on this)"))?;
        Ok(x.to_string())
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn is_sep(b: u8) -> bool {
    is_ws(b) || matches!(b, b',' | b']' | b'}')
}

/// 3.21's `IsDigit`: 1 to 9 (a 0 is tracked apart).
fn is_digit19(b: u8) -> bool {
    (b'1'..=b'9').contains(&b)
}

/// A port of 3.21's `JsonParse`: the first value of `text` (anything after
/// it is ignored, as 3.21 does). A top-level primitive is returned too;
/// callers that need a container check.
pub fn parse(text: &str) -> Result<Json, JsonError> {
    parse_with_offset(text).map_err(|(e, _)| e)
}

/// [`parse`], with the byte offset where parsing stopped on an error (for
/// messages naming a line and column).
pub fn parse_with_offset(text: &str) -> Result<Json, (JsonError, usize)> {
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    let r = loop {
        if p.i >= p.b.len() {
            break Err(JsonError("No data"));
        }
        match p.b[p.i] {
            b'{' => break p.object(0),
            b'[' => break p.array(0),
            c if is_ws(c) => p.i += 1,
            _ => break p.primitive(),
        }
    };
    r.map_err(|e| (e, p.i.min(text.len())))
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// 3.21's error for a token it does not know where a value is expected
/// and 3.21's lookup callback (`parsejson`, inline JSON arguments) would
/// try the token as a variable name.
pub const LOOKUP_TOKEN: JsonError = JsonError(
    "Unable to parse json data as object, unrecognized token beginning entry (3.21 may resolve it as a variable name)",
);

/// 3.21's error for a token it does not know.
pub const BAD_SYMBOL: JsonError =
    JsonError("Unable to parse json data as object, unrecognized token beginning entry");

impl Parser<'_> {
    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// `JsonParseAsString` then `JsonDecodeString`, as 3.21 applies both
    /// to values (`decode_twice`); keys get the first pass only. Leaves
    /// `i` on the closing quote.
    fn string(&mut self, decode_twice: bool) -> Result<String, JsonError> {
        let mut out: Vec<u8> = Vec::new();
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            match c {
                b'"' => {
                    let s = String::from_utf8_lossy(&out).into_owned();
                    return Ok(if decode_twice { decode(&s) } else { s });
                }
                b'\\' => {
                    self.i += 1;
                    let e = self.at(self.i);
                    match e {
                        b'\\' | b'"' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        0 => {
                            // a backslash at the end: 3.21 writes the NUL
                            // and reads past the end; refuse instead
                            return Err(JsonError(
                                "Unable to parse json data as string, did not end with doublequote",
                            ));
                        }
                        _ => {
                            out.push(b'\\');
                            out.push(e);
                        }
                    }
                }
                _ => out.push(c),
            }
            self.i += 1;
        }
        Err(JsonError(
            "Unable to parse json data as string, did not end with doublequote",
        ))
    }

    /// `JsonParseAsNumber`; leaves `i` on the last character of the number.
    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.i;
        let (mut zero_started, mut seen_dot, mut seen_exp) = (false, false, false);
        let mut prev = 0u8;
        while self.i < self.b.len() && !is_sep(self.b[self.i]) {
            let c = self.b[self.i];
            match c {
                b'-' => {
                    if prev != 0 && prev != b'e' && prev != b'E' {
                        return Err(JsonError("Unable to parse json data as number, - not at the start or not after exponent"));
                    }
                }
                b'+' => {
                    if prev != b'e' && prev != b'E' {
                        return Err(JsonError(
                            "Unable to parse json data as number, + without preceding exponent",
                        ));
                    }
                }
                b'0' => {
                    if zero_started && !seen_dot && !seen_exp {
                        return Err(JsonError("Unable to parse json data as number, started with 0 before dot or exponent, duplicate 0 seen"));
                    }
                    if prev == 0 {
                        zero_started = true;
                    }
                }
                b'.' => {
                    if seen_dot {
                        return Err(JsonError("Unable to parse json data as number, two or more dots (decimal points)"));
                    }
                    if prev != b'0' && !is_digit19(prev) {
                        return Err(JsonError(
                            "Unable to parse json data as number, dot not preceded by digit",
                        ));
                    }
                    seen_dot = true;
                }
                b'e' | b'E' => {
                    if seen_exp {
                        return Err(JsonError(
                            "Unable to parse json data as number, duplicate exponent",
                        ));
                    }
                    if !is_digit19(prev) && prev != b'0' {
                        return Err(JsonError(
                            "Unable to parse json data as number, exponent without preceding digit",
                        ));
                    }
                    seen_exp = true;
                }
                _ => {
                    if zero_started && !seen_dot && !seen_exp {
                        return Err(JsonError("Unable to parse json data as number, dot or exponent must follow leading 0"));
                    }
                    if !is_digit19(c) {
                        return Err(JsonError(
                            "Unable to parse json data as number, invalid symbol",
                        ));
                    }
                }
            }
            prev = c;
            self.i += 1;
        }
        if prev != b'0' && !is_digit19(prev) {
            return Err(JsonError(
                "Unable to parse json data as string, did not end with digit",
            ));
        }
        let text = String::from_utf8_lossy(&self.b[start..self.i]).into_owned();
        self.i -= 1;
        Ok(Json::Num(text))
    }

    /// `true`/`false`/`null` followed by a separator or the end; leaves
    /// `i` on its last character.
    fn word(&mut self) -> Option<Json> {
        for (w, v) in [
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
            ("null", Json::Null),
        ] {
            if self.b[self.i..].starts_with(w.as_bytes()) {
                let next = self.at(self.i + w.len());
                if next == 0 || is_sep(next) {
                    self.i += w.len() - 1;
                    return Some(v);
                }
                return None;
            }
        }
        None
    }

    fn primitive(&mut self) -> Result<Json, JsonError> {
        let c = self.b[self.i];
        if c == b'"' {
            return self.string(true).map(Json::Str);
        }
        if c == b'-' || c == b'0' || is_digit19(c) {
            return self.number();
        }
        self.word().ok_or(BAD_SYMBOL)
    }

    /// `JsonParseAsArray`; leaves `i` on the closing `]`.
    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_JSON_DEPTH {
            return Err(JsonError("nested too deeply"));
        }
        let mut out = Vec::new();
        let mut prev = b'[';
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if is_ws(c) {
                self.i += 1;
                continue;
            }
            match c {
                b'"' => out.push(Json::Str(self.string(true)?)),
                b'[' | b'{' => {
                    if prev != b'[' && prev != b',' {
                        return Err(JsonError(
                            "Unable to parse json data as array, did not start with '['",
                        ));
                    }
                    out.push(if c == b'[' {
                        self.array(depth + 1)?
                    } else {
                        self.object(depth + 1)?
                    });
                }
                b',' => {
                    if prev == b',' || prev == b'[' {
                        return Err(JsonError(
                            "Unable to parse json data as array, extraneous commas",
                        ));
                    }
                }
                b']' => return Ok(Json::Arr(out)),
                _ => {
                    if c == b'-' || c == b'0' || is_digit19(c) {
                        out.push(self.number()?);
                    } else {
                        out.push(self.word().ok_or_else(|| value_token_error(c))?);
                    }
                }
            }
            prev = self.b[self.i];
            self.i += 1;
        }
        Err(JsonError(
            "Unable to parse json data as array, did not end with ']'",
        ))
    }

    /// `^\w[-\w]*\s*:` at `i`: the index of the colon.
    fn unquoted_key_colon(&self) -> Option<usize> {
        let wc = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if !wc(self.at(self.i)) {
            return None;
        }
        let mut j = self.i + 1;
        while j < self.b.len() && (self.b[j] == b'-' || wc(self.b[j])) {
            j += 1;
        }
        while j < self.b.len() && is_ws(self.b[j]) {
            j += 1;
        }
        (self.at(j) == b':').then_some(j)
    }

    /// `JsonParseAsObject`; leaves `i` on the closing `}`.
    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_JSON_DEPTH {
            return Err(JsonError("nested too deeply"));
        }
        let mut kv: Vec<(String, Json)> = Vec::new();
        let mut key: Option<String> = None;
        let mut prev = b'{';
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if is_ws(c) {
                self.i += 1;
                continue;
            }
            match c {
                b'"' => match key.take() {
                    Some(k) => {
                        let v = self.string(true)?;
                        Json::obj_insert(&mut kv, k, Json::Str(v));
                    }
                    None => key = Some(self.string(false)?),
                },
                b':' => {
                    if key.is_none() || prev == b':' || prev == b',' {
                        return Err(JsonError("Unable to parse json data as object, ':' seen without having specified an l-value"));
                    }
                }
                b',' => {
                    if key.is_some() || prev == b':' || prev == b',' {
                        return Err(JsonError("Unable to parse json data as object, ',' seen without having specified an r-value"));
                    }
                }
                b'[' | b'{' => {
                    let Some(k) = key.take() else {
                        return Err(JsonError(if c == b'[' {
                            "Unable to parse json data as object, array not allowed as l-value"
                        } else {
                            "Unable to parse json data as object, object not allowed as l-value"
                        }));
                    };
                    let v = if c == b'[' {
                        self.array(depth + 1)?
                    } else {
                        self.object(depth + 1)?
                    };
                    Json::obj_insert(&mut kv, k, v);
                }
                b'}' => {
                    if key.is_some() {
                        return Err(JsonError("Unable to parse json data as object, tried to close object having opened an l-value"));
                    }
                    return Ok(Json::Obj(kv));
                }
                _ => {
                    if key.is_none() {
                        if let Some(colon) = self.unquoted_key_colon() {
                            let mut end = colon;
                            while end > self.i && is_ws(self.b[end - 1]) {
                                end -= 1;
                            }
                            key = Some(String::from_utf8_lossy(&self.b[self.i..end]).into_owned());
                            self.i = colon;
                        } else {
                            return Err(BAD_SYMBOL);
                        }
                    } else {
                        let v = if c == b'-' || c == b'0' || is_digit19(c) {
                            self.number()?
                        } else {
                            self.word().ok_or_else(|| value_token_error(c))?
                        };
                        if let Some(k) = key.take() {
                            Json::obj_insert(&mut kv, k, v);
                        }
                    }
                }
            }
            prev = self.b[self.i];
            self.i += 1;
        }
        Err(JsonError(
            "Unable to parse json data as string, did not end with '}'",
        ))
    }
}

/// `JsonParseEnvFile` (os-release, `readdata(..., "ENV")`): `KEY=value`
/// lines into an object of strings, in file order (a repeated key moves
/// to the end). Lines are trimmed; empty lines, `#` comments, lines
/// without `=` or without a key are skipped. A value may be quoted with
/// `"` or `'` (the text after the closing quote is ignored); a backslash
/// takes the next character literally, `\n` is a newline; an unescaped
/// quote inside an unquoted value skips the line. Reading stops once the
/// lines read exceed `size_max` bytes (newlines not counted).
pub fn parse_env(text: &str, size_max: usize) -> Json {
    let mut kv: Vec<(String, Json)> = Vec::new();
    let mut bytes = 0usize;
    for raw in text.split('\n') {
        bytes += raw.len();
        if bytes > size_max {
            break;
        }
        let line = raw.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.is_empty() {
            continue;
        }
        let trim = |x: &str| {
            x.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
                .to_string()
        };
        let (key, value) = (trim(k), trim(v));
        let Some(value) = env_value(&value) else {
            continue;
        };
        Json::obj_insert(&mut kv, key, Json::Str(value));
    }
    Json::Obj(kv)
}

/// `filtered_copy`: quotes and backslash escapes of an ENV value.
fn env_value(v: &str) -> Option<String> {
    let mut chars = v.chars().peekable();
    let quote = match chars.peek() {
        Some(&q) if q == '"' || q == '\'' => {
            chars.next();
            Some(q)
        }
        _ => None,
    };
    let mut out = String::new();
    while let Some(c) = chars.next() {
        if Some(c) == quote {
            break;
        }
        if quote.is_none() && (c == '"' || c == '\'') {
            return None;
        }
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(n) => out.push(n),
                // a trailing backslash copies the terminating NUL: the value ends
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Some(out)
}

/// An unknown token where a value goes: [`LOOKUP_TOKEN`] when it starts
/// like a variable name (`^[a-zA-Z0-9_]`), which 3.21's lookup would try.
fn value_token_error(c: u8) -> JsonError {
    if c.is_ascii_alphanumeric() || c == b'_' {
        LOOKUP_TOKEN
    } else {
        BAD_SYMBOL
    }
}

/// `JsonDecodeString`: the second decoding pass 3.21 applies to string values.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let next = b.get(i + 1).copied().unwrap_or(0);
            let r = match next {
                b'"' | b'\\' => Some(next),
                b'b' => Some(8),
                b'f' => Some(12),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                _ => None,
            };
            match r {
                Some(x) => {
                    out.push(x);
                    i += 2;
                }
                None => {
                    out.push(b'\\');
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Json {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn leniencies_of_3_21() {
        // each seen accepted by cf-promises 3.21 (parsejson), same value
        assert_eq!(p("[1,2,]").to_compact(), "[1,2]");
        assert_eq!(p(r#"{"a":1,}"#).to_compact(), r#"{"a":1}"#);
        assert_eq!(p("{a:1}").to_compact(), r#"{"a":1}"#);
        assert_eq!(p("[1] trailing").to_compact(), "[1]");
        assert_eq!(p(r#"{"a" 1}"#).to_compact(), r#"{"a":1}"#);
        assert_eq!(p(r#"["a" "b"]"#).to_compact(), r#"["a","b"]"#);
        assert_eq!(
            p(r#"{"a":1,"a":2}"#),
            Json::Obj(vec![("a".into(), Json::Num("2".into()))])
        );
        assert_eq!(
            p("  [ true , false , null ]  ").to_compact(),
            "[true,false,null]"
        );
        // \u kept verbatim, \n decoded
        assert_eq!(
            p(r#"["\u00e9\n\t"]"#),
            Json::Arr(vec![Json::Str("\\u00e9\n\t".into())])
        );
        // getindices order is insertion order, output is sorted
        let o = p(r#"{"b":1,"a":2}"#);
        assert_eq!(o.to_compact(), r#"{"a":2,"b":1}"#);
        assert!(matches!(&o, Json::Obj(kv) if kv[0].0 == "b"));
    }

    #[test]
    fn refusals_of_3_21() {
        for bad in [
            "['single']",
            "[+1]",
            "[1,,2]",
            "[007]",
            "[01]",
            "[.5]",
            "[TRUE]",
            "{bad",
            "",
            "[1.",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_as_3_21_prints_them() {
        let n = p("[1.5, 10, -0, 1.0, 0.1, -7]").normalised().unwrap();
        assert_eq!(n.to_compact(), "[1.5000,10,0,1.0000,0.1000,-7]");
        assert_eq!(
            n.iteration_values().unwrap(),
            ["1.50", "10", "0", "1.00", "0.10", "-7"]
        );
        // 3.21 exits on these; rcf refuses
        assert!(p("[1e3]").normalised().is_err());
        assert!(p("[12345678901234567890]").normalised().is_err());
    }

    #[test]
    fn select_and_values() {
        let d = p(
            r#"{"ips": ["10.0.0.1", "10.0.0.2"], "n": {"a": "1", "b": [1,2, {"x":3}], "c": true, "d": null}, "s": "str"}"#,
        );
        let sel = |ix: &[&str]| {
            d.select(&ix.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap()
                .cloned()
        };
        assert_eq!(sel(&["ips", "01"]), Some(Json::Str("10.0.0.2".into())));
        assert_eq!(sel(&["ips", "-1"]), None);
        assert_eq!(sel(&["n", "b", "2", "x"]), Some(Json::Num("3".into())));
        assert_eq!(
            sel(&["n", "b"]).unwrap().iteration_values().unwrap(),
            ["1", "2"]
        );
        assert_eq!(
            sel(&["n", "d"]).unwrap().iteration_values().unwrap(),
            Vec::<String>::new()
        );
        let mut all = Vec::new();
        d.all_values(&mut all).unwrap();
        assert_eq!(
            all,
            ["10.0.0.1", "10.0.0.2", "1", "1", "2", "3", "true", "str"]
        );
    }

    #[test]
    fn env_files_as_3_21() {
        let j = parse_env(
            "# c\nNAME=\"Debian GNU/Linux\"\n ID=debian \nBAD=a\"b\nQ='x y' trailing\nE=a\\nb\\\"c\n=nokey\nnoeq\nID=again\n",
            100 * 1024,
        );
        assert_eq!(
            j,
            Json::Obj(vec![
                ("NAME".into(), Json::Str("Debian GNU/Linux".into())),
                ("Q".into(), Json::Str("x y".into())),
                ("E".into(), Json::Str("a\nb\"c".into())),
                ("ID".into(), Json::Str("again".into())),
            ])
        );
        // the byte limit stops reading
        assert_eq!(parse_env("A=1\nB=2\n", 4).len(), 1);
    }

    #[test]
    fn pretty_as_storejson() {
        assert_eq!(
            p(r#"{"k":["a","b"],"z":5,"e":{}}"#).to_pretty(),
            "{\n  \"e\": {\n  },\n  \"k\": [\n    \"a\",\n    \"b\"\n  ],\n  \"z\": 5\n}"
        );
    }
}
