//! One serve loop for both protocols: a connection is classified from its
//! first bytes (the core's pure [`sniff`]), the matching core machine is
//! built ([`open`]), and [`drive`] pumps bytes between the socket and that
//! [`Machine`], whichever it is.
//!
//! The loop is the core's contract: after every input, drain
//! `poll_transmit` (with a write deadline) and `poll_event` (answering each
//! question in [`answer_event`]), then wait for socket input, the machine's
//! `poll_timeout` or a policy reload. The session's establishment is seen
//! in one place, [`on_established`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcf_core::classic::ClassicPolicy;
use rcf_core::policy::ServerPolicy;
use rcf_core::server::sniff::{sniff, Protocol, SHORT_FIRST_SEGMENT, SNIFF_LEN};
use rcf_core::server::{Answer, Event, Level, Now};
use rcf_fs::serve::{Files, ServerFs};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::machine::{host_key, Machine};
use crate::{exec, metrics, Shared, Slot};

/// Logged when a peer stops reading and the write deadline passes.
const WRITE_STALLED: &str = "Peer stopped reading (write deadline), closing connection";

/// Output is written once this much is pending, or when nothing else is.
const WRITE_BATCH: usize = 64 * 1024;

/// Serve one admitted connection, `accepted` at that time, to close. The
/// handshake deadline runs from `accepted` to WELCOME, so a PROXY header
/// read before admission counts against it too.
pub(crate) async fn handle(mut stream: TcpStream, slot: &Slot, accepted: Now) {
    let (ip, shared) = (&slot.ip, &slot.shared);
    shared
        .logger
        .log(Level::Info, Some(ip), "Accepting connection");
    if !shared.listeners_nodelay.load(Ordering::Relaxed) {
        let _ = stream.set_nodelay(true);
    }
    let mut policy_rx = shared.policy.subscribe();
    let policy = policy_rx.borrow_and_update().clone();
    let Some(machine) = open(&stream, ip, shared, policy, accepted).await else {
        return;
    };
    drive(&mut stream, slot, machine, policy_rx).await;
}

/// Classic or TLS, from the first bytes (the decision is the core's
/// [`sniff`]): peeks until it can tell, giving a slow peer until 200 ms
/// before `deadline` to complete its first segment. `None` when the peer
/// closed or the deadline passed first.
async fn classify(stream: &TcpStream, deadline: Duration) -> Option<Protocol> {
    let mut buf = [0u8; SNIFF_LEN];
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let n = tokio::time::timeout_at(end, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(p) = sniff(&buf[..n]) {
            return Some(p);
        }
        if tokio::time::Instant::now() + Duration::from_millis(200) > end {
            return Some(SHORT_FIRST_SEGMENT);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tell the protocol and build its machine, or say (in the log) why the
/// connection ends here: silent peer, classic not allowed for this address,
/// no host key, or no TLS session.
async fn open(
    stream: &TcpStream,
    ip: &str,
    shared: &Arc<Shared>,
    policy: Arc<ServerPolicy>,
    accepted: Now,
) -> Option<Machine> {
    let log = |l: Level, m: &str| shared.logger.log(l, Some(ip), m);
    // What is left of the handshake deadline, which runs from accept (a
    // PROXY header may have been read since).
    let spent = shared.now().mono_ms.saturating_sub(accepted.mono_ms);
    let handshake = Duration::from_millis(shared.cfg.handshake_timeout_ms.saturating_sub(spent));
    match classify(stream, handshake).await {
        None if shared.now().mono_ms >= accepted.mono_ms + shared.cfg.handshake_timeout_ms => {
            log(
                Level::Info,
                "Connection timed out before the peer sent anything, closing",
            );
            None
        }
        None => {
            log(
                Level::Verbose,
                "Peer closed TCP connection without sending data!",
            );
            None
        }
        Some(Protocol::Classic) => {
            log(
                Level::Verbose,
                "Peeked CAUTH in TCP stream, considering the protocol as Classic",
            );
            shared.stats.classic.fetch_add(1, Ordering::Relaxed);
            if !ClassicPolicy::legacy_allowed(&*policy, ip) {
                // 3.21 closes without a byte.
                log(
                    Level::Info,
                    "Connection is not using latest protocol, denying",
                );
                return None;
            }
            let s = shared.clone();
            let key = match tokio::task::spawn_blocking(move || host_key(&s)).await {
                Ok(Ok(k)) => k,
                Ok(Err(e)) => {
                    log(
                        Level::Error,
                        &format!("No public/private key pair exists, create one with cf-key ({e})"),
                    );
                    return None;
                }
                Err(_) => return None,
            };
            Some(Machine::classic(shared, policy, key, ip, shared.now()))
        }
        Some(Protocol::Tls) => {
            log(
                Level::Verbose,
                "Peeked nothing important in TCP stream, considering the protocol as TLS",
            );
            Machine::tls(shared, policy, ip, accepted)
                .map_err(|e| log(Level::Error, &e))
                .ok()
        }
    }
}

/// Counts a TLS connection that ended before WELCOME, however it ended,
/// and merges the connection's request latencies.
struct EndCount {
    shared: Arc<Shared>,
    /// Whether an end before establishment is counted (TLS only).
    counts: bool,
    established: bool,
    /// This connection's request latencies, merged in batches and at the end.
    latency: metrics::LocalLatency,
}

impl Drop for EndCount {
    fn drop(&mut self) {
        if self.counts && !self.established {
            self.shared
                .stats
                .not_established
                .fetch_add(1, Ordering::Relaxed);
        }
        self.latency.flush(&self.shared.stats.detail);
    }
}

/// What one connection holds between its questions.
struct Answering {
    /// This connection's file state (open handles, the per-burst caches);
    /// away on the blocking pool while a slow answer is computed.
    files: Option<Files>,
    /// The running cfruncommand, if an EXEC is in progress.
    run: Option<exec::Run>,
    /// The clock as read once per burst of quick answers (reset on each wait).
    now: Option<Now>,
}

/// What the loop does after [`answer_event`].
enum Flow {
    /// Go on with the next event.
    Next,
    /// Write what is pending before the next event (an EXEC line).
    Flush,
    /// The connection is over (the answer could not be computed or given).
    Close,
}

/// Answer `ev` now if it is a quick question (metadata, a cached digest, a
/// key whose file exists) that neither the cluster's trust store nor the
/// EXEC runner takes; `None` leaves it to [`answer_event`].
fn answer_quick(
    shared: &Arc<Shared>,
    ip: &str,
    m: &mut Machine,
    st: &mut Answering,
    ev: &Event,
) -> Option<Flow> {
    if crate::cluster::takes(shared, ev) || exec::takes(ev) {
        return None;
    }
    let f = st.files.as_mut()?;
    let (answer, note) = match ev {
        Event::Digest { path } => shared
            .fs
            .peek_digest(f, path)
            .map(|d| (Some(Answer::Digest(Some(d))), None)),
        e @ Event::LookupKey { .. } => shared.fs.quick_key(e).map(|a| (Some(a), None)),
        e if ServerFs::is_quick(e) => Some(shared.fs.answer(f, e)),
        _ => None,
    }?;
    // Quick answers of one burst share one clock reading.
    let now = *st.now.get_or_insert_with(|| shared.now());
    Some(give(shared, ip, m, now, answer, note))
}

/// Log an answer's note and hand the answer to the machine.
fn give(
    shared: &Shared,
    ip: &str,
    m: &mut Machine,
    now: Now,
    answer: Option<Answer>,
    note: Option<(Level, String)>,
) -> Flow {
    if let Some((level, msg)) = note {
        shared.logger.log(level, Some(ip), &msg);
    }
    if let Some(a) = answer {
        if let Err(e) = m.handle_answer(now, a) {
            shared
                .logger
                .log(Level::Error, Some(ip), &format!("internal: {e}"));
            return Flow::Close;
        }
    }
    Flow::Next
}

/// Answer one question of the machine: EXEC from the runner; metadata
/// questions, digest cache hits and cached keys here (they take
/// microseconds: handing each to the blocking pool cost two thread
/// switches per question, which dominated the server's profile); hashing,
/// reads, key files and DNS on the blocking pool, since they may block.
async fn answer_event(
    shared: &Arc<Shared>,
    ip: &str,
    m: &mut Machine,
    st: &mut Answering,
    ev: Event,
) -> Flow {
    // Key questions go to the cluster's trust store when one is set.
    let ev = match crate::cluster::answer_key(shared, ev).await {
        crate::cluster::Keyed::Other(ev) => ev,
        crate::cluster::Keyed::Answer(a) => return give(shared, ip, m, shared.now(), a, None),
        crate::cluster::Keyed::Close => return Flow::Close,
    };
    if let Some(answer) = exec::handle(shared, ip, &ev, &mut st.run).await {
        return match give(shared, ip, m, shared.now(), answer, None) {
            Flow::Close => Flow::Close,
            _ => Flow::Flush,
        };
    }
    // Not quick (see `answer_quick`, which already tried): it may block.
    let f = st.files.take().unwrap_or_default();
    let Some((answer, note)) = answer_on_pool(&shared.fs, &mut st.files, f, ev).await else {
        return Flow::Close;
    };
    let now = shared.now();
    st.now = Some(now);
    give(shared, ip, m, now, answer, note)
}

/// The session is established (TLS: WELCOME sent; classic: key exchange
/// done): it leaves the pre-authentication budget for one of the
/// `maxconnections` places (`false`: none left, close it), is counted, and
/// its key noted where it was already seen elsewhere.
fn on_established(slot: &Slot, key_id: &str) -> bool {
    let (shared, ip) = (&slot.shared, slot.ip.as_str());
    if !slot.identify() {
        return false;
    }
    shared.stats.established.fetch_add(1, Ordering::Relaxed);
    crate::cluster::established(shared, ip, key_id);
    if let Some(others) = shared.stats.detail.saw_key(key_id, ip) {
        shared.logger.log(
            Level::Notice,
            Some(ip),
            &format!(
                "Key {key_id} was already seen from {} (cloned host, or a moved one?)",
                others.join(", ")
            ),
        );
    }
    true
}

/// Pump bytes between `stream` and `m` until the machine closes, the peer
/// stops reading, or an answer cannot be given. When the machine closed,
/// flush what is left (a final refusal, an alert) and say so; the caller
/// then closes the socket without close_notify, as 3.21 does.
async fn drive(
    stream: &mut TcpStream,
    slot: &Slot,
    mut m: Machine,
    mut policy_rx: watch::Receiver<Arc<ServerPolicy>>,
) {
    let (ip, shared) = (slot.ip.as_str(), &slot.shared);
    let log = |l: Level, msg: &str| shared.logger.log(l, Some(ip), msg);
    let mut end = EndCount {
        shared: shared.clone(),
        counts: m.is_tls(),
        established: false,
        latency: Default::default(),
    };
    // (requests read, when the latest started, its label) for latency metrics
    let mut timing: (u64, Option<(Instant, &'static str)>) = (0, None);
    let mut st = Answering {
        files: Some(Files::default()),
        run: None,
        now: None,
    };
    let mut out: Vec<u8> = Vec::new();
    let mut served = 0u64;
    let sleep = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(sleep);
    let mut armed: Option<u64> = None;
    loop {
        if let Some((n, text)) = m.last_request() {
            if n != timing.0 {
                // A new request was read since we last looked: the previous
                // one (if any) ended when this one arrived.
                if let Some((t0, label)) = timing.1.take() {
                    end.latency
                        .observe(label, t0.elapsed(), &shared.stats.detail);
                }
                timing = (
                    n,
                    Some((Instant::now(), rcf_core::request::metric_label(text))),
                );
            }
        }
        // Send what is pending in one write (a STAT reply is two records;
        // one syscall per record showed up in profiles), bounded by the
        // write deadline.
        while let Some(bytes) = m.poll_transmit() {
            extend_out(&mut out, &bytes);
        }
        if !send(stream, &mut out, shared.write_timeout).await {
            return log(Level::Info, WRITE_STALLED);
        }
        // Answer every question; answers may produce more output.
        let mut progressed = false;
        while let Some(ev) = m.poll_event() {
            progressed = true;
            let Some(ev) = question(ev, shared, &log) else {
                continue;
            };
            // The common questions (metadata, cached digests and keys) are
            // answered without building the async answer's future: moving
            // that future and the event through it per request cost ~4% of
            // a steady run's instructions (callgrind, session 7).
            let flow = match answer_quick(shared, ip, &mut m, &mut st, &ev) {
                Some(flow) => flow,
                None => Box::pin(answer_event(shared, ip, &mut m, &mut st, ev)).await,
            };
            match flow {
                Flow::Next => {}
                Flow::Flush => break,
                Flow::Close => return,
            }
            // Answer pipelined requests back to back, writing whenever a
            // batch fills (a GET's reads fill one each, so large files
            // stream with bounded memory); the rest goes out before the
            // next wait, at the top of the loop.
            if m.pending_output() >= WRITE_BATCH {
                while let Some(bytes) = m.poll_transmit() {
                    extend_out(&mut out, &bytes);
                }
            }
            if out.len() >= WRITE_BATCH {
                if !send(stream, &mut out, shared.write_timeout).await {
                    return log(Level::Info, WRITE_STALLED);
                }
                st.now = None;
            }
        }
        if progressed {
            continue;
        }
        if !end.established {
            if let Some(key_id) = m.established_key() {
                end.established = true;
                if !on_established(slot, key_id) {
                    return;
                }
            }
        }
        add_since(&shared.stats.bytes_served, &mut served, m.bytes_served());
        if m.is_closing() {
            break;
        }
        if policy_rx.has_changed().unwrap_or(false) {
            let p = policy_rx.borrow_and_update().clone();
            m.set_policy(shared, p);
        }
        // Everything asked was answered and sent: the request is done.
        if let Some((t0, label)) = timing.1.take() {
            end.latency
                .observe(label, t0.elapsed(), &shared.stats.detail);
        }
        // One timer per connection, moved only when the deadline comes
        // earlier or more than a second later than armed: re-arming a timer
        // for every request showed in profiles. Firing early is harmless
        // (`handle_timeout` checks the real deadline), then it is re-armed.
        let want = m.poll_timeout();
        if let Some(w) = want {
            if armed.is_none_or(|a| w < a || w > a + 1000) {
                sleep.as_mut().reset(tokio::time::Instant::from_std(
                    shared.origin + Duration::from_millis(w),
                ));
                armed = Some(w);
            }
        }
        st.now = None;
        // Everything that arrived together is answered: the next lookups
        // must see the filesystem afresh (see `Files::end_burst`).
        if let Some(f) = st.files.as_mut() {
            f.end_burst();
        }
        // An idle session keeps no output buffer (re-made per burst).
        if out.is_empty() && out.capacity() > 0 {
            out = Vec::new();
        }
        tokio::select! {
            r = stream.readable() => match r {
                Ok(()) => read_ready(stream, &mut m, shared.now()),
                Err(_) => m.handle_eof(shared.now()),
            },
            _ = &mut sleep, if want.is_some() => {
                armed = None;
                m.handle_timeout(shared.now());
            }
            // `changed()` marks the new value seen, so apply it here: the
            // `has_changed()` check above would not see it again.
            r = policy_rx.changed() => {
                if r.is_ok() {
                    let p = policy_rx.borrow_and_update().clone();
                    m.set_policy(shared, p);
                }
            }
        }
    }
    while let Some(bytes) = m.poll_transmit() {
        if tokio::time::timeout(shared.write_timeout, stream.write_all(&bytes))
            .await
            .is_err()
        {
            break;
        }
    }
    log(Level::Info, "Closing connection, terminating thread");
}

/// Read what the socket holds into this worker thread's buffer and feed
/// it to `m`: a waiting session then owns no read buffer (a 16 KiB one
/// per connection was 40% of an idle session's memory), and nothing is
/// zeroed per read.
fn read_ready(stream: &TcpStream, m: &mut Machine, now: Now) {
    thread_local! {
        static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(16 * 1024));
    }
    READ_BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        match stream.try_read_buf(&mut *buf) {
            Ok(0) => m.handle_eof(now),
            Ok(n) => m.handle_input(now, &buf[..n]),
            // Readiness was spurious: wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => m.handle_eof(now),
        }
    });
}

/// Append to the per-burst output buffer, which starts at 16 KiB when
/// (re)made: growing it from nothing by doubling cost a measurable share
/// per burst, and an idle session keeps none (see the wait in `drive`).
fn extend_out(out: &mut Vec<u8>, bytes: &[u8]) {
    if out.capacity() == 0 {
        out.reserve(bytes.len().max(16 * 1024));
    }
    out.extend_from_slice(bytes);
}

/// Write and clear `out`; false when the peer did not take it in time.
async fn send(stream: &mut TcpStream, out: &mut Vec<u8>, deadline: Duration) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = matches!(
        tokio::time::timeout(deadline, stream.write_all(out)).await,
        Ok(Ok(()))
    );
    out.clear();
    ok
}

/// A machine's log line is printed (through `log`, which adds the peer's
/// prefix) and its access denials counted; any other event is a question
/// for the caller to answer.
fn question(ev: Event, shared: &Shared, log: &impl Fn(Level, &str)) -> Option<Event> {
    match ev {
        Event::Log { level, message } => {
            log(level, &message);
            None
        }
        Event::Denied { .. } => {
            shared.stats.denied_requests.fetch_add(1, Ordering::Relaxed);
            None
        }
        q => Some(q),
    }
}

/// Answer `ev` from the filesystem on the blocking pool (it may block:
/// hashing, reads, key files, DNS), with `f` as this connection's file
/// state, which goes back into `files`. `None` if the pool task died.
async fn answer_on_pool(
    fs: &Arc<ServerFs>,
    files: &mut Option<Files>,
    mut f: Files,
    ev: Event,
) -> Option<(Option<Answer>, Option<(Level, String)>)> {
    let fs = fs.clone();
    let (f, r) = tokio::task::spawn_blocking(move || {
        let r = fs.answer(&mut f, &ev);
        (f, r)
    })
    .await
    .ok()?;
    *files = Some(f);
    Some(r)
}

/// Add to `counter` what a machine's running total `now` gained since
/// `last` (which it then becomes).
fn add_since(counter: &AtomicU64, last: &mut u64, now: u64) {
    if now != *last {
        counter.fetch_add(now - *last, Ordering::Relaxed);
        *last = now;
    }
}
