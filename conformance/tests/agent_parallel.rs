//! rcf-agent's parallel transfer connections (`copy --parallel N`), against
//! the real cf-serverd 3.21 and rcf-serverd, loopback only:
//! * with `allowallconnects` listing 127.0.0.1, a recursive copy of a
//!   150-file tree uses more than one connection (the agent's verbose
//!   summary line, and the server's own log of accepted connections) and
//!   gives the same tree and the same walk-ordered `--json` summary as
//!   `--parallel 1`;
//! * without it, the second connection is refused; the copy still
//!   succeeds on one connection, with the same summary, and the refusal is
//!   logged at verbose level only;
//! * a transfer connection cut in the middle of its first GET (a cutting
//!   TCP proxy in front of rcf-serverd) leaves no partial or temporary
//!   file: its file is fetched again on another connection.
//!
//! These tests FAIL when the CFEngine binaries or our built binaries are
//! missing: `cargo build -p rcf-agent -p rcf-serverd` first.

use rcf_conformance::lab::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const FILES: usize = 150;

use rcf_conformance::lab::{AnyServer as Srv, ServerKind as Kind};

/// `FILES` files of 1..9 KiB in 6 directories (two levels), deterministic.
fn write_tree(root: &Path) {
    for i in 0..FILES {
        let dir = if i % 3 == 0 {
            root.join(format!("d{}", i % 6))
        } else {
            root.join(format!("d{}/sub", i % 6))
        };
        std::fs::create_dir_all(&dir).unwrap();
        let len = 1_000 + (i * 7919) % 8_000;
        let body: Vec<u8> = (0..len)
            .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        std::fs::write(dir.join(format!("f{i:03}.cf")), body).unwrap();
    }
    // world-readable for cf-serverd's checks
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(root)
        .status();
}

struct Setup {
    srv_wd: Workdir,
    cli_wd: Workdir,
    tree: PathBuf,
}

fn setup(name: &str) -> Setup {
    let (srv_wd, cli_wd) = agent_workdirs(name).unwrap();
    let tree = srv_wd.scratch().join("data/tree");
    write_tree(&tree);
    let _ = std::process::Command::new("chmod")
        .args(["a+rx"])
        .arg(srv_wd.scratch().join("data"))
        .status();
    Setup {
        srv_wd,
        cli_wd,
        tree,
    }
}

fn policy(s: &Setup, allowall: bool) -> ServerPolicy {
    let mut p = ServerPolicy::new(0).admit(s.tree.to_string_lossy().into_owned());
    if !allowall {
        p.allowallconnects = vec![];
    }
    p
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `rcf-agent [-v] --json copy --recurse --parallel N` of the tree to `dest`.
fn copy(s: &Setup, port: u16, dest: &Path, parallel: &str, verbose: bool) -> ToolRun {
    let hp = format!("127.0.0.1:{port}");
    let tree = p(&s.tree);
    let d = p(dest);
    let mut args = vec![];
    if verbose {
        args.push("-v");
    }
    args.extend_from_slice(&[
        "--json",
        "copy",
        "-H",
        &hp,
        "--trustkey",
        "--recurse",
        "--parallel",
        parallel,
        &tree,
        &d,
    ]);
    rcf_agent(&s.cli_wd, &args).unwrap()
}

/// The `--json` document with `dest` replaced by `DEST`.
fn summary(run: &ToolRun, dest: &Path) -> String {
    let line = run
        .output
        .lines()
        .find(|l| l.starts_with("{\"ok\""))
        .unwrap_or_else(|| panic!("no JSON summary\n{}", run.describe()));
    line.replace(&p(dest), "DEST")
}

/// Files fetched and connections used, from the verbose summary line
/// `Fetched N file(s) over K transfer connection(s) (...)`.
fn fetched_over(run: &ToolRun) -> (usize, usize) {
    let line = run
        .lines_with("Fetched ")
        .into_iter()
        .find(|l| l.contains("transfer connection(s)"))
        .unwrap_or_else(|| panic!("no transfer summary line\n{}", run.describe()))
        .to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "Fetched").unwrap();
    (
        words[at + 1].parse().unwrap(),
        words[at + 4].parse().unwrap(),
    )
}

/// No `.cfnew` (or anything else) besides the source's files.
fn no_temps(dest: &Path) {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.to_string_lossy().ends_with(".cfnew") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(dest, &mut v);
    assert!(v.is_empty(), "temporary files left: {v:?}");
}

/// Connections the server logged as accepted from the agent.
fn server_connections(kind: Kind, log: &str) -> usize {
    let needle = match kind {
        // cf-serverd -v, once admitted: "New connection (from 127.0.0.1, sd N), spawning new thread..."
        Kind::Real => "spawning new thread",
        // rcf-serverd -v: "info: 127.0.0.1> Accepting connection"
        Kind::Rcf => "Accepting connection",
    };
    grep(log, needle).len()
}

fn parallel_with_allowallconnects(kind: Kind) {
    let s = setup(&format!("par-all-{kind:?}"));
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s, true)).unwrap();
    let one = s.cli_wd.scratch().join("one");
    let four = s.cli_wd.scratch().join("four");

    let before = server_connections(kind, &srv.log());
    let r4 = copy(&s, srv.port(), &four, "4", true);
    assert!(r4.success(), "{}", r4.describe());
    let conns = server_connections(kind, &srv.log()) - before;
    trees_equal(&s.tree, &four).unwrap();
    no_temps(&four);
    let (files, used) = fetched_over(&r4);
    assert_eq!(files, FILES, "{}", r4.describe());
    assert!(used > 1, "only {used} connection used\n{}", r4.describe());
    assert!(
        conns > 1,
        "the server saw {conns} connection(s)\n{}",
        tail(&srv.log(), 40)
    );
    assert!(
        !r4.contains("refused"),
        "no refusal expected\n{}",
        r4.describe()
    );
    r4.assert_contains("Opened parallel transfer connection");

    // --parallel 1: one connection, same tree, same walk-ordered summary.
    let before = server_connections(kind, &srv.log());
    let r1 = copy(&s, srv.port(), &one, "1", true);
    assert!(r1.success(), "{}", r1.describe());
    assert_eq!(server_connections(kind, &srv.log()) - before, 1);
    assert!(!r1.contains("Fetched "), "{}", r1.describe());
    trees_equal(&s.tree, &one).unwrap();
    assert_eq!(summary(&r1, &one), summary(&r4, &four));
    assert!(summary(&r4, &four).contains(&format!("\"bytes\":{}", tree_bytes(&s.tree))));

    // An up-to-date run opens no extra connection.
    let before = server_connections(kind, &srv.log());
    let up = copy(&s, srv.port(), &four, "4", true);
    assert!(up.success(), "{}", up.describe());
    assert!(up.contains("\"copied\":[]"), "{}", up.describe());
    assert_eq!(server_connections(kind, &srv.log()) - before, 1);
    eprintln!(
        "[agent_parallel] {kind:?}: {files} files over {used} connections, server saw {conns}"
    );
    srv.stop();
}

fn tree_bytes(root: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(root).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            tree_bytes(&e.path())
        } else {
            m.len()
        };
    }
    n
}

#[test]
fn parallel_copy_uses_several_connections_real_server() {
    parallel_with_allowallconnects(Kind::Real);
}

#[test]
fn parallel_copy_uses_several_connections_rcf_server() {
    parallel_with_allowallconnects(Kind::Rcf);
}

fn parallel_refused_without_allowallconnects(kind: Kind) {
    let s = setup(&format!("par-refused-{kind:?}"));
    let srv = Srv::start(kind, &s.srv_wd, &policy(&s, false)).unwrap();
    let one = s.cli_wd.scratch().join("one");
    let quiet = s.cli_wd.scratch().join("quiet");
    let verbose = s.cli_wd.scratch().join("verbose");

    let r1 = copy(&s, srv.port(), &one, "1", false);
    assert!(r1.success(), "{}", r1.describe());

    // Default level: nothing about the refusal, and the same result.
    let rq = copy(&s, srv.port(), &quiet, "4", false);
    assert!(rq.success(), "{}", rq.describe());
    trees_equal(&s.tree, &quiet).unwrap();
    no_temps(&quiet);
    assert_eq!(summary(&r1, &one), summary(&rq, &quiet));
    let noisy: Vec<&str> = rq
        .output
        .lines()
        .filter(|l| !l.starts_with("{\"ok\""))
        .collect();
    assert!(
        noisy.is_empty(),
        "unexpected output at the default level: {noisy:?}"
    );

    // Verbose: the refusal is named once, with the way to allow it.
    let rv = copy(&s, srv.port(), &verbose, "4", true);
    assert!(rv.success(), "{}", rv.describe());
    trees_equal(&s.tree, &verbose).unwrap();
    no_temps(&verbose);
    let refusals = rv.lines_with("Parallel transfer connection");
    assert_eq!(refusals.len(), 1, "{}", rv.describe());
    assert!(
        refusals[0].contains("verbose:") && refusals[0].contains("refused"),
        "{refusals:?}"
    );
    assert!(refusals[0].contains("allowallconnects"), "{refusals:?}");
    let (files, used) = fetched_over(&rv);
    assert_eq!((files, used), (FILES, 1), "{}", rv.describe());
    assert_eq!(summary(&r1, &one), summary(&rv, &verbose));
    // The server did refuse a second connection.
    let log = srv.log();
    let denial = match kind {
        Kind::Real => "denying second simultaneous connection",
        Kind::Rcf => "allowallconnects",
    };
    assert!(
        !grep(&log, denial).is_empty(),
        "no refusal in the server log\n{}",
        tail(&log, 40)
    );
    srv.stop();
}

#[test]
fn parallel_copy_refused_without_allowallconnects_real_server() {
    parallel_refused_without_allowallconnects(Kind::Real);
}

#[test]
fn parallel_copy_refused_without_allowallconnects_rcf_server() {
    parallel_refused_without_allowallconnects(Kind::Rcf);
}

// ---- a transfer connection cut mid-GET --------------------------------------

/// A TCP proxy on 127.0.0.1 in front of `upstream`: a connection accepted
/// while no other is open is forwarded untouched; one accepted while
/// another is open (a parallel transfer connection) is cut (both sockets
/// shut down) once `cut_after` bytes came from the server, which with TLS
/// handshakes of ~2 KiB and files of several KiB lands inside its first or
/// second GET reply. Counts accepted and cut connections.
struct CuttingProxy {
    port: u16,
    accepted: Arc<AtomicU64>,
    cut: Arc<AtomicU64>,
}

impl CuttingProxy {
    fn start(upstream: u16, cut_after: u64) -> CuttingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicU64::new(0));
        let (acc, cut2) = (accepted.clone(), cut.clone());
        let open = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { break };
                acc.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let others = open.fetch_add(1, Ordering::SeqCst);
                let limit = if others == 0 { u64::MAX } else { cut_after };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (cut3, open2) = (cut2.clone(), open.clone());
                std::thread::spawn(move || pump(c2, s2, u64::MAX, None));
                std::thread::spawn(move || {
                    pump(server, client, limit, Some(cut3));
                    open2.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        CuttingProxy {
            port,
            accepted,
            cut,
        }
    }
}

/// Copy `from` to `to` until EOF or `limit` bytes, then shut both down.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: u64, cut: Option<Arc<AtomicU64>>) {
    let mut buf = [0u8; 1024];
    let mut sent = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min((limit - sent) as usize);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if sent >= limit {
            if let Some(c) = &cut {
                c.fetch_add(1, Ordering::SeqCst);
            }
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[test]
fn transfer_connection_cut_mid_get_is_retried_without_partial_files() {
    let s = setup("par-cut");
    let srv = Srv::start(Kind::Rcf, &s.srv_wd, &policy(&s, true)).unwrap();
    let proxy = CuttingProxy::start(srv.port(), 6_000);
    let dest = s.cli_wd.scratch().join("dest");
    let run = copy(&s, proxy.port, &dest, "4", true);
    assert!(run.success(), "{}", run.describe());
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > 1,
        "no extra connection was tried\n{}",
        run.describe()
    );
    assert!(
        proxy.cut.load(Ordering::SeqCst) >= 1,
        "no connection was cut\n{}",
        run.describe()
    );
    // The cut connection handed its file back and it was fetched again.
    assert!(
        !run.lines_with("goes back to the queue").is_empty(),
        "{}",
        run.describe()
    );
    trees_equal(&s.tree, &dest).unwrap();
    no_temps(&dest);
    let (files, _) = fetched_over(&run);
    assert_eq!(files, FILES, "{}", run.describe());
    // Nothing at error level: the cut only cost a retry.
    assert!(run.lines_with("error:").is_empty(), "{}", run.describe());

    // --parallel 1 through the same proxy: one connection, never cut.
    let n0 = proxy.accepted.load(Ordering::SeqCst);
    let dest1 = s.cli_wd.scratch().join("dest1");
    let r1 = copy(&s, proxy.port, &dest1, "1", false);
    assert!(r1.success(), "{}", r1.describe());
    assert_eq!(proxy.accepted.load(Ordering::SeqCst) - n0, 1);
    trees_equal(&s.tree, &dest1).unwrap();
    assert_eq!(summary(&r1, &dest1), summary(&run, &dest));
    srv.stop();
}
