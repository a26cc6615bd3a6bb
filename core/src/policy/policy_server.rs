//! `policy_server.dat`: what a host was bootstrapped to, split as 3.21's
//! `ParseHostPort` (libcfnet/addr_lib.c) and `EvalContextSetPolicyServer`
//! (libpromises/bootstrap.c) split it into `sys.policy_hub` and
//! `sys.policy_hub_port`.
//!
//! Pure: the caller reads the file (its first line, as `fgets` does) and
//! resolves a host name when [`Bootstrapped::needs_lookup`] says so.

/// The port `sys.policy_hub_port` takes when the file names none
/// (`CFENGINE_PORT_STR`).
pub const DEFAULT_HUB_PORT: &str = "5308";

/// How 3.21 classifies the host part (`AddressType`); it decides whether a
/// name lookup happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressKind {
    /// Starts with a digit, no colon before a dot: taken as IPv4 as written.
    Ipv4,
    /// Two or more colons, or a colon inside `[...]`: taken as IPv6 as written.
    Ipv6,
    /// Anything else: a host name, resolved with getaddrinfo.
    Other,
}

/// `HOST[:PORT]` split as `ParseHostPort` splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host part (brackets removed), `None` when empty.
    pub host: Option<String>,
    /// The port part, `None` when absent or empty.
    pub port: Option<String>,
    /// What 3.21 takes the host part for.
    pub kind: AddressKind,
}

/// Longest address 3.21 keeps as an IP (`CF_MAX_IP_LEN`); a longer host part
/// is treated as a name (`AddressTypeCheckValidity`).
const CF_MAX_IP_LEN: usize = 64;

/// Splits `s` exactly as 3.21's `ParseHostPort` does, including its quirks:
/// `host:port` splits at the only colon, several colons without brackets
/// mean a bare IPv6 address (no port), `[addr]:port` strips the brackets,
/// and a leading digit makes the host an IPv4 address without checking it.
pub fn parse_host_port(s: &str) -> HostPort {
    let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if s.is_empty() {
        return HostPort {
            host: None,
            port: None,
            kind: AddressKind::Other,
        };
    }
    let first_colon = s.find(':');
    let first_dot = s.find('.');
    let starts_digit = |h: &str| h.as_bytes().first().is_some_and(|b| b.is_ascii_digit());
    let mut kind = AddressKind::Other;
    let (host, port): (&str, Option<&str>);
    if let Some(rest) = s.strip_prefix('[') {
        match rest.find(']') {
            Some(close) => {
                let h = &rest[..close];
                // first_colon is an index into s; the ']' is at close + 1 in s
                if first_colon.is_some_and(|c| c < close + 1) {
                    kind = AddressKind::Ipv6;
                } else if starts_digit(h) {
                    kind = AddressKind::Ipv4;
                }
                let after = &rest[close + 1..];
                host = h;
                // 3.21 moves the port pointer past "]:" only when a colon
                // follows; otherwise it points at the (now '\0') bracket.
                port = after.strip_prefix(':');
            }
            None => {
                host = rest;
                port = None;
            }
        }
    } else if first_colon.is_none() {
        if starts_digit(s) {
            kind = AddressKind::Ipv4;
        }
        host = s;
        port = None;
    } else {
        let c = first_colon.unwrap_or(0);
        if first_dot.is_none_or(|d| c < d) {
            if s[c + 1..].contains(':') {
                kind = AddressKind::Ipv6;
                host = s;
                port = None;
            } else {
                host = &s[..c];
                port = Some(&s[c + 1..]);
            }
        } else {
            host = &s[..c];
            port = Some(&s[c + 1..]);
            if starts_digit(host) {
                kind = AddressKind::Ipv4;
            }
        }
    }
    let host = (!host.is_empty()).then(|| host.to_string());
    let port = port.filter(|p| !p.is_empty()).map(str::to_string);
    if host.as_ref().is_none_or(|h| h.len() >= CF_MAX_IP_LEN) {
        kind = AddressKind::Other;
    }
    HostPort { host, port, kind }
}

/// What `policy_server.dat` says, ready to become `sys.*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    /// The file's trimmed first line (3.21's `PolicyServerGet()`).
    pub raw: String,
    /// The host part.
    pub host: HostPort,
}

impl Bootstrapped {
    /// Parses the text of `policy_server.dat` as 3.21 reads it: its first
    /// line only, whitespace trimmed. `None` when that is empty (3.21 then
    /// treats the host as not bootstrapped).
    pub fn from_file_text(text: &str) -> Option<Self> {
        let first = text.split('\n').next().unwrap_or("");
        let raw = first.trim_matches(|c: char| c.is_ascii_whitespace());
        if raw.is_empty() {
            return None;
        }
        Some(Self {
            raw: raw.to_string(),
            host: parse_host_port(raw),
        })
    }

    /// The name to resolve for `sys.policy_hub`, when the host part is a
    /// name rather than an address (3.21 calls getaddrinfo with AF_UNSPEC
    /// and takes the first answer).
    pub fn needs_lookup(&self) -> Option<&str> {
        match self.host.kind {
            AddressKind::Other => self.host.host.as_deref(),
            _ => None,
        }
    }

    /// `sys.policy_hub`: the address as written, or `resolved` (the first
    /// address of the name lookup) for a name. `None` (the variable stays
    /// undefined) when the file holds no host or the lookup failed.
    pub fn policy_hub(&self, resolved: Option<&str>) -> Option<String> {
        match self.host.kind {
            AddressKind::Other => resolved.map(str::to_string),
            _ => self.host.host.clone(),
        }
    }

    /// `sys.policy_hub_port`: the port as written, else 5308.
    pub fn policy_hub_port(&self) -> String {
        self.host
            .port
            .clone()
            .unwrap_or_else(|| DEFAULT_HUB_PORT.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> (Option<&'static str>, Option<&'static str>, AddressKind) {
        let r = parse_host_port(s);
        (
            r.host.map(|h| &*Box::leak(h.into_boxed_str())),
            r.port.map(|p| &*Box::leak(p.into_boxed_str())),
            r.kind,
        )
    }

    /// The cases of 3.21's tests/unit/addr_lib_test.c and
    /// policy_server_test.c, plus the forms the bootstrap writes.
    #[test]
    fn splits_as_3_21() {
        use AddressKind::*;
        assert_eq!(hp("127.0.0.1"), (Some("127.0.0.1"), None, Ipv4));
        assert_eq!(
            hp("127.0.0.1:25308"),
            (Some("127.0.0.1"), Some("25308"), Ipv4)
        );
        assert_eq!(hp("hub"), (Some("hub"), None, Other));
        assert_eq!(hp("hub:5309"), (Some("hub"), Some("5309"), Other));
        assert_eq!(
            hp("hub.example.com:5309"),
            (Some("hub.example.com"), Some("5309"), Other)
        );
        assert_eq!(hp("localhost:"), (Some("localhost"), None, Other));
        assert_eq!(hp("::1"), (Some("::1"), None, Ipv6));
        assert_eq!(hp("fe80::1:2"), (Some("fe80::1:2"), None, Ipv6));
        assert_eq!(hp("[::1]:5309"), (Some("::1"), Some("5309"), Ipv6));
        assert_eq!(hp("[::1]"), (Some("::1"), None, Ipv6));
        assert_eq!(hp("[127.0.0.1]:99"), (Some("127.0.0.1"), Some("99"), Ipv4));
        assert_eq!(hp("[hub]:99"), (Some("hub"), Some("99"), Other));
        assert_eq!(hp("  10.0.0.1:1 \n"), (Some("10.0.0.1"), Some("1"), Ipv4));
        assert_eq!(hp("::ffff:10.0.0.1"), (Some("::ffff:10.0.0.1"), None, Ipv6));
        assert_eq!(hp(""), (None, None, Other));
        assert_eq!(hp(":5308"), (None, Some("5308"), Other));
    }

    #[test]
    fn sys_vars() {
        let b = Bootstrapped::from_file_text("127.0.0.1:25308\nignored\n").unwrap();
        assert_eq!(b.raw, "127.0.0.1:25308");
        assert_eq!(b.needs_lookup(), None);
        assert_eq!(b.policy_hub(None).as_deref(), Some("127.0.0.1"));
        assert_eq!(b.policy_hub_port(), "25308");
        let b = Bootstrapped::from_file_text("hub.example\n").unwrap();
        assert_eq!(b.needs_lookup(), Some("hub.example"));
        assert_eq!(b.policy_hub(None), None);
        assert_eq!(b.policy_hub(Some("10.1.1.1")).as_deref(), Some("10.1.1.1"));
        assert_eq!(b.policy_hub_port(), "5308");
        assert!(Bootstrapped::from_file_text(" \n127.0.0.1").is_none());
    }

    quickcheck::quickcheck! {
        /// Any text splits without panicking, and the parts come from it.
        fn never_panics(s: String) -> bool {
            let r = parse_host_port(&s);
            r.host.as_ref().is_none_or(|h| s.contains(h.as_str()))
                && r.port.as_ref().is_none_or(|p| s.contains(p.as_str()))
        }
    }
}
