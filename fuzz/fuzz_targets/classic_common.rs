//! Shared by the classic fuzz targets: a deterministic RNG seeded from the
//! input, fixed host keys, a small file world (`rcf_core::testing::World`)
//! and an honest key exchange that gets a client and a server to the
//! command loop.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use rcf_core::classic::{ClassicClient, ClassicDecision, ClassicPeer, ClassicPolicy, ClassicServer, ClientConfig};
use rcf_core::keys::RsaPrivateKey;
use rcf_core::server::{KeyStatus, Now};
use rcf_core::testing::{rng, Node, TestRng, World};

/// The RNG for one input: seeded from its first 8 bytes; returns the rest.
pub fn seeded(data: &[u8]) -> (TestRng, &[u8]) {
    let mut s = [0u8; 8];
    let n = data.len().min(8);
    s[..n].copy_from_slice(&data[..n]);
    (rng(u64::from_le_bytes(s)), &data[n..])
}

/// (server key, client key), made once.
pub fn keys() -> &'static (Arc<RsaPrivateKey>, Arc<RsaPrivateKey>) {
    static K: OnceLock<(Arc<RsaPrivateKey>, Arc<RsaPrivateKey>)> = OnceLock::new();
    K.get_or_init(|| {
        let mut r = rng(0x5eed);
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

/// The world for one input; `salt` varies file sizes, owners and modes,
/// the listing's length, the key status, whether users resolve, whether
/// files grow when opened, and which digests are overridden. Programs never start.
pub fn world(salt: u8, rng: TestRng) -> World {
    let content: Vec<u8> = (0..(usize::from(salt) * 97 % 9000)).map(|i| i as u8).collect();
    let names: Vec<String> = (0..usize::from(salt)).map(|i| format!("n{i:0200}")).collect();
    let mut file = Node::file(&content, 0o600 | u32::from(salt & 4), u32::from(salt));
    if salt % 2 == 0 {
        file.digest = Some([salt; 16]);
    }
    let mut w = World::default();
    w.rng = rng;
    w.insert("/srv", Node::dir(&names));
    w.insert("/srv/dir", Node::dir(&[".", "..", "file"]));
    if salt % 5 != 4 {
        for name in ["/srv/file", "/srv/file.enc", "/srv/file.root", "/srv/dir/file"] {
            w.insert(name, file.clone());
        }
        w.link("/srv/link", "file");
    }
    w.key = Some(match salt % 3 {
        0 => KeyStatus::Trusted,
        1 => KeyStatus::Missing,
        _ => KeyStatus::Different,
    });
    w.any_user_uid = (salt % 2 == 0).then_some(1000);
    w.grow_every_open = salt % 7 == 6;
    w.exec_refuse = Some("no programs here".into());
    w
}

/// A client and a server that completed an honest key exchange, and the
/// world (salt 0) that answered the server; the rng is the world's.
pub fn handshake(rng: TestRng, flag_y: bool) -> Option<(ClassicClient, ClassicServer, World)> {
    let (skey, ckey) = keys().clone();
    let mut w = world(0, rng);
    let cfg = ClientConfig {
        local_ip: "127.0.0.1".into(),
        fqdn: "fuzz".into(),
        user: "root".into(),
        key: ckey,
        server_key: flag_y.then(|| skey.to_public_key()),
        trust_server: true,
        timeout_ms: 30_000,
    };
    let mut c = ClassicClient::new(cfg, NOW, &mut w.rng).ok()?;
    let mut s = ClassicServer::new(Default::default(), Arc::new(Pol), skey, "127.0.0.1".into(), NOW);
    for _ in 0..20 {
        while let Some(b) = c.poll_transmit() {
            s.handle_input(NOW, &b);
        }
        for b in w.drive(&mut s, NOW) {
            c.handle_input(NOW, &b, &mut w.rng);
        }
        while c.poll_event().is_some() {}
        if c.is_closed() {
            return None;
        }
        if c.is_idle() && s.is_authenticated() {
            return Some((c, s, w));
        }
    }
    None
}
