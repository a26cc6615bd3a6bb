//! [`PolicyView`] over a loaded [`ServerPolicy`]: the TLS rule set of
//! SEMANTICS.md B.5 as the session consults it.

use crate::policy::{ConnFacts, Protocol, Request, ServerPolicy};

use super::view::{Peer, PolicyView, ResourceKind, Verdict};

fn facts<'a>(peer: &'a Peer) -> ConnFacts<'a> {
    ConnFacts {
        ip: &peer.ip,
        hostname: peer.hostname.as_deref(),
        key: &peer.key_id,
        username: &peer.username,
        protocol: Protocol::Tls,
        encrypted: true,
    }
}

/// The rule in words: the resource alone when granted (checked for every
/// request; formatting the reason there showed up in profiles), with the
/// reason when denied.
fn decision(d: crate::policy::Decision) -> Verdict {
    let resource = d.resource.unwrap_or_default();
    // Shown as bytes with U+FFFD; no allocation for the common UTF-8 name.
    let resource = match crate::bytestr::display(&resource) {
        std::borrow::Cow::Borrowed(_) => resource,
        std::borrow::Cow::Owned(shown) => shown,
    };
    let rule = if d.allowed {
        resource
    } else {
        format!("{resource} ({:?})", d.reason)
    };
    Verdict {
        allowed: d.allowed,
        rule,
    }
}

impl PolicyView for ServerPolicy {
    /// Bytes in and out through [`crate::bytestr`], so a shortcut or a
    /// request holding bytes that are not UTF-8 expands as in 3.21.
    fn expand_shortcut(&self, path: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        let p = crate::bytestr::encode(path);
        ServerPolicy::expand_shortcut(self, &p, &peer.ip, peer.hostname.as_deref(), &peer.key_id)
            .map(|t| crate::bytestr::decode(&t).into_owned())
    }

    /// Paths are bytes (3.21 compares them as C strings): a path that is
    /// not UTF-8 is matched through its lossless [`crate::bytestr`]
    /// encoding, the same one the policy text was read with.
    fn check_path(&self, path: &[u8], peer: &Peer) -> Verdict {
        let p = crate::bytestr::encode(path);
        decision(self.check(&facts(peer), Request::Path(&p)))
    }

    fn check_name(&self, resource: ResourceKind, name: &[u8], peer: &Peer) -> Verdict {
        let Ok(n) = std::str::from_utf8(name) else {
            return Verdict::no_rule();
        };
        let req = match resource {
            ResourceKind::Literal => Request::Literal(n),
            ResourceKind::Query => Request::Query(n),
            ResourceKind::Context => Request::Context(n),
            ResourceKind::Bundle => Request::Bundle(n),
            ResourceKind::Role => Request::Role(n),
        };
        decision(self.check(&facts(peer), req))
    }

    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.control.trustkeysfrom.contains(ip)
    }

    fn deny_bad_clocks(&self) -> bool {
        self.control.denybadclocks
    }

    fn needs_reverse_dns(&self) -> bool {
        self.reverse_dns
    }

    fn cfruncommand(&self) -> &str {
        &self.control.cfruncommand
    }

    fn user_may_exec(&self, user: &str) -> bool {
        self.allows_exec_user(user)
    }

    fn class_defined(&self, name: &str) -> bool {
        self.defines_class(name)
    }
}
