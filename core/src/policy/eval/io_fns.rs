//! Functions that ask the outside world, through [`PolicySource`] (the
//! adapter answers; core never touches files or the network): `readfile`,
//! `readstringlist`, `filestat`, `host2ip`, `execresult`, `returnszero`
//! (commands run by the adapter, once per load); and functions of the host's
//! state rcf already holds: `iprange` (the discovered addresses),
//! `classesmatching` (the classes), plus `format` (3.21's printf subset).
//! Each follows 3.21.0's `evalfunction.c`; a source that cannot answer,
//! or an argument rcf does not convert as 3.21 would, makes the call
//! unknown.
//!
//! [`PolicySource`]: crate::policy::PolicySource

use super::{Eval, Here, Tri, Value};
use crate::policy::ast::FnCall;
use crate::policy::{addr, Capture, ExecOutcome, ExecRequest, FileStat};

/// `RlistFromSplitRegex`: pieces of `text` between matches of `re`, at
/// most `max` of them (then the rest is dropped); an empty match ends the
/// split; blank pieces are kept only with `allow_blanks`.
pub(crate) fn split_regex(text: &str, re: &str, max: usize, allow_blanks: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut sp = text;
    if let Some(rx) = addr::compile(re) {
        while out.len() < max {
            let Ok(Some(m)) = rx.find(sp) else { break };
            if m.end() == 0 {
                break;
            }
            let piece = &sp[..m.start()];
            if allow_blanks || !piece.is_empty() {
                out.push(piece.to_string());
            }
            sp = &sp[m.end()..];
        }
    }
    if out.len() < max && ((allow_blanks && sp.len() != text.len()) || !sp.is_empty()) {
        out.push(sp.to_string());
    }
    out
}

/// `IntFromString` for the sizes and counts these functions take: plain
/// digits, or `inf` (`None` for anything rcf does not convert).
fn int_arg(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "inf" {
        return Some(i64::from(i32::MAX) - 1);
    }
    s.parse().ok()
}

/// `CfReadFile`'s post-processing: a text whose only newline is its last
/// character loses it (seen with the real cf-promises: `"abc\n"` becomes
/// `abc`, `"abc\n\n"` and `"a\nb\n"` stay).
fn strip_single_newline(mut s: String) -> String {
    if s.ends_with('\n') && s.matches('\n').count() == 1 {
        s.pop();
    }
    s
}

impl Eval<'_> {
    /// `CfReadFile(path, maxsize)`: up to `max` bytes (0: all), as a C
    /// string (up to the first NUL). `Err(true)` when 3.21 fails too (no
    /// such file), `Err(false)` when rcf cannot read what exists (unknown).
    fn read_file(&self, path: &str, max: usize) -> Result<String, bool> {
        match self.src.read(path) {
            Ok(mut b) => {
                if max > 0 {
                    b.truncate(max);
                }
                if let Some(n) = b.iter().position(|&x| x == 0) {
                    b.truncate(n);
                }
                Ok(strip_single_newline(
                    String::from_utf8_lossy(&b).into_owned(),
                ))
            }
            Err(_) => Err(!self.src.exists(path)),
        }
    }

    /// A size or count argument, unknown when rcf does not convert it.
    fn int_param(&mut self, c: &FnCall, i: usize, h: &Here, depth: usize) -> Option<i64> {
        let s = self.scalar_arg(c, i, h, depth)?;
        let v = int_arg(&s);
        if v.is_none() {
            self.hit_unknown(format!(
                "{}() argument '{s}', a number rcf does not convert",
                c.name
            ));
        }
        v
    }

    /// The I/O and host-state functions. `None` when `name` is not one;
    /// `Some(result)` otherwise.
    pub(super) fn call_io(
        &mut self,
        name: &str,
        c: &FnCall,
        h: &Here,
        depth: usize,
    ) -> Option<Option<Value>> {
        let argc = c.args.len();
        Some(match name {
            "readfile" if argc == 1 || argc == 2 => {
                let path = self.scalar_arg(c, 0, h, depth)?;
                let max = if argc == 2 {
                    self.int_param(c, 1, h, depth)?
                } else {
                    0
                };
                if max < 0 {
                    self.warn(
                        h,
                        format!("readfile(): requested max size {max} is less than 0"),
                    );
                    return Some(None);
                }
                match self.read_file(&path, usize::try_from(max).unwrap_or(usize::MAX)) {
                    Ok(s) => Some(Value::Scalar(s)),
                    Err(true) => None,
                    Err(false) => {
                        self.hit_unknown(format!("readfile('{path}'), which rcf could not read"));
                        None
                    }
                }
            }
            "readstringlist" if argc == 5 => {
                let path = self.scalar_arg(c, 0, h, depth)?;
                let comment = self.scalar_arg(c, 1, h, depth)?;
                let split = self.scalar_arg(c, 2, h, depth)?;
                let maxent = self.int_param(c, 3, h, depth)?;
                let maxsize = self.int_param(c, 4, h, depth)?;
                let text = match self.read_file(&path, usize::try_from(maxsize).unwrap_or(0)) {
                    Ok(s) => s,
                    Err(true) => return Some(None),
                    Err(false) => {
                        self.hit_unknown(format!(
                            "readstringlist('{path}'), which rcf could not read"
                        ));
                        return Some(None);
                    }
                };
                let text = self.strip_patterns(text, &comment);
                let max = usize::try_from(maxent).unwrap_or(0);
                Some(Value::List(split_regex(&text, &split, max, false)))
            }
            "filestat" if argc == 2 => {
                let path = self.scalar_arg(c, 0, h, depth)?;
                let field = self.scalar_arg(c, 1, h, depth)?;
                let st = match self.src.lstat(&path) {
                    Some(Ok(st)) => st,
                    Some(Err(_)) => return Some(None),
                    None => {
                        self.hit_unknown(format!(
                            "filestat('{path}'): no file information available"
                        ));
                        return Some(None);
                    }
                };
                match stat_field(&st, &path, &field) {
                    Some(v) => Some(Value::Scalar(v)),
                    None => {
                        self.hit_unknown(format!(
                            "filestat() field '{field}', which rcf does not report"
                        ));
                        None
                    }
                }
            }
            "host2ip" if argc == 1 => {
                let host = self.scalar_arg(c, 0, h, depth)?;
                match self.src.host_to_ip(&host) {
                    // an unresolvable name is returned as it is (3.21's legacy behaviour)
                    Some(ip) => Some(Value::Scalar(ip.unwrap_or(host))),
                    None => {
                        self.hit_unknown(format!("host2ip('{host}'): no resolver available"));
                        None
                    }
                }
            }
            "execresult" if argc == 2 || argc == 3 => {
                let cmd = self.scalar_arg(c, 0, h, depth)?;
                let shell = self.scalar_arg(c, 1, h, depth)?;
                let capture = match (argc == 3).then(|| self.scalar_arg(c, 2, h, depth)) {
                    None => Capture::Both,
                    Some(o) => match o?.as_str() {
                        "both" => Capture::Both,
                        "stdout" => Capture::Stdout,
                        other => {
                            self.hit_unknown(format!(
                                "execresult() output '{other}', which rcf does not capture"
                            ));
                            return Some(None);
                        }
                    },
                };
                let Exec::Run(req) = self.exec_request(&c.name, &cmd, &shell, h) else {
                    return Some(None);
                };
                let out = self.run(&c.name, &req, capture, &cmd)?;
                Some(Value::Scalar(exec_output(&out.output)))
            }
            "returnszero" if argc == 2 => {
                let cmd = self.scalar_arg(c, 0, h, depth)?;
                let shell = self.scalar_arg(c, 1, h, depth)?;
                let req = match self.exec_request(&c.name, &cmd, &shell, h) {
                    Exec::Run(req) => req,
                    // where execresult fails, returnszero is false
                    Exec::Refused => return Some(Self::class_tri(Tri::False)),
                    Exec::Unknown => return Some(None),
                };
                let out = self.run(&c.name, &req, Capture::Nothing, &cmd)?;
                // WEXITSTATUS(status) == 0: a command a signal ended reads as 0 too
                Self::class_tri(Tri::from_bool(out.code.unwrap_or(0) == 0))
            }
            "iprange" if argc >= 1 => {
                let range = self.scalar_arg(c, 0, h, depth)?;
                let mut ifaces = Vec::new();
                for i in 1..argc {
                    ifaces.push(super::canonify(&self.scalar_arg(c, i, h, depth)?));
                }
                let Some(t) = self.iprange(&range, &ifaces) else {
                    return Some(None);
                };
                Self::class_tri(t)
            }
            "classesmatching" if argc >= 1 => {
                let re = self.scalar_arg(c, 0, h, depth)?;
                if argc > 1 {
                    self.hit_unknown("classesmatching() with tags, which rcf does not keep".into());
                    return Some(None);
                }
                let Some(rx) = addr::compile(&re) else {
                    self.warn(
                        h,
                        format!("classesmatching(): invalid regular expression '{re}'"),
                    );
                    return Some(None);
                };
                let m = |k: &str| addr::full_match(&rx, k);
                let undecided = self.unknown_classes.iter().any(|k| m(k))
                    || self
                        .unknown_local_classes
                        .iter()
                        .any(|(s, k)| *s == h.scope && m(k));
                if undecided || !self.opts.hard_classes_discovered {
                    self.hit_unknown(format!(
                        "classesmatching('{re}') over classes rcf has not decided"
                    ));
                    return Some(None);
                }
                let mut out: Vec<String> = self.classes.iter().filter(|k| m(k)).cloned().collect();
                for (s, k) in &self.local_classes {
                    if *s == h.scope && m(k) && !out.contains(k) {
                        out.push(k.clone());
                    }
                }
                Some(Value::List(out))
            }
            "format" if argc >= 1 => {
                let fmt = self.scalar_arg(c, 0, h, depth)?;
                let mut args = Vec::new();
                for i in 1..argc {
                    args.push(self.scalar_arg(c, i, h, depth)?);
                }
                match self.format(&fmt, &args, h) {
                    Ok(s) => s.map(Value::Scalar),
                    Err(why) => {
                        self.hit_unknown(format!("format('{fmt}'): {why}"));
                        None
                    }
                }
            }
            _ => return None,
        })
    }

    /// The checks `FnCallExecResult`/`FnCallReturnsZero` make before
    /// running `cmd`: `useshell` runs anything through `/bin/sh -c`;
    /// otherwise the command must be an absolute path to an executable
    /// file, split as `ArgSplitCommand` does.
    fn exec_request(&mut self, fname: &str, cmd: &str, shell: &str, h: &Here) -> Exec {
        match shell {
            "useshell" => return Exec::Run(ExecRequest::Shell(cmd.to_string())),
            "powershell" => {
                self.warn(
                    h,
                    "execresult()/returnszero(): Powershell is only supported on Windows".into(),
                );
                return Exec::Refused;
            }
            _ => {}
        }
        if !cmd.starts_with('/') {
            self.warn(h, format!("'{cmd}' does not have an absolute path"));
            return Exec::Refused;
        }
        let arg0 = command_arg0(cmd);
        match self.src.is_executable(&arg0) {
            Some(true) => Exec::Run(ExecRequest::Argv(arg_split_command(cmd))),
            Some(false) => {
                self.warn(h, format!("'{cmd}' is assumed to be executable but isn't"));
                Exec::Refused
            }
            None => {
                self.hit_unknown(format!(
                    "function '{fname}' running '{cmd}', which this policy source cannot run"
                ));
                Exec::Unknown
            }
        }
    }

    /// Runs `req`; `None`, with the construct recorded, when the adapter
    /// could not run it (3.21's cache, [`Self::call_cached`], makes this
    /// happen once per argument list and load).
    fn run(
        &mut self,
        fname: &str,
        req: &ExecRequest,
        capture: Capture,
        cmd: &str,
    ) -> Option<ExecOutcome> {
        match self.src.execute(req, capture) {
            Some(Ok(o)) => Some(o),
            Some(Err(_)) | None => {
                self.hit_unknown(format!(
                    "function '{fname}' running '{cmd}', which rcf could not run to its end"
                ));
                None
            }
        }
    }

    /// 3.21's cached functions (`FNCALL_OPTION_CACHED`): a call whose
    /// expanded arguments were seen before returns the earlier result,
    /// *whatever function produced it* (3.21 keys its cache by arguments
    /// only: seen live, `returnszero("/bin/false", "noshell")` after
    /// `execresult("/bin/false", "noshell")` returns that empty output, an
    /// empty class expression). Failures are not cached; results rcf
    /// could not evaluate poison their key. `None` when `name` is not cached.
    pub(super) fn call_cached(
        &mut self,
        name: &str,
        c: &FnCall,
        h: &Here,
        depth: usize,
    ) -> Option<Option<Value>> {
        const CACHED: &[&str] = &[
            "execresult",
            "execresult_as_data",
            "findprocesses",
            "host2ip",
            "ip2host",
            "hubknowledge",
            "ldaplist",
            "ldapvalue",
            "processexists",
            "readtcp",
            "regldap",
            "remotescalar",
            "returnszero",
        ];
        if !CACHED.contains(&name) {
            return None;
        }
        let implemented = matches!(name, "execresult" | "returnszero" | "host2ip");
        let unsupported = |ev: &Self| {
            ev.hit_unknown(format!(
                "function '{}' with {} argument(s), which rcf does not support",
                c.name,
                c.args.len()
            ))
        };
        let before = self.unknown_hits.borrow().len();
        let mut args = Vec::new();
        for i in 0..c.args.len() {
            match self.scalar_arg(c, i, h, depth) {
                Some(a) => args.push(a),
                // unexpanded arguments: an implemented call fails (or is
                // unknown) as it would uncached
                None => {
                    if !implemented {
                        unsupported(self);
                    }
                    return Some(None);
                }
            }
        }
        match self.fn_cache.get(&args) {
            Some(Some(v)) => return Some(Some(v.clone())),
            Some(None) => {
                self.hit_unknown(format!(
                    "function '{name}' whose arguments match an earlier call rcf could not evaluate (3.21 returns that cached result)"
                ));
                return Some(None);
            }
            None => {}
        }
        let r = match self.call_io(name, c, h, depth) {
            Some(r) if implemented => r,
            _ => {
                unsupported(self);
                None
            }
        };
        match &r {
            Some(v) => {
                self.fn_cache.insert(args, Some(v.clone()));
            }
            None if self.unknown_hits.borrow().len() > before => {
                self.fn_cache.insert(args, None);
            }
            None => {}
        }
        Some(r)
    }

    /// `StripPatterns`: removes each match of `pattern` (first match
    /// first, again and again) until none is left or one is empty.
    fn strip_patterns(&self, mut text: String, pattern: &str) -> String {
        if pattern.is_empty() {
            return text;
        }
        let Some(rx) = addr::compile(pattern) else {
            return text;
        };
        let original = text.len();
        let mut count = 0;
        while let Ok(Some(m)) = rx.find(&text) {
            let (s, e) = (m.start(), m.end());
            text.replace_range(s..e, "");
            if s == e {
                break;
            }
            count += 1;
            if count > original {
                break;
            }
        }
        text
    }

    /// `iprange(range, ifaces...)` over the discovered addresses
    /// (`sys.ip_addresses`, interfaces from `sys.ip2iface`); unknown
    /// without discovery, for IPv6 ranges, and for a range rcf cannot parse.
    fn iprange(&self, range: &str, ifaces: &[String]) -> Option<Tri> {
        let ips = match self.opts.sys.get("ip_addresses") {
            Some(Value::List(l)) if self.opts.hard_classes_discovered => l.clone(),
            _ => {
                self.hit_unknown(format!(
                    "iprange('{range}') without the host's discovered addresses"
                ));
                return None;
            }
        };
        if range.contains(':') || addr::rule_problem(range).is_some() {
            self.hit_unknown(format!("iprange('{range}'), a range rcf does not evaluate"));
            return None;
        }
        for ip in ips.iter().filter(|ip| !ip.contains(':')) {
            if !addr::fuzzy_set_match(range, ip) {
                continue;
            }
            if ifaces.is_empty() {
                return Some(Tri::True);
            }
            let iface = match self.opts.sys.get(&format!("ip2iface[{ip}]")) {
                Some(Value::Scalar(i)) => i.clone(),
                _ => continue,
            };
            if ifaces.contains(&iface) {
                return Some(Tri::True);
            }
        }
        Some(Tri::False)
    }

    /// `FnCallFormat`: `Ok(None)` when 3.21's function fails, `Err` when rcf
    /// cannot reproduce a conversion.
    fn format(&self, fmt: &str, args: &[String], h: &Here) -> Result<Option<String>, String> {
        let Some(first) = fmt.find('%') else {
            return Ok(Some(fmt.to_string()));
        };
        let mut out = fmt[..first].to_string();
        let mut rest = &fmt[first..];
        let mut args = args.iter();
        const CONV: &str = "diouxXeEfFgGaAcsCSpnm";
        // ^(%%|%[^CONV%]*?[CONV])([^%]*)(.*)$
        while let Some(after) = rest.strip_prefix('%') {
            let piece_len = if after.starts_with('%') {
                Some(2)
            } else {
                after
                    .char_indices()
                    .find(|&(_, ch)| CONV.contains(ch) || ch == '%')
                    .filter(|&(_, ch)| ch != '%')
                    .map(|(i, ch)| 1 + i + ch.len_utf8())
            };
            let Some(plen) = piece_len else { break };
            let piece = &rest[..plen];
            let tail = &rest[plen..];
            let text_len = tail.find('%').unwrap_or(tail.len());
            if piece == "%%" {
                out.push('%');
            } else {
                let Some(data) = args.next() else {
                    return Ok(None);
                };
                if piece.contains(['h', 'L', 'q', 'j', 'z', 't']) {
                    return Ok(None);
                }
                let spec = Spec::parse(piece).ok_or("a format specifier rcf does not reproduce")?;
                if piece.contains(['d', 'o', 'x']) {
                    let x = scan_long(data);
                    out.push_str(&spec.int(x, piece)?);
                } else if piece.contains('f') {
                    out.push_str(&spec.real(scan_double(data), piece)?);
                } else if piece.contains('s') {
                    out.push_str(&spec.string(data));
                } else if piece.contains('S') {
                    let v = match self.lookup(data, h) {
                        Some(Value::Data(j)) => j.to_compact(),
                        Some(Value::List(l)) => {
                            let items: Vec<String> = l
                                .iter()
                                .map(|x| format!("\"{}\"", x.replace('"', "\\\"")))
                                .collect();
                            format!("{{ {} }}", items.join(", "))
                        }
                        _ => return Ok(None),
                    };
                    out.push_str(&spec.string(&v));
                } else {
                    out.push_str("(unhandled format)");
                }
            }
            out.push_str(&tail[..text_len]);
            rest = &tail[text_len..];
        }
        Ok(Some(out))
    }
}

/// Whether and how a command is run.
enum Exec {
    /// Run this.
    Run(ExecRequest),
    /// 3.21 does not run it (execresult fails, returnszero is false).
    Refused,
    /// rcf cannot tell (recorded as unknown).
    Unknown,
}

/// `CommandArg0`: up to the first space, or between a leading pair of
/// double quotes.
fn command_arg0(cmd: &str) -> String {
    let (start, delim) = match cmd.strip_prefix('"') {
        Some(rest) => (rest, '"'),
        None => (cmd, ' '),
    };
    start.split(delim).next().unwrap_or("").to_string()
}

/// `ArgSplitCommand`: words split on whitespace; `"`, `'` and a backquote
/// quote a word (up to the same character; an unclosed quote takes the rest).
fn arg_split_command(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = cmd;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}');
        let Some(first) = rest.chars().next() else {
            break;
        };
        if matches!(first, '"' | '\'' | '`') {
            let body = &rest[1..];
            match body.find(first) {
                Some(end) => {
                    out.push(body[..end].to_string());
                    rest = &body[end + 1..];
                }
                None => {
                    out.push(body.to_string());
                    rest = "";
                }
            }
        } else {
            let end = rest
                .find([' ', '\u{c}', '\n', '\r', '\t', '\u{b}'])
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

/// `GetExecOutput`: each line (up to a newline) followed by a newline,
/// then `Chop` (trailing whitespace removed); empty output stays empty.
/// Output ends at a NUL, as 3.21's C strings do.
fn exec_output(raw: &[u8]) -> String {
    let raw = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
    let text = String::from_utf8_lossy(raw);
    if text.is_empty() {
        return String::new();
    }
    let mut s = String::with_capacity(text.len() + 1);
    for line in text.split_inclusive('\n') {
        s.push_str(line.strip_suffix('\n').unwrap_or(line));
        s.push('\n');
    }
    s.truncate(
        s.trim_end_matches(|c: char| c.is_ascii_whitespace() || c == '\u{b}')
            .len(),
    );
    s
}

/// `sscanf(data, "%ld")`: optional blanks, sign and digits; 0 when none.
fn scan_long(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = d.chars().take_while(char::is_ascii_digit).collect();
    let v: i64 = digits
        .parse()
        .unwrap_or(if digits.is_empty() { 0 } else { i64::MAX });
    if neg {
        v.wrapping_neg()
    } else {
        v
    }
}

/// `sscanf(data, "%lf")` for plain decimals; 0 when there is none.
fn scan_double(s: &str) -> f64 {
    let t = s.trim_start();
    let end = t
        .char_indices()
        .take_while(|&(i, ch)| {
            ch.is_ascii_digit() || ch == '.' || (i == 0 && (ch == '-' || ch == '+'))
        })
        .last()
        .map_or(0, |(i, ch)| i + ch.len_utf8());
    t[..end].parse().unwrap_or(0.0)
}

/// One printf conversion: flags, width, precision (no `*`).
#[derive(Clone, Copy)]
struct Spec {
    left: bool,
    zero: bool,
    plus: bool,
    space: bool,
    alt: bool,
    width: usize,
    prec: Option<usize>,
}

impl Spec {
    fn parse(piece: &str) -> Option<Spec> {
        let b = piece.as_bytes();
        let mut i = 1;
        let mut s = Spec {
            left: false,
            zero: false,
            plus: false,
            space: false,
            alt: false,
            width: 0,
            prec: None,
        };
        while i < b.len() {
            match b[i] {
                b'-' => s.left = true,
                b'0' => s.zero = true,
                b'+' => s.plus = true,
                b' ' => s.space = true,
                b'#' => s.alt = true,
                _ => break,
            }
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        s.width = piece[start..i].parse().unwrap_or(0);
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let ps = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            s.prec = Some(piece[ps..i].parse().unwrap_or(0));
        }
        // an optional `l` (numbers only), then exactly the conversion letter
        if i + 1 < b.len() && b[i] == b'l' && matches!(b[i + 1], b'd' | b'o' | b'x' | b'f') {
            i += 1;
        }
        (i + 1 == b.len() && s.width < 4096 && s.prec.is_none_or(|p| p < 4096)).then_some(s)
    }

    fn pad(&self, body: String, sign_len: usize) -> String {
        let len = body.chars().count();
        if len >= self.width {
            return body;
        }
        let fill = self.width - len;
        if self.left {
            format!("{body}{}", " ".repeat(fill))
        } else if self.zero {
            let (sign, digits) = body.split_at(sign_len);
            format!("{sign}{}{digits}", "0".repeat(fill))
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }

    fn int(&self, x: i64, piece: &str) -> Result<String, String> {
        let conv = piece.chars().last().unwrap_or('d');
        let (sign, mut digits) = match conv {
            'd' => {
                let sign = if x < 0 {
                    "-"
                } else if self.plus {
                    "+"
                } else if self.space {
                    " "
                } else {
                    ""
                };
                (sign.to_string(), x.unsigned_abs().to_string())
            }
            'o' => (String::new(), format!("{:o}", x as u64)),
            'x' => (String::new(), format!("{:x}", x as u64)),
            _ => return Err(format!("conversion '{piece}'")),
        };
        if let Some(p) = self.prec {
            if p == 0 && x == 0 {
                digits.clear();
            }
            while digits.len() < p {
                digits.insert(0, '0');
            }
        }
        let prefix = match conv {
            'x' if self.alt && x != 0 => "0x",
            'o' if self.alt && !digits.starts_with('0') => "0",
            _ => "",
        };
        let sign = format!("{sign}{prefix}");
        let zero_ok = self.prec.is_none();
        let s = Spec {
            zero: self.zero && zero_ok && !self.left,
            ..*self
        };
        Ok(s.pad(format!("{sign}{digits}"), sign.len()))
    }

    fn real(&self, x: f64, piece: &str) -> Result<String, String> {
        if !piece.ends_with('f') || !x.is_finite() || self.alt {
            return Err(format!("conversion '{piece}'"));
        }
        // Rust prints the sign of -0.0 and of negatives rounding to zero, as C does
        let mut body = format!("{:.*}", self.prec.unwrap_or(6), x);
        if !body.starts_with('-') {
            if self.plus {
                body.insert(0, '+');
            } else if self.space {
                body.insert(0, ' ');
            }
        }
        let sign_len = usize::from(body.starts_with(['-', '+', ' ']));
        let s = Spec {
            zero: self.zero && !self.left,
            ..*self
        };
        Ok(s.pad(body, sign_len))
    }

    fn string(&self, data: &str) -> String {
        let body: String = match self.prec {
            Some(p) => {
                // precision counts bytes in C; stop at a char boundary
                let mut end = p.min(data.len());
                while !data.is_char_boundary(end) {
                    end -= 1;
                }
                data[..end].to_string()
            }
            None => data.to_string(),
        };
        Spec {
            zero: false,
            ..*self
        }
        .pad(body, 0)
    }
}

/// `filestat()`'s fields as 3.21 prints them; `None` for the ones rcf
/// does not report (xattr, linktarget, device numbers).
fn stat_field(st: &FileStat, path: &str, field: &str) -> Option<String> {
    let m = st.mode;
    Some(match field {
        "size" => st.size.to_string(),
        "gid" => st.gid.to_string(),
        "uid" => st.uid.to_string(),
        "ino" => st.ino.to_string(),
        "nlink" => st.nlink.to_string(),
        "ctime" => st.ctime.to_string(),
        "mtime" => st.mtime.to_string(),
        "atime" => st.atime.to_string(),
        "devno" => st.dev.to_string(),
        "mode" => m.to_string(),
        "modeoct" => format!("{m:o}"),
        "permoct" => format!("{:o}", m & 0o777),
        "permstr" => {
            let bit = |b: u32, ch: char| if m & b != 0 { ch } else { '-' };
            [
                if m & 0o170000 == 0o040000 { 'd' } else { '-' },
                bit(0o400, 'r'),
                bit(0o200, 'w'),
                bit(0o100, 'x'),
                bit(0o040, 'r'),
                bit(0o020, 'w'),
                bit(0o010, 'x'),
                bit(0o004, 'r'),
                bit(0o002, 'w'),
                bit(0o001, 'x'),
            ]
            .iter()
            .collect()
        }
        "type" => match m & 0o170000 {
            0o060000 => "block device",
            0o020000 => "character device",
            0o040000 => "directory",
            0o010000 => "FIFO/pipe",
            0o120000 => "symlink",
            0o100000 => "regular file",
            0o140000 => "socket",
            _ => "unknown",
        }
        .to_string(),
        "basename" => path.rsplit('/').next().unwrap_or(path).to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_as_rlist_from_split_regex() {
        // readstringlist (no blanks) and splitstring (blanks kept)
        assert_eq!(
            split_regex("\n10.0.0.1\n\n10.0.0.2 \n", "\n", 100, false),
            ["10.0.0.1", "10.0.0.2 "]
        );
        assert_eq!(split_regex("# c\n10.0.0.1", "\\s+", 2, false), ["#", "c"]);
        assert_eq!(split_regex(",x,,y", ",", 9, true), ["", "x", "", "y"]);
        assert_eq!(split_regex("", ",", 5, true), Vec::<String>::new());
    }

    #[test]
    fn commands_split_as_3_21() {
        assert_eq!(
            arg_split_command("/bin/echo hi  'a b' \"c\"d"),
            ["/bin/echo", "hi", "a b", "c", "d"]
        );
        assert_eq!(arg_split_command("/bin/x 'open"), ["/bin/x", "open"]);
        assert_eq!(command_arg0("\"/opt/my prog\" -x"), "/opt/my prog");
        assert_eq!(command_arg0("/bin/echo hi"), "/bin/echo");
        assert_eq!(exec_output(b"hi there\n"), "hi there");
        assert_eq!(exec_output(b"a\nb  \n\n"), "a\nb");
        assert_eq!(exec_output(b""), "");
    }

    #[test]
    fn single_trailing_newline() {
        assert_eq!(strip_single_newline("abc\n".into()), "abc");
        assert_eq!(strip_single_newline("abc\n\n".into()), "abc\n\n");
        assert_eq!(strip_single_newline("a\nb\n".into()), "a\nb\n");
    }

    #[test]
    fn printf_pieces() {
        let sp = |p: &str| Spec::parse(p).unwrap();
        // from the real cf-promises: format("%s-%d-%5s|%-4s|%03d|%x", ...)
        assert_eq!(sp("%d").int(42, "%d").unwrap(), "42");
        assert_eq!(sp("%5s").string("b"), "    b");
        assert_eq!(sp("%-4s").string("c"), "c   ");
        assert_eq!(sp("%03d").int(7, "%03d").unwrap(), "007");
        assert_eq!(sp("%x").int(255, "%x").unwrap(), "ff");
        assert_eq!(sp("%.2f").real(1.5, "%.2f").unwrap(), "1.50");
        assert_eq!(sp("%+5d").int(-3, "%+5d").unwrap(), "   -3");
        assert_eq!(scan_long(" 12abc"), 12);
        assert_eq!(scan_long("abc"), 0);
        assert!(Spec::parse("%*d").is_none());
    }

    #[test]
    fn filestat_fields() {
        let st = FileStat {
            mode: 0o100640,
            size: 27,
            ..Default::default()
        };
        assert_eq!(stat_field(&st, "/x/list", "permoct").unwrap(), "640");
        assert_eq!(stat_field(&st, "/x/list", "modeoct").unwrap(), "100640");
        assert_eq!(stat_field(&st, "/x/list", "permstr").unwrap(), "-rw-r-----");
        assert_eq!(stat_field(&st, "/x/list", "type").unwrap(), "regular file");
        assert_eq!(stat_field(&st, "/x/list", "basename").unwrap(), "list");
        assert!(stat_field(&st, "/x/list", "xattr").is_none());
    }
}

/// 3.21's argument-keyed cache through a whole load, with a source that
/// "runs" commands in memory and counts the runs.
#[cfg(test)]
mod cache_tests {
    use crate::policy::{
        load, Canon, Capture, ExecOutcome, ExecRequest, LoadOptions, PolicySource,
    };
    use std::cell::Cell;

    struct Runs {
        policy: &'static str,
        runs: Cell<u32>,
    }

    impl PolicySource for Runs {
        fn read(&self, path: &str) -> Result<Vec<u8>, String> {
            (path == "/p.cf")
                .then(|| self.policy.as_bytes().to_vec())
                .ok_or_else(|| "no such file".into())
        }
        fn canonicalize(&self, _: &str) -> Canon {
            Canon::Missing
        }
        fn exists(&self, _: &str) -> bool {
            false
        }
        fn is_executable(&self, path: &str) -> Option<bool> {
            Some(path == "/bin/x")
        }
        fn execute(&self, _: &ExecRequest, _: Capture) -> Option<Result<ExecOutcome, String>> {
            self.runs.set(self.runs.get() + 1);
            Some(Ok(ExecOutcome {
                code: Some(1),
                output: b"(  \n".to_vec(),
            }))
        }
    }

    #[test]
    fn cached_by_arguments_whatever_the_function() {
        let src = Runs {
            policy: r#"
bundle common g
{
  vars:
    "a" string => execresult("/bin/x", "noshell");
    "b" string => execresult("/bin/x", "noshell");
  classes:
    "c" expression => returnszero("/bin/x", "noshell");
    "d" expression => returnszero("/bin/x", "useshell");
}
"#,
            runs: Cell::new(0),
        };
        let opts = LoadOptions {
            file: "/p.cf".into(),
            hard_classes_discovered: true,
            ..Default::default()
        };
        let p = load(&src, &opts).unwrap_or_else(|e| panic!("{e}"));
        // one run for ("/bin/x", "noshell") (three evaluation passes, two
        // functions), one for ("/bin/x", "useshell")
        assert_eq!(src.runs.get(), 2);
        // returnszero with execresult's arguments got its output: not a class expression
        assert!(
            p.warnings
                .iter()
                .any(|w| w.message.contains("malformed class expression '('")),
            "{:#?}",
            p.warnings
        );
    }
}
