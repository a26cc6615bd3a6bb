//! rcf-serverd's event-loop threads (one per CPU, each on its own
//! SO_REUSEPORT socket): concurrent copies are served exactly, `--threads`
//! sizes them, and the port is still exclusive: a second server on a port
//! already in use (ours or cf-serverd) fails to start instead of joining
//! the socket group; a peer connecting during start-up is served, not
//! reset. Loopback only; servers stopped by PID (lab `Daemon`).

mod support;

use rcf_conformance::lab::*;

/// Names of `pid`'s threads that are event loops.
/// The event-loop threads of `pid`, sorted, once `want` of them exist (or
/// after 10 s, whatever there is then). rcf-serverd logs its ready line
/// before it spawns the loops (its start-up notices must come first), so
/// give them a moment to appear rather than racing the spawn.
fn loop_threads(pid: u32, want: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = loop_threads_now(pid);
        if v.len() >= want || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn loop_threads_now(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| s.starts_with("rcf-serverd-"))
        .collect();
    v.sort();
    v
}

fn policy_for(wd: &Workdir, port: u16) -> (ServerPolicy, std::path::PathBuf) {
    let mf = wd.scratch().join("masterfiles");
    for i in 0..40 {
        let d = mf.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join(format!("f{i}.cf")),
            format!("file {i}\n").repeat(50 + i),
        )
        .unwrap();
    }
    let mut p = ServerPolicy::new(port).admit(mf.to_str().unwrap());
    p.allowallconnects = vec!["127.0.0.1".into()];
    (p, mf)
}

#[test]
fn threads_sizes_the_event_loops_and_concurrent_copies_are_exact() {
    require_cfengine().unwrap();
    let wd = Workdir::new("threads-srv").unwrap();
    let (p, mf) = policy_for(&wd, 0);
    let srv = RcfServer::start_with_flags(&wd, &p, &["-v", "--threads", "3"]).unwrap();
    assert_eq!(
        loop_threads(srv.pid(), 3),
        ["rcf-serverd-0", "rcf-serverd-1", "rcf-serverd-2"]
    );
    // Many connections at once (rcf-agent --parallel opens several): every
    // copy completes and is exact, whichever loop the kernel gave each to.
    let cli = Workdir::new("threads-cli").unwrap();
    cli.cf_key().unwrap();
    let hp = srv.host_port();
    let src = mf.to_string_lossy().into_owned();
    std::thread::scope(|sc| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let (cli, hp, src) = (&cli, &hp, &src);
                sc.spawn(move || {
                    let dest = cli.scratch().join(format!("dest{i}"));
                    let d = dest.to_string_lossy().into_owned();
                    let args = [
                        "copy",
                        "-H",
                        hp.as_str(),
                        "--trustkey",
                        "--recurse",
                        "--parallel",
                        "4",
                        src.as_str(),
                        d.as_str(),
                    ];
                    (dest, rcf_agent(cli, &args).unwrap())
                })
            })
            .collect();
        for r in runs {
            let (dest, out) = r.join().unwrap();
            assert!(out.success(), "{}", out.describe());
            if let Err(e) = trees_equal(&mf, &dest) {
                panic!("copy into {} differs: {e}", dest.display());
            }
        }
    });
    let log = srv.log();
    let accepted = log.matches("Accepting connection").count();
    assert!(
        accepted >= 5,
        "expected parallel connections, log has {accepted}"
    );

    let wd1 = Workdir::new("threads-one").unwrap();
    let (p1, _) = policy_for(&wd1, 0);
    let one = RcfServer::start_with_flags(&wd1, &p1, &["--threads", "1"]).unwrap();
    assert_eq!(loop_threads(one.pid(), 1), ["rcf-serverd-0"]);
}

#[test]
fn a_port_in_use_is_refused_not_shared() {
    require_cfengine().unwrap();
    // Ours first: a second rcf-serverd (whose sockets would also carry
    // SO_REUSEPORT) must not join the first one's group.
    let wd = Workdir::new("threads-excl-a").unwrap();
    let (p, _) = policy_for(&wd, 0);
    let first = RcfServer::start(&wd, &p).unwrap();
    let wd2 = Workdir::new("threads-excl-b").unwrap();
    let (mut p2, _) = policy_for(&wd2, 0);
    p2.port = first.port();
    let second = RcfServer::start(&wd2, &p2);
    let text = match second {
        Ok(s) => panic!(
            "a second rcf-serverd started on port {} (pid {})",
            first.port(),
            s.pid()
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        text.contains("Unable to start server") && text.contains("in use"),
        "{text}"
    );
    assert!(first.is_running(), "the first server must keep serving");
    assert!(port_listening(first.port()));

    // The real cf-serverd holds the port: rcf-serverd refuses it too.
    let wd3 = Workdir::new("threads-excl-cfe").unwrap();
    let (p3, _) = policy_for(&wd3, 0);
    let cfe = RealServer::start_with_flags(&wd3, &p3, &[]).unwrap();
    let wd4 = Workdir::new("threads-excl-c").unwrap();
    let (mut p4, _) = policy_for(&wd4, 0);
    p4.port = cfe.port();
    let text = match RcfServer::start(&wd4, &p4) {
        Ok(s) => panic!("rcf-serverd started on cf-serverd's port (pid {})", s.pid()),
        Err(e) => e.to_string(),
    };
    assert!(text.contains("Unable to start server"), "{text}");
}

/// rcf-serverd raises its open-files soft limit to the hard one at start
/// (Debian's soft 1024 is below what maxconnections plus the
/// pre-authentication budget may need), and sizes the budget's default
/// from it: a quarter, within 256-4096, said in a verbose start-up line.
#[test]
fn open_files_soft_limit_is_raised_and_sizes_the_preauth_budget() {
    require_cfengine().unwrap();
    // SAFETY: getrlimit/setrlimit on a local struct; the soft limit is only
    // lowered (children inherit it) and put back below.
    let (soft, hard) = unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        (l.rlim_cur, l.rlim_max)
    };
    assert!(
        hard > 1024,
        "the test needs a hard open-files limit above 1024, have {hard}"
    );
    let set = |cur: libc::rlim_t| unsafe {
        let l = libc::rlimit {
            rlim_cur: cur,
            rlim_max: hard,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    };
    set(1024);
    let wd = Workdir::new("nofile-srv").unwrap();
    let (p, _) = policy_for(&wd, 0);
    let started = RcfServer::start_with_flags(&wd, &p, &["-v"]);
    set(soft);
    let srv = started.unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_string();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let hard_s = if hard == libc::RLIM_INFINITY {
        "unlimited".to_string()
    } else {
        hard.to_string()
    };
    assert_eq!(
        (fields[3], fields[4]),
        (hard_s.as_str(), hard_s.as_str()),
        "{line}"
    );
    let want = (hard / 4).clamp(256, 4096);
    let log = srv.log();
    assert!(
        log.contains(&format!(
            "Open files limit {hard}; pre-authentication budget {want} in all, 32 per address"
        )),
        "{}",
        tail(&log, 20)
    );
}

/// Kills a traced rcf-serverd, then its strace, by PID: strace 6.1 has no
/// `--kill-on-exit`, and killing strace alone would only detach it.
struct Traced(std::process::Child);

impl Drop for Traced {
    fn drop(&mut self) {
        let pid = self.0.id();
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for kid in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            // SAFETY: signalling a process this test started (strace's child).
            unsafe { libc::kill(kid, libc::SIGKILL) };
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With several event loops, rcf-serverd checks that the port is free with
/// a plain socket before it binds its `SO_REUSEPORT` group. That socket
/// used to listen, so a peer connecting in that moment was reset when the
/// check socket was dropped (seen once as a TLS peer closed before the
/// banner, under load). strace holds the server inside its first
/// `listen()` for 3 s while a peer connects: the peer must be served
/// (it reads the banner), not reset.
#[test]
fn a_peer_connecting_during_start_up_is_served_not_reset() {
    use std::time::{Duration, Instant};
    require_cfengine().unwrap();
    let strace = std::path::Path::new("/usr/bin/strace");
    assert!(
        strace.exists(),
        "strace is missing: apt-get install strace (./test installs it)"
    );
    let wd = Workdir::new("threads-startup").unwrap();
    wd.cf_key().unwrap();
    let (p, _) = policy_for(&wd, free_port());
    let policy_path = wd.inputs().join("promises.cf");
    std::fs::write(&policy_path, p.render_bytes()).unwrap();
    let key =
        rcf_core::keys::parse_private_pem(&std::fs::read(wd.privkey_path()).unwrap()).unwrap();
    // The peer dials every 5 ms from before the server exists.
    let port = p.port;
    let peer = std::thread::spawn(move || {
        let t0 = Instant::now();
        let sock = loop {
            if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "never connected");
            std::thread::sleep(Duration::from_millis(5));
        };
        let at = t0.elapsed();
        // Served: the TLS handshake completes and the banner comes.
        support::RawClient::identify_over(sock, &key, "root");
        at
    });
    let log = wd.scratch().join("traced.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = wd.command(strace);
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=listen"])
        .args(["-e", "inject=listen:delay_exit=3000000:when=1"])
        .arg(rcf_binary("rcf-serverd").unwrap())
        .args(["-F", "-v", "--threads", "2", "--workdir"])
        .arg(wd.path())
        .arg("-f")
        .arg(&policy_path)
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    let srv = Traced(cmd.spawn().unwrap());
    let out = peer.join();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    drop(srv);
    let at = out.unwrap_or_else(|_| {
        panic!("the peer that connected during start-up was not served:\n{text}")
    });
    // It connected while the server was held in its first listen().
    assert!(at < Duration::from_secs(3), "connected only after {at:?}");
}
