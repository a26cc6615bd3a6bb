//! One in-memory world answering every server [`Event`]: files, directories
//! and symlinks, the peer's key status and the keys saved on trust, users,
//! reverse DNS, programs for EXEC, and the checks every driver wants (a
//! canary the server must never touch or send, sizes promised by STAT, and
//! handle hygiene: every opened file read only while open and closed once).
//!
//! The daemon's real answers come from `rcf-fs`; this world answers the
//! same questions the same way, from memory, so the machines can be tested
//! and fuzzed without I/O.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use md5::Digest as _;

use crate::frame;
use crate::reply::{FileType, StatReply};
use crate::server::io::{Canonical, ExecChunk, FileStat, OpenedFile};
use crate::server::{
    Answer, Event, KeyStatus, Level, Now, Peer, PolicyView, ResourceKind, Verdict,
};

use super::machine::ServerMachine;
use super::TestRng;

/// A file, directory or other node in the world.
#[derive(Debug, Clone)]
pub struct Node {
    /// Content (files).
    pub data: Vec<u8>,
    /// STAT reply fields to give for it (its size may differ from `data` on
    /// purpose: a file that changed between STAT and GET).
    pub stat: StatReply,
    /// Directory listing in readdir order (`Some` makes it a directory).
    pub listing: Option<Vec<Vec<u8>>>,
    /// Digest override for MD5 (else the MD5 of `data`).
    pub digest: Option<[u8; 16]>,
}

impl Node {
    /// A regular file owned by `uid` with permission bits `mode`.
    pub fn file(data: &[u8], mode: u32, uid: u32) -> Node {
        Node {
            data: data.to_vec(),
            stat: file_stat(data.len() as u64, mode, uid),
            listing: None,
            digest: None,
        }
    }

    /// A directory (mode 0755, root) listing `names` verbatim, in this order
    /// (include `.` and `..` where readdir would).
    pub fn dir<N: AsRef<[u8]>>(names: &[N]) -> Node {
        let mut stat = file_stat(4096, 0o755, 0);
        stat.file_type = FileType::Dir;
        Node {
            data: Vec::new(),
            stat,
            listing: Some(names.iter().map(|n| n.as_ref().to_vec()).collect()),
            digest: None,
        }
    }
}

/// A regular-file STAT reply with the given size, mode and owner.
pub fn file_stat(size: u64, mode: u32, uid: u32) -> StatReply {
    StatReply {
        file_type: FileType::Regular,
        mode,
        lmode: 0,
        uid,
        gid: 0,
        size,
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

/// A policy as a flat table: path prefixes admitted to IPs.
#[derive(Debug, Clone, Default)]
pub struct TablePolicy {
    /// `(path or dir/ prefix, admitted IPs)`; "*" admits every IP.
    pub paths: Vec<(Vec<u8>, Vec<String>)>,
    /// Paths explicitly denied to everyone (the longest match still decides).
    pub denied: Vec<Vec<u8>>,
    /// `shortcut name -> path`.
    pub shortcuts: Vec<(Vec<u8>, Vec<u8>)>,
    /// Literal handles admitted (VAR).
    pub literals: Vec<Vec<u8>>,
    /// `trustkeysfrom` IPs.
    pub trust_from: Vec<String>,
    /// `denybadclocks`.
    pub deny_bad_clocks: bool,
    /// `cfruncommand`.
    pub cfruncommand: String,
    /// `allowusers`.
    pub allowusers: Vec<String>,
    /// Classes granted by `roles` (to every user, in this table).
    pub roles: Vec<String>,
    /// Bundles granted by `bundle` access rules.
    pub bundles: Vec<String>,
    /// Classes defined on the server.
    pub defined: Vec<String>,
}

impl PolicyView for TablePolicy {
    fn expand_shortcut(&self, path: &[u8], _peer: &Peer) -> Option<Vec<u8>> {
        let (first, rest) = match path.iter().position(|&b| b == b'/') {
            Some(i) => (&path[..i], &path[i..]),
            None => (path, &[][..]),
        };
        self.shortcuts
            .iter()
            .find(|(n, _)| n.as_slice() == first)
            .map(|(_, p)| {
                let mut v = p.clone();
                v.extend_from_slice(rest);
                v
            })
    }

    fn check_path(&self, path: &[u8], peer: &Peer) -> Verdict {
        let covers = |k: &[u8]| {
            k == path
                || (k.ends_with(b"/") && path.starts_with(k))
                || path.starts_with(&[k, b"/"].concat())
        };
        let best = self
            .paths
            .iter()
            .map(|(k, ips)| (k.as_slice(), Some(ips)))
            .chain(self.denied.iter().map(|k| (k.as_slice(), None)))
            .filter(|(k, _)| covers(k))
            .max_by_key(|(k, _)| k.len());
        match best {
            Some((k, Some(ips))) if ips.iter().any(|i| i == "*" || *i == peer.ip) => Verdict {
                allowed: true,
                rule: String::from_utf8_lossy(k).into_owned(),
            },
            Some((k, _)) => Verdict {
                allowed: false,
                rule: String::from_utf8_lossy(k).into_owned(),
            },
            None => Verdict::no_rule(),
        }
    }

    fn check_name(&self, resource: ResourceKind, name: &[u8], _peer: &Peer) -> Verdict {
        let n = String::from_utf8_lossy(name);
        let allowed = match resource {
            ResourceKind::Literal => self.literals.iter().any(|l| l == name),
            ResourceKind::Role => self.roles.iter().any(|r| *r == n),
            ResourceKind::Bundle => self.bundles.iter().any(|b| *b == n),
            _ => false,
        };
        Verdict {
            allowed,
            rule: String::new(),
        }
    }

    fn cfruncommand(&self) -> &str {
        &self.cfruncommand
    }

    fn user_may_exec(&self, user: &str) -> bool {
        !user.is_empty() && self.allowusers.iter().any(|u| u == user)
    }

    fn class_defined(&self, name: &str) -> bool {
        self.defined.iter().any(|c| c == name)
    }

    fn trusts_keys_from(&self, ip: &str) -> bool {
        self.trust_from.iter().any(|i| i == ip)
    }

    fn deny_bad_clocks(&self) -> bool {
        self.deny_bad_clocks
    }

    fn needs_reverse_dns(&self) -> bool {
        false
    }
}

/// The GET being served, as [`World::check_record`] follows it.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    handle: u64,
    promised: u64,
    sent: u64,
}

/// Files, keys, users and programs, answering a server machine's questions.
///
/// Every answer is what `rcf-fs` would give for the same tree. Misuse by the
/// machine (a read of a handle that is not open, a double close, a path
/// under [`forbidden`](World::forbidden), a relative path to canonicalise)
/// panics, so a test or fuzz target fails on it.
#[derive(Debug, Clone)]
pub struct World {
    /// Nodes by canonical path (no trailing slash).
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// Symlinks: path -> target, absolute or relative to the link's directory.
    pub links: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Key status to answer for every lookup (`None`: trusted).
    pub key: Option<KeyStatus>,
    /// Keys the machine asked us to save, as `(user, key id)`.
    pub saved_keys: Vec<(String, String)>,
    /// uids by username.
    pub users: HashMap<String, u32>,
    /// The uid of any user not in [`users`](World::users) (`None`: unknown).
    pub any_user_uid: Option<u32>,
    /// Reverse DNS: IP -> host name (others fail).
    pub hostnames: HashMap<String, String>,
    /// Open handles and their paths.
    pub open: HashMap<u64, Vec<u8>>,
    /// Handles closed so far.
    pub closed: HashSet<u64>,
    next_handle: u64,
    /// Every log line, as `(level, message)`.
    pub logs: Vec<(Level, String)>,
    /// Every access denial the machine reported, as `(request label, what)`.
    pub denials: Vec<(&'static str, String)>,
    /// Content swapped in right after a file is opened (path -> new
    /// content; its STAT stays), to simulate a file changing mid-transfer.
    pub change_after_open: HashMap<Vec<u8>, Vec<u8>>,
    /// Files that grow by one byte (and their STAT with them) at each open.
    pub grow_on_open: HashSet<Vec<u8>>,
    /// Every file grows at each open.
    pub grow_every_open: bool,
    /// Every file loses half its content (and STAT size) right after it is opened.
    pub halve_after_open: bool,
    /// What a started program prints, line by line.
    pub exec_output: Vec<Vec<u8>>,
    /// Its exit code (`None`: killed).
    pub exec_exit: Option<i32>,
    /// Refuse to start programs, with this error.
    pub exec_refuse: Option<String>,
    /// Every argv the machine asked to run.
    pub exec_runs: Vec<Vec<String>>,
    exec_pending: VecDeque<Vec<u8>>,
    /// Path prefixes the machine must never stat, open, list or digest
    /// (outside every admitted tree); touching one panics.
    pub forbidden: Vec<Vec<u8>>,
    /// Content that must never appear in a record ([`check_record`](World::check_record)),
    /// unless the peer sent it itself (see [`peer_sent`](World::peer_sent)).
    pub canary: Option<Vec<u8>>,
    /// Every plaintext byte the peer sent (the driver appends to it).
    pub peer_sent: Vec<u8>,
    /// Run [`check_record`](World::check_record) on every record [`drive`](World::drive) collects.
    pub check_records: bool,
    /// Sizes STAT told the client, by path as asked.
    pub promised: HashMap<Vec<u8>, u64>,
    transfer: Option<Transfer>,
    /// Randomness for the machines that draw it (classic key exchange).
    pub rng: TestRng,
}

impl Default for World {
    fn default() -> Self {
        World {
            nodes: BTreeMap::new(),
            links: BTreeMap::new(),
            key: None,
            saved_keys: Vec::new(),
            denials: Vec::new(),
            users: HashMap::new(),
            any_user_uid: None,
            hostnames: HashMap::new(),
            open: HashMap::new(),
            closed: HashSet::new(),
            next_handle: 0,
            logs: Vec::new(),
            change_after_open: HashMap::new(),
            grow_on_open: HashSet::new(),
            grow_every_open: false,
            halve_after_open: false,
            exec_output: Vec::new(),
            exec_exit: None,
            exec_refuse: None,
            exec_runs: Vec::new(),
            exec_pending: VecDeque::new(),
            forbidden: Vec::new(),
            canary: None,
            peer_sent: Vec::new(),
            check_records: false,
            promised: HashMap::new(),
            transfer: None,
            rng: super::rng(0),
        }
    }
}

fn trim(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    while v.len() > 1 && v.last() == Some(&b'/') {
        v.pop();
    }
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `r` is exactly one framed transaction.
pub fn is_one_transaction(r: &[u8]) -> bool {
    r.len() >= frame::HEADER_LEN && {
        let mut h = [0u8; frame::HEADER_LEN];
        h.copy_from_slice(&r[..frame::HEADER_LEN]);
        matches!(frame::parse_header(&h), Ok((_, len)) if len == r.len() - frame::HEADER_LEN)
    }
}

impl World {
    /// Add (or replace) a node at `path`.
    pub fn insert(&mut self, path: impl AsRef<[u8]>, node: Node) -> &mut Self {
        self.nodes.insert(path.as_ref().to_vec(), node);
        self
    }

    /// Add a symlink at `path` to `target`.
    pub fn link(&mut self, path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> &mut Self {
        self.links
            .insert(path.as_ref().to_vec(), target.as_ref().to_vec());
        self
    }

    /// realpath over the model: `.`, `..` and `//` folded, links followed
    /// anywhere in the path (more than 8 hops is ELOOP); the result must exist.
    pub fn canonicalize(&self, path: &[u8]) -> Result<Canonical, String> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut todo: VecDeque<Vec<u8>> = path.split(|&b| b == b'/').map(|c| c.to_vec()).collect();
        let mut hops = 0;
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    parts.pop();
                    continue;
                }
                _ => parts.push(c),
            }
            let cur = Self::join(&parts);
            if let Some(t) = self.links.get(&cur) {
                hops += 1;
                if hops > 8 {
                    return Err("Too many levels of symbolic links".into());
                }
                parts.pop();
                if t.first() == Some(&b'/') {
                    parts.clear();
                }
                for c in t.split(|&b| b == b'/').rev() {
                    todo.push_front(c.to_vec());
                }
            }
        }
        let out = Self::join(&parts);
        match self.nodes.get(&out) {
            Some(n) => Ok(Canonical {
                path: out,
                is_dir: n.listing.is_some(),
            }),
            None => Err("No such file or directory".into()),
        }
    }

    fn join(parts: &[Vec<u8>]) -> Vec<u8> {
        if parts.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for c in parts {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        out
    }

    fn assert_allowed(&self, path: &[u8]) {
        let t = trim(path);
        for f in &self.forbidden {
            let under = t == *f || (t.starts_with(f) && t.get(f.len()) == Some(&b'/'));
            assert!(
                !under,
                "the machine touched {:?}, outside every admitted tree",
                String::from_utf8_lossy(path)
            );
        }
    }

    /// Answer one question; `None` for events that need no answer (log
    /// lines, key saves, closes, kills), which are recorded instead.
    pub fn answer(&mut self, ev: &Event) -> Option<Answer> {
        if let Event::Stat { path }
        | Event::StatLink { path, .. }
        | Event::Open { path }
        | Event::ListDir { path }
        | Event::Digest { path } = ev
        {
            self.assert_allowed(path);
        }
        Some(match ev {
            Event::Log { level, message } => {
                self.logs.push((*level, message.clone()));
                return None;
            }
            Event::LookupKey { .. } => Answer::Key(self.key.clone().unwrap_or(KeyStatus::Trusted)),
            Event::Denied { request, what, .. } => {
                self.denials.push((request, what.clone()));
                return None;
            }
            Event::SaveKey { user, key_id, .. } => {
                self.saved_keys.push((user.clone(), key_id.clone()));
                return None;
            }
            Event::LookupUser { user } => {
                Answer::User(self.users.get(user).copied().or(self.any_user_uid))
            }
            Event::ReverseLookup { ip } => Answer::Hostname(self.hostnames.get(ip).cloned()),
            Event::Canonicalize { path } => {
                assert!(
                    path.first() == Some(&b'/') && !path.contains(&0),
                    "machines canonicalise only absolute, NUL-free paths: {:?}",
                    String::from_utf8_lossy(path)
                );
                Answer::Canonical(self.canonicalize(path))
            }
            Event::Stat { path } => Answer::Stat(match self.nodes.get(&trim(path)) {
                Some(n) => {
                    let reply = n.stat.clone();
                    self.promise(path, reply.size);
                    Ok(FileStat { reply })
                }
                None => Err("No such file or directory".into()),
            }),
            Event::StatLink { path, .. } => Answer::Stat(self.stat_link(path)),
            Event::Open { path } => Answer::Opened(self.open_file(path)),
            Event::Read {
                handle,
                offset,
                len,
            } => {
                let p = self
                    .open
                    .get(handle)
                    .unwrap_or_else(|| panic!("Read of handle {handle}, which is not open"));
                let Some(n) = self.nodes.get(p) else {
                    return Some(Answer::ReadFailed("No such file or directory".into()));
                };
                let start = usize::try_from(*offset)
                    .unwrap_or(usize::MAX)
                    .min(n.data.len());
                let end = start.saturating_add(*len).min(n.data.len());
                Answer::Data {
                    bytes: n.data[start..end].to_vec(),
                    current_size: n.data.len() as u64,
                }
            }
            Event::Close { handle } => {
                assert!(
                    self.open.remove(handle).is_some(),
                    "Close of handle {handle}, which is not open"
                );
                assert!(self.closed.insert(*handle), "double Close of {handle}");
                if self.transfer.map(|t| t.handle) == Some(*handle) {
                    self.transfer = None;
                }
                return None;
            }
            Event::ListDir { path } => Answer::Listing(
                self.nodes
                    .get(&trim(path))
                    .and_then(|n| n.listing.clone())
                    .ok_or_else(|| "Not a directory".to_string()),
            ),
            Event::Digest { path } => Answer::Digest(
                self.nodes
                    .get(&trim(path))
                    .map(|n| n.digest.unwrap_or_else(|| md5::Md5::digest(&n.data).into())),
            ),
            Event::ExecStart { argv } => {
                assert!(!argv.is_empty(), "EXEC with an empty argv");
                self.exec_runs.push(argv.clone());
                if let Some(e) = &self.exec_refuse {
                    return Some(Answer::ExecStarted(Err(e.clone())));
                }
                self.exec_pending = self.exec_output.iter().cloned().collect();
                Answer::ExecStarted(Ok(7))
            }
            Event::ExecRead { .. } => Answer::ExecOutput(match self.exec_pending.pop_front() {
                Some(l) => ExecChunk::Line(l),
                None => ExecChunk::Exit(self.exec_exit),
            }),
            Event::ExecKill { .. } => return None,
        })
    }

    fn promise(&mut self, path: &[u8], size: u64) {
        if self.promised.len() >= 4096 {
            self.promised.clear();
        }
        self.promised.insert(path.to_vec(), size);
    }

    /// Classic STAT: a link is reported as one (lmode 0777, its target as
    /// written) with its target's fields; anything else as itself.
    fn stat_link(&mut self, path: &[u8]) -> Result<FileStat, String> {
        let t = trim(path);
        let reply = match self.links.get(&t) {
            Some(target) => {
                let c = self.canonicalize(&t)?;
                let mut st = self.nodes[&c.path].stat.clone();
                st.lmode = 0o777;
                st.link_target = target.clone();
                st
            }
            None => match self.nodes.get(&t) {
                Some(n) => n.stat.clone(),
                None => return Err("No such file or directory".into()),
            },
        };
        self.promise(path, reply.size);
        Ok(FileStat { reply })
    }

    fn open_file(&mut self, path: &[u8]) -> Result<OpenedFile, String> {
        let t = trim(path);
        let grow = self.grow_every_open || self.grow_on_open.contains(&t);
        let halve = self.halve_after_open;
        let change = self.change_after_open.remove(&t);
        let n = match self.nodes.get_mut(&t) {
            Some(n) if n.listing.is_none() => n,
            Some(_) => return Err("Is a directory".into()),
            None => return Err("No such file or directory".into()),
        };
        if grow {
            n.data.push(b'+');
            n.stat.size += 1;
        }
        self.next_handle += 1;
        let handle = self.next_handle;
        let size = n.data.len() as u64;
        let f = OpenedFile {
            handle,
            size,
            uid: n.stat.uid,
            mode: n.stat.mode,
            is_dir: false,
        };
        if let Some(new) = change {
            n.data = new;
        }
        if halve {
            let half = n.data.len() / 2;
            n.data.truncate(half);
            n.stat.size = half as u64;
        }
        self.open.insert(handle, t);
        let promised = self.promised.get(path).copied().unwrap_or(size);
        self.transfer = Some(Transfer {
            handle,
            promised,
            sent: 0,
        });
        Ok(f)
    }

    /// Check one record a TLS-side session sent: the canary never appears
    /// (unless the peer sent it: welcomes echo the username, refusals echo
    /// paths); a GET never sends more than the size the client was promised
    /// (its STAT, else the size at open) nor data records over 2048 bytes;
    /// any other record is one whole transaction or at most 4096 bytes.
    /// Panics on a violation.
    pub fn check_record(&mut self, r: &[u8]) {
        if let Some(c) = &self.canary {
            assert!(
                !contains(r, c) || contains(&self.peer_sent, c),
                "canary content leaked"
            );
        }
        // Raw records count toward the GET being served until it has sent
        // all it promised; later records answer later requests.
        if let Some(t) = &mut self.transfer {
            if t.sent < t.promised {
                if t.sent == 0 && is_one_transaction(r) {
                    // Ownership refusal: a FAILED transaction, then a raw block.
                    self.transfer = None;
                } else {
                    t.sent += r.len() as u64;
                    assert!(
                        t.sent <= t.promised,
                        "GET sent {} bytes, more than the {} promised",
                        t.sent,
                        t.promised
                    );
                    assert!(r.len() <= 2048, "a GET data record of {} bytes", r.len());
                    return;
                }
            }
        }
        if is_one_transaction(r) {
            return;
        }
        assert!(
            r.len() <= 4096,
            "a record of {} bytes that is not a transaction",
            r.len()
        );
    }

    /// Drain a server machine: collect what it wants sent, answer every
    /// question (each answer must be accepted), until it has nothing left.
    /// Returns the output, one entry per `poll_transmit`.
    pub fn drive<M: ServerMachine + ?Sized>(&mut self, m: &mut M, now: Now) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            while let Some(r) = m.poll_transmit() {
                if self.check_records {
                    self.check_record(&r);
                }
                out.push(r);
            }
            match m.poll_event() {
                Some(ev) => {
                    if let Some(a) = self.answer(&ev) {
                        let mut rng = std::mem::replace(&mut self.rng, super::rng(0));
                        let r = m.handle_answer(now, a, &mut rng);
                        self.rng = rng;
                        if let Err(e) = r {
                            panic!("the world's answer to {ev:?} was refused: {e}");
                        }
                    }
                }
                None => break,
            }
        }
        out
    }

    /// Whether some log line, written `level: message`, contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .iter()
            .any(|(l, m)| format!("{}: {m}", l.as_str()).contains(needle))
    }

    /// Whether some log message is exactly `message`.
    pub fn logged_exactly(&self, message: &str) -> bool {
        self.logs.iter().any(|(_, m)| m == message)
    }
}
