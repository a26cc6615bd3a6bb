//! The PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` and
//! `send-proxy-v2` send it) in front of a CFEngine connection.
//!
//! A replica behind a TCP load balancer sees the balancer's address, not the
//! agent's. Only peers listed in `--proxy-from` may, and must, open with a
//! PROXY header ([`ProxyPolicy`]); every later decision (ACLs, one connection
//! per address, `$(connection.ip)`, `trustkeysfrom`, lastseen, logs) then uses
//! the client address the header carries. [`ProxyDecoder`] is the
//! incremental, bounded reader the serve loop feeds the first bytes of a
//! connection to; it either hands back the address to use and the bytes that
//! follow the header (the start of the CFEngine protocol), or a [`Refusal`]
//! after which nothing of the connection may be parsed as protocol.
//!
//! Framing (how many bytes make the header) is decided here; the header's
//! contents are parsed by the `ppp` crate, on the exact header bytes only.

use core::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use thiserror::Error;

/// The v2 signature (spec section 2.2).
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix, separator included.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Longest v1 header, CRLF included (spec section 2.1).
pub const V1_MAX_LEN: usize = 107;
/// Longest v2 header accepted: the 16-byte fixed part plus addresses and
/// TLVs. The protocol allows 64 KiB of TLVs; HAProxy sends far fewer (the
/// largest, with every SSL TLV, stays under 1 KiB), and a reader that waits
/// for 64 KiB from a peer is a memory and time sink, so we refuse beyond.
pub const V2_MAX_LEN: usize = 16 + 4096;
const V2_FIXED: usize = 16;

/// Why `--proxy-from` could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// An item is neither a CIDR block nor a single address.
    #[error("--proxy-from: '{0}' is not an address or CIDR block (a.b.c.d/n, x::y/n)")]
    BadCidr(String),
}

/// Which peers speak PROXY first: the `--proxy-from` list. Empty (the
/// default) means no peer may send a header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    from: Vec<IpNet>,
}

/// What [`ProxyPolicy::expect`] says about one TCP peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The peer is a listed proxy: it must open with a PROXY header.
    Header,
    /// The peer is anyone else: a PROXY header from it is refused.
    NoHeader,
}

impl ProxyPolicy {
    /// A policy trusting exactly these networks' PROXY headers.
    pub fn new(from: Vec<IpNet>) -> Self {
        ProxyPolicy { from }
    }

    /// Read `CIDR[,CIDR…]` as given to `--proxy-from` (or its systemd
    /// environment variable). Whitespace around items is ignored, empty
    /// items are skipped, a bare address means that one host. Any bad item
    /// refuses the whole list: a typo must not silently trust nobody (or
    /// everybody).
    pub fn parse(list: &str) -> Result<Self, PolicyError> {
        let mut from = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| PolicyError::BadCidr(item.to_string()))?,
            };
            from.push(net);
        }
        Ok(ProxyPolicy { from })
    }

    /// The listed networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.from
    }

    /// Whether `peer` (the TCP peer's address) must or must not send a
    /// header. IPv4-mapped IPv6 peers (a dual-stack listener) are matched as
    /// the IPv4 address they are, so `127.0.0.1/32` covers `::ffff:127.0.0.1`.
    pub fn expect(&self, peer: IpAddr) -> Expect {
        let peer = canonical(peer);
        if self.from.iter().any(|n| n.contains(&peer)) {
            Expect::Header
        } else {
            Expect::NoHeader
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// PROXY protocol version of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The text form (`PROXY TCP4 …\r\n`).
    V1,
    /// The binary form.
    V2,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// Why a connection is refused before any protocol byte is parsed. Each is
/// meant for one log line naming the TCP peer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A peer outside `--proxy-from` opened with a PROXY header (any command,
    /// `LOCAL` included: it is refused at the signature, before it is read).
    #[error("PROXY {0} header from a peer not in --proxy-from")]
    Unlisted(Version),
    /// A peer in `--proxy-from` did not open with a PROXY header.
    #[error("peer is in --proxy-from but did not send a PROXY header")]
    Missing,
    /// The header is not well formed.
    #[error("malformed PROXY {version} header: {reason}")]
    Malformed {
        /// Which form it claimed to be.
        version: Version,
        /// The parser's reason.
        reason: String,
    },
    /// The header is longer than this reader accepts.
    #[error("PROXY {version} header longer than {max} bytes")]
    TooLong {
        /// Which form it claimed to be.
        version: Version,
        /// The bound ([`V1_MAX_LEN`] or [`V2_MAX_LEN`]).
        max: usize,
    },
    /// The peer closed the connection inside the header.
    #[error("connection closed inside the PROXY header ({0} bytes received)")]
    Truncated(usize),
    /// A `PROXY` command whose addresses are not TCP over IPv4/IPv6 (UNIX
    /// sockets, UDP, unspecified): there is no client address to decide on,
    /// and falling back to the proxy's own address would grant a client the
    /// proxy's rights.
    #[error("PROXY {0} header carries no TCP client address")]
    NoClientAddress(Version),
}

/// How the client address in [`Proxied`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// No header (peer not in `--proxy-from`): the TCP peer itself.
    Direct,
    /// A `PROXY` header: the address is the one it carries.
    Proxy(Version),
    /// A v2 `LOCAL` header or a v1 `UNKNOWN` one from a listed proxy: a
    /// connection the proxy made on its own behalf (health check). The TCP
    /// peer is the client; the serve loop may answer it as a health check.
    Local(Version),
}

/// The outcome of reading the start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    /// The address every decision about this connection uses.
    pub client: SocketAddr,
    /// The address the client connected to, when a header carried it.
    pub destination: Option<SocketAddr>,
    /// Where `client` came from.
    pub via: Via,
    /// The bytes received after the header: the start of the protocol.
    pub rest: Vec<u8>,
}

/// Progress of [`ProxyDecoder::push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// More bytes are needed to decide (read again).
    NeedMore,
    /// Decided: serve the connection as this client.
    Ready(Proxied),
}

/// Incremental reader of an optional PROXY header, one per connection.
///
/// Feed it every byte read until it returns [`Step::Ready`] or a
/// [`Refusal`]; if the peer closes first, call [`ProxyDecoder::closed`]. It
/// keeps at most the header's bound plus one `push` worth of bytes.
#[derive(Debug, Clone)]
pub struct ProxyDecoder {
    peer: SocketAddr,
    expect: Expect,
    buf: Vec<u8>,
}

enum Kind {
    /// Too few bytes to tell.
    Unsure,
    /// Not a PROXY header.
    None,
    /// A header of this version (signature matched).
    Header(Version),
}

fn classify(buf: &[u8]) -> Kind {
    let check = |sig: &[u8], v| {
        let n = buf.len().min(sig.len());
        if buf[..n] != sig[..n] {
            Kind::None
        } else if n == sig.len() {
            Kind::Header(v)
        } else {
            Kind::Unsure
        }
    };
    match buf.first() {
        None => Kind::Unsure,
        Some(b'P') => check(V1_PREFIX, Version::V1),
        Some(b'\r') => check(&V2_SIGNATURE, Version::V2),
        Some(_) => Kind::None,
    }
}

/// What a `version` header carrying TCP source and destination addresses
/// says: the client is the source, the connection was relayed by a proxy.
fn tcp(
    version: Version,
    (src, src_port): (IpAddr, u16),
    (dst, dst_port): (IpAddr, u16),
) -> (SocketAddr, Option<SocketAddr>, Via) {
    (
        SocketAddr::new(src, src_port),
        Some(SocketAddr::new(dst, dst_port)),
        Via::Proxy(version),
    )
}

impl ProxyDecoder {
    /// A reader for a connection from TCP peer `peer`, under `policy`.
    pub fn new(peer: SocketAddr, policy: &ProxyPolicy) -> Self {
        ProxyDecoder {
            peer,
            expect: policy.expect(peer.ip()),
            buf: Vec::new(),
        }
    }

    /// Whether this connection must open with a header.
    pub fn expect(&self) -> Expect {
        self.expect
    }

    fn direct(&mut self) -> Proxied {
        Proxied {
            client: self.peer,
            destination: None,
            via: Via::Direct,
            rest: core::mem::take(&mut self.buf),
        }
    }

    /// Take the next bytes read from the connection. After `Ready` or an
    /// error the decoder is spent; pushing again is a caller bug and gets
    /// the same answer computed from the accumulated bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Step, Refusal> {
        self.buf.extend_from_slice(bytes);
        match (self.expect, classify(&self.buf)) {
            (_, Kind::Unsure) => Ok(Step::NeedMore),
            (Expect::NoHeader, Kind::None) => Ok(Step::Ready(self.direct())),
            (Expect::NoHeader, Kind::Header(v)) => Err(Refusal::Unlisted(v)),
            (Expect::Header, Kind::None) => Err(Refusal::Missing),
            (Expect::Header, Kind::Header(Version::V1)) => self.v1(),
            (Expect::Header, Kind::Header(Version::V2)) => self.v2(),
        }
    }

    /// The peer closed (EOF) before [`Self::push`] decided. A peer that
    /// needs no header gets its few bytes handed on as protocol (they were
    /// not a header after all); a listed proxy is refused.
    pub fn closed(&mut self) -> Result<Proxied, Refusal> {
        match self.expect {
            Expect::NoHeader => Ok(self.direct()),
            Expect::Header if self.buf.is_empty() => Err(Refusal::Missing),
            Expect::Header => Err(Refusal::Truncated(self.buf.len())),
        }
    }

    /// The connection is ready: the header took the first `header_len`
    /// bytes of the buffer, and whatever followed them is handed on as
    /// [`Proxied::rest`] (the decoder keeps nothing).
    fn ready(
        &mut self,
        header_len: usize,
        client: SocketAddr,
        destination: Option<SocketAddr>,
        via: Via,
    ) -> Step {
        let rest = self.buf.split_off(header_len);
        self.buf.clear();
        Step::Ready(Proxied {
            client,
            destination,
            via,
            rest,
        })
    }

    fn v1(&mut self) -> Result<Step, Refusal> {
        let window = &self.buf[..self.buf.len().min(V1_MAX_LEN)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            if self.buf.len() >= V1_MAX_LEN {
                return Err(Refusal::TooLong {
                    version: Version::V1,
                    max: V1_MAX_LEN,
                });
            }
            return Ok(Step::NeedMore);
        };
        let end = lf + 1;
        let malformed = |reason: String| Refusal::Malformed {
            version: Version::V1,
            reason,
        };
        if lf == 0 || self.buf[lf - 1] != b'\r' {
            return Err(malformed("line does not end in CRLF".into()));
        }
        let header =
            ppp::v1::Header::try_from(&self.buf[..end]).map_err(|e| malformed(e.to_string()))?;
        let (client, destination, via) = match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => tcp(
                Version::V1,
                (IpAddr::V4(a.source_address), a.source_port),
                (IpAddr::V4(a.destination_address), a.destination_port),
            ),
            ppp::v1::Addresses::Tcp6(a) => tcp(
                Version::V1,
                (IpAddr::V6(a.source_address), a.source_port),
                (IpAddr::V6(a.destination_address), a.destination_port),
            ),
            ppp::v1::Addresses::Unknown => (self.peer, None, Via::Local(Version::V1)),
        };
        Ok(self.ready(end, client, destination, via))
    }

    fn v2(&mut self) -> Result<Step, Refusal> {
        if self.buf.len() < V2_FIXED {
            return Ok(Step::NeedMore);
        }
        let len = V2_FIXED + usize::from(u16::from_be_bytes([self.buf[14], self.buf[15]]));
        if len > V2_MAX_LEN {
            return Err(Refusal::TooLong {
                version: Version::V2,
                max: V2_MAX_LEN,
            });
        }
        let malformed = |reason: String| Refusal::Malformed {
            version: Version::V2,
            reason,
        };
        // Check the fixed part now, so a bad version or family is refused
        // without waiting for a length's worth of bytes.
        if let Err(e) = ppp::v2::Header::try_from(&self.buf[..self.buf.len().min(len)]) {
            if !matches!(e, ppp::v2::ParseError::Partial(..)) {
                return Err(malformed(e.to_string()));
            }
        }
        if self.buf.len() < len {
            return Ok(Step::NeedMore);
        }
        let header =
            ppp::v2::Header::try_from(&self.buf[..len]).map_err(|e| malformed(e.to_string()))?;
        use ppp::v2::{Addresses, Command, Protocol};
        let (client, destination, via) = match (header.command, header.protocol, header.addresses) {
            (Command::Local, _, _) => (self.peer, None, Via::Local(Version::V2)),
            (Command::Proxy, Protocol::Stream, Addresses::IPv4(a)) => tcp(
                Version::V2,
                (IpAddr::V4(a.source_address), a.source_port),
                (IpAddr::V4(a.destination_address), a.destination_port),
            ),
            (Command::Proxy, Protocol::Stream, Addresses::IPv6(a)) => tcp(
                Version::V2,
                (IpAddr::V6(a.source_address), a.source_port),
                (IpAddr::V6(a.destination_address), a.destination_port),
            ),
            (Command::Proxy, _, _) => return Err(Refusal::NoClientAddress(Version::V2)),
        };
        Ok(self.ready(len, client, destination, via))
    }
}

/// Run a whole byte string through a decoder in `chunks`-sized pieces (all
/// at once when `chunks` is 0), then signal EOF: the decision a serve loop
/// reaches for a connection that sends exactly `bytes`. For tests and fuzzing.
pub fn decide(
    peer: SocketAddr,
    policy: &ProxyPolicy,
    bytes: &[u8],
    chunks: usize,
) -> Result<Proxied, Refusal> {
    let mut d = ProxyDecoder::new(peer, policy);
    let size = if chunks == 0 {
        bytes.len().max(1)
    } else {
        chunks
    };
    for piece in bytes.chunks(size) {
        match d.push(piece)? {
            Step::NeedMore => {}
            Step::Ready(mut p) => {
                // Bytes not yet pushed belong to the protocol too.
                p.rest
                    .extend_from_slice(&bytes[offset_after(bytes, piece)..]);
                return Ok(p);
            }
        }
    }
    d.closed()
}

/// Index just past `piece` inside `whole` (`piece` is a sub-slice of it).
fn offset_after(whole: &[u8], piece: &[u8]) -> usize {
    (piece.as_ptr() as usize - whole.as_ptr() as usize) + piece.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck_macros::quickcheck;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn listed() -> ProxyPolicy {
        ProxyPolicy::parse("10.0.0.0/8, 127.0.0.1").unwrap()
    }

    const PROXY: &str = "10.1.2.3:40000";
    const OTHER: &str = "192.0.2.9:40000";

    fn v2(cmd: u8, fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_tcp4() -> Vec<u8> {
        let mut a = vec![127, 0, 0, 2, 127, 0, 0, 1];
        a.extend_from_slice(&51000u16.to_be_bytes());
        a.extend_from_slice(&5308u16.to_be_bytes());
        v2(1, 0x11, &a, &[0x04, 0, 2, 0, 0]) // one NOOP TLV
    }

    #[test]
    fn policy_parsing_and_matching() {
        let p = listed();
        assert_eq!(p.networks().len(), 2);
        assert_eq!(p.expect("10.200.0.1".parse().unwrap()), Expect::Header);
        assert_eq!(p.expect("127.0.0.1".parse().unwrap()), Expect::Header);
        assert_eq!(
            p.expect("::ffff:127.0.0.1".parse().unwrap()),
            Expect::Header
        );
        assert_eq!(p.expect("127.0.0.2".parse().unwrap()), Expect::NoHeader);
        assert_eq!(p.expect("::1".parse().unwrap()), Expect::NoHeader);
        let p6 = ProxyPolicy::parse("fd00::/8").unwrap();
        assert_eq!(p6.expect("fd12::1".parse().unwrap()), Expect::Header);
        assert_eq!(ProxyPolicy::parse("").unwrap(), ProxyPolicy::default());
        assert_eq!(
            ProxyPolicy::default().expect("10.0.0.1".parse().unwrap()),
            Expect::NoHeader
        );
        for bad in ["10.0.0.0/33", "host.example", "10.0.0.0/8,,x", "1.2.3.4/"] {
            assert!(ProxyPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let msg = b"PROXY TCP4 127.0.0.2 127.0.0.1 51000 5308\r\n\x16\x03\x01";
        let p = decide(sa(PROXY), &listed(), msg, 0).unwrap();
        assert_eq!(p.client, sa("127.0.0.2:51000"));
        assert_eq!(p.destination, Some(sa("127.0.0.1:5308")));
        assert_eq!(p.via, Via::Proxy(Version::V1));
        assert_eq!(p.rest, b"\x16\x03\x01");
        let msg = b"PROXY TCP6 ::2 ::1 51000 5308\r\n";
        let p = decide(sa(PROXY), &listed(), msg, 0).unwrap();
        assert_eq!(p.client, sa("[::2]:51000"));
        assert!(p.rest.is_empty());
        let p = decide(sa(PROXY), &listed(), b"PROXY UNKNOWN\r\nCAUTH", 0).unwrap();
        assert_eq!((p.client, p.via), (sa(PROXY), Via::Local(Version::V1)));
        assert_eq!(p.rest, b"CAUTH");
    }

    #[test]
    fn v2_proxy_local_and_ipv6() {
        let mut msg = v2_tcp4();
        msg.extend_from_slice(b"rest");
        let p = decide(sa(PROXY), &listed(), &msg, 0).unwrap();
        assert_eq!(p.client, sa("127.0.0.2:51000"));
        assert_eq!(p.destination, Some(sa("127.0.0.1:5308")));
        assert_eq!(p.via, Via::Proxy(Version::V2));
        assert_eq!(p.rest, b"rest");
        let p = decide(sa(PROXY), &listed(), &v2(0, 0, &[], &[]), 0).unwrap();
        assert_eq!((p.client, p.via), (sa(PROXY), Via::Local(Version::V2)));
        let mut a = vec![0u8; 36];
        a[15] = 2;
        a[31] = 1;
        a[32..34].copy_from_slice(&7u16.to_be_bytes());
        let p = decide(sa(PROXY), &listed(), &v2(1, 0x21, &a, &[]), 0).unwrap();
        assert_eq!(p.client, sa("[::2]:7"));
    }

    #[test]
    fn refusals() {
        let pol = listed();
        let r = |peer: &str, b: &[u8]| decide(sa(peer), &pol, b, 0).unwrap_err();
        // Header from a peer not in the list, LOCAL included.
        assert_eq!(r(OTHER, &v2_tcp4()), Refusal::Unlisted(Version::V2));
        assert_eq!(
            r(OTHER, &v2(0, 0, &[], &[])),
            Refusal::Unlisted(Version::V2)
        );
        assert_eq!(
            r(OTHER, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Refusal::Unlisted(Version::V1)
        );
        // A listed peer without a header.
        assert_eq!(r(PROXY, b"\x16\x03\x01\x00"), Refusal::Missing);
        assert_eq!(r(PROXY, b""), Refusal::Missing);
        assert_eq!(r(PROXY, b"PROXZ"), Refusal::Missing);
        // Truncated.
        assert_eq!(r(PROXY, b"PROXY TCP4 1.2"), Refusal::Truncated(14));
        assert_eq!(r(PROXY, &v2_tcp4()[..20]), Refusal::Truncated(20));
        // Malformed.
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(
                    r(PROXY, bad),
                    Refusal::Malformed {
                        version: Version::V1,
                        ..
                    }
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut bad_ver = v2_tcp4();
        bad_ver[12] = 0x11;
        assert!(matches!(r(PROXY, &bad_ver), Refusal::Malformed { .. }));
        // Too short for its family, refused before the length arrives.
        let short = v2(1, 0x11, &[1, 2, 3], &[]);
        assert!(matches!(r(PROXY, &short), Refusal::Malformed { .. }));
        // Too long.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(
            r(PROXY, &long),
            Refusal::TooLong {
                version: Version::V1,
                max: V1_MAX_LEN
            }
        );
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(r(PROXY, &big), Refusal::TooLong { .. }));
        // Non-TCP or address-less PROXY.
        assert_eq!(
            r(PROXY, &v2(1, 0x00, &[], &[])),
            Refusal::NoClientAddress(Version::V2)
        );
        assert_eq!(
            r(PROXY, &v2(1, 0x12, &[0; 12], &[])),
            Refusal::NoClientAddress(Version::V2)
        );
        assert_eq!(
            r(PROXY, &v2(1, 0x31, &[0; 216], &[])),
            Refusal::NoClientAddress(Version::V2)
        );
    }

    #[test]
    fn unlisted_peers_pass_through() {
        let pol = listed();
        for msg in [
            &b"\x16\x03\x01\x02"[..],
            b"CAUTH",
            b"PROX",
            b"\r\n",
            b"",
            b"k",
        ] {
            let p = decide(sa(OTHER), &pol, msg, 1).unwrap();
            assert_eq!(p.client, sa(OTHER));
            assert_eq!(p.via, Via::Direct);
            assert_eq!(p.rest, msg);
        }
        // Undecided until the signature diverges.
        let mut d = ProxyDecoder::new(sa(OTHER), &pol);
        assert_eq!(d.push(b"PRO").unwrap(), Step::NeedMore);
        let Step::Ready(p) = d.push(b"TOCOL").unwrap() else {
            panic!()
        };
        assert_eq!(p.rest, b"PROTOCOL");
    }

    fn all_samples() -> Vec<(&'static str, Vec<u8>)> {
        let mut tail = v2_tcp4();
        tail.extend_from_slice(b"\x16\x03\x01 tail");
        vec![
            (
                PROXY,
                b"PROXY TCP4 127.0.0.2 127.0.0.1 51000 5308\r\nCAUTH x".to_vec(),
            ),
            (PROXY, b"PROXY TCP6 ::2 ::1 51000 5308\r\n".to_vec()),
            (PROXY, b"PROXY UNKNOWN ffff::1 ::2 1 2\r\nq".to_vec()),
            (PROXY, tail),
            (PROXY, v2(0, 0, &[], &[])),
            (PROXY, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec()),
            (OTHER, v2_tcp4()),
            (OTHER, b"\x16\x03\x01 hello".to_vec()),
            (PROXY, b"\x16\x03\x01 hello".to_vec()),
        ]
    }

    #[test]
    fn split_at_every_byte_gives_the_same_answer() {
        let pol = listed();
        for (peer, msg) in all_samples() {
            let whole = decide(sa(peer), &pol, &msg, 0);
            for size in 1..=msg.len() {
                assert_eq!(
                    decide(sa(peer), &pol, &msg, size),
                    whole,
                    "{msg:?} by {size}"
                );
            }
            // And at every single split point in two pieces.
            for cut in 0..=msg.len() {
                let mut d = ProxyDecoder::new(sa(peer), &pol);
                let got = match d.push(&msg[..cut]) {
                    Ok(Step::NeedMore) => match d.push(&msg[cut..]) {
                        Ok(Step::NeedMore) => d.closed(),
                        Ok(Step::Ready(p)) => Ok(p),
                        Err(e) => Err(e),
                    },
                    Ok(Step::Ready(mut p)) => {
                        p.rest.extend_from_slice(&msg[cut..]);
                        Ok(p)
                    }
                    Err(e) => Err(e),
                };
                assert_eq!(got, whole, "{msg:?} cut at {cut}");
            }
        }
    }

    #[quickcheck]
    fn arbitrary_bytes_never_panic_and_split_agrees(bytes: Vec<u8>, size: u8, listed_peer: bool) {
        let pol = listed();
        let peer = sa(if listed_peer { PROXY } else { OTHER });
        let whole = decide(peer, &pol, &bytes, 0);
        assert_eq!(decide(peer, &pol, &bytes, usize::from(size).max(1)), whole);
        if let Ok(p) = whole {
            // Nothing is lost: header + rest is what was sent.
            assert!(bytes.ends_with(&p.rest));
        }
    }

    #[quickcheck]
    fn arbitrary_bytes_after_a_signature(tail: Vec<u8>, v1: bool, size: u8) {
        let pol = listed();
        let mut bytes = if v1 {
            V1_PREFIX.to_vec()
        } else {
            V2_SIGNATURE.to_vec()
        };
        bytes.extend_from_slice(&tail);
        let whole = decide(sa(PROXY), &pol, &bytes, 0);
        assert_eq!(
            decide(sa(PROXY), &pol, &bytes, usize::from(size).max(1)),
            whole
        );
        if let Ok(p) = whole {
            assert!(bytes.ends_with(&p.rest));
            assert!(bytes.len() - p.rest.len() <= V2_MAX_LEN);
        }
    }
}
