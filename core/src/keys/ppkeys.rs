//! Names of the files in `WORKDIR/ppkeys` (SEMANTICS E.1, E.4).
//!
//! * `localhost.priv` / `localhost.pub`: the host's own pair.
//! * `<user>-<keyid>.pub`: a trusted peer key, e.g. `root-MD5=0d56….pub`.
//!   `<user>` may be empty (`-MD5=….pub`, an IDENTITY without USERNAME).
//! * `<user>-<ip>.pub`: the old style, only read as a fallback and renamed to
//!   the new style on first use.
//!
//! Every name built here is a single path component: user names and IPs
//! that would escape the directory are refused, because on the server the
//! user name comes from the peer.

use core::net::IpAddr;

use thiserror::Error;

use super::KeyId;

/// Directory under WORKDIR holding keys.
pub const PPKEYS_DIR: &str = "ppkeys";
/// The host's private key inside [`PPKEYS_DIR`].
pub const PRIVATE_KEY_FILE: &str = "localhost.priv";
/// The host's public key inside [`PPKEYS_DIR`].
pub const PUBLIC_KEY_FILE: &str = "localhost.pub";

/// Longest user name accepted in a key file name. CFEngine builds the name in
/// a 4096-byte buffer; file systems allow 255 bytes per component, and the
/// rest of the name (`-SHA=` + 64 hex + `.pub`) takes 73.
pub const MAX_USER_LEN: usize = 180;

/// Why a ppkeys file name cannot be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The user name contains `/` or NUL, or is `.`/`..`-like in a way that
    /// could leave the ppkeys directory (usually a hostile peer).
    #[error("user name {0:?} cannot be used in a key file name")]
    BadUser(String),
    /// The user name is longer than [`MAX_USER_LEN`] bytes.
    #[error("user name is {0} bytes, longer than {MAX_USER_LEN}")]
    UserTooLong(usize),
    /// The address is empty or contains characters no IP address has.
    #[error("address {0:?} cannot be used in a key file name")]
    BadAddress(String),
}

/// Check that `user` can be embedded in a ppkeys file name. The empty name
/// is allowed: CFEngine stores IDENTITY-without-USERNAME keys as `-<id>.pub`.
pub fn check_user(user: &str) -> Result<(), NameError> {
    if user.len() > MAX_USER_LEN {
        return Err(NameError::UserTooLong(user.len()));
    }
    if user.contains('/') || user.contains('\0') || user.chars().any(char::is_control) {
        return Err(NameError::BadUser(user.to_string()));
    }
    Ok(())
}

/// `<user>-<keyid>.pub`: where a trusted key for `user` with id `id` lives.
pub fn trusted_key_file(user: &str, id: &KeyId) -> Result<String, NameError> {
    check_user(user)?;
    Ok(format!("{user}-{id}.pub"))
}

/// `<user>-<ip>.pub`: the pre-3.x name, only looked up as a fallback.
/// `ip` is the peer address as text (IPv4-mapped IPv6 already stripped by the
/// caller, as CFEngine does).
pub fn old_style_key_file(user: &str, ip: &str) -> Result<String, NameError> {
    check_user(user)?;
    if ip.is_empty()
        || ip.len() > 64
        || !ip.chars().all(|c| {
            c.is_ascii_hexdigit() || c == '.' || c == ':' || c == '%' || c.is_ascii_alphanumeric()
        })
    {
        return Err(NameError::BadAddress(ip.to_string()));
    }
    Ok(format!("{user}-{ip}.pub"))
}

/// What a file found in ppkeys is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PpkeysFile {
    /// `localhost.priv`.
    OwnPrivate,
    /// `localhost.pub`.
    OwnPublic,
    /// `<user>-<keyid>.pub`.
    Trusted {
        /// The user part (may be empty).
        user: String,
        /// The id in the name.
        id: KeyId,
    },
    /// `<user>-<ip>.pub`.
    OldStyle {
        /// The user part (may be empty).
        user: String,
        /// The address in the name.
        ip: IpAddr,
    },
    /// Anything else (temp files, backups, foreign files).
    Other,
}

/// Classify a directory entry of ppkeys by its name alone. The user part is
/// everything before the last `-`, since neither key ids nor IP addresses
/// contain one.
pub fn classify(name: &str) -> PpkeysFile {
    match name {
        PRIVATE_KEY_FILE => return PpkeysFile::OwnPrivate,
        PUBLIC_KEY_FILE => return PpkeysFile::OwnPublic,
        _ => {}
    }
    let Some(stem) = name.strip_suffix(".pub") else {
        return PpkeysFile::Other;
    };
    let Some((user, rest)) = stem.rsplit_once('-') else {
        return PpkeysFile::Other;
    };
    if let Ok(id) = rest.parse::<KeyId>() {
        return PpkeysFile::Trusted {
            user: user.to_string(),
            id,
        };
    }
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return PpkeysFile::OldStyle {
            user: user.to_string(),
            ip,
        };
    }
    PpkeysFile::Other
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    const ID: &str = "MD5=77f261c7dc7b706e4450efa7ad1ec700";

    #[test]
    fn names() {
        let id: KeyId = ID.parse().unwrap();
        assert_eq!(
            trusted_key_file("root", &id).unwrap(),
            format!("root-{ID}.pub")
        );
        assert_eq!(trusted_key_file("", &id).unwrap(), format!("-{ID}.pub"));
        assert_eq!(
            old_style_key_file("root", "10.0.0.1").unwrap(),
            "root-10.0.0.1.pub"
        );
        assert_eq!(old_style_key_file("root", "::1").unwrap(), "root-::1.pub");
        assert!(trusted_key_file("../x", &id).is_err());
        assert!(trusted_key_file("a\0b", &id).is_err());
        assert!(trusted_key_file(&"u".repeat(MAX_USER_LEN + 1), &id).is_err());
        assert!(old_style_key_file("root", "../../etc").is_err());
        assert!(old_style_key_file("root", "").is_err());
    }

    #[test]
    fn classification() {
        let id: KeyId = ID.parse().unwrap();
        assert_eq!(classify("localhost.priv"), PpkeysFile::OwnPrivate);
        assert_eq!(classify("localhost.pub"), PpkeysFile::OwnPublic);
        assert_eq!(
            classify(&format!("cf-user-{ID}.pub")),
            PpkeysFile::Trusted {
                user: "cf-user".into(),
                id: id.clone()
            }
        );
        assert_eq!(
            classify(&format!("-{ID}.pub")),
            PpkeysFile::Trusted {
                user: "".into(),
                id
            }
        );
        assert_eq!(
            classify("root-10.0.0.1.pub"),
            PpkeysFile::OldStyle {
                user: "root".into(),
                ip: "10.0.0.1".parse().unwrap()
            }
        );
        assert_eq!(
            classify("root-fe80::1.pub"),
            PpkeysFile::OldStyle {
                user: "root".into(),
                ip: "fe80::1".parse().unwrap()
            }
        );
        assert_eq!(classify("root-host.example.pub"), PpkeysFile::Other);
        assert_eq!(classify(".tmp.root-x"), PpkeysFile::Other);
        assert_eq!(classify("nodash.pub"), PpkeysFile::Other);
    }

    #[quickcheck]
    fn trusted_names_classify_back(user: String, digest: Vec<u8>) -> bool {
        let mut d = digest;
        d.resize(16, 0);
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        let id: KeyId = format!("MD5={hex}").parse().unwrap();
        match trusted_key_file(&user, &id) {
            Ok(name) => {
                !name.contains('/')
                    && classify(&name)
                        == PpkeysFile::Trusted {
                            user: user.clone(),
                            id,
                        }
            }
            Err(_) => {
                user.contains('/')
                    || user.chars().any(char::is_control)
                    || user.len() > MAX_USER_LEN
            }
        }
    }
}
