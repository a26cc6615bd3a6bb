//! The whole server session above TLS, driven by an attacker's byte stream
//! against a small, fixed, deterministic in-memory world.
//!
//! Input: one flag byte (peer IP, key status in ppkeys, file-change quirks),
//! then operations: a length byte `n` followed by `n` bytes of plaintext
//! (`n <= 0xFC`), `0xFD` = the peer half-closes (EOF), `0xFE` = time jumps to
//! the session's deadline, `0xFF` = time advances by one second.
//!
//! Invariants checked after every step:
//! * no panic, and the session never asks a question out of turn (every
//!   answer the world gives is accepted);
//! * every record is a well-formed framed transaction (header length equal
//!   to the payload, payload <= 4088 bytes) or a raw/line record of at most
//!   4096 bytes;
//! * a GET never sends more bytes than the size the client was promised
//!   (its STAT, else the size at open);
//! * the content of the canary file outside the admitted tree never appears
//!   in any record;
//! * every opened file is closed exactly once, by the end of the session.
#![no_main]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rcf_core::frame;
use rcf_core::policy::{self, Canon, LoadOptions, PolicySource, ServerPolicy};
use rcf_core::reply::{FileType, StatReply};
use rcf_core::server::io::{Canonical, FileStat, OpenedFile};
use rcf_core::server::{Answer, Config, Event, KeyStatus, Now, PeerKey, PolicyView, Session};

const D: &str = "/tmp/cfe-lab/data";
const CANARY: &[u8] = b"CANARY-9f1c2e-must-never-be-sent";
const PUB_PEM: &str = include_str!("../../core/src/keys/testdata/cfkey.pub");

const POLICY: &str = r#"
body common control { bundlesequence => { }; }
body server control {
  allowconnects => { "127.0.0.1", "10.0.0.0/8", "192.0.2.1" };
  allowallconnects => { "127.0.0.1", "10.0.0.0/8", "192.0.2.1" };
  trustkeysfrom => { "10.0.0.1" };
  allowusers => { "root", "alice", "" };
}
bundle server access_rules {
  access:
    "/tmp/cfe-lab/data/share"
      admit_ips => { "127.0.0.1", "10.0.0.0/8" },
      shortcut => "myshare";
    "/tmp/cfe-lab/data/share/tree/sub"
      deny_ips => { "10.0.0.2" };
    "/tmp/cfe-lab/data/share/named"
      admit_hostnames => { ".example.com" };
    "sys.fqhost"
      resource_type => "literal",
      admit_ips => { "127.0.0.1" };
    "delta"
      resource_type => "query",
      admit_ips => { "127.0.0.1" };
}
"#;

struct Src;

impl PolicySource for Src {
    fn read(&self, path: &str) -> Result<Vec<u8>, String> {
        if path == "/fuzz/promises.cf" {
            Ok(POLICY.as_bytes().to_vec())
        } else {
            Err("not found".into())
        }
    }
    fn canonicalize(&self, path: &str) -> Canon {
        let p = path.trim_end_matches('/');
        if p.starts_with(D) {
            Canon::Resolved { path: p.to_string(), is_dir: !p.ends_with(".txt") }
        } else {
            Canon::Missing
        }
    }
    fn exists(&self, path: &str) -> bool {
        path.starts_with(D)
    }
}

fn statics() -> &'static (Arc<ServerPolicy>, PeerKey) {
    static S: OnceLock<(Arc<ServerPolicy>, PeerKey)> = OnceLock::new();
    S.get_or_init(|| {
        let opts = LoadOptions { file: "/fuzz/promises.cf".into(), ..Default::default() };
        let p = policy::load(&Src, &opts).expect("the fuzz policy loads");
        let k = rcf_core::keys::parse_public_pem(PUB_PEM.as_bytes()).expect("test key");
        (Arc::new(p), PeerKey::new(k))
    })
}

#[derive(Clone)]
struct Node {
    data: Vec<u8>,
    dir: Option<Vec<Vec<u8>>>,
    mode: u32,
    uid: u32,
}

fn stat_of(n: &Node) -> StatReply {
    StatReply {
        file_type: if n.dir.is_some() { FileType::Dir } else { FileType::Regular },
        mode: n.mode,
        lmode: 0,
        uid: n.uid,
        gid: 0,
        size: n.data.len() as u64,
        atime: 1_700_000_000,
        mtime: 1_700_000_000,
        ctime: 1_700_000_000,
        makeholes: false,
        ino: 42,
        nlink: 1,
        dev: 2049,
        link_target: vec![],
    }
}

#[derive(Clone)]
struct World {
    nodes: BTreeMap<Vec<u8>, Node>,
    links: BTreeMap<Vec<u8>, Vec<u8>>,
    key: KeyStatus,
    open: HashMap<u64, Vec<u8>>,
    closed: HashSet<u64>,
    next: u64,
    /// Sizes STAT told the client, as the session remembers them.
    promised: HashMap<Vec<u8>, u64>,
    /// The GET being served: (handle, promised, bytes sent so far).
    transfer: Option<(u64, u64, u64)>,
    grow_on_open: bool,
    change_after_open: bool,
    /// Output lines the running EXEC program still has to print.
    exec_lines: u8,
    /// Every plaintext byte the peer sent.
    fed: Vec<u8>,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn p(s: &str) -> Vec<u8> {
    format!("{D}{s}").into_bytes()
}

impl World {
    fn new(flags: u8) -> Self {
        static TEMPLATE: OnceLock<World> = OnceLock::new();
        let mut w = TEMPLATE.get_or_init(|| World::build(0)).clone();
        w.key = match flags & 3 {
            1 => KeyStatus::Missing,
            2 => KeyStatus::Different,
            _ => KeyStatus::Trusted,
        };
        w.grow_on_open = flags & 0x10 != 0;
        w.change_after_open = flags & 0x20 != 0;
        w
    }

    fn build(flags: u8) -> Self {
        let file = |data: &[u8], mode: u32, uid: u32| Node { data: data.to_vec(), dir: None, mode, uid };
        let dir = |names: &[&str]| Node {
            data: vec![0; 4096],
            dir: Some([".", ".."].iter().chain(names).map(|n| n.as_bytes().to_vec()).collect()),
            mode: 0o755,
            uid: 0,
        };
        let mut nodes = BTreeMap::new();
        let many: Vec<String> = (0..300).map(|i| format!("entry-{i:04}-{}", "x".repeat(20))).collect();
        let many_refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        nodes.insert(p(""), dir(&["share", "secret"]));
        nodes.insert(p("/share"), dir(&["hello.txt", "seq.txt", "empty.txt", "tree", "many", "link.txt", "escape.txt", "grow.txt", "private.txt", "named"]));
        nodes.insert(p("/share/hello.txt"), file(b"hello from cf-serverd lab\n", 0o644, 0));
        let seq: Vec<u8> = (0..9000u32).flat_map(|i| format!("{i}\n").into_bytes()).take(20_000).collect();
        nodes.insert(p("/share/seq.txt"), file(&seq, 0o644, 0));
        nodes.insert(p("/share/empty.txt"), file(b"", 0o644, 0));
        nodes.insert(p("/share/grow.txt"), file(b"grows by one byte per open", 0o644, 0));
        nodes.insert(p("/share/private.txt"), file(b"root only", 0o600, 0));
        nodes.insert(p("/share/tree"), dir(&["a.txt", "sub"]));
        nodes.insert(p("/share/tree/a.txt"), file(b"a\n", 0o644, 1000));
        nodes.insert(p("/share/tree/sub"), dir(&["b.txt", "deeper"]));
        nodes.insert(p("/share/tree/sub/b.txt"), file(b"b\n", 0o644, 0));
        nodes.insert(p("/share/tree/sub/deeper"), dir(&["c.txt"]));
        nodes.insert(p("/share/tree/sub/deeper/c.txt"), file(b"c\n", 0o644, 0));
        nodes.insert(p("/share/many"), dir(&many_refs));
        nodes.insert(p("/share/named"), file(b"named\n", 0o644, 0));
        nodes.insert(p("/secret"), dir(&["secret.txt"]));
        nodes.insert(p("/secret/secret.txt"), file(CANARY, 0o644, 0));
        let mut links = BTreeMap::new();
        links.insert(p("/share/link.txt"), p("/share/hello.txt"));
        links.insert(p("/share/escape.txt"), p("/secret/secret.txt"));
        links.insert(p("/share/up"), p("/secret"));
        let key = match flags & 3 {
            1 => KeyStatus::Missing,
            2 => KeyStatus::Different,
            _ => KeyStatus::Trusted,
        };
        World {
            nodes,
            links,
            key,
            open: HashMap::new(),
            closed: HashSet::new(),
            next: 0,
            promised: HashMap::new(),
            transfer: None,
            grow_on_open: flags & 0x10 != 0,
            change_after_open: flags & 0x20 != 0,
            exec_lines: 0,
            fed: Vec::new(),
        }
    }

    /// realpath over the model: `.`/`..`/`//` folded, links followed (a loop
    /// is an error, like ELOOP).
    fn canonicalize(&self, path: &[u8]) -> Result<Canonical, String> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut todo: Vec<Vec<u8>> = vec![path.to_vec()];
        let mut hops = 0;
        let mut out: Vec<u8>;
        loop {
            let cur = todo.pop().expect("one path");
            for c in cur.split(|&b| b == b'/') {
                match c {
                    b"" | b"." => {}
                    b".." => {
                        parts.pop();
                    }
                    c => parts.push(c.to_vec()),
                }
            }
            out = Vec::new();
            for c in &parts {
                out.push(b'/');
                out.extend_from_slice(c);
            }
            if out.is_empty() {
                out.push(b'/');
            }
            match self.links.get(&out) {
                Some(t) => {
                    hops += 1;
                    if hops > 8 {
                        return Err("Too many levels of symbolic links".into());
                    }
                    parts.clear();
                    todo.push(t.clone());
                }
                None => break,
            }
        }
        match self.nodes.get(&out) {
            Some(n) => Ok(Canonical { path: out, is_dir: n.dir.is_some() }),
            None => Err("No such file or directory".into()),
        }
    }

    fn trim(path: &[u8]) -> Vec<u8> {
        let mut v = path.to_vec();
        while v.len() > 1 && v.last() == Some(&b'/') {
            v.pop();
        }
        v
    }

    fn answer(&mut self, ev: &Event) -> Option<Answer> {
        if let Event::Stat { path } | Event::StatLink { path, .. } | Event::Open { path } | Event::ListDir { path } | Event::Digest { path } = ev {
            // Nothing outside the admitted tree is ever looked at.
            assert!(!Self::trim(path).starts_with(&p("/secret")), "the session touched {:?}", String::from_utf8_lossy(path));
        }
        Some(match ev {
            Event::Log { .. } | Event::SaveKey { .. } | Event::ExecKill { .. } => return None,
            // EXEC runs a one-line program that says so and exits 0.
            Event::ExecStart { argv } => {
                assert!(!argv.is_empty(), "EXEC with an empty argv");
                self.exec_lines = 1;
                Answer::ExecStarted(Ok(99))
            }
            Event::ExecRead { .. } => {
                if self.exec_lines > 0 {
                    self.exec_lines -= 1;
                    Answer::ExecOutput(rcf_core::server::io::ExecChunk::Line(b"ran".to_vec()))
                } else {
                    Answer::ExecOutput(rcf_core::server::io::ExecChunk::Exit(Some(0)))
                }
            }
            Event::Close { handle } => {
                assert!(self.open.remove(handle).is_some(), "Close of a handle that is not open: {handle}");
                assert!(self.closed.insert(*handle), "double Close of {handle}");
                if self.transfer.map(|t| t.0) == Some(*handle) {
                    self.transfer = None;
                }
                return None;
            }
            Event::LookupKey { .. } => Answer::Key(self.key.clone()),
            Event::LookupUser { user } => Answer::User(match user.as_str() {
                "alice" => Some(1000),
                "bob" => Some(1001),
                _ => None,
            }),
            Event::ReverseLookup { ip } => Answer::Hostname((ip == "10.0.0.1").then(|| "a.example.com".to_string())),
            Event::Canonicalize { path } => {
                assert!(path.first() == Some(&b'/') && !path.contains(&0), "session canonicalises only absolute, NUL-free paths");
                Answer::Canonical(self.canonicalize(path))
            }
            Event::Stat { path } | Event::StatLink { path, .. } => Answer::Stat(match self.nodes.get(&Self::trim(path)) {
                Some(n) => {
                    let st = stat_of(n);
                    if self.promised.len() >= 4096 {
                        self.promised.clear();
                    }
                    self.promised.insert(path.clone(), st.size);
                    Ok(FileStat { reply: st })
                }
                None => Err("No such file or directory".into()),
            }),
            Event::Open { path } => {
                let t = Self::trim(path);
                let grow = self.grow_on_open || t == p("/share/grow.txt");
                let change = self.change_after_open;
                Answer::Opened(match self.nodes.get_mut(&t) {
                    Some(n) if n.dir.is_none() => {
                        if grow {
                            n.data.push(b'+');
                        }
                        self.next += 1;
                        let h = self.next;
                        let size = n.data.len() as u64;
                        let f = OpenedFile { handle: h, size, uid: n.uid, mode: n.mode };
                        if change {
                            n.data.truncate(n.data.len() / 2);
                        }
                        self.open.insert(h, t);
                        let promised = self.promised.get(path).copied().unwrap_or(size);
                        self.transfer = Some((h, promised, 0));
                        Ok(f)
                    }
                    Some(_) => Err("Is a directory".into()),
                    None => Err("No such file or directory".into()),
                })
            }
            Event::Read { handle, offset, len } => {
                let p = self.open.get(handle).expect("Read of an open handle");
                let data = &self.nodes[p].data;
                let s = (*offset as usize).min(data.len());
                let e = (s + len).min(data.len());
                Answer::Data { bytes: data[s..e].to_vec(), current_size: data.len() as u64 }
            }
            Event::ListDir { path } => {
                Answer::Listing(self.nodes.get(&Self::trim(path)).and_then(|n| n.dir.clone()).ok_or_else(|| "Not a directory".into()))
            }
            Event::Digest { path } => {
                use md5::Digest as _;
                Answer::Digest(self.nodes.get(&Self::trim(path)).map(|n| md5::Md5::digest(&n.data).into()))
            }
        })
    }

    fn check_record(&mut self, r: &[u8], in_transfer: bool) {
        // (Unless the peer sent the canary text itself: the welcome echoes
        // the username, error replies echo paths.)
        assert!(!contains(r, CANARY) || contains(&self.fed, CANARY), "canary content leaked");
        if in_transfer {
            if let Some(t) = &mut self.transfer {
                t.2 += r.len() as u64;
                assert!(t.2 <= t.1, "GET sent {} bytes, more than the {} promised", t.2, t.1);
                assert!(r.len() <= 2048, "a GET data record of {} bytes", r.len());
                return;
            }
        }
        if r.len() >= frame::HEADER_LEN {
            let h: [u8; frame::HEADER_LEN] = r[..frame::HEADER_LEN].try_into().expect("8 bytes");
            if let Ok((_, len)) = frame::parse_header(&h) {
                if len == r.len() - frame::HEADER_LEN {
                    assert!(len <= frame::MAX_PAYLOAD);
                    return;
                }
            }
        }
        assert!(r.len() <= 4096, "a record of {} bytes that is not a transaction", r.len());
    }

    fn drive(&mut self, s: &mut Session, now: Now) {
        loop {
            while let Some(r) = s.poll_record() {
                // Raw records count toward the GET being served until it has
                // sent all it promised; later records answer later requests.
                let mut in_transfer = matches!(self.transfer, Some((_, promised, sent)) if sent < promised);
                if in_transfer && self.transfer.map(|t| t.2) == Some(0) && looks_framed(&r) {
                    // Ownership refusal: a FAILED transaction, then a raw block.
                    self.transfer = None;
                    in_transfer = false;
                }
                self.check_record(&r, in_transfer);
            }
            match s.poll_event() {
                Some(ev) => {
                    if let Some(a) = self.answer(&ev) {
                        s.handle_answer(now, a).expect("a well-behaved world's answers are accepted");
                    }
                }
                None => break,
            }
        }
    }
}

fn looks_framed(r: &[u8]) -> bool {
    r.len() >= frame::HEADER_LEN && {
        let h: [u8; frame::HEADER_LEN] = r[..frame::HEADER_LEN].try_into().expect("8 bytes");
        matches!(frame::parse_header(&h), Ok((_, len)) if len == r.len() - frame::HEADER_LEN)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let (policy, key) = statics();
    let ip = ["127.0.0.1", "10.0.0.1", "10.0.0.2", "192.0.2.1"][usize::from(flags >> 2 & 3)];
    let mut world = World::new(flags);
    let mut now = Now { mono_ms: 1_000, unix_s: 1_795_415_949 };
    let cfg = Config { handshake_timeout_ms: 30_000, idle_timeout_ms: 600_000, ..Config::default() };
    let pv: Arc<dyn PolicyView> = policy.clone();
    let mut s = Session::new(cfg, pv, ip.to_string(), key.clone(), now);
    world.drive(&mut s, now);
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        steps += 1;
        if steps > 10_000 {
            break;
        }
        rest = tail;
        match op {
            0xFD => s.handle_eof(now),
            0xFE => {
                if let Some(d) = s.poll_timeout() {
                    assert!(d >= now.mono_ms || s.is_closing() || d + 600_000 >= now.mono_ms);
                    now.mono_ms = now.mono_ms.max(d);
                    now.unix_s += 600;
                }
                s.handle_timeout(now);
            }
            0xFF => {
                now.mono_ms += 1_000;
                now.unix_s += 1;
                s.handle_timeout(now);
            }
            n => {
                let n = usize::from(n).min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                rest = tail;
                world.fed.extend_from_slice(chunk);
                s.handle_plaintext(now, chunk);
            }
        }
        world.drive(&mut s, now);
    }
    s.handle_eof(now);
    world.drive(&mut s, now);
    assert!(s.is_closing(), "EOF closes the session");
    assert!(world.open.is_empty(), "files left open after the session ended: {:?}", world.open.len());
});
