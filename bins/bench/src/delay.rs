//! Round-trip time emulation for `rcf-bench agents`.
//!
//! The issue asks for agent timings across a 20 ms round trip, where the
//! kernel's `netem` qdisc would normally add the delay. Many kernels (this
//! project's build machine among them) ship without `sch_netem`, so there
//! are two ways here:
//!
//! * [`probe_netem`]: does `tc qdisc add dev lo root netem delay 10ms`
//!   work in a fresh network namespace? (The namespace is deleted again.)
//!   If it does, `agents` re-runs itself inside a namespace of its own
//!   (see `agents.rs`) and puts `netem delay RTT/2` on that namespace's
//!   `lo`, which every packet crosses once per direction.
//! * [`DelayProxy`]: otherwise, a user-space TCP proxy on 127.0.0.1 that
//!   forwards every byte after a fixed one-way delay (RTT/2 each way).
//!
//! Contract of the proxy, per accepted connection: it opens one connection
//! to the upstream address; each direction is a reader thread that stamps
//! every chunk it reads with `read time + one_way` and a writer thread that
//! sleeps until that time and writes the chunk, in order (one FIFO per
//! direction, and stamps never decrease). No bandwidth limit and no
//! reordering: only latency is added, which is what request pipelining
//! is about. An EOF is forwarded as a write shutdown after the same delay,
//! so a close travels like data and the server side closes promptly after
//! the client did (servers limit connections per address, and all proxied
//! connections come from 127.0.0.1). A read or write error ends both
//! directions of that connection.
//!
//! The proxy also counts request/reply turns ([`DelayProxy::turns`]): a
//! chunk read from the server after the last chunk read on that connection
//! came from the client. With one request/reply exchange per round trip
//! that is the number of round trips a sync costs, whatever the RTT.
//! Turns are counted per connection and summed; a client that uses
//! several connections at once (rcf-agent's parallel transfers) makes
//! turns on them concurrently, so [`DelayProxy::conn_turns`] also gives
//! each connection's own count: the busiest one is a lower bound on the
//! round trips the run waited for, the sum is the exchanges it made.
//!
//! Unlike netem it delays chunks as read, not packets, and does not delay
//! the TCP handshake of the upstream connection (made when the client's
//! connection is accepted) nor ACKs; for a request/reply protocol the
//! added round trip per exchange is the same.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running delay proxy; stops accepting when dropped (connections in
/// progress finish on their own when either end closes).
pub struct DelayProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    turns: Arc<AtomicU64>,
    per_conn: Arc<Mutex<Vec<Arc<AtomicU64>>>>,
    thread: Option<JoinHandle<()>>,
}

impl DelayProxy {
    /// Listen on 127.0.0.1:<ephemeral> and forward each connection to
    /// `upstream` with `one_way` added in each direction.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<DelayProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let turns = Arc::new(AtomicU64::new(0));
        let per_conn: Arc<Mutex<Vec<Arc<AtomicU64>>>> = Arc::default();
        let (stop2, accepted2, turns2) = (stop.clone(), accepted.clone(), turns.clone());
        let per_conn2 = per_conn.clone();
        let thread = std::thread::Builder::new()
            .name("delay-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    accepted2.fetch_add(1, Ordering::Relaxed);
                    // A failed upstream connect drops the client connection:
                    // the client sees the same EOF it would see from a
                    // server that refused it.
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    // who sent the last chunk read: 0 client, 1 server
                    let last = Arc::new(AtomicU8::new(1));
                    let mine = Arc::new(AtomicU64::new(0));
                    per_conn2
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(mine.clone());
                    let up = Turns {
                        last: last.clone(),
                        from_server: false,
                        turns: turns2.clone(),
                        conn: mine.clone(),
                    };
                    let down = Turns {
                        last,
                        from_server: true,
                        turns: turns2.clone(),
                        conn: mine,
                    };
                    let _ = splice(&client, &server, one_way, up);
                    let _ = splice(&server, &client, one_way, down);
                }
            })?;
        Ok(DelayProxy {
            port,
            stop,
            accepted,
            turns,
            per_conn,
            thread: Some(thread),
        })
    }

    /// The port to connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Request/reply turns so far, over all connections (see the module doc).
    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    /// Turns of each connection accepted so far, in accept order.
    pub fn conn_turns(&self) -> Vec<u64> {
        self.per_conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the blocking accept
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Turn counting for one direction of one connection.
struct Turns {
    last: Arc<AtomicU8>,
    from_server: bool,
    turns: Arc<AtomicU64>,
    /// This connection's own count.
    conn: Arc<AtomicU64>,
}

impl Turns {
    fn chunk(&self) {
        let was = self.last.swap(self.from_server as u8, Ordering::Relaxed);
        if self.from_server && was == 0 {
            self.turns.fetch_add(1, Ordering::Relaxed);
            self.conn.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One chunk on its way, or the end of the stream.
enum Chunk {
    Data(Instant, Vec<u8>),
    Eof(Instant),
}

/// Forward `from` -> `to` with `delay`: a reader and a writer thread
/// (detached; they end with the connection).
fn splice(from: &TcpStream, to: &TcpStream, delay: Duration, turns: Turns) -> std::io::Result<()> {
    let mut rd = from.try_clone()?;
    let rd_wr = from.try_clone()?;
    let mut wr = to.try_clone()?;
    let (tx, rx) = mpsc::channel::<Chunk>();
    std::thread::Builder::new()
        .name("delay-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match rd.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Chunk::Eof(Instant::now() + delay));
                        break;
                    }
                    Ok(n) => {
                        turns.chunk();
                        if tx
                            .send(Chunk::Data(Instant::now() + delay, buf[..n].to_vec()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        })?;
    std::thread::Builder::new()
        .name("delay-write".into())
        .spawn(move || {
            for c in rx {
                match c {
                    Chunk::Data(due, bytes) => {
                        sleep_until(due);
                        if wr.write_all(&bytes).is_err() {
                            // the receiver is gone: stop reading the sender too
                            let _ = wr.shutdown(Shutdown::Both);
                            let _ = rd_wr.shutdown(Shutdown::Both);
                            break;
                        }
                    }
                    Chunk::Eof(due) => {
                        sleep_until(due);
                        let _ = wr.shutdown(Shutdown::Write);
                        break;
                    }
                }
            }
        })?;
    Ok(())
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// Whether netem can be used: in a throw-away network namespace
/// (`rcf-bench-probe-<pid>`, deleted afterwards), `ip link set lo up` and
/// `tc qdisc add dev lo root netem delay 10ms`. `Err` says why not (the
/// tool's own message, e.g. `Specified qdisc kind is unknown`).
pub fn probe_netem() -> Result<(), String> {
    let ns = format!("rcf-bench-probe-{}", std::process::id());
    sh("ip", &["netns", "add", &ns])?;
    let r = sh(
        "ip",
        &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"],
    )
    .and_then(|_| {
        sh(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
                "10ms",
            ],
        )
    });
    let _ = sh("ip", &["netns", "del", &ns]);
    r
}

/// Run `prog args...`; `Err` carries the command and its stderr.
pub fn sh(prog: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes go through unchanged and in order, both ways, and a close
    /// travels to the other end (no timing asserted).
    #[test]
    fn proxy_forwards_in_order_and_closes() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = upstream.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = upstream.accept().unwrap();
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&buf[..n]);
                s.write_all(&buf[..n]).unwrap();
            }
            all
        });
        let proxy = DelayProxy::start(addr, Duration::from_millis(2)).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c2 = c.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut back = Vec::new();
            c2.read_to_end(&mut back).unwrap();
            back
        });
        for part in sent.chunks(3001) {
            c.write_all(part).unwrap();
        }
        c.shutdown(Shutdown::Write).unwrap();
        let back = reader.join().unwrap();
        let seen = echo.join().unwrap();
        assert_eq!(seen, sent, "server side");
        assert_eq!(
            back, sent,
            "client side (EOF forwarded back after the server closed)"
        );
        assert_eq!(proxy.accepted(), 1);
        assert!(proxy.turns() >= 1);
    }
}
