//! Issue 20 end to end, with the real parts: Debian's HAProxy (TCP mode,
//! roundrobin, `send-proxy-v2`, health checks with `check-send-proxy`) in
//! front of two rcf-serverd replicas that present the same hub key and
//! share one PostgreSQL trust store (initdb/pg_ctl in a temporary
//! directory, loopback only), and the real cf-agent 3.21 bound to 127.0.0.2
//! or 127.0.0.3 (`bindtointerface`). Every daemon is stopped by PID, also
//! when an assertion fails. Fails, never skips, when a part is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcf_conformance::lab::{
    cf_agent_policy, copy_policy, free_port, rcf_binary, run_tool, AccessRule, CopySpec, Daemon,
    HaProxy, RcfServer, ServerPolicy, ToolRun, Workdir, TOOL_TIMEOUT,
};
use rcf_pg::scratch::ScratchPostgres;

/// PostgreSQL, HAProxy and two replicas, with the data they serve.
struct Cluster {
    pg: ScratchPostgres,
    url: String,
    /// The replicas' work dirs (one hub key, deployed to both).
    /// Kept for their temporary directories.
    _wds: [Workdir; 2],
    replicas: [Option<RcfServer>; 2],
    ports: [u16; 2],
    haproxy: HaProxy,
    /// Where agents connect (HAProxy's frontend).
    front: u16,
    data: tempfile::TempDir,
    policy: ServerPolicy,
}

/// The replicas' policy: 127.0.0.2 admitted, 127.0.0.3 refused at
/// connection (denyconnects), files for 127.0.0.2 by `admit_ips`, and one
/// directory per client named by `$(connection.ip)`.
fn policy(data: &Path, trust_new: bool) -> ServerPolicy {
    let mut p = ServerPolicy::new(0);
    p.allowconnects = vec!["127.0.0.2".into(), "127.0.0.3".into(), "127.0.0.4".into()];
    p.denyconnects = vec!["127.0.0.3".into()];
    p.allowallconnects = vec!["127.0.0.2".into()];
    p.allowlegacyconnects = vec!["127.0.0.2".into()];
    p.trustkeysfrom = if trust_new {
        vec!["127.0.0.2".into(), "127.0.0.4".into()]
    } else {
        vec![]
    };
    let d = data.display();
    p.access.push(AccessRule {
        admit_ips: vec!["127.0.0.2".into(), "127.0.0.4".into()],
        ..AccessRule::new(format!("{d}/common"))
    });
    p.access.push(AccessRule {
        admit_ips: vec!["$(connection.ip)".into()],
        ..AccessRule::new(format!("{d}/per_host/$(connection.ip)/"))
    });
    p
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let pg = ScratchPostgres::start().expect("start PostgreSQL (apt-get install postgresql)");
        let url = pg.url();
        // The schema, by the server's own --migrate.
        let out = Command::new(rcf_binary("rcf-serverd").unwrap())
            .args(["--trust-store", &url, "--migrate"])
            .output()
            .unwrap();
        assert!(out.status.success(), "--migrate: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("migrated from version 0"),
            "{out:?}"
        );

        let data = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(data.path().join("per_host/127.0.0.2")).unwrap();
        std::fs::create_dir_all(data.path().join("per_host/127.0.0.1")).unwrap();
        std::fs::write(data.path().join("common"), b"for everyone\n").unwrap();
        std::fs::write(
            data.path().join("per_host/127.0.0.2/mine"),
            b"127.0.0.2's\n",
        )
        .unwrap();
        std::fs::write(
            data.path().join("per_host/127.0.0.1/proxy"),
            b"the proxy's\n",
        )
        .unwrap();

        // One hub identity: the first replica's key, deployed to the second.
        let wds = [
            Workdir::new(&format!("{name}-r1")).unwrap(),
            Workdir::new(&format!("{name}-r2")).unwrap(),
        ];
        wds[0].cf_key().unwrap();
        for f in ["localhost.priv", "localhost.pub"] {
            std::fs::copy(wds[0].ppkeys().join(f), wds[1].ppkeys().join(f)).unwrap();
        }
        assert_eq!(wds[0].key_id().unwrap(), wds[1].key_id().unwrap());

        let ports = [free_port(), free_port()];
        let policy = policy(data.path(), true);
        // The replicas first, so HAProxy's first health checks find them.
        let replicas = [0, 1].map(|i| Some(start_replica(&wds[i], &policy, ports[i], &url)));
        let haproxy = HaProxy::start(data.path(), &ports, 200, 300).unwrap();
        let front = haproxy.front();
        Cluster {
            pg,
            url,
            _wds: wds,
            replicas,
            ports,
            haproxy,
            front,
            data,
            policy,
        }
    }

    fn replica(&self, i: usize) -> &RcfServer {
        self.replicas[i].as_ref().expect("replica running")
    }

    fn logs(&self) -> [String; 2] {
        [0, 1].map(|i| {
            self.replicas[i]
                .as_ref()
                .map(|r| r.log())
                .unwrap_or_default()
        })
    }

    /// Rewrite both replicas' policy and reload them (SIGHUP, as systemd's
    /// ExecReload), waiting until each has taken it.
    fn reload(&mut self, policy: ServerPolicy) {
        self.policy = policy;
        for i in 0..2 {
            let Some(r) = self.replicas[i].as_ref() else {
                continue;
            };
            let before = r.log().matches("New promises detected").count();
            let mut p = self.policy.clone();
            p.port = self.ports[i];
            std::fs::write(r.policy_path(), p.render()).unwrap();
            // SAFETY: kill(2) on the PID of a child this test started.
            unsafe { libc::kill(r.pid() as i32, libc::SIGHUP) };
            let t0 = Instant::now();
            while r.log().matches("New promises detected").count() == before {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "reload: {}",
                    r.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Ask the store through rcf-key, as an administrator would.
    fn rcf_key(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new(rcf_binary("rcf-key").unwrap())
            .args(["--trust-store", &self.url])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "rcf-key {args:?}: {out:?}");
        out
    }

    fn trusted_lines(&self) -> Vec<String> {
        let out = self.rcf_key(&["--list-trusted", "-N"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("MD5="))
            .map(str::to_string)
            .collect()
    }
}

/// A replica on `port`: `-v`, `--proxy-from 127.0.0.1/32` (HAProxy), the
/// shared store; waits until it listens for revocations.
fn start_replica(wd: &Workdir, policy: &ServerPolicy, port: u16, url: &str) -> RcfServer {
    let mut p = policy.clone();
    p.port = port;
    let r = RcfServer::start_with_flags(
        wd,
        &p,
        &["-v", "--proxy-from", "127.0.0.1/32", "--trust-store", url],
    )
    .unwrap();
    assert!(
        r.wait_for_log(
            "Trust store: listening for revocations",
            Duration::from_secs(10)
        ),
        "replica on {port}:\n{}",
        r.log()
    );
    r
}

/// A cf-agent run copying `files` (relative to the data dir) from
/// `host:port` into the client's scratch dir, bound to `bind`.
fn agent(client: &Workdir, bind: &str, port: u16, data: &Path, files: &[&str]) -> ToolRun {
    agent_protocol(client, bind, port, data, files, None)
}

/// [`agent`] with `protocol_version` set (e.g. `classic`).
fn agent_protocol(
    client: &Workdir,
    bind: &str,
    port: u16,
    data: &Path,
    files: &[&str],
    protocol: Option<&str>,
) -> ToolRun {
    client.cf_key().unwrap();
    let specs: Vec<CopySpec> = files
        .iter()
        .map(|f| {
            let dest = client.scratch().join(f.replace('/', "_"));
            let _ = std::fs::remove_file(&dest);
            let spec = CopySpec::new(port, format!("{}/{f}", data.display()), dest);
            match protocol {
                Some(p) => spec.protocol(p),
                None => spec,
            }
        })
        .collect();
    let text = format!(
        "{}\nbody agent control\n{{\n  bindtointerface => \"{bind}\";\n}}\n",
        copy_policy(&specs)
    );
    let (run, _) = cf_agent_policy(client, &text, &["-v"]).unwrap();
    run
}

fn copied(client: &Workdir, f: &str) -> Option<Vec<u8>> {
    std::fs::read(client.scratch().join(f.replace('/', "_"))).ok()
}

/// The log lines of replica logs since `marks`, for one client address.
fn since(logs: &[String; 2], marks: &[usize; 2], i: usize) -> String {
    logs[i][marks[i].min(logs[i].len())..].to_string()
}

fn marks(c: &Cluster) -> [usize; 2] {
    c.logs().map(|l| l.len())
}

#[test]
fn cluster_haproxy_tofu_acls_by_client_address_outage_and_refusals() {
    let mut c = Cluster::start("cluster-a");
    let data = c.data.path().to_path_buf();
    let client = Workdir::new("cluster-a-agent").unwrap();

    // 1. TOFU on the first run, through HAProxy, stored once in PostgreSQL.
    let m = marks(&c);
    let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
    assert_eq!(
        copied(&client, "common").as_deref(),
        Some(&b"for everyone\n"[..]),
        "{}",
        run.describe()
    );
    let logs = c.logs();
    let tofu: Vec<usize> = (0..2)
        .filter(|&i| since(&logs, &m, i).contains("Trusting new key"))
        .collect();
    assert_eq!(tofu.len(), 1, "one replica trusted the new key:\n{logs:#?}");
    assert!(
        since(&logs, &m, tofu[0]).contains("127.0.0.2>"),
        "the client's address, not the proxy's:\n{}",
        logs[tofu[0]]
    );
    let agent_id = client.key_id().unwrap();
    let trusted = c.trusted_lines();
    assert_eq!(trusted.len(), 1, "{trusted:?}");
    assert!(
        trusted[0].contains(&agent_id) && trusted[0].contains("127.0.0.2"),
        "{trusted:?}"
    );

    // 2. trustkeysfrom closed: further runs are served by both replicas,
    // which know the key only from the shared store.
    c.reload(policy(&data, false));
    let m = marks(&c);
    for _ in 0..4 {
        let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
        assert!(copied(&client, "common").is_some(), "{}", run.describe());
    }
    let logs = c.logs();
    for i in 0..2 {
        let l = since(&logs, &m, i);
        assert!(
            l.contains("127.0.0.2>") && l.contains("Client is TRUSTED"),
            "replica {i} served none of the runs:\n{l}"
        );
        assert!(!l.contains("Trusting new key"), "{l}");
    }

    // The classic protocol through the proxy too: allowlegacyconnects and
    // the key check (in the shared store) see the client's address.
    let m = marks(&c);
    let run = agent_protocol(
        &client,
        "127.0.0.2",
        c.front,
        &data,
        &["common"],
        Some("classic"),
    );
    assert!(copied(&client, "common").is_some(), "{}", run.describe());
    let logs = c.logs();
    assert!(
        (0..2).any(|i| {
            let l = since(&logs, &m, i);
            l.contains("127.0.0.2>") && l.contains("considering the protocol as Classic")
        }),
        "{logs:#?}"
    );

    // A revocation by rcf-key reaches both replicas (LISTEN/NOTIFY): the
    // next connection to either is refused, without a restart; trusting
    // the key again (rcf-key -t) re-admits it.
    c.rcf_key(&["-r", &agent_id]);
    let m = marks(&c);
    for _ in 0..2 {
        let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
        assert_eq!(
            copied(&client, "common"),
            None,
            "revoked key served:\n{}",
            run.describe()
        );
    }
    let logs = c.logs();
    for i in 0..2 {
        assert!(
            since(&logs, &m, i).contains(&format!("key {agent_id} was revoked in the trust store")),
            "replica {i}:\n{}",
            since(&logs, &m, i)
        );
    }
    let pubkey = client.pubkey_path();
    c.rcf_key(&["-t", &format!("root@127.0.0.2:{}", pubkey.display())]);
    for _ in 0..2 {
        let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
        assert!(copied(&client, "common").is_some(), "{}", run.describe());
    }

    // 3. ACLs by the client's address through the proxy: admit_ips and
    // $(connection.ip) name 127.0.0.2, not HAProxy's 127.0.0.1.
    let run = agent(
        &client,
        "127.0.0.2",
        c.front,
        &data,
        &["per_host/127.0.0.2/mine", "per_host/127.0.0.1/proxy"],
    );
    assert_eq!(
        copied(&client, "per_host/127.0.0.2/mine").as_deref(),
        Some(&b"127.0.0.2's\n"[..]),
        "{}",
        run.describe()
    );
    assert_eq!(
        copied(&client, "per_host/127.0.0.1/proxy"),
        None,
        "{}",
        run.describe()
    );
    // 127.0.0.3 is in denyconnects: refused at connection by whichever
    // replica HAProxy picks, under its own address.
    let other = Workdir::new("cluster-a-denied").unwrap();
    let m = marks(&c);
    let run = agent(&other, "127.0.0.3", c.front, &data, &["common"]);
    assert_eq!(copied(&other, "common"), None, "{}", run.describe());
    let logs = c.logs();
    assert!(
        (0..2).any(|i| since(&logs, &m, i).contains("Remote host '127.0.0.3' is in denyconnects")),
        "{logs:#?}"
    );

    // 4. A PROXY header from a peer not in --proxy-from (here 127.0.0.2,
    // straight to a replica) is refused with one line; so is a listed
    // proxy's connection without a header. Nothing is parsed as protocol.
    let m = marks(&c);
    {
        use std::io::{Read, Write};
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(
            &"127.0.0.2:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
        sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], c.ports[0])).into())
            .unwrap();
        let mut s: std::net::TcpStream = sock.into();
        s.write_all(b"PROXY TCP4 127.0.0.9 127.0.0.1 5000 5308\r\nCAUTH x")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed without a byte");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", c.ports[0])).unwrap();
        s.write_all(b"CAUTH 127.0.0.1 root 0\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed without a byte");
    }
    assert!(c
        .replica(0)
        .wait_for_log("did not send a PROXY header", Duration::from_secs(5)));
    let l = since(&c.logs(), &m, 0);
    let unlisted: Vec<&str> = l
        .lines()
        .filter(|l| l.contains("PROXY v1 header from a peer not in --proxy-from"))
        .collect();
    assert_eq!(unlisted.len(), 1, "{l}");
    assert!(unlisted[0].contains("127.0.0.2>"), "{l}");
    assert!(
        !l.contains("127.0.0.9"),
        "the unlisted header's address was not used:\n{l}"
    );

    // 5. PostgreSQL stopped: the trusted agent is still served by both
    // replicas (from their caches), a new one is refused with a clear
    // line, and all is well once the database is back, with no restart.
    c.reload(policy(&data, true));
    let pids = [c.replica(0).pid(), c.replica(1).pid()];
    c.pg.stop();
    let newcomer = Workdir::new("cluster-a-new").unwrap();
    let m = marks(&c);
    for _ in 0..2 {
        let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
        assert!(
            copied(&client, "common").is_some(),
            "trusted agent refused with the database down:\n{}",
            run.describe()
        );
    }
    let run = agent(&newcomer, "127.0.0.4", c.front, &data, &["common"]);
    assert_eq!(copied(&newcomer, "common"), None, "{}", run.describe());
    let logs = c.logs();
    for i in 0..2 {
        assert!(
            since(&logs, &m, i).contains("trusted from this replica's cache"),
            "replica {i}:\n{}",
            since(&logs, &m, i)
        );
    }
    assert!(
        (0..2)
            .any(|i| since(&logs, &m, i)
                .contains("only cached keys are trusted, new keys are refused")),
        "{logs:#?}"
    );
    c.pg.restart().expect("restart PostgreSQL");
    let t0 = Instant::now();
    loop {
        let run = agent(&newcomer, "127.0.0.4", c.front, &data, &["common"]);
        if copied(&newcomer, "common").is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "new agent never admitted after the restart:\n{}",
            run.describe()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let run = agent(&client, "127.0.0.2", c.front, &data, &["common"]);
    assert!(copied(&client, "common").is_some(), "{}", run.describe());
    assert_eq!(
        [c.replica(0).pid(), c.replica(1).pid()],
        pids,
        "no replica restarted"
    );
    assert_eq!(c.trusted_lines().len(), 2, "{:?}", c.trusted_lines());
    // Another key claiming 127.0.0.2 (already trusted with the first
    // agent's key) is refused on every replica, trustkeysfrom or not.
    let impostor = Workdir::new("cluster-a-impostor").unwrap();
    let m = marks(&c);
    for _ in 0..2 {
        let run = agent(&impostor, "127.0.0.2", c.front, &data, &["common"]);
        assert_eq!(copied(&impostor, "common"), None, "{}", run.describe());
    }
    let logs = c.logs();
    for i in 0..2 {
        assert!(
            since(&logs, &m, i)
                .contains(&format!("this host is already trusted with key {agent_id}")),
            "replica {i}:\n{}",
            since(&logs, &m, i)
        );
    }
    assert_eq!(c.trusted_lines().len(), 2, "{:?}", c.trusted_lines());
    for r in c.replicas.iter_mut() {
        r.take().unwrap().stop();
    }
    c.haproxy.stop();
}

#[test]
fn cluster_concurrent_tofu_stores_one_key_and_a_killed_replica_fails_over() {
    let mut c = Cluster::start("cluster-b");
    let data = c.data.path().to_path_buf();
    // Many files, so a recursive run lasts long enough to be cut.
    let tree = data.join("per_host/127.0.0.2/tree");
    for d in 0..20 {
        std::fs::create_dir_all(tree.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            std::fs::write(tree.join(format!("d{d}/f{f}")), vec![b'x'; 4096]).unwrap();
        }
    }

    // Concurrent TOFU of the same host (same key, 127.0.0.2) on both
    // replicas at once, straight to each: both admit it, one key stored.
    let client = Workdir::new("cluster-b-agent").unwrap();
    client.cf_key().unwrap();
    let agent_id = client.key_id().unwrap();
    let runs: Vec<ToolRun> = std::thread::scope(|s| {
        let hs: Vec<_> = c
            .ports
            .iter()
            .map(|&p| {
                let (client, data) = (&client, &data);
                s.spawn(move || {
                    let text = format!(
                        "{}\nbody agent control\n{{\n  bindtointerface => \"127.0.0.2\";\n}}\n",
                        copy_policy(&[CopySpec::new(
                            p,
                            format!("{}/common", data.display()),
                            client.scratch().join(format!("common-{p}")),
                        )])
                    );
                    cf_agent_policy(client, &text, &["-v"]).unwrap().0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, p) in c.ports.iter().enumerate() {
        assert!(
            client.scratch().join(format!("common-{p}")).exists(),
            "replica {i}: {}",
            runs[i].describe()
        );
    }
    let trusted = c.trusted_lines();
    assert_eq!(trusted.len(), 1, "one key stored: {trusted:?}");
    assert!(trusted[0].contains(&agent_id), "{trusted:?}");

    // A replica killed in the middle of a run: that run fails, the next
    // try goes through HAProxy to the other replica and completes.
    let spec = CopySpec::new(
        c.front,
        tree.display().to_string(),
        client.scratch().join("tree"),
    )
    .recursive(true);
    let text = format!(
        "{}\nbody agent control\n{{\n  bindtointerface => \"127.0.0.2\";\n}}\n",
        copy_policy(&[spec])
    );
    let pol = client.scratch().join("tree.cf");
    std::fs::write(&pol, &text).unwrap();
    let m = marks(&c);
    let mut cmd = client.command(&client.bins().agent);
    cmd.args(["-K", "-I", "-f"]).arg(&pol);
    let mut cut = Daemon::spawn("cf-agent", cmd, &client.logs().join("cut.log")).unwrap();
    // Whichever replica starts serving the tree is killed (SIGKILL).
    let t0 = Instant::now();
    let victim = loop {
        let logs = c.logs();
        if let Some(i) = (0..2).find(|&i| since(&logs, &m, i).matches("Received:").count() > 50) {
            break i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no replica served the tree: {logs:#?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let pid = c.replica(victim).pid();
    // SAFETY: kill(2) on the PID of a child this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let t0 = Instant::now();
    while cut.is_running() {
        assert!(
            t0.elapsed() < TOOL_TIMEOUT,
            "cf-agent hung after its replica died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cut.stop();
    let files = |dir: &PathBuf| walk(dir);
    assert!(
        files(&client.scratch().join("tree")) < 2000,
        "the cut run did not complete"
    );
    let survivor = 1 - victim;
    let m = marks(&c);
    let run = run_tool(
        &client,
        &client.bins().agent,
        &["-K", "-I", "-f", pol.to_str().unwrap()],
        None,
        TOOL_TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        files(&client.scratch().join("tree")),
        2000,
        "{}",
        run.describe()
    );
    let logs = c.logs();
    assert!(
        since(&logs, &m, survivor).contains("127.0.0.2>"),
        "{}",
        logs[survivor]
    );
    c.replicas[victim].take();
    for r in c.replicas.iter_mut() {
        if let Some(r) = r.take() {
            r.stop();
        }
    }
    c.haproxy.stop();
}

fn walk(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}
