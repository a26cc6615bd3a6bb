//! issue 20, agent failover: `rcf-agent update`, `bootstrap` and `copy`
//! with several hubs serving the same masterfiles (the stock MPF, stamped
//! by the real `cf-promises -T`, copied to each hub; every hub presents
//! the same host key, as replicas do). A refused first hub, a silent one
//! (the connect times out), one whose server process is killed in the
//! middle of the run and one that hangs in the middle of the run each end
//! with the run completed through the next hub and the same `inputs/` (or
//! destination tree) as a run against one hub.
//! The hubs are the real cf-serverd 3.21 and rcf-serverd. Loopback only.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcf_conformance::lab::*;

const MPF: &str = "/usr/share/cfengine3/masterfiles";

/// A hub's policy: masterfiles at `mf` under the `masterfiles` shortcut.
fn hub_policy(mf: &Path) -> ServerPolicy {
    let mut rule = AccessRule::admit_loopback(mf.to_string_lossy().into_owned());
    rule.shortcut = Some("masterfiles".into());
    let mut p = ServerPolicy::new(0);
    p.access.push(rule);
    p
}

/// A replica's work dir: the first hub's host key (one hub identity) and
/// a copy of its masterfiles.
fn replica(name: &str, first: &Workdir, mf: &Path) -> Workdir {
    let wd = Workdir::new(name).unwrap();
    for f in ["localhost.priv", "localhost.pub"] {
        std::fs::copy(first.ppkeys().join(f), wd.ppkeys().join(f)).unwrap();
    }
    copy_tree(mf, &wd.path().join("masterfiles")).unwrap();
    wd
}

/// How a [`FailingHub`] fails once its byte budget is spent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The hub's server process is killed (by its PID, through the lab's
    /// guard), every connection cut, and the port closed: the hub died.
    Killed,
    /// Nothing more is relayed, connections stay open and new ones are
    /// accepted but never answered: the hub hangs (the agent times out).
    Stalled,
}

/// What the relay threads of a [`FailingHub`] share.
struct Shared {
    /// Bytes relayed from the hub so far, over all connections.
    total: AtomicU64,
    budget: u64,
    failure: Failure,
    /// The budget was spent and the hub failed.
    failed: AtomicBool,
    /// The test is over: stalled connections may close.
    shutdown: AtomicBool,
    hub: Mutex<Option<RcfServer>>,
}

/// A TCP relay on 127.0.0.1 in front of a hub that fails as `failure` says
/// once `budget` bytes came from the hub: to the agent, the hub died or
/// hung in the middle of the run.
struct FailingHub {
    port: u16,
    shared: Arc<Shared>,
}

impl FailingHub {
    fn start(hub: RcfServer, budget: u64, failure: Failure) -> FailingHub {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let upstream = hub.port();
        let shared = Arc::new(Shared {
            total: AtomicU64::new(0),
            budget,
            failure,
            failed: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            hub: Mutex::new(Some(hub)),
        });
        let sh = shared.clone();
        std::thread::spawn(move || {
            let mut parked = Vec::new();
            while !sh.shutdown.load(Ordering::SeqCst) {
                let failed = sh.failed.load(Ordering::SeqCst);
                if failed && sh.failure == Failure::Killed {
                    break; // the listener is dropped: reconnects are refused
                }
                let client = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                if failed {
                    parked.push(client); // accepted, never answered
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || relay(c2, s2, None));
                let sh2 = sh.clone();
                std::thread::spawn(move || relay(server, client, Some(&sh2)));
            }
        });
        FailingHub { port, shared }
    }

    fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    fn relayed(&self) -> u64 {
        self.shared.total.load(Ordering::SeqCst)
    }
}

impl Drop for FailingHub {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
    }
}

/// Copy `from` to `to` until EOF; with `hub`, count the bytes against its
/// budget and, when it is spent, fail the hub instead of relaying more.
fn relay(mut from: TcpStream, mut to: TcpStream, hub: Option<&Shared>) {
    let mut buf = [0u8; 4096];
    loop {
        let mut n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut spent = false;
        if let Some(h) = hub {
            let before = h.total.fetch_add(n as u64, Ordering::SeqCst);
            if before + n as u64 >= h.budget {
                n = h.budget.saturating_sub(before).min(n as u64) as usize;
                spent = true;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        let Some(h) = hub.filter(|_| spent) else {
            continue;
        };
        h.failed.store(true, Ordering::SeqCst);
        match h.failure {
            Failure::Killed => {
                if let Some(server) = h.hub.lock().unwrap().take() {
                    server.stop();
                }
            }
            Failure::Stalled => {
                while !h.shutdown.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        break;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// `rcf-agent <args>`, which must succeed.
#[track_caller]
fn ok(wd: &Workdir, args: &[&str]) -> ToolRun {
    let run = rcf_agent(wd, args).unwrap();
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    run
}

/// Edit the hub's masterfiles (one edit, one new file), stamp them with
/// the real `cf-promises -T`, and copy the result to the replicas.
fn change(first: &Workdir, replicas: &[&Workdir], n: u32) {
    let mf = first.path().join("masterfiles");
    let main = mf.join("services/main.cf");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str(&format!("# change {n}\n"));
    std::fs::write(&main, text).unwrap();
    std::fs::write(mf.join(format!("services/added{n}.cf")), "# added\n").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let st = cf_promises_stamp(first, &mf).unwrap();
    assert!(st.success(), "{}", st.describe());
    for r in replicas {
        copy_tree(&mf, &r.path().join("masterfiles")).unwrap();
    }
}

#[test]
fn update_bootstrap_and_copy_fail_over_to_the_next_hub() {
    let (a_wd, reference) = agent_workdirs("fo").unwrap();
    let mf_a = a_wd.path().join("masterfiles");
    copy_tree(Path::new(MPF), &mf_a).unwrap();
    change(&a_wd, &[], 0);
    let b_wd = replica("fo-b", &a_wd, &mf_a);
    let c_wd = replica("fo-c", &a_wd, &mf_a);
    // A: the real cf-serverd; B and C: rcf-serverd replicas (C is killed).
    let a = RealServer::start(&a_wd, &hub_policy(&mf_a)).unwrap();
    let b = RcfServer::start(&b_wd, &hub_policy(&b_wd.path().join("masterfiles"))).unwrap();
    let c = RcfServer::start(&c_wd, &hub_policy(&c_wd.path().join("masterfiles"))).unwrap();
    let (ha, hb) = (a.host_port(), b.host_port());
    let refused = format!("127.0.0.1:{}", free_port());
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let hs = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());

    // The reference: one hub, no trouble.
    ok(&reference, &["bootstrap", "--no-failsafe", &ha]);

    // 1. Bootstrap with a refused first hub: done through A, same inputs;
    //    policy_server.dat lists both, the first line being cf-agent's.
    let cli = Workdir::new("fo-cli").unwrap();
    cli.cf_key().unwrap();
    ok(&cli, &["bootstrap", "--no-failsafe", &refused, "-H", &ha]);
    trees_equal(&reference.inputs(), &cli.inputs()).unwrap();
    assert_eq!(
        std::fs::read_to_string(cli.path().join("policy_server.dat")).unwrap(),
        format!("{refused}\n{ha}\n")
    );
    // update from policy_server.dat: the refused hub, then A; stamp unchanged.
    let run = ok(&cli, &["--json", "update"]);
    assert!(run.contains("\"walked\":false"), "{}", run.describe());

    // 2. A change on the hubs; the reference updates from A, the client
    //    from a silent hub (connect timeout, 2 s) then B.
    change(&a_wd, &[&b_wd, &c_wd], 1);
    let run = ok(&reference, &["--json", "update"]);
    assert!(run.contains("\"walked\":true"), "{}", run.describe());
    let t0 = Instant::now();
    let run = ok(
        &cli,
        &["--json", "-v", "update", "-t", "2", "-H", &hs, "-H", &hb],
    );
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(run.contains("\"walked\":true"), "{}", run.describe());
    assert!(
        run.contains(&format!("\"server\":\"{hb}\"")),
        "{}",
        run.describe()
    );
    trees_equal(&reference.inputs(), &cli.inputs()).unwrap();

    // 3. Another change; C dies in the middle of the client's update (its
    //    server process killed after 12 KB of replies (of about 24 KB): the handshake, the
    //    stamp and part of the walk). The update starts over on B and
    //    swaps in B's complete policy once.
    change(&a_wd, &[&b_wd, &c_wd], 2);
    ok(&reference, &["update"]);
    let c_pid = c.pid();
    let dying = FailingHub::start(c, 12_000, Failure::Killed);
    let hc = format!("127.0.0.1:{}", dying.port);
    let run = ok(
        &cli,
        &["--json", "update", "--parallel", "1", "-H", &hc, "-H", &hb],
    );
    assert!(
        dying.failed(),
        "the hub was not killed ({} bytes relayed)",
        dying.relayed()
    );
    assert!(
        !Path::new(&format!("/proc/{c_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{c_pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true),
        "rcf-serverd {c_pid} still runs"
    );
    run.assert_contains(&format!(
        "Policy server '{hc}' was lost during the update; starting over from '{hb}'"
    ));
    assert!(run.contains("\"walked\":true"), "{}", run.describe());
    trees_equal(&reference.inputs(), &cli.inputs()).unwrap();
    assert!(
        !cli.path().join("inputs.cfnew").exists()
            && std::fs::read_dir(cli.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("staging")),
        "no staging left behind"
    );

    // 3b. Another change; a hub that hangs in the middle of the update
    //     (stops answering, keeps its connections and port open): the
    //     read times out (-t 2), so does the reconnect, and B takes over.
    change(&a_wd, &[&b_wd], 3);
    ok(&reference, &["update"]);
    let c3_wd = replica("fo-c3", &a_wd, &a_wd.path().join("masterfiles"));
    let c3 = RcfServer::start(&c3_wd, &hub_policy(&c3_wd.path().join("masterfiles"))).unwrap();
    let hung = FailingHub::start(c3, 12_000, Failure::Stalled);
    let hh = format!("127.0.0.1:{}", hung.port);
    let t0 = Instant::now();
    let run = ok(
        &cli,
        &[
            "--json",
            "update",
            "-t",
            "2",
            "--parallel",
            "1",
            "-H",
            &hh,
            "-H",
            &hb,
        ],
    );
    assert!(
        hung.failed(),
        "the hub never hung ({} bytes relayed)",
        hung.relayed()
    );
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    run.assert_contains(&format!(
        "Policy server '{hh}' was lost during the update; starting over from '{hb}'"
    ));
    assert!(
        run.contains(&format!("\"server\":\"{hb}\"")),
        "{}",
        run.describe()
    );
    trees_equal(&reference.inputs(), &cli.inputs()).unwrap();
    drop(hung);

    // 4. copy: a hub killed in the middle of a full recursive copy; the
    //    copy goes on from B and the tree is the hub's masterfiles.
    let c2_wd = replica("fo-c2", &a_wd, &mf_a);
    let c2 = RcfServer::start(&c2_wd, &hub_policy(&c2_wd.path().join("masterfiles"))).unwrap();
    let dying = FailingHub::start(c2, 300_000, Failure::Killed);
    let hc2 = format!("127.0.0.1:{}", dying.port);
    let dest = cli.scratch().join("mf-copy");
    let run = ok(
        &cli,
        &[
            "--json",
            "copy",
            "-H",
            &hc2,
            "-H",
            &hb,
            "--recurse",
            "--purge",
            "--compare",
            "digest",
            "masterfiles",
            &dest.to_string_lossy(),
        ],
    );
    assert!(
        dying.failed(),
        "the hub was not killed ({} bytes relayed)",
        dying.relayed()
    );
    run.assert_contains(&format!(
        "Server '{hc2}' was lost during the run; starting over from '{hb}'"
    ));
    trees_equal(&mf_a, &dest).unwrap();
    let copied = run
        .output
        .lines()
        .find(|l| l.starts_with("{\"ok\":true"))
        .unwrap_or_else(|| panic!("{}", run.describe()))
        .matches(".cf\"")
        .count();
    assert!(
        copied > 50,
        "the summary keeps both attempts' files: {copied}"
    );
    drop(silent);
    a.stop();
    b.stop();
}
