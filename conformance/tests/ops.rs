//! Operating rcf-serverd (issue 11): reload under load, the metrics
//! endpoint scraped by a real HTTP client, the trust-on-first-use budget,
//! `--explain` against the running server, systemd units (verified with
//! `systemd-analyze verify`, socket activation and readiness notification
//! through `systemd-socket-activate`), man pages and the `.deb`.
//!
//! Needs Debian's cfengine3 (cf-agent, cf-key), curl, and systemd's tools
//! (`systemd-analyze`, `systemd-socket-activate`; `apt-get install systemd`):
//! these tests FAIL, never skip, when a tool is missing. Loopback only,
//! temporary work dirs, every process stopped by PID.

use rcf_conformance::lab::*;
use rcf_core::frame::{self, Status, HEADER_LEN};
use rcf_core::tls::{client_config, ReadStatus, TlsClock, TlsLayer, TlsSettings};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::RsaPrivateKey;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn require_tool(name: &str, hint: &str) -> PathBuf {
    for d in ["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is missing: {hint}");
}

/// A TCP connection to 127.0.0.1:`port` from source address `src`
/// (another loopback address, so one test can be several hosts).
fn connect_from(src: Ipv4Addr, port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own; errors are checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mk = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let a = mk(src, 0);
        assert_eq!(
            libc::bind(fd, &a as *const _ as *const libc::sockaddr, len),
            0,
            "bind {src}: {}",
            std::io::Error::last_os_error()
        );
        let b = mk(Ipv4Addr::LOCALHOST, port);
        let r = libc::connect(fd, &b as *const _ as *const libc::sockaddr, len);
        let s = TcpStream::from_raw_fd(fd);
        assert_eq!(
            r,
            0,
            "connect from {src}: {}",
            std::io::Error::last_os_error()
        );
        s
    }
}

/// A raw TLS session (our core's client TLS layer over a std socket) that
/// stays open across server reloads.
struct Raw {
    sock: TcpStream,
    tls: TlsLayer,
    plain: Vec<u8>,
}

impl Raw {
    /// Handshake, banner, `IDENTITY USERNAME=root`. `Ok` on WELCOME; `Err`
    /// with what was received when the server hung up instead.
    fn open(port: u16, key: &RsaPrivateKey, src: Ipv4Addr) -> Result<Raw, String> {
        let cfg =
            client_config(key, &TlsSettings::client_default(), &TlsClock::new(now())).unwrap();
        let sock = connect_from(src, port);
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_nodelay(true).unwrap();
        let mut r = Raw {
            sock,
            tls: TlsLayer::client(cfg).unwrap(),
            plain: Vec::new(),
        };
        r.pump(|t, p| !t.is_handshaking() && p.ends_with(b"\n"))?;
        r.plain.clear();
        r.tls.send_plaintext(b"CFE_v3 cf-agent 3.21.0\n").unwrap();
        r.tls.send_plaintext(b"IDENTITY USERNAME=root\n").unwrap();
        r.pump(|_, p| p.ends_with(b"\n"))?;
        if r.plain != b"OK WELCOME USERNAME=root\n" {
            return Err(format!(
                "no welcome: {:?}",
                String::from_utf8_lossy(&r.plain)
            ));
        }
        r.plain.clear();
        Ok(r)
    }

    /// Move bytes until `done`; `Err` on EOF or a TLS error.
    fn pump(&mut self, mut done: impl FnMut(&TlsLayer, &[u8]) -> bool) -> Result<(), String> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            while let Some(out) = self.tls.poll_transmit() {
                self.sock
                    .write_all(&out)
                    .map_err(|e| format!("write: {e}"))?;
            }
            loop {
                match self
                    .tls
                    .read_plaintext(&mut self.plain)
                    .map_err(|e| format!("tls: {e}"))?
                {
                    ReadStatus::Data(_) => continue,
                    ReadStatus::NoData => break,
                    ReadStatus::Eof(_) => {
                        return Err(format!(
                            "server closed; got {:?}",
                            String::from_utf8_lossy(&self.plain)
                        ))
                    }
                }
            }
            if done(&self.tls, &self.plain) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("timed out".into());
            }
            if !self.tls.wants_input() {
                continue;
            }
            let n = self.sock.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            let r = if n == 0 {
                self.tls.handle_eof()
            } else {
                self.tls.handle_input(&buf[..n])
            };
            r.map_err(|e| format!("tls: {e}"))?;
        }
    }

    /// Read one reply transaction: its status and payload.
    fn read_transaction(&mut self) -> Result<(Status, Vec<u8>), String> {
        let need = |p: &[u8]| -> Option<(Status, usize)> {
            if p.len() < HEADER_LEN {
                return None;
            }
            let h: [u8; HEADER_LEN] = p[..HEADER_LEN].try_into().unwrap();
            let (st, len) = frame::parse_header(&h).ok()?;
            (p.len() >= HEADER_LEN + len).then_some((st, len))
        };
        self.pump(|_, p| need(p).is_some())?;
        let (st, len) = need(&self.plain).unwrap();
        let payload = self.plain[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.plain.drain(..HEADER_LEN + len);
        Ok((st, payload))
    }

    fn pump_one(&mut self) -> Result<Vec<u8>, String> {
        self.read_transaction().map(|(_, p)| p)
    }

    /// One request transaction; the reply transactions up to the first `t`.
    fn request(&mut self, payload: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut rec = Vec::new();
        frame::encode(Status::Done, payload, &mut rec).unwrap();
        self.tls.send_plaintext(&rec).unwrap();
        let mut replies = Vec::new();
        loop {
            let (st, p) = self.read_transaction()?;
            replies.push(p);
            if st == Status::Done {
                return Ok(replies);
            }
        }
    }

    /// `SYNCH <now> STAT <path>`: the reply text.
    fn stat(&mut self, path: &str) -> String {
        let r = self
            .request(&rcf_core::request::encode_stat(
                now() as i64,
                path.as_bytes(),
            ))
            .expect("STAT on the open session");
        let first = String::from_utf8_lossy(&r[0]).into_owned();
        if first.starts_with("OK:") {
            // a granted STAT is a pair: the stat line, then the link target line
            let link = self.pump_one().expect("second STAT transaction");
            assert!(link.starts_with(b"OK:"), "{link:?}");
        }
        first
    }
}

fn client_key(wd: &Workdir) -> RsaPrivateKey {
    RsaPrivateKey::from_pkcs1_pem(&std::fs::read_to_string(wd.privkey_path()).unwrap()).unwrap()
}

fn sighup(pid: u32) {
    // SAFETY: signalling a child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// `rcf-key --list-trusted`: the trusted keys and when each was trusted
/// (`-s` lists lastseen, as cf-key does).
fn rcf_key_list_trusted(wd: &Workdir) -> String {
    let out = Command::new(rcf_binary("rcf-key").unwrap())
        .arg("--workdir")
        .arg(wd.path())
        .arg("--list-trusted")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------

/// SIGHUP while a raw session is open and real cf-agents copy: no session is
/// dropped, and the new rules apply to the next request of the open session.
#[test]
fn reload_under_load_keeps_sessions_and_applies_new_rules() {
    let lab = Lab::new("ops-reload").unwrap();
    let p = lab.policy();
    let srv = RcfServer::start(&lab.server, &p).unwrap();
    let secret = lab
        .data
        .secret
        .join("secret.txt")
        .to_string_lossy()
        .into_owned();
    let hello = lab.data.share_path("hello.txt");

    let mut raw = Raw::open(srv.port(), &client_key(&lab.client), Ipv4Addr::LOCALHOST).unwrap();
    assert!(raw.stat(&hello).starts_with("OK:"), "share admitted");
    let r = raw.stat(&secret);
    assert!(r.starts_with("BAD:"), "secret not admitted yet: {r:?}");

    let mut p2 = p.clone();
    p2.port = srv.port();
    p2.access.push(AccessRule::admit_loopback(
        lab.data.secret.to_string_lossy(),
    ));
    // Agents copy in a loop until every reload is done (at least 2 runs).
    let reloads_done = std::sync::atomic::AtomicBool::new(false);
    let outcomes = std::thread::scope(|s| {
        let agents = s.spawn(|| {
            let mut all = Vec::new();
            let mut i = 0;
            while i < 2 || !reloads_done.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(i < 50, "agents ran 50 times without the reloads finishing");
                let out = lab.out(&format!("run{i}"));
                let specs = [
                    CopySpec::new(
                        srv.port(),
                        lab.data.share_path("seq.txt"),
                        out.join("seq.txt"),
                    ),
                    CopySpec::new(
                        srv.port(),
                        lab.data.share_path("big.bin"),
                        out.join("big.bin"),
                    ),
                    CopySpec::new(srv.port(), lab.data.share_path("tree"), out.join("tree"))
                        .recursive(false),
                ];
                let run = cf_agent_copies(&lab.client, &specs).unwrap();
                all.push((i, run.outcomes.clone(), run.describe()));
                i += 1;
            }
            all
        });
        // Reload several times while the agents run.
        for k in 0..3 {
            std::thread::sleep(Duration::from_millis(700));
            std::fs::write(srv.policy_path(), p2.render()).unwrap();
            let before = count(&srv.log(), "New promises detected");
            sighup(srv.pid());
            let t0 = Instant::now();
            while count(&srv.log(), "New promises detected") <= before {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "reload {k} not logged:\n{}",
                    tail(&srv.log(), 30)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        reloads_done.store(true, std::sync::atomic::Ordering::SeqCst);
        agents.join().unwrap()
    });
    let log = srv.log();
    assert_eq!(count(&log, "New promises detected"), 3);
    eprintln!("{} agent runs during 3 reloads", outcomes.len());
    // The session opened before the reloads is still served, under the new rules.
    assert!(
        raw.stat(&secret).starts_with("OK:"),
        "new rule applies on the open session"
    );
    assert!(raw.stat(&hello).starts_with("OK:"));
    let v = raw.request(b"VERSION").unwrap();
    assert!(
        String::from_utf8_lossy(&v[0]).starts_with("OK: 3.21"),
        "{v:?}"
    );
    for (i, o, text) in &outcomes {
        assert!(
            o.iter().all(|x| x.ok()),
            "agent run {i} lost a copy during reloads: {o:?}\n{}",
            tail(text, 40)
        );
        let out = lab.out(&format!("run{i}"));
        assert_eq!(
            std::fs::read(out.join("big.bin")).unwrap(),
            std::fs::read(lab.data.share.join("big.bin")).unwrap()
        );
        trees_equal(&out.join("tree"), &lab.data.share.join("tree")).unwrap();
    }
    assert!(srv.is_running());
    assert!(!srv.log().contains("File changes contain errors"));
    // A broken policy is refused and the last good one stays in force.
    std::fs::write(srv.policy_path(), "body server control {").unwrap();
    sighup(srv.pid());
    assert!(srv.wait_for_log(
        "File changes contain errors -- ignoring",
        Duration::from_secs(10)
    ));
    assert!(
        raw.stat(&secret).starts_with("OK:"),
        "last good policy still in force"
    );
    srv.stop();
}

// ---------------------------------------------------------------------------

fn scrape(port: u16, path: &str) -> (u32, String) {
    let curl = require_tool("curl", "apt-get install curl");
    let out = Command::new(curl)
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// Prometheus text format: `# HELP`/`# TYPE` comments, `name{labels} value`.
/// Panics on anything else; returns `series -> value`.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let series_re =
        regex::Regex::new(r#"^[a-z_:][a-z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})?$"#).unwrap();
    let mut typed = BTreeMap::new();
    let mut v = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains_key(name) || typed.contains_key(base),
            "series {name} has no # TYPE"
        );
        assert!(series_re.is_match(series), "bad series {series}");
        assert!(
            v.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    v
}

#[test]
fn metrics_endpoint_scraped_by_curl_and_parsed() {
    let lab = Lab::new("ops-metrics").unwrap();
    let mut p = lab.policy();
    p.allowconnects.push("127.0.0.2".into());
    p.trustkeysfrom.push("127.0.0.2".into());
    p.allowallconnects.push("127.0.0.2".into());
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let srv = RcfServer::start_with_flags(&lab.server, &p, &["-v", "--metrics", &maddr]).unwrap();
    assert!(srv.wait_for_log(
        &format!("Serving metrics on http://{maddr}/metrics"),
        Duration::from_secs(5)
    ));

    // Traffic: two agent runs (the second compares digests: MD5), a session
    // from a second address with the same key (a cloned host), a refused one.
    let specs = [
        CopySpec::new(
            srv.port(),
            lab.data.share_path("hello.txt"),
            lab.out("hello.txt"),
        ),
        CopySpec::new(srv.port(), lab.data.share_path("tree"), lab.out("tree")).recursive(false),
    ];
    for _ in 0..2 {
        let run = cf_agent_copies(&lab.client, &specs).unwrap();
        assert!(run.outcomes.iter().all(|o| o.ok()), "{}", run.describe());
    }
    let key = client_key(&lab.client);
    let mut a = Raw::open(srv.port(), &key, Ipv4Addr::LOCALHOST).unwrap();
    let mut b = Raw::open(srv.port(), &key, Ipv4Addr::new(127, 0, 0, 2)).unwrap();
    assert!(a.stat(&lab.data.share_path("hello.txt")).starts_with("OK:"));
    assert!(
        b.stat(&lab.data.share_path("hello.txt"))
            .starts_with("BAD:"),
        "share is admitted to 127.0.0.1 only"
    );
    assert!(
        srv.wait_for_log(
            "was already seen from 127.0.0.1 (cloned host",
            Duration::from_secs(5)
        ),
        "{}",
        tail(&srv.log(), 20)
    );
    assert!(
        Raw::open(srv.port(), &key, Ipv4Addr::new(127, 0, 0, 3)).is_err(),
        "127.0.0.3 is not in allowconnects"
    );

    let (code, body) = scrape(mport, "/metrics");
    assert_eq!(code, 200, "{body}");
    let m = parse_exposition(&body);
    let g = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no series {k} in\n{body}"))
    };
    assert!(g("rcf_serverd_handshakes_total") >= 4.0, "{body}");
    assert!(g("rcf_serverd_connections_accepted_total") >= 4.0);
    assert_eq!(
        g("rcf_serverd_sessions_open"),
        2.0,
        "the two raw sessions are open"
    );
    assert_eq!(
        g(r#"rcf_serverd_refusals_total{reason="allowconnects"}"#),
        1.0
    );
    assert_eq!(
        g(r#"rcf_serverd_refusals_total{reason="denyconnects"}"#),
        0.0
    );
    assert_eq!(
        g(r#"rcf_serverd_refusals_total{reason="access_denied"}"#),
        1.0,
        "b's STAT from 127.0.0.2"
    );
    assert_eq!(g(r#"rcf_serverd_build_info{version="0.1.0"}"#), 1.0);
    assert!(g("rcf_serverd_bytes_served_total") >= 26.0);
    assert!(
        g("rcf_serverd_digest_cache_hits_total") + g("rcf_serverd_digest_cache_misses_total")
            >= 1.0,
        "{body}"
    );
    assert_eq!(g("rcf_serverd_keys_seen_from_several_ips"), 1.0);
    assert_eq!(g("rcf_serverd_key_ip_conflicts_total"), 1.0);
    assert_eq!(
        g("rcf_serverd_keys_trusted_total"),
        1.0,
        "the client key was trusted once"
    );
    for cmd in ["GET", "STAT", "OPENDIR", "MD5"] {
        let n = g(&format!(
            r#"rcf_serverd_command_duration_seconds_count{{command="{cmd}"}}"#
        ));
        assert!(n >= 1.0, "no {cmd} timed\n{body}");
        let inf = g(&format!(
            r#"rcf_serverd_command_duration_seconds_bucket{{command="{cmd}",le="+Inf"}}"#
        ));
        assert_eq!(inf, n);
        let prefix = format!("rcf_serverd_command_duration_seconds_bucket{{command=\"{cmd}\",");
        for (k, v) in m
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            assert!(*v <= inf, "{k}");
        }
        assert!(
            g(&format!(
                r#"rcf_serverd_command_duration_seconds_sum{{command="{cmd}"}}"#
            )) >= 0.0
        );
    }
    // buckets are cumulative: check in numeric le order for GET
    let mut les: Vec<(f64, f64)> = m
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(
                r#"rcf_serverd_command_duration_seconds_bucket{command="GET",le=""#,
            )?;
            let le = rest.trim_end_matches("\"}");
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    les.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(les.windows(2).all(|w| w[0].1 <= w[1].1), "{les:?}");
    // other paths and methods
    assert_eq!(scrape(mport, "/").0, 404);
    drop((a, b));
    srv.stop();

    // Only loopback addresses are accepted.
    let wd = Workdir::new("ops-metrics-bad").unwrap();
    let out = wd
        .command(&rcf_binary("rcf-serverd").unwrap())
        .args(["-F", "--workdir"])
        .arg(wd.path())
        .args([
            "--port",
            &free_port().to_string(),
            "--bind",
            "127.0.0.1",
            "--metrics",
            "0.0.0.0:9308",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a loopback address"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------

/// `--trust-max-new 1`: the first new key is trusted, the second refused
/// (as if not in trustkeysfrom), the first stays trusted; `rcf-key --list-trusted` shows
/// when. `--trust-window`: a new key after the window is refused.
#[test]
fn trust_on_first_use_closes_itself() {
    let lab = Lab::new("ops-tofu").unwrap();
    let second = Workdir::new("ops-tofu-cli2").unwrap();
    second.cf_key().unwrap();
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let srv = RcfServer::start_with_flags(
        &lab.server,
        &lab.policy(),
        &["-v", "--trust-max-new", "1", "--metrics", &maddr],
    )
    .unwrap();
    assert!(srv
        .log()
        .contains("Trust on first use (trustkeysfrom) is budgeted: 1 new key(s), no time limit"));
    let copy = |wd: &Workdir, name: &str| {
        let out = wd.scratch().join("out").join(name);
        cf_agent_copy(
            wd,
            &CopySpec::new(srv.port(), lab.data.share_path("hello.txt"), out),
        )
        .unwrap()
    };
    let first_id = lab.client.key_id().unwrap();
    let second_id = second.key_id().unwrap();
    let r = copy(&lab.client, "a");
    assert!(r.outcomes[0].ok(), "{}", r.describe());
    assert!(srv.wait_for_log(&format!("Saved trusted key {first_id} for user 'root' from 127.0.0.1 as 'root-{first_id}.pub'"), Duration::from_secs(5)), "{}", tail(&srv.log(), 30));
    let r = copy(&second, "b");
    assert!(
        !r.outcomes[0].ok(),
        "second new key must be refused: {}",
        r.describe()
    );
    let log = srv.log();
    assert!(log.contains("Not trusting new key: trust on first use closed: 1 new key(s) already trusted (--trust-max-new)"), "{}", tail(&log, 30));
    assert!(log.contains("TRUST FAILED, peer presented an untrusted key, dropping connection!"));
    assert!(!lab
        .server
        .ppkeys()
        .join(format!("root-{second_id}.pub"))
        .exists());
    let r = copy(&lab.client, "c");
    assert!(
        r.outcomes[0].ok(),
        "an already trusted key is not affected: {}",
        r.describe()
    );
    let (code, body) = scrape(mport, "/metrics");
    assert_eq!(code, 200);
    let m = parse_exposition(&body);
    assert_eq!(m["rcf_serverd_keys_trusted_total"], 1.0);
    assert_eq!(
        m[r#"rcf_serverd_refusals_total{reason="trust_budget_closed"}"#],
        1.0
    );
    assert_eq!(m["rcf_serverd_trust_budget_open"], 0.0);
    // rcf-key --list-trusted: when each key was trusted (UTC, the file's mtime).
    let s = rcf_key_list_trusted(&lab.server);
    let row = s
        .lines()
        .find(|l| l.contains(&first_id))
        .unwrap_or_else(|| panic!("{s}"));
    let year = 1970 + now() / 31_556_952;
    assert!(
        row.contains(&format!(" {year}-")) || row.contains(&format!(" {}-", year + 1)),
        "{s}"
    );
    assert!(s.lines().next().unwrap().contains("Trusted (UTC)"), "{s}");
    srv.stop();

    // The time window.
    let third = Workdir::new("ops-tofu-cli3").unwrap();
    third.cf_key().unwrap();
    let srv =
        RcfServer::start_with_flags(&lab.server, &lab.policy(), &["-v", "--trust-window", "1"])
            .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let out = third.scratch().join("out").join("w");
    let r = cf_agent_copy(
        &third,
        &CopySpec::new(srv.port(), lab.data.share_path("hello.txt"), out),
    )
    .unwrap();
    assert!(!r.outcomes[0].ok(), "{}", r.describe());
    assert!(
        srv.wait_for_log(
            "trust on first use closed: the 1 s window after start has passed (--trust-window)",
            Duration::from_secs(5)
        ),
        "{}",
        tail(&srv.log(), 30)
    );
    srv.stop();
}

// ---------------------------------------------------------------------------

fn explain(wd: &Workdir, policy: &Path, args: &[&str]) -> (i32, String) {
    let out = wd
        .command(&rcf_binary("rcf-serverd").unwrap())
        .arg("--explain")
        .arg("--workdir")
        .arg(wd.path())
        .arg("-f")
        .arg(policy)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `--explain` predicts what the running server does with a real cf-agent.
#[test]
fn explain_agrees_with_the_running_server() {
    let lab = Lab::new("ops-explain").unwrap();
    let id = lab.client.key_id().unwrap();
    let mut p = lab.policy();
    let tree = lab.data.share.join("tree").to_string_lossy().into_owned();
    // share/tree/sub is denied to this key although share/ admits loopback.
    p.access.push(AccessRule {
        deny_keys: vec![id.clone()],
        admit_ips: vec!["127.0.0.1".into()],
        ..AccessRule::new(format!("{tree}/sub"))
    });
    p.access.push(AccessRule {
        admit_keys: vec![id.clone()],
        ..AccessRule::new(lab.data.secret.to_string_lossy())
    });
    p.access.push(AccessRule {
        admit_ips: vec!["127.0.0.1".into()],
        shortcut: Some("hello".into()),
        ..AccessRule::new(lab.data.share_path("hello.txt"))
    });
    let srv = RcfServer::start(&lab.server, &p).unwrap();
    let pol = srv.policy_path().to_path_buf();
    let cases: Vec<(String, bool)> = vec![
        (lab.data.share_path("hello.txt"), true),
        (format!("{tree}/a.txt"), true),
        (format!("{tree}/sub/b.txt"), false),
        (
            lab.data
                .secret
                .join("secret.txt")
                .to_string_lossy()
                .into_owned(),
            true,
        ),
        (
            lab.data
                .root
                .join("nothing-here.txt")
                .to_string_lossy()
                .into_owned(),
            false,
        ),
    ];
    let specs: Vec<CopySpec> = cases
        .iter()
        .enumerate()
        .map(|(i, (src, _))| CopySpec::new(srv.port(), src.clone(), lab.out(&format!("e{i}"))))
        .collect();
    let run = cf_agent_copies(&lab.client, &specs).unwrap();
    for (i, (src, expect)) in cases.iter().enumerate() {
        let (code, text) = explain(&lab.server, &pol, &["--ip", "127.0.0.1", "--key", &id, src]);
        let said = code == 0;
        assert!(code == 0 || code == 1, "{text}");
        assert_eq!(said, *expect, "explain for {src}:\n{text}");
        assert_eq!(
            run.outcomes[i].ok(),
            said,
            "server vs explain for {src}: {:?}\n{text}\n{}",
            run.outcomes[i],
            tail(&run.output, 30)
        );
        assert!(
            text.contains(if said {
                "verdict: ALLOWED"
            } else {
                "verdict: DENIED"
            }),
            "{text}"
        );
    }
    // Details: which entry decided and why the others did not.
    let (_, text) = explain(
        &lab.server,
        &pol,
        &[
            "--ip",
            "127.0.0.1",
            "--key",
            &id,
            &format!("{tree}/sub/b.txt"),
        ],
    );
    assert!(
        text.contains(&format!("deny_keys '{id}': matches")),
        "{text}"
    );
    assert!(
        text.contains(&format!("denied by key entry '{id}'")),
        "{text}"
    );
    let share_line = text
        .lines()
        .find(|l| l.starts_with(&format!("  '{}/' [", lab.data.share.display())))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        share_line
            .contains("shorter prefix: not consulted (only the longest counts); alone it admits"),
        "{text}"
    );
    // Shortcuts are expanded as the server does.
    let (code, text) = explain(&lab.server, &pol, &["--ip", "127.0.0.1", "hello"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shortcut: 'hello' expands to"), "{text}");
    // Connection-level refusals.
    let (code, text) = explain(
        &lab.server,
        &pol,
        &["--ip", "10.1.2.3", &lab.data.share_path("hello.txt")],
    );
    assert_eq!(code, 1);
    assert!(text.contains("verdict: DENIED at connection level: Remote host '10.1.2.3' not in allowconnects, denying connection"), "{text}");
    let (code, text) = explain(
        &lab.server,
        &pol,
        &[
            "--ip",
            "127.0.0.1",
            "--classic",
            &lab.data.share_path("hello.txt"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        text.contains("Connection is not using latest protocol, denying"),
        "{text}"
    );
    srv.stop();
}

// ---------------------------------------------------------------------------

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist")
}

/// The units pass `systemd-analyze verify` (binary paths pointed at the
/// built binaries, as verify checks that they exist).
#[test]
fn systemd_units_verify() {
    let analyze = require_tool(
        "systemd-analyze",
        "apt-get install systemd (systemd-analyze verifies the units)",
    );
    let tmp = tempfile::tempdir().unwrap();
    let serverd = rcf_binary("rcf-serverd").unwrap();
    let agent = rcf_binary("rcf-agent").unwrap();
    let mut units = Vec::new();
    for e in std::fs::read_dir(dist().join("systemd")).unwrap() {
        let e = e.unwrap();
        let text = std::fs::read_to_string(e.path())
            .unwrap()
            .replace("/usr/bin/rcf-serverd", &serverd.to_string_lossy())
            .replace("/usr/bin/rcf-agent", &agent.to_string_lossy());
        let dst = tmp.path().join(e.file_name());
        std::fs::write(&dst, text).unwrap();
        units.push(dst);
    }
    units.sort();
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "rcf-agent-update.service",
            "rcf-agent-update.timer",
            "rcf-serverd.service",
            "rcf-serverd.socket"
        ]
    );
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains(tmp.path().to_str().unwrap()),
        "systemd-analyze verify:\n{text}"
    );
    // And it does catch mistakes (the check is not vacuous).
    let bad = tmp.path().join("bad.service");
    std::fs::write(
        &bad,
        "[Service]\nType=notify\nExecStart=/nonexistent/rcf-serverd --no-fork\n",
    )
    .unwrap();
    let out = Command::new(require_tool("systemd-analyze", ""))
        .args(["verify", "--man=no"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Socket activation and readiness: `systemd-socket-activate` holds the
/// port and passes it as fd 3; READY=1 (with MAINPID), RELOADING=1 and
/// STOPPING=1 arrive on $NOTIFY_SOCKET; a real cf-agent copies through it.
#[test]
fn socket_activation_and_sd_notify() {
    let activate = require_tool("systemd-socket-activate", "apt-get install systemd");
    let lab = Lab::new("ops-sd").unwrap();
    let port = free_port();
    let policy = lab.server.inputs().join("promises.cf");
    // The policy names another port: the inherited socket wins.
    let mut p = lab.policy();
    p.port = free_port();
    std::fs::write(&policy, p.render()).unwrap();
    let notify_path = lab.server.scratch().join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = lab.server.command(&activate);
    cmd.arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET={}", notify_path.display()))
        .arg(rcf_binary("rcf-serverd").unwrap())
        .args(["--no-fork", "-v", "--workdir"])
        .arg(lab.server.path())
        .arg("-f")
        .arg(&policy);
    let log = lab.server.logs().join("sd-activate.log");
    let mut d = Daemon::spawn("rcf-serverd (socket activated)", cmd, &log).unwrap();
    // systemd-socket-activate execs the service when the first connection
    // arrives (as systemd does for a .socket unit).
    let t0 = Instant::now();
    let first = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "socket never listened: {e}\n{}",
                    d.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1: {e}\n{}", d.log()));
    drop(first);
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.starts_with("READY=1"), "{msg}");
    assert!(
        msg.contains(&format!("MAINPID={}", d.pid())),
        "{msg} (pid {})",
        d.pid()
    );
    assert!(
        d.log()
            .contains("Using the listening socket(s) passed by systemd"),
        "{}",
        d.log()
    );
    assert!(d.log().contains(&format!("port {port})")), "{}", d.log());
    let out = lab.out("sd-hello.txt");
    let run = cf_agent_copy(
        &lab.client,
        &CopySpec::new(port, lab.data.share_path("hello.txt"), out.clone()),
    )
    .unwrap();
    assert!(run.outcomes[0].ok(), "{}\n{}", run.describe(), d.log());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(lab.data.share.join("hello.txt")).unwrap()
    );
    assert!(!port_listening(p.port), "the policy's port was not bound");
    sighup(d.pid());
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"RELOADING=1");
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // SAFETY: our own child, by PID.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    d.stop();
}

// ---------------------------------------------------------------------------

/// Man pages for the three binaries, and the .deb with its contents.
#[test]
fn man_pages_and_deb_package() {
    let bin_dir = rcf_binary("rcf-serverd")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for b in ["rcf-agent", "rcf-key"] {
        rcf_binary(b).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg(dist().join("gen-man.sh"))
        .arg(tmp.path().join("man"))
        .env("RCF_BIN_DIR", &bin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = require_tool("man", "apt-get install man-db");
    for b in ["rcf-serverd", "rcf-agent", "rcf-key"] {
        let page = tmp.path().join("man").join(format!("{b}.8"));
        let text = std::fs::read_to_string(&page).unwrap();
        assert!(
            text.lines().take(5).any(|l| l.starts_with(".TH")),
            "{b}: {text}"
        );
        let r = Command::new(&man)
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "120")
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        let rendered = String::from_utf8_lossy(&r.stdout);
        assert!(
            r.status.success() && rendered.contains("NAME"),
            "{b}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let serverd = std::fs::read_to_string(tmp.path().join("man/rcf-serverd.8")).unwrap();
    for flag in [
        "explain",
        "metrics",
        "trust\\-max\\-new",
        "trust\\-window",
        "check\\-config",
        "no\\-fork",
    ] {
        assert!(serverd.contains(flag), "rcf-serverd.8 lacks {flag}");
    }
    require_tool("dpkg-deb", "apt-get install dpkg");
    let out = Command::new("sh")
        .arg(dist().join("build-deb.sh"))
        .arg(tmp.path().join("deb"))
        .env("RCF_BIN_DIR", &bin_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let c = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&c.stdout);
    for f in [
        "./usr/bin/rcf-serverd",
        "./usr/bin/rcf-agent",
        "./usr/bin/rcf-key",
        "./lib/systemd/system/rcf-serverd.service",
        "./lib/systemd/system/rcf-serverd.socket",
        "./lib/systemd/system/rcf-agent-update.service",
        "./lib/systemd/system/rcf-agent-update.timer",
        "./usr/share/man/man8/rcf-serverd.8.gz",
        "./etc/default/rcf-serverd",
    ] {
        assert!(
            contents.contains(f),
            "{f} missing from the .deb:\n{contents}"
        );
    }
    let info = Command::new("dpkg-deb")
        .args(["--field", &deb, "Package", "Version"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&info.stdout),
        format!("Package: rcf\nVersion: {}\n", env!("CARGO_PKG_VERSION"))
    );
}
