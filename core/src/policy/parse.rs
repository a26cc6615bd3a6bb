//! A nom parser for the whole CFEngine 3 policy language (3.21 syntax).
//!
//! It accepts every block type (bundles of any type, bodies, custom
//! `promise` blocks), class guards (plain and quoted `"expr"::`), promise
//! types, promises with promisees and constraints, the three string quotes
//! with CFEngine's escape rules, multi-line strings, lists, nested function
//! calls, `#` comments and the `@if minimum_version(...)` / `@else` /
//! `@endif` macros. Errors carry `file:line:col` and what was expected.

use super::ast::*;
use nom::{
    branch::alt,
    bytes::complete::{tag, take_while1},
    character::complete::{char, multispace1, not_line_ending},
    combinator::{opt, recognize},
    multi::many0_count,
    sequence::pair,
    IResult,
};
use std::borrow::Cow;

/// The CFEngine version the `@if` macros are evaluated against.
pub const EMULATED_VERSION: (u32, u32, u32) = (3, 21, 0);

/// Deepest nesting of lists and function calls accepted.
pub const MAX_NESTING: usize = 64;

/// Largest policy file accepted, in bytes.
pub const MAX_FILE_SIZE: usize = 16 * 1024 * 1024;

/// A syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{col}: {expected}")]
pub struct SyntaxError {
    /// File the error is in.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What the parser expected there (or what is wrong).
    pub expected: String,
}

#[derive(Debug, Clone)]
struct PErr<'a> {
    input: &'a str,
    expected: Cow<'static, str>,
}

impl<'a> nom::error::ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, kind: nom::error::ErrorKind) -> Self {
        PErr {
            input,
            expected: Cow::Owned(format!("unexpected input ({})", kind.description())),
        }
    }
    fn append(_input: &'a str, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }
    fn or(self, other: Self) -> Self {
        if other.input.len() < self.input.len() {
            other
        } else {
            self
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

fn fail<'a, T>(input: &'a str, expected: impl Into<Cow<'static, str>>) -> Res<'a, T> {
    Err(nom::Err::Failure(PErr {
        input,
        expected: expected.into(),
    }))
}

fn soft<'a, T>(input: &'a str, expected: &'static str) -> Res<'a, T> {
    Err(nom::Err::Error(PErr {
        input,
        expected: Cow::Borrowed(expected),
    }))
}

/// Parses one policy file. `path` is only used in error messages and
/// stored in the result; the text must already be in memory (callers bound
/// its size with [`MAX_FILE_SIZE`]).
pub fn parse_policy(path: &str, text: &str) -> Result<PolicyFile, SyntaxError> {
    let err_at = |line: u32, col: u32, what: String| SyntaxError {
        file: path.to_string(),
        line,
        col,
        expected: what,
    };
    if text.len() > MAX_FILE_SIZE {
        return Err(err_at(
            1,
            1,
            format!(
                "file too large ({} bytes, limit {})",
                text.len(),
                MAX_FILE_SIZE
            ),
        ));
    }
    let pre = preprocess(text).map_err(|(line, what)| err_at(line, 1, what))?;
    let line_starts = std::iter::once(0)
        .chain(pre.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut p = Parser {
        src: &pre,
        namespace: String::from("default"),
        line_starts,
    };
    match p.file(&pre) {
        Ok((_, blocks)) => Ok(PolicyFile {
            path: path.to_string(),
            blocks,
        }),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => {
            let pos = position(&pre, e.input);
            Err(err_at(pos.line, pos.col, e.expected.into_owned()))
        }
        Err(nom::Err::Incomplete(_)) => Err(err_at(1, 1, "incomplete input".into())),
    }
}

fn position(src: &str, rest: &str) -> Pos {
    let off = src.len().saturating_sub(rest.len());
    let before = &src.as_bytes()[..off];
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|x| x + 1)
        .unwrap_or(0);
    Pos {
        line,
        col: (off - line_start) as u32 + 1,
    }
}

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.trim().split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = match it.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

/// Features a Debian 3.21 build reports through `@if feature(...)`.
const KNOWN_FEATURES: &[&str] = &[
    "def_json_preparse",
    "host_specific_data_load",
    "tls_1_0",
    "tls_1_1",
    "tls_1_2",
    "tls_1_3",
    "yaml",
    "xml",
    "curl",
    "copyfrom_restrict_keys",
];

/// Blanks out text hidden by `@if` macros (keeping line numbers) and
/// the macro lines themselves. Errors are (line, message).
fn preprocess(text: &str) -> Result<String, (u32, String)> {
    if !text.lines().any(|l| l.starts_with('@')) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut depth = 0u32;
    let mut ignoring = false;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let lno = n as u32 + 1;
        let body = line.trim_end_matches(['\n', '\r']);
        let blank = |out: &mut String| {
            for c in line.chars() {
                out.push(if c == '\n' || c == '\r' { c } else { ' ' });
            }
        };
        if let Some(rest) = body.strip_prefix("@if ") {
            if depth > 0 {
                return Err((lno, "nested @if macros are not allowed".into()));
            }
            depth = 1;
            let keep = if let Some(v) = rest
                .strip_prefix("minimum_version(")
                .and_then(|r| r.strip_suffix(')'))
            {
                EMULATED_VERSION
                    >= parse_version(v).ok_or((lno, format!("unparseable version in '{body}'")))?
            } else if let Some(v) = rest
                .strip_prefix("maximum_version(")
                .and_then(|r| r.strip_suffix(')'))
            {
                EMULATED_VERSION
                    <= parse_version(v).ok_or((lno, format!("unparseable version in '{body}'")))?
            } else if let Some(v) = rest
                .strip_prefix("between_versions(")
                .and_then(|r| r.strip_suffix(')'))
            {
                let (a, b) = v
                    .split_once(',')
                    .ok_or((lno, format!("expected two versions in '{body}'")))?;
                let a =
                    parse_version(a).ok_or((lno, format!("unparseable version in '{body}'")))?;
                let b =
                    parse_version(b).ok_or((lno, format!("unparseable version in '{body}'")))?;
                EMULATED_VERSION >= a && EMULATED_VERSION <= b
            } else if let Some(f) = rest
                .strip_prefix("feature(")
                .and_then(|r| r.strip_suffix(')'))
            {
                KNOWN_FEATURES.contains(&f)
            } else {
                return Err((lno, format!("unknown macro '{body}'")));
            };
            ignoring = !keep;
            blank(&mut out);
        } else if body.starts_with("@else") {
            if depth == 0 {
                return Err((lno, "@else macro without a matching @if".into()));
            }
            ignoring = !ignoring;
            blank(&mut out);
        } else if body.starts_with("@endif") {
            if depth == 0 {
                return Err((lno, "@endif macro without a matching @if".into()));
            }
            depth = 0;
            ignoring = false;
            blank(&mut out);
        } else if ignoring {
            blank(&mut out);
        } else {
            out.push_str(line);
        }
    }
    if depth > 0 {
        return Err((
            text.lines().count() as u32,
            "EOF seen while @if was waiting for @endif".into(),
        ));
    }
    Ok(out)
}

/// `a b::` (two names with only blanks between them) is a syntax error in
/// CFEngine; quoted guards are checked after expansion instead.
fn spaced_class_names(g: &str) -> bool {
    let b: Vec<char> = g.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == ' ' || b[i] == '\t' {
            let mut j = i;
            while j < b.len() && (b[j] == ' ' || b[j] == '\t') {
                j += 1;
            }
            if i > 0
                && j < b.len()
                && (is_id_char(b[i - 1]) || b[i - 1] == ')')
                && (is_id_char(b[j]) || b[j] == '(' || b[j] == '!')
            {
                return true;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    false
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || (c as u32) >= 0x80
}

fn is_class_first(c: char) -> bool {
    matches!(c, '.' | '|' | '&' | '!' | '(' | ')' | ':') || is_id_char(c)
}

fn is_class_char(c: char) -> bool {
    c == ' ' || c == '\t' || is_class_first(c)
}

/// Whitespace and comments.
fn ws(i: &str) -> Res<'_, ()> {
    let (i, _) = many0_count(alt((
        multispace1,
        recognize(pair(char('#'), not_line_ending)),
    )))(i)?;
    Ok((i, ()))
}

/// `[a-zA-Z0-9_]+` optionally followed by `:` and another id (a symbol).
fn ident(i: &str) -> Res<'_, &str> {
    recognize(pair(
        take_while1(is_id_char),
        opt(pair(char(':'), take_while1(is_id_char))),
    ))(i)
}

/// A quoted string (double, single or back quotes), de-escaped like
/// CFEngine's lexer does.
fn qstring(i: &str) -> Res<'_, String> {
    let mut chars = i.char_indices();
    let q = match chars.next() {
        Some((_, c)) if c == '"' || c == '\'' || c == '`' => c,
        _ => return soft(i, "expected a quoted string"),
    };
    let mut end = None;
    let mut esc = false;
    for (idx, c) in chars {
        if esc {
            esc = false;
            continue;
        }
        if c == '\\' && q != '`' {
            esc = true;
            continue;
        }
        if c == q {
            end = Some(idx);
            break;
        }
    }
    let Some(end) = end else {
        return fail(i, "runaway string: no closing quote before end of file");
    };
    let raw = &i[1..end];
    Ok((&i[end + 1..], de_escape(raw)))
}

fn de_escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.peek() {
                Some('\n') => {
                    it.next();
                    continue;
                }
                Some(&n @ ('\\' | '"' | '\'')) => {
                    it.next();
                    out.push(n);
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// `$(name)`, `${name}`, `@(name)`, `@{name}`, with nested brackets.
fn nakedvar(i: &str) -> Res<'_, String> {
    let b = i.as_bytes();
    if b.len() < 3 || !(b[0] == b'$' || b[0] == b'@') || !(b[1] == b'(' || b[1] == b'{') {
        return soft(i, "expected a variable reference");
    }
    let mut depth = 0i32;
    for (idx, c) in i.char_indices().skip(1) {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&i[idx + 1..], i[..idx + 1].to_string()));
                }
            }
            c if is_id_char(c) || c == '.' || c == ':' || c == '$' || c == '@' => {}
            _ => return soft(i, "expected a variable reference"),
        }
        if depth > MAX_NESTING as i32 {
            return fail(i, "variable reference nested too deeply");
        }
    }
    fail(i, "unterminated variable reference")
}

struct Parser<'s> {
    src: &'s str,
    namespace: String,
    /// Byte offsets where lines start, for O(log n) positions.
    line_starts: Vec<usize>,
}

impl<'s> Parser<'s> {
    fn pos(&self, rest: &str) -> Pos {
        let off = self.src.len().saturating_sub(rest.len());
        let line = match self.line_starts.binary_search(&off) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        Pos {
            line: line as u32 + 1,
            col: (off - self.line_starts[line]) as u32 + 1,
        }
    }

    fn file<'a>(&mut self, i: &'a str) -> Res<'a, Vec<Block>> {
        let mut blocks = Vec::new();
        let (mut i, _) = ws(i)?;
        while !i.is_empty() {
            let start = i;
            let (r, kw) = match ident(i) {
                Ok(x) => x,
                Err(_) => return fail(i, "expected 'bundle', 'body' or 'promise'"),
            };
            let block;
            (i, block) = match kw {
                "bundle" => {
                    let (r, b) = self.bundle(start, r)?;
                    (r, Block::Bundle(b))
                }
                "body" => {
                    let (r, b) = self.body(start, r, "body")?;
                    if b.kind == "file" && b.name == "control" {
                        for a in &b.attrs {
                            if a.lval == "namespace" {
                                if let Rval::Scalar(s) = &a.rval {
                                    self.namespace = s.clone();
                                }
                            }
                        }
                    }
                    (r, Block::Body(b))
                }
                "promise" => {
                    let (r, b) = self.body(start, r, "promise")?;
                    (r, Block::Promise(b))
                }
                _ => return fail(start, "expected 'bundle', 'body' or 'promise'"),
            };
            blocks.push(block);
            (i, _) = ws(i)?;
        }
        Ok((i, blocks))
    }

    fn header<'a>(&self, i: &'a str, what: &'static str) -> Res<'a, (String, String, Vec<String>)> {
        let (i, _) = ws(i)?;
        let (i, kind) =
            ident(i).or_else(|_: nom::Err<PErr>| fail(i, format!("expected {what} type")))?;
        let (i, _) = ws(i)?;
        let (i, name) =
            ident(i).or_else(|_: nom::Err<PErr>| fail(i, format!("expected {what} name")))?;
        let (mut i, _) = ws(i)?;
        let mut args = Vec::new();
        if let Ok((r, _)) = char::<_, PErr>('(')(i) {
            i = ws(r)?.0;
            loop {
                if let Ok((r, _)) = char::<_, PErr>(')')(i) {
                    i = r;
                    break;
                }
                let (r, a) = ident(i)
                    .or_else(|_: nom::Err<PErr>| fail(i, "expected parameter name or ')'"))?;
                args.push(a.to_string());
                i = ws(r)?.0;
                if let Ok((r, _)) = char::<_, PErr>(',')(i) {
                    i = ws(r)?.0;
                } else if !i.starts_with(')') {
                    return fail(i, "expected ',' or ')'");
                }
            }
            i = ws(i)?.0;
        }
        let (i, _) =
            char::<_, PErr>('{')(i).or_else(|_: nom::Err<PErr>| fail(i, "expected '{'"))?;
        Ok((i, (kind.to_string(), name.to_string(), args)))
    }

    /// A class guard (`expr::` or `"expr"::`), without consuming on failure.
    fn class_guard<'a>(&self, i: &'a str) -> Option<(&'a str, String)> {
        if i.starts_with('"') || i.starts_with('\'') {
            let q = i.chars().next()?;
            let close = i[1..].find(q)? + 1;
            let inner = &i[1..close];
            if inner.contains('\0') {
                return None;
            }
            let rest = &i[close + 1..];
            return rest.strip_prefix("::").map(|r| (r, inner.to_string()));
        }
        let first = i.chars().next()?;
        if !is_class_first(first) {
            return None;
        }
        let run_len = i.find(|c: char| !is_class_char(c)).unwrap_or(i.len());
        let run = &i[..run_len];
        let last = run.rfind("::")?;
        let expr = run[..last].trim_end();
        if expr.is_empty() {
            return None;
        }
        Some((&i[last + 2..], expr.to_string()))
    }

    fn bundle<'a>(&self, start: &'a str, i: &'a str) -> Res<'a, Bundle> {
        let pos = self.pos(start);
        let (mut i, (kind, name, args)) = self.header(i, "bundle")?;
        let mut sections: Vec<Section> = Vec::new();
        let mut guard = String::from("any");
        loop {
            i = ws(i)?.0;
            if let Some(r) = i.strip_prefix('}') {
                i = r;
                break;
            }
            if i.is_empty() {
                return fail(i, "expected '}' closing the bundle");
            }
            if let Some((r, g)) = self.class_guard(i) {
                if spaced_class_names(&g) {
                    return fail(i, "class names can't be separated by whitespace without an intervening operator");
                }
                if sections.is_empty() {
                    return fail(
                        i,
                        "expected a promise type (like 'vars:') before a class guard",
                    );
                }
                guard = g;
                i = r;
                continue;
            }
            // promise type `[a-zA-Z_]+:` not followed by ':'
            if let Ok((r, t)) =
                take_while1::<_, _, PErr>(|c: char| c.is_ascii_alphabetic() || c == '_')(i)
            {
                if r.starts_with(':') && !r.starts_with("::") {
                    sections.push(Section {
                        promise_type: t.to_string(),
                        promises: Vec::new(),
                        pos: self.pos(i),
                    });
                    guard = String::from("any");
                    i = &r[1..];
                    continue;
                }
            }
            if i.starts_with(['"', '\'', '`']) {
                let Some(sec) = sections.last_mut() else {
                    return fail(
                        i,
                        "expected a promise type (like 'vars:') before the first promise",
                    );
                };
                let (r, p) = self.promise(i, &guard)?;
                sec.promises.push(p);
                i = r;
                continue;
            }
            return fail(
                i,
                "expected a promise type, a class guard, a quoted promiser or '}'",
            );
        }
        Ok((
            i,
            Bundle {
                kind,
                name,
                namespace: self.namespace.clone(),
                args,
                sections,
                pos,
            },
        ))
    }

    fn promise<'a>(&self, i: &'a str, guard: &str) -> Res<'a, Promise> {
        let pos = self.pos(i);
        let (i, promiser) = qstring(i)?;
        let (mut i, _) = ws(i)?;
        let mut promisee = None;
        if let Some(r) = i.strip_prefix("->") {
            let (r, _) = ws(r)?;
            let (r, v) = self.rval(r, 0)?;
            promisee = Some(v);
            i = ws(r)?.0;
        }
        let mut constraints = Vec::new();
        loop {
            if let Some(r) = i.strip_prefix(';') {
                i = r;
                break;
            }
            let (r, c) = self.constraint(
                i,
                "any",
                "expected an attribute name or ';' ending the promise",
            )?;
            constraints.push(c);
            i = ws(r)?.0;
            if let Some(r) = i.strip_prefix(',') {
                i = ws(r)?.0;
            } else if !i.starts_with(';') {
                return fail(i, "expected ',' or ';' after the attribute value");
            }
        }
        Ok((
            i,
            Promise {
                promiser,
                promisee,
                guard: guard.to_string(),
                constraints,
                pos,
            },
        ))
    }

    fn constraint<'a>(&self, i: &'a str, guard: &str, what: &'static str) -> Res<'a, Constraint> {
        let pos = self.pos(i);
        let (r, lval) =
            take_while1::<_, _, PErr>(|c: char| c.is_ascii_alphanumeric() || c == '_')(i)
                .or_else(|_| fail(i, what))?;
        let (r, _) = ws(r)?;
        let (r, _) = tag::<_, _, PErr>("=>")(r)
            .or_else(|_| fail(r, format!("expected '=>' after attribute '{lval}'")))?;
        let (r, _) = ws(r)?;
        let (r, rval) = self.rval(r, 0)?;
        Ok((
            r,
            Constraint {
                lval: lval.to_string(),
                rval,
                guard: guard.to_string(),
                pos,
            },
        ))
    }

    fn body<'a>(&self, start: &'a str, i: &'a str, what: &'static str) -> Res<'a, Body> {
        let pos = self.pos(start);
        let (mut i, (kind, name, args)) = self.header(i, what)?;
        let mut attrs = Vec::new();
        let mut guard = String::from("any");
        loop {
            i = ws(i)?.0;
            if let Some(r) = i.strip_prefix('}') {
                i = r;
                break;
            }
            if i.is_empty() {
                return fail(i, "expected '}' closing the body");
            }
            if let Some((r, g)) = self.class_guard(i) {
                if spaced_class_names(&g) {
                    return fail(i, "class names can't be separated by whitespace without an intervening operator");
                }
                guard = g;
                i = r;
                continue;
            }
            let (r, c) = self.constraint(
                i,
                &guard,
                "expected an attribute name, a class guard or '}'",
            )?;
            attrs.push(c);
            let (r, _) = ws(r)?;
            let (r, _) = char::<_, PErr>(';')(r)
                .or_else(|_| fail(r, "expected ';' after the attribute value"))?;
            i = r;
        }
        Ok((
            i,
            Body {
                kind,
                name,
                namespace: self.namespace.clone(),
                args,
                attrs,
                pos,
            },
        ))
    }

    fn rval<'a>(&self, i: &'a str, depth: usize) -> Res<'a, Rval> {
        if depth > MAX_NESTING {
            return fail(
                i,
                format!("lists or function calls nested deeper than {MAX_NESTING}"),
            );
        }
        if i.starts_with(['"', '\'', '`']) {
            let (r, s) = qstring(i)?;
            return Ok((r, Rval::Scalar(s)));
        }
        if i.starts_with(['$', '@']) {
            let (r, s) =
                nakedvar(i).or_else(|_| fail(i, "expected a variable reference like $(name)"))?;
            // `$(handler)(args)`: a call whose name is a variable
            if let Some(r3) = ws(r)?.0.strip_prefix('(') {
                let pos = self.pos(i);
                let (r, args) = self.items(r3, ')', depth)?;
                return Ok((r, Rval::Call(FnCall { name: s, args, pos })));
            }
            return Ok((r, Rval::Scalar(s)));
        }
        if let Some(r) = i.strip_prefix('{') {
            let (r, items) = self.items(r, '}', depth)?;
            return Ok((r, Rval::List(items)));
        }
        if let Ok((r, id)) = ident(i) {
            let (r2, _) = ws(r)?;
            if let Some(r3) = r2.strip_prefix('(') {
                let pos = self.pos(i);
                let (r, args) = self.items(r3, ')', depth)?;
                return Ok((
                    r,
                    Rval::Call(FnCall {
                        name: id.to_string(),
                        args,
                        pos,
                    }),
                ));
            }
            return Ok((r, Rval::Symbol(id.to_string())));
        }
        fail(
            i,
            "expected a value: a quoted string, a list, a variable or a function call",
        )
    }

    fn items<'a>(&self, i: &'a str, close: char, depth: usize) -> Res<'a, Vec<Rval>> {
        let mut out = Vec::new();
        let (mut i, _) = ws(i)?;
        loop {
            if let Some(r) = i.strip_prefix(close) {
                return Ok((r, out));
            }
            let (r, v) = self.rval(i, depth + 1)?;
            out.push(v);
            i = ws(r)?.0;
            if let Some(r) = i.strip_prefix(',') {
                i = ws(r)?.0;
            } else if !i.starts_with(close) {
                return fail(i, format!("expected ',' or '{close}'"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bundles_bodies_and_guards() {
        let src = r#"
# comment
body common control { bundlesequence => { "main", @(x.y) }; inputs => { "a.cf" }; }
bundle agent main(a, b)
{
  vars:
      "x" string => "y\"z", comment => 'it\'s';
    linux.!windows::
      "l" slist => { "a", "b", }, if => and(not("x"), strcmp("$(a)", "b"));
    "DEBUG|DEBUG_$(this.bundle)"::
      "z" -> { "p" } string => `multi
line`;
  files:
      "/tmp/x" copy_from => secure_cp("$(a)", ${b}), perms => m(600);
      "/tmp/y";
}
body copy_from secure_cp(from, server)
{
  source => "$(from)";
  !foo::
   servers => { "$(server)" };
}
promise agent git { path => "/usr/bin/git"; }
"#;
        let f = parse_policy("t.cf", src).unwrap();
        assert_eq!(f.blocks.len(), 4);
        let Block::Bundle(b) = &f.blocks[1] else {
            panic!()
        };
        assert_eq!(b.args, vec!["a", "b"]);
        assert_eq!(
            b.sections[0].promises[0].constraints[0].rval,
            Rval::Scalar("y\"z".into())
        );
        assert_eq!(b.sections[0].promises[1].guard, "linux.!windows");
        assert_eq!(
            b.sections[0].promises[2].guard,
            "DEBUG|DEBUG_$(this.bundle)"
        );
        assert_eq!(
            b.sections[0].promises[2].constraints[0].rval,
            Rval::Scalar("multi\nline".into())
        );
        assert_eq!(b.sections[1].promises.len(), 2);
        let Block::Body(body) = &f.blocks[2] else {
            panic!()
        };
        assert_eq!(body.attrs[1].guard, "!foo");
    }

    #[test]
    fn escapes_follow_cfengine() {
        let f = parse_policy(
            "t.cf",
            r#"bundle common x { vars: "a" string => "q\\w\.e\"\
r"; }"#,
        )
        .unwrap();
        let Block::Bundle(b) = &f.blocks[0] else {
            panic!()
        };
        assert_eq!(
            b.sections[0].promises[0].constraints[0].rval,
            Rval::Scalar("q\\w\\.e\"r".into())
        );
    }

    #[test]
    fn reports_position_and_expectation() {
        let e = parse_policy(
            "p.cf",
            "bundle agent x\n{\n vars:\n  \"a\" string => \"b\"\n}\n",
        )
        .unwrap_err();
        assert_eq!((e.line, e.col), (5, 1));
        assert!(e.expected.contains("',' or ';'"), "{e}");
        assert!(e.to_string().starts_with("p.cf:5:1: "));
        let e = parse_policy("p.cf", "bundle agent x { \"a\"; }").unwrap_err();
        assert!(e.expected.contains("promise type"), "{e}");
        let e = parse_policy("p.cf", "bundle agent x { vars: \"a\" string => \"b; }").unwrap_err();
        assert!(e.expected.contains("runaway"), "{e}");
        let e = parse_policy("p.cf", "bundel agent x {}").unwrap_err();
        assert_eq!((e.line, e.col), (1, 1));
    }

    #[test]
    fn spaced_class_names_are_an_error() {
        let e = parse_policy(
            "c.cf",
            "bundle agent x { vars:\n linux windows::\n \"a\" string => \"b\"; }",
        )
        .unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.expected.contains("whitespace"), "{e}");
        assert!(parse_policy(
            "c.cf",
            "bundle agent x { vars:\n linux | windows::\n \"a\" string => \"b\"; }"
        )
        .is_ok());
    }

    #[test]
    fn macros_hide_text_and_keep_lines() {
        let src = "@if minimum_version(3.99)\nthis is not policy\n@else\nbundle agent a { }\n@endif\nbundle agent b { vars: \"x\" string => \"y\" }\n";
        let e = parse_policy("m.cf", src).unwrap_err();
        assert_eq!(e.line, 6);
        let ok = "@if minimum_version(3.18)\nbundle agent a { }\n@endif\n";
        assert_eq!(parse_policy("m.cf", ok).unwrap().blocks.len(), 1);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut s = String::from("bundle agent x { vars: \"a\" slist => ");
        for _ in 0..100_000 {
            s.push('{');
        }
        let e = parse_policy("d.cf", &s).unwrap_err();
        assert!(e.expected.contains("nested"), "{e}");
        let mut s = String::from("bundle agent x { vars: \"a\" string => ");
        for _ in 0..10_000 {
            s.push_str("f(");
        }
        assert!(parse_policy("d.cf", &s).is_err());
    }

    #[quickcheck_macros::quickcheck]
    fn never_panics(s: String) -> bool {
        let _ = parse_policy("q.cf", &s);
        let _ = parse_policy("q.cf", &format!("bundle agent x {{ vars: {s} }}"));
        true
    }
}
