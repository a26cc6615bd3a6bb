//! The differential harness's identity dimension (issue 18): the real
//! cf-serverd 3.21 and rcf-serverd, started one after the other on the same
//! generated policy, work dir and tree, are asked the same STATs and
//! OPENDIRs by several
//! peers: different 127.x source addresses and `::1`, different keys, the
//! users `root` and `nobody`, over TLS and the classic protocol (plain
//! and encrypted). Both servers listen on `::`, so IPv4
//! peers arrive as `::ffff:` mapped addresses. Reverse names come from a
//! private `/etc/hosts` bind-mounted in a mount and network namespace the
//! test makes (`unshare`; the test re-runs itself inside), with `::ffff:`
//! entries, which glibc needs to reverse-resolve mapped addresses; two
//! peers have no name at all.
//!
//! Policies mix IP entries (addresses, CIDRs, prefixes, invalid CIDRs),
//! keys, host names and domains, `ifencrypted`, guards (classes, functions
//! rcf does not run), shortcuts, `$(connection.ip)` and
//! `$(connection.key)` promisers and a namespace. The test fails on any
//! request rcf-serverd admits that the real server refuses; every stricter
//! answer is counted by its class (rcf's reason, from its own decision on
//! the same policy and peer). The policy generator of `differential.rs`
//! (rules × guards × functions) is separate; this file owns peers and
//! transport.
//!
//! CI runs `RCF_IDS_POLICIES` (default 2) policies of `RCF_IDS_RULES`
//! (default 12) rules from `RCF_IDS_SEED`; the large run is in the README.
//! Fails (never skips) when the CFEngine binaries, `unshare` or root are
//! missing. Servers are stopped by PID on drop, also on failure.

mod real_serverd;
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcf_conformance::lab::{rcf_binary, spawn_real_cf_serverd, KillOnDrop};
use rcf_conformance::policygen::Rng;
use rcf_core::keys::RsaPrivateKey;
use rcf_core::policy::{ConnFacts, Protocol, Request};
use real_serverd::{env_u64 as env, free_port, Pair};
use support::*;

const TEST: &str = "peers_addresses_keys_and_names_decide_as_real_cf_serverd";

/// The private `/etc/hosts` inside the namespace.
const HOSTS: &str = "127.0.0.1 localhost
127.0.0.2 rcf-b.example
127.0.0.3 rcf-c.lab.example
::1 rcf-six.example
::ffff:127.0.0.1 localhost
::ffff:127.0.0.2 rcf-b.example
::ffff:127.0.0.3 rcf-c.lab.example
";

/// One peer: source address, key (index), user, and the name the hosts
/// file gives its address (as the server sees it).
struct Peer {
    label: &'static str,
    src: IpAddr,
    key: usize,
    user: &'static str,
    name: Option<&'static str>,
}

fn peers() -> Vec<Peer> {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    vec![
        Peer {
            label: "a",
            src: v4(127, 0, 0, 1),
            key: 0,
            user: "root",
            name: Some("localhost"),
        },
        Peer {
            label: "b",
            src: v4(127, 0, 0, 2),
            key: 1,
            user: "root",
            name: Some("rcf-b.example"),
        },
        Peer {
            label: "c",
            src: v4(127, 0, 0, 3),
            key: 2,
            user: "nobody",
            name: Some("rcf-c.lab.example"),
        },
        Peer {
            label: "d",
            src: v4(127, 0, 1, 9),
            key: 3,
            user: "root",
            name: None,
        },
        Peer {
            label: "e",
            src: v4(127, 0, 0, 4),
            key: 0,
            user: "nobody",
            name: None,
        },
        Peer {
            label: "six",
            src: IpAddr::V6(Ipv6Addr::LOCALHOST),
            key: 1,
            user: "root",
            name: Some("rcf-six.example"),
        },
    ]
}

/// The name a peer without a hosts-file name claims in classic CAUTH.
const UNNAMED: &str = "rcf-unnamed.example";

const IPS: &[&str] = &[
    "127.0.0.1",
    "127.0.0.2",
    "127.0.0.3",
    "127.0.0.4",
    "127.0.1.9",
    "127.0.0.0/24",
    "127.0.0.0/30",
    "127.0.0.2/31",
    "127.0.1.0/24",
    "127.0.0.0/8",
    "127.0.0.",
    "127.0.1.",
    "127.0.0.1/33",
    "::1",
    "10.0.0.1",
];

const NAMES: &[&str] = &[
    "localhost",
    "rcf-b.example",
    "rcf-c.lab.example",
    ".lab.example",
    ".example",
    "rcf-six.example",
    "nosuch.example",
];

const GUARDS: &[&str] = &[
    "",
    "",
    "",
    r#"if => "any""#,
    r#"if => "!any""#,
    r#"if => "rcf_no_such_class""#,
    r#"unless => "rcf_no_such_class""#,
    r#"if => returnszero("/bin/true", "noshell")"#,
    r#"if => returnszero("/bin/false", "noshell")"#,
    r#"if => "ipv4_127_0_0_1""#,
];

/// The key id (`MD5=…`) of each key.
fn key_ids(keys: &[RsaPrivateKey]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            rcf_core::keys::key_id(&k.to_public_key(), rcf_core::keys::DigestKind::Md5).to_string()
        })
        .collect()
}

/// One promise's list attributes for `DATA/rN/`.
fn lists(rng: &mut Rng, ids: &[String]) -> Vec<String> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut attrs = Vec::new();
    for (list, pool, p) in [
        ("admit_ips", IPS, 45),
        ("deny_ips", IPS, 20),
        ("admit_keys", &ids[..], 25),
        ("deny_keys", &ids[..], 15),
        ("admit_hostnames", NAMES, 25),
        ("deny_hostnames", NAMES, 15),
    ] {
        if rng.chance(p) {
            let k = 1 + rng.next() % 2;
            let items: Vec<String> = (0..k).map(|_| format!("\"{}\"", rng.pick(pool))).collect();
            attrs.push(format!("{list} => {{ {} }}", items.join(", ")));
        }
    }
    if attrs.is_empty() {
        attrs.push(format!("admit_ips => {{ \"{}\" }}", rng.pick(IPS)));
    }
    if rng.chance(10) {
        attrs.push("ifencrypted => \"true\"".into());
    }
    let g = rng.pick(GUARDS);
    if !g.is_empty() {
        attrs.push(g.into());
    }
    attrs
}

/// A generated policy: the access promises and the paths to ask (with a
/// label each), for `rules` directories plus the connection-variable and
/// shortcut cases.
fn generate(
    rng: &mut Rng,
    pair: &Pair,
    rules: usize,
    ids: &[String],
) -> (String, Vec<(String, String)>) {
    let d = &pair.data;
    let mut access = String::new();
    let mut asks = Vec::new();
    for i in 0..rules {
        let dir = format!("r{i}");
        let path = pair.file(&format!("{dir}/f"));
        for _ in 0..1 + rng.next() % 2 {
            let mut attrs = lists(rng, ids);
            if rng.chance(15) {
                attrs.push(format!("shortcut => \"sc{i}\""));
                asks.push((format!("{dir} via shortcut"), format!("sc{i}/f")));
            }
            let _ = writeln!(access, "    \"{d}/{dir}/\" {};", attrs.join(", "));
        }
        asks.push((format!("{dir} listing"), format!("{d}/{dir}/")));
        asks.push((dir, path));
    }
    // $(connection.ip) and $(connection.key) promisers: a directory per
    // address and per key; every peer asks for each.
    for (var, values) in [
        (
            "ip",
            vec![
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.1.9",
                "::1",
            ],
        ),
        ("key", ids.iter().map(String::as_str).collect()),
    ] {
        let mut attrs = lists(rng, ids);
        attrs.retain(|a| !a.starts_with("if") && !a.starts_with("unless"));
        let _ = writeln!(
            access,
            "    \"{d}/c{var}/$(connection.{var})/\" {};",
            attrs.join(", ")
        );
        for v in values {
            let path = pair.file(&format!("c{var}/{v}/f"));
            asks.push((format!("connection.{var} {v}"), path));
        }
    }
    (access, asks)
}

/// The policy text for `port`, rules in namespace `ns` when asked.
fn policy_text(pair: &Pair, port: u16, access: &str, namespaced: bool) -> String {
    let mut s = format!(
        r#"body common control {{ bundlesequence => {{ "noop" }}; {} }}
bundle agent noop {{ vars: "x" string => "y"; }}
body server control
{{
  port => "{port}";
  bindtointerface => "::";
  allowconnects => {{ "127.0.0.0/8", "::1" }};
  allowallconnects => {{ "127.0.0.0/8", "::1" }};
  trustkeysfrom => {{ "127.0.0.0/8", "::1" }};
  allowlegacyconnects => {{ "127.0.0.0/8", "::1" }};
  allowusers => {{ "root", "nobody" }};
  maxconnections => "50";
}}
"#,
        if namespaced {
            r#"inputs => { "ns.cf" };"#
        } else {
            ""
        }
    );
    let bundle = format!("bundle server acl\n{{\n  access:\n{access}}}\n");
    if namespaced {
        pair.input(
            "ns.cf",
            &format!("body file control {{ namespace => \"ns\"; }}\n{bundle}"),
        );
    } else {
        s.push_str(&bundle);
    }
    s
}

/// A TCP connection from `src` to the servers' `port` (`::1` for IPv6).
fn dial(src: IpAddr, port: u16) -> Option<TcpStream> {
    match src {
        IpAddr::V4(src) => connect_from(src, port).ok(),
        IpAddr::V6(a) => TcpStream::connect((a, port)).ok(),
    }
}

/// Connects `peer` to `port` and identifies it with its key.
fn connect(peer: &Peer, port: u16, key: &RsaPrivateKey) -> Option<RawClient> {
    let (c, w) = RawClient::identify_over(dial(peer.src, port)?, key, peer.user);
    w.filter(|w| w.starts_with(b"OK WELCOME")).map(|_| c)
}

/// Every peer's answers from the server on `port`, asked through
/// `transport` ([`tls_answers`] or [`classic_answers`]).
fn ask_all(
    peers: &[Peer],
    keys: &[RsaPrivateKey],
    port: u16,
    asks: &[(String, String)],
    transport: fn(&Peer, &RsaPrivateKey, u16, &[(String, String)]) -> Vec<bool>,
) -> Vec<Vec<bool>> {
    peers
        .iter()
        .map(|p| transport(p, &keys[p.key], port, asks))
        .collect()
}

/// One peer's TLS answers (admitted?) for every path: OPENDIR for a path
/// ending in `/`, else STAT; a refused connection refuses every request.
fn tls_answers(p: &Peer, key: &RsaPrivateKey, port: u16, asks: &[(String, String)]) -> Vec<bool> {
    let Some(mut c) = connect(p, port, key) else {
        return vec![false; asks.len()];
    };
    asks.iter()
        .map(|(_, path)| {
            if c.closed {
                return false;
            }
            if path.ends_with('/') {
                c.txn(&rcf_core::request::encode_opendir(path.as_bytes()));
                let mut first = true;
                // the listing's transactions, up to its terminator
                while let Some(t) = c.reply(IO) {
                    if first && t.starts_with(b"BAD") {
                        return false;
                    }
                    first = false;
                    if contains(&t, b"---cfXen/gine/cfXen/gine---") {
                        return true;
                    }
                }
                return false;
            }
            let mut req = format!("SYNCH {} STAT ", unix_now()).into_bytes();
            req.extend_from_slice(path.as_bytes());
            c.txn(&req);
            let Some(first) = c.reply(IO) else {
                return false;
            };
            if first.starts_with(b"OK:") {
                let _ = c.reply(IO);
                true
            } else {
                false
            }
        })
        .collect()
}

/// One peer's classic answers: authenticated with its key (claiming its
/// hosts-file name), it asks for every path plain and encrypted (two
/// answers per path; OPENDIR/SOPENDIR for a path ending in `/`, else
/// SYNCH/SSYNCH); a closed or failed connection is re-opened, a refused one
/// refuses.
fn classic_answers(
    p: &Peer,
    key: &RsaPrivateKey,
    port: u16,
    asks: &[(String, String)],
) -> Vec<bool> {
    use rcf_core::classic::{ClientConfig, ClientEvent};
    use support::classic::{clock, Driver};
    let cfg = ClientConfig {
        local_ip: p.src.to_string(),
        fqdn: p.name.unwrap_or(UNNAMED).into(),
        user: p.user.into(),
        key: std::sync::Arc::new(key.clone()),
        server_key: None,
        trust_server: true,
        timeout_ms: 20_000,
    };
    let open = || {
        let sock = dial(p.src, port)?;
        match Driver::over(sock, cfg.clone()) {
            Ok((d, ClientEvent::Authenticated { .. })) => Some(d),
            _ => None,
        }
    };
    let mut d = open();
    let mut out = Vec::new();
    for (_, path) in asks {
        for enc in [false, true] {
            if d.is_none() {
                d = open();
            }
            let Some(c) = d.as_mut() else {
                out.push(false);
                continue;
            };
            let now = clock(c.start);
            let ok = if path.ends_with('/') {
                c.client.opendir(now, path.as_bytes(), enc).is_ok()
                    && matches!(
                        c.until_event().as_deref(),
                        Ok([ClientEvent::Listing(_), ..])
                    )
            } else {
                c.client.stat(now, path.as_bytes(), enc).is_ok()
                    && matches!(c.until_event().as_deref(), Ok([ClientEvent::Stat(_), ..]))
            };
            if !c.client.is_idle() {
                d = None;
            }
            out.push(ok);
        }
    }
    out
}

/// Runs a server until its log says it listens on `port`, then `f`.
fn with_server<T>(mut guard: KillOnDrop, log: &Path, port: u16, f: impl FnOnce() -> T) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            !text.contains("going to failsafe"),
            "policy refused:\n{text}"
        );
        if let Ok(Some(st)) = guard.0.try_wait() {
            panic!("server exited ({st}):\n{text}");
        }
        if std::net::TcpStream::connect(("::1", port)).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not listening on {port}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A failure inside `f` shows the server's own account of it.
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    drop(guard);
    match out {
        Ok(out) => out,
        Err(e) => {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!(
                "server log {} (last 80 lines):\n{}",
                log.display(),
                rcf_conformance::lab::tail(&text, 80)
            );
            std::panic::resume_unwind(e)
        }
    }
}

/// Makes a key pair with the real cf-key in a fresh directory.
fn new_key(dir: &Path) -> RsaPrivateKey {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new(real_serverd::CF_KEY)
        .env("CFENGINE_TEST_OVERRIDE_WORKDIR", dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "cf-key");
    rcf_core::keys::parse_private_pem(&std::fs::read(dir.join("ppkeys/localhost.priv")).unwrap())
        .unwrap()
}

/// Outside the namespace: write the hosts file and run this test again
/// inside `unshare --mount --net`, with the hosts file bind-mounted and
/// loopback up; its result is this test's.
fn rerun_in_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, HOSTS).unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--net", "--fork", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && ip link set lo up && shift && exec "$@""#)
        .arg("sh")
        .arg(&hosts)
        .arg(&exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads", "1"])
        .env("RCF_IDS_IN_NAMESPACE", "1")
        .output()
        .expect("run unshare (util-linux) as root");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the run inside the namespace failed ({})",
        out.status
    );
}

#[test]
fn peers_addresses_keys_and_names_decide_as_real_cf_serverd() {
    if std::env::var_os("RCF_IDS_IN_NAMESPACE").is_none() {
        return rerun_in_namespace();
    }
    let policies = env("RCF_IDS_POLICIES", 2);
    let rules = env("RCF_IDS_RULES", 12) as usize;
    let seed = env("RCF_IDS_SEED", 0x1d5_2026);
    let t0 = Instant::now();
    // the namespace really answers reverse names, both families
    let name = |a: &str| {
        let out = Command::new("getent").args(["hosts", a]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        name("::ffff:127.0.0.2").contains("rcf-b.example"),
        "hosts file not in place"
    );
    assert!(name("::1").contains("rcf-six.example"));

    let peers = peers();
    let keys_dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed | 1);
    let mut requests = 0usize;
    let mut admitted = 0usize;
    let mut stricter: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    let rcf = rcf_binary("rcf-serverd").unwrap();
    for n in 0..policies {
        let pair = Pair::new();
        let mut keys = vec![rcf_core::keys::parse_private_pem(
            &std::fs::read(pair.cli.join("ppkeys/localhost.priv")).unwrap(),
        )
        .unwrap()];
        for k in 1..4 {
            keys.push(new_key(&keys_dir.path().join(format!("p{n}-k{k}"))));
        }
        let ids = key_ids(&keys);
        let (access, asks) = generate(&mut rng, &pair, rules, &ids);
        let namespaced = rng.chance(25);
        let (real_port, rcf_port) = (free_port(), free_port());
        let real_policy = pair.input(
            "real.cf",
            &policy_text(&pair, real_port, &access, namespaced),
        );
        let rcf_policy = pair.input("rcf.cf", &policy_text(&pair, rcf_port, &access, namespaced));
        let real_log = pair.root.join(format!("real-{n}.log"));
        let real = with_server(
            spawn_real_cf_serverd(&pair.srv, &real_policy, &[], &[], &real_log),
            &real_log,
            real_port,
            || {
                (
                    ask_all(&peers, &keys, real_port, &asks, tls_answers),
                    ask_all(&peers, &keys, real_port, &asks, classic_answers),
                )
            },
        );
        let rcf_log = pair.root.join(format!("rcf-{n}.log"));
        let mut cmd = Command::new(&rcf);
        cmd.args(["-F", "-v", "--workdir"])
            .arg(&pair.srv)
            .arg("-f")
            .arg(&rcf_policy);
        let f = std::fs::File::create(&rcf_log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f);
        let ours = with_server(KillOnDrop(cmd.spawn().unwrap()), &rcf_log, rcf_port, || {
            (
                ask_all(&peers, &keys, rcf_port, &asks, tls_answers),
                ask_all(&peers, &keys, rcf_port, &asks, classic_answers),
            )
        });
        // (transport, encrypted, answer index of ask i)
        let modes: [(Protocol, bool, fn(usize) -> usize); 3] = [
            (Protocol::Tls, true, |i| i),
            (Protocol::Classic, false, |i| 2 * i),
            (Protocol::Classic, true, |i| 2 * i + 1),
        ];
        // rcf's own reading of the same policy, to name each stricter class
        let pol = pair.rcf_load(&rcf_policy);
        for (pi, p) in peers.iter().enumerate() {
            for ((ai, (label, path)), (protocol, wire_encrypted, at)) in asks
                .iter()
                .enumerate()
                .flat_map(|a| modes.iter().map(move |m| (a, *m)))
            {
                requests += 1;
                let (real, ours) = match protocol {
                    Protocol::Tls => (&real.0, &ours.0),
                    Protocol::Classic => (&real.1, &ours.1),
                };
                let (a, b) = (real[pi][at(ai)], ours[pi][at(ai)]);
                admitted += usize::from(a);
                if a == b {
                    continue;
                }
                let what = format!(
                    "policy {n} (seed {seed}), peer {} ({} key {} {}), {protocol:?} {label}: real {a}, rcf {b}",
                    p.label, p.src, p.key, p.user
                );
                if b {
                    problems.push(format!("LOOSER: {what}"));
                    continue;
                }
                let ip = p.src.to_string();
                // classic: the name the peer claimed; a STAT counts as
                // encrypted in both servers (3.21's SYNCH passes encrypt),
                // a plain OPENDIR does not
                let claimed = p.name.unwrap_or(UNNAMED);
                let (hostname, encrypted) = match protocol {
                    Protocol::Tls => (p.name, true),
                    Protocol::Classic => (Some(claimed), wire_encrypted || !path.ends_with('/')),
                };
                let facts = ConnFacts {
                    ip: &ip,
                    hostname,
                    key: &ids[p.key],
                    username: p.user,
                    protocol,
                    encrypted,
                };
                let plain = if wire_encrypted { "" } else { " plain" };
                let dec = pol.check(&facts, Request::Path(path));
                let dir = format!("/{}/", label.split(' ').next().unwrap_or(""));
                let rule: Vec<&str> = access
                    .lines()
                    .filter(|l| l.contains(&dir))
                    .map(str::trim)
                    .collect();
                let reason = format!("{:?}", dec.reason);
                let reason = reason.split([' ', '{', '(']).next().unwrap_or("");
                let text = rule.join(" ");
                let features: Vec<&str> = [
                    ("returnszero", "a function rcf does not run"),
                    ("ipv4_127_0_0_1", "a hard class"),
                    ("rcf_no_such_class", "an undefined class"),
                    ("/33", "an invalid CIDR"),
                    ("deny_hostnames", "deny_hostnames"),
                    ("shortcut", "a shortcut"),
                ]
                .iter()
                .filter(|(k, _)| text.contains(k))
                .map(|(_, v)| *v)
                .collect();
                let class = format!("{protocol:?} {reason}");
                *stricter.entry(class.clone()).or_default() += 1;
                examples.entry(class).or_insert_with(|| {
                    format!(
                        "{what}{plain} [{}]: {}\n      rule: {}",
                        features.join(", "),
                        pol.explain(&dec),
                        rule.join("\n            ")
                    )
                });
            }
        }
        if !problems.is_empty() {
            let text = std::fs::read_to_string(&rcf_policy).unwrap_or_default();
            problems.push(format!("policy {n}:\n{text}"));
            break;
        }
    }
    eprintln!(
        "[differential_identities] {policies} policies x {} peers: {requests} requests to each server ({admitted} admitted by 3.21), {} stricter, {} looser or failing; wall {:?}",
        peers.len(),
        stricter.values().sum::<usize>(),
        problems.iter().filter(|p| p.starts_with("LOOSER")).count(),
        t0.elapsed()
    );
    for (class, count) in &stricter {
        eprintln!("  stricter {class}: {count}, e.g. {}", examples[class]);
    }
    assert!(requests > 0);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
