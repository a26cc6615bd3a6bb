//! CFEngine's TLS knobs, mapped onto what rustls can do.
//!
//! Server: `body server control { allowciphers; allowtlsversion; }`.
//! Client: `body common control { tls_ciphers; tls_min_version; }`.
//! Semantics follow 3.21's `TLSSetCipherList` / `TLSSetDefaultOptions`
//! (PROTOCOL.md §6.3, SEMANTICS.md §A):
//!
//! * the cipher list is split on `:`; `TLS_*` names are TLS 1.3 suites, the
//!   rest are OpenSSL TLS ≤ 1.2 cipher names;
//! * a list without any `TLS_*` name disables TLS 1.3 altogether;
//! * a list without any other name keeps TLS 1.2 on OpenSSL's default list
//!   (**[live]** on 3.21 + OpenSSL 3.0, not in PROTOCOL.md): here, every
//!   ECDHE AEAD suite;
//! * unknown names are ignored while a valid name of the same kind remains;
//!   with none, 3.21 logs `No valid ciphers in the cipher list: %s` (or
//!   `No valid cipher suites in the list: %s`) and never listens
//!   **[live]**; we mark the settings unusable instead;
//! * the minimum version accepts exactly `1.0`, `1.1`, `1.2`, `1.3`; any
//!   other string warns and means 1.0.
//!
//! rustls implements only TLS 1.2 and 1.3, and in TLS 1.2 only ECDHE with
//! AEAD ciphers. Everything else (static-RSA key exchange such as
//! cf-serverd's default `AES256-GCM-SHA384:AES256-SHA`, CBC suites, DHE) is
//! unsupported **by design** and reported as a [`TlsWarning`], never an
//! error. When nothing usable remains, the settings say so
//! ([`TlsSettings::is_unusable`]): a server must still start and listen,
//! log the one [`TlsWarningKind::Unusable`] warning, and refuse every
//! handshake, because clients rely on getting a refusal rather than a dead
//! port.

use std::fmt;

use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::SupportedCipherSuite;

/// cf-serverd's built-in `allowciphers` (3.21, OpenSSL with TLS 1.3).
pub const CFENGINE_SERVER_DEFAULT_CIPHERS: &str =
    "AES256-GCM-SHA384:AES256-SHA:TLS_AES_256_GCM_SHA384";

/// cf-serverd's and cf-agent's built-in minimum TLS version.
pub const CFENGINE_DEFAULT_MIN_VERSION: &str = "1.1";

/// Which side the settings are for; only changes setting names in messages
/// and the default cipher list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `cf-serverd`: `allowciphers` / `allowtlsversion`.
    Server,
    /// `cf-agent` & co: `tls_ciphers` / `tls_min_version`.
    Client,
}

impl Role {
    /// Name of the cipher-list setting in CFEngine policy.
    pub fn ciphers_setting(self) -> &'static str {
        match self {
            Role::Server => "allowciphers",
            Role::Client => "tls_ciphers",
        }
    }

    /// Name of the minimum-version setting in CFEngine policy.
    pub fn version_setting(self) -> &'static str {
        match self {
            Role::Server => "allowtlsversion",
            Role::Client => "tls_min_version",
        }
    }
}

/// A TLS protocol version rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The effective TLS parameters: what we will offer or accept.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    role: Role,
    tls13: Vec<SupportedCipherSuite>,
    tls12: Vec<SupportedCipherSuite>,
    min_version: TlsVersion,
    unusable: Option<String>,
}

/// Why a warning was emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsWarningKind {
    /// A known OpenSSL cipher rustls does not implement: static-RSA key
    /// exchange, CBC mode, DHE, CCM, ... The name is kept.
    UnsupportedByDesign {
        /// The cipher name as written in the setting.
        name: String,
        /// Short reason, e.g. "static RSA key exchange".
        why: &'static str,
    },
    /// A name neither OpenSSL 3 nor we know; ignored (OpenSSL ignores it too).
    UnknownCipher(String),
    /// An OpenSSL cipher-string operator or keyword we do not interpret.
    NotInterpreted(String),
    /// ECDSA suites can never be negotiated: CFEngine host keys are RSA.
    EcdsaNeedsEcdsaKey(String),
    /// No `TLS_*` name in the list, so TLS 1.3 is disabled, as cf-serverd does.
    Tls13Disabled,
    /// Only `TLS_*` names (or none at all): TLS 1.2 keeps the default list,
    /// as 3.21 with OpenSSL 3.0 does **[live]**; all ECDHE suites here.
    Tls12Defaults,
    /// CFEngine's own warning for an unrecognised minimum version (then 1.0).
    UnrecognizedVersion(String),
    /// A minimum below 1.2 was requested; rustls starts at TLS 1.2.
    VersionRaised(String),
    /// Nothing usable remains: every handshake will be refused.
    Unusable(String),
}

/// One warning about a TLS setting, to be logged once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsWarning {
    /// The CFEngine setting concerned (`allowciphers`, `tls_min_version`, ...).
    pub setting: &'static str,
    /// What happened.
    pub kind: TlsWarningKind,
}

impl fmt::Display for TlsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.setting;
        match &self.kind {
            TlsWarningKind::UnsupportedByDesign { name, why } => write!(
                f,
                "{s}: cipher '{name}' is unsupported by design ({why}; static RSA / CBC / DHE not implemented by rustls), ignored"
            ),
            TlsWarningKind::UnknownCipher(n) => write!(f, "{s}: unknown cipher '{n}', ignored"),
            TlsWarningKind::NotInterpreted(n) => {
                write!(f, "{s}: OpenSSL cipher-string element '{n}' is not interpreted, ignored")
            }
            TlsWarningKind::EcdsaNeedsEcdsaKey(n) => write!(
                f,
                "{s}: cipher '{n}' needs an ECDSA certificate; CFEngine host keys are RSA, so it can never be negotiated"
            ),
            TlsWarningKind::Tls13Disabled => write!(
                f,
                "{s}: Disabling TLS 1.3 because no TLS 1.3 ciphersuites specified in allowed ciphers"
            ),
            TlsWarningKind::Tls12Defaults => write!(
                f,
                "{s}: no TLS 1.2 cipher named, so TLS 1.2 uses the default list (every ECDHE AEAD suite) as cf-serverd does; set the minimum version to 1.3 to turn TLS 1.2 off"
            ),
            TlsWarningKind::UnrecognizedVersion(v) => write!(
                f,
                "{s}: Unrecognized requested minimum TLS version '{v}', using the minimum required version 1.0. (rcf implements TLS 1.2 and 1.3 only, so the effective minimum is 1.2)"
            ),
            TlsWarningKind::VersionRaised(v) => {
                if v == "1.0" {
                    // CFEngine's own warning for 1.0 [live]
                    write!(f, "{s}: Minimum requested TLS version is 1.0, but minimum version recommended by CFEngine is 1.1. ")?;
                }
                write!(
                    f,
                    "{s}: minimum TLS version {v} requested; rcf implements TLS 1.2 and 1.3 only, accepting TLS 1.2 and up"
                )
            }
            TlsWarningKind::Unusable(why) => write!(
                f,
                "{s}: no usable TLS configuration remains ({why}); every TLS handshake will be refused"
            ),
        }
    }
}

/// OpenSSL TLS ≤ 1.2 names rustls implements (ECDHE + AEAD only).
const TLS12_MAP: [(&str, SupportedCipherSuite); 6] = [
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// TLS 1.3 suite names (same in OpenSSL and IANA).
const TLS13_MAP: [(&str, SupportedCipherSuite); 3] = [
    ("TLS_AES_256_GCM_SHA384", cs::TLS13_AES_256_GCM_SHA384),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    ("TLS_AES_128_GCM_SHA256", cs::TLS13_AES_128_GCM_SHA256),
];

/// OpenSSL's name for a suite (`SSL_CIPHER_get_name`), for log lines.
pub fn openssl_name(suite: SupportedCipherSuite) -> &'static str {
    TLS13_MAP
        .iter()
        .chain(TLS12_MAP.iter())
        .find(|(_, s)| s.suite() == suite.suite())
        .map(|(n, _)| *n)
        .unwrap_or("UNKNOWN")
}

/// Aliases we expand to "every ECDHE suite rustls has" (order as TLS12_MAP).
const ALL_TLS12_ALIASES: [&str; 8] = [
    "DEFAULT", "ALL", "HIGH", "ECDHE", "EECDH", "kECDHE", "kEECDH", "AESGCM",
];

fn classify_unsupported(name: &str) -> Option<&'static str> {
    let up = name.to_ascii_uppercase();
    if up.starts_with("TLS_AES_128_CCM") {
        return Some("TLS 1.3 CCM suite");
    }
    if up.starts_with("DHE-") || up.starts_with("EDH-") || up.starts_with("ADH-") {
        return Some("DHE key exchange");
    }
    if up.contains("PSK") || up.contains("SRP") {
        return Some("PSK/SRP key exchange");
    }
    if up.contains("CAMELLIA")
        || up.contains("ARIA")
        || up.contains("SEED")
        || up.contains("RC4")
        || up.contains("IDEA")
    {
        return Some("cipher not implemented by rustls");
    }
    if up.contains("CCM") {
        return Some("CCM mode");
    }
    if up.starts_with("ECDHE-") || up.starts_with("AECDH-") {
        // Every ECDHE AEAD suite is in TLS12_MAP; what is left is CBC.
        return Some("CBC mode");
    }
    if up.starts_with("AES") || up.starts_with("DES-CBC3") || up.starts_with("NULL-") {
        return Some("static RSA key exchange");
    }
    None
}

impl TlsSettings {
    /// cf-serverd's defaults as rustls can honour them: TLS 1.3 with
    /// `TLS_AES_256_GCM_SHA384` only (what stock cf-serverd negotiates), no
    /// TLS 1.2 (stock cf-serverd's TLS 1.2 suites are both static RSA).
    /// The warnings report the two static-RSA suites of the default list.
    ///
    /// Decision: we stay faithful and do **not** add ECDHE TLS 1.2 suites to
    /// the default; set `allowciphers` to enable them.
    pub fn server_default() -> (TlsSettings, Vec<TlsWarning>) {
        Self::from_cfengine(Role::Server, None, None)
    }

    /// Client defaults, like OpenSSL's default list that cf-agent uses:
    /// all TLS 1.3 suites plus every ECDHE TLS 1.2 suite, TLS 1.2 and up.
    pub fn client_default() -> TlsSettings {
        Self::from_cfengine(Role::Client, None, None).0
    }

    /// Builds settings from the policy strings. `None` means "not set in
    /// policy" (the built-in default applies); an empty string is a value,
    /// as in 3.21: an empty cipher list turns TLS 1.3 off and leaves TLS 1.2
    /// on the default list **[live]**. An empty minimum version is the
    /// default, without a warning **[live]**.
    ///
    /// Never fails: problems become warnings, and a configuration with
    /// nothing left to negotiate is marked unusable (see module docs).
    pub fn from_cfengine(
        role: Role,
        ciphers: Option<&str>,
        min_version: Option<&str>,
    ) -> (TlsSettings, Vec<TlsWarning>) {
        let mut warnings = Vec::new();
        let cset = role.ciphers_setting();
        let vset = role.version_setting();

        // --- minimum version -------------------------------------------------
        let min_version = match min_version {
            // unset or empty: CFEngine's default 1.1 [live: "" logs no
            // warning]; silently 1.2 here
            None | Some("") => TlsVersion::Tls12,
            Some("1.3") => TlsVersion::Tls13,
            Some("1.2") => TlsVersion::Tls12,
            Some(v @ ("1.0" | "1.1")) => {
                warnings.push(TlsWarning {
                    setting: vset,
                    kind: TlsWarningKind::VersionRaised(v.to_string()),
                });
                TlsVersion::Tls12
            }
            Some(other) => {
                warnings.push(TlsWarning {
                    setting: vset,
                    kind: TlsWarningKind::UnrecognizedVersion(other.to_string()),
                });
                TlsVersion::Tls12
            }
        };

        // --- cipher list -----------------------------------------------------
        let parsed = match (role, ciphers) {
            (Role::Client, None) => Parsed {
                tls13: TLS13_MAP.iter().map(|(_, s)| *s).collect(),
                tls12: TLS12_MAP.iter().map(|(_, s)| *s).collect(),
                fatal: None,
            },
            (Role::Server, None) => {
                parse_list(cset, CFENGINE_SERVER_DEFAULT_CIPHERS, &mut warnings)
            }
            (_, Some(list)) => parse_list(cset, list, &mut warnings),
        };

        let mut settings = TlsSettings {
            role,
            tls13: parsed.tls13,
            tls12: parsed.tls12,
            min_version,
            unusable: None,
        };
        if let Some(err) = parsed.fatal {
            // cf-serverd 3.21 would log this error and not listen at all.
            warnings.push(TlsWarning {
                setting: cset,
                kind: TlsWarningKind::Unusable(format!(
                    "{err} (CFEngine 3.21 refuses to start with this list)"
                )),
            });
            settings.unusable = Some(format!("{cset}: {err}"));
            return (settings, warnings);
        }

        // --- anything left? --------------------------------------------------
        let can13 = !settings.tls13.is_empty();
        let rsa12 = settings.tls12.iter().any(|s| !is_ecdsa(*s));
        let can12 = rsa12 && settings.min_version <= TlsVersion::Tls12;
        if !can13 && !can12 {
            let why = if settings.tls13.is_empty() && settings.tls12.is_empty() {
                format!("no cipher in {cset} is implemented by rustls")
            } else if settings.min_version == TlsVersion::Tls13 {
                format!("{vset} requires TLS 1.3 but {cset} has no usable TLS 1.3 suite")
            } else {
                format!("{cset} leaves only ECDSA suites, which RSA host keys cannot use")
            };
            warnings.push(TlsWarning {
                setting: cset,
                kind: TlsWarningKind::Unusable(why.clone()),
            });
            settings.unusable = Some(format!("{cset}/{vset}: {why}"));
        }
        (settings, warnings)
    }

    /// True when no handshake can succeed; servers must still listen and
    /// refuse each handshake with an alert.
    pub fn is_unusable(&self) -> bool {
        self.unusable.is_some()
    }

    /// Why the settings are unusable, naming the settings concerned.
    pub fn unusable_reason(&self) -> Option<&str> {
        self.unusable.as_deref()
    }

    /// Side the settings were parsed for.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Effective minimum version.
    pub fn min_version(&self) -> TlsVersion {
        self.min_version
    }

    /// TLS 1.3 suites, in preference order; empty means TLS 1.3 is off.
    pub fn tls13_suites(&self) -> &[SupportedCipherSuite] {
        &self.tls13
    }

    /// TLS 1.2 suites, in preference order (empty, or ignored when the
    /// minimum is 1.3).
    pub fn tls12_suites(&self) -> &[SupportedCipherSuite] {
        &self.tls12
    }

    /// Protocol versions to enable in rustls.
    pub fn versions(&self) -> Vec<&'static rustls::SupportedProtocolVersion> {
        let mut v = Vec::new();
        if !self.tls13.is_empty() {
            v.push(&rustls::version::TLS13);
        }
        if !self.tls12.is_empty() && self.min_version <= TlsVersion::Tls12 {
            v.push(&rustls::version::TLS12);
        }
        v
    }

    /// Cipher suites to give the rustls crypto provider, TLS 1.3 first.
    pub fn suites(&self) -> Vec<SupportedCipherSuite> {
        let mut v = self.tls13.clone();
        if self.min_version <= TlsVersion::Tls12 {
            v.extend(self.tls12.iter().copied());
        }
        v
    }
}

fn is_ecdsa(s: SupportedCipherSuite) -> bool {
    TLS12_MAP
        .iter()
        .any(|(n, x)| n.starts_with("ECDHE-ECDSA") && x.suite() == s.suite())
}

fn push_unique(v: &mut Vec<SupportedCipherSuite>, s: SupportedCipherSuite) {
    if !v.iter().any(|x| x.suite() == s.suite()) {
        v.push(s);
    }
}

/// Result of parsing a cipher list.
struct Parsed {
    tls13: Vec<SupportedCipherSuite>,
    tls12: Vec<SupportedCipherSuite>,
    /// CFEngine's own start-up error for this list, if 3.21 refuses it.
    fatal: Option<String>,
}

/// Splits an OpenSSL-style list the way CFEngine does and maps each name.
///
/// Live behaviour of 3.21 + OpenSSL 3.0 that this mirrors:
/// * no `TLS_*` name → TLS 1.3 disabled;
/// * no other name (e.g. `"TLS_AES_256_GCM_SHA384"` or `""`) → TLS 1.2 keeps
///   OpenSSL's default list (ECDHE and static RSA both work);
/// * unknown names are ignored as long as one valid name of the same kind
///   remains; otherwise cf-serverd logs `No valid ciphers in the cipher
///   list: %s` / `No valid cipher suites in the list: %s` and never
///   listens. We listen and refuse instead (see module docs).
fn parse_list(setting: &'static str, list: &str, warnings: &mut Vec<TlsWarning>) -> Parsed {
    let mut tls13 = Vec::new();
    let mut tls12 = Vec::new();
    let (mut saw13, mut valid13, mut saw12, mut valid12) = (false, false, false, false);
    let warn = |w: &mut Vec<TlsWarning>, kind| w.push(TlsWarning { setting, kind });

    for raw in list.split(':') {
        let tok = raw.trim();
        if tok.is_empty() {
            continue;
        }
        if tok.starts_with("TLS_") {
            saw13 = true;
            match TLS13_MAP.iter().find(|(n, _)| *n == tok) {
                Some((_, s)) => {
                    valid13 = true;
                    push_unique(&mut tls13, *s);
                }
                None => match classify_unsupported(tok) {
                    Some(why) => {
                        valid13 = true; // OpenSSL knows it, rustls does not
                        warn(
                            warnings,
                            TlsWarningKind::UnsupportedByDesign {
                                name: tok.into(),
                                why,
                            },
                        );
                    }
                    None => warn(warnings, TlsWarningKind::UnknownCipher(tok.into())),
                },
            }
            continue;
        }
        saw12 = true;
        if let Some(rest) = tok.strip_prefix('!').or_else(|| tok.strip_prefix('-')) {
            // removal: of an exact name or of an alias we expand
            if ALL_TLS12_ALIASES.contains(&rest) {
                tls12.clear();
            } else if let Some((_, s)) = TLS12_MAP.iter().find(|(n, _)| *n == rest) {
                tls12.retain(|x: &SupportedCipherSuite| x.suite() != s.suite());
            } else {
                warn(warnings, TlsWarningKind::NotInterpreted(tok.into()));
            }
            continue;
        }
        if tok.starts_with('+') || tok.starts_with('@') {
            warn(warnings, TlsWarningKind::NotInterpreted(tok.into()));
            continue;
        }
        if let Some((n, s)) = TLS12_MAP.iter().find(|(n, _)| *n == tok) {
            valid12 = true;
            push_unique(&mut tls12, *s);
            if n.starts_with("ECDHE-ECDSA") {
                warn(warnings, TlsWarningKind::EcdsaNeedsEcdsaKey(tok.into()));
            }
            continue;
        }
        if ALL_TLS12_ALIASES.contains(&tok) {
            valid12 = true;
            for (_, s) in TLS12_MAP.iter() {
                push_unique(&mut tls12, *s);
            }
            continue;
        }
        match classify_unsupported(tok) {
            Some(why) => {
                valid12 = true;
                warn(
                    warnings,
                    TlsWarningKind::UnsupportedByDesign {
                        name: tok.into(),
                        why,
                    },
                );
            }
            None => warn(warnings, TlsWarningKind::UnknownCipher(tok.into())),
        }
    }
    if !saw13 {
        warn(warnings, TlsWarningKind::Tls13Disabled);
    }
    if !saw12 {
        tls12 = TLS12_MAP.iter().map(|(_, s)| *s).collect();
        warn(warnings, TlsWarningKind::Tls12Defaults);
    }
    let fatal = if saw12 && !valid12 {
        Some(format!("No valid ciphers in the cipher list: {list}"))
    } else if saw13 && !valid13 {
        Some(format!("No valid cipher suites in the list: {list}"))
    } else {
        None
    };
    Parsed {
        tls13,
        tls12,
        fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[SupportedCipherSuite]) -> Vec<&'static str> {
        v.iter().map(|s| openssl_name(*s)).collect()
    }

    fn kinds(w: &[TlsWarning]) -> Vec<TlsWarningKind> {
        w.iter().map(|w| w.kind.clone()).collect()
    }

    #[test]
    fn server_default_is_tls13_aes256_only_with_static_rsa_warnings() {
        let (s, w) = TlsSettings::server_default();
        assert!(!s.is_unusable());
        assert_eq!(names(s.tls13_suites()), ["TLS_AES_256_GCM_SHA384"]);
        assert!(s.tls12_suites().is_empty());
        assert_eq!(s.versions(), vec![&rustls::version::TLS13]);
        assert_eq!(
            kinds(&w),
            vec![
                TlsWarningKind::UnsupportedByDesign {
                    name: "AES256-GCM-SHA384".into(),
                    why: "static RSA key exchange"
                },
                TlsWarningKind::UnsupportedByDesign {
                    name: "AES256-SHA".into(),
                    why: "static RSA key exchange"
                },
            ]
        );
        assert!(w[0].to_string().contains("unsupported by design"));
        assert!(w[0].to_string().starts_with("allowciphers: "));
    }

    #[test]
    fn client_default_is_openssl_like() {
        let s = TlsSettings::client_default();
        assert_eq!(
            names(s.tls13_suites()),
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(s.tls12_suites().len(), 6);
        assert_eq!(s.versions().len(), 2);
        assert_eq!(s.min_version(), TlsVersion::Tls12);
    }

    #[test]
    fn cipher_list_table() {
        // (list, tls13 names, tls12 names, unusable, tls13-disabled warning)
        const ALL12: &[&str] = &[
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-CHACHA20-POLY1305",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ];
        // (list, tls13 names, tls12 names, unusable, tls13-disabled warning)
        type Row = (
            &'static str,
            &'static [&'static str],
            &'static [&'static str],
            bool,
            bool,
        );
        let table: &[Row] = &[
            // only TLS_ names: TLS 1.2 keeps the default list [live]
            (
                "TLS_AES_256_GCM_SHA384",
                &["TLS_AES_256_GCM_SHA384"],
                ALL12,
                false,
                false,
            ),
            ("AES256-GCM-SHA384:AES256-SHA", &[], &[], true, true),
            (
                "ECDHE-RSA-AES256-GCM-SHA384",
                &[],
                &["ECDHE-RSA-AES256-GCM-SHA384"],
                false,
                true,
            ),
            (
                "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:TLS_AES_128_GCM_SHA256",
                &["TLS_AES_128_GCM_SHA256"],
                &["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"],
                false,
                false,
            ),
            (
                "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:AES256-SHA",
                &["TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_256_GCM_SHA384"],
                &[],
                false,
                false,
            ),
            (
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                &[],
                &["ECDHE-ECDSA-AES256-GCM-SHA384"],
                true,
                true,
            ),
            (
                "DHE-RSA-AES256-GCM-SHA384:AES128-SHA:AES256-SHA256",
                &[],
                &[],
                true,
                true,
            ),
            (
                "HIGH:!ECDHE-ECDSA-AES128-GCM-SHA256",
                &[],
                &[
                    "ECDHE-RSA-AES256-GCM-SHA384",
                    "ECDHE-RSA-AES128-GCM-SHA256",
                    "ECDHE-RSA-CHACHA20-POLY1305",
                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-ECDSA-CHACHA20-POLY1305",
                ],
                false,
                true,
            ),
            // empty: TLS 1.3 off, TLS 1.2 on OpenSSL defaults [live]
            ("", &[], ALL12, false, true),
            ("TLS_AES_128_CCM_SHA256:AES256-SHA", &[], &[], true, false),
            (
                " TLS_AES_256_GCM_SHA384 : ECDHE-RSA-AES256-GCM-SHA384 ",
                &["TLS_AES_256_GCM_SHA384"],
                &["ECDHE-RSA-AES256-GCM-SHA384"],
                false,
                false,
            ),
            // unknown names are ignored while a valid one of the same kind remains [live]
            (
                "FOO-BAR:ECDHE-RSA-AES256-GCM-SHA384",
                &[],
                &["ECDHE-RSA-AES256-GCM-SHA384"],
                false,
                true,
            ),
            (
                "TLS_FOO:TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384",
                &["TLS_AES_256_GCM_SHA384"],
                &["ECDHE-RSA-AES256-GCM-SHA384"],
                false,
                false,
            ),
        ];
        for (list, t13, t12, unusable, disabled13) in table {
            let (s, w) = TlsSettings::from_cfengine(Role::Server, Some(list), None);
            assert_eq!(names(s.tls13_suites()), *t13, "tls13 for {list:?}");
            assert_eq!(names(s.tls12_suites()), *t12, "tls12 for {list:?}");
            assert_eq!(s.is_unusable(), *unusable, "unusable for {list:?}: {w:?}");
            assert_eq!(
                kinds(&w).contains(&TlsWarningKind::Tls13Disabled),
                *disabled13,
                "tls13 disabled for {list:?}"
            );
            let n_unusable = w
                .iter()
                .filter(|w| matches!(w.kind, TlsWarningKind::Unusable(_)))
                .count();
            assert_eq!(
                n_unusable,
                usize::from(*unusable),
                "exactly one unusable warning for {list:?}"
            );
        }
    }

    #[test]
    fn unsupported_names_are_reported_with_reason() {
        let (_, w) = TlsSettings::from_cfengine(
            Role::Client,
            Some("AES256-GCM-SHA384:AES256-SHA:AES128-GCM-SHA256:AES128-SHA:AES256-SHA256:DHE-RSA-AES256-SHA:ECDHE-RSA-AES256-SHA384:FOO-BAR:@STRENGTH:TLS_AES_256_GCM_SHA384"),
            None,
        );
        let k = kinds(&w);
        let why = |n: &str| {
            k.iter().find_map(|k| match k {
                TlsWarningKind::UnsupportedByDesign { name, why } if name == n => Some(*why),
                _ => None,
            })
        };
        assert_eq!(why("AES256-GCM-SHA384"), Some("static RSA key exchange"));
        assert_eq!(why("AES256-SHA"), Some("static RSA key exchange"));
        assert_eq!(why("AES128-GCM-SHA256"), Some("static RSA key exchange"));
        assert_eq!(why("AES128-SHA"), Some("static RSA key exchange"));
        assert_eq!(why("AES256-SHA256"), Some("static RSA key exchange"));
        assert_eq!(why("DHE-RSA-AES256-SHA"), Some("DHE key exchange"));
        assert_eq!(why("ECDHE-RSA-AES256-SHA384"), Some("CBC mode"));
        assert!(k.contains(&TlsWarningKind::UnknownCipher("FOO-BAR".into())));
        assert!(k.contains(&TlsWarningKind::NotInterpreted("@STRENGTH".into())));
        assert!(w.iter().all(|w| w.setting == "tls_ciphers"));
    }

    #[test]
    fn min_version_table() {
        let table: &[(Option<&str>, TlsVersion, Option<TlsWarningKind>)] = &[
            (None, TlsVersion::Tls12, None),
            (Some("1.3"), TlsVersion::Tls13, None),
            (Some("1.2"), TlsVersion::Tls12, None),
            (
                Some("1.1"),
                TlsVersion::Tls12,
                Some(TlsWarningKind::VersionRaised("1.1".into())),
            ),
            (
                Some("1.0"),
                TlsVersion::Tls12,
                Some(TlsWarningKind::VersionRaised("1.0".into())),
            ),
            (
                Some("TLSv1.2"),
                TlsVersion::Tls12,
                Some(TlsWarningKind::UnrecognizedVersion("TLSv1.2".into())),
            ),
            // live: an empty allowtlsversion is the default, no warning
            (Some(""), TlsVersion::Tls12, None),
        ];
        for (v, expect, warn) in table {
            let (s, w) = TlsSettings::from_cfengine(
                Role::Server,
                Some("TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384"),
                *v,
            );
            assert_eq!(s.min_version(), *expect, "{v:?}");
            assert_eq!(kinds(&w), warn.iter().cloned().collect::<Vec<_>>(), "{v:?}");
        }
        let (_, w) = TlsSettings::from_cfengine(
            Role::Server,
            Some("TLS_AES_256_GCM_SHA384:AES256-SHA"),
            Some("TLSv1.2"),
        );
        assert!(w[0]
            .to_string()
            .contains("Unrecognized requested minimum TLS version 'TLSv1.2', using the minimum required version 1.0."));
        assert_eq!(w[0].setting, "allowtlsversion");
        let (_, w) = TlsSettings::from_cfengine(
            Role::Client,
            Some("TLS_AES_256_GCM_SHA384:AES256-SHA"),
            Some("1.0"),
        );
        assert!(w[0].to_string().starts_with(
            "tls_min_version: Minimum requested TLS version is 1.0, but minimum version recommended by CFEngine is 1.1."
        ));
    }

    #[test]
    fn lists_cfengine_refuses_are_unusable_with_cfengine_message() {
        // 3.21 logs these errors and never listens [live]; we listen and refuse.
        for (list, msg) in [
            ("FOO-BAR", "No valid ciphers in the cipher list: FOO-BAR"),
            (
                "TLS_FOO:ECDHE-RSA-AES256-GCM-SHA384",
                "No valid cipher suites in the list: TLS_FOO:ECDHE-RSA-AES256-GCM-SHA384",
            ),
            ("TLS_FOO", "No valid cipher suites in the list: TLS_FOO"),
        ] {
            let (s, w) = TlsSettings::from_cfengine(Role::Server, Some(list), None);
            assert!(s.is_unusable(), "{list}");
            assert!(
                s.unusable_reason().unwrap().contains(msg),
                "{list}: {:?}",
                s.unusable_reason()
            );
            let unusable: Vec<_> = w
                .iter()
                .filter(|w| matches!(w.kind, TlsWarningKind::Unusable(_)))
                .collect();
            assert_eq!(unusable.len(), 1, "{list}");
            assert!(unusable[0].to_string().starts_with("allowciphers: "));
        }
    }

    #[test]
    fn min_13_without_tls13_is_unusable_and_min_13_drops_tls12() {
        let (s, w) = TlsSettings::from_cfengine(
            Role::Server,
            Some("ECDHE-RSA-AES256-GCM-SHA384"),
            Some("1.3"),
        );
        assert!(s.is_unusable());
        assert!(s.unusable_reason().unwrap().contains("allowtlsversion"));
        assert!(w
            .iter()
            .any(|w| matches!(w.kind, TlsWarningKind::Unusable(_))));
        let (s, _) = TlsSettings::from_cfengine(
            Role::Server,
            Some("ECDHE-RSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384"),
            Some("1.3"),
        );
        assert!(!s.is_unusable());
        assert_eq!(s.versions(), vec![&rustls::version::TLS13]);
        assert_eq!(names(&s.suites()), ["TLS_AES_256_GCM_SHA384"]);
    }
}
