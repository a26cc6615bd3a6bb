//! Decision tables (one row per rule of SEMANTICS.md B, B.10's worked
//! decisions included), loader tests, and quickcheck properties.

use super::acl::Category;
use super::*;
use quickcheck::{Arbitrary, Gen};
use std::collections::{BTreeMap, BTreeSet};

/// An in-memory filesystem: files, directories and symlinks.
#[derive(Default, Clone)]
pub(crate) struct Mem {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    links: BTreeMap<String, String>,
}

impl Mem {
    pub fn file(mut self, p: &str, text: &str) -> Self {
        self.files.insert(p.into(), text.as_bytes().to_vec());
        self
    }
    /// A policy file whose bytes need not be UTF-8.
    pub fn file_bytes(mut self, p: &str, bytes: &[u8]) -> Self {
        self.files.insert(p.into(), bytes.to_vec());
        self
    }
    pub fn dir(mut self, p: &str) -> Self {
        self.dirs.insert(p.trim_end_matches('/').into());
        self
    }
    pub fn link(mut self, p: &str, to: &str) -> Self {
        self.links.insert(p.into(), to.into());
        self
    }
}

impl PolicySource for Mem {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| "No such file or directory".into())
    }
    fn canonicalize(&self, path: &str) -> Canon {
        let p = path.trim_end_matches('/');
        let p = if p.is_empty() { "/" } else { p };
        let p = match self.links.get(p) {
            Some(t) => t.as_str(),
            None => p,
        };
        if self.dirs.contains(p) {
            Canon::Resolved {
                path: p.into(),
                is_dir: true,
            }
        } else if self.files.contains_key(p) {
            Canon::Resolved {
                path: p.into(),
                is_dir: false,
            }
        } else {
            Canon::Missing
        }
    }
    fn exists(&self, path: &str) -> bool {
        matches!(self.canonicalize(path), Canon::Resolved { .. })
    }
}

fn opts(file: &str) -> LoadOptions {
    let mut o = LoadOptions {
        file: file.into(),
        ..Default::default()
    };
    o.sys
        .insert("workdir".into(), Value::Scalar("/var/cfengine".into()));
    o.env.insert("HOME".into(), "/root".into());
    o
}

fn server(access: &str) -> String {
    format!("bundle server acl\n{{\n access:\n{access}\n}}\n")
}

fn load_mem(mem: Mem, text: &str) -> ServerPolicy {
    let mem = mem.file("/p/promises.cf", text);
    match load(&mem, &opts("/p/promises.cf")) {
        Ok(p) => p,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

fn load_err(mem: Mem, text: &str) -> PolicyErrors {
    let mem = mem.file("/p/promises.cf", text);
    match load(&mem, &opts("/p/promises.cf")) {
        Ok(p) => panic!("policy unexpectedly valid: {:#?}", p.summary_lines()),
        Err(e) => e,
    }
}

fn tls<'a>(ip: &'a str, hostname: Option<&'a str>, key: &'a str) -> ConnFacts<'a> {
    ConnFacts {
        ip,
        hostname,
        key,
        username: "root",
        protocol: Protocol::Tls,
        encrypted: true,
    }
}

const KEY_A: &str = "MD5=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "MD5=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

struct Row {
    name: &'static str,
    access: &'static str,
    ip: &'static str,
    hostname: Option<&'static str>,
    key: &'static str,
    req: Request<'static>,
    allowed: bool,
    resource: Option<&'static str>,
    reason: fn(&Reason) -> bool,
}

fn mem_fs() -> Mem {
    Mem::default()
        .dir("/srv")
        .dir("/srv/private")
        .file("/srv/f", "")
        .dir("/var/cfengine/masterfiles")
        .file("/etc/passwd", "")
        .link("/data/link", "/etc/passwd")
}

#[test]
fn tls_decision_table() {
    use Request::*;
    let rows = [
        Row {
            name: "B10-1 longest entry alone decides (deny-only child denies everyone)",
            access: r#""/srv/" admit_ips => {"10.0.0.0/8"}; "/srv/private/" deny_ips => {"10.0.0.66"};"#,
            ip: "10.0.0.5",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/private/a"),
            allowed: false,
            resource: Some("/srv/private/"),
            reason: |r| *r == Reason::NotAdmitted,
        },
        Row {
            name: "B10-2 parent entry admits outside the child",
            access: r#""/srv/" admit_ips => {"10.0.0.0/8"}; "/srv/private/" deny_ips => {"10.0.0.66"};"#,
            ip: "10.0.0.5",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/x"),
            allowed: true,
            resource: Some("/srv/"),
            reason: |r| matches!(r, Reason::Admitted { via: Category::Ip, entry } if entry == "10.0.0.0/8"),
        },
        Row {
            name: "B10-3 deny beats admit inside an entry",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_keys => {"MD5=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};"#,
            ip: "192.0.2.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Denied {
                        via: Category::Key,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-3b same entry, another key is admitted",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_keys => {"MD5=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};"#,
            ip: "192.0.2.1",
            hostname: None,
            key: KEY_B,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Ip,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-4 IPv4 rule never matches an IPv6 peer",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_keys => {"MD5=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};"#,
            ip: "::1",
            hostname: None,
            key: KEY_B,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| *r == Reason::NotAdmitted,
        },
        Row {
            name: "B10-5a legacy admit, prefix at octet boundary matches",
            access: r#""/srv/f" admit => {"192.168.1"};"#,
            ip: "192.168.1.77",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Ip,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-5b prefix not at octet boundary does not match",
            access: r#""/srv/f" admit => {"192.168.1"};"#,
            ip: "192.168.10.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| *r == Reason::NotAdmitted,
        },
        Row {
            name: "B10-6a leading-dot hostname matches a subdomain",
            access: r#""/srv/f" admit_hostnames => {".example.com"};"#,
            ip: "192.0.2.1",
            hostname: Some("a.example.com"),
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Hostname,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-6b leading-dot hostname does not match the bare domain",
            access: r#""/srv/f" admit_hostnames => {".example.com"};"#,
            ip: "192.0.2.1",
            hostname: Some("example.com"),
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| *r == Reason::NotAdmitted,
        },
        Row {
            name: "B10-6c regex fallback: .example.com matches xexample.com",
            access: r#""/srv/f" admit_hostnames => {".example.com"};"#,
            ip: "192.0.2.1",
            hostname: Some("xexample.com"),
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Hostname,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-7 (rcf deviation) failed reverse lookup with deny_hostnames: deny wins",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_hostnames => {".evil.com"};"#,
            ip: "192.0.2.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| matches!(r, Reason::HostnameUnverifiable { entry } if entry == ".evil.com"),
        },
        Row {
            name: "B10-7b resolved good hostname is admitted",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_hostnames => {".evil.com"};"#,
            ip: "192.0.2.1",
            hostname: Some("www.good.org"),
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B10-7c resolved evil hostname is denied",
            access: r#""/srv/f" admit_ips => {"0.0.0.0/0"}, deny_hostnames => {".evil.com"};"#,
            ip: "192.0.2.1",
            hostname: Some("x.evil.com"),
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: false,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Denied {
                        via: Category::Hostname,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-8a $(connection.ip) entry admits through the rewritten path",
            access: r#""/srv/$(connection.ip)/" admit_ips => {"$(connection.ip)"};"#,
            ip: "10.1.1.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/10.1.1.1/cfg"),
            allowed: true,
            resource: Some("/srv/$(connection.ip)/"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Ip,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-8b another peer gets nothing",
            access: r#""/srv/$(connection.ip)/" admit_ips => {"$(connection.ip)"};"#,
            ip: "10.1.1.2",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/10.1.1.1/cfg"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B10-9 a real-path entry admits; the connection entry cannot take it away",
            access: r#""/srv/$(connection.ip)/" admit_ips => {"$(connection.ip)"}; "/srv/" admit_ips => {"10.0.0.0/8"};"#,
            ip: "10.1.1.2",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/10.1.1.1/cfg"),
            allowed: true,
            resource: Some("/srv/"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B10-11a symlink promiser protects its target",
            access: r#""/data/link" admit_ips => {"10.0.0.0/8"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/etc/passwd"),
            allowed: true,
            resource: Some("/etc/passwd"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B10-11b other targets are not covered",
            access: r#""/data/link" admit_ips => {"10.0.0.0/8"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/etc/shadow"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B10-12 explicit deny in any matching bundle regex wins",
            access: r#"".*" resource_type => "bundle", admit_ips => {"127.0.0.1"}; "bundle[12]" resource_type => "bundle", deny_ips => {"0.0.0.0/0"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Bundle("bundle1"),
            allowed: false,
            resource: Some("bundle[12]"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Denied {
                        via: Category::Ip,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B10-12b a bundle no deny regex matches is admitted",
            access: r#"".*" resource_type => "bundle", admit_ips => {"127.0.0.1"}; "bundle[12]" resource_type => "bundle", deny_ips => {"0.0.0.0/0"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Bundle("bundle3"),
            allowed: true,
            resource: Some(".*"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B.5.4 no entry covers the request: default deny",
            access: r#""/srv/" admit_ips => {"0.0.0.0/0"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/etc/passwd"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B.3 a directory entry does not cover a sibling with the same prefix",
            access: r#""/srv/" admit_ips => {"0.0.0.0/0"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srvx/a"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B.3 a missing path without trailing slash covers only itself",
            access: r#""/nope/dir" admit_ips => {"0.0.0.0/0"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/nope/dir/a"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B.3 a missing path written with /. covers its subtree",
            access: r#""/nope/dir/." admit_ips => {"0.0.0.0/0"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/nope/dir/a"),
            allowed: true,
            resource: Some("/nope/dir/"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B.5.1 every IP entry is also tried as a full regex",
            access: r#""/srv/f" admit_ips => {"10.*"};"#,
            ip: "10.9.8.7",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Ip,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B.5.1 admit_keys exact match",
            access: r#""/srv/f" admit_keys => {"MD5=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Key,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B.4 legacy admit entry MD5= is a key rule",
            access: r#""/srv/f" admit => {"MD5=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"};"#,
            ip: "10.0.0.1",
            hostname: None,
            key: KEY_B,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| {
                matches!(
                    r,
                    Reason::Admitted {
                        via: Category::Key,
                        ..
                    }
                )
            },
        },
        Row {
            name: "B.4 legacy admit .*\\.example\\.org becomes .example.org",
            access: r#""/srv/f" admit => {".*\.example\.org"};"#,
            ip: "10.0.0.1",
            hostname: Some("h.example.org"),
            key: KEY_B,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| matches!(r, Reason::Admitted { via: Category::Hostname, entry } if entry == ".example.org"),
        },
        Row {
            name: "B.4 admit => $(connection.ip) is a hostname rule and never matches an IP",
            access: r#""/srv/$(connection.ip)/" admit => {"$(connection.ip)"};"#,
            ip: "10.1.1.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/10.1.1.1/x"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "0.2 ::ffff: mapped peers are seen as IPv4",
            access: r#""/srv/f" admit_ips => {"10.0.0.0/8"};"#,
            ip: "::ffff:10.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Path("/srv/f"),
            allowed: true,
            resource: Some("/srv/f"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B.2 literal: exact lookup by handle",
            access: r#""secret value" handle => "h1", resource_type => "literal", admit_ips => {"127.0.0.1"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Literal("h1"),
            allowed: true,
            resource: Some("h1"),
            reason: |r| matches!(r, Reason::Admitted { .. }),
        },
        Row {
            name: "B.2 literal: the promiser is not the name",
            access: r#""secret value" handle => "h1", resource_type => "literal", admit_ips => {"127.0.0.1"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Literal("secret value"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NoMatchingResource,
        },
        Row {
            name: "B.2 query: exact lookup",
            access: r#""delta" resource_type => "query", admit_ips => {"127.0.0.1"};"#,
            ip: "127.0.0.2",
            hostname: None,
            key: KEY_A,
            req: Query("delta"),
            allowed: false,
            resource: Some("delta"),
            reason: |r| *r == Reason::NotAdmitted,
        },
        Row {
            name: "B.5.3 context: regex lookup, deny in a matching entry wins",
            access: r#""cf_.*" resource_type => "context", admit_ips => {"127.0.0.1"}; "cf_secret" resource_type => "context", deny_ips => {"127.0.0.1"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Context("cf_secret"),
            allowed: false,
            resource: Some("cf_secret"),
            reason: |r| matches!(r, Reason::Denied { .. }),
        },
        Row {
            name: "B.5.3 context: regex must match the whole name",
            access: r#""cf_.*" resource_type => "context", admit_ips => {"127.0.0.1"};"#,
            ip: "127.0.0.1",
            hostname: None,
            key: KEY_A,
            req: Context("xcf_a"),
            allowed: false,
            resource: None,
            reason: |r| *r == Reason::NotAdmitted,
        },
    ];
    for row in rows {
        let pol = load_mem(mem_fs(), &server(row.access));
        let d = pol.check(&tls(row.ip, row.hostname, row.key), row.req);
        assert_eq!(d.allowed, row.allowed, "{}: {d:?}", row.name);
        assert_eq!(d.resource.as_deref(), row.resource, "{}: {d:?}", row.name);
        assert!(
            (row.reason)(&d.reason),
            "{}: unexpected reason {d:?}",
            row.name
        );
    }
}

#[test]
fn b10_10_shortcut_then_path_check() {
    let pol = load_mem(
        mem_fs(),
        &server(
            r#""/var/cfengine/masterfiles/" shortcut => "masterfiles", admit_ips => {"10.0.0.0/8"}; "/srv/$(connection.ip)/" shortcut => "mine", admit_ips => {"$(connection.ip)"};"#,
        ),
    );
    let e = pol
        .expand_shortcut("masterfiles/promises.cf", "10.0.0.1", None, KEY_A)
        .unwrap();
    assert_eq!(e, "/var/cfengine/masterfiles//promises.cf");
    // realpath (the caller's job) collapses the double slash
    let canon = e.replace("//", "/");
    assert!(
        pol.check(&tls("10.0.0.1", None, KEY_A), Request::Path(&canon))
            .allowed
    );
    assert_eq!(
        pol.expand_shortcut("mine", "::ffff:10.2.2.2", None, KEY_A)
            .unwrap(),
        "/srv/10.2.2.2/"
    );
    assert_eq!(
        pol.expand_shortcut("/abs/masterfiles", "10.0.0.1", None, KEY_A),
        None
    );
    assert_eq!(
        pol.expand_shortcut("unknown/x", "10.0.0.1", None, KEY_A),
        None
    );
}

#[test]
fn roles_admit_by_username_only() {
    let pol = load_mem(
        Mem::default(),
        "bundle server r { roles: \".*_role\" authorize => { \"alice\" }; }",
    );
    let mut f = tls("10.0.0.1", None, KEY_A);
    f.username = "alice";
    assert!(pol.check(&f, Request::Role("web_role")).allowed);
    assert!(!pol.check(&f, Request::Role("web")).allowed);
    f.username = "bob";
    assert!(!pol.check(&f, Request::Role("web_role")).allowed);
}

#[test]
fn classic_decision_table() {
    let pol = load_mem(
        mem_fs(),
        &server(
            r#""/srv/" admit_ips => {"10.0.0.0/8"}, maproot => {"10.0.0.9"};
               "/srv/private/" deny_ips => {"10.0.0.66"};
               "/var/cfengine/masterfiles" admit => {"192.168.1"}, ifencrypted => "true";
               "/srv/f" admit_hostnames => {".example.com"};"#,
        ),
    );
    let classic = |ip: &'static str, host: Option<&'static str>, enc: bool| ConnFacts {
        ip,
        hostname: host,
        key: "",
        username: "root",
        protocol: Protocol::Classic,
        encrypted: enc,
    };
    // B10-1 under classic: first match /srv admits, the deny entry does not list the peer
    let d = pol.check(
        &classic("10.0.0.5", None, false),
        Request::Path("/srv/private/a"),
    );
    assert!(d.allowed, "{d:?}");
    assert_eq!(d.resource.as_deref(), Some("/srv"));
    // ...but a listed peer is denied by the covering deny path
    let d = pol.check(
        &classic("10.0.0.66", None, false),
        Request::Path("/srv/private/a"),
    );
    assert!(
        !d.allowed && matches!(d.reason, Reason::Denied { .. }),
        "{d:?}"
    );
    // maproot
    assert!(
        pol.check(&classic("10.0.0.9", None, false), Request::Path("/srv/x"))
            .maproot
    );
    assert!(
        !pol.check(&classic("10.0.0.8", None, false), Request::Path("/srv/x"))
            .maproot
    );
    // ifencrypted
    let d = pol.check(
        &classic("192.168.1.5", None, false),
        Request::Path("/var/cfengine/masterfiles/a"),
    );
    assert_eq!(
        (d.allowed, d.reason.clone()),
        (false, Reason::RequiresEncryption),
        "{d:?}"
    );
    assert!(
        pol.check(
            &classic("192.168.1.5", None, true),
            Request::Path("/var/cfengine/masterfiles/a")
        )
        .allowed
    );
    // first match in policy order: /srv/f is covered by /srv first, whose IP rule applies
    assert!(
        pol.check(&classic("10.0.0.1", None, false), Request::Path("/srv/f"))
            .allowed
    );
    // client-claimed hostname matched as a regex (.example.com became .*\.example\.com) — /srv wins first
    assert!(
        !pol.check(
            &classic("172.16.0.1", Some("a.example.com"), false),
            Request::Path("/srv/f")
        )
        .allowed
    );
    // the hostname path: /var/cfengine/masterfiles is first for its subtree
    let d = pol.check(
        &classic("172.16.0.1", Some("a.example.com"), true),
        Request::Path("/srv2/x"),
    );
    assert_eq!(d.reason, Reason::NoMatchingResource);
    // no table for bundles under classic
    assert_eq!(
        pol.check(&classic("10.0.0.1", None, false), Request::Bundle("x"))
            .reason,
        Reason::NoLegacyTable
    );
}

#[test]
fn connection_lists() {
    let pol = load_mem(
        Mem::default(),
        r#"body server control { allowconnects => { "127.0.0.1", "10.0.0.0/8", "192.168.*" }; denyconnects => { "10.6.6.6" }; trustkeysfrom => { "10.1" }; }"#,
    );
    assert!(pol.connection_allowed("127.0.0.1"));
    assert!(pol.connection_allowed("::ffff:10.1.2.3"));
    assert!(pol.connection_allowed("192.168.4.4"));
    assert!(!pol.connection_allowed("10.6.6.6"));
    assert!(!pol.connection_allowed("11.0.0.1"));
    assert!(!pol.connection_allowed("::1"));
    assert_eq!(
        ServerPolicy::conn_list_match(&pol.control.trustkeysfrom, "10.1.9.9"),
        Some("10.1")
    );
    assert_eq!(
        ServerPolicy::conn_list_match(&pol.control.trustkeysfrom, "10.10.9.9"),
        None
    );
    // unset allowconnects lets everyone in
    let open = load_mem(Mem::default(), "body server control { port => \"5308\"; }");
    assert!(open.connection_allowed("203.0.113.1"));
}

/// Issue 18: a bad entry in a control-body list does not refuse the policy
/// (cf-serverd 3.21 logs it and runs; it never matches): skipped with a
/// warning at its line in the lists that grant, and in denyconnects, whose
/// entry might have meant anyone, every connection is refused.
#[test]
fn bad_control_list_entries_are_skipped_and_a_bad_denyconnects_denies_all() {
    let pol = load_mem(
        Mem::default(),
        "body server control\n{\n allowconnects => { \"127.0.0.1/33\", \"10.[\", \"127.0.0.1\" };\n trustkeysfrom => { \"1.2.3.4/99\", \"10.1\" };\n}\n",
    );
    assert!(pol.connection_allowed("127.0.0.1"));
    assert!(!pol.connection_allowed("127.0.0.2"));
    assert_eq!(
        ServerPolicy::conn_list_match(&pol.control.trustkeysfrom, "10.1.2.3"),
        Some("10.1")
    );
    for (line, entry) in [(3, "127.0.0.1/33"), (3, "10.["), (4, "1.2.3.4/99")] {
        assert!(
            pol.warnings.iter().any(|w| w.line == line
                && w.message.contains("never matches")
                && w.message.contains(entry)),
            "{entry}: {:#?}",
            pol.warnings
        );
    }
    let deny = load_mem(
        Mem::default(),
        "body server control\n{\n denyconnects => { \"10.6.6.6\", \"10.0.0.0/40\" };\n}\n",
    );
    for ip in ["127.0.0.1", "10.6.6.6", "::1", "203.0.113.1"] {
        assert!(!deny.connection_allowed(ip), "{ip}");
    }
    assert!(deny
        .warnings
        .iter()
        .any(|w| w.line == 3 && w.message.contains("refuses every connection")));
}

#[test]
fn server_control_defaults_and_traps() {
    let p = load_mem(Mem::default(), "bundle agent x { }");
    let c = &p.control;
    assert_eq!(
        (c.port, c.maxconnections, c.denybadclocks, c.tls_min_version),
        (5308, 30, true, TlsMinVersion::V1_1)
    );
    assert_eq!(c.tls12_ciphers(), vec!["AES256-GCM-SHA384", "AES256-SHA"]);
    assert_eq!(c.tls13_suites(), vec!["TLS_AES_256_GCM_SHA384"]);
    assert_eq!(c.serverfacility, "LOG_USER");
    let p = load_mem(
        Mem::default(),
        r#"body server control { allowciphers => "AES256-GCM-SHA384:AES256-SHA"; allowtlsversion => "1.5"; call_collect_interval => "5"; }"#,
    );
    assert!(
        p.control.tls13_suites().is_empty(),
        "no TLS_ suite disables TLS 1.3"
    );
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("Disabling TLS 1.3")));
    assert_eq!(
        p.control.tls_min_version,
        TlsMinVersion::V1_0,
        "a typo lowers the minimum to 1.0"
    );
    assert_eq!(p.control.call_collect_interval, 300);
}

#[test]
fn evaluator_features() {
    let mem = Mem::default()
        .dir("/srv")
        .file("/p/lib/a.cf", "bundle common a { vars: \"dir\" string => \"$(this.promise_dirname)\"; \"file\" string => \"$(this.promise_filename)\"; }")
        .dir("/p/lib");
    let text = r#"
body common control { inputs => { "lib/a.cf" }; }
bundle common g
{
  vars:
    "home" string => getenv("HOME", "100");
    "c" string => concat("a", "$(const.dollar)", "b");
    "l" slist => { "x", "y" };
    "j" string => join("+", "l");
    "e" string => ifelse(strcmp("1", "2"), "no", isvariable("g.l"), "yes", "default");
    "can" string => canonify("a-b.c");
    "u" string => unknown_fn("x");
  classes:
    "yes_class" expression => and(not("nothere"), regcmp("a.*", "abc"), fileexists("/srv"));
    "no_class" or => { "nothere", "alsonot" };
}
bundle server s
{
  access:
    yes_class::
      "/srv/$(g.home)/$(g.j)/$(g.e)/$(g.can)/$(g.c)" admit_ips => { "127.0.0.1" };
    no_class::
      "/never" admit_ips => { "127.0.0.1" };
    any::
      "/srv/$(g.u)" admit_ips => { "127.0.0.1" };
      "/srv/drop" admit_ips => { "127.0.0.1" }, deny_ips => { "$(g.nothere)" };
      "/srv/x" admit_ips => { "127.0.0.1" }, if => "no_class";
      "/srv/cfg" admit_ips => { "127.0.0.1" }, unless => "no_class";
      "$(a.dir)" admit_ips => { "127.0.0.1" };
}
"#;
    let p = load_mem(mem, text);
    let names: Vec<&str> = p.acl.paths.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "/p/lib/",
            "/srv//root/x+y/yes/a_b_c/a$b",
            "/srv/cfg",
            "/srv/drop"
        ],
        "{:#?}",
        p.warnings
    );
    // an unresolved deny entry makes its rule deny everyone (never widened)
    assert!(p.acl.paths["/srv/drop"].poisoned);
    let d = p.check(&tls("127.0.0.1", None, KEY_A), Request::Path("/srv/drop"));
    assert_eq!((d.allowed, d.reason), (false, Reason::UnresolvedDenyRule));
    assert!(
        p.warnings.iter().any(|w| w.message.contains("unknown_fn")
            && w.file == "/p/promises.cf"
            && w.line == 12),
        "{:#?}",
        p.warnings
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.message.contains("denies every request") && w.message.contains("g.nothere")),
        "{:#?}",
        p.warnings
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.message.contains("could be any file") && w.message.contains("g.u")),
        "{:#?}",
        p.warnings
    );
    assert_eq!(p.files, vec!["/p/promises.cf", "/p/lib/a.cf"]);
}

#[test]
fn broken_policies_are_refused_with_positions() {
    let cases: &[(&str, Mem, &str, &str)] = &[
        (
            "syntax",
            Mem::default(),
            "bundle server x { access: \"/a\" admit_ips => {\"1\"} }",
            "/p/promises.cf:1:",
        ),
        (
            "missing input",
            Mem::default(),
            "body common control { inputs => { \"nope.cf\" }; }",
            "cannot read policy file '/p/nope.cf'",
        ),
        (
            "cycle",
            Mem::default().file(
                "/p/b.cf",
                "body file control { inputs => { \"promises.cf\" }; }",
            ),
            "body common control { inputs => { \"b.cf\" }; }",
            "include cycle refused: /p/promises.cf -> /p/b.cf -> /p/promises.cf",
        ),
        (
            "unknown control attr",
            Mem::default(),
            "body server control { bindtoaddress => \"1.2.3.4\"; }",
            "/p/promises.cf:1:23: unknown attribute 'bindtoaddress'",
        ),
        (
            "unknown access attr",
            Mem::default(),
            &server("\"/a\" admit_ip => {\"1.2.3.4\"};"),
            "unknown attribute 'admit_ip'",
        ),
        (
            "bad regex",
            Mem::default(),
            &server("\"(unclosed\" resource_type => \"bundle\", admit_ips => {\"1.2.3.4\"};"),
            "not a valid regular expression",
        ),
        (
            "bad port",
            Mem::default(),
            "body server control { port => \"99999\"; }",
            "out of range",
        ),
        (
            "bad bool",
            Mem::default(),
            "body server control { denybadclocks => \"maybe\"; }",
            "denybadclocks",
        ),
        (
            "bad resource_type",
            Mem::default(),
            &server("\"/a\" resource_type => \"file\", admit_ips => {\"1.2.3.4\"};"),
            "resource_type 'file'",
        ),
        (
            "report_data_select",
            Mem::default(),
            &server("\"/a\" report_data_select => rds, admit_ips => {\"1.2.3.4\"};"),
            "allowed only for 'query'",
        ),
        (
            "StrList_Append crash",
            Mem::default(),
            &server("\"/a\" admit => {\"10.0.0.1\", \"(a|b).example.com\"};"),
            "StrList_Append",
        ),
        (
            "scalar list",
            Mem::default(),
            &server("\"/a\" deny_ips => \"10.0.0.1\";"),
            "expects a list",
        ),
        (
            "authorize scalar",
            Mem::default(),
            "bundle server r { roles: \".*\" authorize => \"bob\"; }",
            "should be a list",
        ),
    ];
    for (name, mem, text, want) in cases {
        let e = load_err(mem.clone(), text);
        let all = e.to_string();
        assert!(all.contains(want), "{name}: expected '{want}' in:\n{all}");
        assert!(
            e.errors.iter().all(|d| !d.file.is_empty()),
            "{name}: error without a file"
        );
        assert!(
            e.errors
                .iter()
                .any(|d| d.line > 0 || *name == "missing input"),
            "{name}: no line in {all}"
        );
    }
}

#[test]
fn unresolved_variables_never_widen() {
    let text = r#"
bundle common g { vars: "hub" slist => { "$(sys.policy_hub)/16" }; "bad" slist => { "$(nothere)" }; }
bundle server s
{
  access:
    "/srv/" admit_ips => { "0.0.0.0/0" };
    "/srv/a/" admit_ips => { @(g.hub) };
    "/srv/b/" admit_ips => { "0.0.0.0/0" }, deny_ips => { @(g.bad) };
    "/srv/c/" admit_ips => { "0.0.0.0/0" }, deny_hostnames => { "$(nothere).com" };
}
"#;
    let p = load_mem(
        Mem::default()
            .dir("/srv")
            .dir("/srv/a")
            .dir("/srv/b")
            .dir("/srv/c"),
        text,
    );
    let f = tls("10.0.0.1", Some("h.example.com"), KEY_A);
    // kept literally, like cf-serverd: the child entry admits nobody and
    // does not fall back to the parent
    assert_eq!(
        p.acl.paths["/srv/a/"].admit.ips[0].text,
        "$(sys.policy_hub)/16"
    );
    assert!(!p.check(&f, Request::Path("/srv/a/x")).allowed);
    assert!(p.check(&f, Request::Path("/srv/x")).allowed);
    for path in ["/srv/b/x", "/srv/c/x"] {
        let d = p.check(&f, Request::Path(path));
        assert_eq!(
            (d.allowed, d.reason),
            (false, Reason::UnresolvedDenyRule),
            "{path}"
        );
    }
}

#[test]
fn unconvertible_hostname_regex_not_last_is_dropped_with_warning() {
    let p = load_mem(
        Mem::default(),
        &server("\"/a\" admit => {\"(a|b).example.com\", \"10.0.0.1\"};"),
    );
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("(a|b).example.com")));
    let r = &p.acl.paths["/a"];
    assert!(r.admit.hostnames.is_empty());
    assert_eq!(r.admit.ips.len(), 1);
    // the classic list still holds it verbatim
    assert_eq!(
        p.legacy.admit[0].accesslist,
        vec!["(a|b).example.com", "10.0.0.1"]
    );
}

#[test]
fn deep_class_expressions_do_not_overflow() {
    let mut expr = String::new();
    for _ in 0..5000 {
        expr.push_str("!(");
    }
    expr.push_str("any");
    for _ in 0..5000 {
        expr.push(')');
    }
    let text = format!("bundle common c {{ classes: \"x\" expression => \"{expr}\"; }}");
    let p = load_mem(Mem::default(), &text);
    assert!(p
        .warnings
        .iter()
        .any(|w| w.message.contains("malformed class expression")));
}

// ----------------------------------------------------------------------------
// quickcheck properties
// ----------------------------------------------------------------------------

const PATHS: &[&str] = &[
    "/srv/",
    "/srv/a/",
    "/srv/a/f",
    "/srv/b/",
    "/srv/$(connection.ip)/",
];
const IPS: &[&str] = &["10.0.0.1", "10.0.0.2", "192.168.1.7", "::1"];
const IP_RULES: &[&str] = &[
    "10.0.0.1",
    "10.0.0.0/8",
    "192.168.1",
    "0.0.0.0/0",
    "::1",
    "$(connection.ip)",
    "10.*",
];
const HOSTS: &[&str] = &["a.example.com", "b.other.org"];
const HOST_RULES: &[&str] = &[".example.com", "b.other.org", ".org"];
const KEYS: &[&str] = &[KEY_A, KEY_B];
const REQS: &[&str] = &[
    "/srv/x",
    "/srv/a/f",
    "/srv/a/g",
    "/srv/b/z",
    "/srv/10.0.0.1/c",
    "/srv/192.168.1.7/c",
    "/etc/x",
];

#[derive(Debug, Clone)]
struct Rule {
    path: usize,
    admit: bool,
    cat: u8,
    entry: usize,
}

impl Arbitrary for Rule {
    fn arbitrary(g: &mut Gen) -> Self {
        Rule {
            path: usize::arbitrary(g) % PATHS.len(),
            admit: bool::arbitrary(g),
            cat: u8::arbitrary(g) % 3,
            entry: usize::arbitrary(g),
        }
    }
}

fn rule_text(r: &Rule) -> String {
    let (list, vals) = match r.cat {
        0 => ("ips", IP_RULES),
        1 => ("hostnames", HOST_RULES),
        _ => ("keys", KEYS),
    };
    format!(
        "\"{}\" {}_{list} => {{ \"{}\" }};\n",
        PATHS[r.path],
        if r.admit { "admit" } else { "deny" },
        vals[r.entry % vals.len()]
    )
}

/// Small policies find the same bugs faster.
const MAX_RULES: usize = 16;

fn decisions(rules: &[Rule]) -> Vec<bool> {
    let rules = &rules[..rules.len().min(MAX_RULES)];
    let text = server(&rules.iter().map(rule_text).collect::<String>());
    let mem = Mem::default()
        .dir("/srv")
        .dir("/srv/a")
        .dir("/srv/b")
        .file("/srv/a/f", "");
    let p = load_mem(mem, &text);
    let mut out = Vec::new();
    for ip in IPS {
        for host in [None, Some(HOSTS[0]), Some(HOSTS[1])] {
            for key in KEYS {
                for req in REQS {
                    out.push(p.check(&tls(ip, host, key), Request::Path(req)).allowed);
                }
            }
        }
    }
    out
}

#[quickcheck_macros::quickcheck]
fn uncovered_requests_are_denied(rules: Vec<Rule>) -> bool {
    let text = server(&rules.iter().map(rule_text).collect::<String>());
    let p = load_mem(
        Mem::default().dir("/srv").dir("/srv/a").dir("/srv/b"),
        &text,
    );
    IPS.iter().all(|ip| {
        let d = p.check(&tls(ip, Some(HOSTS[0]), KEY_A), Request::Path("/etc/x"));
        !d.allowed && d.reason == Reason::NoMatchingResource
    }) && !p
        .check(&tls("10.0.0.1", None, KEY_A), Request::Bundle("b"))
        .allowed
}

/// Adding an admit rule to an existing promiser never denies what was
/// allowed. (Adding a *new, more specific path entry* can, by design: B.10 #1.)
#[quickcheck_macros::quickcheck]
fn adding_an_admit_never_denies(rules: Vec<Rule>, extra: Rule) -> bool {
    let mut extra = extra;
    extra.admit = true;
    let Some(first) = rules.first() else {
        return true;
    };
    extra.path = first.path;
    let mut rules = rules;
    rules.truncate(MAX_RULES - 1);
    let before = decisions(&rules);
    let mut more = rules.clone();
    more.push(extra);
    let after = decisions(&more);
    before.iter().zip(after.iter()).all(|(b, a)| !*b || *a)
}

/// Adding a deny rule, anywhere, never allows what was denied.
#[quickcheck_macros::quickcheck]
fn adding_a_deny_never_allows(rules: Vec<Rule>, extra: Rule) -> bool {
    let mut extra = extra;
    extra.admit = false;
    let mut rules = rules;
    rules.truncate(MAX_RULES - 1);
    let before = decisions(&rules);
    let mut more = rules.clone();
    more.push(extra);
    let after = decisions(&more);
    before.iter().zip(after.iter()).all(|(b, a)| *b || !*a)
}

#[test]
fn self_growing_variables_are_bounded() {
    let text = r#"
body common control { inputs => { "b.cf", "c.cf", "d.cf", "e.cf" }; }
bundle common g { vars: "a" string => "$(a)$(a)$(a)$(a)$(a)$(a)$(a)$(a)"; "l" slist => { @(l), @(l), @(l), @(l), @(l), @(l), @(l), @(l), "x" }; }
"#;
    let mut mem = Mem::default();
    for f in ["b", "c", "d", "e"] {
        mem = mem.file(&format!("/p/{f}.cf"), "bundle agent x { }");
    }
    let p = load_mem(mem, text);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.message.contains("list too long")),
        "{:#?}",
        p.warnings
    );
}

#[quickcheck_macros::quickcheck]
fn loading_never_panics(body: String, access: String) -> bool {
    let text = format!("bundle common g {{ vars: \"v\" string => \"{}\"; }}\nbundle server s {{ access: \"{}\" admit_ips => {{ \"$(g.v)\" }}; }}", body.replace('"', ""), access.replace('"', ""));
    let _ = load(
        &Mem::default().file("/p/promises.cf", &text),
        &opts("/p/promises.cf"),
    );
    let _ = load(
        &Mem::default().file("/p/promises.cf", &body),
        &opts("/p/promises.cf"),
    );
    true
}

#[test]
fn explain_names_the_rule_and_its_origin() {
    let p = load_mem(mem_fs(), &server("\"/srv/\" admit_ips => {\"10.0.0.0/8\"};\n\"/srv/private/\" deny_ips => {\"10.0.0.66\"};"));
    let d = p.check(
        &tls("10.0.0.5", None, KEY_A),
        Request::Path("/srv/private/a"),
    );
    let e = p.explain(&d);
    assert!(
        e.starts_with("DENY: the deciding entry has no admit rule"),
        "{e}"
    );
    assert!(
        e.contains("entry '/srv/private/' from /p/promises.cf:5"),
        "{e}"
    );
    let d = p.check(&tls("10.0.0.5", None, KEY_A), Request::Path("/srv/a"));
    assert!(p
        .explain(&d)
        .starts_with("ALLOW: admitted by Ip rule '10.0.0.0/8'"));
}

#[test]
fn a_failed_reload_keeps_the_last_good_policy() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ServerPolicy>();
    let good = Mem::default().dir("/srv").file(
        "/p/promises.cf",
        &server("\"/srv/\" admit_ips => {\"10.0.0.0/8\"};"),
    );
    let mut current = std::sync::Arc::new(load(&good, &opts("/p/promises.cf")).unwrap());
    let broken = Mem::default().dir("/srv").file(
        "/p/promises.cf",
        "bundle server acl { access: \"/srv/\" admit_ips => ; }",
    );
    match load(&broken, &opts("/p/promises.cf")) {
        Ok(p) => current = std::sync::Arc::new(p),
        Err(e) => assert!(e.to_string().contains("/p/promises.cf:1:")),
    }
    assert!(
        current
            .check(&tls("10.1.1.1", None, KEY_A), Request::Path("/srv/x"))
            .allowed
    );
}

#[test]
fn classic_hostname_regex_admission() {
    let pol = load_mem(
        Mem::default().file("/srv/f", "").dir("/srv"),
        &server(r#""/srv/f" admit_hostnames => {".example.com"}, deny => {"evil.example.com"};"#),
    );
    let classic = |host: &'static str| ConnFacts {
        ip: "172.16.0.1",
        hostname: Some(host),
        key: "",
        username: "root",
        protocol: Protocol::Classic,
        encrypted: false,
    };
    let d = pol.check(&classic("a.example.com"), Request::Path("/srv/f"));
    assert!(d.allowed, "{d:?}");
    assert_eq!(
        d.reason,
        Reason::Admitted {
            via: Category::Hostname,
            entry: ".*\\.example\\.com".into()
        }
    );
    let d = pol.check(&classic("evil.example.com"), Request::Path("/srv/f"));
    assert_eq!(
        d.reason,
        Reason::Denied {
            via: Category::Hostname,
            entry: "evil.example.com".into()
        }
    );
    assert!(
        !pol.check(&classic("example.org"), Request::Path("/srv/f"))
            .allowed
    );
}

/// An access or roles promise whose promiser names a variable that does
/// not resolve is dropped with a warning naming its kind, not kept with
/// the literal `$(...)` text.
#[test]
fn unresolved_promisers_are_dropped_with_warning() {
    let text = r#"
bundle server s
{
  access:
    "/srv/$(nothere)/" admit_ips => { "0.0.0.0/0" };
  roles:
    "$(nothere)_role" authorize => { "alice" };
}
"#;
    let p = load_mem(Mem::default().dir("/srv"), text);
    // roles: dropped; access: its admit rules dropped (its deny rules,
    // none here, would apply to every path rule)
    for (kind, says) in [
        (
            "access",
            "admit rules, maproot and shortcut are not applied",
        ),
        ("roles", "dropped: unresolved variable(s)"),
    ] {
        assert!(
            p.warnings
                .iter()
                .any(|w| w.message.starts_with(&format!("{kind} promise '"))
                    && w.message.contains(says)
                    && w.message.contains("nothere")),
            "{kind}: {:?}",
            p.warnings
        );
    }
    let mut f = tls("10.0.0.1", None, KEY_A);
    f.username = "alice";
    assert!(!p.check(&f, Request::Role("x_role")).allowed);
    assert!(!p.check(&f, Request::Path("/srv/x/f")).allowed);
}

/// Paths are bytes (issue 18): a promiser holding bytes that are not UTF-8
/// (as the real cf-serverd reads them from the policy file) decides for
/// exactly those bytes in a request, and no other byte string (U+FFFD, the
/// UTF-8 of an escape-range character) is taken for it.
#[test]
fn non_utf8_promisers_match_those_bytes_only() {
    use crate::server::{Peer, PolicyView};
    let enc = |b: &[u8]| crate::bytestr::encode(b).into_owned();
    let mem = Mem::default()
        .dir("/srv")
        .dir(&enc(b"/srv/d\xff"))
        .dir(&enc(b"/srv/e\xfe"))
        .file_bytes(
            "/p/promises.cf",
            b"bundle server acl\n{\n access:\n \"/srv\" admit => { \"10.0.0.1\" };\n \"/srv/d\xff\" deny => { \"10.0.0.1\" };\n}\n",
        );
    let pol = match load(&mem, &opts("/p/promises.cf")) {
        Ok(p) => p,
        Err(e) => panic!("load failed:\n{e}"),
    };
    let peer = Peer {
        ip: "10.0.0.1".into(),
        key_id: KEY_A.into(),
        username: "root".into(),
        hostname: None,
    };
    for (path, allowed) in [
        (&b"/srv/d\xff/s.txt"[..], false),
        (b"/srv/d\xff/", false),
        (b"/srv/e\xfe/p.txt", true),
        (b"/srv/bin\xff\xfe.txt", true),
        (b"/srv/d\xef\xbf\xbd/s.txt", true),
        (b"/srv/d\xf4\x8f\xbf\xbf/s.txt", true),
        (b"/srv/d\xff\xfe", true),
    ] {
        let v = pol.check_path(path, &peer);
        assert_eq!(
            v.allowed,
            allowed,
            "{}: {}",
            String::from_utf8_lossy(path),
            v.rule
        );
    }
}
