//! Protocol version lines and negotiation inside TLS (PROTOCOL.md §5).
//!
//! After the TLS handshake the server speaks first with
//! `CFE_v<latest> cf-serverd <version>\n`; the client answers with the
//! version it wants, never above the banner's unless it knows better, and
//! the server accepts 2..=its latest or hangs up without a word.

/// A protocol version this implementation can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// v1 "classic": RSA challenge and Blowfish, no TLS.
    Classic = 1,
    /// v2 "tls": TLS plus the identification dialog.
    Tls = 2,
    /// v3 "cookie": v2 plus the `COOKIE` command (3.21's latest).
    Cookie = 3,
}

/// The highest version we speak and advertise; we never advertise v4+.
pub const LATEST: ProtocolVersion = ProtocolVersion::Cookie;

/// The software version we claim in banners, matching the target peer.
pub const SOFTWARE_VERSION: &str = "3.21.0";

/// Longest identification line either side accepts, `\n` included
/// (CFEngine's `TLSRecvLines` buffer of 1024 bytes).
pub const MAX_LINE: usize = 1023;

impl ProtocolVersion {
    /// The version for a wire number, if we speak it.
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            1 => Some(ProtocolVersion::Classic),
            2 => Some(ProtocolVersion::Tls),
            3 => Some(ProtocolVersion::Cookie),
            _ => None,
        }
    }

    /// The wire number.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// Parse a policy-style name (`classic`, `1`, `tls`, `2`, `cookie`, `3`, `latest`).
    ///
    /// Accepts the `protocol_version` menu of 3.21 so CLI flags and
    /// `copy_from` bodies can share one spelling.
    pub fn from_policy_name(s: &str) -> Option<Self> {
        match s {
            "1" | "classic" => Some(ProtocolVersion::Classic),
            "2" | "tls" => Some(ProtocolVersion::Tls),
            "3" | "cookie" | "latest" | "0" | "undefined" => Some(ProtocolVersion::Cookie),
            _ => None,
        }
    }
}

/// Why a version exchange failed. The server answers every one of these by
/// closing the connection without a reply, as 3.21 does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// The line is not `CFE_v<number>...` (the C `sscanf("CFE_v%d")` fails or gives <= 0).
    #[error("Protocol version negotiation failed! Received: {0}")]
    Unparsable(String),
    /// The client asked for the classic protocol inside TLS.
    #[error("Client advertises disallowed protocol version: {0}")]
    Disallowed(i64),
    /// The client asked for a version above what we speak.
    #[error("Client attempted a protocol version which is too new for us: {0}")]
    TooNew(i64),
    /// The server's banner carried a version no TLS client can use (<= 1 or unparsable).
    #[error("Server sent a bad version number: {0}")]
    BadServerVersion(String),
}

/// Parse the number in a `CFE_v<N>` line the way `sscanf("CFE_v%d")` does.
///
/// Returns `None` when there is no number (the C code's scan failure).
/// Text after the number, including the trailing newline, is ignored.
pub fn parse_version_number(line: &[u8]) -> Option<i64> {
    let rest = line.strip_prefix(b"CFE_v")?;
    crate::frame::scan_c_int(crate::frame::c_str(rest))
}

/// The server banner: `CFE_v3 cf-serverd 3.21.0\n`.
pub fn server_banner() -> Vec<u8> {
    format!("CFE_v{} cf-serverd {}\n", LATEST.number(), SOFTWARE_VERSION).into_bytes()
}

/// The client's version line. Every libcfnet client says `cf-agent` here,
/// whatever program it is, so we do too.
pub fn client_version_line(v: ProtocolVersion) -> Vec<u8> {
    format!("CFE_v{} cf-agent {}\n", v.number(), SOFTWARE_VERSION).into_bytes()
}

/// Server side: decide on the client's version line.
///
/// Accepts 2..=[`LATEST`]; classic inside TLS, anything newer, or garbage
/// is refused so the caller closes silently, exactly as 3.21 does.
pub fn server_accept(line: &[u8]) -> Result<ProtocolVersion, NegotiationError> {
    let text = || {
        String::from_utf8_lossy(line)
            .trim_end_matches('\n')
            .to_string()
    };
    match parse_version_number(line) {
        None => Err(NegotiationError::Unparsable(text())),
        Some(n) if n <= 0 => Err(NegotiationError::Unparsable(text())),
        Some(1) => Err(NegotiationError::Disallowed(1)),
        Some(n) if n > i64::from(LATEST.number()) => Err(NegotiationError::TooNew(n)),
        Some(n) => Ok(ProtocolVersion::from_number(n).expect("2..=LATEST")),
    }
}

/// Client side: pick the version to ask for after reading the banner.
///
/// `wanted` is what the user asked for (`None` = latest). A lower TLS
/// version in the banner downgrades us; a higher one is fine (we keep ours);
/// a banner of v1 or garbage aborts, as libcfnet does.
pub fn client_choose(
    wanted: Option<ProtocolVersion>,
    banner: &[u8],
) -> Result<ProtocolVersion, NegotiationError> {
    let wanted = wanted.unwrap_or(LATEST);
    let text = || {
        String::from_utf8_lossy(banner)
            .trim_end_matches('\n')
            .to_string()
    };
    let received =
        parse_version_number(banner).ok_or_else(|| NegotiationError::BadServerVersion(text()))?;
    if received <= 1 {
        return Err(NegotiationError::BadServerVersion(text()));
    }
    if received < i64::from(wanted.number()) {
        if let Some(v) = ProtocolVersion::from_number(received) {
            return Ok(v);
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn banner_is_byte_exact() {
        assert_eq!(server_banner(), b"CFE_v3 cf-serverd 3.21.0\n");
        assert_eq!(
            client_version_line(ProtocolVersion::Tls),
            b"CFE_v2 cf-agent 3.21.0\n"
        );
    }

    #[test]
    fn server_rules() {
        assert_eq!(
            server_accept(b"CFE_v3 cf-agent 3.21.0\n"),
            Ok(ProtocolVersion::Cookie)
        );
        assert_eq!(
            server_accept(b"CFE_v2 cf-agent 3.21.0\n"),
            Ok(ProtocolVersion::Tls)
        );
        assert_eq!(
            server_accept(b"CFE_v1 cf-agent 3.21.0\n"),
            Err(NegotiationError::Disallowed(1))
        );
        assert_eq!(
            server_accept(b"CFE_v4 cf-agent 3.28.0\n"),
            Err(NegotiationError::TooNew(4))
        );
        assert!(matches!(
            server_accept(b"HELLO there\n"),
            Err(NegotiationError::Unparsable(_))
        ));
        assert!(matches!(
            server_accept(b"CFE_v0\n"),
            Err(NegotiationError::Unparsable(_))
        ));
        assert!(matches!(
            server_accept(b"CFE_v-3\n"),
            Err(NegotiationError::Unparsable(_))
        ));
        assert_eq!(
            server_accept(b"CFE_v 3 trailing"),
            Ok(ProtocolVersion::Cookie)
        );
        assert!(matches!(
            server_accept(b"CFE_v99999999999999999999999\n"),
            Err(NegotiationError::TooNew(_))
        ));
    }

    #[test]
    fn client_rules() {
        let v = |b: &[u8], w| client_choose(w, b);
        assert_eq!(
            v(b"CFE_v3 cf-serverd 3.21.0\n", None),
            Ok(ProtocolVersion::Cookie)
        );
        assert_eq!(
            v(b"CFE_v2 cf-serverd 3.10.0\n", None),
            Ok(ProtocolVersion::Tls)
        );
        assert_eq!(
            v(b"CFE_v5 cf-serverd 3.28.0\n", None),
            Ok(ProtocolVersion::Cookie)
        );
        assert_eq!(
            v(b"CFE_v3 cf-serverd 3.21.0\n", Some(ProtocolVersion::Tls)),
            Ok(ProtocolVersion::Tls)
        );
        assert!(v(b"CFE_v1 x\n", None).is_err());
        assert!(v(b"garbage\n", None).is_err());
    }

    #[quickcheck]
    fn server_never_accepts_outside_2_to_3(line: Vec<u8>) -> bool {
        match server_accept(&line) {
            Ok(v) => v == ProtocolVersion::Tls || v == ProtocolVersion::Cookie,
            Err(_) => true,
        }
    }

    #[quickcheck]
    fn client_line_round_trips_through_server(n: u8) -> bool {
        let v = match n % 2 {
            0 => ProtocolVersion::Tls,
            _ => ProtocolVersion::Cookie,
        };
        server_accept(&client_version_line(v)) == Ok(v)
    }
}
