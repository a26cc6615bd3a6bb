//! issue 20, agent failover: `rcf-agent update`, `bootstrap` and `copy`
//! with several hubs serving the same masterfiles (the stock MPF, stamped
//! by the real `cf-promises -T`, copied to each hub; every hub presents
//! the same host key, as replicas do). A refused first hub, a silent one
//! (the connect times out), and one whose server process is killed in the
//! middle of the run each end with the run completed through the next hub
//! and the same `inputs/` (or destination tree) as a run against one hub.
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

/// A TCP relay on 127.0.0.1 in front of a hub: once `kill_after` bytes
/// came from the hub (over all its connections), it stops relaying, kills
/// the hub's server process (by its PID, through the lab's guard), cuts
/// every connection and stops listening. To the agent, the hub died in
/// the middle of the run.
struct DyingHub {
    port: u16,
    died: Arc<AtomicBool>,
    total: Arc<AtomicU64>,
}

impl DyingHub {
    fn start(hub: RcfServer, kill_after: u64) -> DyingHub {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let upstream = hub.port();
        let hub = Arc::new(Mutex::new(Some(hub)));
        let died = Arc::new(AtomicBool::new(false));
        let total = Arc::new(AtomicU64::new(0));
        let (d, t) = (died.clone(), total.clone());
        std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                let client = match l.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || relay(c2, s2, None));
                let kill = (total.clone(), kill_after, hub.clone(), d.clone());
                std::thread::spawn(move || relay(server, client, Some(kill)));
            }
            // The listener is dropped here: reconnects are refused.
        });
        DyingHub {
            port,
            died,
            total: t,
        }
    }
}

type Kill = (
    Arc<AtomicU64>,
    u64,
    Arc<Mutex<Option<RcfServer>>>,
    Arc<AtomicBool>,
);

/// Copy `from` to `to` until EOF; with `kill`, count the bytes into the
/// shared total and, at the limit, kill the hub instead of relaying more.
fn relay(mut from: TcpStream, mut to: TcpStream, kill: Option<Kill>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut n = n;
        let mut die = false;
        if let Some((total, limit, _, _)) = &kill {
            let before = total.fetch_add(n as u64, Ordering::SeqCst);
            if before + n as u64 >= *limit {
                n = limit.saturating_sub(before).min(n as u64) as usize;
                die = true;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if die {
            let (_, _, hub, died) = kill.as_ref().expect("die needs kill");
            if let Some(h) = hub.lock().unwrap().take() {
                h.stop();
            }
            died.store(true, Ordering::SeqCst);
            break;
        }
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
    let cfp = first.bins().promises.clone();
    let st = run_tool(
        first,
        &cfp,
        &["-T", &mf.to_string_lossy()],
        None,
        TOOL_TIMEOUT,
    )
    .unwrap();
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
    let dying = DyingHub::start(c, 12_000);
    let hc = format!("127.0.0.1:{}", dying.port);
    let run = ok(
        &cli,
        &["--json", "update", "--parallel", "1", "-H", &hc, "-H", &hb],
    );
    assert!(
        dying.died.load(Ordering::SeqCst),
        "the hub was not killed ({} bytes relayed)",
        dying.total.load(Ordering::SeqCst)
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

    // 4. copy: a hub killed in the middle of a full recursive copy; the
    //    copy goes on from B and the tree is the hub's masterfiles.
    let c2_wd = replica("fo-c2", &a_wd, &mf_a);
    let c2 = RcfServer::start(&c2_wd, &hub_policy(&c2_wd.path().join("masterfiles"))).unwrap();
    let dying = DyingHub::start(c2, 300_000);
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
        dying.died.load(Ordering::SeqCst),
        "the hub was not killed ({} bytes relayed)",
        dying.total.load(Ordering::SeqCst)
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
