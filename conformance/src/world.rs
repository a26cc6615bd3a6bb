//! An in-memory world for driving a core server session without I/O: a
//! table policy, a file map, a key store, and the driver loop that answers
//! the session's questions from them. Used by the session replay and the
//! session tests; the real answers come from `rcf-fs` in the daemon.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rcf_core::reply::StatReply;
use rcf_core::server::io::{Canonical, FileStat, OpenedFile};
use rcf_core::server::{
    Answer, Event, KeyStatus, Level, Now, Peer, PolicyView, ResourceKind as Resource, Session,
    Verdict as Decision,
};

/// A file, directory or other node in the world.
#[derive(Debug, Clone)]
pub struct Node {
    /// Content (files).
    pub data: Vec<u8>,
    /// STAT reply fields to give for it.
    pub stat: StatReply,
    /// Directory listing in readdir order (directories).
    pub listing: Option<Vec<Vec<u8>>>,
    /// Digest override for MD5 (else MD5 of `data`).
    pub digest: Option<[u8; 16]>,
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

    fn check_path(&self, path: &[u8], peer: &Peer) -> Decision {
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
            Some((k, Some(ips))) if ips.iter().any(|i| i == "*" || *i == peer.ip) => Decision {
                allowed: true,
                rule: String::from_utf8_lossy(k).into_owned(),
            },
            Some((k, _)) => Decision {
                allowed: false,
                rule: String::from_utf8_lossy(k).into_owned(),
            },
            None => Decision::no_rule(),
        }
    }

    fn check_name(&self, resource: Resource, name: &[u8], _peer: &Peer) -> Decision {
        let n = String::from_utf8_lossy(name);
        let allowed = match resource {
            Resource::Literal => self.literals.iter().any(|l| l == name),
            Resource::Role => self.roles.iter().any(|r| *r == n),
            Resource::Bundle => self.bundles.iter().any(|b| *b == n),
            _ => false,
        };
        Decision {
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

/// Files, keys and users, answering a session's questions.
#[derive(Debug, Default)]
pub struct World {
    /// Nodes by canonical path (no trailing slash).
    pub nodes: BTreeMap<Vec<u8>, Node>,
    /// Symlinks: path -> canonical target.
    pub links: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Key status to answer for every lookup.
    pub key: Option<KeyStatus>,
    /// Keys the session asked us to save.
    pub saved_keys: Vec<(String, String)>,
    /// uids by username.
    pub users: HashMap<String, u32>,
    /// Open handles.
    pub open: HashMap<u64, Vec<u8>>,
    next_handle: u64,
    /// Every log line, as `level: message`.
    pub logs: Vec<String>,
    /// Mutations applied after a file is opened (path -> new content), to
    /// simulate a file changing mid-transfer.
    pub change_after_open: HashMap<Vec<u8>, Vec<u8>>,
    /// What a started program prints, line by line.
    pub exec_output: Vec<Vec<u8>>,
    /// Its exit code (`None`: killed).
    pub exec_exit: Option<i32>,
    /// Every argv the session asked to run.
    pub exec_runs: Vec<Vec<String>>,
    exec_pending: std::collections::VecDeque<Vec<u8>>,
}

fn trim(p: &[u8]) -> Vec<u8> {
    let mut v = p.to_vec();
    while v.len() > 1 && v.last() == Some(&b'/') {
        v.pop();
    }
    v
}

impl World {
    /// Answer one question; `None` for events that need no answer.
    pub fn answer(&mut self, ev: &Event) -> Option<Answer> {
        match ev {
            Event::Log { level, message } => {
                self.logs.push(format!("{}: {message}", level.as_str()));
                None
            }
            Event::LookupKey { .. } => {
                Some(Answer::Key(self.key.clone().unwrap_or(KeyStatus::Trusted)))
            }
            Event::SaveKey { user, key_id, .. } => {
                self.saved_keys.push((user.clone(), key_id.clone()));
                None
            }
            Event::LookupUser { user } => Some(Answer::User(self.users.get(user).copied())),
            Event::ReverseLookup { .. } => Some(Answer::Hostname(None)),
            Event::Canonicalize { path } => {
                let mut p = trim(path);
                if let Some(t) = self.links.get(&p) {
                    p = t.clone();
                }
                Some(Answer::Canonical(match self.nodes.get(&p) {
                    Some(n) => Ok(Canonical {
                        path: p,
                        is_dir: n.listing.is_some(),
                    }),
                    None => Err("No such file or directory".into()),
                }))
            }
            Event::Stat { path } | Event::StatLink { path, .. } => {
                Some(Answer::Stat(match self.nodes.get(&trim(path)) {
                    Some(n) => Ok(FileStat {
                        reply: n.stat.clone(),
                    }),
                    None => Err("No such file or directory".into()),
                }))
            }
            Event::Open { path } => Some(Answer::Opened(match self.nodes.get(&trim(path)) {
                Some(n) if n.listing.is_none() => {
                    self.next_handle += 1;
                    let h = self.next_handle;
                    let p = trim(path);
                    let size = n.data.len() as u64;
                    let (uid, mode) = (n.stat.uid, n.stat.mode);
                    if let Some(newdata) = self.change_after_open.remove(&p) {
                        self.nodes.get_mut(&p).expect("exists").data = newdata;
                    }
                    self.open.insert(h, p);
                    Ok(OpenedFile {
                        handle: h,
                        size,
                        uid,
                        mode,
                    })
                }
                Some(_) => Err("Is a directory".into()),
                None => Err("No such file or directory".into()),
            })),
            Event::Read {
                handle,
                offset,
                len,
            } => {
                let Some(p) = self.open.get(handle) else {
                    return Some(Answer::ReadFailed("bad handle".into()));
                };
                let data = &self.nodes[p].data;
                let start = (*offset as usize).min(data.len());
                let end = (start + len).min(data.len());
                Some(Answer::Data {
                    bytes: data[start..end].to_vec(),
                    current_size: data.len() as u64,
                })
            }
            Event::Close { handle } => {
                self.open.remove(handle);
                None
            }
            Event::ListDir { path } => Some(Answer::Listing(
                match self.nodes.get(&trim(path)).and_then(|n| n.listing.clone()) {
                    Some(l) => Ok(l),
                    None => Err("Not a directory".into()),
                },
            )),
            Event::ExecStart { argv } => {
                self.exec_runs.push(argv.clone());
                self.exec_pending = self.exec_output.iter().cloned().collect();
                Some(Answer::ExecStarted(Ok(7)))
            }
            Event::ExecRead { .. } => {
                Some(Answer::ExecOutput(match self.exec_pending.pop_front() {
                    Some(l) => rcf_core::server::io::ExecChunk::Line(l),
                    None => rcf_core::server::io::ExecChunk::Exit(self.exec_exit),
                }))
            }
            Event::ExecKill { .. } => None,
            Event::Digest { path } => Some(Answer::Digest(self.nodes.get(&trim(path)).map(|n| {
                n.digest.unwrap_or_else(|| {
                    use md5::Digest as _;
                    md5::Md5::digest(&n.data).into()
                })
            }))),
        }
    }

    /// Drain the session: collect its output bytes, answer every question.
    /// Returns the bytes it wants sent, as records.
    pub fn drive(&mut self, s: &mut Session, now: Now) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            while let Some(r) = s.poll_record() {
                out.push(r);
            }
            match s.poll_event() {
                Some(ev) => {
                    if let Some(a) = self.answer(&ev) {
                        s.handle_answer(now, a)
                            .expect("world answers match questions");
                    }
                }
                None => break,
            }
        }
        out
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.contains(needle))
    }
}

/// A regular-file STAT reply with the given size and mode.
pub fn file_stat(size: u64, mode: u32, uid: u32) -> StatReply {
    StatReply {
        file_type: rcf_core::reply::FileType::Regular,
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

/// A real key made by cf-key 3.21, for sessions in tests.
pub const TEST_PUB_PEM: &str = include_str!("../../core/src/keys/testdata/cfkey.pub");

/// [`TEST_PUB_PEM`] as the TLS layer would hand it to a session.
pub fn test_peer_key() -> rcf_core::server::PeerKey {
    let k = rcf_core::keys::parse_public_pem(TEST_PUB_PEM.as_bytes()).expect("test key parses");
    rcf_core::server::PeerKey::new(k)
}

/// A session for `ip` presenting [`test_peer_key`] at time `now`.
pub fn session(policy: Arc<dyn PolicyView>, ip: &str, now: Now) -> Session {
    Session::new(
        Default::default(),
        policy,
        ip.to_string(),
        test_peer_key(),
        now,
    )
}

/// Level names in log lines, for assertions.
pub fn level(l: Level) -> &'static str {
    l.as_str()
}
