//! Policy text: server `promises.cf` and client copy policies.

use std::fmt::Write;
use std::path::PathBuf;

/// The loopback addresses used in ACLs by default.
pub const LOOPBACKS: [&str; 2] = ["127.0.0.1", "::1"];

/// Quote `s` as a CFEngine string literal (`"` and `\` escaped).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `{ "a", "b" }`.
fn slist<S: AsRef<str>>(items: &[S]) -> String {
    let inner: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("{{ {} }}", inner.join(", "))
}

fn loopbacks() -> Vec<String> {
    LOOPBACKS.iter().map(|s| s.to_string()).collect()
}

/// One `access:` promise of `bundle server`. Empty lists and `None`s are
/// left out of the rendered policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessRule {
    /// The promiser: a path, or a query/variable name with `resource_type`.
    pub path: String,
    pub admit_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub admit_keys: Vec<String>,
    pub deny_keys: Vec<String>,
    pub admit_hostnames: Vec<String>,
    pub deny_hostnames: Vec<String>,
    /// The deprecated catch-all `admit` (IPs, names or keys).
    pub admit: Vec<String>,
    /// The deprecated catch-all `deny`.
    pub deny: Vec<String>,
    pub maproot: Vec<String>,
    pub shortcut: Option<String>,
    /// `path` (default), `literal`, `context`, `query`, `variable`, `bundle`.
    pub resource_type: Option<String>,
    pub handle: Option<String>,
    /// `ifencrypted => "true"/"false"`.
    pub ifencrypted: Option<bool>,
    /// Raw extra attributes, e.g. `report_data_select => ...` (no trailing comma).
    pub extra: Vec<String>,
}

impl AccessRule {
    /// A rule for `path` with nothing set.
    pub fn new(path: impl Into<String>) -> AccessRule {
        AccessRule {
            path: path.into(),
            ..Default::default()
        }
    }

    /// `path` admitted to 127.0.0.1 and ::1 (`admit_ips`).
    pub fn admit_loopback(path: impl Into<String>) -> AccessRule {
        AccessRule {
            admit_ips: loopbacks(),
            ..AccessRule::new(path)
        }
    }

    /// `path` denied to 127.0.0.1 and ::1 (`deny_ips`).
    pub fn deny_loopback(path: impl Into<String>) -> AccessRule {
        AccessRule {
            deny_ips: loopbacks(),
            ..AccessRule::new(path)
        }
    }

    /// The promise text (indented for an `access:` section).
    pub fn render(&self) -> String {
        let mut attrs: Vec<String> = Vec::new();
        let lists: [(&str, &Vec<String>); 9] = [
            ("admit_ips", &self.admit_ips),
            ("deny_ips", &self.deny_ips),
            ("admit_keys", &self.admit_keys),
            ("deny_keys", &self.deny_keys),
            ("admit_hostnames", &self.admit_hostnames),
            ("deny_hostnames", &self.deny_hostnames),
            ("admit", &self.admit),
            ("deny", &self.deny),
            ("maproot", &self.maproot),
        ];
        for (k, v) in lists {
            if !v.is_empty() {
                attrs.push(format!("{k} => {}", slist(v)));
            }
        }
        for (k, v) in [
            ("shortcut", &self.shortcut),
            ("resource_type", &self.resource_type),
            ("handle", &self.handle),
        ] {
            if let Some(v) = v {
                attrs.push(format!("{k} => {}", quote(v)));
            }
        }
        if let Some(b) = self.ifencrypted {
            attrs.push(format!("ifencrypted => \"{b}\""));
        }
        attrs.extend(self.extra.iter().cloned());
        let mut s = format!("    {}", quote(&self.path));
        if attrs.is_empty() {
            s.push_str(";\n");
        } else {
            s.push('\n');
            s.push_str(
                &attrs
                    .iter()
                    .map(|a| format!("      {a}"))
                    .collect::<Vec<_>>()
                    .join(",\n"),
            );
            s.push_str(";\n");
        }
        s
    }
}

/// A server policy for the real `cf-serverd`. [`ServerPolicy::new`] gives
/// the lab defaults (mirroring `cfe-lab.sh`, except `allowlegacyconnects`,
/// left empty = CFEngine's own default: classic protocol refused).
/// Empty lists and `None`s are left out of the rendered policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// 0 = let [`RealServer::start`](super::RealServer::start) pick a free port.
    pub port: u16,
    /// `bindtointerface` (must be loopback; default `127.0.0.1`).
    pub bind: String,
    /// default 127.0.0.1, ::1
    pub allowconnects: Vec<String>,
    pub denyconnects: Vec<String>,
    /// default 127.0.0.1, ::1
    pub allowallconnects: Vec<String>,
    /// default 127.0.0.1, ::1
    pub trustkeysfrom: Vec<String>,
    /// default empty (classic refused)
    pub allowlegacyconnects: Vec<String>,
    /// default root
    pub allowusers: Vec<String>,
    pub allowciphers: Option<String>,
    pub allowtlsversion: Option<String>,
    pub cfruncommand: Option<String>,
    pub maxconnections: Option<u32>,
    /// Raw lines appended inside `body server control` (end each with `;`).
    pub extra_control: String,
    /// `access:` promises, in order.
    pub access: Vec<AccessRule>,
    /// `roles:` promises: (class regex, users authorized).
    pub roles: Vec<(String, Vec<String>)>,
    /// Raw policy appended at the end (more bundles and bodies).
    pub extra_bundles: String,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        ServerPolicy::new(0)
    }
}

impl ServerPolicy {
    /// Lab defaults on `port` (0 = pick one at start), no access rules.
    pub fn new(port: u16) -> ServerPolicy {
        ServerPolicy {
            port,
            bind: "127.0.0.1".into(),
            allowconnects: loopbacks(),
            denyconnects: vec![],
            allowallconnects: loopbacks(),
            trustkeysfrom: loopbacks(),
            allowlegacyconnects: vec![],
            allowusers: vec!["root".into()],
            allowciphers: None,
            allowtlsversion: None,
            cfruncommand: None,
            maxconnections: None,
            extra_control: String::new(),
            access: vec![],
            roles: vec![],
            extra_bundles: String::new(),
        }
    }

    /// Add `AccessRule::admit_loopback(path)` (builder style).
    pub fn admit(mut self, path: impl Into<String>) -> Self {
        self.access.push(AccessRule::admit_loopback(path));
        self
    }

    /// The `promises.cf` file as written: [`render`](ServerPolicy::render)'s
    /// text taken as an `rcf_core::bytestr` encoding, so a promiser built
    /// with `bytestr::encode(b"/srv/d\xff")` is written as those raw bytes
    /// (for both servers; text without escapes is unchanged).
    pub fn render_bytes(&self) -> Vec<u8> {
        rcf_core::bytestr::decode(&self.render()).into_owned()
    }

    /// The `promises.cf` text. It includes a no-op `bundlesequence` bundle:
    /// an empty bundlesequence fails `cf-promises -c`, which sends
    /// cf-serverd to failsafe.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# generated by rcf_conformance::lab\n");
        s.push_str("body common control\n{\n  bundlesequence => { \"rcflab_noop\" };\n}\n\n");
        s.push_str("bundle agent rcflab_noop\n{\n  vars:\n    \"noop\" string => \"noop\";\n}\n\n");
        s.push_str("body server control\n{\n");
        let _ = writeln!(s, "  port => \"{}\";", self.port);
        let _ = writeln!(s, "  bindtointerface => {};", quote(&self.bind));
        for (k, v) in [
            ("allowconnects", &self.allowconnects),
            ("denyconnects", &self.denyconnects),
            ("allowallconnects", &self.allowallconnects),
            ("trustkeysfrom", &self.trustkeysfrom),
            ("allowlegacyconnects", &self.allowlegacyconnects),
            ("allowusers", &self.allowusers),
        ] {
            if !v.is_empty() {
                let _ = writeln!(s, "  {k} => {};", slist(v));
            }
        }
        for (k, v) in [
            ("allowciphers", &self.allowciphers),
            ("allowtlsversion", &self.allowtlsversion),
            ("cfruncommand", &self.cfruncommand),
        ] {
            if let Some(v) = v {
                let _ = writeln!(s, "  {k} => {};", quote(v));
            }
        }
        if let Some(n) = self.maxconnections {
            let _ = writeln!(s, "  maxconnections => \"{n}\";");
        }
        if !self.extra_control.is_empty() {
            s.push_str(&self.extra_control);
            if !self.extra_control.ends_with('\n') {
                s.push('\n');
            }
        }
        s.push_str("}\n\n");
        if !self.access.is_empty() || !self.roles.is_empty() {
            s.push_str("bundle server rcflab_access\n{\n");
            if !self.access.is_empty() {
                s.push_str("  access:\n");
                for r in &self.access {
                    s.push_str(&r.render());
                }
            }
            if !self.roles.is_empty() {
                s.push_str("  roles:\n");
                for (class, users) in &self.roles {
                    let _ = writeln!(
                        s,
                        "    {}\n      authorize => {};",
                        quote(class),
                        slist(users)
                    );
                }
            }
            s.push_str("}\n\n");
        }
        s.push_str(&self.extra_bundles);
        s
    }
}

/// One `files: copy_from` promise for the real `cf-agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// `servers => { server }` (default `127.0.0.1`).
    pub server: String,
    /// `portnumber`.
    pub port: u16,
    /// `source`: the remote path.
    pub source: String,
    /// The promiser: the local destination (parent dirs are created).
    pub dest: PathBuf,
    /// `protocol_version`: "classic"/"1", "2"/"tls", "3"/"cookie", "latest"; None = unset.
    pub protocol: Option<String>,
    /// `trustkey` (default true: trust the server key on first use).
    pub trustkey: bool,
    /// `encrypt` (default false).
    pub encrypt: bool,
    /// `compare` (default `digest`, like cfe-lab.sh; None = CFEngine's mtime).
    pub compare: Option<String>,
    /// `verify` (default false).
    pub verify: bool,
    /// Add `depth_search` (default false).
    pub recurse: bool,
    /// `depth` for `depth_search` (default "inf").
    pub depth: Option<String>,
    /// `purge` (default false).
    pub purge: bool,
    /// `missing_ok` (default false).
    pub missing_ok: bool,
    /// `preserve` (default false).
    pub preserve: bool,
    /// `copy_backup`; default false (no `.cfsaved` files next to the copies).
    pub backup: bool,
    /// Raw lines added inside the `copy_from` body (end each with `;`).
    pub extra_body: String,
    /// Raw extra promise attributes (no trailing comma), e.g. `perms => m("600")`.
    pub promise_attrs: Vec<String>,
}

impl CopySpec {
    /// Copy `source` from `127.0.0.1:port` to `dest`, with the defaults above.
    pub fn new(port: u16, source: impl Into<String>, dest: impl Into<PathBuf>) -> CopySpec {
        CopySpec {
            server: "127.0.0.1".into(),
            port,
            source: source.into(),
            dest: dest.into(),
            protocol: None,
            trustkey: true,
            encrypt: false,
            compare: Some("digest".into()),
            verify: false,
            recurse: false,
            depth: None,
            purge: false,
            missing_ok: false,
            preserve: false,
            backup: false,
            extra_body: String::new(),
            promise_attrs: vec![],
        }
    }

    /// Builder: set `protocol_version`.
    pub fn protocol(mut self, p: &str) -> Self {
        self.protocol = Some(p.into());
        self
    }

    /// Builder: recursive copy (`depth_search => inf`), optionally purging.
    pub fn recursive(mut self, purge: bool) -> Self {
        self.recurse = true;
        self.purge = purge;
        self
    }

    /// Bodies (copy_from, depth_search, classes) named with index `i`.
    pub(crate) fn render_bodies(&self, i: usize) -> String {
        let mut s = String::new();
        let b = |v: bool| if v { "true" } else { "false" };
        let _ = writeln!(s, "body copy_from rcflab_copy_{i}\n{{");
        let _ = writeln!(s, "  servers => {{ {} }};", quote(&self.server));
        let _ = writeln!(s, "  source => {};", quote(&self.source));
        let _ = writeln!(s, "  portnumber => \"{}\";", self.port);
        if let Some(p) = &self.protocol {
            let _ = writeln!(s, "  protocol_version => {};", quote(p));
        }
        let _ = writeln!(s, "  trustkey => \"{}\";", b(self.trustkey));
        let _ = writeln!(s, "  encrypt => \"{}\";", b(self.encrypt));
        if let Some(c) = &self.compare {
            let _ = writeln!(s, "  compare => {};", quote(c));
        }
        let _ = writeln!(s, "  verify => \"{}\";", b(self.verify));
        if self.purge {
            s.push_str("  purge => \"true\";\n");
        }
        if self.missing_ok {
            s.push_str("  missing_ok => \"true\";\n");
        }
        if self.preserve {
            s.push_str("  preserve => \"true\";\n");
        }
        if !self.backup {
            s.push_str("  copy_backup => \"false\";\n");
        }
        if !self.extra_body.is_empty() {
            s.push_str(&self.extra_body);
            if !self.extra_body.ends_with('\n') {
                s.push('\n');
            }
        }
        s.push_str("}\n\n");
        if self.recurse {
            let depth = self.depth.as_deref().unwrap_or("inf");
            let _ = writeln!(
                s,
                "body depth_search rcflab_depth_{i}\n{{\n  depth => {};\n}}\n",
                quote(depth)
            );
        }
        let _ = writeln!(
            s,
            "body classes rcflab_outcome_{i}\n{{\n  promise_repaired => {{ \"rcflab_{i}_repaired\" }};\n  promise_kept => {{ \"rcflab_{i}_kept\" }};\n  repair_failed => {{ \"rcflab_{i}_failed\" }};\n  repair_denied => {{ \"rcflab_{i}_denied\" }};\n  repair_timeout => {{ \"rcflab_{i}_timeout\" }};\n}}\n"
        );
        s
    }

    /// The `files:` promise with index `i`.
    pub(crate) fn render_promise(&self, i: usize) -> String {
        let mut attrs = vec![format!("copy_from => rcflab_copy_{i}")];
        if self.recurse {
            attrs.push(format!("depth_search => rcflab_depth_{i}"));
        }
        attrs.push(format!("classes => rcflab_outcome_{i}"));
        attrs.extend(self.promise_attrs.iter().cloned());
        let body: Vec<String> = attrs.iter().map(|a| format!("      {a}")).collect();
        format!(
            "    {}\n{};\n",
            quote(&self.dest.to_string_lossy()),
            body.join(",\n")
        )
    }
}

/// A whole client policy running `specs` in order in one bundle, followed by
/// `RCFLAB-OUTCOME <i> <kept|repaired|failed|denied|timeout>` reports (read
/// them back with [`parse_outcomes`](super::parse_outcomes)).
pub fn copy_policy(specs: &[CopySpec]) -> String {
    let mut s = String::from("# generated by rcf_conformance::lab\nbody common control\n{\n  bundlesequence => { \"rcflab_copy\" };\n}\n\n");
    for (i, spec) in specs.iter().enumerate() {
        s.push_str(&spec.render_bodies(i));
    }
    s.push_str("bundle agent rcflab_copy\n{\n  files:\n");
    for (i, spec) in specs.iter().enumerate() {
        s.push_str(&spec.render_promise(i));
    }
    s.push_str("\n  reports:\n");
    for i in 0..specs.len() {
        for o in ["kept", "repaired", "failed", "denied", "timeout"] {
            let _ = writeln!(
                s,
                "    \"RCFLAB-OUTCOME {i} {o}\"\n      if => \"rcflab_{i}_{o}\";"
            );
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn server_policy_renders_lists_and_rules() {
        let mut p = ServerPolicy::new(1234).admit("/srv/share");
        p.roles.push(("lab_.*".into(), vec!["root".into()]));
        p.access.push(AccessRule::new("/x"));
        let t = p.render();
        assert!(t.contains("port => \"1234\";"));
        assert!(t.contains("allowconnects => { \"127.0.0.1\", \"::1\" };"));
        assert!(!t.contains("allowlegacyconnects"));
        assert!(t.contains("    \"/srv/share\"\n      admit_ips => { \"127.0.0.1\", \"::1\" };\n"));
        assert!(t.contains("    \"/x\";\n"));
        assert!(t.contains("roles:\n    \"lab_.*\"\n      authorize => { \"root\" };"));
        assert!(t.contains("bundlesequence => { \"rcflab_noop\" }"));
    }

    #[test]
    fn copy_policy_has_outcome_reports() {
        let t = copy_policy(&[CopySpec::new(5, "/a", "/b").recursive(true)]);
        assert!(t.contains("depth_search => rcflab_depth_0"));
        assert!(t.contains("purge => \"true\";"));
        assert!(t.contains("\"RCFLAB-OUTCOME 0 repaired\""));
    }
}
