//! The PROXY header reader against the real HAProxy (Debian's `haproxy`):
//! a TCP-mode HAProxy on loopback forwards to plain listeners with
//! `send-proxy` (v1) and `send-proxy-v2`, and health-checks one server with
//! `check-send-proxy` (a v2 `LOCAL` header). The captured bytes go through
//! `rcf_core::proxy`. Fails, never skips, when haproxy is missing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use rcf_conformance::lab::{free_port, Daemon};
use rcf_core::proxy::{ProxyDecoder, ProxyPolicy, Refusal, Step, Version, Via};

const HAPROXY: &str = "/usr/sbin/haproxy";

/// Accept one connection within `timeout`.
fn accept(l: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    l.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return (s, peer);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "nothing connected in {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Read from `s` until the decoder decides, also returning every raw byte
/// read (to replay against other policies).
/// `peer` is taken at accept: a health check may be gone by now.
fn read_header(
    s: &mut TcpStream,
    peer: SocketAddr,
    policy: &ProxyPolicy,
) -> (Result<Step, Refusal>, Vec<u8>) {
    let mut d = ProxyDecoder::new(peer, policy);
    let mut raw = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = s.read(&mut buf).expect("read from haproxy");
        if n == 0 {
            return (d.closed().map(Step::Ready), raw);
        }
        raw.extend_from_slice(&buf[..n]);
        match d.push(&buf[..n]) {
            Ok(Step::NeedMore) => continue,
            other => return (other, raw),
        }
    }
}

#[test]
fn haproxy_send_proxy_v1_v2_and_local_health_checks() {
    assert!(
        std::path::Path::new(HAPROXY).exists(),
        "{HAPROXY} is missing (apt-get install haproxy)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let checked = TcpListener::bind("127.0.0.1:0").unwrap();
    let (b, c) = (
        backend.local_addr().unwrap().port(),
        checked.local_addr().unwrap().port(),
    );
    let (f1, f2) = (free_port(), free_port());
    let cfg = format!(
        "global\n  maxconn 20\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend v1\n  bind 127.0.0.1:{f1}\n  default_backend v1\n\
         backend v1\n  server s 127.0.0.1:{b} send-proxy\n\
         frontend v2\n  bind 127.0.0.1:{f2}\n  default_backend v2\n\
         backend v2\n  server s 127.0.0.1:{b} send-proxy-v2\n\
         backend checked\n  server s 127.0.0.1:{c} send-proxy-v2 check-send-proxy check inter 300ms\n"
    );
    std::fs::write(tmp.path().join("haproxy.cfg"), cfg).unwrap();
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-db").arg("-f").arg(tmp.path().join("haproxy.cfg"));
    let mut hap = Daemon::spawn("haproxy", cmd, &tmp.path().join("haproxy.log")).unwrap();
    hap.wait_listening(f1, Duration::from_secs(10)).unwrap();
    hap.wait_listening(f2, Duration::from_secs(10)).unwrap();

    let policy = ProxyPolicy::parse("127.0.0.1/32").unwrap();
    for (front, version) in [(f1, Version::V1), (f2, Version::V2)] {
        let mut client = TcpStream::connect(("127.0.0.1", front)).unwrap();
        client.write_all(b"CAUTH first bytes").unwrap();
        let (mut conn, peer) = accept(&backend, Duration::from_secs(10));
        let (step, raw) = read_header(&mut conn, peer, &policy);
        let Ok(Step::Ready(mut p)) = step else {
            panic!("{version}: {step:?} from {raw:?}\n{}", hap.log())
        };
        assert_eq!(p.via, Via::Proxy(version));
        assert_eq!(p.client, client.local_addr().unwrap(), "{version}");
        assert_eq!(
            p.destination,
            Some(SocketAddr::from(([127, 0, 0, 1], front))),
            "{version}"
        );
        // The protocol bytes that follow are handed on intact.
        while p.rest.len() < b"CAUTH first bytes".len() {
            let mut buf = [0u8; 64];
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "{version}: connection closed early");
            p.rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(p.rest, b"CAUTH first bytes");
        // The same bytes from a peer that is not a listed proxy: refused.
        let mut d = ProxyDecoder::new(peer, &ProxyPolicy::default());
        assert_eq!(d.push(&raw), Err(Refusal::Unlisted(version)));
        // And split at every byte, the same answer.
        let mut d = ProxyDecoder::new(peer, &policy);
        let mut got = None;
        for byte in raw.chunks(1) {
            match d.push(byte).unwrap() {
                Step::NeedMore => {}
                Step::Ready(q) => {
                    got = Some(q.client);
                    break;
                }
            }
        }
        assert_eq!(got, Some(p.client), "{version} split");
    }

    // Health check with check-send-proxy on a send-proxy-v2 server: LOCAL.
    let (mut conn, peer) = accept(&checked, Duration::from_secs(10));
    let (step, raw) = read_header(&mut conn, peer, &policy);
    let Ok(Step::Ready(p)) = step else {
        panic!("health check: {step:?} from {raw:?}")
    };
    assert_eq!(p.via, Via::Local(Version::V2));
    assert_eq!(p.client, peer);
    let mut d = ProxyDecoder::new(peer, &ProxyPolicy::default());
    assert_eq!(
        d.push(&raw),
        Err(Refusal::Unlisted(Version::V2)),
        "LOCAL from outside the list"
    );
    drop(conn);
    hap.stop();
}
