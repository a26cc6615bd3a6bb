//! Address and regex matching exactly as cf-serverd 3.21 does it
//! (SEMANTICS.md A.2): `FuzzySetMatch`, `IsRegex`, `StringMatchFull` and
//! `IsMatchItemIn`.

use fancy_regex::RegexBuilder;

/// A compiled policy regex. `fancy-regex` (memory-safe, no C) gives the
/// PCRE features 3.21's policies use that the `regex` crate lacks:
/// look-ahead, look-behind, back-references, atomic groups; patterns
/// without them run on `regex`'s automata.
pub type Regex = fancy_regex::Regex;

/// Compiled-regex size ceiling, so a hostile policy cannot exhaust memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Backtracking steps one match may take (PCRE's default match limit is
/// 10 million; a match that exceeds it fails, as in 3.21).
const BACKTRACK_LIMIT: usize = 1_000_000;

fn build(pattern: &str) -> Result<Regex, String> {
    // CFEngine compiles with PCRE_MULTILINE | PCRE_DOTALL
    RegexBuilder::new(&format!("(?ms){pattern}"))
        .delegate_size_limit(REGEX_SIZE_LIMIT)
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// Compiles `pattern` the way CFEngine's PCRE calls do (MULTILINE, DOTALL,
/// case-sensitive). `None` when the pattern is invalid.
pub fn compile(pattern: &str) -> Option<Regex> {
    build(pattern).ok()
}

/// Compiled patterns of one load, so a pattern used in many rules (an
/// `@(def.acl)` list in every promise) is compiled once.
#[derive(Debug, Default)]
pub struct RegexCache(std::collections::BTreeMap<String, Option<Regex>>);

impl RegexCache {
    /// [`compile`], memoised. Regex clones share their program.
    pub fn get(&mut self, pattern: &str) -> Option<Regex> {
        if let Some(r) = self.0.get(pattern) {
            return r.clone();
        }
        let r = compile(pattern);
        self.0.insert(pattern.to_string(), r.clone());
        r
    }
}

/// Why a pattern did not compile, for load-time error messages.
pub fn compile_error(pattern: &str) -> Option<String> {
    match build(pattern) {
        Ok(_) => None,
        Err(e) => Some(
            e.lines()
                .last()
                .unwrap_or("invalid regex")
                .trim()
                .to_string(),
        ),
    }
}

/// libntech `StringMatchFull`: the *first* (leftmost) match must start at
/// 0 and end at the end of the string. Not the same as `^(?:re)$`: `a|ab`
/// does not fully match `ab`. A match that hits the backtracking limit
/// does not match (PCRE's match-limit error, which 3.21 treats as none).
pub fn full_match(re: &Regex, s: &str) -> bool {
    match re.find(s) {
        Ok(Some(m)) => m.start() == 0 && m.end() == s.len(),
        _ => false,
    }
}

/// Whether `re` matches anywhere in `s` (unanchored search, as
/// `StringMatch`); a backtracking-limit failure does not match.
pub fn search(re: &Regex, s: &str) -> bool {
    matches!(re.is_match(s), Ok(true))
}

/// [`full_match`] with compilation; invalid patterns never match.
pub fn full_match_str(pattern: &str, s: &str) -> bool {
    compile(pattern).is_some_and(|re| full_match(&re, s))
}

/// libpromises `IsRegex`: does the entry "look like" a regex? An unescaped
/// `*` or `+` not at the start, a `[...]` class, or `|` inside parentheses.
pub fn is_regex(s: &str) -> bool {
    #[derive(PartialEq)]
    enum Sp {
        Norm,
        NoRepeat,
        Literal,
    }
    let mut special = Sp::NoRepeat;
    let mut bracket = 0;
    let mut paren: i32 = 0;
    let mut ret = false;
    for (idx, c) in s.char_indices() {
        if special == Sp::Literal {
            special = Sp::Norm;
            continue;
        } else if c == '\\' {
            special = Sp::Literal;
            continue;
        } else if bracket > 0 && c != ']' {
            if c == '[' {
                return false;
            }
            continue;
        }
        match c {
            '^' => special = if idx == 0 { Sp::NoRepeat } else { Sp::Norm },
            '*' | '+' => {
                if special == Sp::NoRepeat {
                    return false;
                }
                special = Sp::NoRepeat;
                ret = true;
            }
            '[' => {
                special = Sp::Norm;
                bracket += 1;
                ret = true;
            }
            ']' => {
                if bracket == 0 {
                    return false;
                }
                bracket = 0;
                special = Sp::Norm;
            }
            '(' => {
                special = Sp::NoRepeat;
                paren += 1;
            }
            ')' => {
                special = Sp::Norm;
                paren -= 1;
                if paren < 0 {
                    return false;
                }
            }
            '|' => {
                special = Sp::NoRepeat;
                if paren > 0 {
                    ret = true;
                }
            }
            _ => special = Sp::Norm,
        }
    }
    if bracket != 0 || paren != 0 || special == Sp::Literal {
        return false;
    }
    ret
}

/// A problem `FuzzySetMatch` would log for a rule, checked at load time so
/// that broken rules are reported with a position instead of silently never
/// matching.
pub fn rule_problem(rule: &str) -> Option<String> {
    let has_slash = rule.contains('/');
    let has_dash = rule.contains('-');
    if has_slash && has_dash {
        return Some(format!(
            "Cannot mix CIDR notation with xxx-yyy range notation '{rule}'"
        ));
    }
    if has_slash {
        let (addr, bits) = rule.split_once('/')?;
        let Ok(bits) = bits.parse::<u32>() else {
            return Some(format!("invalid CIDR '{rule}': bad prefix length"));
        };
        if addr.contains(':') {
            if addr.parse::<core::net::Ipv6Addr>().is_err() {
                return Some(format!("invalid IPv6 CIDR '{rule}': bad address"));
            }
            if bits > 128 || bits % 8 != 0 {
                return Some(format!(
                    "Cannot handle ipv6 masks which are not 8 bit multiples (fix me): '{rule}'"
                ));
            }
        } else {
            if parse_v4_loose(addr).is_none() {
                return Some(format!("Invalid IPv4 CIDR: {rule}"));
            }
            if bits > 32 {
                return Some(format!("Invalid IPv4 CIDR: {rule}"));
            }
        }
    }
    None
}

fn parse_v4_loose(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut v = 0u32;
    for i in 0..4 {
        let o: u32 = match parts.get(i) {
            Some(p) => p.parse().ok().filter(|&o| o <= 255)?,
            None => 0,
        };
        v = (v << 8) | o;
    }
    Some(v)
}

/// An IPv4 CIDR rule (`a.b.c.d/n`, with `fuzzy_set_match`'s loose address
/// parse) as (network & mask, mask); `None` for every other form.
pub fn compile_v4_cidr(rule: &str) -> Option<(u32, u32)> {
    if !rule.contains('.') || rule.contains(':') || rule.contains('-') {
        return None;
    }
    let (addr, bits) = rule.split_once('/')?;
    let bits = bits.parse::<u32>().ok().filter(|b| *b <= 32)?;
    let a = parse_v4_loose(addr)?;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    Some((a & mask, mask))
}

/// [`fuzzy_set_match`] for a rule [`compile_v4_cidr`] compiled, with the
/// peer's address parsed once by the caller (`None`: not IPv4).
pub fn v4_cidr_match(compiled: (u32, u32), ip: Option<u32>) -> bool {
    ip.is_some_and(|b| b & compiled.1 == compiled.0)
}

/// The peer address as [`v4_cidr_match`] wants it.
pub fn parse_peer_v4(ip: &str) -> Option<u32> {
    ip.parse::<core::net::Ipv4Addr>().ok().map(u32::from)
}

/// libcfnet `FuzzySetMatch(rule, ip) == 0`: the address match of A.2.
pub fn fuzzy_set_match(rule: &str, ip: &str) -> bool {
    if rule == ip {
        return true;
    }
    let is_cidr = rule.contains('/');
    let is_range = rule.contains('-');
    let v4 = rule.contains('.') || ip.contains('.');
    let v6 = rule.contains(':') || ip.contains(':');
    if v4 && v6 {
        return false;
    }
    if is_cidr && is_range {
        return false;
    }
    if !(v4 || v6) {
        return false;
    }
    if !(is_cidr || is_range) {
        return ip.len() > rule.len() && ip.starts_with(rule) && ip.as_bytes()[rule.len()] == b'.';
    }
    if v4 {
        if is_cidr {
            let Some((addr, bits)) = rule.split_once('/') else {
                return false;
            };
            let Ok(bits) = bits.parse::<u32>() else {
                return false;
            };
            if bits > 32 {
                return false;
            }
            let (Some(a), Ok(b)) = (parse_v4_loose(addr), ip.parse::<core::net::Ipv4Addr>()) else {
                return false;
            };
            let b = u32::from(b);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            return a & mask == b & mask;
        }
        // per-octet ranges
        let mut ip_parts = ip.split('.');
        for r in rule.split('.') {
            if r.is_empty() {
                break;
            }
            let Some(c) = ip_parts.next() else {
                return false;
            };
            let Ok(cmp) = c.parse::<i64>() else {
                return false;
            };
            if let Some((f, t)) = r.split_once('-') {
                let (Ok(f), Ok(t)) = (f.parse::<i64>(), t.parse::<i64>()) else {
                    return false;
                };
                if f < 0 || t < 0 || f > cmp || cmp > t {
                    return false;
                }
            } else {
                let Ok(f) = r.parse::<i64>() else {
                    return false;
                };
                if f != cmp {
                    return false;
                }
            }
        }
        return true;
    }
    // IPv6
    if is_cidr {
        let Some((addr, bits)) = rule.split_once('/') else {
            return false;
        };
        let Ok(bits) = bits.parse::<u32>() else {
            return false;
        };
        if bits % 8 != 0 || bits > 128 {
            return false;
        }
        let (Ok(a), Ok(b)) = (
            addr.parse::<core::net::Ipv6Addr>(),
            ip.parse::<core::net::Ipv6Addr>(),
        ) else {
            return false;
        };
        let n = (bits / 8) as usize;
        return a.octets()[..n] == b.octets()[..n];
    }
    // IPv6 hex per-group ranges, lower bound exclusive (3.21 quirk)
    let mut ip_parts = ip.split(':');
    for r in rule.split(':') {
        let Some(c) = ip_parts.next() else {
            return false;
        };
        if r.is_empty() && c.is_empty() {
            continue;
        }
        let Ok(cmp) = i64::from_str_radix(c, 16) else {
            return false;
        };
        if let Some((f, t)) = r.split_once('-') {
            let (Ok(f), Ok(t)) = (i64::from_str_radix(f, 16), i64::from_str_radix(t, 16)) else {
                return false;
            };
            if !(f < cmp && cmp <= t) {
                return false;
            }
        } else {
            let Ok(f) = i64::from_str_radix(r, 16) else {
                return false;
            };
            if f != cmp {
                return false;
            }
        }
    }
    true
}

/// One entry of a connection-level list, with its regex precompiled if the
/// entry looks like one.
#[derive(Debug, Clone)]
pub struct ConnEntry {
    /// The entry as written in policy.
    pub text: String,
    re: Option<Regex>,
}

impl ConnEntry {
    /// Prepares an entry; regexes are compiled once here.
    pub fn new(text: &str) -> Self {
        let re = if is_regex(text) { compile(text) } else { None };
        ConnEntry {
            text: text.to_string(),
            re,
        }
    }
}

/// A connection-level list (allowconnects, denyconnects, allowallconnects,
/// trustkeysfrom, allowlegacyconnects) in stored order: reverse of policy
/// order, duplicates dropped.
#[derive(Debug, Clone, Default)]
pub struct ConnList {
    entries: Vec<ConnEntry>,
    /// An entry rcf cannot use (an invalid CIDR, a broken regex) in a list
    /// that only takes access away (denyconnects): 3.21 skips it, so it
    /// might have meant any address; every address matches it instead
    /// (never looser than 3.21).
    unusable: Option<String>,
}

impl ConnList {
    /// Builds the list the way cf-serverd stores it: each element is
    /// prepended, exact duplicates are skipped.
    pub fn from_policy_order<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut entries: Vec<ConnEntry> = Vec::new();
        for it in items {
            if !entries.iter().any(|e| e.text == it) {
                entries.insert(0, ConnEntry::new(it));
            }
        }
        ConnList {
            entries,
            unusable: None,
        }
    }

    /// This (deny) list with `entry`, which rcf cannot use, matching
    /// every address: see the `unusable` field.
    #[must_use]
    pub fn matching_all_for(mut self, entry: &str) -> Self {
        self.unusable.get_or_insert_with(|| entry.to_string());
        self
    }

    /// Entries in stored (printed) order.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.text.as_str())
    }

    /// True when the list has no entries (for allowconnects: "everyone").
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `IsMatchItemIn(list, ip)`: the entry that matches `ip`, if any. The
    /// IP must already have any `::ffff:` prefix removed (see [`map_address`]).
    pub fn matching(&self, ip: &str) -> Option<&str> {
        if let Some(bad) = &self.unusable {
            return Some(bad);
        }
        if ip.is_empty() {
            return self.entries.first().map(|e| e.text.as_str());
        }
        self.entries
            .iter()
            .find(|e| {
                fuzzy_set_match(&e.text, ip) || e.re.as_ref().is_some_and(|re| full_match(re, ip))
            })
            .map(|e| e.text.as_str())
    }

    /// Whether `ip` matches any entry.
    pub fn contains(&self, ip: &str) -> bool {
        self.matching(ip).is_some()
    }
}

/// `MapAddress`: drop a leading literal (lower-case) `::ffff:` so mapped
/// IPv4 peers are seen as plain IPv4.
pub fn map_address(ip: &str) -> &str {
    ip.strip_prefix("::ffff:").unwrap_or(ip)
}

#[cfg(test)]
mod tests {
    use quickcheck_macros::quickcheck;

    /// The compiled CIDR match decides exactly as `fuzzy_set_match`.
    #[quickcheck]
    fn compiled_v4_cidr_agrees(a: u32, bits: u8, b: u32, near: bool, odd: u8) -> bool {
        let bits = u32::from(bits % 40);
        let rule = format!("{}/{bits}", core::net::Ipv4Addr::from(a));
        // often an address inside the network, sometimes a non-address
        let peer = if near { a ^ (b & 0xff) } else { b };
        let ip = match odd % 8 {
            0 => "::1".to_string(),
            1 => format!("{}.", core::net::Ipv4Addr::from(peer)),
            _ => core::net::Ipv4Addr::from(peer).to_string(),
        };
        match compile_v4_cidr(&rule) {
            Some(c) => v4_cidr_match(c, parse_peer_v4(&ip)) == fuzzy_set_match(&rule, &ip),
            // not compiled: the checker falls back to fuzzy_set_match itself
            None => bits > 32,
        }
    }

    use super::*;

    #[test]
    fn fuzzy_forms() {
        // prefix at an octet boundary (B.10 #5)
        assert!(fuzzy_set_match("192.168.1", "192.168.1.77"));
        assert!(!fuzzy_set_match("192.168.1", "192.168.10.1"));
        assert!(!fuzzy_set_match("192.168.", "192.168.1.1"));
        assert!(fuzzy_set_match("10", "10.1.2.3"));
        // CIDR
        assert!(fuzzy_set_match("10.0.0.0/8", "10.200.0.1"));
        assert!(fuzzy_set_match("10.1.2.3/16", "10.1.99.1"));
        assert!(fuzzy_set_match("0.0.0.0/0", "1.2.3.4"));
        assert!(!fuzzy_set_match("0.0.0.0/0", "::1"));
        assert!(!fuzzy_set_match("10.0.0.0/33", "10.0.0.1"));
        // ranges
        assert!(fuzzy_set_match("10.0.0.1-20", "10.0.0.20"));
        assert!(!fuzzy_set_match("10.0.0.1-20", "10.0.0.21"));
        assert!(fuzzy_set_match("10.0-3", "10.2.9.9"));
        assert!(!fuzzy_set_match("10.0.0.0/8-9", "10.0.0.1"));
        // IPv6
        assert!(fuzzy_set_match("::1", "::1"));
        assert!(fuzzy_set_match("fe80::/16", "fe80::1"));
        assert!(!fuzzy_set_match("fe80::/12", "fe80::1"));
        assert!(!fuzzy_set_match("fe80", "fe80::1"));
    }

    #[test]
    fn full_match_is_not_anchoring() {
        assert!(!full_match_str("a|ab", "ab"));
        assert!(full_match_str("ab|a", "ab"));
        assert!(full_match_str("10.*", "10.1.2.3"));
        assert!(!full_match_str("10", "10.1.2.3"));
        assert!(!full_match_str("(", "("));
    }

    #[test]
    fn is_regex_like_cfengine() {
        assert!(!is_regex("127.0.0.1"));
        assert!(is_regex("10.*"));
        assert!(is_regex("192.168.[0-9]+.1"));
        assert!(is_regex("(a|b)"));
        assert!(!is_regex("a|b"));
        assert!(!is_regex("*x"));
    }

    #[test]
    fn conn_list_order_and_match() {
        let l = ConnList::from_policy_order([
            "127.0.0.1",
            "::1",
            "10.0.0.0/8",
            "127.0.0.1",
            "192.168.*",
        ]);
        assert_eq!(
            l.entries().collect::<Vec<_>>(),
            vec!["192.168.*", "10.0.0.0/8", "::1", "127.0.0.1"]
        );
        assert!(l.contains("10.9.9.9"));
        assert!(l.contains("192.168.7.7"));
        assert!(l.contains(map_address("::ffff:127.0.0.1")));
        assert!(!l.contains("11.0.0.1"));
        assert!(!l.contains("::2"));
    }

    #[quickcheck_macros::quickcheck]
    fn v4_rules_never_match_v6(a: u8, b: u8, bits: u8, seg: u16) -> bool {
        let rule = format!("{a}.{b}.0.0/{}", bits % 33);
        let ip = format!("fe80::{seg:x}");
        !fuzzy_set_match(&rule, &ip) && !ConnList::from_policy_order([rule.as_str()]).contains(&ip)
    }
}

#[cfg(test)]
mod v6_range_tests {
    use super::*;

    #[test]
    fn ipv6_ranges_have_an_exclusive_lower_bound() {
        assert!(fuzzy_set_match("fe80::1-ff", "fe80::ff"));
        assert!(fuzzy_set_match("fe80::1-ff", "fe80::2"));
        // 3.21 quirk: the lower bound itself does not match
        assert!(!fuzzy_set_match("fe80::1-ff", "fe80::1"));
        assert!(!fuzzy_set_match("fe80::1-ff", "fe80::100"));
    }
}

#[cfg(test)]
mod pcre_tests {
    use super::*;

    /// PCRE features 3.21's policies may use: look-ahead, look-behind,
    /// back-references, atomic groups, with StringMatchFull anchoring.
    #[test]
    fn look_around_and_back_references() {
        for (re, s, want) in [
            ("linux(?!_bad).*", "linux_ok", true),
            ("linux(?!_bad).*", "linux_bad", false),
            ("(?=.*x)abc.*", "abcx", true),
            ("(?=.*x)abc.*", "abcy", false),
            (".*(?<=\\.example\\.com)", "h.example.com", true),
            (".*(?<!\\.example\\.com)", "h.example.com", false),
            ("(ab)\\1", "abab", true),
            ("(ab)\\1", "abba", false),
            ("(?>a+)b", "aab", true),
            // full match: the leftmost match must cover the whole string
            ("a|ab", "ab", false),
            ("b", "abc", false),
            // DOTALL and MULTILINE, as CFEngine compiles
            ("a.b", "a\nb", true),
            ("^b$", "a\nb", false),
        ] {
            let r = compile(re).unwrap_or_else(|| panic!("{re} does not compile"));
            assert_eq!(full_match(&r, s), want, "{re} on {s:?}");
        }
        assert!(search(&compile("^b$").unwrap(), "a\nb"));
        assert!(compile_error("(unclosed").is_some());
        assert!(compile_error("(ab)\\1").is_none());
    }

    /// Catastrophic patterns end at the backtracking limit (no match, as
    /// PCRE's match limit in 3.21) instead of hanging.
    #[test]
    fn backtracking_is_bounded() {
        let r = compile("(a*)*\\1b").unwrap();
        let s = "a".repeat(64);
        assert!(!full_match(&r, &s));
    }
}
