//! The identification dialog: `IDENTITY USERNAME=<u>` and `OK WELCOME`
//! (PROTOCOL.md §6.6). These are bare `\n`-terminated lines sent as TLS
//! application data before any transaction.

use crate::banner::MAX_LINE;

/// Longest username the server keeps (`CF_MAXVARSIZE` - 1).
pub const MAX_USERNAME: usize = 1023;

/// What the client said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `USERNAME=` value; `None` when absent or unparsable (the server then
    /// uses the empty username, exactly as 3.21 does).
    pub username: Option<String>,
    /// Fields we do not know, kept for the verbose log line
    /// `Received unknown IDENTITY parameter: %s=%s`.
    pub unknown: Vec<(String, String)>,
}

impl Identity {
    /// The username as the server uses it: empty when none was given.
    pub fn username_or_empty(&self) -> &str {
        self.username.as_deref().unwrap_or("")
    }
}

/// An IDENTITY line the server must refuse (it closes without a reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The username contains `/` or `\`, is too long, or is not valid UTF-8.
    #[error("Received invalid IDENTITY: USERNAME={0}")]
    InvalidUsername(String),
}

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Parse the client's IDENTITY line as `ServerIdentificationDialog` does.
///
/// The C code scans `"IDENTITY %[^=]=%s"` then repeats `" %[^=]=%s"`; a
/// line that does not start with `IDENTITY` simply yields no username (so
/// `HELLO THERE\n` is welcomed anonymously, as 3.21 does). A later
/// `USERNAME=` wins over an earlier one. Refused: usernames with `/` or
/// `\` (they would escape `ppkeys/`), over-long ones, and non-UTF-8 ones
/// (3.21 would accept the last; we refuse rather than write odd file names).
pub fn parse_identity(line: &[u8]) -> Result<Identity, IdentityError> {
    let mut id = Identity::default();
    let line = crate::frame::c_str(line);
    let Some(mut rest) = line.strip_prefix(b"IDENTITY") else {
        return Ok(id);
    };
    loop {
        // " " in the format: skip any whitespace.
        let skip = rest.iter().take_while(|&&b| is_c_space(b)).count();
        rest = &rest[skip..];
        // %[^=]: a non-empty run up to '='.
        let key_len = rest.iter().take_while(|&&b| b != b'=').count();
        if key_len == 0 || key_len == rest.len() {
            break;
        }
        let key = &rest[..key_len];
        rest = &rest[key_len + 1..];
        // %s: skip whitespace, then a non-empty run of non-whitespace.
        let skip = rest.iter().take_while(|&&b| is_c_space(b)).count();
        rest = &rest[skip..];
        let val_len = rest.iter().take_while(|&&b| !is_c_space(b)).count();
        if val_len == 0 {
            break;
        }
        let value = &rest[..val_len];
        rest = &rest[val_len..];
        if key == b"USERNAME" {
            let lossy = String::from_utf8_lossy(value).into_owned();
            if value.len() > MAX_USERNAME || value.iter().any(|&b| b == b'/' || b == b'\\') {
                return Err(IdentityError::InvalidUsername(lossy));
            }
            let name = String::from_utf8(value.to_vec())
                .map_err(|_| IdentityError::InvalidUsername(lossy))?;
            id.username = Some(name);
        } else {
            id.unknown.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    Ok(id)
}

/// The client's IDENTITY line. Always carries ` USERNAME=` because a bare
/// `IDENTITY` glued to the version line is not recognised by 3.21.
pub fn encode_identity(username: &str) -> Vec<u8> {
    format!("IDENTITY USERNAME={username}\n").into_bytes()
}

/// The server's welcome: `OK WELCOME\n`, or with ` USERNAME=<u>` when one was given.
pub fn encode_welcome(username: &str) -> Vec<u8> {
    if username.is_empty() {
        b"OK WELCOME\n".to_vec()
    } else {
        format!("OK WELCOME USERNAME={username}\n").into_bytes()
    }
}

/// Client side: whether the server welcomed us. Like libcfnet, only the
/// `OK WELCOME` prefix counts; anything else is a denial.
pub fn is_welcome(line: &[u8]) -> bool {
    line.starts_with(b"OK WELCOME")
}

/// A line that broke the identification dialog's limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// More than 1023 bytes arrived without a newline.
    #[error("identification line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// Accumulates `\n`-terminated identification lines from arbitrary splits.
///
/// Bounded: at most [`MAX_LINE`] bytes of an unfinished line are kept.
/// Bytes after the last complete line stay available through
/// [`take_rest`](LineBuffer::take_rest) for the transaction decoder, since a
/// client may pipeline its first request right behind IDENTITY.
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: Vec<u8>,
}

impl LineBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes (the caller bounds how much it hands in at once).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line including its `\n`, if one has arrived.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineError> {
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(i) if i < MAX_LINE => {
                let rest = self.buf.split_off(i + 1);
                Ok(Some(std::mem::replace(&mut self.buf, rest)))
            }
            Some(_) => Err(LineError::TooLong),
            None if self.buf.len() >= MAX_LINE => Err(LineError::TooLong),
            None => Ok(None),
        }
    }

    /// Everything buffered after the lines already taken.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    #[test]
    fn identity_forms_seen_live() {
        let id = parse_identity(b"IDENTITY USERNAME=root\n").unwrap();
        assert_eq!(id.username.as_deref(), Some("root"));
        assert_eq!(parse_identity(b"IDENTITY\n").unwrap().username, None);
        assert_eq!(parse_identity(b"HELLO THERE\n").unwrap().username, None);
        let id = parse_identity(b"IDENTITY FOO=bar USERNAME=nobody\n").unwrap();
        assert_eq!(id.username.as_deref(), Some("nobody"));
        assert_eq!(id.unknown, vec![("FOO".into(), "bar".into())]);
        assert!(parse_identity(b"IDENTITY USERNAME=a/b\n").is_err());
        assert!(parse_identity(b"IDENTITY USERNAME=a\\b\n").is_err());
        assert_eq!(
            parse_identity(b"IDENTITY USERNAME=\n").unwrap().username,
            None
        );
        let long = format!("IDENTITY USERNAME={}\n", "x".repeat(1024));
        assert!(parse_identity(long.as_bytes()).is_err());
    }

    #[test]
    fn welcome_is_byte_exact() {
        assert_eq!(encode_welcome("root"), b"OK WELCOME USERNAME=root\n");
        assert_eq!(encode_welcome(""), b"OK WELCOME\n");
        assert!(is_welcome(b"OK WELCOME USERNAME=root\n"));
        assert!(!is_welcome(b"BAD\n"));
    }

    #[test]
    fn lines_split_anywhere_and_keep_the_rest() {
        let mut lb = LineBuffer::new();
        lb.push(b"CFE_v3 cf-agent 3.21.0\nIDENT");
        assert_eq!(
            lb.next_line().unwrap().unwrap(),
            b"CFE_v3 cf-agent 3.21.0\n"
        );
        assert_eq!(lb.next_line().unwrap(), None);
        lb.push(b"ITY USERNAME=root\nt 7\0");
        assert_eq!(
            lb.next_line().unwrap().unwrap(),
            b"IDENTITY USERNAME=root\n"
        );
        assert_eq!(lb.take_rest(), b"t 7\0");
        let mut lb = LineBuffer::new();
        lb.push(&[b'a'; 2000]);
        assert_eq!(lb.next_line(), Err(LineError::TooLong));
    }

    #[quickcheck]
    fn identity_round_trips(name: String) -> bool {
        let clean: String = name
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '/' && *c != '\\' && *c != '=' && *c != '\0')
            .take(100)
            .collect();
        let got = parse_identity(&encode_identity(&clean)).unwrap();
        if clean.is_empty() {
            got.username.is_none()
        } else {
            got.username.as_deref() == Some(clean.as_str())
        }
    }

    #[quickcheck]
    fn arbitrary_lines_never_panic(line: Vec<u8>) -> bool {
        let _ = parse_identity(&line);
        true
    }
}
