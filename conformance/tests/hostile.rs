//! Hostile peers against rcf-serverd on loopback: silent and trickling
//! connections, connection floods, a reader that stops mid-GET, a peer that
//! pipelines megabytes without reading. Each test holds the server to its
//! deadlines and to bounded memory while an admitted agent is still served.
//!
//! Everything runs on 127.0.0.0/8 in temp dirs; every process is started
//! through the lab and stopped by PID (also on failure); every loop is
//! bounded in count and time.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use rcf_conformance::lab::*;
use support::*;

struct Setup {
    srv_wd: Workdir,
    cli_wd: Workdir,
    data: DataTree,
}

/// These tests load the machine on purpose (floods, stalled readers,
/// descriptor exhaustion); run them one at a time so one test's flood is
/// not another's noise.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// rcf-serverd `-v` sharing `s`'s data to 127.0.0.0/8, which may connect
/// as often as it likes (`allowallconnects`), at most `maxconnections`
/// identified sessions at once.
fn start_capped(s: &Setup, maxconnections: u32) -> RcfServer {
    let mut pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    pol.allowconnects = vec!["127.0.0.0/8".into()];
    pol.allowallconnects = vec!["127.0.0.0/8".into()];
    pol.maxconnections = Some(maxconnections);
    RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v"]).unwrap()
}

fn setup(name: &str) -> Setup {
    require_cfengine().unwrap();
    let srv_wd = Workdir::new(&format!("{name}-srv")).unwrap();
    let cli_wd = Workdir::new(&format!("{name}-cli")).unwrap();
    srv_wd.cf_key().unwrap();
    cli_wd.cf_key().unwrap();
    let data = make_data_tree(&srv_wd.scratch().join("data")).unwrap();
    Setup {
        srv_wd,
        cli_wd,
        data,
    }
}

fn client_key(wd: &Workdir) -> rcf_core::keys::RsaPrivateKey {
    rcf_core::keys::parse_private_pem(&std::fs::read(wd.privkey_path()).unwrap()).unwrap()
}

/// The real cf-agent copies hello.txt and big.bin; both must arrive intact.
fn agent_is_served(s: &Setup, srv: &RcfServer, tag: &str) {
    let out = s.cli_wd.scratch().join(format!("out-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    let specs = [
        CopySpec::new(
            srv.port(),
            s.data.share_path("hello.txt"),
            out.join("hello.txt"),
        ),
        CopySpec::new(
            srv.port(),
            s.data.share_path("big.bin"),
            out.join("big.bin"),
        ),
    ];
    let run = cf_agent_copies(&s.cli_wd, &specs).unwrap();
    assert!(
        run.outcomes.iter().all(|o| o.ok()),
        "[{tag}] {:?}\n{}\n{}",
        run.outcomes,
        run.describe(),
        tail(&srv.log())
    );
    trees_equal(&s.data.share.join("hello.txt"), &out.join("hello.txt")).unwrap();
    trees_equal(&s.data.share.join("big.bin"), &out.join("big.bin")).unwrap();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Whether the server has closed `sock` (EOF or reset), without blocking.
fn peer_closed(mut sock: &TcpStream) -> bool {
    let mut b = [0u8; 4096];
    sock.set_nonblocking(true).unwrap();
    let r = loop {
        match sock.read(&mut b) {
            Ok(0) => break true,
            Ok(_) => continue, // an alert or a banner: keep draining
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    sock.set_nonblocking(false).unwrap();
    r
}

/// Source address number `i` in 127.0.{1..}.{1..250}: one connection per IP,
/// so per-IP admission (`allowallconnects`) never applies to the flood.
fn src(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

/// One flooder thread: every 200 ms (a tick) until `done()`, each open
/// socket of `socks` sends the byte `trickle(index, tick)` gives (if any),
/// and every `reopen_every` ticks each one the server closed is re-opened
/// from `source(index)`. Returns how many were re-opened.
fn keep_flooding(
    socks: &mut [Option<TcpStream>],
    port: u16,
    reopen_every: u64,
    source: impl Fn(usize) -> Ipv4Addr,
    trickle: impl Fn(usize, u64) -> Option<u8>,
    done: impl Fn() -> bool,
) -> usize {
    let (mut reopened, mut tick) = (0usize, 0u64);
    while !done() {
        tick += 1;
        for (i, slot) in socks.iter_mut().enumerate() {
            if let Some(sk) = slot {
                if let Some(byte) = trickle(i, tick) {
                    let _ = (&*sk).write(&[byte]);
                }
                if peer_closed(sk) {
                    *slot = None;
                }
            }
            if slot.is_none() && tick % reopen_every == 0 {
                if let Ok(sk) = connect_from(source(i), port) {
                    *slot = Some(sk);
                    reopened += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    reopened
}

/// Flood size wanted; less only when RLIMIT_NOFILE's hard limit forbids it
/// (the test says so in its summary line).
const FLOOD_WANTED: usize = 1000;

#[test]
fn silent_and_trickling_peers_are_dropped_by_the_handshake_deadline_while_an_agent_is_served() {
    let _serial = serial();
    let t0 = Instant::now();
    let nofile = raise_nofile(8192);
    // Our sockets and the server's (it inherits the limit) each need one fd.
    let flood = FLOOD_WANTED.min(nofile.saturating_sub(200) as usize);
    assert!(
        flood >= 200,
        "RLIMIT_NOFILE {nofile} allows only {flood} flood connections"
    );
    if flood < FLOOD_WANTED {
        eprintln!("[hostile] RLIMIT_NOFILE hard limit {nofile}: flooding with {flood} connections instead of {FLOOD_WANTED}");
    }
    let s = setup("h1");
    let mut pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    pol.allowconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    pol.maxconnections = Some(flood as u32 + 100);
    // This test is about the deadline: the pre-authentication budget is
    // made as large as maxconnections so that it never evicts here (the
    // budget has its own test below).
    let budget = (flood + 100).to_string();
    let srv = RcfServer::start_with_flags(
        &s.srv_wd,
        &pol,
        &["-v", "--handshake-timeout", "2", "--preauth-max", &budget],
    )
    .unwrap();
    let pid = srv.pid();
    // "Server is starting..." is logged before the event-loop threads build
    // their runtimes (an epoll, an eventfd and a listener registration
    // each): the baseline is the count once it stops moving.
    let fds0 = settled_fds(pid, usize::MAX, Duration::from_secs(15));
    let rss0 = rss_kib(pid);

    // Flood: 1000 connections from 1000 source addresses, opened and kept up
    // by 10 threads for 6 s (three handshake deadlines). Most stay silent;
    // every 10th trickles one byte a second (half of those start like TLS,
    // half like nothing the server knows). Dropped ones are re-opened, so the
    // flood is at full strength while the agent runs.
    let port = srv.port();
    let flooders: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                let ids: Vec<usize> = (t * flood / 10..(t + 1) * flood / 10).collect();
                let mut socks: Vec<Option<TcpStream>> = ids
                    .iter()
                    .map(|&i| connect_from(src(i), port).ok())
                    .collect();
                let t0 = Instant::now();
                // (is_multiple_of is newer than the MSRV)
                #[allow(clippy::manual_is_multiple_of)]
                let reopened = keep_flooding(
                    &mut socks,
                    port,
                    1,
                    |k| src(ids[k]),
                    |k, tick| {
                        let i = ids[k];
                        (i % 10 == 0 && tick % 5 == 0).then_some(if i % 20 == 0 {
                            0x16
                        } else {
                            b'x'
                        })
                    },
                    // Bounded: 6 s.
                    || t0.elapsed() >= Duration::from_secs(6),
                );
                (socks, reopened)
            })
        })
        .collect();
    // Sample how many the server holds at once, over the whole flood.
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(6) {
            peak = peak.max(open_fds(pid));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    std::thread::sleep(Duration::from_millis(2500));
    // The admitted agent, during the flood (its first wave already dropped
    // by the deadline and replaced).
    let fds_during = open_fds(pid);
    agent_is_served(&s, &srv, "during-flood");
    let fds_after_agent = open_fds(pid);
    let mut socks = Vec::new();
    let mut reopened = 0;
    for f in flooders {
        let (s, r) = f.join().unwrap();
        socks.extend(s);
        reopened += r;
    }
    let fds_peak = sampler.join().unwrap();
    let held = fds_peak.saturating_sub(fds0);
    // The flood must be real: hundreds held at once and the deadline
    // recycling at least half of it. How many are held at the same moment
    // is a race between opening sockets and the 2 s deadline dropping them
    // (479 to 939 of 1000 seen on this 2-core box, depending on load), so
    // only a quarter is required.
    eprintln!("[hostile] flood: peak {held} held, {fds_during} fds while the agent ran, {reopened} reopened");
    assert!(
        held >= flood / 4,
        "the server held at most {held} of {flood} flood connections at once"
    );
    assert!(
        fds_during >= fds0 + flood / 4,
        "flood not at strength when the agent ran: {fds_during} fds"
    );
    assert!(
        reopened >= flood / 2,
        "the handshake deadline dropped only {reopened} flood connections in 6 s"
    );

    // Flood over: every remaining connection is dropped by the deadline (2 s)
    // with no help from the peers.
    let stopped = Instant::now();
    let mut open_left = flood;
    while stopped.elapsed() < Duration::from_secs(6) {
        open_left = socks
            .iter_mut()
            .filter_map(|s| s.as_mut())
            .filter(|s| !peer_closed(s))
            .count();
        if open_left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dropped_in = stopped.elapsed();
    assert_eq!(
        open_left, 0,
        "{open_left} flood connections still open {dropped_in:?} after the flood stopped"
    );
    assert!(
        dropped_in <= Duration::from_secs(4),
        "silent peers held for {dropped_in:?} (handshake deadline 2 s)"
    );
    drop(socks);
    let fds_end = settled_fds(pid, fds0 + 5, Duration::from_secs(15));
    let rss_end = rss_kib(pid);
    assert!(
        fds_end <= fds0 + 5,
        "server fds {fds0} -> {fds_end}: connections leaked\n{}",
        fd_list(pid)
    );
    // And it still serves.
    agent_is_served(&s, &srv, "after-flood");
    assert!(srv.is_running());
    eprintln!(
        "[hostile] flood of {flood} (nofile {nofile}): server fds {fds0} -> peak {fds_peak} (flood) / {fds_during} (agent start) / {fds_after_agent} (agent done) -> {fds_end}; \
         {reopened} flood connections dropped by the deadline and re-opened during the agent run; rest dropped in {dropped_in:?}; \
         RSS {rss0} -> {rss_end} KiB; wall {:?}",
        t0.elapsed()
    );
}

/// What `/proc/<pid>/fd` holds, one `fd -> target` per line (for messages).
fn fd_list(pid: u32) -> String {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| {
                    let t = std::fs::read_link(e.path()).unwrap_or_default();
                    format!("{} -> {}", e.file_name().to_string_lossy(), t.display())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join("\n")
}

/// Wait (bounded by `within`) until the server's descriptor count has been
/// at most `limit` and unchanged for a second, and return it. Why a wait
/// and not one look: sockets of connections that just ended close when
/// their tasks next run, and under load that lags; the count is only
/// meaningful once it has stopped moving.
fn settled_fds(pid: u32, limit: usize, within: Duration) -> usize {
    let end = Instant::now() + within;
    let mut last = open_fds(pid);
    let mut since = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        let n = open_fds(pid);
        if n != last {
            last = n;
            since = Instant::now();
        } else if n <= limit && since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

#[test]
fn a_flood_beyond_the_preauth_budget_never_stops_service_once_it_ends() {
    let _serial = serial();
    let t0 = Instant::now();
    raise_nofile(4096);
    let s = setup("h2");
    let mut pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    pol.allowconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    pol.allowallconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    pol.maxconnections = Some(20);
    let srv = RcfServer::start_with_flags(
        &s.srv_wd,
        &pol,
        &[
            "-v",
            "--handshake-timeout",
            "2",
            "--preauth-per-address",
            "10",
            "--preauth-max",
            "20",
        ],
    )
    .unwrap();
    let pid = srv.pid();
    // The baseline once the server has served one agent and its descriptor
    // count stopped moving. Read right after "Server is starting..." (as
    // this test did), it could miss the event-loop threads still building
    // their runtimes: 4 descriptors each (epoll, eventfd, a second epoll
    // and the listener), the 17 -> 21 this test flaked on under load.
    agent_is_served(&s, &srv, "before-flood");
    let fds0 = settled_fds(pid, usize::MAX, Duration::from_secs(15));

    // Connections the server dropped before they identified: evicted from
    // the budget, or (when the connects themselves outlast the deadline
    // under load) timed out before they were pushed out.
    let dropped = || {
        let log = srv.log();
        log.matches("pre-authentication budget is full").count()
            + log
                .matches("Connection timed out before the peer sent anything")
                .count()
    };

    // Round 1: 300 connections from 127.0.0.1 that the flooder closes itself.
    // The address may hold 10 before identifying; each new one beyond that
    // pushes out its oldest (counted once the server has worked through its
    // accept queue; bounded wait).
    let mut flood: Vec<TcpStream> = (0..300)
        .filter_map(|_| connect_from(Ipv4Addr::LOCALHOST, srv.port()).ok())
        .collect();
    let opened = flood.len();
    let wait = Instant::now();
    while dropped() < opened - 10 && wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let dropped1 = dropped();
    let evicted = srv
        .log()
        .matches("pre-authentication budget is full")
        .count();
    let held = flood.iter_mut().filter(|s| !peer_closed(s)).count();
    assert!(
        opened >= 250 && dropped1 >= opened - 10 && evicted > 0 && held <= 10,
        "{dropped1} of {opened} dropped ({evicted} evicted), {held} held, with 10 per address"
    );
    assert_eq!(
        srv.log().matches("Increase server maxconnections?").count(),
        0,
        "unidentified connections counted against maxconnections"
    );
    drop(flood);
    agent_is_served(&s, &srv, "after-closed-flood");

    // Round 2: the flood does not close, from 200 addresses; the total budget
    // holds 20 and the handshake deadline frees them.
    let before = dropped();
    let mut flood: Vec<TcpStream> = (0..300)
        .filter_map(|i| {
            connect_from(Ipv4Addr::new(127, 0, 2, 1 + (i % 200) as u8), srv.port()).ok()
        })
        .collect();
    let opened2 = flood.len();
    let wait = Instant::now();
    while dropped() < before + opened2 - 20 && wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped2 = dropped() - before;
    let held = flood.iter_mut().filter(|s| !peer_closed(s)).count();
    assert!(
        dropped2 >= opened2 - 20 && held <= 20,
        "{dropped2} of {opened2} dropped, {held} held open with a pre-authentication budget of 20"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let still = flood.iter_mut().filter(|s| !peer_closed(s)).count();
    assert_eq!(
        still, 0,
        "{still} flood connections outlived the handshake deadline"
    );
    agent_is_served(&s, &srv, "after-silent-flood");
    drop(flood);
    let fds = settled_fds(pid, fds0 + 3, Duration::from_secs(15));
    assert!(fds <= fds0 + 3, "fds {fds0} -> {fds}:\n{}", fd_list(pid));
    eprintln!("[hostile] pre-authentication budget 10/address, 20 in all, vs 2 x 300: {evicted} evicted in round 1; agent served after each round; fds {fds0} -> {fds}; wall {:?}", t0.elapsed());
}

/// How long the real cf-agent takes to copy hello.txt and big.bin (asserting
/// both arrive intact each time): the median of three runs.
fn median_agent(s: &Setup, srv: &RcfServer, tag: &str) -> Duration {
    let mut t: Vec<Duration> = (0..3)
        .map(|i| {
            let t0 = Instant::now();
            agent_is_served(s, srv, &format!("{tag}-{i}"));
            t0.elapsed()
        })
        .collect();
    t.sort();
    t[1]
}

/// Issue 18, starvation: with the attackers' addresses in
/// `allowallconnects`, 1,000 connections that never identify (most idle,
/// every 10th trickling a byte every 200 ms; each one dropped is re-opened
/// within a second) from four addresses neither delay the real cf-agent from
/// another address by more than a second nor stop `rcf-agent copy
/// --parallel 8` from an `allowallconnects` address. Before the
/// pre-authentication budget, some 60 such connections filled
/// `maxconnections` and refused everyone else until the handshake deadline.
#[test]
fn unidentified_floods_from_allowallconnects_addresses_do_not_starve_others() {
    let _serial = serial();
    let t0 = Instant::now();
    let nofile = raise_nofile(8192);
    assert!(
        nofile >= 1500,
        "RLIMIT_NOFILE {nofile}: the test needs 1,000 flood sockets and the server's"
    );
    let s = setup("h5");
    // The defaults: --handshake-timeout 5, --preauth-per-address 32, --preauth-max a quarter
    // of RLIMIT_NOFILE (2048 here; the 4 flooding addresses meet their own cap first).
    let srv = start_capped(&s, 30);
    let pid = srv.pid();
    let port = srv.port();
    // Without a flood, three times: the median is the baseline (the box's
    // other load moves single runs more than the flood does).
    let base = median_agent(&s, &srv, "base");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..4u8)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 0, 3, 1 + t);
                let mut socks: Vec<Option<TcpStream>> =
                    (0..250).map(|_| connect_from(from, port).ok()).collect();
                let started = Instant::now();
                // (is_multiple_of is newer than the MSRV)
                #[allow(clippy::manual_is_multiple_of)]
                keep_flooding(
                    &mut socks,
                    port,
                    5,
                    |_| from,
                    |i, tick| {
                        (i % 10 == 0).then_some(if (tick + i as u64) % 2 == 0 {
                            0x16
                        } else {
                            b'x'
                        })
                    },
                    // Bounded: until told, at most 120 s.
                    || {
                        stop.load(std::sync::atomic::Ordering::Relaxed)
                            || started.elapsed() >= Duration::from_secs(120)
                    },
                )
            })
        })
        .collect();
    // Wait (bounded) until the flood is at strength and sustained: the first
    // 1000 can be evicted at most 1000 - 4 x 32 = 872 times, so 1200
    // evictions mean re-opened connections are being pushed out too.
    let wait = Instant::now();
    while srv
        .log()
        .matches("pre-authentication budget is full")
        .count()
        < 1200
        && wait.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let fds_flood = open_fds(pid);
    let during = median_agent(&s, &srv, "flood");
    // rcf-agent over 8 connections from an allowallconnects address.
    let out = s.cli_wd.scratch().join("parallel-out");
    let hp = format!("127.0.0.1:{port}");
    let share = s.data.share.to_string_lossy().into_owned();
    let dest = out.to_string_lossy().into_owned();
    let par = rcf_agent(
        &s.cli_wd,
        &[
            "-v",
            "copy",
            "-H",
            &hp,
            "--trustkey",
            "--recurse",
            "--parallel",
            "8",
            &share,
            &dest,
        ],
    )
    .unwrap();
    let evicted = srv
        .log()
        .matches("pre-authentication budget is full")
        .count();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reopened: usize = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    assert!(
        par.success(),
        "rcf-agent --parallel 8 during the flood:\n{}",
        par.describe()
    );
    // (The copy follows the tree's symlink, so compare the files themselves.)
    for f in ["hello.txt", "big.bin"] {
        trees_equal(&s.data.share.join(f), &out.join(f)).unwrap();
    }
    let too_many = srv.log().matches("Increase server maxconnections?").count();
    eprintln!(
        "[hostile] unidentified flood of 1000 from 4 allowallconnects addresses: real cf-agent {base:?} without, {during:?} during (median of 3 each); \
         rcf-agent --parallel 8 ok in {:?}; {evicted} evicted, {reopened} re-opened, {fds_flood} server fds at strength, {too_many} maxconnections refusals; wall {:?}",
        par.elapsed,
        t0.elapsed()
    );
    assert!(
        evicted >= 1200 && reopened >= 250,
        "the flood was not at strength: {evicted} evicted, {reopened} re-opened"
    );
    assert_eq!(too_many, 0, "the flood reached maxconnections");
    assert!(
        during <= base + Duration::from_secs(1),
        "the flood delayed the real cf-agent from {base:?} to {during:?}"
    );
    assert!(srv.is_running());
}

/// `maxconnections` still caps identified sessions (the pre-authentication
/// budget is only for the unidentified): with two sessions held, a third
/// connection is refused at accept with 3.21's line, and the place is free
/// again once one session ends.
#[test]
fn maxconnections_caps_identified_sessions() {
    let _serial = serial();
    let s = setup("h6");
    let srv = start_capped(&s, 2);
    let key = client_key(&s.cli_wd);
    let welcomed =
        |w: &Option<Vec<u8>>| w.as_deref().unwrap_or_default().starts_with(b"OK WELCOME");
    let (a, wa) = RawClient::identify(Ipv4Addr::LOCALHOST, srv.port(), &key, "root");
    let (_b, wb) = RawClient::identify(Ipv4Addr::new(127, 0, 0, 2), srv.port(), &key, "root");
    assert!(
        welcomed(&wa) && welcomed(&wb),
        "{wa:?} {wb:?}\n{}",
        tail(&srv.log())
    );
    let third = connect_from(Ipv4Addr::new(127, 0, 0, 3), srv.port()).unwrap();
    assert!(
        srv.wait_for_log(
            "Too many threads (3 > 2), dropping connection! Increase server maxconnections?",
            Duration::from_secs(10)
        ),
        "{}",
        tail(&srv.log())
    );
    let wait = Instant::now();
    while !peer_closed(&third) && wait.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(peer_closed(&third), "the third connection was not refused");
    drop(a);
    // The first session's end frees its place.
    assert!(
        srv.wait_for_log(
            "Closing connection, terminating thread",
            Duration::from_secs(10)
        ),
        "{}",
        tail(&srv.log())
    );
    let (_c, wc) = RawClient::identify(Ipv4Addr::new(127, 0, 0, 4), srv.port(), &key, "root");
    assert!(welcomed(&wc), "{wc:?}\n{}", tail(&srv.log()));
}

/// Identify as root from 127.0.0.1 and STAT+GET `path` without reading the data.
fn start_get(port: u16, key: &rcf_core::keys::RsaPrivateKey, path: &str) -> (RawClient, u64) {
    let (mut c, w) = RawClient::identify(Ipv4Addr::LOCALHOST, port, key, "root");
    assert!(
        w.as_deref().unwrap_or_default().starts_with(b"OK WELCOME"),
        "not welcomed: {w:?}"
    );
    let st = c.stat(path.as_bytes());
    assert_eq!(
        st.len(),
        2,
        "STAT {path}: {:?}",
        String::from_utf8_lossy(&st[0])
    );
    let size: u64 = String::from_utf8_lossy(&st[0])
        .split_whitespace()
        .nth(6)
        .unwrap()
        .parse()
        .unwrap();
    c.txn(format!("GET 2048 {path}").as_bytes());
    (c, size)
}

#[test]
fn a_reader_that_stops_mid_get_is_dropped_by_the_write_deadline() {
    let _serial = serial();
    let t0 = Instant::now();
    let s = setup("h3");
    // 256 MiB, sparse: far more than every socket buffer on the path.
    let huge = s.data.share.join("huge.bin");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv =
        RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v", "--write-timeout", "2"]).unwrap();
    let pid = srv.pid();
    let key = client_key(&s.cli_wd);
    let rss0 = rss_kib(pid);

    let (mut c, size) = start_get(srv.port(), &key, &s.data.share_path("huge.bin"));
    assert_eq!(size, 256 << 20);
    let first = c.raw(64 * 1024, IO).expect("the first 64 KiB of the GET");
    assert!(first.iter().all(|&b| b == 0));
    // Stop reading now.
    let stopped = Instant::now();
    let mut rss_peak = rss_kib(pid);
    let mut seen = false;
    while stopped.elapsed() < Duration::from_secs(10) {
        rss_peak = rss_peak.max(rss_kib(pid));
        if srv
            .log()
            .contains("Peer stopped reading (write deadline), closing connection")
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dropped_in = stopped.elapsed();
    assert!(seen, "not dropped within 10 s:\n{}", tail(&srv.log()));
    assert!(
        dropped_in <= Duration::from_secs(6),
        "dropped only after {dropped_in:?} (write deadline 2 s)"
    );
    assert!(
        rss_peak < rss0 + 64 * 1024,
        "RSS grew from {rss0} to {rss_peak} KiB while the peer did not read"
    );
    // What is still in flight ends in a close, never in the whole file.
    let mut got = first.len() as u64;
    c.sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let read_until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < read_until {
        match c.sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    assert!(
        got < size / 2,
        "the peer got {got} bytes of {size} after it stopped reading"
    );
    // The server is fine and still serves.
    let (mut c2, w) = RawClient::identify(Ipv4Addr::LOCALHOST, srv.port(), &key, "root");
    assert!(w.unwrap().starts_with(b"OK WELCOME"));
    c2.txn(b"VERSION");
    assert_eq!(c2.reply(IO).unwrap(), b"OK: 3.21.0");
    eprintln!(
        "[hostile] stalled GET of {size} B: dropped {dropped_in:?} after the reader stopped; peer got {got} B (ciphertext incl.); \
         RSS {rss0} -> peak {rss_peak} KiB; wall {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_peer_pipelining_megabytes_without_reading_keeps_server_memory_bounded() {
    let _serial = serial();
    let t0 = Instant::now();
    let s = setup("h4");
    let pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv =
        RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v", "--write-timeout", "2"]).unwrap();
    let pid = srv.pid();
    let key = client_key(&s.cli_wd);
    let rss0 = rss_kib(pid);

    // Each GET of big.bin (100 000 B) is 40-odd bytes of request: the replies
    // are 2000x the requests, and nobody reads them.
    let (mut c, w) = RawClient::identify(Ipv4Addr::LOCALHOST, srv.port(), &key, "root");
    assert!(w.unwrap().starts_with(b"OK WELCOME"));
    let big = s.data.share_path("big.bin");
    let mut batch = Vec::new();
    for i in 0..200 {
        let p: Vec<u8> = match i % 4 {
            0 => format!("GET 2048 {big}").into_bytes(),
            1 => format!("SYNCH {} STAT {big}", unix_now()).into_bytes(),
            2 => format!("OPENDIR {}", s.data.share_path("many")).into_bytes(),
            _ => b"VERSION".to_vec(),
        };
        rcf_core::frame::encode(rcf_core::frame::Status::Done, &p, &mut batch).unwrap();
    }
    c.sock
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0u64;
    let mut rss_peak = rss0;
    let mut stalled = None;
    let t = Instant::now();
    // Bounded: 64 MiB of requests or 15 s, whichever first; stops early once
    // the server stops taking them.
    while sent < 64 << 20 && t.elapsed() < Duration::from_secs(15) {
        if c.tls.send_plaintext(&batch).is_err() {
            break;
        }
        let mut blocked = false;
        while let Some(out) = c.tls.poll_transmit() {
            if c.sock.write_all(&out).is_err() {
                blocked = true;
                break;
            }
        }
        rss_peak = rss_peak.max(rss_kib(pid));
        if blocked {
            stalled.get_or_insert(t.elapsed());
            // Keep pushing a little to see whether the server reads more.
            if t.elapsed() > Duration::from_secs(6) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        sent += batch.len() as u64;
    }
    let mut seen = false;
    let wait = Instant::now();
    while wait.elapsed() < Duration::from_secs(8) {
        rss_peak = rss_peak.max(rss_kib(pid));
        if srv
            .log()
            .contains("Peer stopped reading (write deadline), closing connection")
        {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen,
        "the non-reading peer was not dropped:\n{}",
        tail(&srv.log())
    );
    assert!(
        stalled.is_some(),
        "the server kept reading {sent} bytes of requests without sending replies"
    );
    assert!(
        sent < 8 << 20,
        "the server accepted {sent} bytes of requests from a peer that reads nothing"
    );
    assert!(
        rss_peak < rss0 + 48 * 1024,
        "RSS grew from {rss0} to {rss_peak} KiB"
    );
    drop(c);

    // Identification flood: megabytes without a newline. The server must
    // cut it off after its 1023-byte line limit (what we manage to write
    // before noticing lands in socket buffers, not in the server).
    let mut c = RawClient::connect(Ipv4Addr::LOCALHOST, srv.port(), &key);
    let _ = c.line(IO).expect("banner");
    let junk = vec![b'A'; 16 * 1024];
    let mut pushed = 0usize;
    let cut = Instant::now();
    while pushed < 16 << 20 && !c.closed && cut.elapsed() < Duration::from_secs(10) {
        c.send(&junk);
        pushed += junk.len();
        rss_peak = rss_peak.max(rss_kib(pid));
    }
    assert!(
        c.wait_closed(Duration::from_secs(5)),
        "an endless identification line was not cut off"
    );
    let cut_in = cut.elapsed();
    assert!(
        srv.wait_for_log("identification line longer than", Duration::from_secs(5)),
        "{}",
        tail(&srv.log())
    );
    assert!(
        rss_peak < rss0 + 48 * 1024,
        "RSS grew from {rss0} to {rss_peak} KiB"
    );
    agent_is_served(&s, &srv, "after-pipelining");
    eprintln!(
        "[hostile] pipelining: {sent} B of requests written (socket buffers included) before our writes blocked (at {stalled:?}); \
         endless IDENTITY cut in {cut_in:?} ({pushed} B written into socket buffers meanwhile); RSS {rss0} -> peak {rss_peak} KiB; wall {:?}",
        t0.elapsed()
    );
}

#[test]
fn a_slow_peer_gets_one_handshake_deadline_from_accept_to_welcome() {
    let _serial = serial();
    let t0 = Instant::now();
    let s = setup("h5");
    let pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv =
        RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v", "--handshake-timeout", "3"]).unwrap();
    let key = client_key(&s.cli_wd);
    // Dribble the ClientHello over ~2 s, finish the handshake, then dribble
    // the version line: the deadline is 3 s from accept, not 3 s per phase.
    let start = Instant::now();
    let mut c = RawClient::over(connect_from(Ipv4Addr::LOCALHOST, srv.port()).unwrap(), &key);
    let mut hello = Vec::new();
    while let Some(b) = c.tls.poll_transmit() {
        hello.extend_from_slice(&b);
    }
    let step = hello.len().div_ceil(10);
    for chunk in hello.chunks(step) {
        c.sock.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let banner = c.line(IO).expect("banner after the handshake");
    assert!(banner.starts_with(b"CFE_v"));
    let mut closed_at = None;
    for b in b"CFE_v2 cf-agent 3.21.0\n".iter().take(22) {
        c.send(&[*b]);
        if c.wait_closed(Duration::from_millis(250)) {
            closed_at = Some(start.elapsed());
            break;
        }
    }
    let closed_at = closed_at.expect("a peer dribbling its version line was never dropped");
    assert!(
        closed_at <= Duration::from_millis(3_800),
        "dropped {closed_at:?} after accept with a 3 s handshake deadline:\n{}",
        tail(&srv.log())
    );
    assert!(
        srv.log()
            .contains("Connection timed out during identification"),
        "{}",
        tail(&srv.log())
    );
    eprintln!("[hostile] slow handshake + slow identification dropped {closed_at:?} after accept; wall {:?}", t0.elapsed());
}

/// Regression (pure, no sockets): the session created when the TLS handshake
/// completes inherits the deadline that started at accept. Before the fix
/// it got a fresh `handshake_timeout`, so a peer slow in both phases held
/// a slot for twice the deadline.
#[test]
fn session_deadline_counts_from_accept_not_from_the_end_of_the_handshake() {
    let _serial = serial();
    use rcf_core::server::{Config, Connection, Now, PolicyView};
    use rcf_core::tls::{client_config, ServerTls, TlsClock, TlsLayer, TlsSettings};
    use std::sync::Arc;
    const NOW: u64 = 1_767_225_600;
    let skey =
        rcf_core::keys::parse_private_pem(include_bytes!("../../core/src/tls/testdata/key-a.pem"))
            .unwrap();
    let ckey =
        rcf_core::keys::parse_private_pem(include_bytes!("../../core/src/tls/testdata/key-b.pem"))
            .unwrap();
    let clock = TlsClock::new(NOW);
    let server = ServerTls::new(&skey, &TlsSettings::server_default().0, &clock).unwrap();
    let policy: Arc<dyn PolicyView> = Arc::new(rcf_conformance::world::TablePolicy::default());
    let cfg = Config {
        handshake_timeout_ms: 3_000,
        idle_timeout_ms: 600_000,
        ..Config::default()
    };
    let at = |ms| Now {
        mono_ms: ms,
        unix_s: NOW as i64,
    };
    let mut conn = Connection::new(
        server.accept().unwrap(),
        cfg,
        policy,
        "192.0.2.1".into(),
        at(0),
    );
    assert_eq!(conn.poll_timeout(), Some(3_000));
    let mut client =
        TlsLayer::client(client_config(&ckey, &TlsSettings::client_default(), &clock).unwrap())
            .unwrap();
    // The whole handshake happens at 2.5 s (the peer was slow to start).
    for _ in 0..20 {
        let mut moved = false;
        while let Some(b) = client.poll_transmit() {
            conn.handle_input(at(2_500), &b);
            moved = true;
        }
        while let Some(b) = conn.poll_transmit() {
            client.handle_input(&b).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(conn.session().is_some(), "handshake did not complete");
    assert_eq!(
        conn.poll_timeout(),
        Some(3_000),
        "the deadline must still be accept + 3 s"
    );
    conn.handle_timeout(at(2_999));
    assert!(!conn.is_closing());
    conn.handle_timeout(at(3_000));
    assert!(
        conn.is_closing(),
        "not closed at accept + handshake_timeout"
    );
    let mut logs = Vec::new();
    while let Some(ev) = conn.poll_event() {
        if let rcf_core::server::Event::Log { message, .. } = ev {
            logs.push(message);
        }
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("Connection timed out during identification")),
        "{logs:?}"
    );
}

/// Build `n` bytes of a repeating, position-dependent pattern quickly.
fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i & 3] ^ salt)
        .collect()
}

/// No lost data: a source file that changes (grows, is truncated, or is
/// rewritten in place with a size change) while the real cf-agent is
/// fetching it never lands half-copied. The server signals the change
/// inside the promised byte count; the agent either fails the copy and
/// installs nothing (3.21's agent leaves its `.cfnew` behind), or has a
/// byte-exact copy of one whole version. A file replaced by rename is
/// served whole from the inode that was opened.
/// (A same-size in-place rewrite cannot be detected from the size, as in
/// 3.21; see SECURITY.md.)
#[test]
fn a_file_changing_during_get_never_lands_half_copied_at_the_agent() {
    let _serial = serial();
    let t0 = Instant::now();
    let s = setup("h6");
    let pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RcfServer::start(&s.srv_wd, &pol).unwrap();
    let mut summary = Vec::new();
    for (round, mode) in ["append", "truncate", "rewrite", "replace"]
        .iter()
        .enumerate()
    {
        let name = format!("changing-{mode}.bin");
        let src = s.data.share.join(&name);
        let v1 = pattern(48 << 20, round as u8);
        std::fs::write(&src, &v1).unwrap();
        let path = s.data.share_path(&name);
        let needle = format!("GET {path}");
        let srv_log = srv.log().len();
        let dest = s.cli_wd.scratch().join(format!("out-h6/{name}"));
        let (run, changed_at) = std::thread::scope(|scope| {
            let changer = scope.spawn(|| {
                // Bounded: 30 s waiting for the GET.
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(30) {
                    let text = srv.log();
                    if text.len() > srv_log && text[srv_log..].contains(&needle) {
                        if *mode == "replace" {
                            // The hub's safe way: a new inode renamed over
                            // the old one; the server keeps reading the old.
                            let tmp = src.with_extension("tmp");
                            std::fs::write(&tmp, pattern(1 << 20, 0xAA)).unwrap();
                            std::fs::rename(&tmp, &src).unwrap();
                            return Some(t.elapsed());
                        }
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .append(*mode == "append")
                            .open(&src)
                            .unwrap();
                        match *mode {
                            "append" => (&f).write_all(b"more").unwrap(),
                            "truncate" => f.set_len(1 << 20).unwrap(),
                            _ => {
                                use std::os::unix::fs::FileExt;
                                f.write_all_at(b"XXXXXXXX", 40 << 20).unwrap();
                                f.set_len((48 << 20) + 1).unwrap();
                            }
                        }
                        return Some(t.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            });
            let run = cf_agent_copies(&s.cli_wd, &[CopySpec::new(srv.port(), path.clone(), &dest)])
                .unwrap();
            (run, changer.join().unwrap())
        });
        assert!(
            changed_at.is_some(),
            "[{mode}] the GET never showed up in the server log"
        );
        let v2 = std::fs::read(&src).unwrap();
        let outcome = match std::fs::read(&dest) {
            Err(_) => "copy failed, nothing installed",
            Ok(got) if got == v1 => "old version, whole",
            Ok(got) if got == v2 => "new version, whole",
            Ok(got) => panic!("[{mode}] the agent installed {} bytes that are neither version (v1 {} B, v2 {} B)\n{}", got.len(), v1.len(), v2.len(), run.describe()),
        };
        if *mode == "replace" {
            assert_eq!(
                outcome,
                "old version, whole",
                "[replace] a rename on the hub must not disturb a running GET\n{}",
                run.describe()
            );
        }
        let aborted =
            srv.log()[srv_log..].contains("Aborting transfer of file due to source changes");
        summary.push(format!(
            "{mode}: {outcome} (server aborted the transfer: {aborted})"
        ));
    }
    assert!(srv.is_running());
    eprintln!(
        "[hostile] source changing during GET: {}; wall {:?}",
        summary.join("; "),
        t0.elapsed()
    );
}

/// After WELCOME: a silent peer, and one dribbling a request a byte at a
/// time, are both dropped by the idle deadline (`--idle-timeout 2`); the
/// deadline restarts only when a whole request has arrived.
#[test]
fn idle_and_dribbling_established_peers_are_dropped_by_the_idle_deadline() {
    let _serial = serial();
    let t0 = Instant::now();
    let s = setup("h7");
    let pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    let srv = RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v", "--idle-timeout", "2"]).unwrap();
    let key = client_key(&s.cli_wd);

    let (mut silent, w) = RawClient::identify(Ipv4Addr::LOCALHOST, srv.port(), &key, "root");
    assert!(w.unwrap().starts_with(b"OK WELCOME"));
    let welcomed = Instant::now();
    assert!(
        silent.wait_closed(Duration::from_secs(6)),
        "a silent established peer was never dropped"
    );
    let silent_for = welcomed.elapsed();
    assert!(
        silent_for >= Duration::from_millis(1_800) && silent_for <= Duration::from_millis(3_500),
        "dropped after {silent_for:?}"
    );

    let (mut slow, w) = RawClient::identify(Ipv4Addr::LOCALHOST, srv.port(), &key, "root");
    assert!(w.unwrap().starts_with(b"OK WELCOME"));
    // Whole requests keep it alive past the deadline...
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1_000));
        slow.txn(b"VERSION");
        assert_eq!(slow.reply(IO).unwrap(), b"OK: 3.21.0");
    }
    // ...a request dribbled one byte every 300 ms does not.
    let mut req = Vec::new();
    rcf_core::frame::encode(
        rcf_core::frame::Status::Done,
        format!("GET 2048 {}", s.data.share_path("hello.txt")).as_bytes(),
        &mut req,
    )
    .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in req {
        slow.send(&[b]);
        if slow.wait_closed(Duration::from_millis(300)) {
            closed = true;
            break;
        }
    }
    let dribbled_for = started.elapsed();
    assert!(
        closed,
        "a dribbled request kept the connection for {dribbled_for:?}"
    );
    assert!(
        dribbled_for <= Duration::from_millis(3_500),
        "dropped only after {dribbled_for:?}"
    );
    assert!(
        srv.log()
            .matches("Connection timed out during idle")
            .count()
            >= 2,
        "{}",
        tail(&srv.log())
    );
    eprintln!("[hostile] idle deadline 2 s: silent peer dropped after {silent_for:?}, dribbling peer after {dribbled_for:?}; wall {:?}", t0.elapsed());
}

/// CPU time (user + system) of a process, from /proc/<pid>/stat, in ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that closes the command name: state is field 3.
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// The server runs out of file descriptors (its RLIMIT_NOFILE lowered to
/// 64 with prlimit) under a flood: accept fails with EMFILE, the server
/// backs off instead of spinning, frees descriptors at the handshake
/// deadline, and serves the agent again once the flood is gone.
#[test]
fn running_out_of_descriptors_neither_spins_nor_wedges_the_server() {
    let _serial = serial();
    let t0 = Instant::now();
    raise_nofile(4096);
    let s = setup("h8");
    let mut pol = ServerPolicy::new(0).admit(s.data.share_path(""));
    pol.allowconnects = vec!["127.0.0.0/8".into(), "::1".into()];
    pol.maxconnections = Some(1000);
    let srv =
        RcfServer::start_with_flags(&s.srv_wd, &pol, &["-v", "--handshake-timeout", "2"]).unwrap();
    let pid = srv.pid();
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: prlimit on our own child, with a valid struct.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    agent_is_served(&s, &srv, "before-fd-flood");

    let cpu0 = cpu_ticks(pid);
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|i| connect_from(src(i), srv.port()).ok())
        .collect();
    assert!(
        srv.wait_for_log("accept: Too many open files", Duration::from_secs(10)),
        "no EMFILE:\n{}",
        tail(&srv.log())
    );
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_ticks(pid) - cpu0;
    // 100 ticks = one CPU second; a spinning accept loop would burn ~3 s.
    assert!(
        cpu < 150,
        "the server burnt {cpu} ticks in ~3 s while out of descriptors"
    );
    drop(flood);
    // Queued flood connections are accepted and dropped in waves; give it
    // two deadlines, then the agent must be served again.
    std::thread::sleep(Duration::from_secs(4));
    agent_is_served(&s, &srv, "after-fd-flood");
    assert!(srv.is_running());
    let emfile = srv.log().matches("accept: Too many open files").count();
    eprintln!("[hostile] NOFILE 64 vs 200 connections: {emfile} EMFILE accept errors logged, {cpu} CPU ticks in 3 s, agent served after; wall {:?}", t0.elapsed());
}
