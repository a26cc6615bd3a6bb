//! Shared by the classic fuzz targets: a deterministic RNG seeded from the
//! input, fixed host keys, a tiny file world, and an honest key exchange
//! that gets a client and a server to the command loop.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use rcf_core::classic::{
    ClassicClient, ClassicDecision, ClassicPeer, ClassicPolicy, ClassicServer, ClientConfig, CryptoRng, RngCore,
};
use rcf_core::keys::RsaPrivateKey;
use rcf_core::reply::{FileType, StatReply};
use rcf_core::server::io::{Answer, Canonical, Event, FileStat, KeyStatus, Now, OpenedFile};

/// xorshift64*: deterministic, NOT cryptographic; only fuzzing uses it.
pub struct FuzzRng(pub u64);

impl RngCore for FuzzRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for c in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rcf_core::classic::RngError> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FuzzRng {}

/// The RNG for one input: seeded from its first 8 bytes; returns the rest.
pub fn seeded(data: &[u8]) -> (FuzzRng, &[u8]) {
    let mut s = [0u8; 8];
    let n = data.len().min(8);
    s[..n].copy_from_slice(&data[..n]);
    (FuzzRng(u64::from_le_bytes(s)), &data[n..])
}

/// (server key, client key), made once.
pub fn keys() -> &'static (Arc<RsaPrivateKey>, Arc<RsaPrivateKey>) {
    static K: OnceLock<(Arc<RsaPrivateKey>, Arc<RsaPrivateKey>)> = OnceLock::new();
    K.get_or_init(|| {
        let mut r = FuzzRng(0x5eed);
        // 1024 bits (below cf-key's minimum) keeps the RSA steps cheap.
        let a = RsaPrivateKey::new(&mut r, 1024).expect("key");
        let b = RsaPrivateKey::new(&mut r, 1024).expect("key");
        (Arc::new(a), Arc::new(b))
    })
}

pub const NOW: Now = Now { mono_ms: 0, unix_s: 1_700_000_000 };

/// Admits `/srv`, trusts every key, no shortcuts but `s/…`.
pub struct Pol;
impl ClassicPolicy for Pol {
    fn legacy_allowed(&self, _: &str) -> bool {
        true
    }
    fn trusts_keys_from(&self, _: &str) -> bool {
        true
    }
    fn deny_bad_clocks(&self) -> bool {
        true
    }
    fn expand_shortcut(&self, p: &[u8], _: &ClassicPeer) -> Option<Vec<u8>> {
        let rest = p.strip_prefix(b"s/")?;
        let mut v = b"/srv/".to_vec();
        v.extend_from_slice(rest);
        Some(v)
    }
    fn check_path(&self, p: &[u8], _: &ClassicPeer, encrypted: bool) -> ClassicDecision {
        let ok = p == b"/srv" || p.starts_with(b"/srv/");
        ClassicDecision { allowed: ok && (encrypted || !p.ends_with(b".enc")), maproot: p.ends_with(b".root"), needs_encryption: false, rule: "/srv".into() }
    }
    fn check_literal(&self, n: &[u8], _: &ClassicPeer, _: bool) -> bool {
        n == b"x"
    }
}

/// Answers every question from a fixed little world; `salt` varies sizes and failures.
pub fn answer(ev: &Event, salt: u8) -> Option<Answer> {
    let content: Vec<u8> = (0..(usize::from(salt) * 97 % 9000)).map(|i| i as u8).collect();
    Some(match ev {
        Event::Log { .. } | Event::Close { .. } | Event::SaveKey { .. } | Event::ExecKill { .. } => return None,
        Event::ExecStart { .. } => Answer::ExecStarted(Err("no programs here".into())),
        Event::ExecRead { .. } => Answer::ExecOutput(rcf_core::server::io::ExecChunk::Exit(None)),
        Event::LookupKey { .. } => Answer::Key(match salt % 3 {
            0 => KeyStatus::Trusted,
            1 => KeyStatus::Missing,
            _ => KeyStatus::Different,
        }),
        Event::LookupUser { .. } => Answer::User((salt % 2 == 0).then_some(1000)),
        Event::ReverseLookup { .. } => Answer::Hostname(None),
        Event::Canonicalize { path } => {
            if salt % 5 == 4 {
                Answer::Canonical(Err("No such file or directory".into()))
            } else {
                Answer::Canonical(Ok(Canonical { path: path.clone(), is_dir: path.ends_with(b"/") }))
            }
        }
        Event::Stat { .. } | Event::StatLink { .. } => Answer::Stat(Ok(FileStat {
            reply: StatReply {
                file_type: FileType::Regular,
                mode: 0o644,
                lmode: 0,
                uid: 0,
                gid: 0,
                size: content.len() as u64,
                atime: 1,
                mtime: 2,
                ctime: 3,
                makeholes: false,
                ino: 4,
                nlink: 1,
                dev: 5,
                link_target: vec![],
            },
        })),
        Event::Open { .. } => Answer::Opened(Ok(OpenedFile { handle: 1, size: content.len() as u64, uid: u32::from(salt), mode: 0o600 | u32::from(salt & 4) })),
        Event::Read { offset, len, .. } => {
            let o = (*offset as usize).min(content.len());
            let e = (o + len).min(content.len());
            let grow = u64::from(salt % 7 == 6);
            Answer::Data { bytes: content[o..e].to_vec(), current_size: content.len() as u64 + grow }
        }
        Event::ListDir { .. } => Answer::Listing(Ok((0..usize::from(salt)).map(|i| format!("n{i:0200}").into_bytes()).collect())),
        Event::Digest { .. } => Answer::Digest((salt % 2 == 0).then_some([salt; 16])),
    })
}

/// Drain the server's questions with [`answer`].
pub fn settle(s: &mut ClassicServer, rng: &mut FuzzRng, salt: u8) {
    for _ in 0..10_000 {
        let Some(ev) = s.poll_event() else { return };
        if let Some(a) = answer(&ev, salt) {
            let _ = s.handle_answer(NOW, a, rng);
        }
    }
}

/// A client and a server that completed an honest key exchange.
pub fn handshake(rng: &mut FuzzRng, flag_y: bool) -> Option<(ClassicClient, ClassicServer)> {
    let (skey, ckey) = keys().clone();
    let cfg = ClientConfig {
        local_ip: "127.0.0.1".into(),
        fqdn: "fuzz".into(),
        user: "root".into(),
        key: ckey,
        server_key: flag_y.then(|| skey.to_public_key()),
        trust_server: true,
    };
    let mut c = ClassicClient::new(cfg, rng).ok()?;
    let mut s = ClassicServer::new(Default::default(), Arc::new(Pol), skey, "127.0.0.1".into(), NOW);
    for _ in 0..20 {
        while let Some(b) = c.poll_transmit() {
            s.handle_input(NOW, &b);
        }
        settle(&mut s, rng, 0);
        while let Some(b) = s.poll_transmit() {
            c.handle_input(&b, rng).ok()?;
        }
        while c.poll_event().is_some() {}
        if c.is_idle() && s.is_authenticated() {
            return Some((c, s));
        }
    }
    None
}
