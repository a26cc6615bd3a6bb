//! The PostgreSQL trust store against a real PostgreSQL (Debian's, started
//! by the test in a temporary directory on 127.0.0.1, stopped by PID even
//! when the test fails). Fails, never skips, when PostgreSQL is missing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand_chacha::rand_core::SeedableRng;
use rcf_core::keys::backend::{Decision, Refused, TrustBackend};
use rcf_core::keys::trust::RemoveTarget;
use rcf_core::keys::{generate, key_id, DigestKind, RsaPublicKey};
use rcf_pg::scratch::ScratchPostgres;
use rcf_pg::{migrate, PgError, PgTrustStore, SCHEMA_VERSION};

fn key(n: usize) -> RsaPublicKey {
    static K: OnceLock<Vec<RsaPublicKey>> = OnceLock::new();
    K.get_or_init(|| {
        (0..4)
            .map(|i| {
                generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(500 + i), 2048)
                    .unwrap()
                    .to_public_key()
            })
            .collect()
    })[n]
        .clone()
}

fn id(n: usize) -> rcf_core::keys::KeyId {
    key_id(&key(n), DigestKind::Md5)
}

fn store(pg: &ScratchPostgres) -> PgTrustStore {
    PgTrustStore::new(&pg.url(), DigestKind::Md5, Duration::from_secs(2))
        .unwrap()
        .with_retry(Duration::from_millis(300))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_tofu_revocation_and_survive_an_outage() {
    let mut pg = ScratchPostgres::start().expect("start PostgreSQL");
    let (a, b) = (Arc::new(store(&pg)), Arc::new(store(&pg)));

    // Unmigrated: a clear error naming --migrate.
    let e = a.check().await.unwrap_err();
    assert!(matches!(e, PgError::Schema { found: 0 }), "{e}");
    assert!(e.to_string().contains("--migrate"), "{e}");
    assert_eq!(migrate(&pg.url()).await.unwrap(), 0);
    assert_eq!(
        migrate(&pg.url()).await.unwrap(),
        SCHEMA_VERSION,
        "idempotent"
    );
    a.check().await.unwrap();

    // Concurrent TOFU of the same new host on two replicas: both accept,
    // one key is stored. Repeated for several users to hit the race often.
    for user in ["root", "u1", "u2", "u3", "u4", "u5"] {
        let (sa, sb) = (a.clone(), b.clone());
        let (ka, kb) = (key(0), key(0));
        let ta =
            tokio::spawn(
                async move { sa.verify(user, Some("127.0.0.2"), &ka, true).await.unwrap() },
            );
        let tb =
            tokio::spawn(
                async move { sb.verify(user, Some("127.0.0.2"), &kb, true).await.unwrap() },
            );
        let (da, db) = (ta.await.unwrap(), tb.await.unwrap());
        // Each is accepted: newly (it inserted, or lost the insert race to
        // the same key) or as already trusted (the other one committed
        // before its lookup). At least one stored it.
        let new = Decision::NewlyTrusted { id: id(0) };
        let old = Decision::Trusted {
            id: id(0),
            cached: false,
        };
        for d in [&da, &db] {
            assert!(*d == new || *d == old, "{user}: {d:?}");
        }
        assert!(da == new || db == new, "{user}: {da:?} {db:?}");
    }
    let listed = a.list().await.unwrap();
    assert_eq!(listed.len(), 6, "one row per user: {listed:?}");
    let root = listed.iter().find(|k| k.user == "root").unwrap();
    assert_eq!(root.from.as_deref(), Some("127.0.0.2"));
    assert_eq!(root.key.as_ref(), Some(&key(0)));
    assert!(root.trusted_at.is_some() && root.revoked_at.is_none());

    // Trusted on the other replica without TOFU.
    assert_eq!(
        b.verify("root", Some("127.0.0.2"), &key(0), false)
            .await
            .unwrap(),
        Decision::Trusted {
            id: id(0),
            cached: false
        }
    );
    // A different key for the same host: refused on every replica, even
    // under trustkeysfrom.
    for s in [&a, &b] {
        assert_eq!(
            s.verify("root", Some("::ffff:127.0.0.2"), &key(1), true)
                .await
                .unwrap(),
            Decision::Refused {
                id: id(1),
                why: Refused::Changed {
                    stored: Some(id(0))
                }
            }
        );
    }
    // Unknown key without TOFU.
    assert_eq!(
        a.verify("root", Some("127.0.0.3"), &key(1), false)
            .await
            .unwrap(),
        Decision::Refused {
            id: id(1),
            why: Refused::Unknown
        }
    );

    // Revocation on A is seen by B at its next lookup (B had it cached).
    assert_eq!(b.cached(), 6);
    let gone = a
        .revoke(&RemoveTarget::Address("127.0.0.2".into()))
        .await
        .unwrap();
    assert_eq!(gone.len(), 6, "{gone:?}");
    assert_eq!(
        b.verify("root", Some("127.0.0.2"), &key(0), true)
            .await
            .unwrap(),
        Decision::Refused {
            id: id(0),
            why: Refused::Revoked
        },
        "a revoked key is not re-trusted on first use"
    );
    assert_eq!(b.cached(), 5);
    // Revoking frees the host: an explicit trust re-admits.
    assert!(a.trust("root", &key(0), None).await.unwrap());
    assert!(!a.trust("root", &key(0), None).await.unwrap());
    assert!(matches!(
        b.verify("root", None, &key(0), false).await.unwrap(),
        Decision::Trusted { cached: false, .. }
    ));
    let revoked_by_id = a.revoke(&RemoveTarget::Key(id(0))).await.unwrap();
    assert_eq!(revoked_by_id, vec![format!("root/{}", id(0))]);
    assert!(a.trust("root", &key(0), None).await.unwrap());

    // B trusts key 2 (cached), then PostgreSQL stops.
    assert_eq!(
        b.verify("c", Some("127.0.0.4"), &key(2), true)
            .await
            .unwrap(),
        Decision::NewlyTrusted { id: id(2) }
    );
    pg.stop();
    assert_eq!(
        b.verify("c", Some("127.0.0.4"), &key(2), false)
            .await
            .unwrap(),
        Decision::Trusted {
            id: id(2),
            cached: true
        },
        "cached key still served"
    );
    let e = b
        .verify("d", Some("127.0.0.5"), &key(3), true)
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("new keys are refused"), "{e}");
    // A key this replica never saw is not served from A's cache either.
    let e = a
        .verify("c", Some("127.0.0.4"), &key(2), false)
        .await
        .unwrap_err();
    assert!(e.is_unavailable(), "{e}");

    // While down, answers come at once (no connection attempt per lookup
    // within the retry interval).
    let t = std::time::Instant::now();
    for _ in 0..20 {
        assert!(matches!(
            b.verify("c", Some("127.0.0.4"), &key(2), false)
                .await
                .unwrap(),
            Decision::Trusted { cached: true, .. }
        ));
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // Back: both replicas work again without being re-made (after the
    // retry interval).
    pg.restart().expect("restart PostgreSQL");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b.verify("d", Some("127.0.0.5"), &key(3), true)
            .await
            .unwrap(),
        Decision::NewlyTrusted { id: id(3) }
    );
    assert_eq!(
        a.verify("c", Some("127.0.0.4"), &key(2), false)
            .await
            .unwrap(),
        Decision::Trusted {
            id: id(2),
            cached: false
        }
    );
    assert_eq!(
        a.verify("d", None, &key(3), false).await.unwrap(),
        Decision::Trusted {
            id: id(3),
            cached: false
        }
    );
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lastseen_table_follows_3_21s_rule_across_replicas() {
    use rcf_core::lastseen::{Direction, Quality, Seen};
    let pg = ScratchPostgres::start().expect("start PostgreSQL");
    migrate(&pg.url()).await.unwrap();
    let (a, b) = (store(&pg), store(&pg));
    let k = id(0);
    let t0 = 1_765_000_000;
    let mut want: Option<Quality> = None;
    // Alternate replicas: the average continues across them.
    for (n, dt) in [0, 300, 400, 1000].into_iter().enumerate() {
        let s = if n % 2 == 0 { &a } else { &b };
        let got = s
            .record_lastseen(&Seen {
                key: &k,
                address: "::ffff:127.0.0.2",
                direction: Direction::Incoming,
                now: t0 + dt,
            })
            .await
            .unwrap();
        let w = Quality::update(want.as_ref(), t0 + dt);
        assert_eq!(got.lastseen, w.lastseen);
        for (g, e) in [
            (got.q, w.q),
            (got.expect, w.expect),
            (got.var, w.var),
            (got.dq, w.dq),
        ] {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {w:?}");
        }
        want = Some(w);
    }
    // Outgoing from another address: both directions now show it (3.21
    // keeps one address per key).
    b.record_lastseen(&Seen {
        key: &k,
        address: "127.0.0.9",
        direction: Direction::Outgoing,
        now: t0 + 2000,
    })
    .await
    .unwrap();
    let all = a.lastseen().await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|e| e.address == "127.0.0.9" && e.key == k));
    assert_eq!(all[0].direction, Direction::Incoming);
    assert_eq!(all[0].quality.lastseen, t0 + 1000);
    // Bad addresses are refused, not stored.
    assert!(matches!(
        a.record_lastseen(&Seen {
            key: &k,
            address: "",
            direction: Direction::Incoming,
            now: t0,
        })
        .await,
        Err(PgError::Address(_))
    ));
    assert_eq!(
        b.forget_lastseen(&RemoveTarget::Address("127.0.0.9".into()))
            .await
            .unwrap(),
        2
    );
    assert!(a.lastseen().await.unwrap().is_empty());
}

/// Wait until `cond` holds, for at most `within`.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// Item 3 of issue 20's wiring: while a replica LISTENs, a trusted key's
/// check costs no round trip (answered from the cache: the cache-hit count
/// grows while the database's statement count stays put), and a
/// revocation made on another replica reaches it by notification and
/// takes effect at its very next check; the fast path stops when the
/// listening connection is lost and comes back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listen_notify_cache_answers_without_a_round_trip_and_revocation_reaches_every_replica() {
    let mut pg = ScratchPostgres::start().expect("start PostgreSQL");
    migrate(&pg.url()).await.unwrap();
    let (a, b) = (Arc::new(store(&pg)), Arc::new(store(&pg)));
    let la = a.clone().listen_for_revocations(|_| {});
    let lb = b.clone().listen_for_revocations(|_| {});
    assert!(
        until(Duration::from_secs(5), || a.is_listening()
            && b.is_listening())
        .await
    );

    // TOFU on a, then b reads it once from the database; from then on both
    // answer from their caches.
    assert_eq!(
        a.verify("root", Some("127.0.0.2"), &key(1), true)
            .await
            .unwrap(),
        Decision::NewlyTrusted { id: id(1) }
    );
    let trusted = Decision::Trusted {
        id: id(1),
        cached: false,
    };
    assert_eq!(
        b.verify("root", Some("127.0.0.2"), &key(1), false)
            .await
            .unwrap(),
        trusted
    );
    let (ha, hb) = (a.cache_hits(), b.cache_hits());
    for _ in 0..50 {
        assert_eq!(
            a.verify("root", Some("127.0.0.2"), &key(1), false)
                .await
                .unwrap(),
            trusted
        );
        assert_eq!(
            b.verify("root", Some("127.0.0.2"), &key(1), false)
                .await
                .unwrap(),
            trusted
        );
    }
    assert_eq!((a.cache_hits() - ha, b.cache_hits() - hb), (50, 50));
    // A different key under the same id is never a cache hit.
    let d = b
        .verify("root", Some("127.0.0.2"), &key(2), false)
        .await
        .unwrap();
    assert!(
        matches!(
            d,
            Decision::Refused {
                why: Refused::Unknown,
                ..
            }
        ),
        "{d:?}"
    );

    // Revoked through a (as rcf-key -r does): b hears of it and refuses at
    // its next check, within milliseconds, without a restart.
    let t0 = std::time::Instant::now();
    a.revoke(&RemoveTarget::Key(id(1))).await.unwrap();
    let mut refused_after = None;
    while t0.elapsed() < Duration::from_secs(2) {
        match b
            .verify("root", Some("127.0.0.2"), &key(1), false)
            .await
            .unwrap()
        {
            Decision::Refused {
                why: Refused::Revoked,
                ..
            } => {
                refused_after = Some(t0.elapsed());
                break;
            }
            d => assert_eq!(d, trusted),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let after = refused_after.expect("the revocation never reached replica b");
    eprintln!("revocation effective on the other replica after {after:?}");
    assert!(after < Duration::from_millis(500), "{after:?}");

    // Re-trusted by an administrator: cached again, served from the cache.
    a.trust("root", &key(1), Some("127.0.0.2")).await.unwrap();
    let d = b
        .verify("root", Some("127.0.0.2"), &key(1), false)
        .await
        .unwrap();
    assert_eq!(d, trusted);

    // The database goes away: the fast path stops with the LISTEN
    // connection (b still serves its known key, marked as from the cache),
    // and comes back when the database does.
    pg.stop();
    assert!(until(Duration::from_secs(10), || !b.is_listening()).await);
    let d = b
        .verify("root", Some("127.0.0.2"), &key(1), false)
        .await
        .unwrap();
    assert_eq!(
        d,
        Decision::Trusted {
            id: id(1),
            cached: true
        }
    );
    pg.restart().expect("restart PostgreSQL");
    assert!(
        until(Duration::from_secs(15), || b.is_listening()).await,
        "listening again"
    );
    // The listener and the query connection reconnect on their own: right
    // after LISTEN resumes a check may still be answered from the cache,
    // but within a few seconds the store answers again, with no restart.
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut last = None;
    while tokio::time::Instant::now() < end {
        let d = b
            .verify("root", Some("127.0.0.2"), &key(1), false)
            .await
            .unwrap();
        if d == trusted {
            last = Some(d);
            break;
        }
        last = Some(d);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, Some(trusted.clone()), "the store answers again");
    let h = b.cache_hits();
    assert_eq!(
        b.verify("root", Some("127.0.0.2"), &key(1), false)
            .await
            .unwrap(),
        trusted
    );
    assert_eq!(b.cache_hits(), h + 1);
    la.abort();
    lb.abort();
}
