//! What a server session needs to know from the loaded policy.
//!
//! The session sees the policy only through this trait, so reloading means
//! handing sessions a new `Arc<dyn PolicyView>` between requests, and tests
//! can use a small table instead of a parsed policy file.

/// Facts about the peer that access rules match on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Peer {
    /// Numeric IP, `::ffff:` already stripped.
    pub ip: String,
    /// Reverse-DNS name, when looked up and found.
    pub hostname: Option<String>,
    /// `MD5=…` id of the peer's key.
    pub key_id: String,
    /// IDENTITY username (empty when none was given).
    pub username: String,
}

/// Which ACL table a name-based lookup goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// `resource_type => "literal"`, keyed by handle (VAR).
    Literal,
    /// `resource_type => "query"` (QUERY, COOKIE, SCALLBACK).
    Query,
    /// `resource_type => "context"`, regex over class names (CONTEXT).
    Context,
    /// `resource_type => "bundle"`, regex over bundle names (EXEC `-b`).
    Bundle,
    /// `roles:` promises, regex over class names, admitted by username (EXEC `-D`).
    Role,
}

/// The session-facing access verdict (path or name ACL): granted or not, and
/// the deciding rule in words for logs and `--explain`. (The policy's own,
/// richer result is `policy::acl::Decision`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether access is granted.
    pub allowed: bool,
    /// Which rule decided, in words (empty when none matched).
    pub rule: String,
}

impl Verdict {
    /// A denial because no rule matched.
    pub fn no_rule() -> Self {
        Verdict {
            allowed: false,
            rule: String::new(),
        }
    }
}

/// The policy, as a server session consults it. No method has a default:
/// a wrapper that forgot one would silently answer "deny" for it.
pub trait PolicyView: Send + Sync {
    /// Expand a relative request path through the `shortcut` map, with
    /// `$(connection.*)` substituted. `None` when no shortcut matches.
    fn expand_shortcut(&self, path: &[u8], peer: &Peer) -> Option<Vec<u8>>;
    /// The TLS path ACL for a canonical path (trailing `/` for directories).
    fn check_path(&self, path: &[u8], peer: &Peer) -> Verdict;
    /// A name-based ACL lookup.
    fn check_name(&self, resource: ResourceKind, name: &[u8], peer: &Peer) -> Verdict;
    /// Whether an unknown or changed key from this IP may be trusted (`trustkeysfrom`).
    fn trusts_keys_from(&self, ip: &str) -> bool;
    /// `denybadclocks` (default true).
    fn deny_bad_clocks(&self) -> bool;
    /// Whether any rule names a host, so each connection needs a reverse lookup.
    fn needs_reverse_dns(&self) -> bool;
    /// `cfruncommand`, empty when unset (EXEC then always fails).
    fn cfruncommand(&self) -> &str;
    /// Whether `user` may EXEC (`allowusers`). An empty username never may:
    /// 3.21 lets it through (its `IsItemIn` quirk), we do not.
    fn user_may_exec(&self, user: &str) -> bool;
    /// Whether `name` is, or as a regex fully matches, a class defined on
    /// this server (cf-runagent's `-s` selection).
    fn class_defined(&self, name: &str) -> bool;
}
