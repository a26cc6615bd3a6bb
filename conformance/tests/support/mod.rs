//! A raw TLS client for hostile-peer tests: `rcf_core::tls` over a blocking
//! `std::net::TcpStream` (optionally bound to a chosen 127.0.0.N source
//! address), speaking the protocol by hand so a test can stop anywhere,
//! send anything and read exactly what the server sent.
//!
//! Every read is bounded by a deadline; nothing here loops forever.

#![allow(dead_code)]

pub mod classic;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcf_core::frame::{self, Status};
use rcf_core::keys::RsaPrivateKey;
use rcf_core::tls::{client_config, ReadStatus, TlsClock, TlsLayer, TlsSettings};

/// Default bound on any single exchange.
pub const IO: Duration = Duration::from_secs(20);

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A TCP connection from `src` (any 127.0.0.0/8 address) to 127.0.0.1:`port`.
pub fn connect_from(src: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    assert!(
        src.is_loopback() && src.octets()[0] == 127,
        "loopback sources only"
    );
    // SAFETY: plain socket calls on a descriptor we own; on every error path
    // the descriptor is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sa = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let local = sa(SocketAddrV4::new(src, 0));
        if libc::bind(fd, &local as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let remote = sa(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        if libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpStream::from_raw_fd(fd))
    }
}

/// Raise RLIMIT_NOFILE's soft limit to `want` (or the hard limit); returns the new soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        // rlim_t is u64 on Linux.
        let target = want.min(r.rlim_max);
        if r.rlim_cur < target {
            r.rlim_cur = target;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
        r.rlim_cur
    }
}

/// Resident set size of a process in KiB (`VmRSS`), and its open fd count.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What a read came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// The bytes asked for.
    Data(Vec<u8>),
    /// The server closed (what it sent before is returned separately).
    Closed,
    /// Nothing within the deadline.
    Timeout,
}

pub struct RawClient {
    pub sock: TcpStream,
    pub tls: TlsLayer,
    /// Plaintext received and not yet consumed.
    pub plain: Vec<u8>,
    pub closed: bool,
}

impl RawClient {
    /// TCP + TLS handshake from `src` with `key`; does not read the banner.
    pub fn connect(src: Ipv4Addr, port: u16, key: &RsaPrivateKey) -> RawClient {
        let mut c = RawClient::over(connect_from(src, port).expect("connect"), key);
        c.flush();
        c
    }

    /// A client layer over `sock`, its ClientHello still queued (not sent).
    pub fn over(sock: TcpStream, key: &RsaPrivateKey) -> RawClient {
        sock.set_nodelay(true).unwrap();
        let cfg = client_config(
            key,
            &TlsSettings::client_default(),
            &TlsClock::new(unix_now()),
        )
        .expect("client config");
        let tls = TlsLayer::client(cfg).expect("client layer");
        RawClient {
            sock,
            tls,
            plain: Vec::new(),
            closed: false,
        }
    }

    /// Connect, read the banner, send version and IDENTITY for `user`;
    /// returns the client and the server's answer line (`OK WELCOME…`, or
    /// `None` when the server closed instead).
    pub fn identify(
        src: Ipv4Addr,
        port: u16,
        key: &RsaPrivateKey,
        user: &str,
    ) -> (RawClient, Option<Vec<u8>>) {
        RawClient::identify_over(connect_from(src, port).expect("connect"), key, user)
    }

    /// [`RawClient::identify`] over a connected socket (any family).
    pub fn identify_over(
        sock: TcpStream,
        key: &RsaPrivateKey,
        user: &str,
    ) -> (RawClient, Option<Vec<u8>>) {
        let mut c = RawClient::over(sock, key);
        c.flush();
        let banner = c.line(IO).expect("server banner");
        assert!(
            banner.starts_with(b"CFE_v"),
            "banner {:?}",
            String::from_utf8_lossy(&banner)
        );
        c.send(b"CFE_v2 cf-agent 3.21.0\n");
        c.send(format!("IDENTITY USERNAME={user}\n").as_bytes());
        let w = c.line(IO);
        (c, w)
    }

    pub fn flush(&mut self) {
        while let Some(out) = self.tls.poll_transmit() {
            if self.sock.write_all(&out).is_err() {
                self.closed = true;
                return;
            }
        }
    }

    /// Queue and send one plaintext record.
    pub fn send(&mut self, data: &[u8]) {
        if self.tls.send_plaintext(data).is_err() {
            self.closed = true;
        }
        self.flush();
    }

    /// Send one framed transaction.
    pub fn txn(&mut self, payload: &[u8]) {
        let mut v = Vec::new();
        frame::encode(Status::Done, payload, &mut v).expect("payload fits a transaction");
        self.send(&v);
    }

    /// Read from the socket into `plain` until `enough(&plain)` or the deadline.
    fn fill(&mut self, deadline: Instant, enough: impl Fn(&[u8]) -> bool) -> bool {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            loop {
                match self.tls.read_plaintext(&mut self.plain) {
                    Ok(ReadStatus::Data(_)) => continue,
                    Ok(ReadStatus::NoData) => break,
                    Ok(ReadStatus::Eof(_)) | Err(_) => {
                        self.closed = true;
                        break;
                    }
                }
            }
            if enough(&self.plain) {
                return true;
            }
            if self.closed {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.sock
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .unwrap();
            match self.sock.read(&mut buf) {
                Ok(0) => {
                    let _ = self.tls.handle_eof();
                    self.closed = true;
                }
                Ok(n) => {
                    if self.tls.handle_input(&buf[..n]).is_err() {
                        self.closed = true;
                    }
                    self.flush();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// One `\n`-terminated line, or `None` on close/timeout.
    pub fn line(&mut self, within: Duration) -> Option<Vec<u8>> {
        if !self.fill(Instant::now() + within, |p| p.contains(&b'\n')) {
            return None;
        }
        let i = self.plain.iter().position(|&b| b == b'\n').unwrap();
        Some(self.plain.drain(..=i).collect())
    }

    /// One transaction's payload, or `None` on close/timeout.
    pub fn reply(&mut self, within: Duration) -> Option<Vec<u8>> {
        let complete = |p: &[u8]| {
            p.len() >= frame::HEADER_LEN
                && match frame::parse_header(p[..frame::HEADER_LEN].try_into().unwrap()) {
                    Ok((_, n)) => p.len() >= frame::HEADER_LEN + n,
                    Err(_) => true,
                }
        };
        if !self.fill(Instant::now() + within, complete) {
            return None;
        }
        let (_, n) = frame::parse_header(self.plain[..frame::HEADER_LEN].try_into().unwrap())
            .unwrap_or_else(|e| {
                panic!(
                    "bad header from the server: {e}: {:?}",
                    String::from_utf8_lossy(&self.plain)
                )
            });
        let t: Vec<u8> = self.plain.drain(..frame::HEADER_LEN + n).collect();
        Some(t[frame::HEADER_LEN..].to_vec())
    }

    /// Exactly `n` raw bytes (GET data).
    pub fn raw(&mut self, n: usize, within: Duration) -> Option<Vec<u8>> {
        if !self.fill(Instant::now() + within, |p| p.len() >= n) {
            return None;
        }
        Some(self.plain.drain(..n).collect())
    }

    /// Wait until the server closes; true if it did within `within`.
    pub fn wait_closed(&mut self, within: Duration) -> bool {
        self.fill(Instant::now() + within, |_| false);
        self.closed
    }

    /// `SYNCH <now> STAT <path>`: the replies (one on refusal, two on success).
    pub fn stat(&mut self, path: &[u8]) -> Vec<Vec<u8>> {
        let mut req = format!("SYNCH {} STAT ", unix_now()).into_bytes();
        req.extend_from_slice(path);
        self.txn(&req);
        let first = self.reply(IO).expect("STAT reply");
        if first.starts_with(b"OK:") {
            let second = self.reply(IO).expect("STAT second reply");
            vec![first, second]
        } else {
            vec![first]
        }
    }
}

impl RawClient {
    /// Send `payload` then `VERSION`; everything received before the
    /// VERSION reply is this request's whole reply, framed or raw (GET
    /// data, refusal blocks, several transactions). `None`: the server
    /// closed first (what it sent is dropped).
    pub fn until_version(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut marker = Vec::new();
        frame::encode(Status::Done, b"OK: 3.21.0", &mut marker).unwrap();
        self.txn(payload);
        self.txn(b"VERSION");
        let found = |p: &[u8]| p.windows(marker.len()).any(|w| w == marker.as_slice());
        if !self.fill(Instant::now() + IO, found) {
            assert!(self.closed, "no reply within {IO:?}");
            return None;
        }
        let i = self
            .plain
            .windows(marker.len())
            .position(|w| w == marker.as_slice())
            .unwrap();
        let got = self.plain[..i].to_vec();
        self.plain.drain(..i + marker.len());
        Some(got)
    }
}

/// Each request's whole reply ([`RawClient::until_version`]) from the
/// server on `port`, as `user` from 127.0.0.1, reconnecting after a close
/// (`None`); STAT's atime is blanked ([`mask_atime`]) so two servers
/// reading the same tree compare equal.
pub fn replies_from(
    port: u16,
    key: &RsaPrivateKey,
    user: &str,
    reqs: &[Vec<u8>],
) -> Vec<Option<Vec<u8>>> {
    let mut c: Option<RawClient> = None;
    let mut got = Vec::new();
    for req in reqs {
        if c.as_ref().is_none_or(|c| c.closed) {
            let (nc, w) = RawClient::identify(Ipv4Addr::LOCALHOST, port, key, user);
            assert!(
                w.unwrap_or_default().starts_with(b"OK WELCOME"),
                "{user} not welcomed on port {port}"
            );
            c = Some(nc);
        }
        got.push(
            c.as_mut()
                .unwrap()
                .until_version(req)
                .map(|r| mask_atime(&r)),
        );
    }
    got
}

/// A STAT reply (`OK: type mode ... atime ...`) with its atime field (the
/// 7th number) blanked; other replies unchanged.
pub fn mask_atime(r: &[u8]) -> Vec<u8> {
    let Some(i) = r.windows(4).position(|w| w == b"OK: ") else {
        return r.to_vec();
    };
    let text = String::from_utf8_lossy(&r[i..]).into_owned();
    let mut f: Vec<&str> = text.split(' ').collect();
    if f.len() > 7 {
        f[7] = "ATIME";
    }
    [&r[..i], f.join(" ").as_bytes()].concat()
}

/// Sanity: a string `s` never appears in `hay`.
pub fn contains(hay: &[u8], s: &[u8]) -> bool {
    hay.windows(s.len()).any(|w| w == s)
}
