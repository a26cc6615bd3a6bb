//! Behind a load balancer (`--proxy-from`), the handshake deadline runs
//! from accept, PROXY header included: a listed peer that sends its header
//! late and then nothing is closed one `--handshake-timeout` after it
//! connected, not that long again after the header. Loopback only; the
//! server is stopped by PID (lab `Daemon`).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rcf_conformance::lab::*;

#[test]
fn the_handshake_deadline_covers_a_late_proxy_header() {
    require_cfengine().unwrap();
    let wd = Workdir::new("proxy-deadline").unwrap();
    let mut p = ServerPolicy::new(0);
    p.allowconnects = vec!["127.0.0.0/8".into()];
    p.allowallconnects = vec!["127.0.0.0/8".into()];
    let srv = RcfServer::start_with_flags(
        &wd,
        &p,
        &[
            "-v",
            "--proxy-from",
            "127.0.0.1/32",
            "--handshake-timeout",
            "2",
        ],
    )
    .unwrap();
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port())).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 5000 5308\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    let closed_after = t0.elapsed();
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        closed_after < Duration::from_millis(2900),
        "closed {closed_after:?} after connecting; the deadline is 2 s from accept\n{}",
        tail(&srv.log(), 20)
    );
    assert!(
        closed_after >= Duration::from_millis(1900),
        "closed {closed_after:?} after connecting, before the deadline\n{}",
        tail(&srv.log(), 20)
    );
}
